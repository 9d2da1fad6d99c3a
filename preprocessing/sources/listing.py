"""What every dataset source produces: the videos to shard, the class list, and what was rejected.

No torch, DALI or Ray. A source parses its annotation files completely (a malformed file raises
AnnotationError before any video is touched) and resolves every row to a file; rows that cannot
be resolved, and duplicate ids, are rejections with a reason. `finish` applies the rules that
are the same for every dataset.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from preprocessing.storage import Folder, is_uri, join

UNLABELLED = -1  # label of rows without one (for example Kinetics test CSVs)


class AnnotationError(ValueError):
    """An annotation file is malformed; the message names the file, the line and the problem."""


@dataclass(frozen=True)
class SourceVideo:
    """One input video: path is a local Path or an object-store URI (str).
    frame_range = (first, last) source frames to keep, inclusive."""

    video_id: str
    path: Path | str
    label: int
    label_name: str
    split: str
    frame_range: tuple[int, int] | None = None


@dataclass(frozen=True)
class Rejection:
    """An input that was not sharded, and why. `retryable`: the source could not be read (a
    storage or network failure, a file that vanished): a rerun of the job tries it again,
    where a rejection for the content (not a video, truncated, undecodable) is final."""

    source_path: str
    video_id: str
    split: str
    reason: str
    retryable: bool = False


@dataclass
class DatasetListing:
    """A parsed dataset: classes[label] is the label's name; videos sorted by (split, id)."""

    dataset: str
    classes: list[str]
    videos: list[SourceVideo] = field(default_factory=list)
    rejected: list[Rejection] = field(default_factory=list)

    @property
    def num_inputs(self) -> int:
        return len(self.videos) + len(self.rejected)


def index_files(root: Path | str) -> dict[str, Path | str]:
    """Every non-hidden file under root (a local folder, or an s3:// / gs:// URI), keyed by its
    path relative to root (POSIX); the values are local Paths, or the files' URIs."""
    if is_uri(root):
        folder = Folder(root)
        if not folder.is_folder():
            raise AnnotationError(f"videos folder {root} does not exist or is not a folder")
        return {relative: join(folder.uri, relative) for relative in folder.files()
                if not any(part.startswith(".") for part in relative.split("/"))}
    root = Path(root).resolve()  # workers and reruns may start in another directory
    if not root.is_dir():
        raise AnnotationError(f"videos folder {root} does not exist or is not a folder")
    files = {}
    for path in sorted(root.rglob("*")):
        relative = path.relative_to(root)
        if path.is_file() and not any(part.startswith(".") for part in relative.parts):
            files[relative.as_posix()] = path
    return files


def located(root: Path | str, relative: str) -> str:
    """root/relative as text, for a local folder or a URI (where a rejection points)."""
    return join(str(root), relative) if is_uri(root) else str(Path(root).resolve() / relative)


def finish(dataset: str, classes: list[str], videos: list[SourceVideo],
           rejected: list[Rejection], split: str | None = None) -> DatasetListing:
    """Drop duplicate ids (the first in file order wins), filter the split, sort the videos."""
    kept: dict[str, SourceVideo] = {}
    rejected = list(rejected)
    for video in videos:
        if video.video_id in kept:
            first = kept[video.video_id].path
            rejected.append(Rejection(str(video.path), video.video_id, video.split,
                                      f"duplicate video id (first seen at {first})"))
        else:
            kept[video.video_id] = video
    splits = {v.split for v in kept.values()} | {r.split for r in rejected}
    if split is not None and split not in splits:
        raise AnnotationError(f"no videos in split {split!r}: this {dataset} listing has "
                              f"{', '.join(map(repr, sorted(splits))) or 'no videos at all'}")
    chosen = [v for v in kept.values() if split is None or v.split == split]
    rejected = [r for r in rejected if split is None or r.split == split]
    chosen.sort(key=lambda v: (v.split, v.video_id))
    rejected.sort(key=lambda r: (r.split, r.video_id, r.source_path))
    return DatasetListing(dataset, classes, chosen, rejected)
