"""Tiny real videos for tests, written with PyAV. Pixels encode the source frame index.

Frame i is a uniform grey of level `grey_level(i)` with a white stripe along its top rows (so a
rotation shows up), encoded by a real codec into a real container.
"""

from __future__ import annotations

import io
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

ENCODERS = {  # name -> (encoder, container format, pixel format, extension)
    "h264": ("libx264", "mp4", "yuv420p", "mp4"),
    "mpeg4": ("mpeg4", "avi", "yuv420p", "avi"),
    "vp9": ("libvpx-vp9", "webm", "yuv420p", "webm"),
    "mjpeg": ("mjpeg", "avi", "yuvj420p", "avi"),
    "h264-mkv": ("libx264", "matroska", "yuv420p", "mkv"),
}


def grey_level(index: int) -> int:
    return 16 + (index * 9) % 224


def source_frame(index: int, width: int, height: int) -> np.ndarray:
    image = np.full((height, width, 3), grey_level(index), dtype=np.uint8)
    image[: max(2, height // 8)] = 255
    return image


def write_video(path: Path, codec: str = "h264", fps: float = 25, frames: int = 30,
                width: int = 64, height: int = 48, rotation: int | None = None,
                times_ms: list[int] | None = None, audio: bool = False,
                audio_seconds: float | None = None) -> Path:
    """Write a test video; times_ms gives variable frame times (needs a -mkv codec); audio:
    a silent track as long as the video, or audio_seconds long."""
    encoder, container_format, pixel_format, extension = ENCODERS[codec]
    path = path.with_suffix("." + extension)
    with av.open(str(path), mode="w", format=container_format) as container:
        stream = container.add_stream(encoder, rate=Fraction(fps).limit_denominator(1000))
        stream.width, stream.height, stream.pix_fmt = width, height, pixel_format
        if codec.startswith("h264"):
            stream.options = {"preset": "ultrafast", "crf": "10", "bf": "0"}
        elif codec == "vp9":
            stream.options = {"deadline": "realtime", "cpu-used": "8", "crf": "10", "b": "0"}
        else:  # mpeg4, mjpeg: near-lossless so grey levels survive
            stream.bit_rate = 20_000_000
        if times_ms is not None:
            stream.codec_context.time_base = Fraction(1, 1000)
        if rotation is not None:
            stream.set_display_rotation(rotation)
        audio_stream = container.add_stream("aac", rate=16000) if audio else None
        for i in range(frames):
            frame = av.VideoFrame.from_ndarray(source_frame(i, width, height), format="rgb24")
            if times_ms is not None:
                frame.pts, frame.time_base = times_ms[i], Fraction(1, 1000)
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
        if audio_stream is not None:
            write_silence(container, audio_stream,
                          frames / fps if audio_seconds is None else audio_seconds)
    return path


def write_silence(container, stream, seconds: float) -> None:
    """Encode `seconds` of 16 kHz mono silence into an audio stream."""
    samples = int(16000 * seconds)
    for start in range(0, samples, 1024):
        chunk = np.zeros((1, min(1024, samples - start)), dtype=np.float32)
        frame = av.AudioFrame.from_ndarray(chunk, format="fltp", layout="mono")
        frame.sample_rate, frame.pts = 16000, start
        container.mux(stream.encode(frame))
    container.mux(stream.encode(None))


def write_audio_only(path: Path, seconds: float = 1.0) -> Path:
    path = path.with_suffix(".m4a")
    with av.open(str(path), mode="w", format="mp4") as container:
        write_silence(container, container.add_stream("aac", rate=16000), seconds)
    return path


def truncate(path: Path, keep: float, out: Path) -> Path:
    data = path.read_bytes()
    out = out.with_suffix(path.suffix)
    out.write_bytes(data[: int(len(data) * keep)])
    return out


def stream_count(payload: bytes) -> tuple[int, int]:
    """(video streams, audio streams) of an encoded payload."""
    with av.open(io.BytesIO(payload)) as container:
        return len(container.streams.video), len(container.streams.audio)


def write_frames(path: Path, frames: np.ndarray, codec: str = "mjpeg", fps: int = 25) -> Path:
    """Encode given RGB frames (T, H, W, 3) uint8 with a near-lossless setting."""
    encoder, container_format, pixel_format, extension = ENCODERS[codec]
    path = path.with_suffix("." + extension)
    with av.open(str(path), mode="w", format=container_format) as container:
        stream = container.add_stream(encoder, rate=fps)
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], pixel_format
        stream.bit_rate = 50_000_000
        if codec.startswith("h264"):
            stream.options = {"preset": "ultrafast", "crf": "0"}
        for image in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(stream.encode(None))
    return path
