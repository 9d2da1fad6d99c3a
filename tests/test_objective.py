"""The assembled objective: Table 6/7 settings as configs, minimax directions, steps lower it."""

from __future__ import annotations

import itertools

import pytest
import torch

from model import (
    LossConfig,
    ModelConfig,
    Objective,
    PretrainNetwork,
    ViewGeometry,
    clip_correspondence,
)
from model.losses import region_contrast_loss
from model.temporal import KINDS

B, K, WIDTH = 4, 4, 2  # feature dim 16
LOCAL_GRID, GLOBAL_GRID = (2, 2, 2), (8, 2, 2)
TABLE_7 = [("clip", False, False), ("region", False, False), ("region", True, False),
           ("region", False, True), ("clip", True, True), ("region", True, True)]


def random_inputs(seed: int = 0, levels: int = 2):
    g = torch.Generator().manual_seed(seed)
    c = 8 * WIDTH
    local_maps = torch.randn(B, K, c, *LOCAL_GRID, generator=g, requires_grad=True)
    global_maps = torch.randn(B, c, *GLOBAL_GRID, generator=g, requires_grad=True)
    s = torch.softmax(torch.randn(B, K, 8, 32, generator=g), dim=-1)
    return dict(local_maps=local_maps, global_maps=global_maps, correspondence=s,
                local_levels=torch.randint(0, levels, (B, K), generator=g),
                global_levels=torch.randint(0, levels, (B,), generator=g))


@pytest.mark.parametrize("contrast, mi, td", TABLE_7)
def test_every_row_of_table_7_is_a_config(contrast, mi, td):
    torch.manual_seed(0)
    loss = LossConfig(contrast=contrast, mi=mi, td=td, contrast_weight=0.5, mi_weight=2.0,
                      td_weight=3.0)
    objective = Objective(ModelConfig(width=WIDTH, num_clips=K), loss)
    inputs = random_inputs()
    out = objective(**inputs)
    expected_terms = {"region": {"rc"}, "clip": {"nce"}}[contrast]
    expected_terms |= {"mi"} if mi else set()
    expected_terms |= {"td"} if td else set()
    assert set(out.terms) == expected_terms
    weights = {"rc": 0.5, "nce": 0.5, "mi": 2.0, "td": 3.0}
    torch.testing.assert_close(out.total, sum(weights[n] * v for n, v in out.terms.items()))
    assert torch.isfinite(out.total)
    if mi:
        assert {"mi_level", "mi_local_global", "mi_joint_pairs"} <= set(out.estimates)
    if td:
        assert {"td_mi", "td_order_accuracy"} <= set(out.estimates)
    assert all(not v.requires_grad for v in out.estimates.values())
    out.total.backward()
    assert torch.isfinite(inputs["local_maps"].grad).all()
    assert set(out.scalars()) >= {"loss", *(f"loss_{n}" for n in expected_terms)}


@pytest.mark.parametrize("head", KINDS)
def test_every_head_of_table_6_is_a_config(head):
    objective = Objective(ModelConfig(width=WIDTH, num_clips=K, temporal_head=head),
                          LossConfig(mi=False))
    out = objective(**random_inputs())
    assert torch.isfinite(out.terms["td"])
    out.total.backward()


def test_region_contrast_sees_gathered_keys_at_the_given_offset():
    torch.manual_seed(0)
    objective = Objective(ModelConfig(width=WIDTH, num_clips=K), LossConfig(mi=False, td=False))
    inputs = random_inputs()
    other_worker = torch.nn.functional.normalize(torch.randn(3, 32, 128), dim=-1)

    def gather(keys):  # as if 3 videos of another worker came first
        return torch.cat([other_worker, keys]), 3

    got = objective(**inputs, gather_keys=gather).terms["rc"]
    queries = objective.projection.project_cells(inputs["local_maps"].flatten(0, 1))
    keys = objective.projection.project_cells(inputs["global_maps"])
    want = region_contrast_loss(queries.unflatten(0, (B, K)), torch.cat([other_worker, keys]),
                                inputs["correspondence"], 0.07, torch.arange(B) + 3)
    torch.testing.assert_close(got, want)


def test_frozen_estimator_gives_theta_a_zero_gradient_on_every_parameter():
    """Without joint pairs only the frozen local-global term acts: theta must not learn from it
    (every gradient exactly 0), yet every theta parameter gets a gradient, as DDP
    (find_unused_parameters=False) needs on each step."""
    objective = Objective(ModelConfig(width=WIDTH, num_clips=K),
                          LossConfig(contrast="none", mi=True, td=False))
    inputs = random_inputs()
    # Every view its own level: no joint level pairs, so only the frozen local-global term acts.
    inputs["global_levels"] = torch.arange(B)
    inputs["local_levels"] = torch.arange(B, B * (K + 1)).reshape(B, K)
    out = objective(**inputs)
    assert out.estimates["mi_joint_pairs"].item() == 0
    (out.terms["mi"] + inputs["local_maps"].sum() * 0).backward()
    grads = [p.grad for p in objective.statistics.parameters()]
    assert all(g is not None and not g.any() for g in grads)


