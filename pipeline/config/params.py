"""Typed schema for ``params.yaml``: one section per DVC stage plus a shared ``base``.

Every stage loads its params through :func:`load_params`, so a typo (unknown key), a wrong type or an
out-of-range value stops the stage before any download, compute or deletion, with one message naming
the key path, the value and what is allowed. ``dvc exp run -S key=value`` edits ``params.yaml``
before the stage runs, so the same check covers it.

Variants: ``scratch`` and ``finetune`` map a variant name to its recipe
(:mod:`pipeline.config.recipe`), ``pretrained`` maps a name to a weights source that fine-tune
variants point at. ``dvc.yaml`` expands them into one training stage per (variant, budget, seed)
cell; names are unique across both and begin the cell's dir ``models/<name>/<budget>/seed<k>``
and its MLflow run name (:mod:`pipeline.layout`).

    >>> params = load_params("params.yaml")
    >>> params.finetune["finetune_b16"].train.optimizer.lr
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Annotated, ClassVar, Literal

import yaml
from pydantic import Field, ValidationError, model_validator

from ..errors import ParamsError
from .fields import Budget, Dataset, Name, NonNegInt, PosInt, Seed, Strict, unique
from .recipe import FinetuneRecipe, PretrainRecipe, Recipe
from .tune import SPACE_TAGS, SearchParams, TuneParams, base_name, check_tune, tuned_name

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


class TrainerParams(Strict):
    """Hardware and scale-out, passed to ``lightning.Trainer`` (see
    :mod:`pipeline.training.hardware` for what ``strategy: fsdp`` and ``compile`` build)."""

    accelerator: Literal["auto", "cpu", "gpu", "cuda", "mps"] = "auto"
    """Lightning's accelerator: ``auto`` takes the GPUs when there are any."""
    devices: PosInt | Literal["auto"] | list[NonNegInt] = "auto"
    """How many devices (or which GPU ids) per node."""
    num_nodes: PosInt = 1
    """Machines in a multi-node run (docs/scaling.md)."""
    strategy: str = "auto"
    """A name from Lightning 2.6's strategy registry: ``auto``, ``ddp``, ``fsdp`` (sharded per
    transformer block, CUDA GPUs only), ``deepspeed_stage_2``, ...; an unknown name is refused
    with the list."""
    precision: Literal["bf16-mixed", "16-mixed", "32-true", "bf16-true"] = "bf16-mixed"
    """Training precision; a mixed precision falls back to ``32-true`` on a CPU, and evaluation
    and prediction autocast by the same rule."""
    num_workers: NonNegInt = 0
    """Data loader worker processes per device."""
    compile: bool = False
    """``torch.compile`` the ViT's forward, in place: checkpoint keys stay plain (no
    ``_orig_mod.``)."""

    @model_validator(mode="after")
    def _known_strategy(self) -> TrainerParams:
        if self.strategy not in STRATEGIES:
            raise ValueError(f"strategy {self.strategy!r} is not a Lightning strategy; "
                             f"one of {sorted(STRATEGIES)}")
        if self.strategy.startswith("fsdp") and self.accelerator in ("cpu", "mps"):
            raise ValueError(f"strategy {self.strategy!r} needs CUDA GPUs (FSDP has no CPU "
                             f"path), not accelerator {self.accelerator!r}; use ddp")
        return self


class BaseParams(Strict):
    seed: Seed
    """Seed of the validation split (the same for every cell) and of pretraining done here
    (once, whatever the seeds)."""
    seeds: Annotated[list[Seed], Field(min_length=1)]
    """Every scratch and fine-tune variant is trained once per seed at each budget, one cell
    each: the seed sets the initialisation, the data order, the augmentation and, under a
    budget, which images are labelled. A scratch and a fine-tune cell with the same seed see the
    same labelled images (paired). Required: the training stages depend on it in ``dvc.yaml``
    (``[0]``: one seed)."""
    dataset: Dataset
    """The downstream dataset the variants are trained and tested on."""
    mlflow_experiment: Annotated[str, Field(min_length=1)]
    """MLflow experiment the runs are logged to."""
    trainer: TrainerParams
    """Hardware and scale-out, passed to ``lightning.Trainer``."""

    @model_validator(mode="after")
    def _unique_seeds(self) -> BaseParams:
        unique(self.seeds, "base.seeds")
        return self


