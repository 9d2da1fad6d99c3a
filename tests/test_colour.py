"""The colour jitter as one affine map (pipeline.packing.colour_affine): reference, properties."""

from __future__ import annotations

import math

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.packing import BRIGHTNESS, CONTRAST, HUE, PARAMS_WIDTH, SATURATION, colour_affine


def row(brightness=1.0, contrast=1.0, saturation=1.0, hue=0.0) -> np.ndarray:
    out = np.zeros(PARAMS_WIDTH, np.float32)
    out[[BRIGHTNESS, CONTRAST, SATURATION, HUE]] = brightness, contrast, saturation, hue
    return out


def naive_jitter(rgb: tuple[float, float, float], brightness: float, contrast: float,
                 saturation: float, hue: float) -> np.ndarray:
    """One pixel, step by step, nothing clipped: brightness/contrast around 128, to YIQ (the
    NTSC coefficients DALI's hsv uses), turn (I, Q) by 2 pi hue and scale them by saturation,
    back to RGB by solving the forward conversion."""
    r, g, b = (brightness * (128 + contrast * (c - 128)) for c in rgb)
    y = 0.299 * r + 0.587 * g + 0.114 * b
    i = 0.596 * r - 0.274 * g - 0.321 * b
    q = 0.211 * r - 0.523 * g + 0.311 * b
    angle = 2 * math.pi * hue
    i, q = (saturation * (i * math.cos(angle) + q * math.sin(angle)),
            saturation * (-i * math.sin(angle) + q * math.cos(angle)))
    forward = [[0.299, 0.587, 0.114], [0.596, -0.274, -0.321], [0.211, -0.523, 0.311]]
    return np.linalg.solve(forward, [y, i, q])


@settings(max_examples=60, deadline=None)
@given(st.floats(0.6, 1.4), st.floats(0.6, 1.4), st.floats(0.6, 1.4), st.floats(-0.1, 0.1),
       st.tuples(*[st.floats(0, 255)] * 3))
def test_the_affine_map_matches_the_step_by_step_jitter(brightness, contrast, saturation, hue,
                                                        rgb):
    affine = colour_affine(row(brightness, contrast, saturation, hue)).astype(np.float64)
    mapped = affine[:, :3] @ np.array(rgb) + affine[:, 3]
    np.testing.assert_allclose(mapped, naive_jitter(rgb, brightness, contrast, saturation, hue),
                               atol=1e-3)


def test_identity_values_give_the_identity_map_and_hue_and_saturation_keep_grey():
    np.testing.assert_allclose(colour_affine(row()), np.eye(3, 4), atol=1e-6)
    turned = colour_affine(row(saturation=1.3, hue=0.1)).astype(np.float64)
    for grey in (0.0, 77.0, 200.0):  # (almost) no chroma: hue and saturation keep grey
        # (within 0.15%: the 3-decimal I and Q rows sum to +-0.001, not 0)
        np.testing.assert_allclose(turned[:, :3] @ np.full(3, grey) + turned[:, 3], grey,
                                   rtol=1.5e-3, atol=1e-3)
    darker = colour_affine(row(brightness=0.5)).astype(np.float64)
    np.testing.assert_allclose(darker[:, :3] @ np.array([10.0, 100.0, 250.0]) + darker[:, 3],
                               [5.0, 50.0, 125.0], atol=1e-3)
    flat = colour_affine(row(contrast=0.0)).astype(np.float64)  # contrast 0: all mid-grey
    np.testing.assert_allclose(flat[:, :3] @ np.array([0.0, 30.0, 255.0]) + flat[:, 3], 128.0,
                               atol=1e-3)


def test_rows_of_any_leading_shape_map_row_by_row():
    rows = np.stack([row(1.2, 0.8, 1.1, 0.05), row(0.7, 1.3, 0.6, -0.08)])
    batch = np.stack([rows, rows[::-1]])  # (2, 2, PARAMS_WIDTH)
    out = colour_affine(batch)
    assert out.shape == (2, 2, 3, 4) and out.dtype == np.float32
    np.testing.assert_array_equal(out[1, 0], colour_affine(rows[1]))
