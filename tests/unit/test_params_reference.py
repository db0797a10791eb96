"""docs/params.md is generated from the schema (pipeline/config/reference.py): it is what the
generator renders now, and every key of the schema has a description."""

from pathlib import Path

import yaml

from pipeline.config import reference
from pipeline.config.fields import Strict

ROOT = Path(__file__).resolve().parents[2]
PAGE = ROOT / "docs" / "params.md"


def test_the_page_is_what_the_schema_gives():
    assert PAGE.read_text() == reference.render(), (
        "docs/params.md is stale: run python -m pipeline.config.reference docs/params.md")


def test_every_key_has_a_description():
    assert reference.undescribed() == []


def test_a_key_without_a_docstring_is_found():
    class Section(Strict):
        said: int = 1
        """A key with its description."""
        unsaid: int = 2

    class Top(Strict):
        section: Section
        """The section."""

    assert reference.undescribed(Top) == ["Section.unsaid"]


def _leaves(tree: dict, path: str = "") -> list[str]:
    out = []
    for key, value in tree.items():
        sub = f"{path}.{key}" if path else str(key)
        out += _leaves(value, sub) if isinstance(value, dict) and value else [sub]
    return out


def test_every_key_of_the_shipped_params_files_is_on_the_page():
    text = PAGE.read_text()
    for params in ROOT.glob("params*.yaml"):
        for leaf in _leaves(yaml.safe_load(params.read_text())):
            key = leaf.rsplit(".", 1)[-1]
            if "space." in leaf:  # a space's keys are the recipe's dotted keys
                continue
            assert f"| `{key}` |" in text, (params.name, leaf)
