"""The field types of the params schema, shared by its sections: sizes, fractions, names, the
strict base model (unknown keys and coercion refused)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

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


class Strict(BaseModel):
    """Unknown keys refused, values frozen; each field's docstring is its description (the params
    reference, docs/params.md, is generated from them: :mod:`pipeline.config.reference`)."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)


Seed = Annotated[int, Field(ge=0, le=2**32 - 1)]  # numpy's SeedSequence and Lightning's range
Budget = PosInt | Literal["all"]  # labelled training images per class


def unique(values: list, what: str) -> list:
    dupes = sorted({str(v) for v in values if values.count(v) > 1})
    if dupes:
        raise ValueError(f"{what} must be unique; repeated: {dupes}")
    return values
