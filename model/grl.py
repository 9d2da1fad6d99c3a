"""Gradient reversal: identity forward, gradient times -scale backward (Ganin & Lempitsky, 2015).

Placed between the encoder and the MINE statistics network so that one backward pass makes
G_theta maximise the mutual-information bound while the encoder minimises it (Eq. 6).
"""

from __future__ import annotations

import torch
from torch import Tensor


class _GradReverse(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, scale: float) -> Tensor:
        ctx.scale = scale
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad_output: Tensor) -> tuple[Tensor, None]:
        return grad_output.neg() * ctx.scale, None


def grad_reverse(x: Tensor, scale: float = 1.0) -> Tensor:
    """Return x unchanged; on the way back, multiply the gradient by -scale."""
    return _GradReverse.apply(x, scale)
