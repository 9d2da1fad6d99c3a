"""The preprocessing job: plan shards, transcode them in parallel, resume after a crash, finish.

No torch, DALI or Ray: parallelism is a `ShardExecutor`, a function that runs `process_shard` over
tasks and yields results as they finish. `local_executor` uses worker processes on this machine;
orchestration supplies one that runs the same tasks on a Ray cluster.

Determinism and resumption: videos are put in a seeded pseudo-random order (`shuffled`: sorted
by a hash of (config.shuffle_seed, split, video_id), so that no shard holds a run of one class)
and cut into consecutive shards of `config.shard_size()` videos, so the same inputs and config
always give the same plan.
The worker that finishes a shard writes its Parquet file and then its progress record, both
atomically; a rerun (after a crash, a kill, or of a finished job) checks the plan, keeps every
shard whose record and file agree, and transcodes only the rest. Transcoding is single-threaded
and deterministic, so the rerun's shards are byte-identical to an uninterrupted run's.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import shutil
import sys
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TextIO

import pyarrow.parquet as pq

from preprocessing import shards as layout
from preprocessing.config import PreprocessConfig
from preprocessing.progress import Progress
from preprocessing.sources import DatasetListing, Rejection, SourceVideo
from preprocessing.transcode import VideoRejected, transcode


@dataclass(frozen=True)
class ShardTask:
    """Transcode `videos` into shard number `index` of `out_dir`."""

    index: int
    out_dir: str
    config: PreprocessConfig
    videos: tuple[SourceVideo, ...]


@dataclass(frozen=True)
class ShardResult:
    """What a finished shard holds; also its progress record on disk."""

    index: int
    file: str | None  # None when every video of the shard was rejected
    rows: int
    bytes: int
    sha256: str | None
    frames: int
    splits: dict[str, int]  # rows per split
    rejected: tuple[Rejection, ...]

    def to_json(self) -> dict:
        return {**asdict(self), "rejected": [asdict(r) for r in self.rejected]}

    @classmethod
    def from_json(cls, value: dict) -> ShardResult:
        return cls(**{**value, "rejected": tuple(Rejection(**r) for r in value["rejected"])})


ShardExecutor = Callable[[Callable[[ShardTask], ShardResult], list[ShardTask]],
                         Iterator[ShardResult]]


class PlanMismatch(ValueError):
    """The output folder holds shards of a different plan (config or input list changed)."""


def shuffled(videos: list[SourceVideo], seed: int) -> list[SourceVideo]:
    """The videos in a pseudo-random order fixed by `seed`: sorted by sha256(seed, split, id).

    A hash order, not a generator's permutation: it depends on nothing but the ids and the seed
    (no library version), and adding a video to a dataset moves only that video.
    """
    def key(video: SourceVideo) -> bytes:
        return hashlib.sha256(f"{seed}\0{video.split}\0{video.video_id}".encode()).digest()

    return sorted(videos, key=key)


def plan_shards(listing: DatasetListing, config: PreprocessConfig, out_dir: Path
                ) -> list[ShardTask]:
    size = config.shard_size()
    videos = shuffled(listing.videos, config.shuffle_seed)
    return [ShardTask(index, str(out_dir), config, tuple(videos[start:start + size]))
            for index, start in enumerate(range(0, len(videos), size))]


def _row(video: SourceVideo, result, config: PreprocessConfig) -> dict:
    return {"video_id": video.video_id, "label": video.label, "label_name": video.label_name,
            "split": video.split, "source_path": str(video.path), "fps": float(config.fps),
            "num_frames": result.num_frames, "height": result.height, "width": result.width,
            "codec": result.codec, "source_codec": result.source_codec,
            "payload": result.payload}


def process_shard(task: ShardTask) -> ShardResult:
    """Transcode a shard's videos, write its Parquet file, then its progress record.

    Runs in a worker process or a Ray task. No video is lost: one that fails, for any reason,
    becomes a rejection with that reason.
    """
    out_dir = Path(task.out_dir)
    rows, rejected = [], []
    for video in task.videos:
        try:
            result = transcode(video.path, task.config, video.frame_range)
        except VideoRejected as reason:
            rejected.append(Rejection(str(video.path), video.video_id, video.split, str(reason)))
            continue
        except Exception as error:  # an unexpected failure must not take the shard down
            rejected.append(Rejection(str(video.path), video.video_id, video.split,
                                      f"internal error: {type(error).__name__}: {error}"))
            continue
        rows.append(_row(video, result, task.config))
    file = sha = None
    size = 0
    if rows:
        file = layout.shard_name(task.index)
        path = out_dir / file
        layout.write_shard(path, rows, task.config.payload, task.config.row_group_mb * 2**20)
        sha, size = layout.sha256_of(path), path.stat().st_size
    shard = ShardResult(task.index, file, len(rows), size, sha,
                        sum(row["num_frames"] for row in rows),
                        dict(sorted(Counter(row["split"] for row in rows).items())),
                        tuple(rejected))
    layout.write_json_atomic(layout.progress_record_path(out_dir, task.index), shard.to_json())
    return shard


def local_executor(workers: int) -> ShardExecutor:
    """Run shards in `workers` processes on this machine (inline when workers == 1)."""

    def run(function: Callable[[ShardTask], ShardResult], tasks: list[ShardTask]
            ) -> Iterator[ShardResult]:
        if workers <= 1 or len(tasks) <= 1:
            yield from map(function, tasks)
            return
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
            futures = [pool.submit(function, task) for task in tasks]
            for future in as_completed(futures):
                yield future.result()

    return run


def _plan_record(listing: DatasetListing, config: PreprocessConfig,
                 tasks: list[ShardTask]) -> dict:
    return {"format_version": layout.FORMAT_VERSION, "dataset": listing.dataset,
            "config": config.to_dict(), "classes": listing.classes,
            "shards": [[video.video_id for video in task.videos] for task in tasks]}


def _prepare_folder(out_dir: Path, plan: dict, overwrite: bool) -> None:
    progress = out_dir / layout.PROGRESS_DIR
    plan_path = progress / layout.PLAN
    if overwrite and out_dir.exists():
        for path in layout.part_files(out_dir):
            path.unlink()
        for name in (layout.MANIFEST, layout.REJECTED):
            (out_dir / name).unlink(missing_ok=True)
            (out_dir / layout.LEGACY_NAMES[name]).unlink(missing_ok=True)
        shutil.rmtree(progress, ignore_errors=True)
    if plan_path.is_file():
        if json.loads(plan_path.read_text()) != plan:
            raise PlanMismatch(
                f"{out_dir} holds shards made from a different config or list of videos; "
                f"write to a new folder or pass --overwrite to replace them")
    elif out_dir.exists() and layout.part_files(out_dir):
        raise PlanMismatch(f"{out_dir} holds shards without a plan record; write to a new "
                           f"folder or pass --overwrite")
    progress.mkdir(parents=True, exist_ok=True)
    layout.remove_temporaries(out_dir)
    if not plan_path.is_file():
        layout.write_json_atomic(plan_path, plan)


def _finished(out_dir: Path, task: ShardTask) -> ShardResult | None:
    """The shard's record if it and its file agree (size and row count; sha256 in verify)."""
    record_path = layout.progress_record_path(out_dir, task.index)
    if not record_path.is_file():
        return None
    result = ShardResult.from_json(json.loads(record_path.read_text()))
    if result.rows + len(result.rejected) != len(task.videos):
        return None
    if result.file is not None:
        path = out_dir / result.file
        try:
            if path.stat().st_size != result.bytes or \
                    pq.ParquetFile(path).metadata.num_rows != result.rows:
                return None
        except (OSError, pq.lib.ArrowException):
            return None
    return result


