"""The package's architecture, as import-linter contracts (``[tool.importlinter]`` in
pyproject.toml): the layers (stages over training and report over tracking over evaluation over
data and config over models over the leaves), the report's one-way inside, no cycles between
siblings, plain-PyTorch models, and MLflow imported by ``pipeline.tracking`` alone. Function-level
imports count (they run too); ``if TYPE_CHECKING:`` ones do not.

    lint-imports        # the same check, from the project root
"""

from __future__ import annotations

import logging
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _contracts() -> list[dict]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"][
        "contracts"]


def test_import_linter_contracts_are_kept(capsys, monkeypatch):
    # the use case, not the CLI function: that one also reconfigures logging process-wide
    # (dictConfig), which silences every logger created before it
    from importlinter import configuration
    from importlinter.application import use_cases

    ours = logging.getLogger("pipeline.training.resume")  # a logger that exists before the check
    configuration.configure()
    monkeypatch.chdir(ROOT)  # import-linter reads pyproject.toml and imports pipeline from here
    monkeypatch.syspath_prepend(str(ROOT))
    kept = use_cases.lint_imports(cache_dir=None, no_logo=True)
    out = capsys.readouterr().out
    if not kept:
        pytest.fail(f"import-linter contracts broken:\n{out}", pytrace=False)
    assert f"Contracts: {len(_contracts())} kept, 0 broken." in out
    assert not ours.disabled  # the tests that run after this one still see its warnings


def _top_level_modules() -> set[str]:
    pkg = ROOT / "pipeline"
    return {f"pipeline.{p.stem}" for p in pkg.glob("*.py") if p.stem != "__init__"} | {
        f"pipeline.{p.name}" for p in pkg.iterdir() if (p / "__init__.py").is_file()}


def test_every_module_but_tracking_is_forbidden_mlflow():
    """A module added to pipeline/ joins the contract, or this fails: the contract cannot miss
    one silently."""
    [contract] = [c for c in _contracts() if c.get("forbidden_modules") == ["mlflow"]]
    assert set(contract["source_modules"]) == _top_level_modules() - {"pipeline.tracking"}


def test_the_layers_place_every_module():
    [layers] = [c for c in _contracts() if c["type"] == "layers" and c["containers"] == [
        "pipeline"]]
    placed = {f"pipeline.{m.strip()}" for layer in layers["layers"]
              for m in layer.replace(":", "|").split("|")}
    assert placed == _top_level_modules() and layers["exhaustive"]
