"""Reading shard folders for training: the row index, the per-epoch order, the rank split, payloads.

No DALI, no torch. The folder's layout and columns come from preprocessing.shards (the one
shard contract; the manifest's format version is checked there). The index columns of every
row are read once (no payloads); payloads are
read a Parquet row group at a time, when the first row of that group is needed, and kept in an
LRU cache bounded in bytes, so a worker streams its share of the dataset instead of loading it.

Per-epoch order (a two-level shuffle that streams): the row groups are permuted with a generator
seeded by (seed, epoch) and cut into consecutive windows of at most `memory_bytes` of payload;
the rows of each window are permuted. The reader's cache has the same budget, so each window's
groups are read once. When the budget holds the whole dataset (or one rank's share of it) the
order is a uniform permutation; with a smaller budget a batch can only mix the groups of one
window, which is why preprocessing shuffles videos across shards (sorted by id, shards would hold
one class each), and why the default budget is large (2 GiB: 64 groups of 32 MB). Measured on
class-sorted shards in tests/test_loader.py. The same (seed, epoch) gives the same order on
every worker.

Split across ranks (every video exactly once per epoch): the order is cut into world_size
contiguous chunks whose sizes differ by at most one; every rank runs the same number of steps,
S = ceil(floor(N / world_size) / batch_size), and cuts its chunk into S near-equal batches.
Batches therefore hold at most batch_size videos, except when floor(N / world_size) is a
multiple of batch_size and a rank holds one extra video: one of its batches holds batch_size + 1
(and, on tiny datasets, when min_batch forces fewer, larger batches). Nothing is dropped and
nothing is repeated.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from preprocessing import shards as layout
from preprocessing.storage import Folder


@dataclass
class ShardDataset:
    """The rows of a shard folder (optionally one split): metadata arrays and payload locations.

    video_id, split, codec: lists; label, num_frames, height, width: int64 arrays; location:
    (N, 3) int64 = (file index, row group, row within the group); group_bytes: (N,) int64, the
    uncompressed size of the row's row group (what caching it costs).
    """

    root: Folder
    manifest: dict
    files: list[str]
    video_id: list[str]
    split: list[str]
    codec: list[str]
    label: np.ndarray
    num_frames: np.ndarray
    height: np.ndarray
    width: np.ndarray
    location: np.ndarray
    group_bytes: np.ndarray

    @classmethod
    def open(cls, shards: Path | str, split: str | None = None) -> ShardDataset:
        """Index a shard folder (a path or an s3:// / gs:// URI); ValueError with one clear line
        when it is not usable."""
        root = Folder(shards)
        manifest = layout.read_manifest(root)
        files = [shard["file"] for shard in manifest.get("shards", [])]
        columns: dict[str, list] = {name: [] for name in layout.INDEX_COLUMNS}
        locations, group_bytes = [], []
        for file_index, (name, shard) in enumerate(zip(files, manifest["shards"], strict=True)):
            if not root.is_file(name):
                raise ValueError(f"{root / name} is listed in the manifest but missing")
            parquet = pq.ParquetFile(root.open_input(name))
            if parquet.metadata.num_rows != shard["rows"]:
                raise ValueError(f"{root / name}: {parquet.metadata.num_rows} rows, the "
                                 f"manifest says {shard['rows']} (run `ctrlaug verify {root}`)")
            for group in range(parquet.num_row_groups):
                table = parquet.read_row_group(group, columns=layout.INDEX_COLUMNS)
                for column in layout.INDEX_COLUMNS:
                    columns[column].extend(table.column(column).to_pylist())
                locations += [(file_index, group, row) for row in range(table.num_rows)]
                group_bytes += [parquet.metadata.row_group(group).total_byte_size] * \
                    table.num_rows
        keep = np.array([split is None or s == split for s in columns["split"]], dtype=bool)
        if not keep.any():
            raise ValueError(f"{root} has no videos" + (f" in split {split!r}" if split else ""))

        def select(values):
            return [v for v, k in zip(values, keep, strict=True) if k]

        return cls(root=root, manifest=manifest, files=files,
                   video_id=select(columns["video_id"]), split=select(columns["split"]),
                   codec=select(columns["codec"]),
                   label=np.array(columns["label"], dtype=np.int64)[keep],
                   num_frames=np.array(columns["num_frames"], dtype=np.int64)[keep],
                   height=np.array(columns["height"], dtype=np.int64)[keep],
                   width=np.array(columns["width"], dtype=np.int64)[keep],
                   location=np.array(locations, dtype=np.int64).reshape(-1, 3)[keep],
                   group_bytes=np.array(group_bytes, dtype=np.int64)[keep])

    def __len__(self) -> int:
        return len(self.video_id)

    @property
    def payload_format(self) -> str:
        return self.manifest["payload_format"]

    @property
    def classes(self) -> list[str]:
        return self.manifest["classes"]


DEFAULT_SHUFFLE_BYTES = 2 * 2**30


def epoch_order(dataset: ShardDataset, seed: int, epoch: int, shuffle: bool = True,
                memory_bytes: int = DEFAULT_SHUFFLE_BYTES) -> np.ndarray:
    """Every row of the dataset once, in this epoch's order (see the module docstring).

    memory_bytes: payload bytes a window of row groups may hold (at least one group each).
    """
    rows = np.arange(len(dataset))
    if not shuffle:
        return rows
    rng = np.random.default_rng([seed, epoch, 3])
    group_key = dataset.location[:, 0] * 1_000_000 + dataset.location[:, 1]
    groups, first_row, group_of_row = np.unique(group_key, return_index=True,
                                                return_inverse=True)
    shuffled = rng.permutation(len(groups))  # slot -> group
    window_of_slot = np.zeros(len(groups), dtype=np.int64)
    window, held = 0, 0
    for slot, group in enumerate(shuffled):
        size = int(dataset.group_bytes[first_row[group]])
        if held and held + size > memory_bytes:
            window, held = window + 1, 0
        window_of_slot[slot], held = window, held + size
    window_of_group = np.empty(len(groups), dtype=np.int64)
    window_of_group[shuffled] = window_of_slot
    return rows[np.lexsort((rng.random(len(rows)), window_of_group[group_of_row]))]


def rank_batches(order: np.ndarray, rank: int, world_size: int, batch_size: int,
                 min_batch: int = 1) -> list[np.ndarray]:
    """This rank's batches of row ids: exactly-once over ranks, same step count on every rank.

    min_batch: no batch may hold fewer videos (contrastive pretraining needs 2); when the data
    is too small for that at batch_size, there are fewer, larger batches.
    """
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is outside world_size {world_size}")
    smallest = len(order) // world_size
    if smallest < min_batch:
        raise ValueError(f"{len(order)} videos cannot be split over {world_size} workers "
                         f"with at least {min_batch} per batch")
    steps = min(math.ceil(smallest / batch_size), smallest // min_batch)
    chunk = np.array_split(order, world_size)[rank]
    return np.array_split(chunk, steps)


class PayloadReader:
    """Reads payloads by row id, one Parquet row group at a time, with an LRU of row groups that
    holds at most `memory_bytes` (and always the group in use). `groups_read` counts reads."""

    def __init__(self, dataset: ShardDataset,
                 memory_bytes: int = DEFAULT_SHUFFLE_BYTES) -> None:
        self.dataset = dataset
        self.memory_bytes = memory_bytes
        self.groups_read = 0
        self._cache: OrderedDict[tuple[int, int], pa.Array] = OrderedDict()
        self._files: dict[int, pq.ParquetFile] = {}

    def _group(self, file_index: int, group: int) -> pa.Array:
        key = (file_index, group)
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        if file_index not in self._files:
            self._files[file_index] = pq.ParquetFile(
                self.dataset.root.open_input(self.dataset.files[file_index]))
        payloads = self._files[file_index].read_row_group(group, columns=[layout.PAYLOAD])
        self.groups_read += 1
        self._cache[key] = payloads.column(layout.PAYLOAD).combine_chunks()
        while len(self._cache) > 1 and \
                sum(array.nbytes for array in self._cache.values()) > self.memory_bytes:
            self._cache.popitem(last=False)
        return self._cache[key]

    def read(self, rows: np.ndarray) -> list[bytes | list[bytes]]:
        """Payloads of the given row ids (bytes for video, a list of JPEG bytes for frames)."""
        out = []
        for row in rows:
            file_index, group, within = self.dataset.location[row]
            out.append(self._group(int(file_index), int(group))[int(within)].as_py())
        return out
