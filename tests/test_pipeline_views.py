"""DALI renders exactly what the sampler emitted: parity with the PyAV reference, and content."""

from __future__ import annotations

import io

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from media import write_frames

from pipeline import build_pretrain_loader, packing
from pipeline.config import MEAN, STD, AugmentConfig
from pipeline.dali_graph import FILLER_JPEG, DaliViews, frame_inputs, image_arguments
from pipeline.packing import pack_view_params
from pipeline.reference import render_sample
from pipeline.sampling import ViewParams, sample_pretrain_views
from preprocessing.config import PreprocessConfig
from preprocessing.job import local_executor, run_preprocess
from preprocessing.sources import list_dataset

CONFIG = AugmentConfig(levels_per_batch=4)


def to_pixels(normalised: np.ndarray) -> np.ndarray:
    """(3, ...) normalised float -> the same in 0..255."""
    shape = (3,) + (1,) * (normalised.ndim - 1)
    return (normalised * np.array(STD).reshape(shape) + np.array(MEAN).reshape(shape)) * 255


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(((to_pixels(a) - to_pixels(b)) ** 2).mean())
    return float("inf") if mse == 0 else 10 * np.log10(255**2 / mse)


def all_views(global_views: ViewParams, local_views: ViewParams) -> ViewParams:
    return ViewParams(*(np.concatenate([g[:, None], loc], 1)
                        for g, loc in zip(global_views, local_views, strict=True)))


@pytest.mark.parametrize("payload", ["video", "frames"])
def test_dali_cpu_matches_the_reference_per_view(shards, payload):
    rows = [row for path in sorted(shards[payload].glob("part-*.parquet"))
            for row in pq.read_table(path).to_pylist()][:3]
    views = all_views(*sample_pretrain_views(
        np.array([r["num_frames"] for r in rows]), np.array([r["width"] for r in rows]),
        np.array([r["height"] for r in rows]), np.arange(len(rows)), seed=1, epoch=0,
        batch_index=0, config=CONFIG))
    packed = pack_view_params(views)
    dali = DaliViews(payload, 5, 16, 112, jitter=True, blur=True, device="cpu",
                     max_batch=len(rows)).run([r["payload"] for r in rows],
                                              views.frame_indices, packed).numpy()
    unblurred = packed.copy()
    unblurred[..., packing.BLUR_SIGMA] = 0
    blurred_views = 0
    for b, row in enumerate(rows):
        reference, without_blur = (
            render_sample(row["payload"], row["codec"], views.frame_indices[b], p[b], 112)
            for p in (packed, unblurred))
        for v in range(5):
            assert psnr(dali[b, v], reference[v]) >= 30, (b, v, packed[b, v])
            # Each view gets its own blur: closer to the reference with that view's sigma
            # than to the same view unblurred (paired, so the decoders' differences, the
            # larger part for VP9, cancel out).
            if packed[b, v, packing.BLUR_SIGMA] >= 1.0:
                blurred_views += 1
                assert psnr(dali[b, v], reference[v]) > psnr(dali[b, v], without_blur[v]), (
                    b, v, packed[b, v])
    assert blurred_views >= 3


def test_frame_inputs_hold_each_distinct_frame_once_and_gather_every_image():
    rng = np.random.default_rng(3)
    payloads = [[rng.integers(0, 256, rng.integers(1, 30), dtype=np.uint8).tobytes()
                 for _ in range(frames)] for frames in (12, 7)]
    frame_indices = np.stack([rng.integers(0, 7, (3, 4)), rng.integers(0, 7, (3, 4))])
    frame_indices[0, 1] = frame_indices[0, 0]  # two views of video 0 share their frames
    inputs = frame_inputs(payloads, frame_indices)
    naive = [payloads[b][f] for b in range(2) for f in frame_indices[b].reshape(-1)]
    assert [inputs.jpeg(j).tobytes() for j in inputs.gather] == naive
    assert inputs.distinct == sum(len(np.unique(f)) for f in frame_indices)
    assert len({inputs.jpeg(j).tobytes() for j in range(inputs.distinct)}) == inputs.distinct
    assert all(inputs.jpeg(j).tobytes() == FILLER_JPEG
               for j in range(inputs.distinct, len(inputs.lengths)))
    for j, length in enumerate(inputs.lengths):
        assert not inputs.padded[j, length:].any()
    assert inputs.gather.dtype == inputs.lengths.dtype == np.int32


