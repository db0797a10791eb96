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

import numpy as np
import torch
from torch import nn

from .models.classifier import ImageClassifier
from .store import tracking_uri


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
    # the fluent API below uses the process-wide URIs, which another MLflow user in this process
    # (Lightning's MLFlowLogger sets it) may have pointed elsewhere
    uri = tracking_uri()
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    with mlflow.start_run(run_id=run_id):
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
