"""Fixtures for the data-layer tests: small fake datasets written in the real file formats.

Nothing here touches the network: ``sources.download_url`` is replaced for every test by a
function that fails the test, and tests that exercise downloading replace it again.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import pickle
import struct
import tarfile
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pytest

from pipeline.data import sources
from pipeline.data.sources import RawDataset


@dataclass
class FakeSplits:
    """What a fake raw file should parse back to."""

    path: Path
    classes: list[str]
    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray


def _to_cifar_rows(images_hwc: np.ndarray) -> np.ndarray:
    """(N, 32, 32, 3) -> (N, 3072) rows in CIFAR's order: the R plane, then G, then B."""
    return np.ascontiguousarray(images_hwc.transpose(0, 3, 1, 2).reshape(len(images_hwc), -1))


def _legacy_pickle(obj: object) -> bytes:
    """Protocol-2 pickle naming ``numpy.core.multiarray``, as the real (numpy 1.x era) files do."""
    return pickle.dumps(obj, protocol=2).replace(b"numpy._core.multiarray", b"numpy.core.multiarray")


def _add_member(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def write_cifar(
    path: Path,
    name: str = "cifar10",
    per_batch: int = 20,
    n_test: int = 20,
    seed: int = 0,
    bad_label: tuple[str, int, int] | None = None,
    edit: Callable[[str, dict], None] | None = None,
) -> FakeSplits:
    """A ``cifar-10/100-python.tar.gz`` with real-format (protocol 2, bytes keys) pickles.

    ``bad_label=(member, index, value)`` overwrites one label to test validation;
    ``edit(member, content)`` may change any batch's dict just before it is pickled.
    """
    rng = np.random.default_rng(seed)
    if name == "cifar10":
        folder, n_classes, train_members = (
            "cifar-10-batches-py",
            10,
            [f"data_batch_{i}" for i in range(1, 6)],
        )
        test_member, meta_member, labels_key = "test_batch", "batches.meta", b"labels"
        classes = [f"class{i}" for i in range(n_classes)]
        meta = {
            b"label_names": [c.encode() for c in classes],
            b"num_cases_per_batch": per_batch,
            b"num_vis": 3072,
        }
    else:
        folder, n_classes, train_members = "cifar-100-python", 100, ["train"]
        test_member, meta_member, labels_key = "test", "meta", b"fine_labels"
        classes = [f"fine{i}" for i in range(n_classes)]
        meta = {b"fine_label_names": [c.encode() for c in classes],
                b"coarse_label_names": [f"coarse{i}".encode() for i in range(20)]}  # fmt: skip

    def batch(member: str, n: int) -> tuple[np.ndarray, np.ndarray, bytes]:
        images = rng.integers(0, 256, size=(n, 32, 32, 3), dtype=np.uint8)
        labels = rng.integers(0, n_classes, size=n).astype(np.int64)
        written = labels.copy()
        if bad_label is not None and bad_label[0] == member:
            written[bad_label[1]] = bad_label[2]
        content = {
            b"batch_label": member.encode(),
            labels_key: [int(v) for v in written],
            b"data": _to_cifar_rows(images),
            b"filenames": [f"img_{i}.png".encode() for i in range(n)],
        }
        if name == "cifar100":
            content[b"coarse_labels"] = [int(v) % 20 for v in written]
        if edit is not None:
            edit(member, content)
        return images, labels, _legacy_pickle(content)

    train_parts = [batch(m, per_batch * (1 if name == "cifar10" else 5)) for m in train_members]
    test_images, test_labels, test_bytes = batch(test_member, n_test)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz") as tar:
        _add_member(tar, f"{folder}/readme.html", b"<html>fake</html>")
        _add_member(tar, f"{folder}/{meta_member}", _legacy_pickle(meta))
        for member, (_, _, data) in zip(train_members, train_parts, strict=True):
            _add_member(tar, f"{folder}/{member}", data)
        _add_member(tar, f"{folder}/{test_member}", test_bytes)
    return FakeSplits(
        path, classes,
        np.concatenate([p[0] for p in train_parts]), np.concatenate([p[1] for p in train_parts]),
        test_images, test_labels,
    )  # fmt: skip


def idx_bytes(array: np.ndarray) -> bytes:
    """Serialise a uint8 array in the IDX format (magic 0x000008<ndim>, big-endian dims)."""
    header = struct.pack(">I", 0x0800 | array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()


def write_gz(path: Path, content: bytes) -> str:
    """Gzip ``content`` to ``path``; return the md5 of the decompressed content."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(content))
    return hashlib.md5(content).hexdigest()


FASHION_FILES = {
    "train_images": "train-images-idx3-ubyte.gz",
    "train_labels": "train-labels-idx1-ubyte.gz",
    "test_images": "t10k-images-idx3-ubyte.gz",
    "test_labels": "t10k-labels-idx1-ubyte.gz",
}


def write_fashion(
    directory: Path, n_train: int = 30, n_test: int = 10, seed: int = 0
) -> tuple[FakeSplits, dict[str, str]]:
    """Four Fashion-MNIST IDX ``.gz`` files; returns the expected arrays and content md5s."""
    rng = np.random.default_rng(seed)
    arrays = {
        "train_images": rng.integers(0, 256, size=(n_train, 28, 28), dtype=np.uint8),
        "train_labels": rng.integers(0, 10, size=n_train).astype(np.uint8),
        "test_images": rng.integers(0, 256, size=(n_test, 28, 28), dtype=np.uint8),
        "test_labels": rng.integers(0, 10, size=n_test).astype(np.uint8),
    }
    md5s = {
        FASHION_FILES[k]: write_gz(directory / FASHION_FILES[k], idx_bytes(a))
        for k, a in arrays.items()
    }
    fake = FakeSplits(
        directory, list(sources.FASHION_MNIST_CLASSES),
        arrays["train_images"][..., None], arrays["train_labels"].astype(np.int64),
        arrays["test_images"][..., None], arrays["test_labels"].astype(np.int64),
    )  # fmt: skip
    return fake, md5s


def trust_md5(monkeypatch: pytest.MonkeyPatch, name: str, md5s: dict[str, str]) -> None:
    """Point the checksum table of dataset ``name`` at ``md5s`` (file name -> md5)."""
    specs = tuple(
        replace(spec, md5=md5s.get(spec.filename, spec.md5)) for spec in sources.FILES[name]
    )
    monkeypatch.setitem(sources.FILES, name, specs)


def make_raw(
    n_classes: int = 10,
    train_per_class: int = 40,
    test_per_class: int = 10,
    shape: tuple[int, int, int] = (8, 8, 3),
    seed: int = 0,
) -> RawDataset:
    """A synthetic RawDataset; pixels (0,0,0) and (0,1,0) hold the sample id (traceable rows)."""
    rng = np.random.default_rng(seed)

    def split(per_class: int, offset: int) -> tuple[np.ndarray, np.ndarray]:
        labels = np.repeat(np.arange(n_classes), per_class).astype(np.int64)
        rng.shuffle(labels)
        images = rng.integers(0, 256, size=(len(labels), *shape), dtype=np.uint8)
        ids = np.arange(len(labels)) + offset
        images[:, 0, 0, 0] = ids // 256
        images[:, 0, 1, 0] = ids % 256
        return images, labels

    train = split(train_per_class, 0)
    test = split(test_per_class, 30000)
    return RawDataset(
        "synthetic", [f"c{i}" for i in range(n_classes)], *train, *test, {"synthetic": "md5:0"}
    )


def sample_ids(images: np.ndarray) -> np.ndarray:
    return images[:, 0, 0, 0].astype(np.int64) * 256 + images[:, 0, 1, 0]


@pytest.fixture(autouse=True)
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail any test that would reach the real download code."""

    def refuse(url: str, *args: object, **kwargs: object) -> None:
        pytest.fail(f"test tried to download {url}")

    monkeypatch.setattr(sources, "download_url", refuse)


@pytest.fixture
def no_system_dirs(monkeypatch: pytest.MonkeyPatch) -> None:
    """Hide the machine's Debian Fashion-MNIST so only files made by the test are found."""
    monkeypatch.setattr(sources, "SYSTEM_DIRS", {})


@pytest.fixture(scope="session")
def fakes() -> type:
    """Namespace of the fake-file writers above, for use inside test modules."""

    class Fakes:
        write_cifar = staticmethod(write_cifar)
        write_fashion = staticmethod(write_fashion)
        write_gz = staticmethod(write_gz)
        idx_bytes = staticmethod(idx_bytes)
        trust_md5 = staticmethod(trust_md5)
        make_raw = staticmethod(make_raw)
        sample_ids = staticmethod(sample_ids)
        FASHION_FILES = FASHION_FILES

    return Fakes
