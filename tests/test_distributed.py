"""The all-gather of L_rc's negatives across a real 2-process gloo group."""

from __future__ import annotations

import json

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
