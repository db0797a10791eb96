"""Training: the LightningModule, MLflow tracking, resuming and the run driver (:func:`run.fit`)."""

from .module import ViTClassifier, param_groups, warmup_cosine

__all__ = ["ViTClassifier", "param_groups", "warmup_cosine"]
