"""Transcode one source video, any codec PyAV reads, into a shard payload.

No torch, DALI or Ray. The steps are the ones `ffmpeg` would run, through PyAV's bindings to the
same libraries:

    decode (first video stream; audio ignored)
      -> fps=F            constant frame rate (ffmpeg's fps filter: nearest source frame by time,
                          so variable-frame-rate sources come out constant)
      -> transpose/flip   honour the display-rotation metadata, as ffmpeg's autorotate does
      -> scale            short side to S (default 128), long side to keep the aspect ratio, even
      -> encode           "video": VP9 in WebM (default) or H.264 in MP4, one stream, no audio
                          "frames": one JPEG per frame

Frames are counted as they leave the filter graph, i.e. by decoding, never from container
metadata. A file that cannot become a usable payload raises `VideoRejected` with the reason.
A source in an object store (an s3:// / gs:// URI) is first copied to a temporary local file,
deleted after, so every container format reads as from a disk (seeks included).

Encoder settings (documented here, recorded in the manifest through PreprocessConfig):
- keyframe_interval frames per GOP (default 16, one clip): a clip starting anywhere needs at most
  15 frames decoded before it, at a size cost of roughly 10-20% over long GOPs.
- VP9: constant quality crf (default 32, `b:v 0`), deadline "good" at cpu-used 5, no alt-ref
  frames (one packet per displayed frame), one thread (parallelism is across videos, and
  single-threaded encoding is bit-for-bit reproducible, which resumable sharding relies on).
- H.264: libx264 preset veryfast, crf (default 23), no B-frames, one thread.
- JPEG: Pillow, quality 90 (4:2:0), baseline.
"""

from __future__ import annotations

import io
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import av.filter
import numpy as np
from PIL import Image

from preprocessing.config import PreprocessConfig
from preprocessing.storage import Folder, is_uri

# Muxers write random ids and version strings unless asked to be reproducible.
BITEXACT = {"fflags": "+bitexact"}

# A decoded duration shorter than this share of the declared one means the file was cut off.
TRUNCATION_TOLERANCE = 0.9


class VideoRejected(Exception):
    """This input cannot be sharded; the message is the reason recorded in _rejected.parquet.
    `retryable` when the source could not be read, as opposed to read and found unusable."""

    def __init__(self, reason: str, retryable: bool = False) -> None:
        super().__init__(reason)
        self.retryable = retryable


@dataclass(frozen=True)
class Transcoded:
    """A shard payload and what was measured while producing it."""

    payload: bytes | list[bytes]  # "video": the encoded file; "frames": one JPEG per frame
    num_frames: int
    height: int
    width: int
    codec: str  # "vp9", "h264" or "jpeg"
    source_codec: str


def output_size(width: int, height: int, short_side: int) -> tuple[int, int]:
    """(width, height) with the short side = short_side, aspect kept, both even."""
    def even(x: float) -> int:
        return max(2, int(round(x / 2)) * 2)

    if width <= height:
        return even(short_side), even(height * short_side / width)
    return even(width * short_side / height), even(short_side)


def _rotation_filters(rotation: float) -> list[tuple[str, str]]:
    """Filters that display a frame upright; rotation is counter-clockwise degrees (PyAV)."""
    turn = int(round(rotation)) % 360
    if turn == 90:
        return [("transpose", "cclock")]
    if turn == 180:
        return [("hflip", ""), ("vflip", "")]
    if turn == 270:
        return [("transpose", "clock")]
    return []


