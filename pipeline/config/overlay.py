"""Merge a params overlay into a params file: ``overlays/*.yaml`` hold ready variants (ViT-L/16,
other pretrainings) as the sections they add to.

    python -m pipeline.config.overlay overlays/vit_l16.yaml               # into params.yaml
    python -m pipeline.config.overlay overlays/vit_l16.yaml --into params.quick.yaml

Each top-level section of the overlay (``pretrained``, ``scratch``, ``finetune``, ``tune``) is a
mapping of names; its entries are added to that section of the params file, an entry of the same
name replaced. The params file keeps its comments and order (a YAML round trip), the result is
checked like any params file before it is written (atomically), and a bad overlay or result is
refused with one line.
"""

from __future__ import annotations

import argparse
import io
import sys
from pathlib import Path

import yaml

from ..atomic import atomic_write_text
from ..errors import ParamsError
from .params import parse_params

SECTIONS = ("pretrained", "scratch", "finetune", "tune")


def _yaml():
    from ruamel.yaml import YAML

    rt = YAML()  # round trip: comments and key order kept
    rt.preserve_quotes = True
    rt.width = 100
    rt.representer.add_representer(  # null as the file writes it, not as an empty value
        type(None), lambda r, _: r.represent_scalar("tag:yaml.org,2002:null", "null"))
    return rt


def merge(params_text: str, overlay_text: str, *, source: str = "overlay") -> str:
    """``params_text`` with ``overlay_text``'s entries added, as YAML text; ParamsError (one line)
    for an overlay that is not a mapping of known sections to mappings, or a result that is not
    valid params."""
    rt = _yaml()
    data, overlay = rt.load(params_text), rt.load(overlay_text)
    if not isinstance(overlay, dict) or not overlay:
        raise ParamsError(f"{source}: not a mapping of params sections ({', '.join(SECTIONS)})")
    for section, entries in overlay.items():
        if section not in SECTIONS:
            raise ParamsError(f"{source}: {section}: not a section an overlay adds to "
                              f"({', '.join(SECTIONS)})")
        if not isinstance(entries, dict):
            raise ParamsError(f"{source}: {section}: a mapping of names is needed")
        if section == "tune":
            for arm, searches in entries.items():
                data.setdefault("tune", {}).setdefault(arm, {}).update(searches)
        else:
            data.setdefault(section, {}).update(entries)
    out = io.StringIO()
    rt.dump(data, out)
    parse_params(yaml.safe_load(out.getvalue()), f"params with {source}")  # a bad result: no
    return out.getvalue()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("overlay", type=Path, help="the overlay (overlays/*.yaml)")
    parser.add_argument("--into", type=Path, default=Path("params.yaml"),
                        help="the params file to merge it into (default: params.yaml)")
    args = parser.parse_args(argv)
    try:
        for path in (args.overlay, args.into):
            if not path.is_file():
                raise ParamsError(f"{path}: no such file")
        text = merge(args.into.read_text(), args.overlay.read_text(), source=str(args.overlay))
    except ParamsError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    atomic_write_text(args.into, text)
    print(f"{args.overlay} merged into {args.into}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
