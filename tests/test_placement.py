"""Decode placement: a split batch holds exactly the views of an unsplit one, in order; a
placement that cannot work is refused before anything is read."""

from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from pipeline import build_pretrain_loader
from pipeline.config import AugmentConfig
from pipeline.dali_graph import DaliViews
from pipeline.packing import pack_view_params
from pipeline.placement import SplitViews, resolve_decode, split_sizes
from pipeline.sampling import ViewParams, sample_pretrain_views

CONFIG = AugmentConfig(levels_per_batch=4, size=64)


def batch_inputs(folder, videos: int):
    rows = [row for path in sorted(folder.glob("part-*.parquet"))
            for row in pq.read_table(path).to_pylist()][:videos]
    global_views, local_views = sample_pretrain_views(
        np.array([r["num_frames"] for r in rows]), np.array([r["width"] for r in rows]),
        np.array([r["height"] for r in rows]), np.arange(len(rows)), seed=2, epoch=0,
        batch_index=0, config=CONFIG)
    views = ViewParams(*(np.concatenate([g[:, None], loc], 1)
                         for g, loc in zip(global_views, local_views, strict=True)))
    return [r["payload"] for r in rows], views.frame_indices, pack_view_params(views)


def cpu_views(payload: str, max_batch: int) -> DaliViews:
    return DaliViews(payload, 5, 16, CONFIG.size, jitter=True, blur=True, device="cpu",
                     max_batch=max_batch, num_threads=1)


@pytest.mark.parametrize("payload", ["video", "frames"])
def test_a_split_batch_is_the_unsplit_batch_in_order(shards, payload):
    """Both parts on CPU pipelines here (a GPU host runs the same code with one part on the
    GPU): every share, batch sizes 1-3, bit for bit the single renderer's output."""
    payloads, frame_indices, rows = batch_inputs(shards[payload], 3)
    whole = cpu_views(payload, 3)
    for share in (0.0, 0.34, 0.5, 1.0):
        on_cpu, on_gpu = split_sizes(3, share)
        split = SplitViews(cpu_views(payload, on_cpu) if on_cpu else None,
                           cpu_views(payload, on_gpu) if on_gpu else None, share,
                           torch.device("cpu"))
        for videos in (1, 2, 3):
            expected = whole.run(payloads[:videos], frame_indices[:videos], rows[:videos])
            got = split.run(payloads[:videos], frame_indices[:videos], rows[:videos])
            assert got.shape == expected.shape == (videos, 5, 3, 16, CONFIG.size, CONFIG.size)
            assert torch.equal(got, expected), (share, videos)
        assert split.render_seconds > 0


@pytest.mark.parametrize("share", [*np.linspace(0, 1, 21), 1 / 3, 0.7, 0.999])
def test_split_sizes_cover_the_batch_and_never_outgrow_the_largest_batchs_parts(share):
    """Every batch size up to 96 against every largest batch above it (the loader builds each
    part's pipeline for the largest batch; a last, smaller batch must fit in both)."""
    for largest in range(1, 97):
        biggest = split_sizes(largest, share)
        for videos in range(1, largest + 1):
            on_cpu, on_gpu = split_sizes(videos, share)
            assert on_cpu + on_gpu == videos and on_cpu >= 0 and on_gpu >= 0
            assert on_cpu <= biggest[0] and on_gpu <= biggest[1]
            assert abs(on_gpu - videos * share) <= 0.5 + 1e-9
        assert split_sizes(largest, 0.0) == (largest, 0)
        assert split_sizes(largest, 1.0) == (0, largest)


def test_placements_that_cannot_work_are_refused_with_the_way_out():
    assert resolve_decode("auto", "cpu") == "cpu" and resolve_decode("auto", "gpu") == "gpu"
    assert resolve_decode("cpu", "gpu") == "cpu" and resolve_decode("split", "gpu") == "split"
    for decode in ("gpu", "split"):
        with pytest.raises(ValueError, match="batches go to the CPU"):
            resolve_decode(decode, "cpu")
    with pytest.raises(ValueError, match="needs backend='dali'"):
        resolve_decode("split", "gpu", backend="reference")
    with pytest.raises(ValueError, match="decode must be one of auto, cpu, gpu, split"):
        resolve_decode("nvdec", "gpu")
    with pytest.raises(ValueError, match=r"gpu_share must be in \[0, 1\]"):
        SplitViews(None, None, 1.5, torch.device("cpu"))


def test_the_loader_refuses_a_gpu_decode_for_cpu_batches(shards):
    with pytest.raises(ValueError, match="decode='split' decodes on a GPU"):
        build_pretrain_loader(shards["frames"], batch_size=2, decode="split")


@pytest.mark.gpu
@pytest.mark.parametrize("decode", ["cpu", "split"])
def test_gpu_batches_decoded_on_the_host_or_split_match_the_cpu_loader(shards, decode):
    """On a GPU host: the same parameters, views within decoder rounding, frames on the GPU."""
    from test_pipeline_views import psnr

    reference = build_pretrain_loader(shards["frames"], batch_size=3, levels_per_batch=2,
                                      seed=4)
    placed = build_pretrain_loader(shards["frames"], batch_size=3, levels_per_batch=2, seed=4,
                                   device="gpu", decode=decode, gpu_share=0.5)
    for a, b in zip(reference, placed, strict=True):
        assert b.local_frames.is_cuda and b.global_frames.is_cuda
        assert torch.equal(a.local_params.box, b.local_params.box.cpu())
        for video in range(len(a.video_id)):
            assert psnr(a.local_frames[video].numpy(),
                        b.local_frames[video].cpu().numpy()) >= 30
