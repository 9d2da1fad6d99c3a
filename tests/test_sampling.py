"""The host-side view sampler: geometry and level properties, determinism and replay."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from pipeline.config import AugmentConfig
from pipeline.sampling import (
    JITTER_IDENTITY,
    batch_levels,
    centre_box,
    level_bin_bounds,
    local_clip_starts,
    sample_eval_views,
    sample_pretrain_views,
    sample_supervised_views,
)

CONFIG = AugmentConfig(levels_per_batch=8)
videos = st.lists(st.tuples(st.integers(1, 400), st.integers(32, 400), st.integers(32, 400)),
                  min_size=1, max_size=6)


def draw(batch, seed=0, epoch=0, batch_index=0, config=CONFIG):
    frames, width, height = (np.array(column) for column in zip(*batch, strict=True))
    return sample_pretrain_views(frames, width, height, np.arange(len(batch)) + 100, seed=seed,
                                 epoch=epoch, batch_index=batch_index, config=config)


@settings(max_examples=60, deadline=None)
@given(batch=videos, seed=st.integers(0, 2**31 - 1))
def test_geometry_properties(batch, seed):
    global_views, local_views = draw(batch, seed=seed)
    eps = 1e-6
    for b, (frames, _, _) in enumerate(batch):
        g_box = global_views.box[b]
        assert (g_box >= -eps).all() and (g_box <= 1 + eps).all()
        assert g_box[0] < g_box[2] and g_box[1] < g_box[3]
        g_area = (g_box[2] - g_box[0]) * (g_box[3] - g_box[1])
        assert g_area <= 1 + eps
        assert global_views.t0[b] == 0 and global_views.t1[b] == frames
        # One global frame per equal segment of [0, T).
        segment = np.floor(np.arange(16) * frames / 16).astype(int)
        assert (global_views.frame_indices[b] >= np.minimum(segment, frames - 1)).all()
        assert (global_views.frame_indices[b] <= frames - 1).all()
        for k in range(CONFIG.num_clips):
            box = local_views.box[b, k]
            # Nested: inside the global box (so S_k rows sum to 1).
            assert box[0] >= g_box[0] - eps and box[1] >= g_box[1] - eps
            assert box[2] <= g_box[2] + eps and box[3] <= g_box[3] + eps
            area = (box[2] - box[0]) * (box[3] - box[1])
            assert area <= g_area + eps
            t0, t1 = local_views.t0[b, k], local_views.t1[b, k]
            indices = local_views.frame_indices[b, k]
            assert 0 <= t0 < t1 <= frames
            assert (indices >= 0).all() and (indices < frames).all()
            if frames >= 16:  # a whole clip of consecutive frames inside the video
                assert t1 - t0 == 16 and (np.diff(indices) == 1).all() and indices[0] == t0
            else:  # shorter videos repeat their last frame over [0, T)
                assert (t0, t1) == (0, frames) and indices[-1] == frames - 1


@settings(max_examples=40, deadline=None)
@given(frames=st.integers(1, 2000), seed=st.integers(0, 2**31 - 1))
def test_clip_centres_fall_in_their_segments_and_shift_minimally(frames, seed):
    centres, starts = local_clip_starts(np.random.default_rng(seed), frames, CONFIG)
    k = CONFIG.num_clips
    for index in range(k):
        assert index * frames / k <= centres[index] < (index + 1) * frames / k
    if frames >= 16:
        unclamped = np.round(centres - 8)
        assert ((starts == unclamped) | (starts == 0) | (starts == frames - 16)).all()


@settings(max_examples=60, deadline=None)
@given(frames=st.integers(1, 2000), seed=st.integers(0, 2**31 - 1), stride=st.integers(1, 3))
@example(frames=64, seed=0, stride=1)  # the motion benchmark: T = K L
def test_centre_placement_is_the_paper_s_rule_for_every_clip(frames, seed, stride):
    config = AugmentConfig(levels_per_batch=8, clip_placement="centre", frame_stride=stride)
    centres, starts = local_clip_starts(np.random.default_rng(seed), frames, config)
    # Naive: centre uniform in [k T/K, (k+1) T/K), start = centre - span/2 rounded, then the
    # clip moved as little as needed to lie in [0, T).
    draws = np.random.default_rng(seed).random(config.num_clips)
    span = 16 * min(stride, max(1, frames // 16))
    for k in range(config.num_clips):
        centre = (k + draws[k]) * frames / config.num_clips
        start = min(max(round(centre - span / 2), 0), max(frames - span, 0))
        assert centres[k] == pytest.approx(centre) and starts[k] == start


def test_centre_placement_jitters_clips_that_tile_the_video():
    # T = K L: "inside" leaves each clip one start; the paper's rule moves it over a segment.
    starts = {placement: np.stack([local_clip_starts(
        np.random.default_rng(seed), 64, AugmentConfig(clip_placement=placement))[1]
        for seed in range(400)]) for placement in ("inside", "centre")}
    assert (starts["inside"] == [0, 16, 32, 48]).all()
    spread = starts["centre"].max(axis=0) - starts["centre"].min(axis=0)
    assert (spread >= 8).all()  # 16 positions but for the clamped ends
    # The middle clips cross a segment border unless the centre falls on the segment's middle;
    # the end clips are clamped to the video half of the time.
    assert ((starts["centre"][:, 1:3] % 16) != 0).mean() > 0.85


@settings(max_examples=60, deadline=None)
@given(frames=st.integers(1, 2000), seed=st.integers(0, 2**31 - 1),
       extent=st.sampled_from(["stride", "segment"]), stride=st.integers(1, 4))
@example(frames=20, seed=0, extent="stride", stride=2)  # shorter than L s: T // L = 1
@example(frames=40, seed=1, extent="stride", stride=4)
def test_clips_lie_inside_their_segments_whenever_they_fit(frames, seed, extent, stride):
    config = AugmentConfig(levels_per_batch=8, clip_extent=extent, frame_stride=stride)
    global_views, local_views = draw([(frames, 170, 128)], seed=seed, config=config)
    k, length = config.num_clips, config.clip_frames
    # A video shorter than L * frame_stride takes the largest stride that fits in it.
    s = max(1, frames // (k * length)) if extent == "segment" else \
        min(stride, max(1, frames // length))
    for index in range(k):
        indices = local_views.frame_indices[0, index]
        t0, t1 = local_views.t0[0, index], local_views.t1[0, index]
        if frames >= length:  # L frames with stride s over [t0, t1) = L s frames, no repeats
            assert (np.diff(indices) == s).all() and indices[0] == t0 and t1 - t0 == length * s
        segment = (index * frames / k, (index + 1) * frames / k)
        if np.floor(segment[1]) - np.ceil(segment[0]) >= length * s:  # the clip fits
            assert segment[0] <= t0 and t1 <= segment[1]
        else:  # the paper's rule: the centre lies in the segment, shifted inside the video
            assert t0 >= 0 and t1 <= max(frames, length * s)
    if extent == "segment" and frames >= k * length:
        # The K clips cover most of the video: at least K L s >= T - K L frames.
        covered = (local_views.t1 - local_views.t0).sum()
        assert covered >= frames - k * length


def test_segment_extent_spreads_eval_and_supervised_clips_too():
    config = AugmentConfig(clip_extent="segment")
    views = sample_eval_views(np.array([250]), np.array([170]), np.array([128]), config)
    assert (np.diff(views.frame_indices[0], axis=-1) == 3).all()  # 250 // 64 = 3
    supervised = sample_supervised_views(np.array([250]), np.array([170]), np.array([128]),
                                         np.array([0]), seed=0, epoch=0, config=config)
    assert (np.diff(supervised.frame_indices[0, 0]) == 3).all()


def _pixels(box, width, height):
    """(width, height) of a normalised box in pixels."""
    return (box[..., 2] - box[..., 0]) * width, (box[..., 3] - box[..., 1]) * height


@settings(max_examples=60, deadline=None)
@given(width=st.integers(32, 400), height=st.integers(32, 400), seed=st.integers(0, 2**31 - 1))
@example(width=96, height=72, seed=0)  # the motion benchmark's 4:3 frames
@example(width=227, height=128, seed=0)  # 16:9 (Kinetics at short side 128)
def test_boxes_keep_their_area_and_aspect_ranges_whenever_both_can_hold(width, height, seed):
    # The naive rule: a box of area fraction a fits at aspect r when sqrt(a A r) <= W and
    # sqrt(a A / r) <= H, i.e. r in [a A / H^2, W^2 / (a A)]; every a of the range can be met
    # inside the aspect range when that range holds the container's own aspect.
    config = AugmentConfig(levels_per_batch=8)
    g, local = (views.box for views in draw([(64, width, height)] * 50, seed=seed))
    gw, gh = _pixels(g, width, height)
    lw, lh = _pixels(local, width, height)
    low, high = config.aspect
    eps = 1e-6
    for w, h in ((gw, gh), (lw, lh)):  # the aspect range always holds
        assert (w / h >= low - eps).all() and (w / h <= high + eps).all()
    g_area = gw * gh / (width * height)
    met = g_area >= config.global_area[0] - eps
    if low <= width / height <= high:
        assert met.all()
    # Otherwise, where the area was not met: the largest box of the allowed aspect nearest the
    # frame's, spanning the frame's short side.
    nearest = min(max(width / height, low), high)
    short = np.where(width > height, gh, gw)
    assert (met | (np.isclose(gw / gh, nearest) & np.isclose(short, min(width, height)))).all()
    assert (g_area <= 1 + eps).all()
    # Global boxes keep the aspect range, so every local area fraction can be met.
    fraction = lw * lh / (gw * gh)[:, None]
    assert (fraction >= config.local_area[0] - eps).all() and (fraction <= 1 + eps).all()


def test_area_fractions_are_uniform_in_their_ranges_on_square_frames():
    global_views, local_views = draw([(100, 1000, 1000)] * 400,
                                     config=AugmentConfig(levels_per_batch=8))
    g = global_views.box
    g_area = (g[:, 2] - g[:, 0]) * (g[:, 3] - g[:, 1])
    assert g_area.min() >= 0.8 - 1e-6 and g_area.max() <= 1.0 + 1e-6
    assert g_area.mean() == pytest.approx(0.9, abs=0.01)
    local = local_views.box
    fraction = ((local[..., 2] - local[..., 0]) * (local[..., 3] - local[..., 1])
                / g_area[:, None])
    assert fraction.min() >= 0.2 - 1e-6 and fraction.max() <= 1.0 + 1e-6
    assert fraction.mean() == pytest.approx(0.6, abs=0.02)


@settings(max_examples=30, deadline=None)
@given(batch=videos, seed=st.integers(0, 2**31 - 1), batch_index=st.integers(0, 10**6))
def test_levels_per_iteration_and_jitter_inside_the_levels_bins(batch, seed, batch_index):
    global_views, local_views = draw(batch, seed=seed, batch_index=batch_index)
    allowed = batch_levels(seed, 0, batch_index, CONFIG)
    assert len(allowed) == len(set(allowed)) == CONFIG.levels_per_batch
    levels = np.concatenate([global_views.level[:, None], local_views.level], 1).ravel()
    jitter = np.concatenate([global_views.jitter[:, None], local_views.jitter], 1).reshape(-1, 5)
    assert set(levels) <= set(allowed)
    for level, values in zip(levels, jitter, strict=True):
        bounds = level_bin_bounds(int(level), CONFIG)
        assert (values >= bounds[:, 0] - 1e-5).all() and (values <= bounds[:, 1] + 1e-5).all()


def test_level_grid_has_512_levels_in_the_papers_ranges():
    assert CONFIG.num_levels == 512
    lows = np.stack([level_bin_bounds(level, CONFIG)[:, 0] for level in range(512)])
    highs = np.stack([level_bin_bounds(level, CONFIG)[:, 1] for level in range(512)])
    np.testing.assert_allclose(lows.min(0), [0.6, 0.6, 0.6, -0.1, 0.1])
    np.testing.assert_allclose(highs.max(0), [1.4, 1.4, 1.4, 0.1, 2.0])


def test_level_bounds_of_an_array_of_levels_match_a_naive_per_level_reference():
    """The sampler looks levels up in a table built from level_bin_bounds over all levels at
    once; each entry must be the level's bins, computed here digit by digit (the last
    parameter varies fastest) from the ranges."""
    ranges = [(0.6, 1.4), (0.6, 1.4), (0.6, 1.4), (-0.1, 0.1), (0.1, 2.0)]
    table = level_bin_bounds(np.arange(CONFIG.num_levels), CONFIG)
    assert table.shape == (512, 5, 2)
    for level in (0, 1, 7, 100, 255, 511):
        digits, rest = [], level
        for bins in reversed(CONFIG.level_bins):
            digits.insert(0, rest % bins)
            rest //= bins
        for parameter, (digit, bins, (low, high)) in enumerate(
                zip(digits, CONFIG.level_bins, ranges, strict=True)):
            width = (high - low) / bins
            np.testing.assert_allclose(table[level, parameter],
                                       [low + digit * width, low + (digit + 1) * width])
        np.testing.assert_array_equal(table[level], level_bin_bounds(level, CONFIG))


def test_same_seed_epoch_and_indices_replay_exactly_and_others_differ():
    batch = [(120, 170, 128), (60, 128, 170), (10, 170, 128)]
    first, again = draw(batch, seed=3, epoch=2, batch_index=5), draw(batch, seed=3, epoch=2,
                                                                     batch_index=5)
    for a, b in zip(first, again, strict=True):
        for x, y in zip(a, b, strict=True):
            np.testing.assert_array_equal(x, y)
    other_epoch = draw(batch, seed=3, epoch=3, batch_index=5)
    assert not np.array_equal(first[1].box, other_epoch[1].box)
    # A sample's geometry depends on its own index, not on its batch neighbours.
    alone = draw(batch[:1], seed=3, epoch=2, batch_index=5)
    np.testing.assert_array_equal(alone[1].box[0], first[1].box[0])


def test_flips_are_independent_coin_flips():
    global_views, local_views = draw([(64, 170, 128)] * 400)
    flips = np.concatenate([global_views.flip[:, None], local_views.flip], 1)
    assert flips.mean() == pytest.approx(0.5, abs=0.04)
    # Global and first local flip agree about half the time (independent).
    assert (flips[:, 0] == flips[:, 1]).mean() == pytest.approx(0.5, abs=0.08)


def test_jitter_off_gives_identity_values_and_level_zero():
    config = AugmentConfig(jitter=False)
    _, local_views = draw([(64, 170, 128)], config=config)
    np.testing.assert_array_equal(local_views.jitter[0], np.tile(JITTER_IDENTITY, (4, 1)))
    assert (local_views.level == 0).all()


def test_eval_views_are_uniform_centre_crops():
    views = sample_eval_views(np.array([100, 10]), np.array([170, 170]), np.array([128, 128]),
                              CONFIG, clips=10)
    assert views.frame_indices.shape == (2, 10, 16)
    starts = views.frame_indices[0, :, 0]
    np.testing.assert_array_equal(starts, np.round(np.linspace(0, 84, 10)))
    np.testing.assert_allclose(views.box[0, 0], centre_box(170, 128, 112))
    assert (views.frame_indices[1] <= 9).all() and not views.flip.any()
    np.testing.assert_allclose(centre_box(170, 128, 112),
                               [29 / 170, 8 / 128, 141 / 170, 120 / 128])


def test_supervised_views_are_one_random_clip_per_video():
    views = sample_supervised_views(np.array([100, 30]), np.array([170, 170]),
                                    np.array([128, 128]), np.array([0, 1]), seed=0, epoch=0,
                                    config=CONFIG)
    assert views.frame_indices.shape == (2, 1, 16)
    assert (np.diff(views.frame_indices[:, 0], axis=-1) == 1).all()
    assert (views.jitter == JITTER_IDENTITY).all()
