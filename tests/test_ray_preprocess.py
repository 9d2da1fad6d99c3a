"""The preprocessing job on a local Ray instance gives the same shards as the local path."""

from __future__ import annotations

import io

import pyarrow.parquet as pq

from orchestration.ray_preprocess import ray_executor
from preprocessing.config import PreprocessConfig
from preprocessing.job import local_executor, run_preprocess
from preprocessing.shards import REJECTED
from preprocessing.sources import list_dataset


def test_ray_path_gives_the_same_shards_as_the_local_path(videos, tmp_path):
    listing = list_dataset("folder", videos)
    config = PreprocessConfig(videos_per_shard=3)
    quiet = io.StringIO()
    local = run_preprocess(listing, config, tmp_path / "local", local_executor(2), log=quiet)
    on_ray = run_preprocess(listing, config, tmp_path / "ray", ray_executor(), log=quiet)
    assert on_ray == local
    # 11 inputs, 3 per shard: 4 planned, one of which holds only rejected inputs (not written)
    assert len(local["shards"]) == 3
    for shard in local["shards"]:
        assert (tmp_path / "ray" / shard["file"]).read_bytes() == (
            tmp_path / "local" / shard["file"]).read_bytes()
    assert pq.read_table(tmp_path / "ray" / REJECTED).equals(
        pq.read_table(tmp_path / "local" / REJECTED))
