"""A variant's recipe (:class:`Recipe`): its model (:class:`ModelParams`), training
(:class:`TrainParams`, the optimizer) and augmentation (:class:`AugmentParams`); a fine-tune
variant's adds its pretrained weights and frozen start (:class:`FinetuneRecipe`), pretraining
here its dataset (:class:`PretrainRecipe`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Literal

from pydantic import Field, model_validator

from ..models.variants import ACTIVATIONS, GLOBAL_POOLS, ViTConfig, variant_config
from .fields import Dataset, Fraction, Name, NonNegFloat, NonNegInt, PosFloat, PosInt, Strict, Unit


class ModelParams(Strict):
    """A variant by the paper's name (``"B/16"``) or ``"custom"``; explicit sizes override it."""

    variant: str
    """A size from the paper with its patch size (``Ti/16``, ``S/16``, ``B/16``, ``L/16``,
    ``H/14``, any patch, e.g. ``S/4``) or ``custom``."""
    img_size: PosInt
    """Input resolution: images are resized to it on the device."""
    patch_size: PosInt | None = None
    """Patch size of a ``custom`` variant [16 when left out]; a named variant's name holds it."""
    embed_dim: PosInt | None = None
    """Width; a named variant carries it and a value here overrides it (``custom``: needed)."""
    depth: PosInt | None = None
    """Transformer blocks; as ``embed_dim``."""
    num_heads: PosInt | None = None
    """Attention heads; as ``embed_dim``."""
    mlp_ratio: Annotated[float, Field(gt=0)] | None = None
    """MLP hidden width over ``embed_dim``; a named variant carries its own (4 for the
    paper's)."""
    dropout: Fraction = 0.0
    """Dropout after the embeddings, the attention projection and the MLP."""
    attn_dropout: Fraction = 0.0
    """Dropout on the attention weights."""
    drop_path: Fraction = 0.0
    """Stochastic depth rate of the last block, rising linearly from 0 at the first."""
    class_token: bool = True
    """A [CLS] token. This and the options down to ``layer_norm_eps`` are those of the public
    checkpoint families, in timm's meanings; the defaults are the paper's ViT, and loading a
    checkpoint that needs others names them."""
    global_pool: Literal[GLOBAL_POOLS] = "token"
    """``token``: the [CLS] token's output (needs ``class_token``); ``avg``: the patches'
    mean."""
    fc_norm: bool | None = None
    """LayerNorm after pooling; ``null``: on with ``avg`` pooling (timm's rule)."""
    reg_tokens: NonNegInt = 0
    """Register tokens (DINOv2 with registers: 4)."""
    no_embed_class: bool = False
    """Position embeddings for the patches only, not the [CLS] token."""
    layer_scale: Annotated[float, Field(gt=0.0)] | None = None
    """LayerScale's initial value; ``null``: off."""
    pre_norm: bool = False
    """A LayerNorm before the blocks (CLIP)."""
    qkv_bias: bool = True
    """Bias on the attention's query, key and value projections."""
    act: Literal[ACTIVATIONS] = "gelu"
    """The MLP's activation: ``quick_gelu`` for OpenAI CLIP, ``gelu_tanh`` for SigLIP; not in
    the weights, so set it."""
    layer_norm_eps: Annotated[float, Field(gt=0.0, lt=1.0)] = 1e-6
    """LayerNorm epsilon (CLIP: 1e-5)."""
    mean: tuple[Unit, Unit, Unit] = (0.5, 0.5, 0.5)
    """Input normalisation mean per RGB channel, applied on the device after scaling to [0, 1]:
    that of the weights' training (timm's augreg ViTs 0.5; CLIP, DINOv2 and DeiT their own,
    docs/real-experiment.md); recorded in every trained model file."""
    std: tuple[PosFloat, PosFloat, PosFloat] = (0.5, 0.5, 0.5)
    """Input normalisation standard deviation per RGB channel, as ``mean``."""

    @model_validator(mode="after")
    def _buildable(self) -> ModelParams:
        self.vit_config(num_classes=1)  # ValueError names the clash
        return self

    @property
    def normalisation(self) -> dict[str, tuple[float, ...]]:
        """``{"mean": ..., "std": ...}``, as :class:`~pipeline.models.ImageClassifier` takes them."""
        return {"mean": tuple(self.mean), "std": tuple(self.std)}

    def vit_config(self, *, num_classes: int) -> ViTConfig:
        """RGB always: grayscale data is expanded on the device, as pretrained ViTs expect."""
        overrides = self.model_dump(exclude={"variant", "mean", "std"}, exclude_none=True)
        if self.variant != "custom" and "patch_size" in overrides:
            raise ValueError(
                f"patch_size is part of the variant name ({self.variant!r}); "
                "set it only with variant 'custom'"
            )
        if self.variant == "custom":
            missing = [k for k in ("embed_dim", "depth", "num_heads") if k not in overrides]
            if missing:
                raise ValueError(f"variant 'custom' needs {missing}")
            overrides.setdefault("patch_size", 16)
        return variant_config(self.variant, num_classes=num_classes, in_chans=3, **overrides)


