"""The names by which MLflow finds what the pipeline logs: a training run's tags, the experiment's
kind, and where a run keeps its model file. Light, and apart from the code that logs comparisons
or downloads models, so that the training stages depend on these names alone."""

from __future__ import annotations

import os
from typing import Any

from .uri import git_commit

# what MLflow 3's UI reads to open an experiment on its runs (model training) rather than on
# its GenAI overview; the value is the UI's ExperimentKind.CUSTOM_MODEL_DEVELOPMENT
KIND_TAG, KIND = "mlflow.experimentKind", "custom_model_development"
MODEL_ARTIFACT = "trained/model.safetensors"  # a training run's model file, in its artifacts


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"a": {"b": 1}} -> {"a.b": 1}: the dotted keys of MLflow params (a training run's) and of
    a comparison's params."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, f"{key}."))
        else:
            out[key] = v
    return out


def run_tags(stage: str, variant: str) -> dict[str, str]:
    """A training run's tags: its stage and name, the git commit, DVC's experiment."""
    tags = {"stage": stage, "variant": variant}
    commit = git_commit()
    if commit:
        tags["mlflow.source.git.commit"] = commit
    if os.environ.get("DVC_EXP_NAME"):
        tags["dvc.exp_name"] = os.environ["DVC_EXP_NAME"]
    if os.environ.get("DVC_EXP_BASELINE_REV"):
        tags["dvc.exp_baseline_rev"] = os.environ["DVC_EXP_BASELINE_REV"]
    return tags
