"""One pretraining step, top to bottom: batch -> correspondence -> encoder + objective -> backward.

Runs with or without Ray: anything distributed arrives as `gather_keys` (identity by default).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable

import numpy as np
import torch

from model import LossBreakdown, PretrainNetwork, ViewGeometry, clip_correspondence
from model.correspondence import Grid
from model.objective import KeyGather, local_keys
from pipeline import PretrainBatch
from pipeline.sampling import ViewParams


class NonFiniteLoss(RuntimeError):
    """The loss went NaN or infinite; the message names the step and the offending terms."""


def bf16_autocast(device: torch.device, enabled: bool = True):
    """The one precision policy of pretraining, finetuning and feature extraction: bf16
    autocast on a GPU (when enabled), full fp32 on the CPU."""
    return (torch.autocast("cuda", dtype=torch.bfloat16) if enabled and device.type == "cuda"
            else contextlib.nullcontext())


def geometry(params: ViewParams) -> ViewGeometry:
    """The view geometry the correspondence needs, from the parameters the pipeline emitted."""
    return ViewGeometry(params.t0, params.t1, params.box, params.flip)


def training_step(network: torch.nn.Module, optimizer: torch.optim.Optimizer,
                  batch: PretrainBatch, grids: tuple[Grid, Grid], step: int,
                  gather_keys: KeyGather = local_keys, bf16: bool = False,
                  agree: Callable[[bool], bool] = bool, gather_views: KeyGather = local_keys,
                  seed: int = 0, rank: int = 0) -> LossBreakdown:
    """Compute the objective on a batch and take one optimiser step.

    grids: (local grid, global grid) of the encoder for the batch's frame size.
    gather_keys, gather_views: see model.objective.Objective.forward (identity alone).
    seed: with the step, seeds the objective's shared random draws (L_mi's marginal pairs), the
    same on every worker; with the step and the worker's rank, torch's global RNG for its local
    draws (L_mi's local pairs, L_td's orders), so a run restarted from a checkpoint draws what
    an uninterrupted one would.
    agree: turns this worker's "loss is not finite" into the verdict of all workers (identity
    alone), so that every worker stops together. Raises NonFiniteLoss before the backward pass.
    """
    correspondence = clip_correspondence(geometry(batch.local_params),
                                         geometry(batch.global_params), *grids)  # (B,K,Nc,Nv)
    shared = torch.Generator().manual_seed(int(np.random.SeedSequence([seed, step])
                                               .generate_state(1)[0]))
    torch.manual_seed(int(np.random.SeedSequence([seed, step, rank]).generate_state(1)[0]))
    with bf16_autocast(batch.global_frames.device, bf16):
        breakdown = network(batch.global_frames, batch.local_frames, correspondence,
                            batch.global_params.level, batch.local_params.level, gather_keys,
                            gather_views, shared)
    values = breakdown.scalars()
    bad = {name: value for name, value in values.items() if not math.isfinite(value)}
    if agree(bool(bad)):
        terms = ", ".join(f"{name}={value}" for name, value in bad.items()) or "on another worker"
        raise NonFiniteLoss(f"non-finite loss at step {step}: {terms}")
    optimizer.zero_grad(set_to_none=True)
    breakdown.total.backward()
    optimizer.step()
    return breakdown


def unwrap(network: torch.nn.Module) -> PretrainNetwork:
    """The PretrainNetwork inside a data-parallel wrapper (or itself)."""
    return getattr(network, "module", network)
