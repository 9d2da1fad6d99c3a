"""The same decode and augmentation as the DALI graph, in PyAV + numpy: the parity oracle.

No DALI. Given a payload and the packed view rows (pipeline.packing, read by column name),
renders each view exactly as the graph defines it, step by step with uint8 results in between
as the graph has:

    decode frames (PyAV for video payloads, Pillow for JPEG frames)
    -> crop the ROI and resize to size x size (bilinear, pixel centres, no antialiasing)
    -> colour: brightness/contrast b * (128 + c * (x - 128)), then saturation and hue (rotate
       and scale YIQ's I/Q), as one affine map of RGB (pipeline.packing.colour_affine)
    -> Gaussian blur, radius ceil(3 sigma), mirrored borders (reflect-101)
    -> flip, then (x / 255 - MEAN) / STD, layout (C, L, H, W)

It is also the baseline a typical PyAV-based loader represents (benchmarks compare against it).
"""

from __future__ import annotations

import io
import math

import av
import numpy as np
from PIL import Image

from pipeline.config import MEAN, STD
from pipeline.packing import BLUR_SIGMA, BOX, FLIP, colour_affine


def decode_frames(payload: bytes | list[bytes], codec: str, indices: np.ndarray) -> np.ndarray:
    """Frames `indices` (any order, repeats allowed) of a payload -> (n, H, W, 3) uint8."""
    wanted = np.asarray(indices)
    if codec == "jpeg":
        decoded = {i: np.asarray(Image.open(io.BytesIO(payload[i])).convert("RGB"))
                   for i in np.unique(wanted)}
        return np.stack([decoded[i] for i in wanted])
    last = int(wanted.max())
    frames = {}
    with av.open(io.BytesIO(payload)) as container:
        for index, frame in enumerate(container.decode(container.streams.video[0])):
            if index in set(wanted.tolist()):
                frames[index] = frame.to_ndarray(format="rgb24")
            if index >= last:
                break
    missing = sorted(set(wanted.tolist()) - set(frames))
    if missing:
        raise ValueError(f"payload has no frames {missing[:5]}")
    return np.stack([frames[i] for i in wanted])


def _to_uint8(x: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)


def resize_roi(frames: np.ndarray, box: np.ndarray, size: int) -> np.ndarray:
    """Bilinear resize of the box (x0, y0, x1, y1 normalised) of (n, H, W, 3) -> (n, s, s, 3)."""
    _, h, w, _ = frames.shape
    x0, y0, x1, y1 = box[0] * w, box[1] * h, box[2] * w, box[3] * h
    ys = y0 + (np.arange(size) + 0.5) * (y1 - y0) / size - 0.5
    xs = x0 + (np.arange(size) + 0.5) * (x1 - x0) / size - 0.5
    ys, xs = np.clip(ys, 0, h - 1), np.clip(xs, 0, w - 1)
    y_lo, x_lo = np.floor(ys).astype(int), np.floor(xs).astype(int)
    y_hi, x_hi = np.minimum(y_lo + 1, h - 1), np.minimum(x_lo + 1, w - 1)
    wy, wx = (ys - y_lo)[None, :, None, None], (xs - x_lo)[None, None, :, None]
    f = frames.astype(np.float64)
    top = f[:, y_lo][:, :, x_lo] * (1 - wx) + f[:, y_lo][:, :, x_hi] * wx
    bottom = f[:, y_hi][:, :, x_lo] * (1 - wx) + f[:, y_hi][:, :, x_hi] * wx
    return _to_uint8(top * (1 - wy) + bottom * wy)


def colour(frames: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """(n, H, W, 3) uint8 through one view's colour_affine (3, 4), rounded and clipped once."""
    return _to_uint8(frames.astype(np.float64) @ affine[:, :3].T.astype(np.float64)
                     + affine[:, 3].astype(np.float64))


def gaussian_blur(frames: np.ndarray, sigma: float) -> np.ndarray:
    """Separable Gaussian over H and W of (n, H, W, 3), radius ceil(3 sigma), reflect-101."""
    if sigma <= 0:
        return frames
    radius = math.ceil(3 * sigma)
    taps = np.arange(-radius, radius + 1)
    kernel = np.exp(-(taps**2) / (2 * sigma**2))
    kernel /= kernel.sum()
    out = frames.astype(np.float64)
    for axis in (1, 2):
        padding = [(0, 0)] * 4
        padding[axis] = (radius, radius)
        padded = np.pad(out, padding, mode="reflect")
        length = out.shape[axis]
        out = sum(weight * np.take(padded, np.arange(i, i + length), axis=axis)
                  for i, weight in enumerate(kernel))
    return _to_uint8(out)


def normalise(frames: np.ndarray, flip: bool) -> np.ndarray:
    """(n, H, W, 3) uint8 -> (3, n, H, W) float32, mirrored when flip."""
    if flip:
        frames = frames[:, :, ::-1]
    x = (frames.astype(np.float32) / 255.0 - np.array(MEAN, np.float32)) / np.array(
        STD, np.float32)
    return np.ascontiguousarray(x.transpose(3, 0, 1, 2))


def render_view(frames: np.ndarray, row: np.ndarray, size: int, jitter: bool = True
                ) -> np.ndarray:
    """One view: frames (L, H, W, 3) uint8 and its packed row -> (3, L, size, size) float32."""
    out = resize_roi(frames, row[BOX], size)
    if jitter:
        out = colour(out, colour_affine(row))
        out = gaussian_blur(out, float(row[BLUR_SIGMA]))
    return normalise(out, bool(row[FLIP] > 0.5))


def render_sample(payload: bytes | list[bytes], codec: str, frame_indices: np.ndarray,
                  rows: np.ndarray, size: int, jitter: bool = True) -> np.ndarray:
    """All V views of one video: frame_indices (V, L), rows (V, PARAMS_WIDTH) -> views
    (V, 3, L, size, size)."""
    views, length = frame_indices.shape
    frames = decode_frames(payload, codec, frame_indices.reshape(-1))
    frames = frames.reshape(views, length, *frames.shape[1:])
    return np.stack([render_view(frames[v], rows[v], size, jitter) for v in range(views)])
