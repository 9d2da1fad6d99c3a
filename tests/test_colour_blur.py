"""The CPU graphs' colour + blur kernel (pipeline.colour_blur): against a naive reference written
here, against the PyAV reference renderer's steps, properties, and inside a DALI graph."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

numba = pytest.importorskip("numba")

from pipeline import reference  # noqa: E402
from pipeline.colour_blur import colour_blur, gaussian_taps, reflect_101  # noqa: E402

KERNEL = numba.njit(colour_blur)
IDENTITY = np.eye(3, 4, dtype=np.float32)


def run_kernel(frames: np.ndarray, colour: np.ndarray, sigma: float) -> np.ndarray:
    out = np.empty_like(frames)
    KERNEL(out, frames, colour.astype(np.float32), np.array([sigma], np.float32))
    return out


def as_fed(sigma: float) -> float:
    """sigma as the kernel sees it (float32): the references get the same value (at 1/3 a
    float64 gives ceil(3 sigma) = 1, its float32 2)."""
    return float(np.float32(sigma))


def naive_colour_blur(frames: np.ndarray, colour: np.ndarray, sigma: float) -> np.ndarray:
    """Pixel by pixel in float64: the map, rounded half to even and clipped; then each output
    pixel a 2-D sum over the (2r+1)^2 window of Gaussian weights, indices mirrored at the
    edges without repeating the edge pixel, rounded and clipped."""
    f, h, w, _ = frames.shape
    coloured = np.empty(frames.shape, np.float64)
    for index in np.ndindex(f, h, w):
        value = colour[:, :3].astype(np.float64) @ frames[index].astype(np.float64)
        coloured[index] = np.clip(np.rint(value + colour[:, 3]), 0, 255)
    if sigma <= 0:
        return coloured.astype(np.uint8)
    radius = math.ceil(3 * sigma)

    def mirror(i: int, n: int) -> int:
        if n == 1:
            return 0
        while i < 0 or i >= n:
            i = -i if i < 0 else 2 * (n - 1) - i
        return i

    weight = {t: math.exp(-t * t / (2 * sigma * sigma)) for t in range(-radius, radius + 1)}
    total = sum(weight.values())
    out = np.empty(frames.shape, np.uint8)
    for k, y, x in np.ndindex(f, h, w):
        acc = np.zeros(3)
        for dy in range(-radius, radius + 1):
            for dx in range(-radius, radius + 1):
                acc += (weight[dy] * weight[dx] / total ** 2
                        * coloured[k, mirror(y + dy, h), mirror(x + dx, w)])
        out[k, y, x] = np.clip(np.rint(acc), 0, 255)
    return out


def random_colour(rng: np.random.Generator) -> np.ndarray:
    colour = IDENTITY + rng.uniform(-0.3, 0.3, (3, 4)) * np.array([1, 1, 1, 60])
    return colour.astype(np.float32)


@pytest.mark.parametrize(("shape", "sigma"), [((2, 9, 11, 3), 1.3), ((1, 6, 5, 3), 2.0),
                                              ((3, 5, 4, 3), 0.0), ((1, 3, 2, 3), 0.7),
                                              ((1, 1, 1, 3), 1.0)])
def test_the_kernel_matches_a_naive_pixel_by_pixel_reference(shape, sigma):
    rng = np.random.default_rng(sum(shape))
    frames = rng.integers(0, 256, shape, dtype=np.uint8)
    colour = random_colour(rng)
    want = naive_colour_blur(frames, colour, as_fed(sigma))
    got = run_kernel(frames, colour, sigma)
    # The kernel blurs in float32, the naive sum in float64: a value within 1e-4 of a
    # rounding boundary may round the other way.
    assert np.abs(got.astype(int) - want).max() <= 1
    assert (got != want).mean() < 0.01


@settings(max_examples=25, deadline=None)
@given(st.integers(1, 3), st.integers(1, 40), st.integers(1, 40),
       st.sampled_from([0.0, 0.1, 0.5, 1.0, 1.7, 2.0]), st.integers(0, 2**31))
def test_the_kernel_computes_what_the_reference_renderer_does(count, height, width, sigma,
                                                              seed):
    rng = np.random.default_rng(seed)
    frames = rng.integers(0, 256, (count, height, width, 3), dtype=np.uint8)
    colour = random_colour(rng)
    want = reference.gaussian_blur(reference.colour(frames, colour), as_fed(sigma))
    got = run_kernel(frames, colour, sigma)
    assert np.abs(got.astype(int) - want).max() <= 1
    assert (got != want).mean() < 0.01


@settings(max_examples=25, deadline=None)
@given(st.integers(1, 30), st.integers(0, 12))
def test_reflect_101_indexes_like_numpy_reflect_padding(length, radius):
    padded = np.pad(np.arange(length), radius, mode="reflect") if length > 1 else (
        np.zeros(length + 2 * radius, int))
    assert reflect_101(length, radius).tolist() == padded.tolist()


@settings(max_examples=40, deadline=None)
@given(st.floats(0.05, 4.0))
def test_taps_are_a_normalised_symmetric_gaussian_of_radius_ceil_3_sigma(sigma):
    taps = gaussian_taps(sigma)
    radius = math.ceil(3 * sigma)
    assert taps.shape == (2 * radius + 1,) and taps.dtype == np.float32
    assert taps.sum() == pytest.approx(1, abs=1e-5)
    assert np.array_equal(taps, taps[::-1]) and taps.argmax() == radius
    assert gaussian_taps(0.0).tolist() == [1.0]


@settings(max_examples=20, deadline=None)
@given(st.integers(0, 2**31), st.sampled_from([0.0, 0.8, 2.0]))
def test_identity_colour_keeps_frames_and_blur_keeps_flat_ones(seed, sigma):
    rng = np.random.default_rng(seed)
    frames = rng.integers(0, 256, (2, 7, 9, 3), dtype=np.uint8)
    assert np.array_equal(run_kernel(frames, IDENTITY, 0.0), frames)
    flat = np.broadcast_to(rng.integers(0, 256, 3, dtype=np.uint8), frames.shape).copy()
    assert np.array_equal(run_kernel(flat, IDENTITY, sigma), flat)


def test_blur_spreads_a_point_by_its_sigma():
    frames = np.zeros((1, 31, 31, 3), np.uint8)
    frames[0, 15, 15] = 255
    narrow, wide = run_kernel(frames, IDENTITY, 0.7), run_kernel(frames, IDENTITY, 2.0)
    assert narrow[0, 15, 15, 0] > wide[0, 15, 15, 0] > 0
    assert (wide[0, :, :, 0] > 0).sum() > (narrow[0, :, :, 0] > 0).sum()
    assert np.array_equal(wide[0, :, :, 0], wide[0, :, :, 0].T)  # isotropic, symmetric


@pytest.mark.parametrize("layout", ["HWC", "FHWC"])
@pytest.mark.parametrize("constant", [False, True])
def test_the_cpu_graph_gives_each_sample_its_own_colour_and_blur(layout, constant):
    """dali_graph._colour_and_blur on DALI's CPU threads: per sample (an image, HWC, as in the
    frames graph; or a clip, FHWC, as in the video graph) the reference's colour and blur
    of that sample's own map and sigma (fed per sample), or of constants (a list map and a
    float sigma, as fixed_frame_graph passes them), within 1 grey level."""
    from nvidia.dali import fn, pipeline_def, types

    from pipeline.dali_graph import _colour_and_blur

    rng = np.random.default_rng(9)
    shape = (lambda i: (8 + i, 10 - i, 3)) if layout == "HWC" else (lambda i: (3, 8 + i, 9, 3))
    samples = [rng.integers(0, 256, shape(i), dtype=np.uint8) for i in range(4)]
    colours = [random_colour(rng) for _ in samples]
    sigmas = [np.array([s], np.float32) for s in (0.0, 0.5, 1.2, 2.0)]
    if constant:
        colours, sigmas = [colours[0]] * 4, [np.array([1.5], np.float32)] * 4

    @pipeline_def
    def graph():
        frames = fn.external_source(source=lambda: samples, batch=True, layout=layout)
        if constant:
            return _colour_and_blur(frames, colours[0].ravel().tolist(), 1.5, layout=layout)
        colour = fn.external_source(source=lambda: colours, batch=True, dtype=types.FLOAT)
        sigma = fn.external_source(source=lambda: sigmas, batch=True, dtype=types.FLOAT)
        return _colour_and_blur(frames, colour, sigma, layout=layout)

    pipe = graph(batch_size=4, num_threads=2, device_id=None, exec_dynamic=True)
    pipe.build()
    (out,) = pipe.run()
    for i, sample in enumerate(samples):
        clip = sample if layout == "FHWC" else sample[None]
        want = reference.gaussian_blur(reference.colour(clip, colours[i]),
                                       float(sigmas[i][0]))
        got = np.asarray(out[i]) if layout == "FHWC" else np.asarray(out[i])[None]
        assert np.abs(got.astype(int) - want).max() <= 1
        assert out[i].layout() == layout
