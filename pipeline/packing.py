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
order, its hsv operator the hue in degrees); see pipeline.dali_graph._augment.
"""

from __future__ import annotations

import numpy as np

from pipeline.sampling import ViewParams

BOX = slice(0, 4)
X0, Y0, X1, Y1 = 0, 1, 2, 3
FLIP = 4
BRIGHTNESS, CONTRAST, SATURATION, HUE, BLUR_SIGMA = 5, 6, 7, 8, 9
PARAMS_WIDTH = 10


def pack_view_params(views: ViewParams) -> np.ndarray:
    """ViewParams with leading dims (...) -> (..., PARAMS_WIDTH) float32: box | flip | jitter."""
    return np.concatenate([views.box, views.flip[..., None], views.jitter],
                          axis=-1).astype(np.float32)
