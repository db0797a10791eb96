"""Raw datasets: find or download the official files, verify their checksums, parse them.

``load_raw(name, raw_dir)`` returns a :class:`RawDataset` of uint8 ``(N, H, W, C)`` images and
int64 labels for the official train and test splits. Files live in ``raw_dir / name``; for
Fashion-MNIST the read-only :data:`SYSTEM_DIRS` (the Debian ``dataset-fashion-mnist`` package)
are searched next, and only then is anything downloaded. Every file is checked against the
md5 in :data:`FILES` before it is parsed; a mismatch is reported and the file is left alone.

The tables :data:`FILES` and :data:`SYSTEM_DIRS` are plain module-level data so that other
checksums or locations (a mirror, a test fixture) can be substituted without code changes.
"""

from __future__ import annotations

import hashlib
import http.client
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.data.parsers import (
    decode_names,
    gunzip,
    parse_cifar_batch,
    parse_idx,
    read_tar_members,
    unpickle,
)
from pipeline.errors import DataError


def download_url(url: str, root: str, filename: str | None = None, md5: str | None = None) -> None:
    """torchvision's ``download_url``, imported when a download happens (importing torchvision
    takes seconds, which a params check or an offline prepare should not pay)."""
    from torchvision.datasets.utils import download_url as torchvision_download_url

    torchvision_download_url(url, root, filename=filename, md5=md5)

DATASETS = ("cifar10", "cifar100", "fashion_mnist", "digits")

OFFLINE_HINT = "no network? run the offline quick run: make quick"
# Where a dataset can come from without a network, named in its "missing" errors.
OFFLINE_SOURCES = {
    "fashion_mnist": "offline, install the Debian package dataset-fashion-mnist "
    "(it puts the files in /usr/share/datasets/fashion-mnist)",
}


def _offline_hint(name: str) -> str:
    return OFFLINE_SOURCES.get(name, OFFLINE_HINT)


@dataclass(frozen=True)
class FileSpec:
    """One official file of a raw dataset.

    ``md5`` is the checksum of the file as stored or, when ``md5_of_content`` is true, of its
    gzip-decompressed content (the Debian Fashion-MNIST package re-gzipped the upstream files,
    so only the content checksum is the same for every source).
    """

    filename: str
    url: str
    md5: str
    md5_of_content: bool = False


_FASHION_URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
_FASHION_TRAIN_IMAGES = "train-images-idx3-ubyte.gz"
_FASHION_TRAIN_LABELS = "train-labels-idx1-ubyte.gz"
_FASHION_TEST_IMAGES = "t10k-images-idx3-ubyte.gz"
_FASHION_TEST_LABELS = "t10k-labels-idx1-ubyte.gz"

FILES: dict[str, tuple[FileSpec, ...]] = {
    "cifar10": (
        FileSpec(
            "cifar-10-python.tar.gz",
            "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
            "c58f30108f718f92721af3b95e74349a",
        ),
    ),
    "cifar100": (
        FileSpec(
            "cifar-100-python.tar.gz",
            "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
            "eb9058c3a382ffc7106e4002c42a8d85",
        ),
    ),
    "fashion_mnist": tuple(
        FileSpec(filename, _FASHION_URL + filename, md5, md5_of_content=True)
        for filename, md5 in (
            (_FASHION_TRAIN_IMAGES, "f4a8712d7a061bf5bd6d2ca38dc4d50a"),
            (_FASHION_TRAIN_LABELS, "9018921c3c673c538a1fc5bad174d6f9"),
            (_FASHION_TEST_IMAGES, "8181f5470baa50b63fa0f6fddb340f0a"),
            (_FASHION_TEST_LABELS, "15d484375f8d13e6eb1aabb0c3f46965"),
        )
    ),
}

# Read-only directories searched after ``raw_dir / name`` and before downloading.
SYSTEM_DIRS: dict[str, tuple[Path, ...]] = {
    "fashion_mnist": (Path("/usr/share/datasets/fashion-mnist"),),
}

FASHION_MNIST_IMAGE_SIZE = (28, 28)
FASHION_MNIST_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)  # fmt: skip


@dataclass(frozen=True)
class _CifarLayout:
    train_members: tuple[str, ...]
    test_member: str
    meta_member: str
    names_key: bytes
    labels_key: bytes


_CIFAR_LAYOUTS = {
    "cifar10": _CifarLayout(
        tuple(f"data_batch_{i}" for i in range(1, 6)), "test_batch", "batches.meta",
        b"label_names", b"labels",
    ),
    "cifar100": _CifarLayout(("train",), "test", "meta", b"fine_label_names", b"fine_labels"),
}  # fmt: skip


