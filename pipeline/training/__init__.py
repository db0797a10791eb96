"""Training: the LightningModule, device-side preprocessing, MLflow tracking and the run driver."""

from .module import ViTClassifier, param_groups, warmup_cosine
from .preprocess import DevicePreprocess
from .tracking import project_root, tracking_uri

__all__ = [
    "DevicePreprocess",
    "ViTClassifier",
    "param_groups",
    "project_root",
    "tracking_uri",
    "warmup_cosine",
]
