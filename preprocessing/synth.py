"""A synthetic action dataset whose classes are carried by motion, not appearance.

No torch, DALI or Ray. Every video shows one textured object moving over a textured background.
The class is how the object moves; everything else is drawn per video from one distribution
shared by all classes (background texture and colours, object texture, colours and size, speed,
period, phase, start position, a slow illumination drift), so a model that keys on appearance
can tell videos apart but not classes. The classes:

    rise    constant upward motion (the object wraps around the frame edge)
    fall    constant downward motion (wraps around)
    slide   constant horizontal motion, left or right at random (wraps around)
    sway    horizontal oscillation
    bob     vertical oscillation
    orbit   circular motion, clockwise or counter-clockwise at random
    pulse   in place, the object grows and shrinks
    still   no motion

Why these: every class is invariant under each augmentation the pretraining applies, so an
augmented view never shows another class's motion. A horizontal flip maps each class to itself
(slide and orbit draw their direction at random, so the mirrored video is just another member
of the class); motion is stationary in time (periods of 12-20 frames, so any 16-frame clip sees
a turn), so a temporal crop keeps the class; colour jitter and blur do not change motion; the
object covers a large share of the frame, so most spatial crops contain it.

Sizes and speeds (SynthConfig) are what made the motion learnable: with an object radius of
20-28% of the short side, moving 2.5-4% of it per frame, supervised training of the
width-8 R3D-18 at 64x64 generalises to held-out videos; a smaller, slower object (radius
13-18%, 1.2-2% per frame) was memorised instead (README, Results).

Output: `OUT/<class>/<class>_<i>.<ext>`, the `folder` dataset layout.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Literal

import av
import numpy as np

from preprocessing.transcode import BITEXACT
from preprocessing.validation import check_field_types, require

_APPEARANCE_STREAM = 1  # mixed into the seed of shared appearances
CLASSES = ("rise", "fall", "slide", "sway", "bob", "orbit", "pulse", "still")
CODECS = {"h264": ("libx264", "mp4", "yuv420p"), "vp9": ("libvpx-vp9", "webm", "yuv420p"),
          "mpeg4": ("mpeg4", "avi", "yuv420p"), "mjpeg": ("mjpeg", "avi", "yuvj420p")}


def class_names() -> list[str]:
    """The motion classes, in label order."""
    return list(CLASSES)


@dataclass(frozen=True)
class SynthConfig:
    """What to write, and the ranges each video's motion is drawn from (uniformly, per video).

    object_radius, speed, amplitude: fractions of the frame's short side (speed per frame, for
    rise, fall and slide; amplitude of sway, bob and orbit). period: frames per oscillation (at
    most 20, so that every 16-frame window shows a turn). pulse: relative size change of pulse.
    appearances: 0 (default) gives every video an appearance of its own (background and object
    textures, colours, object size); N > 0 draws N appearances from the seed and gives each video
    one of them at random, whatever its class, so that appearance recurs across videos (as
    scenes do in real datasets) and no longer identifies a video.
    """

    classes: int = 8
    videos_per_class: int = 8
    frames: int = 48
    width: int = 160
    height: int = 120
    fps: int = 25
    codec: Literal["h264", "vp9", "mpeg4", "mjpeg"] = "h264"
    seed: int = 0
    object_radius: tuple[float, float] = (0.2, 0.28)
    speed: tuple[float, float] = (0.025, 0.04)
    amplitude: tuple[float, float] = (0.2, 0.3)
    period: tuple[float, float] = (12.0, 20.0)
    pulse: float = 0.35
    appearances: int = 0

    def __post_init__(self) -> None:
        check_field_types(self)
        require(1 <= self.classes <= len(CLASSES),
                f"classes must be in 1..{len(CLASSES)}, got {self.classes}")
        require(self.videos_per_class >= 1 and self.frames >= 2,
                "videos_per_class must be >= 1 and frames >= 2")
        require(self.width >= 32 and self.height >= 32 and not self.width % 2
                and not self.height % 2, "width and height must be even and >= 32")
        for name in ("object_radius", "speed", "amplitude", "period"):
            low, high = getattr(self, name)
            require(0 < low <= high, f"{name} must be a range 0 < low <= high, got {low, high}")
        require(self.period[1] <= 20, "period must stay <= 20 frames (a turn in every clip)")
        require(0 <= self.pulse < 1, f"pulse must be in [0, 1), got {self.pulse}")
        require(self.appearances >= 0, f"appearances must be >= 0, got {self.appearances}")


@dataclass(frozen=True)
class Motion:
    """Where the object is in every frame: centre (T, 2) in pixels (x, y) and scale (T,)."""

    centre: np.ndarray
    scale: np.ndarray


def motion(class_name: str, frames: int, width: int, height: int,
           rng: np.random.Generator, config: SynthConfig | None = None) -> Motion:
    """The object's path for one video of the class; speeds and sizes scale with the frame
    (ranges from `config`, default SynthConfig())."""
    if class_name not in CLASSES:
        raise ValueError(f"unknown class {class_name!r}; classes are {', '.join(CLASSES)}")
    config = config or SynthConfig()
    t = np.arange(frames, dtype=float)
    side = min(width, height)
    start = rng.uniform([0.3 * width, 0.3 * height], [0.7 * width, 0.7 * height])
    speed = rng.uniform(*config.speed) * side  # pixels per frame for the constant motions
    amplitude = rng.uniform(*config.amplitude) * side
    period = rng.uniform(*config.period)
    phase = rng.uniform(0, 2 * math.pi)
    wave = np.sin(2 * math.pi * t / period + phase)
    offset = np.zeros((frames, 2))
    scale = np.ones(frames)
    if class_name in ("rise", "fall"):
        offset[:, 1] = (-1 if class_name == "rise" else 1) * speed * t
    elif class_name == "slide":
        offset[:, 0] = rng.choice([-1, 1]) * speed * t
    elif class_name == "sway":
        offset[:, 0] = amplitude * wave
    elif class_name == "bob":
        offset[:, 1] = amplitude * wave
    elif class_name == "orbit":
        angle = rng.choice([-1, 1]) * 2 * math.pi * t / period + phase
        offset = amplitude * np.stack([np.cos(angle), np.sin(angle)], axis=1)
    elif class_name == "pulse":
        scale = 1 + config.pulse * wave
    return Motion(start + offset, scale)


def _texture(rng: np.random.Generator, height: int, width: int, cell: int) -> np.ndarray:
    """Smooth random texture (height, width) in [0, 1]: coarse noise, bilinearly upsampled."""
    coarse = rng.random((height // cell + 2, width // cell + 2))
    ys = np.arange(height) / cell
    xs = np.arange(width) / cell
    y0, x0 = ys.astype(int), xs.astype(int)
    fy, fx = (ys - y0)[:, None], (xs - x0)[None, :]
    top = coarse[y0][:, x0] * (1 - fx) + coarse[y0][:, x0 + 1] * fx
    bottom = coarse[y0 + 1][:, x0] * (1 - fx) + coarse[y0 + 1][:, x0 + 1] * fx
    return top * (1 - fy) + bottom * fy


def _colours(rng: np.random.Generator, avoid: np.ndarray | None = None) -> np.ndarray:
    """Two RGB colours (2, 3); with `avoid` (n, 3), far enough from those to stay visible."""
    for _ in range(50):
        colours = rng.uniform(20, 235, size=(2, 3))
        if avoid is None or np.abs(avoid[:, None] - colours[None]).sum(-1).min() >= 90:
            break
    return colours


def render_video(class_name: str, config: SynthConfig, rng: np.random.Generator) -> np.ndarray:
    """Frames (T, H, W, 3) uint8 of one video of the class."""
    h, w, t = config.height, config.width, config.frames
    side = min(h, w)
    # The appearance: this video's own draws, or one of the config's shared appearances.
    look = rng if config.appearances == 0 else np.random.default_rng(
        [config.seed, _APPEARANCE_STREAM, int(rng.integers(config.appearances))])
    texture = _texture(look, h, w, max(4, side // 10))[..., None]
    background_colours = _colours(look)
    background = texture * background_colours[0] + (1 - texture) * background_colours[1]
    background += look.normal(0, 4, size=(h, w, 3))
    radius = look.uniform(*config.object_radius) * side
    # The object's own texture, in its coordinates (pixels from its centre, unscaled).
    extent = int(2 * radius * 1.4) + 4
    object_texture = _texture(look, extent, extent, max(3, extent // 4))[..., None]
    object_colours = _colours(look, avoid=background_colours)
    pattern = object_texture * object_colours[0] + (1 - object_texture) * object_colours[1]
    path = motion(class_name, t, w, h, rng, config)
    drift_phase, drift_period = rng.uniform(0, 2 * math.pi), rng.uniform(2, 4) * t
    ys, xs = np.mgrid[0:h, 0:w].astype(float)
    frames = np.empty((t, h, w, 3), dtype=np.uint8)
    for i in range(t):
        # Positions wrap around the frame (rise, fall and slide leave one edge, enter the other).
        dx = (xs - path.centre[i, 0] + w / 2) % w - w / 2
        dy = (ys - path.centre[i, 1] + h / 2) % h - h / 2
        r = radius * path.scale[i]
        inside = dx**2 + dy**2 <= r**2
        u = np.clip((dx / path.scale[i] + extent / 2).astype(int), 0, extent - 1)
        v = np.clip((dy / path.scale[i] + extent / 2).astype(int), 0, extent - 1)
        image = np.where(inside[..., None], pattern[v, u], background)
        image = image * (1 + 0.15 * math.sin(2 * math.pi * i / drift_period + drift_phase))
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
    for class_index, name in enumerate(CLASSES[: config.classes]):
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
