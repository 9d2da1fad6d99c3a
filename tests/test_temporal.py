"""Temporal order heads (Table 6): each learns to tell true clip orders from shuffled ones."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from model.mine import dv_bound
from model.temporal import KINDS, TemporalOrderHead

D, K = 16, 4


def toy_videos(batch: int, generator: torch.Generator, positions: torch.Tensor):
    """Clip k of video b = content_b + position_k + noise; the global view = content_b + noise."""
    content = torch.randn(batch, D, generator=generator)
    clips = content[:, None] + positions[None] + 0.1 * torch.randn(batch, K, D, generator=generator)
    global_ = content + 0.1 * torch.randn(batch, D, generator=generator)
    return clips, global_


@pytest.mark.parametrize("kind", KINDS)
def test_head_separates_true_from_shuffled_orders_after_training(kind):
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(0)
    positions = torch.randn(K, D, generator=generator)
    head = TemporalOrderHead(kind, D, K, hidden_dim=64, temperature=0.1)
    optimizer = torch.optim.Adam(head.parameters(), lr=3e-3)

    def shuffled_scores(clips, global_):
        order = torch.randint(1, head.num_orders, (clips.shape[0],), generator=generator)
        return head.score(head.reorder(clips, order), global_)

    for _ in range(300):
        clips, global_ = toy_videos(64, generator, positions)
        if head.is_classifier:
            order = torch.randint(0, head.num_orders, (64,), generator=generator)
            loss = F.cross_entropy(head.classify(head.reorder(clips, order)), order)
        else:
            loss = -dv_bound(head.score(clips, global_), shuffled_scores(clips, global_))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    with torch.no_grad():
        clips, global_ = toy_videos(512, generator, positions)
        if head.is_classifier:
            order = torch.randint(0, head.num_orders, (512,), generator=generator)
            predicted = head.classify(head.reorder(clips, order)).argmax(-1)
            accuracy = (predicted == order).float().mean().item()
        else:
            wins = head.score(clips, global_) > shuffled_scores(clips, global_)
            accuracy = wins.float().mean().item()
    assert accuracy > 0.9, f"{kind}: accuracy {accuracy:.3f}"


def test_permutations_start_with_identity_and_reorder_applies_them():
    head = TemporalOrderHead("gru", D, 3, hidden_dim=8)
    assert head.num_orders == 6
    assert head.permutations[0].tolist() == [0, 1, 2]
    assert len({tuple(p) for p in head.permutations.tolist()}) == 6
    clips = torch.arange(2 * 3, dtype=torch.float32).reshape(2, 3, 1).expand(2, 3, D)
    reordered = head.reorder(clips, torch.tensor([0, 5]))
    assert torch.equal(reordered[0], clips[0])
    assert reordered[1, :, 0].tolist() == [clips[1, i, 0].item() for i in head.permutations[5]]


@pytest.mark.parametrize("kind", ["mlp", "gru", "gru_mlp"])
def test_scores_are_bounded_by_one_over_temperature(kind):
    head = TemporalOrderHead(kind, D, K, hidden_dim=8, temperature=0.5)
    with torch.no_grad():
        for p in head.parameters():
            p.mul_(50)  # push raw scores far out
        scores = head.score(torch.randn(32, K, D) * 10, torch.randn(32, D) * 10)
    assert scores.shape == (32,)
    assert scores.abs().max() <= 2.0 + 1e-5


def test_wrong_use_is_a_clear_error():
    with pytest.raises(ValueError, match="kind"):
        TemporalOrderHead("lstm", D, K)
    with pytest.raises(ValueError, match="at least 2 clips"):
        TemporalOrderHead("gru", D, 1)
    with pytest.raises(TypeError, match="classify"):
        TemporalOrderHead("vcop", D, K).score(torch.zeros(2, K, D), torch.zeros(2, D))
    with pytest.raises(TypeError, match="score"):
        TemporalOrderHead("mlp", D, K).classify(torch.zeros(2, K, D))
