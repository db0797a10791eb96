"""The params reference page (``docs/params.md``), generated from the schema.

Every field of the schema carries its description (its docstring, :class:`.fields.Strict`);
this renders the schema's JSON form as one table per section: key, type and allowed values,
default, meaning. A test fails when the page is not what this renders or a key has no
description (:func:`undescribed`)::

    python -m pipeline.config.reference docs/params.md
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

from pydantic import BaseModel

from ..atomic import atomic_write_text
from .params import Params

# what a mapping's keys are called in a key path, by the mapping's own key
PLACEHOLDERS = {"pretrained": "<name>", "scratch": "<variant>", "finetune": "<variant>",
                "space": "<key>"}

INTRO = """\
# Params reference (`params.yaml`)

Every key is checked by the schema (`pipeline/config/`) before a stage does anything: a typo, a
wrong type or a value out of range stops it with one line naming the key. A key with a default
may be left out; a required one may not. A named model variant needs no sizes, an optimizer
holds only its own fields and augmentations default to off, so a variant can be as short as
`model: {variant: B/16, img_size: 224}`, `optimizer: {name: sgd, lr: 0.01}`, `augment:
{crop_padding: 4, hflip: true}`. The resolved params (defaults filled in) are what MLflow logs
and what every model file records. Edit `params.yaml` and run `dvc repro`, or run `dvc exp run
-S <key>=<value>` ([DVC experiments](dvc.md)); ready variants to merge are in `overlays/`
([the real experiment](real-experiment.md)).

