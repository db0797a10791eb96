"""PreparedDataModule: batch layout, loader settings, seeding, Lightning integration."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from pipeline.data import PreparedDataModule, prepare_dataset
from pipeline.data.sources import RawDataset
from pipeline.errors import DataError


@pytest.fixture(scope="module")
def prepared(tmp_path_factory, fakes):
    """Prepared dirs: 'rgb' 8x8x3 (48 train / 12 val; its 30 test images in 'rgb_test') and
    'gray' 8x8x1 (and 'gray_test')."""
    root = tmp_path_factory.mktemp("prepared")
    dirs = {}
    for name, shape in (("rgb", (8, 8, 3)), ("gray", (8, 8, 1))):
        raw = fakes.make_raw(train_per_class=6, test_per_class=3, shape=shape)
        prepare_dataset(raw, root / name, val_fraction=0.2, seed=0,
                        test_dir=root / f"{name}_test")
        dirs[name], dirs[f"{name}_test"] = root / name, root / f"{name}_test"
    return dirs


def _epoch(loader):
    """One epoch's batches; then stop persistent workers now, as Lightning does after fit,
    rather than in some later garbage-collection pass (where torch may wait 5 s per worker)."""
    batches = [(x.clone(), y.clone()) for x, y in loader]
    if getattr(loader, "_iterator", None) is not None:
        loader._iterator._shutdown_workers()
        loader._iterator = None
    return batches


@pytest.mark.parametrize("kind,channels", [("rgb", 3), ("gray", 1)])
def test_batches_are_uint8_hwc_with_int64_labels(prepared, kind, channels):
    dm = PreparedDataModule(prepared[kind], batch_size=16, crop_padding=2, hflip=True)
    assert dm.num_classes == 10 and dm.image_shape == (8, 8, channels)  # before setup
    assert dm.classes == [f"c{i}" for i in range(10)]
    dm.setup("fit")
    x, y = next(iter(dm.train_dataloader()))
    assert x.dtype == torch.uint8 and x.shape == (16, 8, 8, channels)
    assert y.dtype == torch.int64 and y.shape == (16,)
    assert dm.manifest["counts"] == {"train": 48, "val": 12}


def test_loader_settings(prepared):
    dm = PreparedDataModule(prepared["rgb"], batch_size=20, eval_batch_size=7)
    dm.setup()
    train = dm.train_dataloader()
    assert train.drop_last and len(train) == 2  # 48 // 20
    assert train.pin_memory == torch.cuda.is_available() and not train.persistent_workers
    assert [len(y) for _, y in dm.val_dataloader()] == [7, 5]
    assert dm.hparams["batch_size"] == 20 and dm.hparams["eval_batch_size"] == 7

    small = PreparedDataModule(prepared["rgb"], batch_size=64)  # larger than the train set
    small.setup()
    assert not small.train_dataloader().drop_last
    assert [len(y) for _, y in small.train_dataloader()] == [48]


def test_eval_loaders_are_unshuffled_and_untouched(prepared):
    dm = PreparedDataModule(prepared["rgb"], batch_size=8, crop_padding=2, hflip=True,
                            test_dir=prepared["rgb_test"])
    dm.setup()
    for split, loader in (("val", dm.val_dataloader()), ("test", dm.test_dataloader()),
                          ("test", dm.predict_dataloader())):  # fmt: skip
        x = torch.cat([b[0] for b in loader]).numpy()
        y = torch.cat([b[1] for b in loader]).numpy()
        where = prepared["rgb_test"] if split == "test" else prepared["rgb"]
        np.testing.assert_array_equal(x, np.load(where / f"{split}_images.npy"))
        np.testing.assert_array_equal(y, np.load(where / f"{split}_labels.npy"))


def test_training_never_opens_the_test_split(prepared, tmp_path):
    """A training DataModule sets up and loads train and val with no test dir at all, and asks
    for the test split only when a test loader is wanted."""
    import shutil

    alone = tmp_path / "prepared"
    shutil.copytree(prepared["rgb"], alone)  # no test dir beside it
    dm = PreparedDataModule(alone, batch_size=8)
    dm.setup("fit")
    assert len(_epoch(dm.train_dataloader())) == 6 and len(_epoch(dm.val_dataloader())) == 2
    with pytest.raises(RuntimeError, match="no test_dir"):
        dm.test_dataloader()


def test_train_loader_shuffles_reproducibly_in_process(prepared):
    def run(seed):
        dm = PreparedDataModule(
            prepared["rgb"], batch_size=8, crop_padding=2, hflip=True, seed=seed
        )
        dm.setup()
        return _epoch(dm.train_dataloader())

    a, b, c = run(0), run(0), run(1)
    assert all(
        torch.equal(xa, xb) and torch.equal(ya, yb) for (xa, ya), (xb, yb) in zip(a, b, strict=True)
    )
    assert not all(torch.equal(ya, yc) for (_, ya), (_, yc) in zip(a, c, strict=True))
    saved = np.load(prepared["rgb"] / "train_labels.npy")
    labels = torch.cat([y for _, y in a]).numpy()
    assert sorted(labels.tolist()) == sorted(saved.tolist()) and not np.array_equal(labels, saved)


@pytest.fixture(scope="module")
def identical_images(tmp_path_factory):
    """Every train image is the same, so any difference between samples is augmentation."""
    image = np.random.default_rng(0).integers(0, 256, size=(8, 8, 3), dtype=np.uint8)
    labels = np.arange(32) % 4
    images = np.broadcast_to(image, (32, 8, 8, 3)).copy()
    raw = RawDataset("same", ["a", "b", "c", "d"], images, labels, images[:4], labels[:4], {})
    out = tmp_path_factory.mktemp("same") / "prepared"
    prepare_dataset(raw, out, val_fraction=0.25, seed=0)
    return out


def test_two_workers_differ_and_runs_repeat(identical_images):
    def run():
        dm = PreparedDataModule(identical_images, batch_size=4, num_workers=2, crop_padding=3,
                                hflip=True, seed=0)  # fmt: skip
        dm.setup()
        loader = dm.train_dataloader()
        assert loader.persistent_workers and loader.num_workers == 2
        return _epoch(loader)

    first, second = run(), run()
    assert len(first) == 6  # 24 train samples / 4
    for (xa, ya), (xb, yb) in zip(first, second, strict=True):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    # batches alternate between worker 0 and worker 1; their augmentations must not coincide
    assert not torch.equal(first[0][0], first[1][0])
    assert len({x.numpy().tobytes() for batch, _ in first for x in batch}) > 8


def test_order_and_augmentation_are_a_function_of_seed_and_epoch(identical_images, prepared):
    """What exact resume needs: a fresh loader set to epoch 1 gives the batches that the second
    epoch of an uninterrupted loader gave, with any number of workers."""

    def loader(num_workers, **kw):
        dm = PreparedDataModule(identical_images, batch_size=4, num_workers=num_workers,
                                crop_padding=3, hflip=True, seed=0, **kw)  # fmt: skip
        dm.setup()
        return dm.train_dataloader()

    running = loader(0)
    epochs = []
    for epoch in range(2):
        running.sampler.set_epoch(epoch)
        epochs.append(_epoch(running))
    resumed = loader(2)
    resumed.sampler.set_epoch(1)
    for (xa, ya), (xb, yb) in zip(epochs[1], _epoch(resumed), strict=True):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    # and the two epochs differ in augmentation
    assert not all(torch.equal(a[0], b[0]) for a, b in zip(*epochs, strict=True))

    dm = PreparedDataModule(prepared["rgb"], batch_size=8, seed=0)
    dm.setup()
    train = dm.train_dataloader()
    orders = []
    for epoch in (0, 1, 0):
        train.sampler.set_epoch(epoch)
        orders.append(torch.cat([y for _, y in _epoch(train)]))
    assert torch.equal(orders[0], orders[2]) and not torch.equal(orders[0], orders[1])


def test_without_sample_seeds_workers_repeat_each_other(identical_images):
    """Control for the tests above: the bug that the sampler's per-sample seeds prevent is real
    (each worker holds a copy of the same augmentation stream)."""
    dm = PreparedDataModule(identical_images, batch_size=4, crop_padding=3, hflip=True)
    dm.setup()
    loader = DataLoader(dm.dataset("train"), batch_size=4, num_workers=2, shuffle=False)
    batches = [x for x, _ in loader]
    assert torch.equal(batches[0], batches[1])


def test_dataset_pickles_as_file_reference(prepared):
    dm = PreparedDataModule(prepared["rgb"], batch_size=8)
    dm.setup()
    dataset = dm.dataset("train")
    blob = pickle.dumps(dataset)
    assert len(blob) < dataset.images.nbytes  # the map was not copied into the pickle
    clone = pickle.loads(blob)
    assert isinstance(clone.images, np.memmap)
    np.testing.assert_array_equal(clone.images, dataset.images)
    assert torch.equal(clone[3][0], dataset[3][0])

    view = type(dataset)(dataset.images[:5], dataset.labels[:5])  # a view must travel as data
    assert len(pickle.loads(pickle.dumps(view))) == 5


def test_missing_prepared_dir(tmp_path):
    dm = PreparedDataModule(tmp_path / "absent", batch_size=4)
    with pytest.raises(DataError, match="dvc repro prepare"):
        _ = dm.num_classes
    with pytest.raises(DataError, match=str(tmp_path / "absent")):
        dm.setup()


class _Indexable:
    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n


@pytest.mark.parametrize("n,world", [(10, 1), (10, 3), (7, 2)])
def test_one_pass_is_distributed_samplers_order_and_split(n, world):
    """passes=1 changes nothing: the order, the DDP split and padding of ``DistributedSampler``,
    and the per-image augmentation seeds of (seed, epoch, index)."""
    from torch.utils.data import DistributedSampler

    from pipeline.data.datamodule import EpochSampler, sample_seed

    for rank in range(world):
        ours = EpochSampler(_Indexable(n), seed=5, num_replicas=world, rank=rank)
        ref = DistributedSampler(_Indexable(n), num_replicas=world, rank=rank, seed=5)
        for epoch in (0, 3):
            ours.set_epoch(epoch)
            ref.set_epoch(epoch)
            assert list(ours) == [(i, sample_seed(5, epoch, i)) for i in ref]
            assert len(ours) == len(ref)


def test_passes_repeat_every_image_with_new_orders_and_augmentations():
    from pipeline.data.datamodule import EpochSampler

    n, passes = 10, 3
    sampler = EpochSampler(_Indexable(n), seed=0, passes=passes)
    sampler.set_epoch(2)
    drawn = list(sampler)
    assert len(drawn) == len(sampler) == n * passes
    indices = [i for i, _ in drawn]
    assert all(indices.count(i) == passes for i in range(n))
    assert sorted(indices[:n]) == list(range(n))  # each pass is a whole permutation
    assert indices[:n] != indices[n:2 * n]  # in its own order
    assert len({s for _, s in drawn}) == n * passes  # every repeat its own augmentation
    # the first pass is exactly the one-pass epoch
    one = EpochSampler(_Indexable(n), seed=0)
    one.set_epoch(2)
    assert drawn[:n] == list(one)
    # under DDP the ranks split the epoch's positions (padded to equal shares), disjointly
    shares = []
    for rank in range(4):
        s = EpochSampler(_Indexable(n), seed=0, num_replicas=4, rank=rank, passes=passes)
        s.set_epoch(2)
        shares.append(list(s))
    assert [len(x) for x in shares] == [8] * 4  # ceil(30 / 4)
    flat = [x for share in shares for x in share]
    assert set(flat) == set(drawn) and len(flat) - len(set(flat)) == 2  # 2 padded repeats
    with pytest.raises(ValueError, match="passes"):
        EpochSampler(_Indexable(n), seed=0, passes=0)


@pytest.mark.parametrize("passes", [1, 2])
def test_repeats_draw_each_image_several_times_in_a_row_on_different_ranks(passes):
    """Repeated augmentation: an epoch of the same length, its images in runs of 3 copies, each
    copy with its own augmentation seed; on 3 ranks the copies of an image go to the 3 ranks at
    the same step; the ranks' shares are disjoint positions of the one-device stream."""
    from pipeline.data.datamodule import EpochSampler

    n, r = 12, 3
    one = EpochSampler(_Indexable(n), seed=1, passes=passes, repeats=r)
    one.set_epoch(4)
    drawn = list(one)
    assert len(drawn) == len(one) == n * passes  # the epoch keeps its length
    indices = [i for i, _ in drawn]
    runs = [indices[k:k + r] for k in range(0, len(indices), r)]
    assert all(len(set(run)) == 1 for run in runs)  # each image 3 times in a row
    plain = EpochSampler(_Indexable(n), seed=1, passes=passes)
    plain.set_epoch(4)
    # the images of the plain order's first 1/r, in that order
    assert [run[0] for run in runs] == [i for i, _ in plain][:n * passes // r]
    assert len({s for _, s in drawn}) == len(drawn)  # every copy its own augmentation
    shares = []
    for rank in range(r):
        s = EpochSampler(_Indexable(n), seed=1, num_replicas=r, rank=rank, passes=passes,
                         repeats=r)
        s.set_epoch(4)
        shares.append(list(s))
    assert all(len(x) == n * passes // r for x in shares)
    assert sorted(x for share in shares for x in share) == sorted(drawn)  # disjoint, complete
    for step in range(n * passes // r):  # the same image on every rank, each augmented anew
        assert len({share[step][0] for share in shares}) == 1
        assert len({share[step][1] for share in shares}) == r
    again = EpochSampler(_Indexable(n), seed=1, passes=passes, repeats=r)
    again.set_epoch(4)
    assert list(again) == drawn  # a function of (seed, epoch): a resume sees the same stream
    with pytest.raises(ValueError, match="repeats"):
        EpochSampler(_Indexable(n), seed=0, repeats=0)


def test_repeats_reach_the_train_loader(prepared):
    dm = PreparedDataModule(prepared["rgb"], batch_size=6, seed=0, repeats=3, crop_padding=2,
                            hflip=True)
    dm.setup()
    batches = list(dm.train_dataloader())
    assert sum(len(y) for _, y in batches) == len(dm.dataset("train")) // 6 * 6
    for images, labels in batches:  # runs of 3 copies of one image, augmented apart
        assert all(len(set(labels[k:k + 3].tolist())) == 1 for k in range(0, 6, 3))
    images = torch.cat([x for x, _ in batches])
    assert any(not torch.equal(images[k], images[k + 1]) for k in range(0, len(images), 3))


def test_budget_subset_with_min_batches(prepared):
    """A label budget trains on its stratified subset; min_batches makes each epoch pass over it
    as often as that many full batches need, on one rank or several."""
    dm = PreparedDataModule(prepared["rgb"], batch_size=4, seed=1, budget=1, min_batches=5)
    dm.setup()
    train_labels = np.load(prepared["rgb"] / "train_labels.npy")
    assert len(dm.dataset("train")) == 10  # one per class
    assert sorted(train_labels[dm.train_indices].tolist()) == list(range(10))
    assert dm.passes() == 2 and dm.passes(world=2) == 4  # ceil(5 * 4 * world / 10)
    loader = dm.train_dataloader()
    batches = _epoch(loader)
    assert len(loader) == len(batches) == 5 and all(len(y) == 4 for _, y in batches)
    labels = torch.cat([y for _, y in batches]).tolist()
    assert all(labels.count(c) == 2 for c in range(10))  # each labelled image twice
    plain = PreparedDataModule(prepared["rgb"], batch_size=4, seed=1, budget=1)
    plain.setup()
    assert plain.passes() == 1 and len(plain.train_dataloader()) == 2  # 10 // 4
    # a larger set already has the batches: one pass
    full = PreparedDataModule(prepared["rgb"], batch_size=4, min_batches=5)
    full.setup()
    assert full.passes() == 1 and len(full.train_dataloader()) == 12


def test_every_rank_trains_when_its_share_is_under_a_batch(prepared):
    """12 labelled images on 3 ranks with batch 8: each rank's share (4) is under a batch, so it
    keeps its one short batch (dropping it, as a whole-set rule would, left ranks with nothing);
    with min_batches the epoch passes over the set until every rank has full batches."""
    from types import SimpleNamespace

    out = []
    for kw in ({}, {"min_batches": 2}):
        sizes = []
        for rank in range(3):
            dm = PreparedDataModule(prepared["rgb"], batch_size=8, seed=0, **kw)
            dm.setup()
            ds = dm.dataset("train")
            ds.images, ds.labels = ds.images[:12], ds.labels[:12]
            dm.trainer = SimpleNamespace(world_size=3, global_rank=rank,
                                         strategy=SimpleNamespace(root_device=torch.device("cpu")))
            sizes.append([len(y) for _, y in dm.train_dataloader()])
        out.append(sizes)
    assert out[0] == [[4], [4], [4]]
    assert out[1] == [[8, 8]] * 3  # passes = 4: 48 samples, 16 per rank
