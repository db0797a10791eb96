"""The served model's code (MLflow "models from code": this file is stored with the model and run
by ``mlflow models serve``, no pickle): uint8 images ``(N, H, W, C)`` in, one record per image
out, the top classes by name, as ``vit-predict`` gives them.

    {"predictions": [{"label": "7", "probability": 0.91,
                      "top_k": [{"class": "7", "probability": 0.91, "index": 7}, ...],
                      "probabilities": [p0, ..., p9]}, ...]}

The network is the ``torch.export`` graph stored beside it (artifact ``graph``: preprocessing,
the ViT and a softmax); the class names and k come from the model's config. Self-contained:
torch, numpy and MLflow only, so it serves without this package installed.
"""

from __future__ import annotations

import mlflow
import numpy as np
import torch
from mlflow.pyfunc import PythonModel


def records(probs: np.ndarray, classes: list[str], k: int) -> list[dict]:
    """One record per row of ``probs``: its top ``k`` classes by name, then every probability."""
    out = []
    for row in np.asarray(probs, dtype=np.float64):
        top = np.argsort(-row, kind="stable")[:k]
        out.append({"label": classes[top[0]], "probability": float(row[top[0]]),
                    "top_k": [{"class": classes[i], "probability": float(row[i]),
                               "index": int(i)} for i in top],
                    "probabilities": [float(p) for p in row]})
    return out


class ClassifierWithNames(PythonModel):
    # MLflow 3 validates inputs by predict's type hints, which describe lists of records, not
    # image tensors; the signature given at logging describes the input instead (the attribute
    # MLflow's own ChatModel uses to skip the check, and its warning)
    _skip_type_hint_validation = True

    def load_context(self, context) -> None:
        self.graph = torch.export.load(context.artifacts["graph"]).module()
        self.classes = [str(c) for c in context.model_config["classes"]]
        self.k = min(int(context.model_config.get("top_k", 5)), len(self.classes))

    def predict(self, context, model_input, params=None) -> list[dict]:
        images = torch.as_tensor(np.ascontiguousarray(np.asarray(model_input, dtype=np.uint8)))
        with torch.no_grad():
            probs = self.graph(images).float().numpy()
        return records(probs, self.classes, self.k)


mlflow.models.set_model(ClassifierWithNames())
