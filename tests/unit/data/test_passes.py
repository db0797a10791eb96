"""Epoch sizing under a label budget (pipeline.data.passes) against the real loaders."""

from __future__ import annotations

import pytest
from torch.utils.data import DataLoader

from pipeline.data.datamodule import EpochSampler
from pipeline.data.passes import batches_per_epoch, drop_last, epoch_passes, min_batches, rank_share


class _Items:
    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, item):
        return item[0]


def test_min_batches():
    assert min_batches(300, None) is None
    assert min_batches(300, 10_000) == 34  # ceil(10000 / 300)
    assert min_batches(10, 2_000) == 200
    assert min_batches(10, 2_000, accumulate=4) == 800  # 200 optimizer steps of 4 batches
    assert min_batches(300, 10_000, accumulate=2) == 68


@pytest.mark.parametrize("labelled", [7, 30, 100, 1000])
@pytest.mark.parametrize("batch_size", [4, 64])
@pytest.mark.parametrize("world", [1, 3])
@pytest.mark.parametrize("floor", [None, 5])
def test_passes_give_the_floor_and_batches_match_the_loader(labelled, batch_size, world, floor):
    """The passes are the fewest that give every rank ``floor`` full batches, and
    batches_per_epoch is what each rank's DataLoader (the DataModule's sampler and drop_last rule)
    really yields: what fit and benchmarks/study_cost.py count as steps."""
    passes = epoch_passes(labelled, batch_size, floor, world)
    got = batches_per_epoch(labelled, passes, batch_size, world)
    for rank in range(world):
        sampler = EpochSampler(_Items(labelled), seed=0, num_replicas=world, rank=rank,
                               passes=passes)
        loader = DataLoader(_Items(labelled), batch_size=batch_size, sampler=sampler,
                            drop_last=drop_last(rank_share(labelled, passes, world), batch_size))
        assert len(loader) == got == sum(1 for _ in loader) >= 1
    if floor:
        assert got >= floor
        if passes > 1:  # one pass fewer would fall short
            assert batches_per_epoch(labelled, passes - 1, batch_size, world) < floor
    else:
        assert passes == 1
