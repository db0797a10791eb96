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
    img_size: PosInt
    # sizes: a named variant carries them (set one to override it); "custom" needs embed_dim,
    # depth and num_heads, and takes patch_size 16 unless given
    patch_size: PosInt | None = None  # variant "custom" only: a named variant's name holds it
    embed_dim: PosInt | None = None
    depth: PosInt | None = None
    num_heads: PosInt | None = None
    mlp_ratio: Annotated[float, Field(gt=0)] | None = None
    dropout: Fraction = 0.0
    attn_dropout: Fraction = 0.0
    drop_path: Fraction = 0.0  # stochastic depth of the last block (linear from 0)
    # the options of the public checkpoint families (ViTConfig, timm's meanings); the defaults
    # are the paper's ViT, and a pretrained checkpoint that needs others names them when loaded
    class_token: bool = True
    global_pool: Literal[GLOBAL_POOLS] = "token"  # token needs class_token; avg: patch mean
    fc_norm: bool | None = None  # LayerNorm after pooling; null: with avg pooling (timm's rule)
    reg_tokens: NonNegInt = 0  # register tokens (DINOv2 with registers: 4)
    no_embed_class: bool = False  # position embeddings for the patches only
    layer_scale: Annotated[float, Field(gt=0.0)] | None = None  # LayerScale init; null = off
    pre_norm: bool = False  # LayerNorm before the blocks (CLIP)
    qkv_bias: bool = True
    act: Literal[ACTIVATIONS] = "gelu"  # not in the weights: set it
    layer_norm_eps: Annotated[float, Field(gt=0.0, lt=1.0)] = 1e-6  # CLIP: 1e-5
    # the input normalisation the weights were trained with, per RGB channel (applied on the
    # device after scaling to [0, 1]): timm's augreg ViTs 0.5 / 0.5; CLIP, DINOv2 and DeiT their
    # own (docs/real-experiment.md, "Which pretraining?"); recorded in every trained model file
    mean: tuple[Unit, Unit, Unit] = (0.5, 0.5, 0.5)
    std: tuple[PosFloat, PosFloat, PosFloat] = (0.5, 0.5, 0.5)

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
    name: Literal["adamw"]
    lr: Annotated[float, Field(gt=0.0)]
    weight_decay: Annotated[float, Field(ge=0.0)] = 0.05  # only on >=2-D weights
    betas: tuple[Fraction, Fraction] = (0.9, 0.999)


class SGDParams(Strict):
    name: Literal["sgd"]
    lr: Annotated[float, Field(gt=0.0)]
    weight_decay: Annotated[float, Field(ge=0.0)] = 0.0  # only on >=2-D weights
    momentum: Fraction = 0.9


# each optimizer holds only its own fields; `name` says which one
OptimizerParams = Annotated[AdamWParams | SGDParams, Field(discriminator="name")]


class TrainParams(Strict):
    epochs: PosInt
    batch_size: PosInt
    warmup_epochs: Annotated[float, Field(ge=0.0)]
    label_smoothing: Fraction = 0.0
    grad_clip: Annotated[float, Field(gt=0.0)] | None = None  # global norm; null = off
    optimizer: OptimizerParams
    # EMA of the weights (Lightning's EMAWeightAveraging), used for validation and saved in the
    # checkpoints; null = off
    ema_decay: Annotated[float, Field(gt=0.0, lt=1.0)] | None = None
    # a floor on optimizer steps: a small budget's epochs pass over its labelled images several
    # times, enough for ceil(min_steps / epochs) steps each; the epochs (and warmup, the frozen
    # start, validation, checkpoints) stay as set; null: one pass per epoch
    min_steps: PosInt | None = None
    # gradient accumulation (Lightning's accumulate_grad_batches): one optimizer step per this
    # many batches, for the paper's batch size on a smaller GPU (batch_size x this per step and
    # device); the schedule (warmup, cosine, freeze_epochs) and min_steps count optimizer steps
    accumulate_grad_batches: PosInt = 1

    @model_validator(mode="after")
    def _warmup_fits(self) -> TrainParams:
        if self.warmup_epochs > self.epochs:
            raise ValueError(f"warmup_epochs={self.warmup_epochs} > epochs={self.epochs}")
        return self


class RandAugmentParams(Strict):
    """RandAugment (Cubuk et al. 2020): ``num_ops`` random ops per image at one ``magnitude``."""

    num_ops: Annotated[int, Field(ge=1, le=14)]
    magnitude: Annotated[float, Field(ge=0.0, le=30.0)]  # 0-30 scale; 9-10 is the usual one


class AugmentParams(Strict):
    crop_padding: NonNegInt  # pad-and-random-crop on the small uint8 image
    hflip: bool
    randaugment: RandAugmentParams | None = None  # CPU side, albumentations; null = off
    erasing: Fraction = 0.0  # random-erasing probability (Zhong et al. 2020), CPU side
    # on the device, per batch: Mixup (Beta(a, a) blend) or CutMix (Beta(a, a) box); 0 = off;
    # with both on, each batch takes one of them at random
    mixup_alpha: NonNegFloat = 0.0
    cutmix_alpha: NonNegFloat = 0.0
    mix_prob: Annotated[float, Field(ge=0.0, le=1.0)] = 0.0  # fraction of batches mixed
    # repeated augmentation (Hoffer et al. 2020; DeiT's RASampler, timm's --aug-repeats): each
    # image drawn this many times in a row, each copy with its own augmentation (under DDP the
    # copies land on different ranks); an epoch keeps its length, so it sees 1/repeats of the
    # images; 1 = off
    repeats: PosInt = 1

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
    model: ModelParams
    train: TrainParams
    augment: AugmentParams

    def backbone(self) -> BackboneSchedule:
        return BackboneSchedule()


class FinetuneRecipe(Recipe):
    pretrained: Name  # a key of the `pretrained` section: the weights this variant starts from
    freeze_epochs: NonNegInt  # backbone frozen (head only) for this many epochs
    backbone_lr_scale: Annotated[float, Field(gt=0.0, le=1.0)]
    # layer-wise lr decay (BEiT, MAE): block i of `depth` at lr * decay^(depth - i), the patch and
    # position embeddings one layer below block 0, the final norm and head at the full lr; times
    # backbone_lr_scale for the backbone; null = off (0.65-0.75 is usual for B/16)
    layer_decay: Annotated[float, Field(gt=0.0, le=1.0)] | None = None

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
    val_fraction: Annotated[float, Field(gt=0.0, lt=1.0)]
    max_train: PosInt | None