def run_preprocess(listing: DatasetListing, config: PreprocessConfig, out_dir: Path,
                   executor: ShardExecutor | None = None, overwrite: bool = False,
                   log: TextIO | None = None) -> dict:
    """Shard `listing` into `out_dir`; returns the manifest (also written, last)."""
    log = log or sys.stderr
    out_dir = Path(out_dir)
    tasks = plan_shards(listing, config, out_dir)
    _prepare_folder(out_dir, _plan_record(listing, config, tasks), overwrite)
    results = {task.index: done for task in tasks if (done := _finished(out_dir, task))}
    todo = [task for task in tasks if task.index not in results]
    already = sum(len(task.videos) for task in tasks if task.index in results)
    if results:
        log.write(f"resuming: {len(results)} of {len(tasks)} shards already complete\n")
    progress = Progress(len(listing.videos), "preprocess", done=already, stream=log)
    sizes = {task.index: len(task.videos) for task in tasks}
    for result in (executor or local_executor(1))(process_shard, todo):
        results[result.index] = result
        progress.advance(sizes[result.index])
    return _finish(out_dir, listing, config, [results[task.index] for task in tasks])


def _finish(out_dir: Path, listing: DatasetListing, config: PreprocessConfig,
            results: list[ShardResult]) -> dict:
    rejected = sorted([*listing.rejected, *(r for result in results for r in result.rejected)],
                      key=lambda r: (r.split, r.video_id, r.source_path))
    rows = sum(result.rows for result in results)
    if rows + len(rejected) != listing.num_inputs:
        raise RuntimeError(f"internal error: {rows} rows + {len(rejected)} rejected != "
                           f"{listing.num_inputs} inputs")
    layout.write_rejected(out_dir / layout.REJECTED, rejected)
    splits = sum((Counter(result.splits) for result in results), Counter())
    manifest = {
        "format_version": layout.FORMAT_VERSION,
        "dataset": listing.dataset,
        "payload_format": config.payload,
        "codec": "jpeg" if config.payload == "frames" else config.codec,
        "config": config.to_dict(),
        "classes": listing.classes,
        "num_inputs": listing.num_inputs,
        "num_videos": rows,
        "num_rejected": len(rejected),
        "num_frames": sum(result.frames for result in results),
        "splits": dict(sorted(splits.items())),
        "shards": [{"file": r.file, "rows": r.rows, "bytes": r.bytes, "sha256": r.sha256}
                   for r in results if r.file is not None],
        "rejected_file": layout.REJECTED,
    }
    layout.write_json_atomic(out_dir / layout.MANIFEST, manifest)
    return manifest