class AdamWParams(Strict):
    """AdamW (decoupled weight decay)."""

    name: Literal["adamw"]
    """Which optimizer; a key of the other one is refused."""
    lr: Annotated[float, Field(gt=0.0)]
    """Peak learning rate (after warmup; the head's when fine-tuning)."""
    weight_decay: Annotated[float, Field(ge=0.0)] = 0.05
    """Decoupled weight decay, on weights of 2 or more dimensions only."""
    betas: tuple[Fraction, Fraction] = (0.9, 0.999)
    """Adam's moment decay rates."""


class SGDParams(Strict):
    """SGD with momentum (the ViT paper's fine-tuning optimizer)."""

    name: Literal["sgd"]
    """Which optimizer; a key of the other one is refused."""
    lr: Annotated[float, Field(gt=0.0)]
    """Peak learning rate (after warmup; the head's when fine-tuning)."""
    weight_decay: Annotated[float, Field(ge=0.0)] = 0.0
    """L2 weight decay, on weights of 2 or more dimensions only."""
    momentum: Fraction = 0.9
    """Momentum."""


# each optimizer holds only its own fields; `name` says which one
OptimizerParams = Annotated[AdamWParams | SGDParams, Field(discriminator="name")]


class TrainParams(Strict):
    """The schedule: linear warmup, then cosine decay to 0, stepped per optimizer step."""

    epochs: PosInt
    """Training epochs."""
    batch_size: PosInt
    """Batch size per device."""
    warmup_epochs: Annotated[float, Field(ge=0.0)]
    """Linear warmup (fractions allowed), at most ``epochs``."""
    label_smoothing: Fraction = 0.0
    """Cross-entropy label smoothing, also applied to Mixup and CutMix targets."""
    grad_clip: Annotated[float, Field(gt=0.0)] | None = None
    """Clip the global gradient norm to this; ``null``: off."""
    optimizer: OptimizerParams
    """``name: adamw`` or ``name: sgd`` with that optimizer's fields only."""
    ema_decay: Annotated[float, Field(gt=0.0, lt=1.0)] | None = None
    """An EMA of the weights updated every step (Lightning's ``EMAWeightAveraging``), used for
    validation and saved as the checkpoints' weights; ``null``: off."""
    min_steps: PosInt | None = None
    """A floor on optimizer steps for small label budgets: each epoch passes over the labelled
    images as often as it takes to give every rank ``ceil(min_steps / epochs)`` full batches
    (each pass in its own order, each repeat with its own augmentation); the epochs, warmup,
    ``freeze_epochs``, validation and checkpoints stay as set. ``null``: one pass per epoch."""
    accumulate_grad_batches: PosInt = 1
    """Gradient accumulation (Lightning's): one optimizer step per this many batches, so the
    effective batch is ``batch_size × accumulate_grad_batches × devices``; the warmup, the
    cosine, ``freeze_epochs``, ``min_steps``, validation and MLflow's step axis count
    optimizer steps."""

    @model_validator(mode="after")
    def _warmup_fits(self) -> TrainParams:
        if self.warmup_epochs > self.epochs:
            raise ValueError(f"warmup_epochs={self.warmup_epochs} > epochs={self.epochs}")
        return self


class RandAugmentParams(Strict):
    """RandAugment (Cubuk et al. 2020): ``num_ops`` random ops per image at one ``magnitude``."""

    num_ops: Annotated[int, Field(ge=1, le=14)]
    """Ops drawn per image (with replacement) from RandAugment's ops, built from
    albumentations transforms."""
    magnitude: Annotated[float, Field(ge=0.0, le=30.0)]
    """Strength on timm's scale (at 10: rotate 30°, shear 0.3, translate 45%; 9 to 10 is
    usual), each op's strength drawn up to it."""


