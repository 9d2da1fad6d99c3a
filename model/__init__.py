"""The learning method, pure PyTorch: encoder, correspondence, losses, heads and the objective.

Imports no DALI, Ray, MLflow or torch.distributed; anything distributed is passed in (see
model.objective.KeyGather).
"""

from model.config import LossConfig, ModelConfig
from model.correspondence import ViewGeometry, clip_correspondence, correspondence_matrix
from model.encoder import R3D18
from model.network import PretrainNetwork
from model.objective import LossBreakdown, Objective

__all__ = [
    "R3D18",
    "LossBreakdown",
    "LossConfig",
    "ModelConfig",
    "Objective",
    "PretrainNetwork",
    "ViewGeometry",
    "clip_correspondence",
    "correspondence_matrix",
]
