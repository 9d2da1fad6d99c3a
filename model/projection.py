"""The per-location projection head of L_rc and L_nce: 1x1x1 convs 512 -> 512 -> 128, then L2 norm.

A 1x1x1 convolution is a linear map applied at every cell, so the head is an MLP over the channel
axis of channels-last features; the same weights project feature-map cells (L_rc) and pooled
clip features (L_nce).
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn


class ProjectionHead(nn.Module):
    """(..., C) -> (..., D), L2-normalised: Linear(C, hidden) -> ReLU -> Linear(hidden, D)."""

    def __init__(self, in_dim: int, hidden_dim: int = 512, out_dim: int = 128) -> None:
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(in_dim, hidden_dim), nn.ReLU(inplace=True),
                                 nn.Linear(hidden_dim, out_dim))

    def forward(self, features: Tensor) -> Tensor:
        return F.normalize(self.mlp(features), dim=-1)

    def project_cells(self, feature_map: Tensor) -> Tensor:
        """Every cell of a map: (N, C, T, H, W) -> (N, T*H*W, D), cells in (t, y, x) order."""
        cells = feature_map.flatten(2).transpose(1, 2)  # (N, T*H*W, C)
        return self(cells)
