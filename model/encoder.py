"""R3D-18, the video encoder, used twice with one set of weights: f on clips, f' on the global view.

Pure torch. Architecture (the paper's setting, Hara et al. 3D ResNet-18):

    stem    conv (3,7,7) stride (1,2,2), BN, ReLU, max-pool (1,3,3) stride (1,2,2)
    layer1  2 BasicBlocks, width w,   stride (1,1,1)
    layer2  2 BasicBlocks, width 2w,  stride (2,2,2)
    layer3  2 BasicBlocks, width 4w,  stride (2,2,2)    f': temporal stride 1
    layer4  2 BasicBlocks, width 8w,  stride (2,2,2)    f': temporal stride 1

For a (B, 3, 16, 112, 112) input, f yields (B, 512, 2, 4, 4) and f' yields (B, 512, 8, 4, 4).
f and f' are the same modules: a stride is a property of the call, not a weight, so the global
view is encoded by running the last `global_unstrided_stages` stages with temporal stride 1.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

STAGE_STRIDES = ((1, 1), (2, 2), (2, 2), (2, 2))  # (temporal, spatial) stride of each stage
STAGE_WIDTHS = (1, 2, 4, 8)  # multiples of the base width
BLOCKS_PER_STAGE = 2


class BasicBlock(nn.Module):
    """Two 3x3x3 convolutions with a residual connection; the first may stride.

    The temporal stride is chosen per call so the same weights serve f (strided) and f'.
    """

    def __init__(self, in_channels: int, out_channels: int, temporal_stride: int,
                 spatial_stride: int) -> None:
        super().__init__()
        self.temporal_stride = temporal_stride
        self.spatial_stride = spatial_stride
        self.conv1 = nn.Conv3d(in_channels, out_channels, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm3d(out_channels)
        self.conv2 = nn.Conv3d(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm3d(out_channels)
        self.downsample: nn.Sequential | None = None
        if in_channels != out_channels or temporal_stride != 1 or spatial_stride != 1:
            self.downsample = nn.Sequential(
                nn.Conv3d(in_channels, out_channels, 1, bias=False), nn.BatchNorm3d(out_channels)
            )

    def forward(self, x: Tensor, keep_time: bool = False) -> Tensor:
        """x (B, C_in, T, H, W) -> (B, C_out, T', H', W'); keep_time forces temporal stride 1."""
        stride = (1 if keep_time else self.temporal_stride, self.spatial_stride,
                  self.spatial_stride)
        out = F.conv3d(x, self.conv1.weight, stride=stride, padding=1)
        out = F.relu(self.bn1(out), inplace=True)
        out = self.bn2(self.conv2(out))
        if self.downsample is None:
            identity = x
        else:
            conv, bn = self.downsample
            identity = bn(F.conv3d(x, conv.weight, stride=stride))
        return F.relu(out + identity, inplace=True)


class R3D18(nn.Module):
    """3D ResNet-18 with a clip mode (f) and a video mode (f') sharing every parameter.

    Args:
        width: channels of layer1 (64 in the paper); the output has 8 * width channels.
        global_unstrided_stages: number of final stages that f' runs with temporal stride 1
            (2 = layer3 and layer4, the paper's T_v = 8 for 16 frames).
    """

    def __init__(self, width: int = 64, global_unstrided_stages: int = 2) -> None:
        super().__init__()
        if not 0 <= global_unstrided_stages <= 3:
            raise ValueError(
                f"global_unstrided_stages must be in 0..3 (layer1 never strides), "
                f"got {global_unstrided_stages}"
            )
        self.width = width
        self.global_unstrided_stages = global_unstrided_stages
        self.stem = nn.Sequential(
            nn.Conv3d(3, width, (3, 7, 7), stride=(1, 2, 2), padding=(1, 3, 3), bias=False),
            nn.BatchNorm3d(width),
            nn.ReLU(inplace=True),
            nn.MaxPool3d((1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1)),
        )
        stages = []
        in_channels = width
        for (t_stride, s_stride), multiple in zip(STAGE_STRIDES, STAGE_WIDTHS, strict=True):
            out_channels = width * multiple
            blocks = [BasicBlock(in_channels, out_channels, t_stride, s_stride)]
            blocks += [BasicBlock(out_channels, out_channels, 1, 1)
                       for _ in range(BLOCKS_PER_STAGE - 1)]
            stages.append(nn.ModuleList(blocks))
            in_channels = out_channels
        self.stages = nn.ModuleList(stages)
        self._init_weights()

    @property
    def feature_dim(self) -> int:
        return self.width * STAGE_WIDTHS[-1]

    def _init_weights(self) -> None:
        for module in self.modules():
            if isinstance(module, nn.Conv3d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm3d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def _forward(self, x: Tensor, unstrided_stages: int) -> Tensor:
        if x.ndim != 5 or x.shape[1] != 3:
            raise ValueError(f"expected frames of shape (B, 3, T, H, W), got {tuple(x.shape)}")
        x = self.stem(x)  # (B, w, T, H/4, W/4)
        first_unstrided = len(self.stages) - unstrided_stages
        for index, stage in enumerate(self.stages):
            keep_time = index >= first_unstrided
            for block in stage:
                x = block(x, keep_time=keep_time)
        return x

    def forward_clip(self, x: Tensor) -> Tensor:
        """f: local clips (B, 3, 16, 112, 112) -> feature map (B, 8w, 2, 4, 4)."""
        return self._forward(x, unstrided_stages=0)

    def forward_global(self, x: Tensor) -> Tensor:
        """f': global view (B, 3, 16, 112, 112) -> feature map (B, 8w, 8, 4, 4) by default."""
        return self._forward(x, unstrided_stages=self.global_unstrided_stages)

    forward = forward_clip

    def feature_grid(self, input_size: tuple[int, int, int] = (16, 112, 112),
                     view: str = "clip") -> tuple[int, int, int]:
        """Predict the (T, H, W) feature grid for an input of (frames, height, width).

        view is "clip" (f) or "global" (f'). Uses the convolution output-size formula for every
        strided layer, so it agrees with the real forward pass for any input size.
        """
        if view not in ("clip", "global"):
            raise ValueError(f"view must be 'clip' or 'global', got {view!r}")
        unstrided = 0 if view == "clip" else self.global_unstrided_stages
        t, h, w = input_size

        def out(n: int, kernel: int, stride: int, padding: int) -> int:
            return (n + 2 * padding - kernel) // stride + 1

        # stem conv (3,7,7)/(1,2,2) pad (1,3,3), then max-pool (1,3,3)/(1,2,2) pad (0,1,1)
        t, h, w = out(t, 3, 1, 1), out(h, 7, 2, 3), out(w, 7, 2, 3)
        h, w = out(h, 3, 2, 1), out(w, 3, 2, 1)
        first_unstrided = len(STAGE_STRIDES) - unstrided
        for index, (t_stride, s_stride) in enumerate(STAGE_STRIDES):
            if index < first_unstrided:
                t = out(t, 3, t_stride, 1)
            h, w = out(h, 3, s_stride, 1), out(w, 3, s_stride, 1)
        if min(t, h, w) < 1:
            raise ValueError(f"input {input_size} is too small for R3D-18")
        return t, h, w


def pool_features(feature_map: Tensor) -> Tensor:
    """Global average pool: (..., C, T, H, W) -> (..., C)."""
    return feature_map.mean(dim=(-3, -2, -1))


__all__ = ["R3D18", "BasicBlock", "pool_features"]