class PrepareParams(Strict):
    val_fraction: Annotated[float, Field(gt=0.0, lt=1.0)]
    """Share of the training split held out for validation (seeded by ``base.seed``,
    stratified)."""
    download: bool
    """Fetch missing raw files; their checksums are verified either way."""
    max_train: PosInt | None
    """Cap on the train+val pool (seeded, stratified); ``null``: all of it."""
    max_test: PosInt | None
    """Cap on the test split (seeded, stratified); ``null``: all of it."""
    budgets: Annotated[list[Budget], Field(min_length=1)]
    """Label budgets, labelled training images per class (``all``: the whole training split;
    ``[all]``: one comparison on every labelled image). Each variant is trained at every budget
    on a stratified subset, nested in the larger budgets' subsets for the same seed; the
    validation and test splits are shared by all. Required: ``dvc.yaml`` expands the training
    stages from it."""

    @model_validator(mode="after")
    def _unique_budgets(self) -> PrepareParams:
        unique(self.budgets, "prepare.budgets")
        return self


class PretrainedParams(Strict):
    """One weights source; only the key its ``source`` needs is given."""

    source: Literal["hub", "file", "train"]
    """Where the weights come from: ``hub`` (fetch ``hub_id``), ``file`` (``path``) or
    ``train`` (pretrain here on ``pretrain``)."""
    hub_id: str | None = None
    """With ``source: hub``: a timm ViT on the Hugging Face hub, ``owner/name``, e.g.
    ``timm/vit_base_patch16_224.augreg2_in21k_ft_in1k``."""
    path: str | None = None
    """With ``source: file``: a local checkpoint (``.safetensors``, ``.pth``, ``.bin``,
    ``.npz`` or a Lightning ``.ckpt``; timm, transformers, torchvision or Google layout,
    detected)."""
    pretrain: PretrainRecipe | None = None
    """With ``source: train``: the recipe to pretrain with here; its weights are exported in
    timm's layout, as the hub's are."""

    @model_validator(mode="after")
    def _source_complete(self) -> PretrainedParams:
        need = {"hub": "hub_id", "file": "path", "train": "pretrain"}[self.source]
        if getattr(self, need) is None:
            raise ValueError(f"source {self.source!r} needs {need}")
        if self.source == "hub" and self.hub_id.count("/") != 1:
            raise ValueError(f"hub_id {self.hub_id!r} is not of the form owner/name")
        return self


class TTAParams(Strict):
    """Test-time augmentation (:mod:`pipeline.evaluation.tta`): each test image is classified
    as several views and their softmax averaged; reported beside the plain figures."""

    hflip: bool = True
    """Each view's mirror image too."""
    shift: NonNegInt = 0
    """Pixels: above 0 adds the 4 corner crops of the image reflect-padded by this many (the
    diagonal shifts of training's ``crop_padding``), and with ``hflip`` their mirror images: 1,
    2, 5 or 10 views. Below the test images' height and width. ``hflip: false`` with ``shift:
    0`` is refused (set ``tta: null``)."""

    @model_validator(mode="after")
    def _more_than_the_plain_view(self) -> TTAParams:
        if not self.hflip and self.shift == 0:
            raise ValueError("hflip false and shift 0 leave only the plain image: set tta: null "
                             "to turn test-time augmentation off")
        return self


class EvaluateParams(Strict):
    batch_size: PosInt
    """Evaluation batch size."""
    registered_model: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")] | None
    """MLflow registry prefix: each variant's model is registered as
    ``<registered_model>-<variant>``; ``null``: logged, not registered."""
    tta: TTAParams | None = None
    """Test-time augmentation, reported beside the plain figures, never instead of them: the
    metrics of the views' mean softmax; ``null``: off. The shipped files use ``hflip: true`` for
    CIFAR-10 and Fashion-MNIST, ``hflip: false, shift: 1`` for digits (a mirrored 2 or 5 is no
    digit)."""


