"""The prepared splits as MLflow datasets: what a run trained, validated and was tested on.

Every training run logs the splits it reads, train and val, as dataset inputs (contexts train /
validation); it never opens the test split. The evaluate stage links its test metrics to the test
split's dataset, from the test dir. MLflow is imported inside the functions.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..data.splits import MANIFEST, load_prepared

# a prepared split -> its MLflow dataset context
CONTEXTS = {"train": "train", "val": "validation", "test": "test"}


def split_datasets(data_dir: Path) -> dict[str, Any]:
    """The splits in the prepared (or test) dir ``data_dir`` as MLflow datasets, ``{split: NumpyDataset}``: named
    after the data set, digest the first 8 hex digits of sha256(manifest.json + split name), the
    split's images file as source, and its array shapes (split size first) as profile."""
    import hashlib
    import warnings

    from mlflow.data import from_numpy

    data_dir = Path(data_dir).resolve()
    manifest, splits = load_prepared(data_dir)
    blob = (data_dir / MANIFEST).read_bytes()
    with warnings.catch_warnings():  # MLflow registers its local source twice and says so
        warnings.simplefilter("ignore", UserWarning)
        return {split: from_numpy(images, targets=labels, name=manifest["dataset"],
                                  source=str(data_dir / f"{split}_images.npy"),
                                  digest=hashlib.sha256(blob + split.encode()).hexdigest()[:8])
                for split, (images, labels) in splits.items()}


def log_datasets(client, run_id: str, data_dir: Path) -> None:
    """The splits in ``data_dir`` as the run's dataset inputs, with their contexts (a resumed run
    logs the same inputs again, which MLflow keeps once)."""
    from mlflow.entities import DatasetInput, InputTag
    from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

    client.log_inputs(run_id, datasets=[
        DatasetInput(ds._to_mlflow_entity(), [InputTag(MLFLOW_DATASET_CONTEXT, CONTEXTS[split])])
        for split, ds in split_datasets(data_dir).items()])
