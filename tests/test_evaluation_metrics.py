"""Evaluation maths: retrieval R@k against brute force (ties included), aggregation, the probe."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from model.evaluation import (
    average_clip_softmax,
    per_class_accuracy,
    retrieval_recall,
    same_video_recall,
    top_k_accuracy,
    train_linear_probe,
)


def brute_force_recall(queries, query_labels, gallery, gallery_labels, k):
    """For each query, rank the gallery by (-cosine, position) and look at the first k."""
    hits = 0
    for q, label in zip(queries.tolist(), query_labels.tolist(), strict=True):
        q_norm = math.sqrt(sum(x * x for x in q))
        scored = []
        for position, (g, g_label) in enumerate(zip(gallery.tolist(), gallery_labels.tolist(),
                                                    strict=True)):
            g_norm = math.sqrt(sum(x * x for x in g))
            cosine = sum(a * b for a, b in zip(q, g, strict=True)) / (q_norm * g_norm)
            scored.append((-round(cosine, 9), position, g_label))
        hits += any(g_label == label for _, _, g_label in sorted(scored)[:k])
    return hits / len(queries)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), q=st.integers(1, 8), g=st.integers(1, 25),
       classes=st.integers(1, 4), discrete=st.booleans())
def test_retrieval_recall_equals_brute_force_with_ties(seed, q, g, classes, discrete):
    generator = torch.Generator().manual_seed(seed)
    if discrete:  # scaled signed axes: cosines are exactly -1, 0 or 1, so ties are exact
        axes = torch.cat([torch.eye(3), -torch.eye(3)]).double()
        gallery = axes[torch.randint(0, 6, (g,), generator=generator)] * torch.randint(
            1, 4, (g, 1), generator=generator)
        queries = axes[torch.randint(0, 6, (q,), generator=generator)]
    else:
        gallery = torch.randn(g, 3, generator=generator, dtype=torch.float64)
        queries = torch.randn(q, 3, generator=generator, dtype=torch.float64)
    gallery_labels = torch.randint(0, classes, (g,), generator=generator)
    query_labels = torch.randint(0, classes, (q,), generator=generator)
    ks = (1, 5, 10, 20)
    got = retrieval_recall(queries, query_labels, gallery, gallery_labels, ks)
    for k in ks:
        assert got[k] == pytest.approx(brute_force_recall(queries, query_labels, gallery,
                                                          gallery_labels, k))


def test_video_prediction_is_the_mean_of_its_clips_softmax():
    logits = torch.tensor([[[10.0, 0.0], [0.0, 1.0], [0.0, 1.0]]])  # (1 video, 3 clips, 2)
    expected = torch.stack([logits[0, i].softmax(0) for i in range(3)]).mean(0)
    torch.testing.assert_close(average_clip_softmax(logits)[0], expected)
    assert average_clip_softmax(logits).argmax().item() == 0  # one confident clip wins


def test_top_k_and_per_class_accuracy():
    probabilities = torch.tensor([[0.6, 0.3, 0.1], [0.2, 0.3, 0.5], [0.1, 0.8, 0.1]])
    labels = torch.tensor([0, 1, 1])
    assert top_k_accuracy(probabilities, labels, 1) == pytest.approx(2 / 3)
    assert top_k_accuracy(probabilities, labels, 2) == 1.0
    per_class = per_class_accuracy(probabilities.argmax(1), labels, 3)
    assert per_class[0] == 1.0 and per_class[1] == 0.5 and math.isnan(per_class[2])


def test_linear_probe_separates_separable_features_and_is_at_chance_on_shuffled_labels():
    generator = torch.Generator().manual_seed(0)
    centres = torch.randn(5, 32, generator=generator) * 3
    labels = torch.randint(0, 5, (600,), generator=generator)
    features = centres[labels] + torch.randn(600, 32, generator=generator)
    train, test = slice(0, 400), slice(400, 600)
    probe = train_linear_probe(features[train], labels[train], 5, epochs=50)
    accuracy = (probe(features[test]).argmax(1) == labels[test]).float().mean().item()
    assert accuracy > 0.97
    shuffled = labels[train][torch.randperm(400, generator=generator)]
    probe = train_linear_probe(features[train], shuffled, 5, epochs=50)
    chance_accuracy = (probe(features[test]).argmax(1) == labels[test]).float().mean().item()
    assert chance_accuracy < 0.2 + 0.1  # chance is 0.2


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), videos=st.integers(1, 6), clips=st.integers(2, 5))
def test_same_video_recall_equals_a_naive_nearest_neighbour_loop(seed, videos, clips):
    features = torch.randn(videos, clips, 3, generator=torch.Generator().manual_seed(seed))
    flat = [(v, c.tolist()) for v in range(videos) for c in features[v]]
    hits = 0
    for i, (video, x) in enumerate(flat):
        def cosine(y, x=x):
            return sum(a * b for a, b in zip(x, y, strict=True)) / math.sqrt(
                sum(a * a for a in x) * sum(b * b for b in y))
        others = [(cosine(y), j) for j, (_, y) in enumerate(flat) if j != i]
        hits += flat[max(others)[1]][0] == video
    assert same_video_recall(features) == pytest.approx(hits / len(flat))


def test_same_video_recall_tells_video_identity_from_none():
    identity = torch.randn(8, 1, 16) + 0.01 * torch.randn(8, 4, 16)  # clips ~ their video
    assert same_video_recall(identity) == 1.0
    assert same_video_recall(torch.randn(50, 2, 16)) < 0.2  # unrelated clips: ~1/99 chance