@dataclass(frozen=True, eq=False)
class RawDataset:
    """The official train and test splits of one dataset, validated on construction."""

    name: str
    classes: list[str]
    train_images: np.ndarray  # uint8 (N, H, W, C)
    train_labels: np.ndarray  # int64 (N,)
    test_images: np.ndarray
    test_labels: np.ndarray
    sources: dict[str, str]  # file name -> "md5:<hex>" of what was verified

    def __post_init__(self) -> None:
        n = len(self.classes)
        validate_samples(self.train_images, self.train_labels, n, f"{self.name} train split")
        validate_samples(self.test_images, self.test_labels, n, f"{self.name} test split")
        if self.train_images.shape[1:] != self.test_images.shape[1:]:
            raise DataError(
                f"{self.name}: train images are {self.train_images.shape[1:]} but test images "
                f"are {self.test_images.shape[1:]}"
            )

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        h, w, c = self.train_images.shape[1:]
        return int(h), int(w), int(c)


def validate_samples(images: np.ndarray, labels: np.ndarray, num_classes: int, source: str) -> None:
    """Check uint8 ``(N, H, W, C)`` images (C in {1, 3}) and ``N`` labels in ``[0, num_classes)``.

    ``source`` (a file, or a file and member) is named in the :class:`DataError`.
    """
    if (
        not isinstance(images, np.ndarray)
        or images.dtype != np.uint8
        or images.ndim != 4
        or images.shape[3] not in (1, 3)
        or min(images.shape[1:3], default=0) < 1
    ):
        shape = getattr(images, "shape", None)
        dtype = getattr(images, "dtype", type(images).__name__)
        raise DataError(
            f"{source}: images must be uint8 (N, H, W, C) with C in {{1, 3}}, "
            f"got dtype {dtype} shape {shape}"
        )
    if len(images) == 0:
        raise DataError(f"{source}: no samples")
    if not isinstance(labels, np.ndarray) or labels.ndim != 1 or labels.dtype.kind not in "iu":
        raise DataError(
            f"{source}: labels must be a 1-D integer array, got "
            f"{getattr(labels, 'dtype', type(labels).__name__)} {getattr(labels, 'shape', '')}"
        )
    if len(labels) != len(images):
        raise DataError(f"{source}: {len(labels)} labels for {len(images)} images")
    check_label_range(labels, num_classes, source)


def check_label_range(labels: np.ndarray, num_classes: int, source: str) -> None:
    """DataError naming ``source`` and the first sample whose label is outside [0, num_classes).

    Run on the CPU so that a bad label is reported here, not as a device-side assert in the loss.
    """
    bad = np.flatnonzero((labels < 0) | (labels >= num_classes))
    if bad.size:
        i = int(bad[0])
        raise DataError(
            f"{source}: sample {i} has label {int(labels[i])}, outside [0, {num_classes}) "
            f"({bad.size} bad labels in total)"
        )


# --------------------------------------------------------------------------- files


def md5_file(path: Path, chunk_size: int = 1 << 20) -> str:
    """Hex md5 of a file's bytes, read in chunks."""
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        while chunk := f.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


def _check_md5(path: Path, spec: FileSpec, actual: str) -> str:
    if actual != spec.md5:
        what = "md5 of the decompressed content" if spec.md5_of_content else "md5"
        raise DataError(
            f"checksum mismatch for {path}: expected {what} {spec.md5}, got {actual}. "
            "The file was left in place; replace or delete it if it is corrupt."
        )
    return f"md5:{actual}"