This page is generated from the schema's descriptions: `python -m pipeline.config.reference
docs/params.md`.
"""


def _text(description: str | None) -> str:
    """A docstring as one Markdown line: roles and double backticks as code, ``docs/<page>.md``
    as a link to that page, ``|`` escaped."""
    text = " ".join((description or "").split())
    text = re.sub(r":\w+:`~?([^`]+)`", r"`\1`", text).replace("``", "`")
    text = re.sub(r"\bdocs/([\w-]+)\.md\b", r"[\1](\1.md)", text)
    return text.replace("|", "\\|")


def _label(def_name: str) -> str:
    return "params-" + def_name.lower()


def _values(node: dict) -> dict | None:
    """The type of a mapping's values (``dict[Name, X]`` gives a pattern for its keys)."""
    if isinstance(node.get("additionalProperties"), dict):
        return node["additionalProperties"]
    patterns = list(node.get("patternProperties", {}).values())
    return patterns[0] if len(patterns) == 1 else None


def _ref(node: dict) -> str:
    """The definition a ``$ref`` names (``#/$defs/ModelParams`` -> ``ModelParams``)."""
    return node["$ref"].rsplit("/", 1)[-1]


def _refs(node: dict) -> list[str]:
    """The model definitions a field's type names (through optionals, unions and mappings)."""
    if "$ref" in node:
        return [_ref(node)]
    out = []
    for key in ("anyOf", "oneOf"):
        for sub in node.get(key, []):
            out += _refs(sub)
    if _values(node) is not None:
        out += _refs(_values(node))
    return out


def _number(node: dict, kind: str) -> str:
    lo, hi = node.get("minimum"), node.get("maximum")
    xlo, xhi = node.get("exclusiveMinimum"), node.get("exclusiveMaximum")
    if lo is not None and hi is not None:
        return f"{kind} {lo}–{hi}"
    if (lo is not None or xlo is not None) and (hi is not None or xhi is not None):
        left = f"[{lo}" if lo is not None else f"({xlo}"
        right = f"{hi}]" if hi is not None else f"{xhi})"
        return f"{kind} in {left}, {right}"
    if xlo is not None:
        return f"{kind} > {xlo}"
    if lo is not None:
        return f"{kind} ≥ {lo}"
    return kind


def _type(node: dict, key: str = "", names: dict[str, str] | None = None) -> str:
    """A field's type and allowed values in words; a section as a link named by ``names``."""
    names = names or {}
    if "$ref" in node:
        name = _ref(node)
        return f"[`{names.get(name, 'section')}`](#{_label(name)})"
    if "oneOf" in node or "anyOf" in node:
        parts = [_type(sub, key, names) for sub in node.get("oneOf", node.get("anyOf"))]
        return " or ".join(dict.fromkeys(parts))
    if "const" in node:
        return f"`{node['const']}`"
    if "enum" in node:
        return " or ".join(f"`{v}`" for v in node["enum"])
    kind = node.get("type")
    if kind == "null":
        return "`null`"
    if kind == "boolean":
        return "bool"
    if kind == "integer":
        return _number(node, "int")
    if kind == "number":
        return _number(node, "float")
    if kind == "string":
        if "pattern" in node:
            return "name (letters, digits, `_`, `-`)" if "_-" in node["pattern"] else \
                f"str matching `{node['pattern']}`"
        return "str (not empty)" if node.get("minLength") else "str"
    if kind == "array":
        if "prefixItems" in node:
            items = [_type(i) for i in node["prefixItems"]]
            if len(set(items)) == 1:
                return f"{len(items)} × {items[0]}"
            return "[" + ", ".join(items) + "]"
        least = node.get("minItems", 0)
        return f"list of {_type(node['items'])}" + (f" (at least {least})" if least else "")
    if kind == "object":
        inner = _values(node)
        if inner is not None:
            least = " (at least 1)" if node.get("minProperties") else ""
            what = "name" if "patternProperties" in node else "key"
            return (f"mapping of a {what} `{PLACEHOLDERS.get(key, '<name>')}` to "
                    f"{_type(inner, names=names)}{least}")
        return "mapping"
    return "any"


def _default(name: str, node: dict, required: set[str]) -> str:
    if name in required:
        return "required"
    return f"`{json.dumps(node.get('default'), ensure_ascii=False)}`"


def _walk(schema: dict, defs: dict, path: str, seen: dict[str, list[str]],
          order: list[str]) -> None:
    for key, node in schema.get("properties", {}).items():
        sub = f"{path}.{key}" if path else key
        if _values(node) is not None:
            sub += "." + PLACEHOLDERS.get(key, "<name>")
        order.append(sub)
        for name in _refs(node):
            seen.setdefault(name, [])
            if sub not in seen[name]:
                seen[name].append(sub)
            _walk(defs[name], defs, sub, seen, order)


def _variant(d: dict) -> str:
    """What tells apart the sections of a union at one key: its tag (``name: adamw``) or the
    first clause of its description."""
    for key, node in d.get("properties", {}).items():
        if "const" in node:
            return f" with `{key}: {node['const']}`"
    first = re.split(r"[;.(]", _text(d.get("description")), maxsplit=1)[0].strip()
    return f": {first[0].lower()}{first[1:]}" if first else f" ({d.get('title')})"


def sections(model: type[BaseModel] = Params) -> tuple[dict, dict[str, list[str]]]:
    """The schema's definitions and, for each, the key paths it appears at: the shortest first,
    the definitions in the order a reader meets them (``params.yaml``'s)."""
    schema = model.model_json_schema()
    defs = schema.get("$defs", {})
    seen: dict[str, list[str]] = {}
    order: list[str] = []
    _walk(schema, defs, "", seen, order)
    for paths in seen.values():
        paths.sort(key=lambda p: (len(p.split(".")), order.index(p)))
    ranked = sorted(seen, key=lambda name: order.index(seen[name][0]))
    return {**defs, model.__name__: schema}, {name: seen[name] for name in ranked}


def undescribed(model: type[BaseModel] = Params) -> list[str]:
    """``Section.key`` for every field without a description."""
    defs, _ = sections(model)
    return [f"{name}.{key}" for name, d in defs.items()
            for key, node in d.get("properties", {}).items() if not _text(node.get("description"))]


def _table(d: dict, names: dict[str, str]) -> list[str]:
    required = set(d.get("required", []))
    lines = ["| key | type | default | meaning |", "|---|---|---|---|"]
    for key, node in d.get("properties", {}).items():
        lines.append(f"| `{key}` | {_type(node, key, names)} | {_default(key, node, required)} "
                     f"| {_text(node.get('description'))} |")
    return lines


def render() -> str:
    defs, seen = sections()
    names = {name: paths[0] for name, paths in seen.items()}
    out = [INTRO, f"({_label('Params')})=", "## The sections", "",
           *_table(defs["Params"], names), ""]
    for name, paths in seen.items():
        d = defs[name]
        shared = [n for n, p in names.items() if p == paths[0]]
        heading = f"`{paths[0]}`" + (_variant(d) if len(shared) > 1 else "")
        out += [f"({_label(name)})=", f"## {heading}", ""]
        if _text(d.get("description")):
            out += [_text(d["description"]), ""]
        if len(paths) > 1:
            out += ["Also at " + ", ".join(f"`{p}`" for p in paths[1:]) + ".", ""]
        out += [*_table(d, names), ""]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        sys.exit("usage: python -m pipeline.config.reference docs/params.md")
    missing = undescribed()
    if missing:
        sys.exit(f"no description (a docstring under the field): {', '.join(missing)}")
    print(atomic_write_text(Path(argv[0]), render()))


if __name__ == "__main__":
    main()
