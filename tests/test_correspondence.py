"""Correspondence S_k (Eq. 1) against a brute-force rasteriser, plus geometric properties."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from model.correspondence import ViewGeometry, clip_correspondence, correspondence_matrix

# A source video on a pixel lattice: T frames of H x W pixels.
T, H, W = 48, 72, 96
LOCAL_GRID, GLOBAL_GRID = (2, 4, 4), (8, 4, 4)


def rasterise_labels(t0: int, t1: int, box_px: tuple[int, int, int, int], flip: bool,
                     grid: tuple[int, int, int]) -> np.ndarray:
    """Label every voxel of the source video with the view's cell index, or -1 outside the view.

    Naive on purpose: one voxel at a time in spirit (vectorised only over the voxel array), with
    the flip applied as the convention says: column j covers the source columns of W-1-j.
    """
    tg, hg, wg = grid
    x0, y0, x1, y1 = box_px
    tc, yc, xc = np.meshgrid(np.arange(T) + 0.5, np.arange(H) + 0.5, np.arange(W) + 0.5,
                             indexing="ij")
    inside = (tc >= t0) & (tc < t1) & (yc >= y0) & (yc < y1) & (xc >= x0) & (xc < x1)
    ti = np.floor((tc - t0) / (t1 - t0) * tg).astype(int)
    yi = np.floor((yc - y0) / (y1 - y0) * hg).astype(int)
    xi = np.floor((xc - x0) / (x1 - x0) * wg).astype(int)
    if flip:
        xi = wg - 1 - xi
    labels = (ti * hg + yi) * wg + xi
    return np.where(inside, labels, -1)


def brute_force_s(local: dict, global_: dict) -> np.ndarray:
    """S(i, j) = #voxels in local cell i and global cell j / #voxels in local cell i."""
    nc, nv = int(np.prod(LOCAL_GRID)), int(np.prod(GLOBAL_GRID))
    a = rasterise_labels(**local, grid=LOCAL_GRID).ravel()
    b = rasterise_labels(**global_, grid=GLOBAL_GRID).ravel()
    both = (a >= 0) & (b >= 0)
    counts = np.bincount(a[both] * nv + b[both], minlength=nc * nv).reshape(nc, nv)
    volume = np.bincount(a[a >= 0], minlength=nc)
    return counts / volume[:, None]


