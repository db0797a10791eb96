"""How long an epoch is under a label budget: passes over the labelled images.

A small budget has few batches per epoch, so a schedule written in epochs (300 epochs of
CIFAR-10's 49,000 images) would give it a few hundred optimizer steps: under-trained. A
``train.min_steps`` floor keeps the epochs and lengthens each one instead: an epoch passes over
the labelled images as often as it takes to give ``ceil(min_steps / epochs)`` full batches on
every rank (:class:`~pipeline.data.datamodule.EpochSampler` draws each pass in its own order,
every repeat of an image with its own augmentation). So the warmup, the frozen start of a
fine-tune, validation, checkpoints and the history keep their place in the run; only the steps
between them grow. No torch here: the cost estimate (``benchmarks/study_cost.py``) uses it too.
"""

from __future__ import annotations

import math


def min_batches(epochs: int, min_steps: int | None, accumulate: int = 1) -> int | None:
    """Train batches per epoch (per rank) that ``epochs`` epochs need for ``min_steps``
    optimizer steps of ``accumulate`` batches each; None: no floor."""
    return None if min_steps is None else math.ceil(min_steps / epochs) * accumulate


def epoch_passes(labelled: int, batch_size: int, min_batches: int | None, world: int = 1) -> int:
    """Passes over ``labelled`` images per epoch: 1, or the fewest that give each of ``world``
    ranks ``min_batches`` full batches of ``batch_size``."""
    if not min_batches:
        return 1
    # a rank's share is ceil(labelled * passes / world): at least min_batches * batch_size
    return max(1, world * (min_batches * batch_size - 1) // labelled + 1)


def batches_per_epoch(labelled: int, passes: int, batch_size: int, world: int = 1) -> int:
    """Train batches per epoch on each rank: its share of ``labelled * passes`` samples in full
    batches, or one short batch when the share is no larger than a batch (the DataModule's
    ``drop_last`` rule, :func:`drop_last`)."""
    share = rank_share(labelled, passes, world)
    return share // batch_size if drop_last(share, batch_size) else 1


def rank_share(labelled: int, passes: int, world: int = 1) -> int:
    """Samples per epoch on each rank (the sampler pads the epoch to equal shares)."""
    return math.ceil(labelled * passes / world)


def drop_last(share: int, batch_size: int) -> bool:
    """Drop an epoch's last short batch only when a rank has more than a batch, so that a labelled
    set smaller than a batch still trains (on one short batch) on every rank."""
    return share > batch_size
