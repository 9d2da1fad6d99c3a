"""PreprocessConfig: every setting that shapes the shards, validated on construction.

No torch, DALI or Ray. The whole config is written into _manifest.json, and a rerun into an
output folder made with a different config is refused (its shards would not match).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Literal

from preprocessing.validation import check_field_types, require

PayloadFormat = Literal["video", "frames"]
VideoCodec = Literal["vp9", "h264"]

DEFAULT_CRF = {"vp9": 32, "h264": 23}
MAX_CRF = {"vp9": 63, "h264": 51}


@dataclass(frozen=True)
class PreprocessConfig:
    """How sources become shards.

    fps: constant output frame rate. short_side: output short side in pixels (long side keeps
    the aspect ratio; both even). payload: "video" (one encoded file per row) or "frames" (one
    JPEG per frame). codec: for "video", "vp9" (DALI decodes it on CPU and GPU) or "h264"
    (GPU-only fleets). crf: constant-quality value of the codec (None: 32 for VP9, 23 for H.264).
    keyframe_interval: frames per GOP. jpeg_quality: for "frames". min_frames: shorter videos are
    rejected (default 16, one clip). videos_per_shard: rows per Parquet shard; None derives it
    from target_shard_mb and a per-format size estimate. row_group_mb: target row-group size.
    shuffle_seed: the video list is put in a seeded pseudo-random order before it is cut into
    shards (dataset ids sort by class and source video, so shards in id order would each hold a
    few classes); the seed is part of the config and so of the manifest.
    """

    fps: int = 25
    short_side: int = 128
    payload: PayloadFormat = "video"
    codec: VideoCodec = "vp9"
    crf: int | None = None
    keyframe_interval: int = 16
    jpeg_quality: int = 90
    min_frames: int = 16
    videos_per_shard: int | None = None
    target_shard_mb: int = 256
    row_group_mb: int = 32
    shuffle_seed: int = 0

    def __post_init__(self) -> None:
        check_field_types(self)
        if self.crf is None:  # the codec's default quality
            object.__setattr__(self, "crf", DEFAULT_CRF[self.codec])
        ranges = {
            "fps": (1, 240), "short_side": (16, 2160), "crf": (0, MAX_CRF[self.codec]),
            "keyframe_interval": (1, 1000), "jpeg_quality": (1, 100), "min_frames": (1, None),
            "target_shard_mb": (1, None), "row_group_mb": (1, None),
            "videos_per_shard": (1, None), "shuffle_seed": (0, None),
        }
        for name, (low, high) in ranges.items():
            value = getattr(self, name)
            bound = f"in {low}..{high}" if high is not None else f">= {low}"
            require(value is None or low <= value <= (high if high is not None else value),
                    f"{name} must be {bound}, got {value}")

    def estimated_video_bytes(self) -> int:
        """A typical row's payload size (a 10 s clip), used to derive videos_per_shard.

        Estimates at short side 128, 25 fps: VP9 crf 32 ~ 30 KB/s, H.264 crf 23 ~ 40 KB/s, JPEG
        q90 ~ 6 KB per frame; scaled by area and frame rate for other settings.
        """
        scale = (self.short_side / 128) ** 2 * self.fps / 25
        per_second = {"vp9": 30_000, "h264": 40_000}[self.codec] if self.payload == "video" \
            else 6_000 * 25
        return max(1, int(10 * per_second * scale))

    def shard_size(self) -> int:
        """Videos per shard: the configured value, else target size / estimated row size."""
        if self.videos_per_shard is not None:
            return self.videos_per_shard
        return max(1, self.target_shard_mb * 2**20 // self.estimated_video_bytes())

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)
