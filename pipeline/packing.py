"""The per-view parameter row that both decode backends (DALI and the PyAV reference) read.

numpy only. One float32 row of PARAMS_WIDTH values per view: the view's ViewParams box, flip and
jitter side by side, in ViewParams' own conventions (box (x0, y0, x1, y1) normalised to the
source frame; hue a fraction of the colour circle), so there is one box order and one hue unit
from the sampler to the graph. Backends read columns by these names, never by position:

    BOX         0:4  (x0, y0, x1, y1), normalised
    FLIP        4    0 or 1
    BRIGHTNESS  5    factor
    CONTRAST    6    factor, around mid-grey 128
    SATURATION  7    factor
    HUE         8    shift, fraction of the colour circle
    BLUR_SIGMA  9    Gaussian sigma in pixels (0: no blur)

The DALI graph converts where DALI wants another form (its resize takes the ROI in (y, x)
order); see pipeline.dali_graph._augment. The colour jitter columns are applied by both backends
as one affine map of RGB (`colour_affine`), so there is also one colour formula.
"""

from __future__ import annotations

import numpy as np

from pipeline.sampling import ViewParams

BOX = slice(0, 4)
X0, Y0, X1, Y1 = 0, 1, 2, 3
FLIP = 4
BRIGHTNESS, CONTRAST, SATURATION, HUE, BLUR_SIGMA = 5, 6, 7, 8, 9
PARAMS_WIDTH = 10


# RGB <-> YIQ (NTSC), the space of DALI's hsv operator: hue turns the (I, Q) chroma plane.
RGB_TO_YIQ = np.array([[0.299, 0.587, 0.114],
                       [0.596, -0.274, -0.321],
                       [0.211, -0.523, 0.311]])
YIQ_TO_RGB = np.linalg.inv(RGB_TO_YIQ)


def colour_affine(rows: np.ndarray) -> np.ndarray:
    """Packed rows (..., PARAMS_WIDTH) -> (..., 3, 4) float32 [M | T], each view's colour jitter
    as one affine map of RGB column vectors in 0..255, rgb' = M rgb + T:

        brightness b, contrast c around mid-grey:   b (128 + c (rgb - 128))
        then hue h and saturation s in YIQ:         chroma (I, Q) turned by 2 pi h, scaled by s

    Backends apply it in one pass and round and clip once (DALI's brightness_contrast then
    hsv take two passes, cost about twice as much on the CPU and clip in between)."""
    angle = 2 * np.pi * rows[..., HUE].astype(np.float64)
    saturation = rows[..., SATURATION].astype(np.float64)
    chroma = np.zeros(rows.shape[:-1] + (3, 3))
    chroma[..., 0, 0] = 1.0
    chroma[..., 1, 1] = chroma[..., 2, 2] = saturation * np.cos(angle)
    chroma[..., 1, 2] = saturation * np.sin(angle)
    chroma[..., 2, 1] = -saturation * np.sin(angle)
    hue_saturation = YIQ_TO_RGB @ chroma @ RGB_TO_YIQ  # (..., 3, 3)
    brightness = rows[..., BRIGHTNESS].astype(np.float64)
    contrast = rows[..., CONTRAST].astype(np.float64)
    matrix = (brightness * contrast)[..., None, None] * hue_saturation
    offset = (128.0 * brightness * (1 - contrast))[..., None] * hue_saturation.sum(-1)
    return np.concatenate([matrix, offset[..., None]], axis=-1).astype(np.float32)


def pack_view_params(views: ViewParams) -> np.ndarray:
    """ViewParams with leading dims (...) -> (..., PARAMS_WIDTH) float32: box | flip | jitter."""
    return np.concatenate([views.box, views.flip[..., None], views.jitter],
                          axis=-1).astype(np.float32)