class AugmentParams(Strict):
    """Training augmentation: the crop, flip, RandAugment and erasing on the CPU (albumentations,
    on the small uint8 images), Mixup and CutMix on the device."""

    crop_padding: NonNegInt
    """Pad by this many pixels (reflect) and crop back at random; 0: off."""
    hflip: bool
    """Random horizontal flip."""
    randaugment: RandAugmentParams | None = None
    """RandAugment (Cubuk et al. 2020); ``null``: off."""
    erasing: Fraction = 0.0
    """Random-erasing probability (Zhong et al. 2020): 2 to 33% of the area, random pixels."""
    mixup_alpha: NonNegFloat = 0.0
    """Mixup's Beta(α, α) (torchvision's ``v2.MixUp``); 0: off. With CutMix on too, each mixed
    batch takes one of them at random."""
    cutmix_alpha: NonNegFloat = 0.0
    """CutMix's Beta(α, α) (torchvision's ``v2.CutMix``); 0: off."""
    mix_prob: Annotated[float, Field(ge=0.0, le=1.0)] = 0.0
    """Share of batches mixed."""
    repeats: PosInt = 1
    """Repeated augmentation (DeiT's ``RASampler``, timm's ``--aug-repeats``): each drawn image
    comes this many times in a row, each copy with its own augmentation (under DDP on different
    ranks in the same step); an epoch keeps its length, so it draws ``1/repeats`` of the
    images; 1: off."""

    @property
    def randaugment_args(self) -> tuple[int, float] | None:
        """``(num_ops, magnitude)`` as the data module takes it, or None."""
        ra = self.randaugment
        return None if ra is None else (ra.num_ops, ra.magnitude)


@dataclass(frozen=True)
class BackboneSchedule:
    """Fine-tuning's frozen start: the backbone trains from ``freeze_epochs`` on, at
    ``lr * lr_scale`` (scratch training: from epoch 0 at the full lr), times
    ``layer_decay ** (depth + 1 - layer)`` per layer when set (layer-wise lr decay)."""

    freeze_epochs: int = 0
    lr_scale: float = 1.0
    layer_decay: float | None = None


class Recipe(Strict):
    """A variant trained from random initialisation (``scratch.<variant>``)."""

    model: ModelParams
    """The ViT."""
    train: TrainParams
    """Its training."""
    augment: AugmentParams
    """Its augmentation."""

    def backbone(self) -> BackboneSchedule:
        return BackboneSchedule()


class FinetuneRecipe(Recipe):
    """A variant fine-tuned from pretrained weights (``finetune.<variant>``): a recipe with the
    weights it starts from and its frozen start."""

    pretrained: Name
    """A key of the ``pretrained`` section: the weights this variant starts from."""
    freeze_epochs: NonNegInt
    """Epochs of head-only training before the backbone is unfrozen (below ``epochs``)."""
    backbone_lr_scale: Annotated[float, Field(gt=0.0, le=1.0)]
    """Once unfrozen, the backbone trains at ``lr × backbone_lr_scale``, with a warmup of its
    own from there."""
    layer_decay: Annotated[float, Field(gt=0.0, le=1.0)] | None = None
    """Layer-wise lr decay (BEiT, MAE): block ``i`` of ``depth`` at ``lr × backbone_lr_scale ×
    layer_decay^(depth − i)``, the patch and position embeddings and class token at
    ``layer_decay^(depth + 1)``, the final norm at ``backbone_lr_scale``, the head at ``lr``;
    in each param group's own lr, so the warmup, the cosine and the frozen start apply to it.
    ``null``: off (0.65 to 0.75 is usual for B/16)."""

    def backbone(self) -> BackboneSchedule:
        return BackboneSchedule(self.freeze_epochs, self.backbone_lr_scale, self.layer_decay)

    @model_validator(mode="after")
    def _unfreezes(self) -> FinetuneRecipe:
        if self.freeze_epochs >= self.train.epochs:
            raise ValueError(
                f"freeze_epochs={self.freeze_epochs} must be < train.epochs={self.train.epochs}"
            )
        return self


class PretrainRecipe(Recipe):
    """Pretrain here (offline quick run): train on ``dataset``, export timm-format weights."""

    dataset: Dataset
    """The dataset to pretrain on."""
    val_fraction: Annotated[float, Field(gt=0.0, lt=1.0)]
    """Share of its training split held out for validation."""
    max_train: PosInt | None
    """Cap on its train+val pool; ``null``: all of it."""
