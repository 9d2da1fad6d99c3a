"""MINE: the DV bound recovers a known mutual information; gradient reversal flips gradients."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from model.grl import grad_reverse
from model.mine import MovingAverageDVBound, StatisticsNetwork, dv_bound, level_pairs

DIM, RHO = 2, 0.8


def gaussian_pairs(n: int, rho: float, generator: torch.Generator):
    """X, Y in R^DIM, standard normal, componentwise correlation rho (MINE paper, Fig. 1)."""
    x = torch.randn(n, DIM, generator=generator)
    noise = torch.randn(n, DIM, generator=generator)
    return x, rho * x + math.sqrt(1 - rho**2) * noise


def train_mine(rho: float, seed: int, steps: int = 400, batch: int = 512) -> float:
    """Train G with the moving-average DV bound, then estimate I on a large fresh sample."""
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    network = StatisticsNetwork(DIM, DIM, hidden_dim=64)
    bound = MovingAverageDVBound(rate=0.01)
    optimizer = torch.optim.Adam(network.parameters(), lr=3e-3)
    for _ in range(steps):
        x, y = gaussian_pairs(batch, rho, generator)
        shuffled = y[torch.randperm(batch, generator=generator)]
        loss = -bound(network(x, y), network(x, shuffled))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        x, y = gaussian_pairs(50_000, rho, generator)
        shuffled = y[torch.randperm(50_000, generator=generator)]
        return dv_bound(network(x, y), network(x, shuffled)).item()


@pytest.mark.parametrize("seed", [0, 1])
def test_mine_estimates_gaussian_mutual_information_within_15_percent(seed):
    closed_form = -DIM / 2 * math.log(1 - RHO**2)  # 1.0217 nats
    estimate = train_mine(RHO, seed)
    assert estimate == pytest.approx(closed_form, rel=0.15)


def test_mine_estimates_near_zero_for_independent_samples():
    assert abs(train_mine(0.0, seed=2)) < 0.05


def test_dv_bound_of_constant_scores_is_zero_and_matches_formula():
    constant = dv_bound(torch.full((5,), 3.0), torch.full((7,), 3.0))
    assert constant.item() == pytest.approx(0.0, abs=1e-6)
    joint, marginal = torch.tensor([1.0, 2.0]), torch.tensor([0.0, 1.0, 3.0])
    want = 1.5 - math.log((1 + math.e + math.e**3) / 3)
    assert dv_bound(joint, marginal).item() == pytest.approx(want)


def test_moving_average_bound_has_the_plain_value_and_the_corrected_gradient():
    bound = MovingAverageDVBound(rate=0.5)
    bound(torch.zeros(3), torch.zeros(4))  # seeds the average at log E[exp G] = 0
    joint = torch.tensor([0.5, 1.5], requires_grad=True)
    marginal = torch.tensor([0.0, math.log(3.0)], requires_grad=True)  # E[exp G] = 2
    value = bound(joint, marginal)
    assert value.item() == pytest.approx(dv_bound(joint, marginal).item())
    value.backward()
    ema = 0.5 * 1.0 + 0.5 * 2.0  # moving average of E[exp G] after this batch
    torch.testing.assert_close(joint.grad, torch.full((2,), 0.5))
    torch.testing.assert_close(marginal.grad, -marginal.detach().exp() / 2 / ema)


def test_statistics_network_is_an_mlp_on_the_concatenated_pair():
    network = StatisticsNetwork(3, 5, hidden_dim=7)
    x, y = torch.randn(4, 3), torch.randn(4, 5)
    weight = torch.cat([network.x_in.weight, network.y_in.weight], dim=1)  # (7, 8)
    hidden = torch.relu(torch.cat([x, y], dim=1) @ weight.T + network.x_in.bias)
    want = (hidden @ network.out.weight.T + network.out.bias).squeeze(-1)
    torch.testing.assert_close(network(x, y), want)
    # Index pairs score the same as the explicit pairs.
    xi, yi = torch.tensor([0, 3, 3]), torch.tensor([2, 2, 0])
    torch.testing.assert_close(network.score_pairs(x, y, xi, yi), network(x[xi], y[yi]))


def test_frozen_scores_reach_the_inputs_but_not_the_parameters():
    network = StatisticsNetwork(3, 3, hidden_dim=8)
    x = torch.randn(4, 3, requires_grad=True)
    network(x, x.detach(), frozen=True).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert all(p.grad is None for p in network.parameters())


@pytest.mark.parametrize("scale", [1.0, 0.25, 3.0])
def test_gradient_reversal_gives_exactly_minus_scale_times_the_gradient(scale):
    x = torch.randn(5, 4, requires_grad=True)
    upstream = torch.randn(5, 4)
    out = grad_reverse(x, scale)
    torch.testing.assert_close(out, x)
    (out * upstream).sum().backward()
    assert torch.equal(x.grad, -scale * upstream)


@settings(max_examples=50, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), shift=st.floats(-20, 20), p=st.integers(1, 30),
       q=st.integers(1, 30))
def test_dv_bound_properties(seed, shift, p, q):
    g = torch.Generator().manual_seed(seed)
    joint, marginal = torch.randn(p, generator=g), torch.randn(q, generator=g)
    value = dv_bound(joint.double(), marginal.double())
    # A constant added to the critic cancels; the marginal term is at least its mean (Jensen).
    shifted = dv_bound(joint.double() + shift, marginal.double() + shift)
    assert shifted.item() == pytest.approx(value.item(), abs=1e-9)
    assert value.item() <= joint.double().mean().item() - marginal.double().mean().item() + 1e-9


@settings(max_examples=30, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 3), st.integers(0, 4)), min_size=1, max_size=30))
def test_level_pairs_are_every_same_level_pair_across_videos(views):
    levels = torch.tensor([level for level, _ in views])
    videos = torch.tensor([video for _, video in views])
    first, second = level_pairs(levels, videos)
    naive = {(i, j) for i, (li, vi) in enumerate(views) for j, (lj, vj) in enumerate(views)
             if li == lj and vi != vj}
    assert set(zip(first.tolist(), second.tolist(), strict=True)) == naive
    assert len(first) == len(naive)  # no pair twice