def random_lattice_views(rng: np.random.Generator, nested: bool) -> tuple[dict, dict]:
    """A global and a local view whose cell edges fall on voxel boundaries (exact counting)."""
    gw, gh = 4 * rng.integers(12, W // 4 + 1), 4 * rng.integers(9, H // 4 + 1)
    gx, gy = rng.integers(0, W - gw + 1), rng.integers(0, H - gh + 1)
    global_ = dict(t0=0, t1=T, box_px=(gx, gy, gx + gw, gy + gh), flip=False)
    lw, lh = 4 * rng.integers(3, gw // 4 + 1), 4 * rng.integers(3, gh // 4 + 1)
    if nested:
        lx, ly = rng.integers(gx, gx + gw - lw + 1), rng.integers(gy, gy + gh - lh + 1)
    else:  # anywhere in the frame, possibly sticking out of the global box
        lx, ly = rng.integers(0, W - lw + 1), rng.integers(0, H - lh + 1)
    lt0 = int(rng.integers(0, T - 16 + 1))
    local = dict(t0=lt0, t1=lt0 + 16, box_px=(lx, ly, lx + lw, ly + lh), flip=False)
    return local, global_


def to_geometry(views: list[dict]) -> ViewGeometry:
    boxes = torch.tensor([[v["box_px"][0] / W, v["box_px"][1] / H, v["box_px"][2] / W,
                           v["box_px"][3] / H] for v in views], dtype=torch.float64)
    return ViewGeometry(torch.tensor([float(v["t0"]) for v in views], dtype=torch.float64),
                        torch.tensor([float(v["t1"]) for v in views], dtype=torch.float64),
                        boxes, torch.tensor([v["flip"] for v in views]))


@pytest.mark.parametrize("nested", [True, False])
def test_matches_brute_force_rasteriser_for_every_flip_combination(nested):
    rng = np.random.default_rng(7 if nested else 8)
    locals_, globals_, expected = [], [], []
    for _, (flip_local, flip_global) in itertools.product(
            range(3), itertools.product([False, True], repeat=2)):
        local, global_ = random_lattice_views(rng, nested)
        local["flip"], global_["flip"] = flip_local, flip_global
        locals_.append(local)
        globals_.append(global_)
        expected.append(brute_force_s(local, global_))
    s = correspondence_matrix(to_geometry(locals_), to_geometry(globals_), LOCAL_GRID,
                              GLOBAL_GRID)
    assert s.shape == (len(expected), 32, 128)
    np.testing.assert_allclose(s.numpy(), np.stack(expected), atol=1e-9)
    if nested:
        np.testing.assert_allclose(s.sum(-1).numpy(), 1.0, atol=1e-9)
    else:  # rows of cells outside the global box sum to less than 1
        assert (s.sum(-1) <= 1 + 1e-9).all()


def test_identical_views_and_grids_give_identity():
    view = ViewGeometry(torch.tensor([3.0]), torch.tensor([19.0]),
                        torch.tensor([[0.1, 0.2, 0.7, 0.9]]), torch.tensor([True]))
    s = correspondence_matrix(view, view, (2, 4, 4), (2, 4, 4))
    torch.testing.assert_close(s[0], torch.eye(32))


def test_identical_tubes_with_finer_global_time_give_block_pattern():
    view = ViewGeometry(torch.tensor([0.0]), torch.tensor([16.0]),
                        torch.tensor([[0.0, 0.0, 1.0, 1.0]]), torch.tensor([False]))
    s = correspondence_matrix(view, view, (2, 4, 4), (8, 4, 4))[0]
    # Each local time cell covers 4 global time cells, a quarter each; space is identity.
    temporal = torch.kron(torch.eye(2), torch.full((1, 4), 0.25))  # (2, 8)
    expected = torch.einsum("ad,bc->abdc", temporal, torch.eye(16)).reshape(32, 128)
    torch.testing.assert_close(s, expected)


def _random_nested(n: int, seed: int) -> tuple[ViewGeometry, ViewGeometry]:
    g = torch.Generator().manual_seed(seed)
    gx0, gy0 = torch.rand(n, generator=g) * 0.2, torch.rand(n, generator=g) * 0.2
    gx1, gy1 = 0.8 + torch.rand(n, generator=g) * 0.2, 0.8 + torch.rand(n, generator=g) * 0.2
    fx = torch.rand(n, 2, generator=g).sort(-1).values
    fy = torch.rand(n, 2, generator=g).sort(-1).values
    fx[:, 1] = torch.maximum(fx[:, 1], fx[:, 0] + 0.05)
    fy[:, 1] = torch.maximum(fy[:, 1], fy[:, 0] + 0.05)
    fx, fy = fx.clamp(max=1), fy.clamp(max=1)
    local_box = torch.stack([gx0 + fx[:, 0] * (gx1 - gx0), gy0 + fy[:, 0] * (gy1 - gy0),
                             gx0 + fx[:, 1] * (gx1 - gx0), gy0 + fy[:, 1] * (gy1 - gy0)], -1)
    t_total = 64.0
    t0 = torch.rand(n, generator=g) * (t_total - 16)
    local = ViewGeometry(t0, t0 + 16, local_box, torch.rand(n, generator=g) < 0.5)
    global_ = ViewGeometry(torch.zeros(n), torch.full((n,), t_total),
                           torch.stack([gx0, gy0, gx1, gy1], -1), torch.rand(n, generator=g) < 0.5)
    return local, global_


def _with_flip(view: ViewGeometry, flip: bool) -> ViewGeometry:
    return view._replace(flip=torch.full_like(view.flip, flip))


def test_flipping_the_local_view_mirrors_its_columns():
    local, global_ = _random_nested(6, seed=1)
    plain = correspondence_matrix(_with_flip(local, False), global_, (2, 4, 4), (8, 4, 4))
    flipped = correspondence_matrix(_with_flip(local, True), global_, (2, 4, 4), (8, 4, 4))
    torch.testing.assert_close(flipped.reshape(6, 2, 4, 4, 128),
                               plain.reshape(6, 2, 4, 4, 128).flip(3))


def test_flipping_the_global_view_mirrors_its_columns():
    local, global_ = _random_nested(6, seed=2)
    plain = correspondence_matrix(local, _with_flip(global_, False), (2, 4, 4), (8, 4, 4))
    flipped = correspondence_matrix(local, _with_flip(global_, True), (2, 4, 4), (8, 4, 4))
    torch.testing.assert_close(flipped.reshape(6, 32, 8, 4, 4),
                               plain.reshape(6, 32, 8, 4, 4).flip(4))


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), n=st.integers(1, 8),
       local_grid=st.tuples(st.integers(1, 3), st.integers(1, 5), st.integers(1, 5)),
       global_grid=st.tuples(st.integers(1, 9), st.integers(1, 5), st.integers(1, 5)))
