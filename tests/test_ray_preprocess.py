"""The preprocessing job on a local Ray instance gives the same shards as the local path."""

from __future__ import annotations

import io

import pyarrow.parquet as pq

from orchestration.ray_preprocess import ray_executor
from preprocessing.config import PreprocessConfig
from preprocessing.job import PieceTask, local_executor, run_preprocess
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

    tasks = [SimpleNamespace(shard=i, start=0, videos=[SimpleNamespace(path=f"/v/{i}.mp4")],
                             local_paths=list) for i in range(4)]
    results = []
    with pytest.raises(WorkerDied, match=r"on each of its 2 tries.*\n.*shard 2, videos 0-0"):
        for result in ray_executor(max_retries=1)(double_or_crash, tasks):
            results.append(result)
    assert sorted(results) == [0, 2, 6]


def test_a_node_that_cannot_see_the_output_folder_stops_the_job_before_any_piece(videos,
                                                                                 tmp_path):
    """What a node without the shared filesystem sees is what a missing path looks like: the
    probe runs on every node (here the one local node) and the job stops before transcoding."""
    import pytest

    listing = list_dataset("folder", videos)
    task = PieceTask(0, 0, str(tmp_path / "shards"), PreprocessConfig(), tuple(listing.videos))
    assert task.local_paths() == [str(tmp_path / "shards" / "_progress" / "plan.json"),
                                  str(listing.videos[0].path)]
    ran = []
    with pytest.raises(ValueError, match=r"1 of 1 Ray nodes cannot see.*\n  node .* does not "
                                         r"see .*plan\.json\n.*nothing was transcoded"):
        for result in ray_executor(max_retries=0)(ran.append, [task]):
            ran.append(result)
    assert ran == []
    # the real job writes the plan record first, so on a shared filesystem the probe passes
    quiet = io.StringIO()
    manifest = run_preprocess(listing, PreprocessConfig(videos_per_shard=4), tmp_path / "shards",
                              ray_executor(), log=quiet)
    assert manifest["num_videos"] > 0
    # an object store reads the same from every node: nothing local to probe for the output
    assert PieceTask(0, 0, "s3://bucket/shards", PreprocessConfig(),
                     tuple(listing.videos)).local_paths() == [str(listing.videos[0].path)]
