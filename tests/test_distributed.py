"""The collectives across a real 2-process gloo group: L_rc's negatives, L_mi's level groups,
the finetuning test pass split over ranks."""

from __future__ import annotations

import json

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from orchestration.distributed import any_rank, gather_keys_with_grad


def _worker(rank: int, world: int, init_file: str, out_file: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank,
                            world_size=world)
    try:
        keys = torch.full((rank + 2, 3), float(rank + 1), requires_grad=True)  # sizes 2 and 3
        gathered, offset = gather_keys_with_grad(keys)
        (gathered * torch.arange(gathered.shape[0])[:, None]).sum().backward()
        result = {"rows": gathered.shape[0], "offset": offset,
                  "values": gathered[:, 0].tolist(), "grad": keys.grad[:, 0].tolist(),
                  "any": any_rank(rank == 1, torch.device("cpu")),
                  "none": any_rank(False, torch.device("cpu"))}
        with open(f"{out_file}.{rank}", "w") as handle:
            json.dump(result, handle)
    finally:
        dist.destroy_process_group()


def test_gathered_keys_have_every_rank_with_gradients_for_the_local_part(tmp_path):
    mp.spawn(_worker, args=(2, str(tmp_path / "init"), str(tmp_path / "out")), nprocs=2)
    results = [json.loads((tmp_path / f"out.{rank}").read_text()) for rank in range(2)]
    for rank, result in enumerate(results):
        assert result["rows"] == 5  # 2 + 3 videos, unequal sizes handled
        assert result["values"] == [1.0, 1.0, 2.0, 2.0, 2.0]
        assert result["offset"] == [0, 2][rank]
        # d/dkeys of sum(row_index * key): the gradient reaches this rank's rows only.
        assert result["grad"] == [float(i) for i in range(result["offset"],
                                                          result["offset"] + rank + 2)]
        assert result["any"] is True and result["none"] is False


def test_without_a_process_group_the_keys_are_returned_as_they_are():
    keys = torch.randn(4, 3)
    gathered, offset = gather_keys_with_grad(keys)
    assert gathered is keys and offset == 0


B, K, WIDTH = 6, 2, 2  # 6 videos: 3 per rank


def _full_batch():
    """One global batch of pooled-feature maps and levels (3 levels: groups span the ranks)."""
    g = torch.Generator().manual_seed(4)
    c = 8 * WIDTH
    return (torch.randn(B, K, c, 1, 1, 1, generator=g), torch.randn(B, c, 1, 1, 1, generator=g),
            torch.randint(0, 3, (B, K), generator=g), torch.randint(0, 3, (B,), generator=g))


def _level_mi(rows: slice, gather):
    """The objective with L_mi only, on the given rows of the batch: (estimates, theta grads)."""
    from model import LossConfig, ModelConfig, Objective

    torch.manual_seed(0)  # the same G_theta everywhere
    objective = Objective(ModelConfig(width=WIDTH, num_clips=K),
                          LossConfig(contrast="none", mi=True, td=False))
    local_maps, global_maps, local_levels, global_levels = _full_batch()
    out = objective(local_maps[rows], global_maps[rows], None, local_levels[rows],
                    global_levels[rows], gather_views=gather,
                    generator=torch.Generator().manual_seed(11))
    out.total.backward()
    grads = [p.grad.flatten().tolist() for p in objective.statistics.parameters()]
    return {"mi_level": out.estimates["mi_level"].item(),
            "pairs": out.estimates["mi_joint_pairs"].item(), "theta_grads": grads}


def _mi_worker(rank: int, world: int, init_file: str, out_file: str) -> None:
    from orchestration.distributed import gather_views_with_grad

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank,
                            world_size=world)
    try:
        half = B // world
        result = _level_mi(slice(rank * half, (rank + 1) * half), gather_views_with_grad)
        # The gather alone: every rank computes the same loss of the whole batch.
        views = torch.arange(rank * half, (rank + 1) * half, dtype=torch.float32)
        views = (views[:, None] + torch.zeros(1, 2)).requires_grad_()
        gathered, offset = gather_views_with_grad(views)
        (gathered ** 2).sum().backward()
        result |= {"gathered": gathered[:, 0].tolist(), "offset": offset,
                   "grad": views.grad[:, 0].tolist()}
        with open(f"{out_file}.{rank}", "w") as handle:
            json.dump(result, handle)
    finally:
        dist.destroy_process_group()


def test_level_groups_of_l_mi_span_the_global_batch_as_in_one_process(tmp_path):
    from model.objective import local_keys

    mp.spawn(_mi_worker, args=(2, str(tmp_path / "init"), str(tmp_path / "out")), nprocs=2)
    results = [json.loads((tmp_path / f"out.{rank}").read_text()) for rank in range(2)]
    whole = _level_mi(slice(0, B), local_keys)  # one process holding the whole batch
    assert whole["pairs"] > 0
    for rank, result in enumerate(results):
        # Same joint pairs (levels shared across ranks), same estimate, same G_theta gradient.
        assert result["pairs"] == whole["pairs"]
        assert result["mi_level"] == pytest.approx(whole["mi_level"], abs=1e-6)
        for mine, reference in zip(result["theta_grads"], whole["theta_grads"], strict=True):
            assert mine == pytest.approx(reference, abs=1e-5)
        # The gather: rows in rank order; d/dx sum(x^2) = 2x, summed over the 2 ranks' copies
        # of the loss (DDP then averages parameter gradients back to one process's).
        assert result["gathered"] == [float(i) for i in range(B)]
        assert result["offset"] == 3 * rank
        assert result["grad"] == [2 * 2.0 * i for i in range(3 * rank, 3 * rank + 3)]


def test_level_pairs_need_a_gathered_batch_when_groups_span_workers():
    from model.objective import local_keys

    whole = _level_mi(slice(0, B), local_keys)
    half = _level_mi(slice(0, B // 2), local_keys)
    assert half["pairs"] < whole["pairs"]  # a worker alone sees a fraction of each group


def _test_pass_worker(rank: int, world: int, init_file: str, out_file: str, shards: str) -> None:
    from model.encoder import R3D18
    from orchestration.finetune import VideoClassifier, test_probabilities
    from pipeline.config import AugmentConfig

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank,
                            world_size=world)
    try:
        torch.manual_seed(0)
        model = VideoClassifier(R3D18(2), 2)
        p, y = test_probabilities(model, shards, "dali", AugmentConfig(size=32), rank, world)
        torch.save((p, y), f"{out_file}.{rank}")
    finally:
        dist.destroy_process_group()


def test_the_finetuning_test_pass_split_over_ranks_scores_every_video_as_one_process(
        shards, tmp_path):
    from model.encoder import R3D18
    from orchestration.finetune import VideoClassifier, test_probabilities
    from pipeline.config import AugmentConfig
    from pipeline.shard_reader import ShardDataset

    mp.spawn(_test_pass_worker, args=(2, str(tmp_path / "init"), str(tmp_path / "out"),
                                      str(shards["frames"])), nprocs=2)
    torch.manual_seed(0)
    alone = test_probabilities(VideoClassifier(R3D18(2), 2), str(shards["frames"]), "dali",
                               AugmentConfig(size=32))
    labels = ShardDataset.open(shards["frames"]).label
    assert alone[0].shape == (6, 2) and alone[1].tolist() == list(labels)
    for rank in range(2):
        p, y = torch.load(tmp_path / f"out.{rank}")
        assert torch.allclose(p, alone[0], atol=1e-6) and torch.equal(y, alone[1])
