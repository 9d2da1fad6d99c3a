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


def test_a_piece_whose_worker_dies_on_every_try_is_named_after_the_others(tmp_path):
    import os
    from types import SimpleNamespace

    import pytest

    from preprocessing.job import WorkerDied

    def double_or_crash(task):  # local: Ray ships it by value (workers cannot import tests/)
        if task.shard == 2:
            os._exit(9)  # as on a decoder crash or the OOM killer
        return 2 * task.shard

    tasks = [SimpleNamespace(shard=i, start=0, videos=[SimpleNamespace(path=f"/v/{i}.mp4")])
             for i in range(4)]
    results = []
    with pytest.raises(WorkerDied, match=r"on each of its 2 tries.*\n.*shard 2, videos 0-0"):
        for result in ray_executor(max_retries=1)(double_or_crash, tasks):
            results.append(result)
    assert sorted(results) == [0, 2, 6]
