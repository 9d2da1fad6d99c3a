"""Collectives for pretraining, kept out of the model: the all-gather of L_rc's negatives.

`gather_keys_with_grad` is a model.objective.KeyGather: every worker's keys are gathered (sizes
may differ by one video, so they are padded to the largest), and this worker's own slot is
replaced by its local tensor, so gradients flow to the local part only; other workers' keys are
constants (each worker backpropagates its own).
"""

from __future__ import annotations

import torch
import torch.distributed as dist


def distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def gather_keys_with_grad(keys: torch.Tensor) -> tuple[torch.Tensor, int]:
    """keys (B_r, ...) on this rank -> (keys of all ranks (sum B_r, ...), this rank's offset)."""
    if not distributed():
        return keys, 0
    world, rank = dist.get_world_size(), dist.get_rank()
    size = torch.tensor([keys.shape[0]], device=keys.device)
    sizes = [torch.zeros_like(size) for _ in range(world)]
    dist.all_gather(sizes, size)
    counts = [int(s.item()) for s in sizes]
    padded = keys.new_zeros((max(counts), *keys.shape[1:]))
    padded[: keys.shape[0]] = keys.detach()
    gathered = [torch.zeros_like(padded) for _ in range(world)]
    dist.all_gather(gathered, padded)
    pieces = [g[:count] for g, count in zip(gathered, counts, strict=True)]
    pieces[rank] = keys  # the local part keeps its gradient
    return torch.cat(pieces), sum(counts[:rank])


def any_rank(flag: bool, device: torch.device) -> bool:
    """True on every rank when `flag` is true on some rank (a scalar all-reduce)."""
    if not distributed():
        return flag
    value = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item() > 0)