def _download(spec: FileSpec, dest: Path, hint: str = OFFLINE_HINT) -> None:
    """Fetch ``spec.url`` to ``dest`` via a ``.part`` file, so no half file is ever at ``dest``."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    part.unlink(missing_ok=True)  # download_url would accept a stale partial file as complete
    try:
        download_url(spec.url, str(dest.parent), filename=part.name, md5=None)
    except (OSError, http.client.HTTPException, RuntimeError) as exc:  # URLError is an OSError
        part.unlink(missing_ok=True)
        raise DataError(
            f"could not download {spec.url} to {dest} ({type(exc).__name__}: {exc}); {hint}"
        ) from exc
    part.replace(dest)


def _locate(name: str, spec: FileSpec, raw_dir: Path, download: bool) -> Path:
    """Path of ``spec.filename``: ``raw_dir/name``, then :data:`SYSTEM_DIRS`, then a download."""
    local = raw_dir / name / spec.filename
    candidates = [local, *(d / spec.filename for d in SYSTEM_DIRS.get(name, ()))]
    for path in candidates:
        if path.is_file():
            return path
    if not download:
        also = (
            f" (also looked for {', '.join(map(str, candidates[1:]))})"
            if len(candidates) > 1
            else ""
        )
        raise DataError(
            f"missing {spec.filename}: expected {local}{also}, and download is disabled"
            + (f"; {OFFLINE_SOURCES[name]}" if name in OFFLINE_SOURCES else "")
        )
    _download(spec, local, _offline_hint(name))
    return local


# --------------------------------------------------------------------------- CIFAR


def _load_cifar(name: str, raw_dir: Path, download: bool) -> RawDataset:
    (spec,) = FILES[name]
    layout = _CIFAR_LAYOUTS[name]
    path = _locate(name, spec, raw_dir, download)
    checksum = _check_md5(path, spec, md5_file(path))
    members = read_tar_members(
        path, {*layout.train_members, layout.test_member, layout.meta_member}
    )

    def load(member: str) -> tuple[str, dict]:
        source = f"{path}::{member}"
        return source, unpickle(members[member], source)

    meta_source, meta = load(layout.meta_member)
    classes = decode_names(meta, layout.names_key, meta_source)

    def split(member_names: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
        parts = []
        for member in member_names:
            source, batch = load(member)
            images, labels = parse_cifar_batch(batch, layout.labels_key, source)
            validate_samples(images, labels, len(classes), source)
            parts.append((images, labels))
        return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])

    train_images, train_labels = split(layout.train_members)
    test_images, test_labels = split((layout.test_member,))
    return RawDataset(
        name, classes, train_images, train_labels, test_images, test_labels,
        {spec.filename: checksum},
    )  # fmt: skip


# --------------------------------------------------------------------------- IDX (Fashion-MNIST)


def _read_idx(
    name: str, spec: FileSpec, raw_dir: Path, download: bool, ndim: int
) -> tuple[Path, np.ndarray, str]:
    path = _locate(name, spec, raw_dir, download)
    content = gunzip(path)
    actual = hashlib.md5(content, usedforsecurity=False).hexdigest()
    checksum = _check_md5(path, spec, actual)
    return path, parse_idx(content, ndim, str(path)), checksum


def _load_fashion_mnist(raw_dir: Path, download: bool) -> RawDataset:
    name = "fashion_mnist"
    specs = {spec.filename: spec for spec in FILES[name]}
    sources: dict[str, str] = {}

    def split(images_file: str, labels_file: str) -> tuple[np.ndarray, np.ndarray]:
        images_path, images, images_md5 = _read_idx(name, specs[images_file], raw_dir, download, 3)
        labels_path, labels, labels_md5 = _read_idx(name, specs[labels_file], raw_dir, download, 1)
        sources[images_file], sources[labels_file] = images_md5, labels_md5
        if images.shape[1:] != FASHION_MNIST_IMAGE_SIZE:
            raise DataError(
                f"{images_path}: IDX header dims {images.shape} are not (N, 28, 28) "
                "Fashion-MNIST images"
            )
        if len(images) == 0:
            raise DataError(f"{images_path}: no samples (IDX header dims {images.shape})")
        if len(labels) != len(images):
            raise DataError(
                f"{labels_path} has {len(labels)} labels but {images_path} has {len(images)} images"
            )
        labels = labels.astype(np.int64)
        validate_samples(images[..., None], labels, len(FASHION_MNIST_CLASSES), str(labels_path))
        return images[..., None], labels

    train = split(_FASHION_TRAIN_IMAGES, _FASHION_TRAIN_LABELS)
    test = split(_FASHION_TEST_IMAGES, _FASHION_TEST_LABELS)
    return RawDataset(name, list(FASHION_MNIST_CLASSES), *train, *test, sources)


# --------------------------------------------------------------------------- digits


def _load_digits(raw_dir: Path, download: bool) -> RawDataset:
    """scikit-learn's bundled 8x8 digits (offline), with a fixed stratified 75/25 split."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    source = "sklearn.load_digits"
    bunch = load_digits()
    values = np.asarray(bunch.images, dtype=np.float64)
    if values.ndim != 3 or values.size == 0 or values.min() < 0 or values.max() > 16:
        raise DataError(f"{source}: expected (N, 8, 8) values in 0..16, got {values.shape}")
    images = np.rint(values * 255.0 / 16.0).astype(np.uint8)[..., None]
    labels = np.asarray(bunch.target, dtype=np.int64)
    classes = [str(c) for c in range(10)]
    validate_samples(images, labels, len(classes), source)
    checksum = hashlib.md5(images.tobytes() + labels.tobytes(), usedforsecurity=False).hexdigest()
    train_idx, test_idx = train_test_split(
        np.arange(len(labels)), test_size=0.25, random_state=0, stratify=labels
    )
    train_idx, test_idx = np.sort(train_idx), np.sort(test_idx)
    return RawDataset(
        "digits", classes, images[train_idx], labels[train_idx], images[test_idx], labels[test_idx],
        {source: f"md5:{checksum}"},
    )  # fmt: skip


_LOADERS: dict[str, Callable[[Path, bool], RawDataset]] = {
    "cifar10": lambda raw_dir, download: _load_cifar("cifar10", raw_dir, download),
    "cifar100": lambda raw_dir, download: _load_cifar("cifar100", raw_dir, download),
    "fashion_mnist": _load_fashion_mnist,
    "digits": _load_digits,
}


def load_raw(name: str, raw_dir: Path, download: bool = True) -> RawDataset:
    """Load ``name`` (one of :data:`DATASETS`) from ``raw_dir / name``, downloading if allowed."""
    if name not in _LOADERS:
        raise ValueError(f"unknown dataset {name!r}; allowed: {', '.join(DATASETS)}")
    return _LOADERS[name](Path(raw_dir), download)
