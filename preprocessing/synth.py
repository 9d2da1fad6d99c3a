"""A synthetic action dataset whose classes are carried by motion, not appearance.

No torch, DALI or Ray. Every video shows one disk moving over a background. The class is an
ordered pair of sub-motions (first half of the video, then second half) from

    right, left, up, down, circle_cw, circle_ccw, zigzag

so classes differ in direction, trajectory shape and the temporal order of the two sub-motions
(42 classes at most). Everything else is drawn per video from one distribution shared by all
classes: the textured background and its colours, the disk's colour, size, speed and start
position, and a slow illumination drift. A model that keys on appearance can tell videos apart
but not classes. Output: `OUT/<class>/<class>_<i>.<ext>`, the `folder` dataset layout.
"""

from __future__ import annotations

import io
import itertools
import math
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from preprocessing.transcode import BITEXACT

SUB_MOTIONS = ("right", "left", "up", "down", "circle_cw", "circle_ccw", "zigzag")
CODECS = {"h264": ("libx264", "mp4", "yuv420p"), "vp9": ("libvpx-vp9", "webm", "yuv420p"),
          "mpeg4": ("mpeg4", "avi", "yuv420p"), "mjpeg": ("mjpeg", "avi", "yuvj420p")}


def class_names() -> list[str]:
    """All motion classes in a fixed order that varies both sub-motions early on."""
    pairs = [(a, b) for a, b in itertools.product(SUB_MOTIONS, repeat=2) if a != b]
    order = np.random.default_rng(20261126).permutation(len(pairs))
    return [f"{pairs[i][0]}-then-{pairs[i][1]}" for i in order]


def _sub_motion(name: str, u: np.ndarray) -> np.ndarray:
    """Displacement (len(u), 2) in units of the amplitude, for progress u in [0, 1]."""
    if name in ("right", "left", "up", "down"):
        direction = {"right": (1, 0), "left": (-1, 0), "up": (0, -1), "down": (0, 1)}[name]
        return u[:, None] * np.array(direction, dtype=float)
    if name == "zigzag":
        return np.stack([u, 0.3 * np.sin(4 * math.pi * u)], axis=1)
    sign = 1 if name == "circle_cw" else -1
    angle = 2 * math.pi * u * sign
    return 0.5 * np.stack([np.sin(angle), 1 - np.cos(angle)], axis=1)


def trajectory(class_name: str, frames: int) -> np.ndarray:
    """(frames, 2) path in amplitude units: the first sub-motion, then the second from its end."""
    first, second = class_name.split("-then-")
    half = frames // 2
    a = _sub_motion(first, np.linspace(0, 1, half))
    b = _sub_motion(second, np.linspace(0, 1, frames - half)) + a[-1]
    return np.concatenate([a, b])


@dataclass(frozen=True)
class SynthConfig:
    classes: int = 5
    videos_per_class: int = 8
    frames: int = 48
    width: int = 160
    height: int = 120
    fps: int = 25
    codec: str = "h264"
    seed: int = 0

    def __post_init__(self) -> None:
        if not 1 <= self.classes <= len(class_names()):
            raise ValueError(f"classes must be in 1..{len(class_names())}, got {self.classes}")
        if self.videos_per_class < 1 or self.frames < 2:
            raise ValueError("videos_per_class must be >= 1 and frames >= 2")
        if self.width < 32 or self.height < 32 or self.width % 2 or self.height % 2:
            raise ValueError("width and height must be even and >= 32")
        if self.codec not in CODECS:
            raise ValueError(f"codec must be one of {sorted(CODECS)}, got {self.codec!r}")


def _start_offset(low: float, high: float, size: int, margin: float,
                  rng: np.random.Generator) -> float:
    """Where the path starts along one axis so that all of it stays inside the frame."""
    free = size - 2 * margin - (high - low)
    if free <= 0:  # the path barely fits: centre it
        return size / 2 - (low + high) / 2
    return margin - low + rng.uniform(0, free)


def render_video(class_name: str, config: SynthConfig, rng: np.random.Generator) -> np.ndarray:
    """Frames (T, H, W, 3) uint8 of one video of the class."""
    h, w, t = config.height, config.width, config.frames
    # Background: smooth random texture in two random colours plus fine grain.
    coarse = rng.random((h // 8 + 2, w // 8 + 2))
    texture = np.kron(coarse, np.ones((8, 8)))[:h, :w]
    colours = rng.uniform(30, 225, size=(2, 3))
    background = texture[..., None] * colours[0] + (1 - texture[..., None]) * colours[1]
    background += rng.normal(0, 6, size=(h, w, 3))
    # The moving disk: size, colour, speed (amplitude) and placement from shared ranges.
    radius = rng.uniform(0.07, 0.11) * min(h, w)
    colour = rng.uniform(0, 255, size=3)
    for _ in range(20):  # keep the disk visible against both background colours
        if np.abs(colours - colour).sum(axis=1).min() >= 120:
            break
        colour = rng.uniform(0, 255, size=3)
    amplitude = rng.uniform(0.25, 0.4) * min(h, w)
    path = trajectory(class_name, t) * amplitude
    low, high = path.min(0), path.max(0)
    margin = radius + 2
    start_x = _start_offset(low[0], high[0], w, margin, rng)
    start_y = _start_offset(low[1], high[1], h, margin, rng)
    centres = path + np.array([start_x, start_y])
    # Slow illumination drift: brightness 1 +- 0.15 over a period longer than the video.
    phase, period = rng.uniform(0, 2 * math.pi), rng.uniform(2, 4) * t
    ys, xs = np.mgrid[0:h, 0:w]
    frames = np.empty((t, h, w, 3), dtype=np.uint8)
    for i, (cx, cy) in enumerate(centres):
        inside = ((xs - cx) ** 2 + (ys - cy) ** 2) <= radius**2
        image = np.where(inside[..., None], colour, background)
        image = image * (1 + 0.15 * math.sin(2 * math.pi * i / period + phase))
        frames[i] = np.clip(image, 0, 255).astype(np.uint8)
    return frames


def encode_video(frames: np.ndarray, fps: int, codec: str) -> tuple[bytes, str]:
    """Encode frames (T, H, W, 3) uint8 -> (file bytes, extension)."""
    encoder, container_format, pixel_format = CODECS[codec]
    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format=container_format, options=BITEXACT) as container:
        stream = container.add_stream(encoder, rate=Fraction(fps))
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], pixel_format
        if codec == "h264":
            stream.options = {"preset": "ultrafast", "crf": "18"}
        elif codec == "vp9":
            stream.options = {"deadline": "realtime", "cpu-used": "8", "crf": "20", "b": "0"}
        else:
            stream.codec_context.qscale = 3
        for image in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(stream.encode(None))
    return buffer.getvalue(), container_format


def synthesize(out: Path, config: SynthConfig) -> list[Path]:
    """Write the dataset under `out`; returns the video paths. Deterministic from the seed."""
    written = []
    for class_index, name in enumerate(class_names()[: config.classes]):
        folder = out / name
        folder.mkdir(parents=True, exist_ok=True)
        for index in range(config.videos_per_class):
            rng = np.random.default_rng([config.seed, class_index, index])
            data, extension = encode_video(render_video(name, config, rng), config.fps,
                                           config.codec)
            path = folder / f"{name}_{index:04d}.{extension}"
            path.write_bytes(data)
            written.append(path)
    return written
