"""L_rc, soft spatio-temporal region contrast (Eqs. 3-4). Pure function; no collectives.

For local cell i of clip k of video b, with sim(q, k) = exp(q.k / tau) on L2-normalised vectors:

    p_k^{ij} = sim(q_i, k_j) / ( sum_{j'} sim(q_i, k_{j'}) + sum_n sim(q_i, n) )      (Eq. 4)
    L_rc(k, i) = - sum_j S_k(i, j) log p_k^{ij}                                      (Eq. 3)

j runs over video b's own global cells; n over every global cell of every other video in `k`
(the negatives: their correspondence with clip k is 0). The loss is the mean over (b, k, i).
S is used as given: rows sum to 1 when the local tube lies inside the global one.
"""

from __future__ import annotations

import torch
from torch import Tensor


def region_contrast_loss(q: Tensor, k: Tensor, S: Tensor, temperature: float = 0.07,
                         positive_index: Tensor | None = None) -> Tensor:
    """Soft region contrast between local cells and all global cells.

    Args:
        q: (B, K, Nc, D) L2-normalised projected local-cell features (B videos, K clips each).
        k: (M, Nv, D) L2-normalised projected global-cell features of M >= B videos (M > B when
            keys were gathered from other workers).
        S: (B, K, Nc, Nv) correspondence of each clip's cells with its own video's global cells.
        temperature: tau.
        positive_index: (B,) long, which row of k is video b's own global view; default arange(B).

    Returns:
        scalar loss.
    """
    b, num_clips, nc, d = q.shape
    m, nv, _ = k.shape
    if k.shape[2] != d or S.shape != (b, num_clips, nc, nv):
        raise ValueError(
            f"shape mismatch: q {tuple(q.shape)}, k {tuple(k.shape)}, S {tuple(S.shape)}"
        )
    if positive_index is None:
        positive_index = torch.arange(b, device=q.device)
    logits = torch.einsum("bkid,mjd->bkimj", q, k) / temperature  # (B, K, Nc, M, Nv)
    log_p = torch.log_softmax(logits.reshape(b, num_clips, nc, m * nv), dim=-1)
    log_p = log_p.reshape(b, num_clips, nc, m, nv)
    own = positive_index.view(b, 1, 1, 1, 1).expand(b, num_clips, nc, 1, nv)
    log_p_own = log_p.gather(3, own).squeeze(3)  # (B, K, Nc, Nv): own video's global cells
    return -(S * log_p_own).sum(dim=-1).mean()
