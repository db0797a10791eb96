"""The ``tune`` section: one hyperparameter search per (variant, label budget), declared per arm.

``tune.scratch.<variant>`` and ``tune.finetune.<variant>`` name a variant of that section and
the search run over its recipe (:class:`SearchParams`): ``trials`` (K, the same for both arms by
default: an equal budget), the ``sampler`` (``random`` or ``tpe``, seeded; ``grid`` for a space
of choices only, such as the ViT paper's four fine-tuning learning rates), the ``objective``
(best validation top-1 over the trial's epochs: what a training cell keeps), the ``space`` (a
dotted key of the recipe, e.g. ``train.optimizer.lr``, to a range or a list of choices), the
trials' seed, their length and pruning, and which validation images they select on. A variant
with a search is trained twice per budget and seed: with its recipe as written (``<variant>``)
and with the search's choice (``<variant>-tuned``, :func:`tuned_name`). A variant without one
trains its recipe only, as before.

Every key of a space must be a key of the variant's recipe, and the recipe must stay valid at
both ends of each range and at every choice: :func:`check_tune` says which key is wrong, before
any work.

    >>> overrides = {"train.optimizer.lr": 0.003}
    >>> tuned = apply_overrides(params.scratch["scratch"], overrides)
"""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal

from pydantic import Discriminator, Field, Tag, ValidationError, model_validator

from ..layout import TUNED_SUFFIX
from .fields import Name, NonNegInt, PosInt, Seed, Strict
from .recipe import FinetuneRecipe, Recipe

Scalar = float | int | bool | str | None


class RangeSpace(Strict):
    """A number drawn from ``[low, high]``; ``log``: uniformly in log space (both ends > 0);
    ``integer``: whole numbers only."""

    low: float
    """The range's lower end (inclusive)."""
    high: float
    """Its upper end (inclusive)."""
    log: bool = False
    """Draw uniformly in log space (both ends above 0)."""
    integer: bool = False
    """Whole numbers only (whole ends)."""

    @model_validator(mode="after")
    def _ordered(self) -> RangeSpace:
        if self.low > self.high:
            raise ValueError(f"low {self.low} is above high {self.high}")
        if self.log and self.low <= 0:
            raise ValueError(f"a log range needs low > 0 (log of {self.low} is undefined); "
                             "set log: false or a positive low")
        if self.integer and (self.low != int(self.low) or self.high != int(self.high)):
            raise ValueError(f"an integer range needs whole ends, got {self.low}..{self.high}")
        return self

    def ends(self) -> list[Scalar]:
        cast = int if self.integer else float
        return [cast(self.low), cast(self.high)]


class ChoiceSpace(Strict):
    """One of ``choices`` (the grid sampler's only kind)."""

    choices: Annotated[list[Scalar], Field(min_length=1)]
    """The values to choose from, distinct."""

    @model_validator(mode="after")
    def _distinct(self) -> ChoiceSpace:
        if len({repr(c) for c in self.choices}) != len(self.choices):
            raise ValueError(f"choices repeat: {self.choices}")
        return self

    def ends(self) -> list[Scalar]:
        return list(self.choices)


def _space_kind(value: Any) -> str:
    """Which kind of space an entry is: one with ``choices`` is a list, any other a range (so an
    error names the range's or the list's own fields, not both)."""
    if isinstance(value, dict):
        return "ChoiceSpace" if "choices" in value else "RangeSpace"
    return type(value).__name__


Space = Annotated[Annotated[RangeSpace, Tag("RangeSpace")] | Annotated[ChoiceSpace,
                                                                      Tag("ChoiceSpace")],
                  Discriminator(_space_kind)]
SPACE_TAGS = ("RangeSpace", "ChoiceSpace")  # left out of an error's key path


class SamplerParams(Strict):
    """Optuna's sampler."""

    name: Literal["random", "tpe", "grid"]
    """``random``; ``tpe`` (random for the first half of the trials, at most 10); ``grid``
    (every space entry a list of choices)."""
    seed: Seed = 0
    """With the trial's number, seeds each draw: the same params give the same trials."""


class PruneParams(Strict):
    """Optuna's median rule: after ``warmup_epochs`` epochs, a trial whose best validation score
    so far is below the median of the earlier trials' at the same epoch stops (after
    ``startup_trials`` trials have finished)."""

    startup_trials: NonNegInt = 3
    """Trials that run to their end before any is pruned."""
    warmup_epochs: NonNegInt = 1
    """Epochs a trial runs before it can be pruned."""


