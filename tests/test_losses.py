"""L_rc and L_nce against naive loop references, and L_rc with one-hot S equal to InfoNCE."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from model.losses import info_nce_loss, region_contrast_loss


def naive_region_contrast(q, k, S, tau, positive_index):
    """Eqs. 3-4 one query cell at a time, in float64."""
    q, k, S = q.double(), k.double(), S.double()
    b_size, num_clips, nc, _ = q.shape
    m, nv, _ = k.shape
    losses = []
    for b in range(b_size):
        for clip in range(num_clips):
            for i in range(nc):
                logits = [float(q[b, clip, i] @ k[mm, j]) / tau for mm in range(m)
                          for j in range(nv)]
                log_denominator = math.log(sum(math.exp(x) for x in logits))
                own = int(positive_index[b])
                loss = 0.0
                for j in range(nv):
                    log_p = float(q[b, clip, i] @ k[own, j]) / tau - log_denominator
                    loss -= float(S[b, clip, i, j]) * log_p
                losses.append(loss)
    return sum(losses) / len(losses)


def naive_info_nce(q, k, tau, positive_index):
    q, k = q.double(), k.double()
    losses = []
    for b in range(q.shape[0]):
        for clip in range(q.shape[1]):
            logits = [float(q[b, clip] @ k[m]) / tau for m in range(k.shape[0])]
            log_denominator = math.log(sum(math.exp(x) for x in logits))
            losses.append(log_denominator - logits[int(positive_index[b])])
    return sum(losses) / len(losses)


def random_unit(*shape, seed):
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(*shape, generator=g), dim=-1)


def random_rows(*shape, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.softmax(torch.randn(*shape, generator=g) * 2, dim=-1)


@pytest.mark.parametrize("extra_videos", [0, 3])
def test_region_contrast_matches_naive_double_loop(extra_videos):
    b, num_clips, nc, nv, d = 3, 2, 4, 6, 8
    q = random_unit(b, num_clips, nc, d, seed=0)
    k = random_unit(b + extra_videos, nv, d, seed=1)
    S = random_rows(b, num_clips, nc, nv, seed=2)
    # With gathered keys, this worker's videos sit after `extra_videos` others.
    positive = torch.arange(b) + extra_videos
    got = region_contrast_loss(q, k, S, temperature=0.1, positive_index=positive)
    want = naive_region_contrast(q, k, S, 0.1, positive)
    assert got.item() == pytest.approx(want, rel=1e-5)


def test_region_contrast_with_one_hot_s_is_info_nce_over_all_cells():
    b, num_clips, nc, nv, d = 3, 2, 4, 5, 8
    q = random_unit(b, num_clips, nc, d, seed=3)
    k = random_unit(b, nv, d, seed=4)
    generator = torch.Generator().manual_seed(5)
    target_cell = torch.randint(0, nv, (b, num_clips, nc), generator=generator)
    S = F.one_hot(target_cell, nv).float()
    rc = region_contrast_loss(q, k, S, temperature=0.07)
    # Every query cell is its own InfoNCE query; keys are all cells of all videos, flattened.
    queries = q.reshape(b * num_clips * nc, 1, d)
    keys = k.reshape(b * nv, d)
    video = torch.arange(b).repeat_interleave(num_clips * nc)
    positive = video * nv + target_cell.reshape(-1)
    nce = info_nce_loss(queries, keys, temperature=0.07, positive_index=positive)
    torch.testing.assert_close(rc, nce)


def test_region_contrast_with_single_cells_is_clip_info_nce():
    b, num_clips, d = 4, 3, 16
    q = random_unit(b, num_clips, d, seed=6)
    k = random_unit(b, d, seed=7)
    rc = region_contrast_loss(q[:, :, None], k[:, None], torch.ones(b, num_clips, 1, 1), 0.07)
    torch.testing.assert_close(rc, info_nce_loss(q, k, 0.07))


@pytest.mark.parametrize("extra_videos", [0, 2])
def test_info_nce_matches_naive_loop(extra_videos):
    b, num_clips, d = 4, 3, 8
    q = random_unit(b, num_clips, d, seed=8)
    k = random_unit(b + extra_videos, d, seed=9)
    positive = torch.arange(b) + extra_videos
    got = info_nce_loss(q, k, temperature=0.2, positive_index=positive)
    assert got.item() == pytest.approx(naive_info_nce(q, k, 0.2, positive), rel=1e-5)


def test_region_contrast_is_lowest_when_features_match_the_correspondence():
    b, num_clips, nc, nv, d = 2, 1, 2, 2, 4
    k = F.normalize(torch.eye(d)[: b * nv].reshape(b, nv, d), dim=-1)
    S = torch.eye(nv).expand(b, num_clips, nc, nv)
    aligned = k[:, None].clone()  # query cell i == its own global cell i
    shuffled = k.flip(0)[:, None].clone()  # query cells look like the other video
    assert region_contrast_loss(aligned, k, S, 0.1) < region_contrast_loss(shuffled, k, S, 0.1)


def test_shape_mismatch_is_a_clear_error():
    with pytest.raises(ValueError, match="shape mismatch"):
        region_contrast_loss(torch.zeros(2, 1, 4, 8), torch.zeros(2, 6, 8),
                             torch.zeros(2, 1, 4, 5), 0.1)
    with pytest.raises(ValueError, match="shape mismatch"):
        info_nce_loss(torch.zeros(2, 1, 8), torch.zeros(2, 7), 0.1)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), b=st.integers(1, 4), num_clips=st.integers(1, 3),
       nc=st.integers(1, 4), nv=st.integers(1, 5), tau=st.floats(0.05, 2.0))
def test_region_contrast_properties(seed, b, num_clips, nc, nv, tau):
    q = random_unit(b, num_clips, nc, 8, seed=seed)
    k = random_unit(b, nv, 8, seed=seed + 1)
    S = random_rows(b, num_clips, nc, nv, seed=seed + 2)
    loss = region_contrast_loss(q, k, S, tau)
    # Cross-entropy against a distribution is at least that distribution's entropy (Gibbs).
    entropy = -(S * S.log()).sum(-1).mean()
    assert loss >= entropy - 1e-5
    # The order of the videos in the key bank does not matter, only which one is each query's.
    order = torch.randperm(b, generator=torch.Generator().manual_seed(seed))
    inverse = torch.argsort(order)
    permuted = region_contrast_loss(q, k[order], S, tau, positive_index=inverse)
    torch.testing.assert_close(loss, permuted, atol=1e-5, rtol=1e-5)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), b=st.integers(1, 6), num_clips=st.integers(1, 4),
       tau=st.floats(0.05, 2.0))
def test_info_nce_properties(seed, b, num_clips, tau):
    q = random_unit(b, num_clips, 8, seed=seed)
    k = random_unit(b, 8, seed=seed + 1)
    loss = info_nce_loss(q, k, tau)
    assert loss >= 0
    # Never worse than a constant critic by more than the logit range allows.
    assert loss <= math.log(b) + 2 / tau + 1e-5
    order = torch.randperm(b, generator=torch.Generator().manual_seed(seed))
    permuted = info_nce_loss(q, k[order], tau, positive_index=torch.argsort(order))
    torch.testing.assert_close(loss, permuted, atol=1e-5, rtol=1e-5)
