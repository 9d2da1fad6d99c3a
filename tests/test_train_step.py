"""The training step on CPU with real pipeline batches, without Ray."""

from __future__ import annotations

import math

import pytest
import torch

from model import LossConfig, ModelConfig, PretrainNetwork
from orchestration.train_step import NonFiniteLoss, training_step
from pipeline import build_pretrain_loader

MODEL = ModelConfig(width=4, projection_hidden_dim=32, projection_dim=16, mine_hidden_dim=32,
                    temporal_hidden_dim=32)


@pytest.fixture(scope="module")
def batch(shards):
    loader = build_pretrain_loader(shards["frames"], batch_size=3, levels_per_batch=2, seed=1)
    return next(iter(loader))


def test_training_step_on_real_batches_has_finite_terms_and_lowers_the_loss(batch):
    torch.manual_seed(0)
    network = PretrainNetwork(MODEL, LossConfig())
    optimizer = torch.optim.Adam(network.parameters(), lr=1e-3)
    grids = network.grids((16, 112, 112))
    history = []
    for step in range(6):
        breakdown = training_step(network, optimizer, batch, grids, step)
        scalars = breakdown.scalars()
        assert all(math.isfinite(v) for v in scalars.values()), scalars
        assert {"loss_rc", "loss_mi", "loss_td", "mi_level", "td_mi"} <= set(scalars)
        history.append(scalars)
    assert history[-1]["loss_rc"] < history[0]["loss_rc"]
    assert history[-1]["loss"] < history[0]["loss"]


def test_a_non_finite_loss_stops_with_the_step_and_the_terms(batch):
    network = PretrainNetwork(MODEL, LossConfig())
    optimizer = torch.optim.Adam(network.parameters(), lr=1e-3)
    before = [p.detach().clone() for p in network.parameters()]
    broken = type(batch)(**{**batch.__dict__,
                            "local_frames": torch.full_like(batch.local_frames, float("nan"))})
    with pytest.raises(NonFiniteLoss, match=r"step 41: .*loss_rc=nan"):
        training_step(network, optimizer, broken, network.grids(), 41)
    assert all(torch.equal(a, b) for a, b in zip(before, network.parameters(), strict=True))
