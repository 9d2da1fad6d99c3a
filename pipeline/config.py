"""AugmentConfig: the controllable augmentations of DESIGN section 2, typed and validated.

numpy-free and DALI-free. Ranges follow the paper (Sec. 3.2, Table 5): brightness, contrast and
saturation factors 1 +- 0.4, hue shift +- 0.1 (fraction of the colour circle), blur sigma
[0.1, 2.0]; each range is cut into equal bins (4, 4, 4, 2, 4 -> 512 intensity levels) and a
level is one bin per parameter.
"""

from __future__ import annotations

from dataclasses import dataclass
from math import prod
from typing import Literal

from preprocessing.validation import check_field_types, require

# Normalisation of the output frames (Kinetics statistics, as torchvision's video models use),
# applied to RGB in [0, 1]: (x - MEAN) / STD.
MEAN = (0.43216, 0.394666, 0.37645)
STD = (0.22803, 0.22145, 0.216989)


@dataclass(frozen=True)
class AugmentConfig:
    """View sampling and intensity levels.

    clip_frames: L, frames per view. num_clips: K local clips. frame_stride: s, the temporal
    stride of a local clip. clip_extent: "stride" (clips of L frames with stride frame_stride)
    or "segment" (the stride adapts to each video: the largest whose clip fits in one of its K
    segments, T // (K L), so the K clips cover the video; evaluation clips use the same stride).
    clip_placement: "inside" (a clip that fits in its segment lies inside it, start uniform over
    those positions; where it does not fit, the paper's rule) or "centre" (the paper's rule, Sec.
    3.1, for every clip: the centre uniform in the segment, the clip shifted as little as needed
    to lie in [0, T), so clips may cross segment borders). With T = K L s, "inside" leaves each
    clip one position (no temporal jitter; the 64-frame benchmark), "centre" a segment's width.
    size: output side (112). global_area / local_area: area fraction of
    the global box in the frame, and of each local box in the global box. aspect: width/height
    range of boxes, in pixels. flip_probability: per view, independently. brightness, contrast,
    saturation: half-widths of the factor ranges around 1; hue: half-width of the shift range;
    blur_sigma: (min, max). level_bins: bins per parameter, in the order brightness, contrast,
    saturation, hue, blur. levels_per_batch: intensity levels drawn per iteration (the paper's
    32; fewer for small batches so that each level holds views of two or more videos).
    jitter / blur: off gives identity values (factors 1, shifts 0, sigma 0) and level 0.
    """

    clip_frames: int = 16
    num_clips: int = 4
    frame_stride: int = 1
    clip_extent: Literal["stride", "segment"] = "stride"
    clip_placement: Literal["inside", "centre"] = "inside"
    size: int = 112
    global_area: tuple[float, float] = (0.8, 1.0)
    local_area: tuple[float, float] = (0.2, 1.0)
    aspect: tuple[float, float] = (3 / 4, 4 / 3)
    flip_probability: float = 0.5
    brightness: float = 0.4
    contrast: float = 0.4
    saturation: float = 0.4
    hue: float = 0.1
    blur_sigma: tuple[float, float] = (0.1, 2.0)
    level_bins: tuple[int, int, int, int, int] = (4, 4, 4, 2, 4)
    levels_per_batch: int = 32
    jitter: bool = True
    blur: bool = True

    def __post_init__(self) -> None:
        check_field_types(self)
        for name in ("clip_frames", "num_clips", "frame_stride", "size", "levels_per_batch"):
            value = getattr(self, name)
            require(value >= 1, f"{name} must be >= 1, got {value!r}")
        for name in ("global_area", "local_area"):
            low, high = getattr(self, name)
            require(0 < low <= high <= 1, f"{name} must satisfy 0 < min <= max <= 1")
        require(0 < self.aspect[0] <= self.aspect[1], "aspect must satisfy 0 < min <= max")
        require(0 <= self.flip_probability <= 1, "flip_probability must be in [0, 1]")
        for name in ("brightness", "contrast", "saturation"):
            require(0 <= getattr(self, name) < 1, f"{name} must be in [0, 1)")
        require(0 <= self.hue <= 0.5, "hue must be in [0, 0.5]")
        require(0 < self.blur_sigma[0] <= self.blur_sigma[1], "blur_sigma must satisfy "
                                                              "0 < min <= max")
        require(all(b >= 1 for b in self.level_bins),
                "level_bins needs five counts >= 1 (brightness, contrast, saturation, hue, "
                "blur)")

    @property
    def num_levels(self) -> int:
        return prod(self.level_bins)

    @property
    def views_per_video(self) -> int:
        """The global view and the K local clips."""
        return 1 + self.num_clips