def test_nested_views_give_row_stochastic_s(seed, n, local_grid, global_grid):
    local, global_ = _random_nested(n, seed)
    s = correspondence_matrix(local, global_, local_grid, global_grid)
    assert s.shape == (n, int(np.prod(local_grid)), int(np.prod(global_grid)))
    assert (s >= 0).all() and (s <= 1 + 1e-6).all()
    torch.testing.assert_close(s.sum(-1), torch.ones(s.shape[:2]), atol=1e-5, rtol=0)


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), time_scale=st.floats(0.01, 100))
def test_mirroring_the_source_and_toggling_both_flips_leaves_s_unchanged(seed, time_scale):
    local, global_ = _random_nested(5, seed)

    def mirrored(view: ViewGeometry) -> ViewGeometry:
        x0, y0, x1, y1 = view.box.unbind(-1)
        return ViewGeometry(view.t0 * time_scale, view.t1 * time_scale,
                            torch.stack([1 - x1, y0, 1 - x0, y1], -1), ~view.flip)

    s = correspondence_matrix(local, global_, (2, 4, 4), (8, 4, 4))
    s_mirror = correspondence_matrix(mirrored(local), mirrored(global_), (2, 4, 4), (8, 4, 4))
    torch.testing.assert_close(s, s_mirror, atol=1e-5, rtol=0)


def test_clip_correspondence_pairs_each_clip_with_its_own_video():
    local, global_ = _random_nested(6, seed=3)
    b, k = 3, 2
    batched_local = ViewGeometry(local.t0.reshape(b, k), local.t1.reshape(b, k),
                                 local.box.reshape(b, k, 4), local.flip.reshape(b, k))
    batched_global = ViewGeometry(*(field[::k] for field in global_))
    s = clip_correspondence(batched_local, batched_global, (2, 4, 4), (8, 4, 4))
    assert s.shape == (b, k, 32, 128)
    for video, clip in itertools.product(range(b), range(k)):
        n = video * k + clip
        one = correspondence_matrix(ViewGeometry(*(f[n:n + 1] for f in local)),
                                    ViewGeometry(*(f[video * k:video * k + 1] for f in global_)),
                                    (2, 4, 4), (8, 4, 4))
        torch.testing.assert_close(s[video, clip], one[0])


def test_degenerate_view_is_a_clear_error():
    local, global_ = _random_nested(2, seed=4)
    broken = local._replace(t1=local.t0)
    with pytest.raises(ValueError, match="t1 > t0"):
        correspondence_matrix(broken, global_, (2, 4, 4), (8, 4, 4))
    with pytest.raises(ValueError, match="box"):
        correspondence_matrix(local._replace(box=local.box[:, :3]), global_, (2, 4, 4),
                              (8, 4, 4))
