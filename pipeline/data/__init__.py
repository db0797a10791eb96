"""Data layer: raw datasets, the prepare stage, augmentations and the Lightning DataModule.

    >>> from pipeline.data import load_raw, prepare_dataset, PreparedDataModule
    >>> raw = load_raw("digits", Path("data/raw"))
    >>> prepare_dataset(raw, Path("data/prepared"), val_fraction=0.1, seed=0)
    >>> dm = PreparedDataModule("data/prepared", batch_size=128)

Names are imported on first use (PEP 562), so ``from pipeline.data import load_raw`` in the
prepare stage does not pay for importing Lightning and albumentations.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..lazy import lazy_exports

_EXPORTS = {
    "DATASETS": "sources",
    "FILES": "sources",
    "SYSTEM_DIRS": "sources",
    "FileSpec": "sources",
    "RawDataset": "sources",
    "load_raw": "sources",
    "parse_cifar_batch": "parsers",
    "parse_idx": "parsers",
    "validate_samples": "sources",
    "SPLITS": "splits",
    "load_prepared": "splits",
    "load_split": "splits",
    "prepare_dataset": "splits",
    "read_manifest": "splits",
    "split_train_val": "splits",
    "subset_indices": "splits",
    "apply_transform": "transforms",
    "build_eval_transform": "transforms",
    "build_train_transform": "transforms",
    "seed_transform": "transforms",
    "ArrayDataset": "datamodule",
    "PreparedDataModule": "datamodule",
    "EpochSampler": "datamodule",
    "sample_seed": "datamodule",
}

__all__ = [
    "DATASETS",
    "FILES",
    "SPLITS",
    "SYSTEM_DIRS",
    "ArrayDataset",
    "EpochSampler",
    "FileSpec",
    "PreparedDataModule",
    "RawDataset",
    "apply_transform",
    "build_eval_transform",
    "build_train_transform",
    "load_prepared",
    "load_split",
    "load_raw",
    "parse_cifar_batch",
    "parse_idx",
    "prepare_dataset",
    "read_manifest",
    "seed_transform",
    "sample_seed",
    "split_train_val",
    "subset_indices",
    "validate_samples",
]


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())


if TYPE_CHECKING:
    from pipeline.data.datamodule import (
        ArrayDataset,
        EpochSampler,
        PreparedDataModule,
        sample_seed,
    )
    from pipeline.data.parsers import parse_cifar_batch, parse_idx
    from pipeline.data.sources import (
        DATASETS,
        FILES,
        SYSTEM_DIRS,
        FileSpec,
        RawDataset,
        load_raw,
        validate_samples,
    )
    from pipeline.data.splits import (
        SPLITS,
        load_prepared,
        load_split,
        prepare_dataset,
        read_manifest,
        split_train_val,
        subset_indices,
    )
    from pipeline.data.transforms import (
        apply_transform,
        build_eval_transform,
        build_train_transform,
        seed_transform,
    )
