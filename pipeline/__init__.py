"""The data pipeline: seeded view sampling, DALI decoding with controllable augmentations, loaders.

Only this package's dali_*.py modules import DALI, and only when a DALI backend is used.
"""

from pipeline.config import AugmentConfig
from pipeline.loader import (
    ClipBatch,
    PretrainBatch,
    build_eval_loader,
    build_pretrain_loader,
    build_supervised_loader,
)
from pipeline.sampling import ViewParams

__all__ = ["AugmentConfig", "ClipBatch", "PretrainBatch", "ViewParams", "build_eval_loader",
           "build_pretrain_loader", "build_supervised_loader"]
