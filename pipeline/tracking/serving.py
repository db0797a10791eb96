"""A trained variant as an MLflow model that ``mlflow models serve`` can serve.

The logged model is one graph, exported with ``torch.export`` (MLflow 3's ``pt2`` serialization,
no pickle): uint8 images ``(N, H, W, C)`` as the prepared data holds them -> class probabilities
``(N, num_classes)``. The device-side preprocessing (scale, gray->RGB, bicubic resize, normalise)
is inside the graph, so a client sends raw pixels. The class names travel in the model's metadata
(``classes``) and the signature says the tensor types and shapes; the batch size is dynamic.

    mlflow models serve -m models:/<name>/<version> -p 5001 --env-manager local
    curl -X POST localhost:5001/invocations -H 'Content-Type: application/json' \
         -d '{"inputs": [[[[0, 0, 0], ...]]]}'      # -> {"predictions": [[p0, p1, ...]]}
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Mapping

import numpy as np
import torch
from torch import nn

from ..errors import TrackingError
from ..models.classifier import ImageClassifier
from ..models.model_file import TrainedModel
from .uri import tracking_uri

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


def log_serving_model(
    model: ImageClassifier,
    *,
    run_id: str,
    classes: list[str],
    image_shape: tuple[int, int, int],
    registered_name: str | None = None,
):
    """Log ``model`` into MLflow run ``run_id`` as ``model`` (pt2, signature, input example,
    class names); register it as ``registered_name`` if given. Returns MLflow's ModelInfo."""
    import mlflow

    serving = ServingModel(model.cpu().float()).eval()
    example = input_example(tuple(image_shape))
    with torch.no_grad():
        output = serving(torch.from_numpy(example)).numpy()
    signature = mlflow.models.infer_signature(example, output)
    with _fluent_uris(tracking_uri()), mlflow.start_run(run_id=run_id):
        return mlflow.pytorch.log_model(
            serving,
            name="model",
            serialization_format="pt2",
            input_example=example,
            signature=signature,
            metadata={"classes": list(classes), "input": "uint8 images (N, H, W, C)",
                      "output": "class probabilities (N, num_classes)"},
            registered_model_name=registered_name,
            # the pipeline's own environment; skips MLflow's slow requirement inference
            pip_requirements=[f"torch=={torch.__version__.split('+')[0]}",
                              f"mlflow=={mlflow.__version__}"],
        )


def register_models(models: Mapping[str, tuple[TrainedModel, str | None]], *,
                    prefix: str | None, image_shape: tuple[int, int, int],
                    model_ids: dict[str, str]) -> None:
    """Each ``{variant: (trained model, its run id)}`` as an MLflow model in that run
    (``model_ids[variant]`` gets its id as it goes), registered as ``<prefix>-<variant>`` when
    ``prefix`` is given. Unlike the test metrics (a record of results already on disk), a
    registration that was asked for and failed fails the stage (TrackingError), so the next
    ``dvc repro`` does it again."""
    for name, (trained, run_id) in models.items():
        registered = f"{prefix}-{name}" if prefix else None
        try:
            info = log_serving_model(trained.classifier, run_id=run_id, classes=trained.classes,
                                     image_shape=tuple(image_shape), registered_name=registered)
        except Exception as e:
            raise TrackingError(f"could not log the {name!r} model to MLflow ({tracking_uri()})"
                                f"{f' as {registered!r}' if registered else ''}: {e}") from e
        model_ids[name] = info.model_id
        log.info("%s: MLflow model %s%s", name, info.model_uri,
                 f", registered as {registered!r} v{info.registered_model_version}"
                 if registered else "")