class _Encoder:
    """Receives the filtered frames one at a time and builds the payload."""

    def __init__(self, config: PreprocessConfig, width: int, height: int) -> None:
        self.config = config
        self.count = 0
        self.jpegs: list[bytes] = []
        self.buffer = io.BytesIO()
        self.container = None
        if config.payload == "video":
            self._open_video(width, height)

    def _open_video(self, width: int, height: int) -> None:
        config = self.config
        if config.codec == "vp9":
            self.container = av.open(self.buffer, mode="w", format="webm", options=BITEXACT)
            stream = self.container.add_stream("libvpx-vp9", rate=Fraction(config.fps))
            stream.options = {
                "crf": str(config.crf), "b": "0", "deadline": "good", "cpu-used": "5",
                "auto-alt-ref": "0", "g": str(config.keyframe_interval), "threads": "1",
                "row-mt": "0", "flags": "+bitexact",
            }
        else:
            self.container = av.open(self.buffer, mode="w", format="mp4", options=BITEXACT)
            stream = self.container.add_stream("libx264", rate=Fraction(config.fps))
            stream.options = {
                "crf": str(config.crf), "preset": "veryfast", "bf": "0",
                "g": str(config.keyframe_interval), "threads": "1", "flags": "+bitexact",
            }
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        self.stream = stream

    def add(self, frame: av.VideoFrame) -> None:
        frame.pts = self.count
        frame.time_base = Fraction(1, self.config.fps)
        self.count += 1
        if self.container is None:
            image = Image.fromarray(frame.to_ndarray(format="rgb24"))
            out = io.BytesIO()
            image.save(out, format="JPEG", quality=self.config.jpeg_quality)
            self.jpegs.append(out.getvalue())
        else:
            self.container.mux(self.stream.encode(frame))

    def finish(self) -> bytes | list[bytes]:
        if self.container is None:
            return self.jpegs
        self.container.mux(self.stream.encode(None))
        self.container.close()
        return self.buffer.getvalue()


def _check_readable(path: Path) -> None:
    try:
        size = path.stat().st_size
        with open(path, "rb") as handle:
            handle.read(1)
    except FileNotFoundError:
        raise VideoRejected("missing file", retryable=True) from None
    except OSError as error:
        raise VideoRejected(f"unreadable path: {error.strerror or error}",
                            retryable=True) from None
    if size == 0:
        raise VideoRejected("empty file (0 bytes)")


def _reason(error: av.FFmpegError) -> str:
    """FFmpeg's message without the file name (the rejection records the source's location;
    a temporary copy's name would mean nothing)."""
    return f"[Errno {error.errno}] {error.strerror}" if error.strerror else str(error)


@contextmanager
def _local_source(location: Path | str) -> Iterator[Path]:
    """The source as a readable local file: `location` itself, or a temporary copy of an
    object-store file; VideoRejected when it is missing, empty or unreadable."""
    if not is_uri(location):
        _check_readable(Path(location))
        yield Path(location)
        return
    with tempfile.TemporaryDirectory(prefix="ctrlaug-source-") as scratch:
        try:
            source = Folder(location)  # the object itself: its name is ""
            local = Path(scratch) / source.name
            if not source.is_file(""):
                raise VideoRejected("missing file", retryable=True)
            source.download("", local)
        except OSError as error:
            raise VideoRejected(f"unreadable object: {error}", retryable=True) from None
        _check_readable(local)
        yield local


def _declared_seconds(container: av.container.InputContainer, stream: av.video.VideoStream
                      ) -> float | None:
    """How long the video stream says it is: its duration, else its DURATION tag (Matroska /
    WebM, "HH:MM:SS.fraction"), else the container's when the video is its only stream (the
    container's is the longest stream's: an audio track longer than the video is no
    truncation)."""
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    tag = next((value for key, value in stream.metadata.items() if key.upper() == "DURATION"),
               None)
    if tag:
        try:
            hours, minutes, seconds = tag.split(":")
            return int(hours) * 3600 + int(minutes) * 60 + float(seconds)
        except ValueError:
            pass
    if container.duration is not None and len(container.streams) == 1:
        return container.duration / av.time_base
    return None


def transcode(path: Path | str, config: PreprocessConfig,
              frame_range: tuple[int, int] | None = None) -> Transcoded:
    """Transcode `path` (a local path or an object-store URI) per `config`; frame_range =
    (first, last) source frames, inclusive.

    Raises VideoRejected with the reason when the file is missing, empty, unreadable, has no
    video stream, fails to decode, is truncated, or yields fewer than config.min_frames frames.
    """
    with _local_source(path) as local:
        return _transcode_file(local, config, frame_range)


