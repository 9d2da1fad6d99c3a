"""L_nce, the clip-level InfoNCE baseline (Eq. 2; Table 7 row 1). Pure function; no collectives.

Each pooled, projected local clip q_{b,k} is a query; its positive is its own video's pooled,
projected global view k_b and every other video's global view is a negative:

    L_nce = - mean_{b,k} log( exp(q_{b,k}.k_b / tau) / sum_m exp(q_{b,k}.k_m / tau) )
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def info_nce_loss(q: Tensor, k: Tensor, temperature: float = 0.07,
                  positive_index: Tensor | None = None) -> Tensor:
    """Clip-level InfoNCE.

    Args:
        q: (B, K, D) L2-normalised clip features (K clips per video).
        k: (M, D) L2-normalised global features of M >= B videos.
        temperature: tau.
        positive_index: (B,) long, the row of k that is video b's own; default arange(B).

    Returns:
        scalar loss.
    """
    b, num_clips, d = q.shape
    if k.ndim != 2 or k.shape[1] != d:
        raise ValueError(f"shape mismatch: q {tuple(q.shape)}, k {tuple(k.shape)}")
    if positive_index is None:
        positive_index = torch.arange(b, device=q.device)
    logits = torch.einsum("bkd,md->bkm", q, k) / temperature  # (B, K, M)
    targets = positive_index[:, None].expand(b, num_clips)  # (B, K)
    return F.cross_entropy(logits.reshape(b * num_clips, -1), targets.reshape(-1))
