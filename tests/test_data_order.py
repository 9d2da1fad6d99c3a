"""Data order: shards mix classes, and the training order is near-uniform while streaming.

Dataset ids sort by class (and source video), so neither the shard plan nor the epoch order may
follow them. Measured as distinct classes per batch against a uniform shuffle.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from pipeline.shard_reader import PayloadReader, ShardDataset, epoch_order, rank_batches
from preprocessing import shards as layout
from preprocessing.config import PreprocessConfig
from preprocessing.job import plan_shards, shuffled
from preprocessing.sources import DatasetListing, SourceVideo
from preprocessing.storage import Folder

CLASSES, PER_CLASS, GROUP_ROWS, PAYLOAD = 16, 8, 2, 1000
WORLD, BATCH = 2, 8


@pytest.fixture(scope="module")
def class_sorted(tmp_path_factory) -> Path:
    """A shard folder written the old way: rows sorted by id (so by class), 4 parts of 32 rows,
    row groups of 2 rows (64 groups): the worst case for a streaming shuffle."""
    root = tmp_path_factory.mktemp("class-sorted")
    rows = [{"video_id": f"c{label:02d}/v{index}", "label": label, "label_name": f"c{label:02d}",
             "split": "train", "source_path": "", "fps": 25.0, "num_frames": 32,
             "height": 72, "width": 96, "codec": "vp9", "source_codec": "h264",
             "payload": bytes([label]) * PAYLOAD}
            for label in range(CLASSES) for index in range(PER_CLASS)]
    shards = []
    for part in range(4):
        name = layout.shard_name(part)
        layout.write_shard(Folder(root), name, rows[part * 32:(part + 1) * 32], "video",
                           GROUP_ROWS * PAYLOAD)
        shards.append({"file": name, "rows": 32})
    (root / layout.MANIFEST).write_text(json.dumps({
        "format_version": layout.FORMAT_VERSION, "payload_format": "video",
        "classes": [f"c{label:02d}" for label in range(CLASSES)], "shards": shards}))
    return root


def mean_distinct_classes(labels: np.ndarray, orders) -> float:
    """Distinct classes per batch, over every rank's batches of every given epoch order."""
    counts = [len(set(labels[batch])) for order in orders for rank in range(WORLD)
              for batch in rank_batches(order, rank, WORLD, BATCH)]
    return float(np.mean(counts))


def test_the_epoch_order_mixes_classes_like_a_uniform_shuffle(class_sorted):
    dataset = ShardDataset.open(class_sorted)
    assert len(np.unique(dataset.location[:, :2], axis=0)) == 64  # many small row groups
    epochs = range(100)
    uniform = mean_distinct_classes(
        dataset.label, (np.random.default_rng(e).permutation(len(dataset)) for e in epochs))
    quarter = int(dataset.group_bytes.sum() // GROUP_ROWS) // 4  # a quarter of the dataset
    windowed = mean_distinct_classes(
        dataset.label, (epoch_order(dataset, 0, e, memory_bytes=quarter) for e in epochs))
    one_group = mean_distinct_classes(
        dataset.label, (epoch_order(dataset, 0, e, memory_bytes=1) for e in epochs))
    assert windowed >= 0.9 * uniform, (windowed, uniform)
    assert one_group < 0.7 * uniform, (one_group, uniform)  # the measure does tell them apart


def test_every_video_once_per_epoch_and_every_row_group_read_once(class_sorted):
    dataset = ShardDataset.open(class_sorted)
    quarter = int(dataset.group_bytes.sum() // GROUP_ROWS) // 4
    for epoch in range(3):
        order = epoch_order(dataset, 5, epoch, memory_bytes=quarter)
        assert sorted(order) == list(range(len(dataset)))
        reader = PayloadReader(dataset, memory_bytes=quarter)
        payloads = reader.read(order)
        assert [p[0] for p in payloads] == list(dataset.label[order])  # the right rows
        assert reader.groups_read == 64  # streamed: each group read once in the epoch


def test_shards_are_planned_in_a_seeded_order_that_mixes_classes():
    videos = [SourceVideo(f"c{label:02d}/v{index}", Path(f"/v/{label}/{index}.mp4"), label,
                          f"c{label:02d}", "train")
              for label in range(CLASSES) for index in range(PER_CLASS)]
    listing = DatasetListing("folder", [f"c{i:02d}" for i in range(CLASSES)], videos)
    config = PreprocessConfig(videos_per_shard=8)
    tasks = plan_shards(listing, config, Path("/out"))
    assert sorted(v.video_id for t in tasks for v in t.videos) == sorted(v.video_id
                                                                        for v in videos)
    per_shard = np.mean([len({v.label for v in task.videos}) for task in tasks])
    uniform = mean_distinct_classes(np.repeat(np.arange(CLASSES), PER_CLASS),
                                    (np.random.default_rng(e).permutation(128)
                                     for e in range(100)))
    assert per_shard >= 0.9 * uniform  # id order would give 1 class per shard
    again = plan_shards(listing, config, Path("/out"))
    assert [t.videos for t in tasks] == [t.videos for t in again]  # deterministic
    other = plan_shards(listing, PreprocessConfig(videos_per_shard=8, shuffle_seed=1),
                        Path("/out"))
    assert [t.videos for t in other] != [t.videos for t in tasks]
    # Adding a video moves only that video: the others keep their relative order.
    extra = SourceVideo("c99/new", Path("/v/new.mp4"), 0, "c00", "train")
    grown = [v.video_id for v in shuffled([*videos, extra], 0) if v is not extra]
    assert grown == [v.video_id for v in shuffled(videos, 0)]
