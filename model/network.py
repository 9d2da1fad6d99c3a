"""PretrainNetwork: the encoder and the objective's heads as one module; frames in, losses out.

Pure torch. One module so that a data-parallel wrapper sees every parameter in a single forward
call. The correspondence is an input: it is computed by the caller from the view parameters the
pipeline emitted (model.correspondence), never from config.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from model.config import LossConfig, ModelConfig
from model.correspondence import Grid
from model.encoder import R3D18
from model.objective import KeyGather, LossBreakdown, Objective, local_keys


class PretrainNetwork(nn.Module):
    """R3D-18 (f and f', shared weights) plus the objective heads."""

    def __init__(self, model: ModelConfig, loss: LossConfig) -> None:
        super().__init__()
        self.config = model
        self.encoder = R3D18(model.width, model.global_unstrided_stages)
        self.objective = Objective(model, loss)

    def grids(self, frames: tuple[int, int, int] = (16, 112, 112)) -> tuple[Grid, Grid]:
        """(local grid, global grid) for views of (T, H, W) frames: (2,4,4), (8,4,4) by default."""
        return (self.encoder.feature_grid(frames, "clip"),
                self.encoder.feature_grid(frames, "global"))

    def forward(self, global_frames: Tensor, local_frames: Tensor,
                correspondence: Tensor | None, global_levels: Tensor, local_levels: Tensor,
                gather_keys: KeyGather = local_keys, gather_views: KeyGather = local_keys,
                generator: torch.Generator | None = None) -> LossBreakdown:
        """Encode both views and evaluate the objective.

        Args:
            global_frames: (B, 3, T, H, W) the global views.
            local_frames: (B, K, 3, T, H, W) the local clips.
            correspondence: (B, K, Nc, Nv) S_k from the emitted view parameters (or None when
                the region contrast is off).
            global_levels: (B,) long; local_levels: (B, K) long, intensity levels.
            gather_keys, gather_views, generator: see model.objective.Objective.forward.
        """
        b, k = local_frames.shape[:2]
        local_maps = self.encoder.forward_clip(local_frames.flatten(0, 1))  # (B*K, C, Tc, Hc, Wc)
        local_maps = local_maps.unflatten(0, (b, k))  # (B, K, C, Tc, Hc, Wc)
        global_maps = self.encoder.forward_global(global_frames)  # (B, C, Tv, Hv, Wv)
        return self.objective(local_maps, global_maps, correspondence, local_levels,
                              global_levels, gather_keys, gather_views, generator)
