"""The model core on random clips: a few optimisation steps of the full objective.

This is the main job until the data pipeline and Ray Train land (issue "Orchestration" replaces
it with the end-to-end demo). The view geometry follows DESIGN section 2's crop rules in a
simplified form (uniform boxes rather than area/aspect sampling); the real seeded sampler belongs
to pipeline/sampling.py.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import Tensor

from model import LossConfig, ModelConfig, PretrainNetwork, ViewGeometry, clip_correspondence


@dataclass(frozen=True)
class SmokeConfig:
    steps: int = 8
    batch_size: int = 4
    frames: int = 16
    size: int = 112
    video_frames: int = 64  # T of the pretend source videos
    levels: int = 2  # intensity levels drawn per step (small batch: few levels)
    lr: float = 1e-3
    seed: int = 0


@dataclass
class RandomBatch:
    """Random frames with geometry obeying the nesting rules, and random intensity levels."""

    global_frames: Tensor  # (B, 3, T, H, W)
    local_frames: Tensor  # (B, K, 3, T, H, W)
    global_view: ViewGeometry  # fields (B,) / (B, 4)
    local_view: ViewGeometry  # fields (B, K) / (B, K, 4)
    global_levels: Tensor  # (B,)
    local_levels: Tensor  # (B, K)


def _nested_box(outer: Tensor, min_fraction: float, generator: torch.Generator) -> Tensor:
    """A box (..., 4) inside `outer` (..., 4) whose sides are each >= min_fraction of outer's."""
    shape = outer.shape[:-1]
    side = min_fraction + (1 - min_fraction) * torch.rand(*shape, 2, generator=generator)
    start = (1 - side) * torch.rand(*shape, 2, generator=generator)
    lo, extent = outer[..., :2], outer[..., 2:] - outer[..., :2]
    return torch.cat([lo + start * extent, lo + (start + side) * extent], dim=-1)


def random_batch(config: SmokeConfig, num_clips: int, generator: torch.Generator) -> RandomBatch:
    b, k, t_video, clip = config.batch_size, num_clips, config.video_frames, config.frames
    full_frame = torch.tensor([0.0, 0.0, 1.0, 1.0]).expand(b, 4)
    global_box = _nested_box(full_frame, 0.9, generator)  # weak crop
    local_box = _nested_box(global_box[:, None].expand(b, k, 4), 0.45, generator)
    # Clip k's centre falls in segment k of [0, T); then the clip is shifted inside [0, T).
    segment = torch.arange(k) * t_video / k
    centre = segment + torch.rand(b, k, generator=generator) * t_video / k
    t0 = (centre - clip / 2).clamp(0, t_video - clip).floor()
    global_view = ViewGeometry(torch.zeros(b), torch.full((b,), float(t_video)), global_box,
                               torch.rand(b, generator=generator) < 0.5)
    local_view = ViewGeometry(t0, t0 + clip, local_box, torch.rand(b, k, generator=generator) < 0.5)
    shape = (3, config.frames, config.size, config.size)
    return RandomBatch(
        global_frames=torch.randn(b, *shape, generator=generator),
        local_frames=torch.randn(b, k, *shape, generator=generator),
        global_view=global_view,
        local_view=local_view,
        global_levels=torch.randint(0, config.levels, (b,), generator=generator),
        local_levels=torch.randint(0, config.levels, (b, k), generator=generator),
    )


def run_smoke(model: ModelConfig, loss: LossConfig, config: SmokeConfig) -> Iterator[dict]:
    """Optimise the full objective on one fixed random batch; yield every step's scalars."""
    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    network = PretrainNetwork(model, loss)
    optimizer = torch.optim.Adam(network.parameters(), lr=config.lr, weight_decay=1e-5)
    batch = random_batch(config, model.num_clips, generator)
    local_grid, global_grid = network.grids((config.frames, config.size, config.size))
    correspondence = clip_correspondence(batch.local_view, batch.global_view, local_grid,
                                         global_grid)  # (B, K, Nc, Nv)
    for step in range(config.steps):
        start = time.perf_counter()
        breakdown = network(batch.global_frames, batch.local_frames, correspondence,
                            batch.global_levels, batch.local_levels)
        optimizer.zero_grad(set_to_none=True)
        breakdown.total.backward()
        optimizer.step()
        scalars = breakdown.scalars()
        scalars.update(step=step, seconds=time.perf_counter() - start)
        yield scalars
