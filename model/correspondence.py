"""Soft spatio-temporal correspondence S_k between a local clip's grid and the global grid (Eq. 1).

Pure torch. The one geometry convention (DESIGN section 2): a view covers the time interval
[t0, t1) in source-frame units and the box (x0, y0, x1, y1) normalised to the source frame; a
feature grid (T, H, W) over a view splits both into equal cells; when the view is flipped, column j
of its grid covers the source columns of column W-1-j.

Every cell is an axis-aligned tube, so

    S(i, j) = vol(tube_i ∩ tube_j) / vol(tube_i)
            = overlap_t(i, j) * overlap_y(i, j) * overlap_x(i, j),

each factor the 1-D intersection length over the local cell's length. The matrix is built from
three small 1-D overlap tables and one einsum, never a loop over cells. When the local tube lies
inside the global one (the pipeline guarantees this), every row sums to 1.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

Grid = tuple[int, int, int]


class ViewGeometry(NamedTuple):
    """Where N views sit in their source videos.

    t0, t1: (N,) time interval [t0, t1) in source frames (any unit shared by all views works).
    box: (N, 4) = (x0, y0, x1, y1), normalised to the source frame.
    flip: (N,) bool, horizontal flip applied to the view.
    """

    t0: Tensor
    t1: Tensor
    box: Tensor
    flip: Tensor


def _cell_intervals(start: Tensor, end: Tensor, cells: int,
                    flip: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Split [start, end) (N,) into `cells` equal intervals -> (lo, hi), each (N, cells).

    With flip, the cell order is reversed: cell j covers what cell cells-1-j covers unflipped.
    """
    fractions = torch.arange(cells + 1, dtype=start.dtype, device=start.device) / cells
    edges = start[:, None] + (end - start)[:, None] * fractions  # (N, cells+1)
    lo, hi = edges[:, :-1], edges[:, 1:]
    if flip is not None:
        mirrored = flip[:, None]
        lo, hi = torch.where(mirrored, lo.flip(-1), lo), torch.where(mirrored, hi.flip(-1), hi)
    return lo, hi


def _overlap_fraction(a: tuple[Tensor, Tensor], b: tuple[Tensor, Tensor]) -> Tensor:
    """Length of a_i ∩ b_j over the length of a_i: a (N, n_a), b (N, n_b) -> (N, n_a, n_b)."""
    a_lo, a_hi = a[0][:, :, None], a[1][:, :, None]
    b_lo, b_hi = b[0][:, None, :], b[1][:, None, :]
    inter = (torch.minimum(a_hi, b_hi) - torch.maximum(a_lo, b_lo)).clamp_min(0)
    return inter / (a_hi - a_lo)


def _check(view: ViewGeometry, name: str) -> None:
    n = view.t0.shape[0]
    shapes_ok = (
        view.t0.shape == (n,) and view.t1.shape == (n,) and view.box.shape == (n, 4)
        and view.flip.shape == (n,)
    )
    if not shapes_ok:
        raise ValueError(
            f"{name}: expected t0 (N,), t1 (N,), box (N, 4), flip (N,); got "
            f"{tuple(view.t0.shape)}, {tuple(view.t1.shape)}, {tuple(view.box.shape)}, "
            f"{tuple(view.flip.shape)}"
        )
    # A zero-length cell would divide by zero; it means the view parameters are broken. One
    # reduction, so one host sync when the views are on a GPU.
    broken = (view.t1 <= view.t0) | (view.box[:, 2:] <= view.box[:, :2]).any(dim=1)  # (N,)
    if bool(broken.any()):
        raise ValueError(f"{name}: every view needs t1 > t0, x1 > x0 and y1 > y0")


def correspondence_matrix(local: ViewGeometry, global_: ViewGeometry, local_grid: Grid,
                          global_grid: Grid) -> Tensor:
    """S for N (local, global) pairs: (N, Nc, Nv), Nc = prod(local_grid), Nv = prod(global_grid).

    Cells are flattened in (t, y, x) row-major order on both sides, matching
    `feature_map.flatten(2)` of a (C, T, H, W) map. Pair n relates local view n to global view n
    (repeat the global geometry K times for K clips per video).
    """
    _check(local, "local")
    _check(global_, "global_")
    if local.t0.shape != global_.t0.shape:
        raise ValueError(
            f"local and global_ must describe the same number of pairs, got "
            f"{local.t0.shape[0]} and {global_.t0.shape[0]}"
        )
    dtype = torch.promote_types(local.box.dtype, torch.float32)
    (tc, hc, wc), (tv, hv, wv) = local_grid, global_grid

    def intervals(view: ViewGeometry, t: int, h: int, w: int):
        box = view.box.to(dtype)
        flip = view.flip.to(torch.bool)
        return (
            _cell_intervals(view.t0.to(dtype), view.t1.to(dtype), t),
            _cell_intervals(box[:, 1], box[:, 3], h),
            _cell_intervals(box[:, 0], box[:, 2], w, flip),
        )

    local_t, local_y, local_x = intervals(local, tc, hc, wc)
    global_t, global_y, global_x = intervals(global_, tv, hv, wv)
    overlap_t = _overlap_fraction(local_t, global_t)  # (N, Tc, Tv)
    overlap_y = _overlap_fraction(local_y, global_y)  # (N, Hc, Hv)
    overlap_x = _overlap_fraction(local_x, global_x)  # (N, Wc, Wv)
    s = torch.einsum("nad,nbe,ncf->nabcdef", overlap_t, overlap_y, overlap_x)
    return s.reshape(s.shape[0], tc * hc * wc, tv * hv * wv)  # (N, Nc, Nv)




def clip_correspondence(local: ViewGeometry, global_: ViewGeometry, local_grid: Grid,
                        global_grid: Grid) -> Tensor:
    """S_k for every clip of a batch -> (B, K, Nc, Nv).

    local: fields of shape (B, K) and box (B, K, 4); global_: fields (B,) and box (B, 4).

    Each of a video's K clips is paired with that video's global view.
    """
    b, k = local.t0.shape
    flat_local = ViewGeometry(local.t0.reshape(b * k), local.t1.reshape(b * k),
                              local.box.reshape(b * k, 4), local.flip.reshape(b * k))
    repeated_global = ViewGeometry(*(field.repeat_interleave(k, dim=0) for field in global_))
    s = correspondence_matrix(flat_local, repeated_global, local_grid, global_grid)
    return s.unflatten(0, (b, k))


__all__ = ["ViewGeometry", "Grid", "correspondence_matrix", "clip_correspondence"]
