"""A trained variant as an MLflow model that ``mlflow models serve`` can serve.

The network is one graph, exported with ``torch.export`` (no pickle): uint8 images
``(N, H, W, C)`` as the prepared data holds them -> class probabilities ``(N, num_classes)``. The
device-side preprocessing (scale, gray->RGB, bicubic resize, normalise) is inside the graph, so a
client sends raw pixels. MLflow serves it through :mod:`.serving_pyfunc` (a "model from code"),
which answers with the class names: per image its label, probability, top-5 classes by name and
every probability. The class names also travel in the model's metadata (``classes``); the
signature says the types and shapes; the batch size is dynamic.

    mlflow models serve -m models:/<name>/<version> -p 5001 --env-manager local
    curl -X POST localhost:5001/invocations -H 'Content-Type: application/json' \
         -d '{"inputs": [[[[0, 0, 0], ...]]]}'
    # -> {"predictions": [{"label": "7", "probability": 0.91, "top_k": [...], ...}]}
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..errors import TrackingError
from ..models.classifier import ImageClassifier
from ..models.model_file import TrainedModel
from .serving_pyfunc import records
from .uri import client, tracking_uri

log = logging.getLogger(__name__)


class ServingModel(nn.Module):
    """uint8 images (N, H, W, C) -> probabilities (N, num_classes): the trained
    :class:`~pipeline.models.ImageClassifier` (preprocessing included) and a softmax."""

    def __init__(self, classifier: ImageClassifier) -> None:
        super().__init__()
        self.classifier = classifier

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.classifier(images).float().softmax(-1)


def input_example(image_shape: tuple[int, int, int], n: int = 2) -> np.ndarray:
    """A fixed uint8 batch of ``n`` images (n > 1 keeps the batch dimension dynamic in export)."""
    return np.random.default_rng(0).integers(0, 256, size=(n, *image_shape), dtype=np.uint8)


@contextlib.contextmanager
def _fluent_uris(uri: str):
    """MLflow's fluent API (``start_run``, ``log_model``) at the store ``uri`` for the block,
    then its process-wide URIs as they were: another MLflow user in this process (Lightning's
    MLFlowLogger sets them, and so does a test) keeps its own."""
    import mlflow
    from mlflow.tracking._model_registry import utils as registry
    from mlflow.tracking._tracking_service import utils as tracking

    saved = getattr(tracking, "_tracking_uri", None), getattr(registry, "_registry_uri", None)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    try:
        yield
    finally:
        tracking._tracking_uri, registry._registry_uri = saved


CODE = Path(__file__).with_name("serving_pyfunc.py")  # the served model's code (stored with it)
TOP_K = 5


def _export(serving: ServingModel, example: np.ndarray, path: Path) -> None:
    """``serving`` as one ``torch.export`` graph at ``path``, the batch size dynamic."""
    batch = torch.export.Dim("batch", min=1)
    program = torch.export.export(serving, (torch.from_numpy(example),),
                                  dynamic_shapes=({0: batch},))
    torch.export.save(program, str(path))


def log_serving_model(
    model: ImageClassifier,
    *,
    run_id: str,
    classes: list[str],
    image_shape: tuple[int, int, int],
    name: str = "model",
    registered_name: str | None = None,
):
    """Log ``model`` into MLflow run ``run_id`` as the logged model ``name``: the exported graph
    served by :mod:`.serving_pyfunc` (class names and probabilities per image), with its
    signature, input example and class names; register it as ``registered_name`` if given.
    Returns MLflow's ModelInfo."""
    import mlflow

    serving = ServingModel(model.cpu().float()).eval()
    example = input_example(tuple(image_shape))
    with torch.no_grad():
        probs = serving(torch.from_numpy(example)).numpy()
    k = min(TOP_K, len(classes))
    signature = mlflow.models.infer_signature(example, records(probs, list(classes), k))
    store = client()
    before = store.get_run(run_id).info
    try:
        with tempfile.TemporaryDirectory() as tmp, _fluent_uris(tracking_uri()), \
                mlflow.start_run(run_id=run_id):
            graph = Path(tmp) / "graph.pt2"
            _export(serving, example, graph)
            return _log(mlflow, graph, name=name, classes=list(classes), k=k, example=example,
                        signature=signature, registered_name=registered_name)
    finally:  # the training run keeps its status and its end: its duration is its training's
        if before.end_time:
            store.set_terminated(run_id, before.status, end_time=before.end_time)


