"""The per-view parameter row that both decode backends (DALI and the PyAV reference) read.

numpy only. One float32 row of PARAMS_WIDTH values per view, in the order the graph consumes:

    0:4  roi (y0, x0, y1, x1), normalised (DALI's resize takes the ROI in (H, W) order)
    4    flip (0 or 1)
    5    brightness factor    6  contrast factor (around mid-grey 128)
    7    saturation factor    8  hue shift in degrees (ViewParams stores a fraction of 360)
    9    blur sigma (0: no blur)
"""

from __future__ import annotations

import numpy as np

from pipeline.sampling import ViewParams

PARAMS_WIDTH = 10


def pack_view_params(views: ViewParams) -> np.ndarray:
    """ViewParams with leading dims (...) -> (..., PARAMS_WIDTH) float32."""
    x0, y0, x1, y1 = np.moveaxis(views.box, -1, 0)
    jitter = views.jitter
    return np.stack([y0, x0, y1, x1, views.flip.astype(np.float32), jitter[..., 0],
                     jitter[..., 1], jitter[..., 2], jitter[..., 3] * 360.0, jitter[..., 4]],
                    axis=-1).astype(np.float32)
