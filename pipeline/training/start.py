"""The model a training run starts from: a variant's ViT, randomly initialised by the run's seed
(scratch), or with the pretrained weights loaded into it (a fine-tune variant; any checkpoint
layout :func:`~pipeline.models.weights.load_pretrained` reads), behind the variant's input
normalisation. Shared by the training cells and the trials of a search."""

from __future__ import annotations

from pathlib import Path

import lightning as L

from ..config import Recipe
from ..models.classifier import ImageClassifier
from ..models.vit import VisionTransformer
from ..models.weights import load_pretrained


def start_model(recipe: Recipe, *, num_classes: int, seed: int,
                pretrained: Path | None = None) -> ImageClassifier:
    """``recipe``'s model with ``num_classes`` outputs, its initial weights drawn with ``seed``
    (which also seeds what follows: data order, augmentation), then ``pretrained`` loaded."""
    L.seed_everything(seed, verbose=False)
    vit = VisionTransformer(recipe.model.vit_config(num_classes=num_classes))
    if pretrained is not None:
        load_pretrained(vit, pretrained)
    return ImageClassifier(vit, **recipe.model.normalisation)
