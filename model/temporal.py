"""G_psi, the local-global temporal order heads of Table 6, and the permutations they score.

Pure torch. Inputs are pooled encoder features: clips (B, K, D) in some order and, for the
kinds that use it, the global view (B, D).

    mlp      concat(clip_1..clip_K, global) -> MLP -> score                      (B,)
    gru      GRU over the clips; cosine(last state, W global) / temperature     (B,)
    gru_mlp  GRU over the clips; concat(last state, global) -> MLP -> score       (B,)
    vcop     the VCOP baseline [71]: no global view; pairwise clip relations ->
             logits over all K! orders                                          (B, K!)

The first three are scored as a DV mutual-information bound between ordered clips and the global
view (Eq. 7); vcop is trained as order classification. The scores of the three scoring kinds lie
in [-1/temperature, 1/temperature] (cosine / temperature for gru, a scaled tanh for the MLP kinds):
true and shuffled orders are perfectly separable once order is detectable, so with unbounded
scores the DV bound (and the loss) would grow without limit; bounded, it is at most 2/temperature
nats. `permutations` holds every order of K
clips, identity first, so an order is an index into it.
"""

from __future__ import annotations

import itertools

import torch
import torch.nn.functional as F
from torch import Tensor, nn

SCORING_KINDS = ("mlp", "gru", "gru_mlp")
KINDS = (*SCORING_KINDS, "vcop")


def _mlp(in_dim: int, hidden_dim: int, out_dim: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(in_dim, hidden_dim), nn.ReLU(inplace=True),
                         nn.Linear(hidden_dim, out_dim))


class TemporalOrderHead(nn.Module):
    """A temporal order head of one `kind` (see the module docstring).

    Args:
        kind: "mlp", "gru", "gru_mlp" or "vcop".
        feature_dim: D, the pooled feature width.
        num_clips: K.
        hidden_dim: width of the GRU state and of the MLP layers.
        temperature: scores of the scoring kinds are bounded by 1/temperature.
    """

    def __init__(self, kind: str, feature_dim: int, num_clips: int, hidden_dim: int = 512,
                 temperature: float = 0.1) -> None:
        super().__init__()
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
        if num_clips < 2:
            raise ValueError(f"temporal order needs at least 2 clips, got num_clips={num_clips}")
        self.kind = kind
        self.num_clips = num_clips
        self.temperature = temperature
        orders = list(itertools.permutations(range(num_clips)))
        self.register_buffer("permutations", torch.tensor(orders), persistent=False)  # (K!, K)
        if kind == "mlp":
            self.mlp = _mlp((num_clips + 1) * feature_dim, hidden_dim, 1)
        elif kind in ("gru", "gru_mlp"):
            self.gru = nn.GRU(feature_dim, hidden_dim, batch_first=True)
            if kind == "gru":
                self.global_proj = nn.Linear(feature_dim, hidden_dim)
            else:
                self.mlp = _mlp(hidden_dim + feature_dim, hidden_dim, 1)
        else:  # vcop: a relation feature for every clip pair, then one classifier over orders
            num_pairs = num_clips * (num_clips - 1) // 2
            self.pair_mlp = nn.Sequential(nn.Linear(2 * feature_dim, hidden_dim),
                                          nn.ReLU(inplace=True))
            self.classifier = nn.Linear(num_pairs * hidden_dim, len(orders))
            pairs = list(itertools.combinations(range(num_clips), 2))
            self.register_buffer("pairs", torch.tensor(pairs), persistent=False)  # (P, 2)

    @property
    def is_classifier(self) -> bool:
        """True for vcop (order classification); False for the MI-scoring kinds."""
        return self.kind == "vcop"

    @property
    def num_orders(self) -> int:
        return self.permutations.shape[0]

    def reorder(self, clips: Tensor, order_index: Tensor) -> Tensor:
        """Apply order index (B,) to clips (B, K, D): clips[b, permutations[order_index[b]]]."""
        order = self.permutations[order_index]  # (B, K)
        return clips.gather(1, order[..., None].expand_as(clips))

    def score(self, clips: Tensor, global_: Tensor) -> Tensor:
        """Score how well ordered clips (B, K, D) go with the global view (B, D) -> (B,)."""
        if self.is_classifier:
            raise TypeError("the vcop head classifies orders; call classify(clips)")
        bound = 1.0 / self.temperature
        if self.kind == "mlp":
            raw = self.mlp(torch.cat([clips.flatten(1), global_], dim=1)).squeeze(-1)
            return bound * torch.tanh(raw / bound)
        _, last_state = self.gru(clips)  # (1, B, hidden)
        summary = last_state[-1]  # (B, hidden)
        if self.kind == "gru":
            cosine = F.cosine_similarity(summary, self.global_proj(global_), dim=-1)
            return bound * cosine
        raw = self.mlp(torch.cat([summary, global_], dim=1)).squeeze(-1)
        return bound * torch.tanh(raw / bound)

    def classify(self, clips: Tensor) -> Tensor:
        """vcop: logits over the K! orders for clips (B, K, D) -> (B, K!)."""
        if not self.is_classifier:
            raise TypeError(f"the {self.kind} head scores (clips, global); call score()")
        first, second = clips[:, self.pairs[:, 0]], clips[:, self.pairs[:, 1]]  # (B, P, D)
        relations = self.pair_mlp(torch.cat([first, second], dim=-1))  # (B, P, hidden)
        return self.classifier(relations.flatten(1))

    forward = score