class Params(Strict):
    base: BaseParams
    """What every stage shares: seeds, dataset, MLflow experiment, hardware."""
    prepare: PrepareParams
    """The data: validation share, caps, label budgets."""
    pretrained: dict[Name, PretrainedParams]
    """Weights sources by name, which fine-tune variants point at."""
    scratch: dict[Name, Recipe]
    """Variants trained from random initialisation, by name."""
    finetune: dict[Name, FinetuneRecipe]
    """Variants fine-tuned from ``pretrained`` weights, by name (unique across both arms)."""
    evaluate: EvaluateParams
    """How the cells are tested and registered."""
    tune: TuneParams
    """Hyperparameter searches per arm and variant (docs/tuning.md). Required, empty or not
    (``tune: {scratch: {}, finetune: {}}``: no searches): ``dvc.yaml`` expands the search stages
    from it."""

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

    def variant(self, name: str) -> tuple[str, Recipe]:
        """``("scratch" | "finetune", its params)``; ParamsError names the known variants. A
        searched variant's tuned cells (``<variant>-tuned``) give the recipe as written: the
        search's choice is applied to it from the search's output."""
        if name not in self.scratch and name not in self.finetune and self.search(name):
            name = base_name(name)
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

    @property
    def trained_variants(self) -> list[str]:
        """What the training cells train: every variant with its recipe as written, then each
        searched variant's tuned cells (``<variant>-tuned``), scratch first."""
        return [*self.variants, *(tuned_name(v) for _, v, _ in self.tune.searches())]

    def search(self, name: str) -> tuple[str, SearchParams] | None:
        """``(arm, search)`` of a variant or of its tuned cells' name; None without one."""
        for arm, variant, search in self.tune.searches():
            if name in (variant, tuned_name(variant)):
                return arm, search
        return None

    # what one comparison is made of: everything the trained models depend on (not how they
    # are evaluated)
    GROUP_SECTIONS: ClassVar[frozenset[str]] = frozenset(
        {"base", "prepare", "pretrained", "scratch", "finetune", "tune"})

    def group_params(self) -> dict:
        """The sections of :attr:`GROUP_SECTIONS` as plain data."""
        return self.model_dump(mode="json", include=set(self.GROUP_SECTIONS))

    def group_key(self) -> str:
        """A hash of :attr:`GROUP_SECTIONS`: the MLflow parent run of the variants' runs is keyed
        by it."""
        data = self.model_dump(include=set(self.GROUP_SECTIONS))
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


def _key(loc: tuple) -> str:
    """The dotted key path of an error; the optimizer's union tag (``optimizer.sgd.lr``) and a
    search space's kind are left out, since the user wrote ``optimizer.lr``."""
    parts = [str(p) for i, p in enumerate(loc)
             if not (i and loc[i - 1] == "optimizer" and p in ("adamw", "sgd"))
             and p not in SPACE_TAGS]
    return ".".join(parts) or "(top level)"


def _format(err: ValidationError, source: str) -> str:
    lines = [f"{source}: {err.error_count()} invalid param(s):"]
    for e in err.errors():
        key = _key(e["loc"])
        if e["type"] == "extra_forbidden":
            lines.append(f"  {key}: unknown key (typo?); value {e['input']!r}")
        elif e["type"] == "missing" and isinstance(e["input"], dict):
            lines.append(f"  {key}: missing; a required key (docs/params.md)")
        else:
            allowed = e["msg"].removeprefix("Value error, ")
            lines.append(f"  {key}: {allowed}; got {e['input']!r}")
    return "\n".join(lines)


def parse_params(data: dict, source: str = "params") -> Params:
    try:
        params = Params.model_validate(data)
    except ValidationError as e:
        raise ParamsError(_format(e, source)) from None
    why = check_tune(params.tune, params.scratch, params.finetune)
    if why:
        raise ParamsError(f"{source}: {why}")
    return params


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