def _log(mlflow, graph: Path, *, name: str, classes: list[str], k: int, example: np.ndarray,
         signature, registered_name: str | None):
    return mlflow.pyfunc.log_model(
        name=name,
        python_model=str(CODE),
        artifacts={"graph": str(graph)},
        model_config={"classes": classes, "top_k": k},
        input_example=example,
        signature=signature,
        metadata={"classes": classes, "input": "uint8 images (N, H, W, C)",
                  "output": f"per image: label, probability, top_k ({k} classes by name), "
                            "probabilities"},
        registered_model_name=registered_name,
        # the pipeline's own environment; skips MLflow's slow requirement inference
        pip_requirements=[f"torch=={torch.__version__.split('+')[0]}",
                          f"mlflow=={mlflow.__version__}", f"numpy=={np.__version__}"],
    )


def model_name(key: object) -> str:
    """The logged model's name of a cell ``<variant>/<budget>/seed<k>``: ``<variant>-<budget>-
    seed<k>`` (what the MLflow UI lists it as)."""
    return str(key).replace("/", "-")


def _logged(store, run_id: str, name: str):
    """The finished logged model ``name`` of run ``run_id``, or None."""
    from mlflow.entities import LoggedModelStatus

    experiment = store.get_run(run_id).info.experiment_id
    found = store.search_logged_models(
        experiment_ids=[experiment],
        filter_string=f"source_run_id = '{run_id}' AND name = '{name}'")
    ready = [m for m in found if m.status == LoggedModelStatus.READY]
    return ready[0] if ready else None


def register_models(models: Mapping[str, tuple[TrainedModel, str | None, str]], *,
                    prefix: str | None, image_shape: tuple[int, int, int],
                    model_ids: dict[str, str]) -> None:
    """Each ``{variant: (trained model, its run id, the logged model's name)}`` as an MLflow
    model in that run (``model_ids[variant]`` gets its id as it goes), registered as
    ``<prefix>-<variant>`` when ``prefix`` is given. A run that already holds that model (the cell
    was not trained again since) keeps it, and its registered version stays the only one: a new
    version means a new model. Unlike the test metrics (a record of results already on disk), a
    registration that was asked for and failed fails the stage (TrackingError), so the next
    ``dvc repro`` does it again."""
    import mlflow

    store = client()
    for variant, (trained, run_id, name) in models.items():
        registered = f"{prefix}-{variant}" if prefix else None
        try:
            existing = _logged(store, run_id, name) if run_id else None
            if existing is None:
                info = log_serving_model(trained.classifier, run_id=run_id,
                                         classes=trained.classes, name=name,
                                         image_shape=tuple(image_shape),
                                         registered_name=registered)
                model_ids[variant] = info.model_id
                log.info("%s: MLflow model %s%s", variant, info.model_uri,
                         f", registered as {registered!r} v{info.registered_model_version}"
                         if registered else "")
                continue
            model_ids[variant] = existing.model_id
            register = bool(registered) and not store.search_model_versions(
                f"name = '{registered}' AND run_id = '{run_id}'")
            if register:
                with _fluent_uris(tracking_uri()):
                    mlflow.register_model(existing.model_uri, registered)
            log.info("%s: MLflow model %s of run %s unchanged (the cell was not trained again); "
                     "kept%s", variant, existing.model_uri, run_id,
                     f", registered as {registered!r}" if register else "")
        except Exception as e:
            raise TrackingError(f"could not log the {variant!r} model to MLflow "
                                f"({tracking_uri()}){f' as {registered!r}' if registered else ''}"
                                f": {e}") from e
