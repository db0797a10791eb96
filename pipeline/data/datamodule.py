"""Lightning DataModule over a prepared directory (see :mod:`pipeline.data.splits`).

Workers only index the memory-mapped uint8 arrays and run the (geometric) albumentations
pipeline; batches are ``(uint8 (B, H, W, C), int64 (B,))``. Conversion to float, resizing and
normalisation happen on the device in the model step.

Reproducibility, and exact resume: the train order and every sample's augmentation are a pure
function of ``(seed, epoch, index)``. :class:`EpochSampler` shuffles with ``seed + epoch`` (like
``DistributedSampler``, whose rank split it inherits) and yields ``(index, sample_seed)``; the
dataset reseeds its augmentation pipeline with ``sample_seed`` before that one sample. So a run
resumed at epoch 7 sees the same batches as one that never stopped (no replay of epoch 0's order,
which a loader-level ``torch.Generator`` would give), and the number of workers does not matter.
"""

from __future__ import annotations

import math
import mmap
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.overrides.distributed import UnrepeatedDistributedSampler
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from pipeline.data.budgets import budget_indices
from pipeline.data.passes import drop_last, epoch_passes, rank_share
from pipeline.data.splits import load_prepared, load_split, read_manifest
from pipeline.data.transforms import (
    apply_transform,
    build_eval_transform,
    build_train_transform,
    seed_transform,
)


class ArrayDataset(Dataset):
    """``(uint8 tensor (H, W, C), int64 tensor ())`` samples from image/label arrays.

    Whole memory-mapped ``.npy`` arrays are pickled as their file reference rather than their
    data, so spawned workers re-open the map instead of copying the dataset.
    """

    def __init__(self, images: np.ndarray, labels: np.ndarray, transform: Any = None) -> None:
        if len(images) != len(labels):
            raise ValueError(f"{len(images)} images but {len(labels)} labels")
        self.images = images
        self.labels = labels
        self.transform = transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int | tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        """``index``, or ``(index, seed)`` from :class:`EpochSampler`: reseed the augmentation
        pipeline for this one sample."""
        if isinstance(index, tuple):
            index, seed = index
            if self.transform is not None:
                seed_transform(self.transform, seed)
        image = apply_transform(self.transform, np.array(self.images[index]))
        label = torch.tensor(int(self.labels[index]), dtype=torch.int64)
        return torch.from_numpy(np.ascontiguousarray(image)), label

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        for key in ("images", "labels"):
            array = state[key]
            # Only a whole map (its base is the mmap itself), never a view, has a file equivalent.
            if (
                isinstance(array, np.memmap)
                and isinstance(array.base, mmap.mmap)
                and array.filename
            ):
                state[key] = _NpyFile(array.filename)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        for key in ("images", "labels"):
            if isinstance(state[key], _NpyFile):
                state[key] = np.load(state[key].path, mmap_mode="r", allow_pickle=False)
        self.__dict__.update(state)


class _NpyFile:
    """Stand-in for a memory-mapped ``.npy`` array while a dataset is pickled."""

    def __init__(self, path: str) -> None:
        self.path = path


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """The augmentation seed of sample ``index`` in ``epoch``."""
    return int(np.random.SeedSequence((seed, epoch, index)).generate_state(1)[0])


