"""The trained-model file: the one artifact a trained variant hands downstream.

One ``safetensors`` file: the ViT's weights under timm's names (so timm, or our fine-tuning, loads
it as any timm checkpoint) and, as string metadata, everything needed to use it: the model config
(``vit_config``), the class names (``classes``), the device-side preprocessing (``preprocess``)
and a free-form record (``info``: the variant, its MLflow run, ...), with ``format``
(``vit-pretraining/<version>``): one :class:`ModelFileMeta`, written and read by the same code.
:func:`save_model_file` writes the file atomically; :func:`load_model_file` gives back the
:class:`ImageClassifier`; a file of another format version, or not of this pipeline, is refused
with one line naming it. Evaluation,
``predict``, serving, the ``pretrained`` stage and fine-tuning read this file and nothing else;
Lightning's ``.ckpt`` files exist only to resume training.

    >>> save_model_file(classifier, "models/scratch/model.safetensors", classes=["cat", "dog"])
    >>> trained = load_model_file("models/scratch/model.safetensors")
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
from ..layout import MODEL_FILE
from .classifier import ImageClassifier
from .preprocess import DevicePreprocess
from .variants import ViTConfig
from .vit import VisionTransformer

__all__ = ["FORMAT", "MODEL_FILE", "ModelFileMeta", "TrainedModel", "load_model_file",
           "read_model_file", "save_model_file"]

FORMAT = "vit-pretraining/1"  # metadata "format": what wrote the file, and its version


@dataclass
class TrainedModel:
    classifier: ImageClassifier  # in eval mode, on the CPU
    classes: list[str]
    info: dict = field(default_factory=dict)

    @property
    def cfg(self) -> ViTConfig:
        return self.classifier.cfg


@dataclass(frozen=True)
class ModelFileMeta:
    """A model file's metadata (safetensors metadata is a str -> str map: JSON values)."""

    config: ViTConfig | None = None  # None: bare weights (a pretrained source's)
    classes: tuple[str, ...] | None = None
    preprocess: dict | None = None  # DevicePreprocess.to_dict()
    info: dict = field(default_factory=dict)
    format: str = FORMAT

    def to_strings(self) -> dict[str, str]:
        out = {"format": self.format, "info": json.dumps(self.info, default=str)}
        if self.config is not None:
            out["vit_config"] = json.dumps(self.config.to_dict())
        if self.classes is not None:
            out["classes"] = json.dumps(list(self.classes))
        if self.preprocess is not None:
            out["preprocess"] = json.dumps(self.preprocess)
        return out

    @classmethod
    def from_strings(cls, meta: dict[str, str], path: Path) -> ModelFileMeta:
        """The metadata of the model file ``path``; CheckpointError (one line) when it is not of
        this pipeline, of another format version, or unreadable."""
        fmt = meta.get("format")
        if fmt != FORMAT:
            if isinstance(fmt, str) and fmt.startswith(FORMAT.split("/")[0] + "/"):
                raise CheckpointError(f"{path} is a model file of format {fmt}; this pipeline "
                                      f"reads {FORMAT}: re-run the stage that writes it "
                                      "(dvc repro)")
            raise CheckpointError(f"{path} is not a model file of this pipeline (no format "
                                  f"{FORMAT!r} in its metadata); pretrained weights are loaded "
                                  "with load_pretrained")
        try:
            config = ViTConfig(**json.loads(meta["vit_config"])) if "vit_config" in meta else None
            classes = tuple(json.loads(meta["classes"])) if "classes" in meta else None
            pre = json.loads(meta["preprocess"]) if "preprocess" in meta else None
            info = json.loads(meta.get("info") or "{}")
        except (ValueError, TypeError) as e:
            raise CheckpointError(f"{path}: unreadable metadata ({e}); re-run the stage that "
                                  "writes it (dvc repro)") from None
        return cls(config, classes, pre, info, fmt)


def save_model_file(model: nn.Module | dict[str, torch.Tensor], path: str | Path, *,
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
    meta = ModelFileMeta(config, None if classes is None else tuple(classes), preprocess,
                         info or {})
    from safetensors.torch import save_file

    return atomic_write(path, lambda tmp: save_file(state, str(tmp),
                                                    metadata=meta.to_strings()))


def read_model_file(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """(weights, raw metadata) of a ``.safetensors`` file; CheckpointError naming the file when
    it is missing, truncated or not safetensors."""
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


def load_model_file(path: str | Path) -> TrainedModel:
    """The :class:`TrainedModel` in a file written by :func:`save_model_file` from a classifier
    or a ViT; CheckpointError (one line, naming the file) for anything else."""
    state, raw = read_model_file(path)
    meta = ModelFileMeta.from_strings(raw, Path(path))
    cfg = meta.config
    if cfg is None:
        raise CheckpointError(f"{path} has no model config in its metadata: not a model file "
                              "of this pipeline (pretrained weights are loaded with "
                              "load_pretrained)")
    classes = meta.classes or tuple(str(i) for i in range(cfg.num_classes))
    pre = meta.preprocess or {"img_size": cfg.img_size, "in_chans": cfg.in_chans}
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
    return TrainedModel(classifier, list(classes), meta.info)