def test_mi_minimax_theta_raises_the_estimate_and_the_encoder_side_lowers_it():
    """G_theta learns the level signal; through the reversal, the features learn to drop it."""
    torch.manual_seed(0)
    b, k, c = 16, 2, 16
    objective = Objective(ModelConfig(width=2, num_clips=k, mine_hidden_dim=64),
                          LossConfig(contrast="none", mi=True, td=False, mine_ema_rate=0.1))
    level_code = torch.randn(2, c) * 2
    strength = torch.nn.Parameter(torch.tensor(1.0))  # how much level signal the features carry

    def step():
        levels = torch.randint(0, 2, (b, k + 1))
        noise = torch.randn(b, k + 1, c)
        feats = noise + strength * level_code[levels]  # (B, K+1, C)
        maps = feats[..., None, None, None]  # (B, K+1, C, 1, 1, 1)
        return objective(maps[:, 1:], maps[:, 0], None, levels[:, 1:], levels[:, 0])

    theta_optimizer = torch.optim.Adam(objective.parameters(), lr=3e-3)
    estimates = []
    for _ in range(150):  # theta only
        out = step()
        theta_optimizer.zero_grad()
        strength.grad = None
        out.total.backward()
        theta_optimizer.step()
        estimates.append(out.estimates["mi_level"].item())
    assert sum(estimates[-20:]) / 20 > sum(estimates[:20]) / 20 + 0.2

    feature_optimizer = torch.optim.SGD([strength], lr=0.05)
    for _ in range(60):  # the encoder side only, theta frozen
        out = step()
        feature_optimizer.zero_grad()
        out.total.backward()
        feature_optimizer.step()
    assert abs(strength.item()) < 0.5
    with torch.no_grad():
        assert sum(step().estimates["mi_level"].item() for _ in range(10)) / 10 < 0.1


def test_few_optimisation_steps_on_random_clips_lower_the_full_objective():
    torch.manual_seed(0)
    b, k = 4, 2
    network = PretrainNetwork(ModelConfig(width=8, num_clips=k), LossConfig())
    optimizer = torch.optim.Adam(network.parameters(), lr=1e-3)
    global_frames, local_frames = torch.randn(b, 3, 16, 64, 64), torch.randn(b, k, 3, 16, 64, 64)
    # Local clips in the two halves of a 32-frame video, boxes nested in the full frame.
    local = ViewGeometry(torch.tensor([[0.0, 16.0]]).expand(b, k), torch.tensor(
        [[16.0, 32.0]]).expand(b, k), torch.tensor([0.1, 0.2, 0.7, 0.9]).expand(b, k, 4),
        torch.rand(b, k) < 0.5)
    whole = ViewGeometry(torch.zeros(b), torch.full((b,), 32.0),
                         torch.tensor([0.0, 0.0, 1.0, 1.0]).expand(b, 4), torch.rand(b) < 0.5)
    s = clip_correspondence(local, whole, *network.grids((16, 64, 64)))
    levels = torch.randint(0, 2, (b,)), torch.randint(0, 2, (b, k))
    history = []
    for _ in range(6):
        breakdown = network(global_frames, local_frames, s, *levels)
        optimizer.zero_grad()
        breakdown.total.backward()
        optimizer.step()
        history.append(breakdown.scalars())
    assert all(torch.isfinite(torch.tensor(h["loss"])) for h in history)
    assert history[-1]["loss"] < history[0]["loss"]
    assert history[-1]["loss_rc"] < history[0]["loss_rc"]


def test_bad_inputs_are_clear_errors():
    objective = Objective(ModelConfig(width=WIDTH, num_clips=K), LossConfig())
    inputs = random_inputs()
    with pytest.raises(ValueError, match="B >= 2"):
        objective(**{n: v[:1] for n, v in inputs.items()})
    with pytest.raises(ValueError, match="correspondence"):
        objective(**{**inputs, "correspondence": None})
    with pytest.raises(ValueError, match="num_clips >= 2"):
        Objective(ModelConfig(width=WIDTH, num_clips=1), LossConfig(td=True))


def test_table_7_rows_cover_every_switch_combination_the_paper_reports():
    combos = set(itertools.product(["region", "clip"], [False, True], [False, True]))
    assert set(TABLE_7) <= combos
