"""Transcoding real videos in several codecs, frame rates, rotations; bad inputs get reasons."""

from __future__ import annotations

import numpy as np
import pytest
from media import grey_level, stream_count, truncate, write_audio_only, write_video

from preprocessing.config import PreprocessConfig
from preprocessing.transcode import VideoRejected, decode_payload_frames, output_size, transcode

CONFIG = PreprocessConfig(min_frames=4)


def nearest_source_levels(count: int, source_fps: float, fps: int = 25) -> list[int]:
    """Grey level of the source frame ffmpeg's fps filter shows in each output slot.

    Source frame i lands in slot round(i * fps / source_fps) (halves away from zero); a slot
    shows the last source frame that landed at or before it.
    """
    def slot(i: int) -> int:
        return int(np.floor(i * fps / source_fps + 0.5))

    levels, i = [], 0
    for n in range(count):
        while slot(i + 1) <= n:
            i += 1
        levels.append(grey_level(i))
    return levels


@pytest.mark.parametrize("codec, fps, frames", [
    ("h264", 25, 30), ("mpeg4", 30, 36), ("vp9", 12, 15), ("mjpeg", 50, 40),
])
@pytest.mark.parametrize("payload", ["video", "frames"])
def test_source_codecs_and_frame_rates_become_constant_rate_payloads(tmp_path, codec, fps,
                                                                      frames, payload):
    source = write_video(tmp_path / "src", codec, fps=fps, frames=frames)
    result = transcode(source, PreprocessConfig(min_frames=4, payload=payload))
    assert result.num_frames == round(frames / fps * 25)
    assert (result.width, result.height) == (170, 128)  # 64x48 scaled to short side 128, even
    assert result.source_codec in {"h264", "mpeg4", "vp9", "libvpx-vp9", "mjpeg"}
    decoded = decode_payload_frames(result.payload, result.codec)
    assert decoded.shape == (result.num_frames, 128, 170, 3)
    # Each output frame shows the source frame its timestamp selects (lossy codecs: +-4 levels).
    levels = decoded[:, 64, 85, 0].astype(int)
    expected = nearest_source_levels(result.num_frames, fps)
    assert np.abs(levels - np.array(expected)).max() <= 4
    if payload == "video":
        assert stream_count(result.payload) == (1, 0)
        assert result.codec == "vp9"
    else:
        assert result.codec == "jpeg" and all(p[:2] == b"\xff\xd8" for p in result.payload)


def test_variable_frame_rate_source_comes_out_constant(tmp_path):
    times = [0, 40, 120, 140, 300, 320, 340, 400, 560, 600, 640, 700, 720, 760, 800, 960, 1000,
             1040, 1080, 1200]
    source = write_video(tmp_path / "vfr", "h264-mkv", frames=len(times), times_ms=times)
    result = transcode(source, CONFIG)
    assert result.num_frames == 31  # 1.24 s at 25 fps
    levels = decode_payload_frames(result.payload, result.codec)[:, 64, 85, 0].astype(int)
    sources = np.array([grey_level(i) for i in range(len(times))])
    # Every output frame is one of the source frames, in time order, gaps filled by repeats.
    picked = np.abs(levels[:, None] - sources[None]).argmin(1)
    assert np.abs(levels - sources[picked]).max() <= 4
    assert (np.diff(picked) >= 0).all() and picked[0] == 0 and picked[-1] == len(times) - 1
    for n, index in enumerate(picked):  # each pick is a source frame shown near that time
        assert abs(times[index] - 40 * n) <= 160


@pytest.mark.parametrize("rotation, stripe_side", [(90, "left"), (-90, "right"), (180, "bottom"),
                                                   (None, "top")])
def test_rotation_metadata_is_honoured(tmp_path, rotation, stripe_side):
    source = write_video(tmp_path / "rot", "h264", rotation=rotation, width=64, height=48)
    result = transcode(source, CONFIG)
    frame = decode_payload_frames(result.payload, result.codec)[0, :, :, 0].astype(int)
    quarter = rotation in (90, -90)
    assert (result.width, result.height) == ((128, 170) if quarter else (170, 128))
    sides = {"left": frame[:, :4], "right": frame[:, -4:], "top": frame[:4], "bottom": frame[-4:]}
    assert sides[stripe_side].mean() > 240
    assert all(region.mean() < 100 for side, region in sides.items() if side != stripe_side)


def test_audio_is_dropped(tmp_path):
    source = write_video(tmp_path / "with_audio", "h264", audio=True)
    assert stream_count(source.read_bytes()) == (1, 1)
    assert stream_count(transcode(source, CONFIG).payload) == (1, 0)


def test_h264_output_and_frame_range(tmp_path):
    source = write_video(tmp_path / "src", "h264", frames=40)
    result = transcode(source, PreprocessConfig(min_frames=4, codec="h264"),
                       frame_range=(10, 29))
    assert result.codec == "h264" and result.num_frames == 20
    levels = decode_payload_frames(result.payload, "h264")[:, 64, 85, 0].astype(int)
    assert np.abs(levels - np.array([grey_level(i) for i in range(10, 30)])).max() <= 4


def test_output_size_keeps_aspect_and_even_sides():
    assert output_size(320, 240, 128) == (170, 128)
    assert output_size(240, 320, 128) == (128, 170)
    assert output_size(1920, 1080, 128) == (228, 128)
    assert output_size(100, 100, 128) == (128, 128)


def written(path, data: bytes):
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("make, reason", [
    (lambda d: written(d / "zero.mp4", b""), "empty file"),
    (lambda d: written(d / "junk.mp4", b"not a video " * 50), "not a readable video container"),
    (lambda d: d / "absent.mp4", "missing file"),
    (lambda d: d, "unreadable path"),
    (lambda d: write_audio_only(d / "sound"), "no video stream"),
    (lambda d: write_video(d / "short", "h264", frames=3), "too short"),
    (lambda d: truncate(write_video(d / "whole", "h264-mkv", frames=60), 0.5, d / "cut"),
     "truncated"),
    (lambda d: truncate(write_video(d / "whole", "h264", frames=60), 0.5, d / "cut"),
     "not a readable video container"),
])
def test_bad_inputs_are_rejected_with_a_reason(tmp_path, make, reason):
    with pytest.raises(VideoRejected, match=reason):
        transcode(make(tmp_path), CONFIG)


def test_an_audio_track_longer_than_the_video_is_no_truncation(tmp_path):
    # Matroska / WebM declare no video stream duration; the container's is the longest
    # stream's, here the audio's (yt-dlp downloads often look like this).
    source = write_video(tmp_path / "long audio", "h264-mkv", frames=50, audio=True,
                         audio_seconds=4.0)
    assert transcode(source, CONFIG).num_frames > 0
    cut = truncate(write_video(tmp_path / "whole", "h264-mkv", frames=60, audio=True), 0.5,
                   tmp_path / "cut")
    with pytest.raises(VideoRejected, match="truncated"):
        transcode(cut, CONFIG)


def test_transcoding_is_deterministic(tmp_path):
    source = write_video(tmp_path / "src", "mpeg4", frames=30)
    for payload in ("video", "frames"):
        config = PreprocessConfig(min_frames=4, payload=payload)
        assert transcode(source, config).payload == transcode(source, config).payload
