"""Collectives for pretraining, kept out of the model: the all-gathers the objective is handed.

Both gathers are model.objective.KeyGather callables, tensor (B_r, ...) on this rank ->
(every rank's rows (sum B_r, ...) in rank order, this rank's offset); ranks may hold batches
that differ by one video, so rows are padded to the largest for the collective. Without a
process group both return their input.

- `gather_keys_with_grad` (L_rc / L_nce negatives): other ranks' rows are constants; this rank's
  own slot is its local tensor, so gradients flow to the local part only. Each rank computes the
  loss of its own queries and backpropagates its own keys.
- `gather_rows` (evaluation: every rank's share of the test videos): a plain gather.
- `gather_views_with_grad` (L_mi level groups): every rank computes the same loss over the whole
  gathered batch; the backward pass sums every rank's gradient for this rank's rows (the
  solo-learn GatherLayer), so after DDP averages the parameter gradients, training matches one
  process holding the global batch.
"""

from __future__ import annotations

import torch
import torch.distributed as dist


def distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def _counts(rows: torch.Tensor) -> list[int]:
    """B_r of every rank, in rank order."""
    size = torch.tensor([rows.shape[0]], device=rows.device)
    sizes = [torch.zeros_like(size) for _ in range(dist.get_world_size())]
    dist.all_gather(sizes, size)
    return [int(s.item()) for s in sizes]


def _gather_rows(rows: torch.Tensor, counts: list[int]) -> list[torch.Tensor]:
    """Every rank's rows, detached, as a list of (B_r, ...) tensors in rank order."""
    padded = rows.new_zeros((max(counts), *rows.shape[1:]))
    padded[: rows.shape[0]] = rows.detach()
    gathered = [torch.zeros_like(padded) for _ in counts]
    dist.all_gather(gathered, padded)
    return [g[:count] for g, count in zip(gathered, counts, strict=True)]


def gather_rows(rows: torch.Tensor) -> torch.Tensor:
    """rows (B_r, ...) on this rank -> every rank's rows (sum B_r, ...) in rank order, without
    gradients."""
    if not distributed():
        return rows
    return torch.cat(_gather_rows(rows, _counts(rows)))


def gather_keys_with_grad(keys: torch.Tensor) -> tuple[torch.Tensor, int]:
    """keys (B_r, ...) on this rank -> (keys of all ranks (sum B_r, ...), this rank's offset)."""
    if not distributed():
        return keys, 0
    rank, counts = dist.get_rank(), _counts(keys)
    pieces = _gather_rows(keys, counts)
    pieces[rank] = keys  # the local part keeps its gradient
    return torch.cat(pieces), sum(counts[:rank])


class _GatherSummingGradients(torch.autograd.Function):
    """All-gather whose backward all-reduces (sums) the gradient and returns this rank's rows."""

    @staticmethod
    def forward(ctx, rows: torch.Tensor, counts: list[int], start: int) -> torch.Tensor:
        ctx.start, ctx.count = start, rows.shape[0]
        return torch.cat(_gather_rows(rows, counts))

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        grad = grad.contiguous().clone()
        dist.all_reduce(grad)
        return grad[ctx.start: ctx.start + ctx.count], None, None


def gather_views_with_grad(views: torch.Tensor) -> tuple[torch.Tensor, int]:
    """views (B_r, ...) on this rank -> (views of all ranks (sum B_r, ...), this rank's offset);
    gradients of every rank's (identical) loss are summed onto this rank's rows."""
    if not distributed():
        return views, 0
    counts = _counts(views)
    start = sum(counts[: dist.get_rank()])
    if not views.requires_grad:  # levels, or no backward pass: a plain gather
        return gather_rows(views), start
    return _GatherSummingGradients.apply(views, counts, start), start


def any_rank(flag: bool, device: torch.device) -> bool:
    """True on every rank when `flag` is true on some rank (a scalar all-reduce)."""
    if not distributed():
        return flag
    value = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item() > 0)
