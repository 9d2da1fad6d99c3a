"""R3D-18: feature grids, one shared parameter set for f and f', finite forward and backward."""

from __future__ import annotations

import pytest
import torch

from model.encoder import R3D18


def expected_r3d18_parameters(width: int) -> int:
    """Count R3D-18's parameters from its definition (conv weights, BN affine pairs)."""
    def conv(cin, cout, k):
        return cin * cout * k

    def bn(c):
        return 2 * c

    total = conv(3, width, 3 * 7 * 7) + bn(width)
    cin = width
    for multiple in (1, 2, 4, 8):
        cout = width * multiple
        for block in range(2):
            block_in = cin if block == 0 else cout
            total += conv(block_in, cout, 27) + bn(cout) + conv(cout, cout, 27) + bn(cout)
            if block == 0 and (block_in != cout or multiple > 1):
                total += conv(block_in, cout, 1) + bn(cout)
        cin = cout
    return total


def test_paper_grids_at_full_width():
    net = R3D18(width=64).eval()
    x = torch.randn(1, 3, 16, 112, 112)
    with torch.no_grad():
        assert net.forward_clip(x).shape == (1, 512, 2, 4, 4)
        assert net.forward_global(x).shape == (1, 512, 8, 4, 4)
    assert net.feature_grid((16, 112, 112), "clip") == (2, 4, 4)
    assert net.feature_grid((16, 112, 112), "global") == (8, 4, 4)
    assert sum(p.numel() for p in net.parameters()) == expected_r3d18_parameters(64)


@pytest.mark.parametrize("unstrided, t_global", [(0, 2), (1, 4), (2, 8), (3, 16)])
def test_global_temporal_resolution_of_table_4(unstrided, t_global):
    net = R3D18(width=4, global_unstrided_stages=unstrided).eval()
    with torch.no_grad():
        out = net.forward_global(torch.randn(1, 3, 16, 112, 112))
    assert out.shape[2:] == (t_global, 4, 4)
    assert net.feature_grid((16, 112, 112), "global") == (t_global, 4, 4)


@pytest.mark.parametrize("size", [(16, 112, 112), (8, 64, 64), (32, 128, 171), (5, 33, 47),
                                  (1, 16, 16)])
@pytest.mark.parametrize("view", ["clip", "global"])
def test_predicted_grid_matches_real_output(size, view):
    net = R3D18(width=4).eval()
    x = torch.randn(1, 3, *size)
    with torch.no_grad():
        out = net.forward_clip(x) if view == "clip" else net.forward_global(x)
    assert tuple(out.shape[2:]) == net.feature_grid(size, view)


def test_f_and_f_prime_share_one_parameter_set_and_train_finite():
    net = R3D18(width=8)
    params = list(net.parameters())
    assert len({id(p) for p in params}) == len(params)
    clip_out = net.forward_clip(torch.randn(2, 3, 16, 64, 64))
    grads_clip = torch.autograd.grad(clip_out.square().mean(), params)
    global_out = net.forward_global(torch.randn(2, 3, 16, 64, 64))
    grads_global = torch.autograd.grad(global_out.square().mean(), params)
    # Both modes reach every parameter of the one set, with finite gradients.
    for g_clip, g_video in zip(grads_clip, grads_global, strict=True):
        assert torch.isfinite(g_clip).all() and torch.isfinite(g_video).all()
        assert g_clip.abs().sum() > 0 and g_video.abs().sum() > 0
    assert torch.isfinite(clip_out).all() and torch.isfinite(global_out).all()


def test_changing_a_weight_changes_both_modes():
    net = R3D18(width=4).eval()
    x = torch.randn(1, 3, 16, 32, 32)
    with torch.no_grad():
        before = net.forward_clip(x), net.forward_global(x)
        net.stages[3][1].conv2.weight.add_(0.5)
        after = net.forward_clip(x), net.forward_global(x)
    assert not torch.allclose(before[0], after[0]) and not torch.allclose(before[1], after[1])


def test_bad_input_is_a_clear_error():
    net = R3D18(width=4)
    with pytest.raises(ValueError, match=r"\(B, 3, T, H, W\)"):
        net.forward_clip(torch.randn(3, 16, 112, 112))
    with pytest.raises(ValueError, match="view"):
        net.feature_grid((16, 112, 112), "video")
    with pytest.raises(ValueError, match="global_unstrided_stages"):
        R3D18(global_unstrided_stages=4)


@pytest.mark.gpu
def test_bf16_channels_last_forward_backward_on_gpu():
    net = R3D18().cuda().to(memory_format=torch.channels_last_3d)
    x = torch.randn(4, 3, 16, 112, 112, device="cuda").to(memory_format=torch.channels_last_3d)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        out = net.forward_global(x)
    assert out.shape == (4, 512, 8, 4, 4)
    out.float().square().mean().backward()
    assert all(torch.isfinite(p.grad).all() for p in net.parameters())