class SearchParams(Strict):
    """One search over a variant's recipe, run at every budget (``tune.<arm>.<variant>``); its
    choice trains the ``<variant>-tuned`` cells at every seed."""

    trials: PosInt
    """K, trials per search (a grid: at most its size); the shipped files give both arms the
    same K."""
    sampler: SamplerParams
    """How the trials' configs are drawn."""
    objective: Literal["val_acc"] = "val_acc"
    """``val_acc``: the best validation top-1 over a trial's epochs (what a training cell
    keeps)."""
    seed: Seed = 0
    """The trials' training seed (initialisation, data order, which images are labelled under a
    budget); the shipped files use 1000, none of ``base.seeds``."""
    epochs: PosInt | None = None
    """A trial's length, the recipe's schedule compressed to it (warmup, ``min_steps`` and a
    frozen start scaled alike); ``null``: the recipe's."""
    validation: Literal["budget", "full"] = "budget"
    """What a trial selects on: ``budget``, as many validation images per class as the budget
    labels (the whole split at ``all``); ``full``: the whole validation split at every budget."""
    prune: PruneParams | None = None
    """Optuna's median rule after each epoch; ``null``: every trial runs to its end."""
    space: Annotated[dict[str, Space], Field(min_length=1)]
    """Dotted keys of the recipe (``train.optimizer.lr``, ``backbone_lr_scale``, ...), each to a
    range or a list of choices; each key must be in the recipe, and the recipe valid at both
    ends of a range and at every choice (checked before any work)."""

    @model_validator(mode="after")
    def _grid_fits(self) -> SearchParams:
        if self.sampler.name != "grid":
            return self
        ranges = [k for k, v in self.space.items() if isinstance(v, RangeSpace)]
        if ranges:
            raise ValueError(f"the grid sampler needs choices, not ranges: {ranges}")
        size = math.prod(len(v.choices) for v in self.space.values())
        if self.trials > size:
            raise ValueError(f"trials {self.trials} > the grid's {size} points")
        return self


class TuneParams(Strict):
    """The searches, per arm; a variant not listed trains its recipe only."""

    scratch: dict[Name, SearchParams]
    """Searches over ``scratch`` variants, by variant name (``{}``: none)."""
    finetune: dict[Name, SearchParams]
    """Searches over ``finetune`` variants, by variant name (``{}``: none)."""

    def searches(self) -> list[tuple[str, str, SearchParams]]:
        """``(arm, variant, search)`` for every search, scratch first, in params order."""
        return [*(("scratch", v, s) for v, s in self.scratch.items()),
                *(("finetune", v, s) for v, s in self.finetune.items())]


def tuned_name(variant: str) -> str:
    """The name of a variant's tuned cells: ``<variant>-tuned``."""
    return variant + TUNED_SUFFIX


def base_name(name: str) -> str:
    """``<variant>-tuned`` -> ``<variant>``; any other name unchanged."""
    return name.removesuffix(TUNED_SUFFIX) if name.endswith(TUNED_SUFFIX) else name


def _set(tree: dict, key: str, value: Any) -> None:
    parts = key.split(".")
    node = tree
    for i, p in enumerate(parts):
        if not isinstance(node, dict) or p not in node:
            raise KeyError(".".join(parts[: i + 1]))
        if i == len(parts) - 1:
            if isinstance(node[p], dict):
                raise KeyError(f"{key} (a section, not a value)")
            node[p] = value
        else:
            node = node[p]


def apply_overrides(recipe: Recipe, overrides: dict[str, Any]) -> Recipe:
    """``recipe`` with each dotted key set to its value, checked as the recipe is. KeyError
    (naming the key) for a key the recipe does not have; ValueError for an invalid result."""
    tree = recipe.model_dump(mode="python")
    for key, value in overrides.items():
        _set(tree, key, value)
    try:
        return type(recipe).model_validate(tree)
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ValueError(f"{where}: {first['msg'].removeprefix('Value error, ')}") from None


def trial_recipe(recipe: Recipe, search: SearchParams, overrides: dict[str, Any]) -> Recipe:
    """What one trial trains: ``recipe`` with ``overrides``, over ``search.epochs`` epochs when
    set (the schedule compressed alike: warmup, min_steps and a frozen start scaled to it)."""
    tuned = apply_overrides(recipe, overrides)
    if search.epochs is None or search.epochs == tuned.train.epochs:
        return tuned
    scale = search.epochs / tuned.train.epochs
    tr = tuned.train
    short = {"train.epochs": search.epochs, "train.warmup_epochs": tr.warmup_epochs * scale}
    if tr.min_steps is not None:
        short["train.min_steps"] = max(1, math.ceil(tr.min_steps * scale))
    if isinstance(tuned, FinetuneRecipe) and tuned.freeze_epochs:
        short["freeze_epochs"] = min(search.epochs - 1,
                                     max(1, round(tuned.freeze_epochs * scale)))
    return apply_overrides(tuned, short)


def check_tune(tune: TuneParams, scratch: dict[str, Recipe], finetune: dict[str, Recipe]
               ) -> str | None:
    """Why the searches cannot run over these variants (one line naming the key), or None."""
    arms = {"scratch": scratch, "finetune": finetune}
    for arm, variant, search in tune.searches():
        where = f"tune.{arm}.{variant}"
        if variant not in arms[arm]:
            return (f"{where}: {variant!r} is not a variant of {arm} "
                    f"({sorted(arms[arm])}); tune a variant of its own arm")
        clash = tuned_name(variant)
        if clash in scratch or clash in finetune:
            return (f"{where}: its tuned cells are named {clash!r}, which is a variant too; "
                    "rename that variant")
        recipe = arms[arm][variant]
        for key, space in search.space.items():
            for value in space.ends():
                try:
                    trial_recipe(recipe, search, {key: value})
                except KeyError as e:
                    return (f"{where}.space.{key}: not a key of {arm}.{variant}'s recipe "
                            f"({e.args[0]} is not there); give a dotted key such as "
                            "train.optimizer.lr")
                except ValueError as e:
                    return (f"{where}.space.{key}: the value {value!r} makes the recipe "
                            f"invalid ({e}); narrow the space")
        if search.epochs is not None:
            try:
                trial_recipe(recipe, search, {})
            except ValueError as e:
                return f"{where}.epochs: {search.epochs} does not fit the recipe ({e})"
    return None
