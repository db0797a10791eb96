"""Typed schema for ``params.yaml``: one section per DVC stage plus a shared ``base``.

Every stage loads its params through :func:`load_params`, so a typo (unknown key), a wrong type or an
out-of-range value stops the stage before any download, compute or deletion, with one message naming
the key path, the value and what is allowed. ``dvc exp run -S key=value`` edits ``params.yaml``
before the stage runs, so the same check covers it.

Variants: ``scratch`` and ``finetune`` map a variant name to its recipe, ``pretrained`` maps a
name to a weights source that fine-tune variants point at. ``dvc.yaml`` expands them with
``foreach`` (one stage per variant); names are unique across both and become the checkpoint dir
``models/<name>``, the MLflow run name and the result dir.

    >>> params = load_params("params.yaml")
    >>> params.finetune["finetune_b16"].train.optimizer.lr
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from .errors import ParamsError
from .models.variants import ACTIVATIONS, GLOBAL_POOLS, ViTConfig, variant_config

DATASETS = ("cifar10", "cifar100", "fashion_mnist", "digits")
Dataset = Literal["cifar10", "cifar100", "fashion_mnist", "digits"]
PosInt = Annotated[int, Field(gt=0)]
NonNegInt = Annotated[int, Field(ge=0)]
Fraction = Annotated[float, Field(ge=0.0, lt=1.0)]
NonNegFloat = Annotated[float, Field(ge=0.0)]
PosFloat = Annotated[float, Field(gt=0.0)]
Unit = Annotated[float, Field(ge=0.0, le=1.0)]
# a checkpoint dir, a DVC stage suffix, an MLflow run name and a registered-model suffix
Name = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]*$", max_length=64)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# Lightning 2.6's registered strategy names (lightning.pytorch.strategies.StrategyRegistry), listed
# here so that checking params does not import Lightning (the prepare stage never does);
# tests/test_config.py fails when the installed Lightning's registry differs.
STRATEGIES = (
    "auto", "ddp", "ddp_find_unused_parameters_false", "ddp_find_unused_parameters_true",
    "ddp_fork", "ddp_fork_find_unused_parameters_false", "ddp_fork_find_unused_parameters_true",
    "ddp_notebook", "ddp_notebook_find_unused_parameters_false",
    "ddp_notebook_find_unused_parameters_true", "ddp_spawn",
    "ddp_spawn_find_unused_parameters_false", "ddp_spawn_find_unused_parameters_true",
    "deepspeed", "deepspeed_stage_1", "deepspeed_stage_2", "deepspeed_stage_2_offload",
    "deepspeed_stage_3", "deepspeed_stage_3_offload", "deepspeed_stage_3_offload_nvme", "fsdp",
    "fsdp_cpu_offload", "single_device", "single_tpu", "single_xla", "xla", "xla_debug",
)


class TrainerParams(_Strict):
    """Hardware and scale-out, passed to ``lightning.Trainer`` (see
    :mod:`pipeline.training.hardware` for what ``strategy: fsdp`` and ``compile`` build)."""

    accelerator: Literal["auto", "cpu", "gpu", "cuda", "mps"] = "auto"
    devices: PosInt | Literal["auto"] | list[NonNegInt] = "auto"
    num_nodes: PosInt = 1
    strategy: str = "auto"  # a Lightning strategy name (STRATEGIES): ddp, fsdp, ...
    precision: Literal["bf16-mixed", "16-mixed", "32-true", "bf16-true"] = "bf16-mixed"
    num_workers: NonNegInt = 0
    compile: bool = False  # torch.compile the ViT's forward (checkpoint keys unchanged)

    @model_validator(mode="after")
    def _known_strategy(self) -> TrainerParams:
        if self.strategy not in STRATEGIES:
            raise ValueError(f"strategy {self.strategy!r} is not a Lightning strategy; "
                             f"one of {sorted(STRATEGIES)}")
        if self.strategy.startswith("fsdp") and self.accelerator in ("cpu", "mps"):
            raise ValueError(f"strategy {self.strategy!r} needs CUDA GPUs (FSDP has no CPU "
                             f"path), not accelerator {self.accelerator!r}; use ddp")
        return self


Seed = Annotated[int, Field(ge=0, le=2**32 - 1)]  # numpy's SeedSequence and Lightning's range
Budget = PosInt | Literal["all"]  # labelled training images per class


def _unique(values: list, what: str) -> list:
    dupes = sorted({str(v) for v in values if values.count(v) > 1})
    if dupes:
        raise ValueError(f"{what} must be unique; repeated: {dupes}")
    return values


class BaseParams(_Strict):
    seed: Seed  # the validation split and pretraining (done once, whatever the seeds)
    # every scratch and fine-tune variant is trained once per seed: its initialisation, data
    # order, augmentation and (under a budget) which images are labelled
    seeds: Annotated[list[Seed], Field(min_length=1)] = [0]
    dataset: Dataset
    mlflow_experiment: Annotated[str, Field(min_length=1)]
    trainer: TrainerParams

    @model_validator(mode="after")
    def _unique_seeds(self) -> BaseParams:
        _unique(self.seeds, "base.seeds")
        return self


class PrepareParams(_Strict):
    val_fraction: Annotated[float, Field(gt=0.0, lt=1.0)]
    download: bool
    max_train: PosInt | None  # cap train+val (tiny runs); null = all
    max_test: PosInt | None
    # label budgets: labelled training images per class ("all": the whole train split); each
    # variant is trained at every budget, on a stratified subset nested in the larger ones
    budgets: Annotated[list[Budget], Field(min_length=1)] = ["all"]

    @model_validator(mode="after")
    def _unique_budgets(self) -> PrepareParams:
        _unique(self.budgets, "prepare.budgets")
        return self


class ModelParams(_Strict):
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
    # own (README, "Which pretraining?"); recorded in every trained model file
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


class AdamWParams(_Strict):
    name: Literal["adamw"]
    lr: Annotated[float, Field(gt=0.0)]
    weight_decay: Annotated[float, Field(ge=0.0)] = 0.05  # only on >=2-D weights
    betas: tuple[Fraction, Fraction] = (0.9, 0.999)


class SGDParams(_Strict):
    name: Literal["sgd"]
    lr: Annotated[float, Field(gt=0.0)]
    weight_decay: Annotated[float, Field(ge=0.0)] = 0.0  # only on >=2-D weights
    momentum: Fraction = 0.9


# each optimizer holds only its own fields; `name` says which one
OptimizerParams = Annotated[AdamWParams | SGDParams, Field(discriminator="name")]


class TrainParams(_Strict):
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


class RandAugmentParams(_Strict):
    """RandAugment (Cubuk et al. 2020): ``num_ops`` random ops per image at one ``magnitude``."""

    num_ops: Annotated[int, Field(ge=1, le=14)]
    magnitude: Annotated[float, Field(ge=0.0, le=30.0)]  # 0-30 scale; 9-10 is the usual one


class AugmentParams(_Strict):
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


class StageParams(_Strict):
    model: ModelParams
    train: TrainParams
    augment: AugmentParams

    def backbone(self) -> BackboneSchedule:
        return BackboneSchedule()


class FinetuneParams(StageParams):
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
    def _unfreezes(self) -> FinetuneParams:
        if self.freeze_epochs >= self.train.epochs:
            raise ValueError(
                f"freeze_epochs={self.freeze_epochs} must be < train.epochs={self.train.epochs}"
            )
        return self


class PretrainParams(StageParams):
    """Pretrain here (offline quick run): train on ``dataset``, export timm-format weights."""

    dataset: Dataset
    val_fraction: Annotated[float, Field(gt=0.0, lt=1.0)]
    max_train: PosInt | None


class PretrainedParams(_Strict):
    """One weights source; only the key its ``source`` needs is given."""

    source: Literal["hub", "file", "train"]
    hub_id: str | None = None  # source: hub
    path: str | None = None  # source: file
    pretrain: PretrainParams | None = None  # source: train

    @model_validator(mode="after")
    def _source_complete(self) -> PretrainedParams:
        need = {"hub": "hub_id", "file": "path", "train": "pretrain"}[self.source]
        if getattr(self, need) is None:
            raise ValueError(f"source {self.source!r} needs {need}")
        if self.source == "hub" and self.hub_id.count("/") != 1:
            raise ValueError(f"hub_id {self.hub_id!r} is not of the form owner/name")
        return self


class TTAParams(_Strict):
    """Test-time augmentation (:mod:`pipeline.evaluation.tta`): each test image is classified
    as several views and their softmax averaged; reported beside the plain figures."""

    hflip: bool = True  # the mirrored image too
    # pixels: > 0 adds the 4 corner crops of the image reflect-padded by this many (training's
    # crop_padding); it must stay below the test images' height and width
    shift: NonNegInt = 0

    @model_validator(mode="after")
    def _more_than_the_plain_view(self) -> TTAParams:
        if not self.hflip and self.shift == 0:
            raise ValueError("hflip false and shift 0 leave only the plain image: set tta: null "
                             "to turn test-time augmentation off")
        return self


class EvaluateParams(_Strict):
    batch_size: PosInt
    # each variant is logged as an MLflow model and registered as "<registered_model>-<variant>";
    # null: logged, not registered
    registered_model: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")] | None
    # test-time augmentation, reported beside the plain figures (never instead); null = off
    tta: TTAParams | None = None


class Params(_Strict):
    base: BaseParams
    prepare: PrepareParams
    pretrained: dict[Name, PretrainedParams]
    scratch: dict[Name, StageParams]  # variants trained from random initialisation
    finetune: dict[Name, FinetuneParams]  # variants fine-tuned from `pretrained` weights
    evaluate: EvaluateParams

    @model_validator(mode="after")
    def _variants(self) -> Params:
        both = set(self.scratch) & set(self.finetune)
        if both:
            raise ValueError(f"variant names must be unique; in scratch and finetune: {sorted(both)}")
        if not self.scratch and not self.finetune:
            raise ValueError("no variants: scratch and finetune are both empty")
        if "pretrained" in self.scratch or "pretrained" in self.finetune:
            raise ValueError("'pretrained' is reserved (models/pretrained holds the weights)")
        for name, v in self.finetune.items():
            if v.pretrained not in self.pretrained:
                raise ValueError(f"finetune.{name}.pretrained: {v.pretrained!r} is not a key of "
                                 f"pretrained ({sorted(self.pretrained)})")
        return self

    def variant(self, name: str) -> tuple[str, StageParams]:
        """``("scratch" | "finetune", its params)``; ParamsError names the known variants."""
        if name in self.scratch:
            return "scratch", self.scratch[name]
        if name in self.finetune:
            return "finetune", self.finetune[name]
        raise ParamsError(f"no variant {name!r} in params (scratch: {sorted(self.scratch)}, "
                       f"finetune: {sorted(self.finetune)})")

    @property
    def variants(self) -> list[str]:
        """Every variant, scratch ones first, in params order."""
        return [*self.scratch, *self.finetune]

    def group_key(self) -> str:
        """What one comparison is made of: everything the trained models depend on (not how they
        are evaluated). The MLflow parent run of the variants' runs is keyed by it."""
        data = self.model_dump(include={"base", "prepare", "pretrained", "scratch", "finetune"})
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


