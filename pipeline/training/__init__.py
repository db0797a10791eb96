"""Training: one run of one model (:func:`fit.fit` of a :class:`fit.TrainingJob`), the
LightningModule (:mod:`.lightning_module`), the Trainer and its callbacks (:mod:`.trainer`),
resuming (:mod:`.resume`), per-epoch history, finite checkpoints, Mixup/CutMix, and what the
Trainer runs on (:mod:`.hardware`). Its MLflow run is :mod:`pipeline.tracking`'s."""

from .lightning_module import LitClassifier, param_groups, warmup_cosine

__all__ = ["LitClassifier", "param_groups", "warmup_cosine"]