@pytest.mark.parametrize(("jitter", "blur"), [(True, True), (True, False), (False, False)])
def test_image_arguments_give_each_image_its_views_values(jitter, blur):
    rng = np.random.default_rng(4)
    rows = rng.random((6, packing.PARAMS_WIDTH)).astype(np.float32)
    rows[:, packing.FLIP] = rng.integers(0, 2, 6)
    arguments = image_arguments(rows, 4, jitter, blur)
    expected = {"roi_start", "roi_end", "mirror"} | ({"colour"} if jitter else set()) | (
        {"sigma"} if jitter and blur else set())
    assert set(arguments) == expected
    for image in range(24):  # naive: image i belongs to view i // 4
        row = rows[image // 4]
        assert arguments["roi_start"][image].tolist() == [row[packing.Y0], row[packing.X0]]
        assert arguments["roi_end"][image].tolist() == [row[packing.Y1], row[packing.X1]]
        assert arguments["mirror"][image] == int(row[packing.FLIP])
        if jitter:
            np.testing.assert_allclose(arguments["colour"][image],
                                       packing.colour_affine(row[None])[0], rtol=1e-6)
        if jitter and blur:
            assert arguments["sigma"][image].tolist() == [row[packing.BLUR_SIGMA]]
    assert arguments["mirror"].dtype == np.int32
    assert all(a.dtype == np.float32 for name, a in arguments.items() if name != "mirror")


def test_the_packed_row_holds_view_params_in_their_own_units_by_name():
    _, views = sample_pretrain_views(np.array([100]), np.array([170]), np.array([128]),
                                     np.array([0]), seed=3, epoch=0, batch_index=0,
                                     config=CONFIG)  # (1, K)
    row = pack_view_params(views)
    assert row.shape == (1, CONFIG.num_clips, packing.PARAMS_WIDTH)
    np.testing.assert_array_equal(row[..., packing.BOX], views.box)  # (x0, y0, x1, y1)
    np.testing.assert_array_equal(row[..., packing.X1], views.box[..., 2])
    np.testing.assert_array_equal(row[..., packing.FLIP], views.flip)
    for column, index in ((packing.BRIGHTNESS, 0), (packing.CONTRAST, 1),
                          (packing.SATURATION, 2), (packing.HUE, 3), (packing.BLUR_SIGMA, 4)):
        np.testing.assert_array_equal(row[..., column], views.jitter[..., index])  # as sampled


@pytest.fixture(scope="module")
def position_shards(tmp_path_factory):
    """A video whose pixels say where they are: R = x ramp, G = y ramp, B = 6 * frame index."""
    root = tmp_path_factory.mktemp("position")
    t, h, w = 40, 128, 170
    xs = np.round(np.arange(w) * 255 / (w - 1))
    ys = np.round(np.arange(h) * 255 / (h - 1))
    frames = np.zeros((t, h, w, 3), dtype=np.uint8)
    frames[..., 0] = xs[None, None, :]
    frames[..., 1] = ys[None, :, None]
    frames[..., 2] = (6 * np.arange(t))[:, None, None]
    (root / "videos" / "ramp").mkdir(parents=True)
    for name in ("a", "b"):  # pretraining batches need two videos
        write_frames(root / "videos" / "ramp" / name, frames, "mjpeg")
    out = {}
    for payload in ("video", "frames"):
        out[payload] = root / payload
        run_preprocess(list_dataset("folder", root / "videos"),
                       PreprocessConfig(payload=payload, crf=4, jpeg_quality=100), out[payload],
                       local_executor(1), log=io.StringIO())
    return out


@pytest.mark.parametrize("payload", ["video", "frames"])
def test_emitted_parameters_are_the_applied_ones(position_shards, payload):
    loader = build_pretrain_loader(position_shards[payload], batch_size=2, jitter=False,
                                   seed=5)
    checked = 0
    for epoch in range(3):  # three draws of boxes, flips and frames
        loader.set_epoch(epoch)
        for batch, video in ((batch, video) for batch in loader for video in range(2)):
            frames = torch.cat([batch.global_frames[:, None], batch.local_frames], 1)[video]
            params = ViewParams(*(torch.cat([g[:, None], loc], 1)[video].numpy() for g, loc in
                                  zip(batch.global_params, batch.local_params, strict=True)))
            for v in range(frames.shape[0]):
                pixels = to_pixels(frames[v].numpy())  # (3, L, 112, 112)
                x0, y0, x1, y1 = params.box[v]
                centres = (np.arange(112) + 0.5) / 112
                source_x = (x0 + centres * (x1 - x0)) * 170 - 0.5
                source_y = (y0 + centres * (y1 - y0)) * 128 - 0.5
                expected_r = source_x * 255 / 169
                if params.flip[v]:
                    expected_r = expected_r[::-1]
                expected_g = source_y * 255 / 127
                red = pixels[0].mean(axis=(0, 1))  # per output column
                green = pixels[1].mean(axis=(0, 2))  # per output row
                blue = pixels[2].mean(axis=(1, 2))  # per frame
                assert np.abs(red - expected_r)[2:-2].max() < 8, (v, params.box[v])
                assert np.abs(green - expected_g)[2:-2].max() < 8, (v, params.box[v])
                assert np.abs(blue - 6 * params.frame_indices[v]).max() < 6, v
                checked += 1
    assert checked == 30  # 3 epochs x 2 videos x 5 views


@pytest.mark.gpu
@pytest.mark.parametrize("payload", ["video", "frames"])
def test_dali_gpu_matches_dali_cpu(shards, payload):
    """NVDEC / nvJPEG against the CPU graph on the same parameters (run on a GPU host)."""
    cpu = build_pretrain_loader(shards[payload], batch_size=2, levels_per_batch=2, seed=4)
    gpu = build_pretrain_loader(shards[payload], batch_size=2, levels_per_batch=2, seed=4,
                                device="gpu")
    for a, b in zip(cpu, gpu, strict=True):
        assert b.global_frames.is_cuda
        assert psnr(a.global_frames[0].numpy(), b.global_frames[0].cpu().numpy()) >= 30
        assert torch.equal(a.local_params.box, b.local_params.box.cpu())
