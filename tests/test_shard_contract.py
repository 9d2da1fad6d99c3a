"""The shard contract: metadata files that Parquet readers skip, the format version checked on
every read, and folders of the previous format still readable."""

from __future__ import annotations

import json
import shutil

import pyarrow.dataset as ds
import pytest

from pipeline.shard_reader import ShardDataset
from preprocessing import shards as layout
from preprocessing.storage import Folder
from preprocessing.summary import summarize_shards
from preprocessing.verify import verify_shards


def test_parquet_readers_of_the_folder_see_only_video_rows(shards):
    manifest = layout.read_manifest(shards["frames"])
    assert manifest["num_rejected"] > 0  # the fixture has rejected inputs to leave out
    dataset = ds.dataset(shards["frames"], format="parquet")  # pyarrow's discovery
    assert dataset.count_rows() == manifest["num_videos"]
    assert layout.PAYLOAD in dataset.schema.names
    assert layout.part_names(Folder(shards["frames"])) == sorted(
        s["file"] for s in manifest["shards"])


def test_a_folder_of_format_1_still_reads(shards, tmp_path):
    old = tmp_path / "old"
    shutil.copytree(shards["video"], old)
    manifest = json.loads((old / layout.MANIFEST).read_text())
    manifest |= {"format_version": 1, "rejected_file": "rejected.parquet"}
    (old / layout.MANIFEST).unlink()
    (old / "manifest.json").write_text(json.dumps(manifest))
    (old / layout.REJECTED).rename(old / "rejected.parquet")
    assert ShardDataset.open(old).video_id == ShardDataset.open(shards["video"]).video_id
    assert verify_shards(old, sample=1).ok
    assert "rejected" in summarize_shards(old)


def test_an_unknown_format_version_is_refused_with_one_line(shards, tmp_path):
    future = tmp_path / "future"
    shutil.copytree(shards["video"], future)
    manifest = json.loads((future / layout.MANIFEST).read_text())
    (future / layout.MANIFEST).write_text(json.dumps({**manifest, "format_version": 99}))
    with pytest.raises(ValueError, match="format_version 99, this ctrlaug reads 1, 2"):
        ShardDataset.open(future)
