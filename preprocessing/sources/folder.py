"""A generic folder of class folders: `<videos>/<class>/<any file>`.

Class indices are the sorted class-folder names; every non-hidden file inside a class folder is an
input (one that is not a video is rejected with the reason); the video id is `class/stem`.
All videos get the split given (default "train").
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath

from preprocessing.sources.listing import (
    AnnotationError,
    DatasetListing,
    SourceVideo,
    finish,
    index_files,
)


def list_folder(videos: Path | str, split: str = "train") -> DatasetListing:
    files = index_files(videos)
    classes = sorted({PurePosixPath(r).parts[0] for r in files if len(PurePosixPath(r).parts) == 2})
    if not classes:
        raise AnnotationError(f"{videos} has no class folders with files in them")
    index = {name: i for i, name in enumerate(classes)}
    found = []
    for relative, path in files.items():
        parts = PurePosixPath(relative).parts
        if len(parts) != 2:  # files outside class folders or nested deeper are not inputs
            continue
        video_id = f"{parts[0]}/{PurePosixPath(parts[1]).stem}"
        found.append(SourceVideo(video_id, path, index[parts[0]], parts[0], split))
    return finish("folder", classes, found, [])
