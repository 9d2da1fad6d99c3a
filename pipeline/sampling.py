"""Host-side, seeded view sampling: the parameters of every view of every sample (numpy only).

The decode graph (DALI, or the PyAV reference) applies exactly these values, and they travel
beside the frames, so the correspondence S_k and the MI level groups are computed from what was
applied. The rules (DESIGN section 2):

- Local clips: L frames with stride s (`clip_stride`: augment.frame_stride, at most T // L, or
  with clip_extent = "segment" the largest stride whose clip fits in a segment, T // (K L), at
  least 1). Clip k (0-based) belongs to the segment [k T/K, (k+1) T/K) (the paper: its centre lies
  there). When the clip's L*s frames fit in the segment, its start is uniform over the positions
  that keep the whole clip inside the segment; otherwise its centre is drawn uniformly in the
  segment and the clip is shifted as little as needed to lie in [0, T). A video shorter than one
  clip repeats its last frame; its time interval is then [0, T).
- Global view: L frames, one per equal segment of [0, T) (random offset in training, the centre
  in evaluation); its interval is [0, T).
- Boxes: the global box covers an area fraction in global_area of the frame, each local box an
  area fraction in local_area of the global box, aspect (pixels) log-uniform over the part of
  `aspect` at which that area fits its container (both ranges hold whenever they can; where
  they cannot, e.g. a global box on 16:9 frames, the aspect range wins: see _box_in); the
  position is uniform inside the container.
- Flips: independent per view with flip_probability.
- Intensity levels: each iteration draws levels_per_batch distinct levels of the level grid;
  every view (global and local) gets one of them at random, and its brightness, contrast,
  saturation, hue and blur sigma are uniform inside that level's bins.

Determinism: per-sample draws use a generator seeded by (seed, epoch, sample index); the level
set of an iteration uses (seed, epoch, batch index). Any batch can be replayed from those.
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import NamedTuple

import numpy as np

from pipeline.config import AugmentConfig

JITTER_IDENTITY = np.array([1.0, 1.0, 1.0, 0.0, 0.0], dtype=np.float32)
_PER_SAMPLE, _PER_BATCH = 1, 2  # stream ids mixed into the seeds


class ViewParams(NamedTuple):
    """Parameters of views, fields with common leading dims (...), e.g. (B,) or (B, K).

    frame_indices (..., L) int64: source frames, in order.
    t0, t1 (...,) float32: the view's time interval [t0, t1) in source frames.
    box (..., 4) float32: (x0, y0, x1, y1) normalised to the source frame.
    flip (...,) bool: horizontal flip.
    level (...,) int64: intensity level index into the level grid (0 when jitter is off).
    jitter (..., 5) float32: brightness, contrast, saturation factors, hue shift (fraction of
        the circle), blur sigma (0 = none). Identity (1, 1, 1, 0, 0) when off.
    Arrays are numpy on the host; the loader hands torch tensors with the same fields.
    """

    frame_indices: np.ndarray
    t0: np.ndarray
    t1: np.ndarray
    box: np.ndarray
    flip: np.ndarray
    level: np.ndarray
    jitter: np.ndarray

    def map(self, function) -> ViewParams:
        return ViewParams(*(function(field) for field in self))


def stack_views(views: list[ViewParams]) -> ViewParams:
    """Stack per-sample ViewParams (V views each) into (B, V) fields."""
    return ViewParams(*(np.stack(fields) for fields in zip(*views, strict=True)))


def level_ranges(config: AugmentConfig) -> np.ndarray:
    """(5, 2) value range of each jittered parameter."""
    return np.array([(1 - config.brightness, 1 + config.brightness),
                     (1 - config.contrast, 1 + config.contrast),
                     (1 - config.saturation, 1 + config.saturation),
                     (-config.hue, config.hue), config.blur_sigma], dtype=np.float64)


def level_bin_bounds(level: int | np.ndarray, config: AugmentConfig) -> np.ndarray:
    """(..., 5, 2) the bins of a level (or of each of an array of levels): the interval each
    parameter is drawn from."""
    bins = np.stack(np.unravel_index(level, config.level_bins), axis=-1)  # (..., 5)
    ranges = level_ranges(config)
    width = (ranges[:, 1] - ranges[:, 0]) / np.array(config.level_bins)
    low = ranges[:, 0] + bins * width
    return np.stack([low, low + width], axis=-1)


@lru_cache(maxsize=8)
def _level_bin_table(config: AugmentConfig) -> np.ndarray:
    """(num_levels, 5, 2) level_bin_bounds of every level, computed once per config (the
    sampler looks its views' levels up here instead of recomputing them per view)."""
    table = level_bin_bounds(np.arange(config.num_levels), config)
    table.flags.writeable = False
    return table


def _jitter_for_levels(levels: np.ndarray, rng: np.random.Generator,
                       config: AugmentConfig) -> np.ndarray:
    bounds = _level_bin_table(config)[levels]  # (V, 5, 2)
    values = bounds[..., 0] + rng.random(bounds.shape[:2]) * (bounds[..., 1] - bounds[..., 0])
    if not config.blur:
        values[:, 4] = 0.0
    return values.astype(np.float32)


def _box_in(rng: np.random.Generator, outer: np.ndarray, width: int, height: int,
            area: tuple[float, float], aspect: tuple[float, float]) -> np.ndarray:
    """A box inside `outer` (4,) normalised, for a width x height frame -> (4,) normalised.

    The area fraction a of the outer box is drawn uniformly from `area`; the aspect (width /
    height in pixels) log-uniformly from the part of `aspect` at which a box of that area fits
    in the outer box (between A / H^2 and W^2 / A for A = a W H), so both ranges hold whenever
    they can. When no allowed aspect fits that area (an outer box wider than aspect[1] or
    narrower than aspect[0], a near 1), the aspect is the allowed one nearest the outer box's
    and the box the largest of it that fits. Four draws in every case (area, aspect, x, y).
    Scalar arithmetic in Python floats (numpy's per-call overhead was most of the sampler's
    time).
    """
    x0, y0, x1, y1 = (float(value) for value in outer)
    outer_w, outer_h = (x1 - x0) * width, (y1 - y0) * height
    target = rng.uniform(*area) * outer_w * outer_h
    low = max(math.log(aspect[0]), math.log(target / outer_h ** 2))
    high = min(math.log(aspect[1]), math.log(outer_w ** 2 / target))
    draw = rng.random()
    if low <= high:
        ratio = math.exp(low + draw * (high - low))
        w, h = math.sqrt(target * ratio), math.sqrt(target / ratio)
    else:
        ratio = min(max(outer_w / outer_h, aspect[0]), aspect[1])
        w, h = min(outer_w, outer_h * ratio), min(outer_h, outer_w / ratio)
    w, h = min(w, outer_w), min(h, outer_h)  # rounding at the bounds
    x = x0 * width + rng.random() * (outer_w - w)
    y = y0 * height + rng.random() * (outer_h - h)
    return np.array([x / width, y / height, (x + w) / width, (y + h) / height])


def clip_stride(num_frames: int, config: AugmentConfig) -> int:
    """s, frames between a local clip's frames: frame_stride, or for clip_extent "segment" the
    largest stride whose L frames fit in one of the K segments (at least 1). A video shorter
    than L * frame_stride frames gets the largest stride whose clip fits in it (at least 1):
    a clip padded with repeats of the last frame would not split [t0, t1) into equal cells."""
    if config.clip_extent == "segment":
        return max(1, num_frames // (config.num_clips * config.clip_frames))
    return min(config.frame_stride, max(1, num_frames // config.clip_frames))


def local_clip_starts(rng: np.random.Generator, num_frames: int, config: AugmentConfig
                      ) -> tuple[np.ndarray, np.ndarray]:
    """(centres (K,), starts (K,)) of the local clips; see the module docstring."""
    k = config.num_clips
    span = config.clip_frames * clip_stride(num_frames, config)
    segment = num_frames / k
    draws = rng.random(k)
    # Inside the segment: starts from ceil(k seg) to floor((k+1) seg) - span, when that exists.
    first = np.ceil(np.arange(k) * segment)
    last = np.floor((np.arange(k) + 1) * segment) - span
    inside = first + np.floor(draws * (last - first + 1))
    centres = (np.arange(k) + draws) * segment
    shifted = np.clip(np.round(centres - span / 2), 0, max(num_frames - span, 0))
    fits = (last >= first) & (config.clip_placement == "inside")
    starts = np.where(fits, inside, shifted).astype(np.int64)
    return np.where(fits, starts + span / 2, centres), starts


def _clip_view_times(starts: np.ndarray, num_frames: int, config: AugmentConfig,
                     stride: int):
    span = config.clip_frames * stride
    offsets = np.arange(config.clip_frames) * stride
    indices = np.minimum(starts[:, None] + offsets, num_frames - 1)  # repeat the last frame
    t0 = starts.astype(np.float32)
    t1 = np.minimum(starts + span, num_frames).astype(np.float32)
    return indices, t0, t1


def global_frame_indices(num_frames: int, length: int, offsets: np.ndarray) -> np.ndarray:
    """One frame per equal segment of [0, T): offsets (L,) in [0, 1) place it in its segment."""
    positions = (np.arange(length) + offsets) * num_frames / length
    return np.minimum(np.floor(positions), num_frames - 1).astype(np.int64)


def _sample_video(rng: np.random.Generator, num_frames: int, width: int, height: int,
                  batch_levels: np.ndarray, config: AugmentConfig) -> ViewParams:
    """The global view (index 0) and K local clips of one video: fields with leading dim K+1."""
    length, k = config.clip_frames, config.num_clips
    global_indices = global_frame_indices(num_frames, length, rng.random(length))
    _, starts = local_clip_starts(rng, num_frames, config)
    local_indices, local_t0, local_t1 = _clip_view_times(starts, num_frames, config,
                                                         clip_stride(num_frames, config))
    full = np.array([0.0, 0.0, 1.0, 1.0])
    global_box = _box_in(rng, full, width, height, config.global_area, config.aspect)
    local_boxes = [_box_in(rng, global_box, width, height, config.local_area, config.aspect)
                   for _ in range(k)]
    flip = rng.random(k + 1) < config.flip_probability
    if config.jitter:
        levels = rng.choice(batch_levels, size=k + 1)
        jitter = _jitter_for_levels(levels, rng, config)
    else:
        levels = np.zeros(k + 1, dtype=np.int64)
        jitter = np.tile(JITTER_IDENTITY, (k + 1, 1))
    return ViewParams(
        frame_indices=np.concatenate([global_indices[None], local_indices]).astype(np.int64),
        t0=np.concatenate([[0.0], local_t0]).astype(np.float32),
        t1=np.concatenate([[float(num_frames)], local_t1]).astype(np.float32),
        box=np.stack([global_box, *local_boxes]).astype(np.float32),
        flip=flip,
        level=levels.astype(np.int64),
        jitter=jitter,
    )


def batch_levels(seed: int, epoch: int, batch_index: int, config: AugmentConfig) -> np.ndarray:
    """The intensity levels of one iteration: levels_per_batch distinct levels of the grid."""
    rng = np.random.default_rng([seed, epoch, batch_index, _PER_BATCH])
    count = min(config.levels_per_batch, config.num_levels)
    return np.sort(rng.choice(config.num_levels, size=count, replace=False))


def sample_pretrain_views(num_frames: np.ndarray, width: np.ndarray, height: np.ndarray,
                          sample_index: np.ndarray, *, seed: int, epoch: int, batch_index: int,
                          config: AugmentConfig) -> tuple[ViewParams, ViewParams]:
    """Views of a pretraining batch: (global (B,), local (B, K)).

    num_frames, width, height, sample_index: (B,) per video (sample_index: its row in the
    dataset, which seeds its draws).
    """
    levels = batch_levels(seed, epoch, batch_index, config)
    per_video = [
        _sample_video(np.random.default_rng([seed, epoch, int(index), _PER_SAMPLE]), int(t),
                      int(w), int(h), levels, config)
        for t, w, h, index in zip(num_frames, width, height, sample_index, strict=True)]
    views = stack_views(per_video)  # (B, K+1)
    return views.map(lambda f: f[:, 0]), views.map(lambda f: f[:, 1:])


def centre_box(width: int, height: int, size: int) -> np.ndarray:
    """A size x size pixel box in the frame centre (the short side when smaller), normalised."""
    side = min(size, width, height)
    x0, y0 = (width - side) / 2, (height - side) / 2
    return np.array([x0 / width, y0 / height, (x0 + side) / width, (y0 + side) / height])


def sample_eval_views(num_frames: np.ndarray, width: np.ndarray, height: np.ndarray,
                      config: AugmentConfig, clips: int = 10) -> ViewParams:
    """Evaluation views (B, N): N uniformly spaced clips, centre crop, no flip, no jitter."""
    per_video = []
    for t, w, h in zip(num_frames, width, height, strict=True):
        t = int(t)
        stride = clip_stride(t, config)
        span = config.clip_frames * stride
        starts = np.round(np.linspace(0, max(t - span, 0), clips)).astype(np.int64)
        indices, t0, t1 = _clip_view_times(starts, t, config, stride)
        per_video.append(ViewParams(
            frame_indices=indices, t0=t0, t1=t1,
            box=np.tile(centre_box(int(w), int(h), config.size), (clips, 1)).astype(np.float32),
            flip=np.zeros(clips, dtype=bool), level=np.zeros(clips, dtype=np.int64),
            jitter=np.tile(JITTER_IDENTITY, (clips, 1))))
    return stack_views(per_video)


def sample_supervised_views(num_frames: np.ndarray, width: np.ndarray, height: np.ndarray,
                            sample_index: np.ndarray, *, seed: int, epoch: int,
                            config: AugmentConfig, area: tuple[float, float] = (0.4, 1.0)
                            ) -> ViewParams:
    """Supervised training views (B, 1): a random clip, a random crop, a random flip."""
    per_video = []
    full = np.array([0.0, 0.0, 1.0, 1.0])
    for t, w, h, index in zip(num_frames, width, height, sample_index, strict=True):
        rng = np.random.default_rng([seed, epoch, int(index), _PER_SAMPLE])
        t = int(t)
        stride = clip_stride(t, config)
        span = config.clip_frames * stride
        start = np.array([rng.integers(0, max(t - span, 0) + 1)])
        indices, t0, t1 = _clip_view_times(start, t, config, stride)
        per_video.append(ViewParams(
            frame_indices=indices, t0=t0, t1=t1,
            box=_box_in(rng, full, int(w), int(h), area, config.aspect)[None].astype(np.float32),
            flip=np.array([rng.random() < config.flip_probability]),
            level=np.zeros(1, dtype=np.int64), jitter=JITTER_IDENTITY[None].copy()))
    return stack_views(per_video)