def _transcode_file(path: Path, config: PreprocessConfig,
                    frame_range: tuple[int, int] | None) -> Transcoded:
    try:
        container = av.open(str(path), metadata_errors="ignore")
    except av.FFmpegError as error:
        raise VideoRejected(f"not a readable video container: {_reason(error)}") from None
    with container:
        if not container.streams.video:
            raise VideoRejected("no video stream (audio-only or not a video)")
        stream = container.streams.video[0]
        source_codec = stream.codec_context.name
        graph = encoder = None
        first_time = last_time = None
        index = -1
        try:
            for frame in container.decode(stream):
                index += 1
                if frame_range is not None and not frame_range[0] <= index <= frame_range[1]:
                    continue
                if graph is None:
                    graph, (width, height) = _build_graph(frame, stream, config)
                    encoder = _Encoder(config, width, height)
                if frame.time is not None:
                    first_time = frame.time if first_time is None else first_time
                    last_time = frame.time
                graph.vpush(frame)
                _drain(graph, encoder)
        except av.FFmpegError as error:
            raise VideoRejected(f"decode error after {index + 1} frames: {_reason(error)}"
                                ) from None
        if graph is None:
            raise VideoRejected("no decodable video frames")
        graph.vpush(None)
        _drain(graph, encoder)
        declared = _declared_seconds(container, stream)
    if frame_range is None and declared and first_time is not None:
        decoded = last_time - first_time + 1 / float(stream.average_rate or config.fps)
        if decoded < TRUNCATION_TOLERANCE * declared - 0.1:
            raise VideoRejected(
                f"truncated: decoded {decoded:.2f}s of the {declared:.2f}s the container declares")
    if encoder.count < config.min_frames:
        raise VideoRejected(
            f"too short: {encoder.count} frames at {config.fps} fps, fewer than "
            f"min_frames={config.min_frames}")
    payload = encoder.finish()
    return Transcoded(payload=payload, num_frames=encoder.count, height=height, width=width,
                      codec="jpeg" if config.payload == "frames" else config.codec,
                      source_codec=source_codec)


def _build_graph(first: av.VideoFrame, stream: av.video.VideoStream, config: PreprocessConfig
                 ) -> tuple[av.filter.Graph, tuple[int, int]]:
    """fps -> rotation -> scale -> pixel format, configured from the first decoded frame."""
    rotation = first.rotation or 0.0
    filters = [("fps", str(config.fps)), *_rotation_filters(rotation)]
    quarter_turn = int(round(rotation)) % 360 in (90, 270)
    upright = (first.height, first.width) if quarter_turn else (first.width, first.height)
    width, height = output_size(*upright, config.short_side)
    pixel_format = "yuv420p" if config.payload == "video" else "rgb24"
    # State both colour ranges: buffer sources do not carry the frame's range, and a full-range
    # (JPEG-style, e.g. MJPEG) source would otherwise be taken as limited range.
    full_range = first.format.name.startswith("yuvj") or first.color_range == 2
    in_range = "pc" if full_range else "tv"
    out_range = "tv" if config.payload == "video" else "pc"
    filters += [("scale", f"{width}:{height}:in_range={in_range}:out_range={out_range}"),
                ("format", pixel_format)]
    graph = av.filter.Graph()
    node = graph.add_buffer(width=first.width, height=first.height, format=first.format.name,
                            time_base=stream.time_base or Fraction(1, 1000))
    head = node
    for name, argument in filters:
        nxt = graph.add(name, argument) if argument else graph.add(name)
        head.link_to(nxt)
        head = nxt
    head.link_to(graph.add("buffersink"))
    graph.configure()
    return graph, (width, height)


def _drain(graph: av.filter.Graph, encoder: _Encoder) -> None:
    while True:
        try:
            encoder.add(graph.vpull())
        except (av.BlockingIOError, av.EOFError):
            return


def decode_payload_frames(payload: bytes | list[bytes], codec: str) -> np.ndarray:
    """Decode a shard payload back to RGB frames (N, H, W, 3) uint8 (verification, tests)."""
    if codec == "jpeg":
        return np.stack([np.asarray(Image.open(io.BytesIO(jpeg)).convert("RGB"))
                         for jpeg in payload])
    with av.open(io.BytesIO(payload)) as container:
        return np.stack([frame.to_ndarray(format="rgb24")
                         for frame in container.decode(container.streams.video[0])])
