"""The contrastive losses, one pure function per file: L_rc (region_contrast) and L_nce (info_nce).

The MINE bound lives in model.mine and the temporal heads in model.temporal; model.objective
assembles everything.
"""

from model.losses.info_nce import info_nce_loss
from model.losses.region_contrast import region_contrast_loss

__all__ = ["info_nce_loss", "region_contrast_loss"]