def _key(loc: tuple) -> str:
    """The dotted key path of an error; the optimizer's union tag (``optimizer.sgd.lr``) is left
    out, since the user wrote ``optimizer.lr``."""
    parts = [str(p) for i, p in enumerate(loc)
             if not (i and loc[i - 1] == "optimizer" and p in ("adamw", "sgd"))]
    return ".".join(parts) or "(top level)"


def _format(err: ValidationError, source: str) -> str:
    lines = [f"{source}: {err.error_count()} invalid param(s):"]
    for e in err.errors():
        key = _key(e["loc"])
        if e["type"] == "extra_forbidden":
            lines.append(f"  {key}: unknown key (typo?); value {e['input']!r}")
        else:
            allowed = e["msg"].removeprefix("Value error, ")
            lines.append(f"  {key}: {allowed}; got {e['input']!r}")
    return "\n".join(lines)


def parse_params(data: dict, source: str = "params") -> Params:
    try:
        return Params.model_validate(data)
    except ValidationError as e:
        raise ParamsError(_format(e, source)) from None


def load_params(path: str | Path = "params.yaml") -> Params:
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError:
        raise ParamsError(f"{path}: no such params file (run from the project root)") from None
    except yaml.YAMLError as e:
        raise ParamsError(f"{path}: not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise ParamsError(f"{path}: expected a mapping of sections, got {type(data).__name__}")
    return parse_params(data, str(path))
