"""The preprocessing job: plan shards, transcode them in parallel, resume after a crash, finish.

No torch, DALI or Ray: parallelism is a `ShardExecutor`, a function that runs `process_piece`
over tasks and yields results as they finish. `local_executor` uses worker processes on this
machine; orchestration supplies one that runs the same tasks on a Ray cluster.

Units: the shard (`config.shard_size()` videos, hundreds) is the unit of output; the piece (at
most `task_videos` videos, a few dozen) is the unit of work, so a cluster's cores all get work
and progress moves per piece. A worker writes a piece's rows and then its record under
_progress/; the driver assembles a shard from its pieces as soon as they are all done, writes
the shard's Parquet file and record, and removes the pieces.

Determinism and resumption: videos are put in a seeded pseudo-random order (`shuffled`: sorted
by a hash of (config.shuffle_seed, split, video_id), so that no shard holds a run of one class)
and cut into consecutive shards, so the same inputs and config always give the same plan. Every
write is atomic; a rerun (after a crash, a kill, or of a finished job) checks the plan, keeps
every shard whose record and file agree and every piece whose record and rows agree, and
transcodes only the rest. Transcoding is single-threaded and deterministic, so the rerun's
shards are byte-identical to an uninterrupted run's, whatever the piece size. A video whose
source could not be read (a storage or network failure: `Rejection.retryable`) does not make its
shard final: a rerun transcodes that shard again, so a job rerun after an outage picks those
videos up; rejections for the content are final.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import sys
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import as_completed
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TextIO

import pyarrow as pa
import pyarrow.parquet as pq

from preprocessing import shards as layout
from preprocessing.config import PreprocessConfig
from preprocessing.processes import spawn_pool
from preprocessing.progress import Progress
from preprocessing.sources import DatasetListing, Rejection, SourceVideo
from preprocessing.storage import Folder, is_uri
from preprocessing.transcode import VideoRejected, transcode


@dataclass(frozen=True)
class ShardTask:
    """Shard number `index` of `out_dir`: the unit of output, holding `videos` in order."""

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


ShardExecutor = Callable[[Callable[["PieceTask"], "PieceResult"], list["PieceTask"]],
                         Iterator["PieceResult"]]
"""Runs the work (process_piece over piece tasks) and yields results as they finish."""


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


def plan_shards(listing: DatasetListing, config: PreprocessConfig, out_dir: str | Path
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


@dataclass(frozen=True)
class PieceTask:
    """The unit of work: transcode `videos`, positions [start, start + len(videos)) of shard
    number `shard` of `out_dir`, into a piece (decoupled from the shard, the unit of output, so
    that a cluster's cores all get work whatever the shard size)."""

    shard: int
    start: int
    out_dir: str
    config: PreprocessConfig
    videos: tuple[SourceVideo, ...]

    def local_paths(self) -> list[str]:
        """Local paths a worker on another machine must see as this one does: the output
        folder's plan record (written by the job before any piece runs) and the first source
        video, each when it is local (an object-store URI reads the same everywhere)."""
        paths = []
        if not is_uri(self.out_dir):
            paths.append(str(Path(self.out_dir) / layout.PROGRESS_DIR / layout.PLAN))
        if self.videos and not is_uri(str(self.videos[0].path)):
            paths.append(str(self.videos[0].path))
        return paths


@dataclass(frozen=True)
class PieceResult:
    """What a finished piece holds; also its record on disk."""

    shard: int
    start: int
    count: int  # videos of the piece: rows + rejected
    rows: int
    rejected: tuple[Rejection, ...]

    def to_json(self) -> dict:
        return {**asdict(self), "rejected": [asdict(r) for r in self.rejected]}

    @classmethod
    def from_json(cls, value: dict) -> PieceResult:
        return cls(**{**value, "rejected": tuple(Rejection(**r) for r in value["rejected"])})


def process_piece(task: PieceTask) -> PieceResult:
    """Transcode a piece's videos, write its rows, then its record (both atomically).

    Runs in a worker process or a Ray task. No video is lost: one that fails, for any reason,
    becomes a rejection with that reason.
    """
    out_dir = Folder(task.out_dir)
    rows, rejected = [], []
    for video in task.videos:
        try:
            result = transcode(video.path, task.config, video.frame_range)
        except VideoRejected as reason:
            rejected.append(Rejection(str(video.path), video.video_id, video.split, str(reason),
                                      reason.retryable))
            continue
        except Exception as error:  # an unexpected failure must not take the piece down
            rejected.append(Rejection(str(video.path), video.video_id, video.split,
                                      f"internal error: {type(error).__name__}: {error}",
                                      retryable=True))
            continue
        rows.append(_row(video, result, task.config))
    count = len(task.videos)
    layout.write_table(out_dir, layout.piece_name(task.shard, task.start, count, ".parquet"),
                       pa.Table.from_pylist(rows, schema=layout.shard_schema(
                           task.config.payload)))
    piece = PieceResult(task.shard, task.start, count, len(rows), tuple(rejected))
    layout.write_json(out_dir, layout.piece_name(task.shard, task.start, count, ".json"),
                      piece.to_json())
    return piece


def assemble_shard(task: ShardTask, pieces: list[PieceResult]) -> ShardResult:
    """Write a shard from its finished pieces (in video order), then its record; remove the
    pieces. The bytes are those of writing the shard's rows in one go."""
    out_dir = Folder(task.out_dir)
    pieces = sorted(pieces, key=lambda piece: piece.start)
    names = [layout.piece_name(p.shard, p.start, p.count, suffix)
             for p in pieces for suffix in (".parquet", ".json")]
    rows = [row for name in names[::2] for row in layout.read_table(out_dir, name).to_pylist()]
    rejected = tuple(r for piece in pieces for r in piece.rejected)
    file = sha = None
    size = 0
    if rows:
        file = layout.shard_name(task.index)
        layout.write_shard(out_dir, file, rows, task.config.payload,
                           task.config.row_group_mb * 2**20)
        sha, size = layout.sha256_of(out_dir, file), out_dir.size(file)
    shard = ShardResult(task.index, file, len(rows), size, sha,
                        sum(row["num_frames"] for row in rows),
                        dict(sorted(Counter(row["split"] for row in rows).items())), rejected)
    layout.write_json(out_dir, layout.progress_record_name(task.index), shard.to_json())
    for name in names:
        out_dir.delete(name)
    return shard


def local_executor(workers: int) -> ShardExecutor:
    """Run tasks in `workers` processes on this machine (inline when workers == 1).

    An error stops the job at once: tasks not started are cancelled (they used to run to the
    end first). A worker process that dies (a decoder crash, the kernel's OOM killer) breaks
    the pool; the tasks it left unfinished are then run one at a time, each in a process of
    its own, so every other piece still finishes and is recorded, and the job ends with an
    error naming the videos of each piece whose process died again."""

    def run(function: Callable[[PieceTask], PieceResult], tasks: list[PieceTask]
            ) -> Iterator[PieceResult]:
        if workers <= 1 or len(tasks) <= 1:
            yield from map(function, tasks)
            return
        pool = spawn_pool(workers)
        futures = {pool.submit(function, task): index for index, task in enumerate(tasks)}
        done: set[int] = set()
        try:
            for future in as_completed(futures):
                result = future.result()
                done.add(futures[future])
                yield result
            return
        except BrokenProcessPool:  # what finished before the break still counts
            for future, index in futures.items():
                if index not in done and future.done() and not future.cancelled() and \
                        future.exception() is None:
                    done.add(index)
                    yield future.result()
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
        unfinished = [task for index, task in enumerate(tasks) if index not in done]
        died = []
        for task in unfinished:
            with spawn_pool(1) as alone:
                try:
                    result = alone.submit(function, task).result()
                except BrokenProcessPool:
                    died.append(task)
                    continue
            yield result
        if died:
            raise WorkerDied(died, "twice")

    return run


class WorkerDied(RuntimeError):
    """Worker processes died on these pieces (a decoder crash, the OOM killer) as often as
    the executor retries; every other piece finished and is recorded."""

    def __init__(self, pieces: list[PieceTask], attempts: str) -> None:
        listed = "\n".join(
            f"  shard {task.shard}, videos {task.start}-{task.start + len(task.videos) - 1}: "
            f"{', '.join(str(video.path) for video in task.videos)}" for task in pieces)
        super().__init__(f"a worker process died (a crash or the OOM killer) on one of these "
                         f"videos, {attempts}; every other piece is done and recorded, so a "
                         f"rerun after removing that video resumes:\n{listed}")
        self.pieces = pieces


def _plan_record(listing: DatasetListing, config: PreprocessConfig,
                 tasks: list[ShardTask]) -> dict:
    return {"format_version": layout.FORMAT_VERSION, "dataset": listing.dataset,
            "config": config.to_dict(), "classes": listing.classes,
            "shards": [[video.video_id for video in task.videos] for task in tasks]}


def _prepare_folder(out_dir: Folder, plan: dict, overwrite: bool) -> None:
    plan_name = f"{layout.PROGRESS_DIR}/{layout.PLAN}"
    if overwrite and out_dir.exists():
        for name in layout.part_names(out_dir):
            out_dir.delete(name)
        for name in (layout.MANIFEST, layout.REJECTED):
            out_dir.delete(name)
            out_dir.delete(layout.LEGACY_NAMES[name])
        out_dir.delete_folder(layout.PROGRESS_DIR)
    if out_dir.is_file(plan_name):
        if json.loads(out_dir.read_text(plan_name)) != plan:
            raise PlanMismatch(
                f"{out_dir} holds shards made from a different config or list of videos; "
                f"write to a new folder or pass --overwrite to replace them")
    elif out_dir.exists() and layout.part_names(out_dir):
        raise PlanMismatch(f"{out_dir} holds shards without a plan record; write to a new "
                           f"folder or pass --overwrite")
    layout.remove_temporaries(out_dir)
    if not out_dir.is_file(plan_name):
        layout.write_json(out_dir, plan_name, plan)


def _rows_in(folder: Folder, name: str) -> int | None:
    """Rows of a Parquet file, or None when it is missing or unreadable."""
    try:
        with folder.open_input(name) as source:
            return pq.ParquetFile(source).metadata.num_rows
    except (OSError, pq.lib.ArrowException):
        return None


def _shard_record(out_dir: Folder, task: ShardTask) -> ShardResult | None:
    """The shard's record as an earlier run wrote it, or None."""
    record = layout.progress_record_name(task.index)
    if not out_dir.is_file(record):
        return None
    return ShardResult.from_json(json.loads(out_dir.read_text(record)))


def _finished(out_dir: Folder, task: ShardTask, result: ShardResult | None
              ) -> ShardResult | None:
    """The shard's record (`result`) if it and its file agree (size and row count; sha256 in
    verify) and it holds no retryable rejection."""
    if result is None:
        return None
    if result.rows + len(result.rejected) != len(task.videos) or _retryable(result.rejected):
        return None
    if result.file is not None and (not out_dir.is_file(result.file) or
                                    out_dir.size(result.file) != result.bytes or
                                    _rows_in(out_dir, result.file) != result.rows):
        return None
    return result


DEFAULT_TASK_VIDEOS = 32


def run_preprocess(listing: DatasetListing, config: PreprocessConfig, out_dir: str | Path,
                   executor: ShardExecutor | None = None, overwrite: bool = False,
                   log: TextIO | None = None, task_videos: int = DEFAULT_TASK_VIDEOS) -> dict:
    """Shard `listing` into `out_dir`; returns the manifest (also written, last).

    The work runs as pieces of at most `task_videos` videos (the executor's tasks); a shard is
    assembled as soon as its pieces are done. Progress counts videos, with rate and ETA.
    """
    if task_videos < 1:
        raise ValueError(f"task_videos must be >= 1, got {task_videos}")
    log = log or sys.stderr
    out_dir = Folder(out_dir)
    if out_dir.is_file(""):
        raise ValueError(f"--out {out_dir} is a file; give a folder (new or holding shards)")
    with _only_job_in(out_dir):
        return _run_locked(listing, config, out_dir, executor, overwrite, log, task_videos)


@contextmanager
def _only_job_in(out_dir: Folder) -> Iterator[None]:
    """Hold the output folder's lock (`_lock`, an advisory flock: released when the process
    ends, however it ends) so that two jobs never write one local folder: the second one's
    clean-up deleted the first one's temporaries and pieces. Object stores have no such lock:
    there, one job per output folder is up to the user."""
    if not out_dir.is_local:
        yield
        return
    Path(out_dir.path).mkdir(parents=True, exist_ok=True)
    with open(Path(out_dir.path) / layout.LOCK, "a") as handle:  # closing it unlocks
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise PlanMismatch(f"another preprocessing job is writing to {out_dir}; wait for it "
                               f"to end, or write to another folder") from None
        yield


def _run_locked(listing: DatasetListing, config: PreprocessConfig, out_dir: Folder,
                executor: ShardExecutor | None, overwrite: bool, log: TextIO,
                task_videos: int) -> dict:
    tasks = plan_shards(listing, config, out_dir.uri)
    _prepare_folder(out_dir, _plan_record(listing, config, tasks), overwrite)
    records = {task.index: _shard_record(out_dir, task) for task in tasks}
    results = {task.index: done for task in tasks
               if (done := _finished(out_dir, task, records[task.index]))}
    retried = sum(_retryable(record.rejected) for index, record in records.items()
                  if record is not None and index not in results)
    pending, pieces = [], {task.index: [] for task in tasks if task.index not in results}
    for task in tasks:
        if task.index in results:
            continue
        for start in range(0, len(task.videos), task_videos):
            videos = task.videos[start:start + task_videos]
            done = _piece_record(out_dir, task.index, start, len(videos))
            if done and not _retryable(done.rejected):
                pieces[task.index].append(done)
            else:
                retried += _retryable(done.rejected) if done else 0
                pending.append(PieceTask(task.index, start, out_dir.uri, config, videos))
    already = sum(len(t.videos) for t in tasks if t.index in results) + \
        sum(p.count for done in pieces.values() for p in done)
    if retried:
        log.write(f"retrying {retried} videos an earlier run could not read (the shards, or "
                  f"the pieces of unfinished shards, holding them are transcoded again)\n")
    if already:
        log.write(f"resuming: {already} of {len(listing.videos)} videos already done "
                  f"({len(results)} of {len(tasks)} shards complete)\n")
    progress = Progress(len(listing.videos), "preprocess", done=already, stream=log)
    by_index = {task.index: task for task in tasks}

    def assemble_if_complete(index: int) -> None:
        if sum(p.count for p in pieces[index]) == len(by_index[index].videos):
            results[index] = assemble_shard(by_index[index], pieces.pop(index))

    for index in list(pieces):  # shards whose pieces all finished before a crash
        assemble_if_complete(index)
    for piece in (executor or local_executor(1))(process_piece, pending):
        pieces[piece.shard].append(piece)
        progress.advance(piece.count)
        assemble_if_complete(piece.shard)
    return _finish(out_dir, listing, config, [results[task.index] for task in tasks])


def _piece_record(out_dir: Folder, shard: int, start: int, count: int) -> PieceResult | None:
    """The piece's record if it accounts for all `count` videos and agrees with its rows file
    (the piece is finished unless it holds retryable rejections)."""
    record = layout.piece_name(shard, start, count, ".json")
    if not out_dir.is_file(record):
        return None
    piece = PieceResult.from_json(json.loads(out_dir.read_text(record)))
    if _rows_in(out_dir, layout.piece_name(shard, start, count, ".parquet")) != piece.rows:
        return None
    return piece if piece.rows + len(piece.rejected) == count else None


def _retryable(rejected: tuple[Rejection, ...]) -> int:
    """How many of these rejections a rerun tries again (their source could not be read)."""
    return sum(r.retryable for r in rejected)


def _finish(out_dir: Folder, listing: DatasetListing, config: PreprocessConfig,
            results: list[ShardResult]) -> dict:
    rejected = sorted([*listing.rejected, *(r for result in results for r in result.rejected)],
                      key=lambda r: (r.split, r.video_id, r.source_path))
    rows = sum(result.rows for result in results)
    if rows + len(rejected) != listing.num_inputs:
        raise RuntimeError(f"internal error: {rows} rows + {len(rejected)} rejected != "
                           f"{listing.num_inputs} inputs")
    layout.write_rejected(out_dir, rejected)
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
    layout.write_json(out_dir, layout.MANIFEST, manifest)
    return manifest
