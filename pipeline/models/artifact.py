"""The trained-model file: the one artifact a trained variant hands downstream.

One ``safetensors`` file: the ViT's weights under timm's names (so timm, or our fine-tuning, loads
it as any timm checkpoint) and, as string metadata, everything needed to use it: the model config
(``vit_config``), the class names (``classes``), the device-side preprocessing (``preprocess``)
and a free-form record (``info``: the variant, its MLflow run, ...). :func:`save_checkpoint`
writes it atomically; :func:`load_classifier` gives back the :class:`ImageClassifier`. Evaluation,
``predict``, serving, the ``pretrained`` stage and fine-tuning read this file and nothing else;
Lightning's ``.ckpt`` files exist only to resume training.

    >>> save_checkpoint(classifier, "models/scratch/model.safetensors", classes=["cat", "dog"])
    >>> trained = load_classifier("models/scratch/model.safetensors")
    >>> trained.classifier(images), trained.classes
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from ..atomic import atomic_write
from ..errors import CheckpointError
from .classifier import ImageClassifier
from .preprocess import DevicePreprocess
from .variants import ViTConfig
from .vit import VisionTransformer

MODEL_FILE = "model.safetensors"
MODEL_ARTIFACT = f"trained/{MODEL_FILE}"  # where training logs it in its MLflow run
FORMAT = "vit-pretraining/1"  # metadata "format": what wrote the file, and its version


@dataclass
class TrainedModel:
    classifier: ImageClassifier  # in eval mode, on the CPU
    classes: list[str]
    info: dict = field(default_factory=dict)

    @property
    def cfg(self) -> ViTConfig:
        return self.classifier.cfg


def save_checkpoint(model: nn.Module | dict[str, torch.Tensor], path: str | Path, *,
                    classes: list[str] | None = None, info: dict | None = None,
                    config: ViTConfig | None = None) -> Path:
    """Write ``model``'s weights (timm names) with their metadata to ``path``, atomically.

    ``model``: an :class:`ImageClassifier` (config and preprocessing recorded), a
    :class:`VisionTransformer` (config recorded), or a bare state dict (weights from elsewhere:
    ``config`` if known)."""
    preprocess = None
    if isinstance(model, ImageClassifier):
        preprocess, model = model.preprocess.to_dict(), model.vit
    if isinstance(model, VisionTransformer):
        config, state = model.cfg, model.state_dict()
    else:
        state = dict(model)
    state = {k: v.detach().contiguous().cpu() for k, v in state.items()}
    metadata = {"format": FORMAT, "info": json.dumps(info or {}, default=str)}
    if config is not None:
        metadata["vit_config"] = json.dumps(config.to_dict())
    if classes is not None:
        metadata["classes"] = json.dumps(list(classes))
    if preprocess is not None:
        metadata["preprocess"] = json.dumps(preprocess)
    from safetensors.torch import save_file

    return atomic_write(path, lambda tmp: save_file(state, str(tmp), metadata=metadata))


def read_model_file(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """(weights, metadata) of a ``.safetensors`` file; CheckpointError naming the file when it is
    missing, truncated or not safetensors."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no model file at {path}: run the stage that trains it first "
                              "(dvc repro)")
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
            state = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 - not a dict
    except Exception as e:  # noqa: BLE001 - safetensors raises its own error types
        raise CheckpointError(f"{path} is not a readable model file (truncated or corrupt: "
                              f"{type(e).__name__}: {e}); delete it and re-run the stage that "
                              "writes it (dvc repro)") from None
    return state, metadata


def load_classifier(path: str | Path) -> TrainedModel:
    """The :class:`TrainedModel` in a file written by :func:`save_checkpoint` from a classifier
    or a ViT; CheckpointError (one line, naming the file) for anything else."""
    state, meta = read_model_file(path)
    try:
        cfg = ViTConfig(**json.loads(meta["vit_config"]))
        classes = json.loads(meta["classes"]) if "classes" in meta else \
            [str(i) for i in range(cfg.num_classes)]
        pre = json.loads(meta["preprocess"]) if "preprocess" in meta else \
            {"img_size": cfg.img_size, "in_chans": cfg.in_chans}
        info = json.loads(meta.get("info") or "{}")
    except KeyError:
        raise CheckpointError(f"{path} has no model config in its metadata: not a model file of "
                              "this pipeline (pretrained weights are loaded with "
                              "load_pretrained)") from None
    except (ValueError, TypeError) as e:
        raise CheckpointError(f"{path}: unreadable metadata ({e}); re-run the stage that "
                              "writes it (dvc repro)") from None
    if len(classes) != cfg.num_classes:
        raise CheckpointError(f"{path}: {len(classes)} class names for {cfg.num_classes} "
                              "outputs; re-run the stage that writes it (dvc repro)")
    vit = VisionTransformer(cfg)
    try:
        vit.load_state_dict(state)
    except RuntimeError as e:
        first = str(e).strip().splitlines()[:3]
        raise CheckpointError(f"{path}: the weights do not fit its own config "
                              f"({' '.join(first)})") from None
    classifier = ImageClassifier(vit, DevicePreprocess(**pre)).eval()
    return TrainedModel(classifier, list(classes), info)
