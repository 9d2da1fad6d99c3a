"""Typed, validated configuration of the model (encoder and heads) and of the objective.

Both dataclasses check every field's type and range when constructed, so a bad value fails
before any work starts. Every row of the paper's Table 7 (which objectives are on), every head
of Table 6 and every global temporal resolution of Table 4 is a value here, not a code change.
Values that can be derived (feature grids, feature width) are computed, never configured.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from preprocessing.validation import check_field_types, require

TemporalHeadKind = Literal["mlp", "gru", "gru_mlp", "vcop"]
ContrastKind = Literal["region", "clip", "none"]


@dataclass(frozen=True)
class ModelConfig:
    """The encoder and the heads that sit on its features.

    width: channels of the first R3D-18 stage; stages have width x (1, 2, 4, 8), so the feature
        dimension is 8 * width (512 for the paper's 64). Smaller widths are for CPU demos.
    global_unstrided_stages: how many of the last stages (layer4, then layer3, then layer2) of the
        global-view encoder f' keep temporal stride 1. For 16 input frames: 0 -> T_v = 2 (f' = f),
        1 -> T_v = 4, 2 -> T_v = 8 (the paper's default); these are Table 4's T_v column.
    num_clips: K, local clips per video (the temporal heads are sized for it).
    projection_hidden_dim, projection_dim: the per-location projection head, 1x1x1 convs
        (8*width -> hidden -> dim) followed by L2 normalisation. The paper gives no head;
        512 -> 512 -> 128 is the shape of the MoCo v2 head (hidden = feature width, 128 out)
        applied to R3D-18's 512-d features.
    mine_hidden_dim: hidden width of the MINE statistics network G_theta (the paper: a two-layer
        MLP, width not given; 512 matches the feature width).
    temporal_head: G_psi of Table 6: "mlp", "gru" (default), "gru_mlp" or "vcop".
    temporal_hidden_dim: hidden width of the temporal head (GRU state and MLP layers).
    """

    width: int = 64
    global_unstrided_stages: int = 2
    num_clips: int = 4
    projection_hidden_dim: int = 512
    projection_dim: int = 128
    mine_hidden_dim: int = 512
    temporal_head: TemporalHeadKind = "gru"
    temporal_hidden_dim: int = 512

    def __post_init__(self) -> None:
        check_field_types(self)
        require(self.width >= 1, f"width must be >= 1, got {self.width}")
        require(
            0 <= self.global_unstrided_stages <= 3,
            f"global_unstrided_stages must be in 0..3, got {self.global_unstrided_stages}",
        )
        require(self.num_clips >= 1, f"num_clips must be >= 1, got {self.num_clips}")
        require(
            self.num_clips <= 8,
            f"num_clips must be <= 8 (temporal heads enumerate K! orders), got {self.num_clips}",
        )
        for name in ("projection_hidden_dim", "projection_dim", "mine_hidden_dim",
                     "temporal_hidden_dim"):
            require(getattr(self, name) >= 1, f"{name} must be >= 1, got {getattr(self, name)}")

    @property
    def feature_dim(self) -> int:
        """Channels of the encoder's last stage (512 for width 64)."""
        return 8 * self.width


@dataclass(frozen=True)
class LossConfig:
    """Which objectives are on, and how they are weighted.

    contrast: "region" (L_rc, soft spatio-temporal region contrast, Eqs. 3-4), "clip" (L_nce, the
        clip-level InfoNCE baseline of Table 7 row 1) or "none".
    temperature: tau of the contrastive softmax. The paper does not give it; 0.07 is the value of
        the InfoNCE formulations it builds on (Wu et al. [68], MoCo [26]).
    mi: L_mi on/off (MINE-based low-level shortcut elimination, Eqs. 5-6).
    grl_scale: gradient-reversal factor between G_theta and the encoder (not in the paper;
        1.0, a plain reversal).
    mine_ema_rate: rate of the moving average that corrects the DV bound's gradient bias (MINE's
        own correction; the paper gives no rate, 0.01 is ours).
    td: L_td on/off (local-global temporal order dependency, Eq. 7). The head is
        ModelConfig.temporal_head.
    td_temperature: the temporal head's scores lie in [-1/t, 1/t] (the "gru" head's cosine
        temperature), which keeps the DV bound of L_td finite (see model.temporal). Not in the
        paper (which scores with a plain cosine for "gru"); 0.1 is ours.
    *_weight: w_rc (or w_nce), w_mi, w_td. The paper does not publish weights; 1.0 each.

    Table 7 rows as configs: (contrast, mi, td) = (clip, F, F), (region, F, F), (region, T, F),
    (region, F, T), (clip, T, T), (region, T, T).
    """

    contrast: ContrastKind = "region"
    contrast_weight: float = 1.0
    temperature: float = 0.07
    mi: bool = True
    mi_weight: float = 1.0
    grl_scale: float = 1.0
    mine_ema_rate: float = 0.01
    td: bool = True
    td_weight: float = 1.0
    td_temperature: float = 0.1

    def __post_init__(self) -> None:
        check_field_types(self)
        require(self.temperature > 0, f"temperature must be > 0, got {self.temperature}")
        require(self.td_temperature > 0, f"td_temperature must be > 0, got {self.td_temperature}")
        require(
            0 < self.mine_ema_rate < 1, f"mine_ema_rate must be in (0, 1), got {self.mine_ema_rate}"
        )
        require(self.grl_scale >= 0, f"grl_scale must be >= 0, got {self.grl_scale}")
        for name in ("contrast_weight", "mi_weight", "td_weight"):
            require(getattr(self, name) >= 0, f"{name} must be >= 0, got {getattr(self, name)}")
        require(
            self.contrast != "none" or self.mi or self.td,
            "at least one objective must be on (contrast, mi or td)",
        )
