"""The colour map and Gaussian blur of one view's frames as one compiled CPU kernel.

DALI's CPU operators for these two steps (`fn.coord_transform`, `fn.gaussian_blur`) cost about
what numpy and Pillow cost for them and were three quarters of the CPU graph's time
(BENCHMARKS.md); this loop, compiled by numba through DALI's numba operator
(pipeline.dali_graph), does both in a fraction of that. It computes the reference's formulas
(pipeline.reference.colour then gaussian_blur), the colour in float64 as there (the same
values), the blur in float32 (within 1 grey level of the reference's float64 sum):

    colour:  out = clip(rint(M[:, :3] @ rgb + M[:, 3]), 0, 255)     M the view's (3, 4) map
    blur:    separable Gaussian over W then H, taps exp(-t^2 / (2 sigma^2)) normalised,
             t in [-ceil(3 sigma), ceil(3 sigma)], borders mirrored without repeating the edge
             (reflect-101), rounded and clipped once; sigma <= 0 (or NaN): no blur

`colour_blur` is left a plain function because DALI's operator compiles it itself (it refuses
an already compiled one); the helpers it calls are compiled here. Tests compile it with
`numba.njit` and check it against the reference.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit


@njit
def reflect_101(length: int, radius: int) -> np.ndarray:
    """Source index of each position of a line of `length` padded by `radius` on both sides,
    mirrored about the edge pixels (..., 2, 1 | 0, 1, ..., n-1 | n-2, ...) -> (length + 2r,)."""
    index = np.empty(length + 2 * radius, dtype=np.int64)
    period = 2 * length - 2
    for i in range(length + 2 * radius):
        j = i - radius
        if length == 1:
            j = 0
        else:
            j = j % period  # numba and Python both give a non-negative remainder
            if j >= length:
                j = period - j
        index[i] = j
    return index


@njit
def gaussian_taps(sigma: float) -> np.ndarray:
    """The blur's normalised taps (2 ceil(3 sigma) + 1,) float32; (1,) = [1] for sigma <= 0."""
    if not sigma > 0:  # 0, negative or NaN: no blur
        return np.ones(1, dtype=np.float32)
    radius = math.ceil(3.0 * sigma)
    taps = np.empty(2 * radius + 1, dtype=np.float64)
    for t in range(-radius, radius + 1):
        taps[t + radius] = math.exp(-(t * t) / (2.0 * sigma * sigma))
    return (taps / taps.sum()).astype(np.float32)


@njit
def _round_to_byte(value):
    return min(max(np.rint(value), 0.0), 255.0)


def colour_blur(out, frames, colour, sigma):
    """out (F, H, W, 3) uint8 <- frames (F, H, W, 3) uint8 through colour (3, 4) float32, then
    the Gaussian blur of sigma (1,) float32. DALI's numba operator calls it once per sample: a
    view's clip (video graph) or one image (frames graph, F = 1)."""
    count, height, width, _ = frames.shape
    taps = gaussian_taps(sigma[0])
    radius = (len(taps) - 1) // 2
    rows = reflect_101(height, radius)
    columns = reflect_101(width, radius)
    m = colour.astype(np.float64)
    coloured = np.empty((height, width * 3), dtype=np.float32)  # one frame, channels last
    padded = np.empty((width + 2 * radius) * 3, dtype=np.float32)  # one row, mirrored
    across = np.empty((height, width * 3), dtype=np.float32)  # blurred along W
    line = np.empty(width * 3, dtype=np.float32)  # one row blurred along W and H
    for f in range(count):
        for y in range(height):
            for x in range(width):
                r = np.float64(frames[f, y, x, 0])
                g = np.float64(frames[f, y, x, 1])
                b = np.float64(frames[f, y, x, 2])
                for c in range(3):
                    value = m[c, 0] * r + m[c, 1] * g + m[c, 2] * b + m[c, 3]
                    coloured[y, 3 * x + c] = _round_to_byte(value)
        if radius == 0:
            for y in range(height):
                for x in range(width):
                    for c in range(3):
                        out[f, y, x, c] = np.uint8(coloured[y, 3 * x + c])
            continue
        # Along W: each row mirrored into `padded`, then one contiguous multiply-add per tap
        # (taps step 3 values: one pixel of 3 channels).
        for y in range(height):
            for i in range(width + 2 * radius):
                for c in range(3):
                    padded[3 * i + c] = coloured[y, 3 * columns[i] + c]
            row = across[y]
            row[:] = 0.0
            for t in range(2 * radius + 1):
                weight = taps[t]
                for k in range(width * 3):
                    row[k] += weight * padded[k + 3 * t]
        # Along H: each output row is a weighted sum of whole mirrored rows.
        for y in range(height):
            line[:] = 0.0
            for t in range(2 * radius + 1):
                weight = taps[t]
                source = across[rows[y + t]]
                for k in range(width * 3):
                    line[k] += weight * source[k]
            for x in range(width):
                for c in range(3):
                    out[f, y, x, c] = np.uint8(_round_to_byte(line[3 * x + c]))


def same_shape(outs, ins):
    """DALI's setup function for colour_blur: each output sample has its input's shape."""
    for i in range(len(outs[0])):
        outs[0][i][:] = ins[0][i][:]