class EpochSampler(DistributedSampler):
    """Shuffled indices for ``seed + epoch`` (this rank's share), each with its augmentation seed.

    Being a ``DistributedSampler``, Lightning calls its ``set_epoch`` every epoch (also after a
    resume) and does not replace it under DDP, where it is built with the world size and rank.

    With ``passes`` > 1 an epoch is that many passes over the dataset, each in its own shuffled
    order, and an image gets a different augmentation in every pass (its seed is drawn from its
    position in the epoch, ``pass * len(dataset) + index``). One pass is exactly
    ``DistributedSampler``'s order and split, padded the same way under DDP.

    With ``repeats`` > 1 (repeated augmentation: DeiT's ``RASampler``, timm's ``--aug-repeats``)
    each drawn image comes ``repeats`` times in a row, every copy with its own augmentation seed;
    the ranks take the stream in turn, so under DDP the copies of an image land on different
    ranks in the same step, and on one device in the same batch. The epoch keeps its length: it
    draws the first ``1 / repeats`` of its shuffled order. The ranks' shares stay disjoint
    positions of one stream, and the stream stays a function of ``(seed, epoch)``.
    """

    def __init__(self, dataset: Dataset, *, seed: int, num_replicas: int = 1, rank: int = 0,
                 passes: int = 1, repeats: int = 1):
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed)
        if passes < 1 or repeats < 1:
            raise ValueError(f"passes and repeats must be >= 1, got {passes} and {repeats}")
        self.passes = passes
        self.repeats = repeats
        self.num_samples = math.ceil(len(dataset) * passes / num_replicas)
        self.total_size = self.num_samples * num_replicas

    def __iter__(self):
        n, r = len(self.dataset), self.repeats
        g = torch.Generator()
        g.manual_seed(self.seed + self.epoch)
        order = [p * n + i for p in range(self.passes)
                 for i in torch.randperm(n, generator=g).tolist()]
        # copy c of the image at position q: stream position q * r + c (r = 1: q itself)
        order = [q * r + c for q in order[:math.ceil(len(order) / r)] for c in range(r)]
        order = order[:n * self.passes]
        pad = self.total_size - len(order)  # as DistributedSampler: repeat from the start
        order += (order * math.ceil(pad / len(order)))[:pad] if pad > 0 else []
        for position in order[self.rank:self.total_size:self.num_replicas]:
            yield (position // r) % n, sample_seed(self.seed, self.epoch, position)


class PreparedDataModule(L.LightningDataModule):
    """Train/val loaders over ``prepared_dir``; test/predict loaders over ``test_dir`` (the test
    split's own dir), which is opened only when one of those is asked for: training never
    reads the test split."""

    def __init__(
        self,
        prepared_dir: str | Path,
        batch_size: int,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        crop_padding: int = 0,
        hflip: bool = False,
        seed: int = 0,
        randaugment: tuple[int, float] | None = None,
        erasing: float = 0.0,
        budget: int | None = None,
        min_batches: int | None = None,
        repeats: int = 1,
        test_dir: str | Path | None = None,
        val_budget: int | None = None,
    ) -> None:
        super().__init__()
        if batch_size < 1 or (eval_batch_size is not None and eval_batch_size < 1):
            raise ValueError(f"batch sizes must be >= 1, got {batch_size} and {eval_batch_size}")
        if num_workers < 0:
            raise ValueError(f"num_workers must be >= 0, got {num_workers}")
        self.save_hyperparameters()
        self.prepared_dir = Path(prepared_dir)
        self.test_dir = None if test_dir is None else Path(test_dir)
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.num_workers = num_workers
        self.crop_padding = crop_padding
        self.hflip = hflip
        self.seed = seed
        self.randaugment = tuple(randaugment) if randaugment else None
        self.erasing = erasing
        self.budget = budget  # labelled train images per class (None: all), chosen by seed
        # at least this many train batches per epoch on each rank: a small labelled set is
        # passed over several times per epoch (see passes)
        self.min_batches = min_batches
        self.repeats = repeats  # repeated augmentation (EpochSampler); 1: off
        # validation images per class (None: the whole val split), a seeded stratified subset:
        # a search at a small budget selects on a validation set of the budget's size
        self.val_budget = val_budget
        self.train_indices: np.ndarray | None = None  # the labelled subset, after setup
        self._manifest: dict[str, Any] | None = None
        self._datasets: dict[str, ArrayDataset] = {}

    @property
    def manifest(self) -> dict[str, Any]:
        """The prepared manifest (read on first use, so it is available before ``setup``)."""
        if self._manifest is None:
            self._manifest = read_manifest(self.prepared_dir)
        return self._manifest

    @property
    def num_classes(self) -> int:
        return int(self.manifest["num_classes"])

    @property
    def classes(self) -> list[str]:
        return list(self.manifest["classes"])

    @property
    def image_shape(self) -> tuple[int, int, int]:
        h, w, c = self.manifest["image_shape"]
        return int(h), int(w), int(c)

    def setup(self, stage: str | None = None) -> None:
        if self._datasets:
            return
        self._manifest, splits = load_prepared(self.prepared_dir)
        train_transform = build_train_transform(
            self.image_shape, self.crop_padding, self.hflip, self.seed,
            randaugment=self.randaugment, erasing=self.erasing,
        )
        eval_transform = build_eval_transform(self.image_shape)
        if self.budget is not None:  # a stratified subset, nested in larger budgets' (seeded)
            images, labels = splits["train"]
            labels = np.asarray(labels)
            self.train_indices = budget_indices(labels, [self.budget], self.seed)[self.budget]
            splits["train"] = (images[self.train_indices], labels[self.train_indices])
        if self.val_budget is not None:
            images, labels = splits["val"]
            labels = np.asarray(labels)
            keep = budget_indices(labels, [self.val_budget], self.seed)[self.val_budget]
            splits["val"] = (images[keep], labels[keep])
        self._datasets = {
            split: ArrayDataset(
                images, labels, train_transform if split == "train" else eval_transform
            )
            for split, (images, labels) in splits.items()
        }

    def passes(self, world: int = 1) -> int:
        """Passes over the labelled train set per epoch on ``world`` ranks: 1, or the fewest that
        give every rank ``min_batches`` full batches (call :meth:`setup` first)."""
        return epoch_passes(len(self.dataset("train")), self.batch_size, self.min_batches, world)

    def dataset(self, split: str) -> ArrayDataset:
        """The dataset of ``split`` ("train", "val" or "test"); call :meth:`setup` first. The
        test split is read from ``test_dir`` on first use."""
        if not self._datasets:
            raise RuntimeError("PreparedDataModule.setup() has not been called")
        if split == "test" and split not in self._datasets:
            if self.test_dir is None:
                raise RuntimeError("no test_dir: this PreparedDataModule trains, it does not test")
            _, images, labels = load_split(self.test_dir, "test")
            self._datasets["test"] = ArrayDataset(images, labels,
                                                  build_eval_transform(self.image_shape))
        return self._datasets[split]

    def _loader(self, split: str, batch_size: int, shuffle: bool) -> DataLoader:
        dataset = self.dataset(split)
        trainer = self.trainer  # None outside a Trainer: one process
        world = trainer.world_size if trainer else 1
        rank = trainer.global_rank if trainer else 0
        sampler = None
        passes = self.passes(world) if shuffle else 1
        if shuffle:
            sampler = EpochSampler(dataset, seed=self.seed, num_replicas=world, rank=rank,
                                   passes=passes, repeats=self.repeats)
        elif world > 1:
            # Each sample exactly once across ranks (shares differ by at most one): Lightning's
            # default DistributedSampler pads with repeats, which would count them twice in
            # val/acc. The metrics sync sums, so the epoch's figures are the full split's.
            sampler = UnrepeatedDistributedSampler(dataset, num_replicas=world, rank=rank,
                                                   shuffle=False)
        if trainer:
            on_gpu = trainer.strategy.root_device.type == "cuda"
        else:
            on_gpu = torch.cuda.is_available()
        return DataLoader(
            dataset,
            batch_size=batch_size,
            sampler=sampler,
            drop_last=shuffle and drop_last(rank_share(len(dataset), passes, world), batch_size),
            num_workers=self.num_workers,
            pin_memory=on_gpu,  # page-locked batches: Lightning copies them with non_blocking
            persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", self.batch_size, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", self.eval_batch_size, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", self.eval_batch_size, shuffle=False)

    def predict_dataloader(self) -> DataLoader:
        return self._loader("test", self.eval_batch_size, shuffle=False)
