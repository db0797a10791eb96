"""What one knob does: the paired difference of two variants' test top-1, seed by seed.

The evaluate stage pairs every fine-tuned variant with every scratch variant (the pretraining
gain). A knob measured as a variant of its own beside its recipe (``params.knobs.yaml``:
``scratch_ra3`` beside ``scratch``) is compared here the same way: per budget, the mean of
``b - a`` over the seeds both have, with its Student's t interval
(:func:`pipeline.evaluation.stats.paired_by_seed`), from the cells in ``cells.json``.

    python benchmarks/paired.py runs/knobs/results/cells.json scratch:scratch_ra3 \
        finetune:finetune_lld
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from pipeline.evaluation.stats import format_interval, paired_by_seed


def compare(cells: dict, a: str, b: str, key: str = "top1") -> list[dict]:
    """Per budget both have: ``b - a`` on ``key`` (a cell's metric), paired by seed
    (:func:`pipeline.evaluation.stats.paired_by_seed`); an unknown variant stops with its name."""
    known = {c["variant"] for c in cells.values()}
    for variant in (a, b):
        if variant not in known:
            raise SystemExit(f"no cells of variant {variant!r} in cells.json (it has "
                             f"{sorted(known)})")
    return [{"a": a, "b": b, **row} for row in paired_by_seed(cells.values(), a, b, key)]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("cells", type=Path, help="the evaluate stage's cells.json")
    ap.add_argument("pairs", nargs="+", help="A:B, the effect of B over A (B - A)")
    args = ap.parse_args(argv)
    try:
        cells = json.loads(args.cells.read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as e:
        print(f"{args.cells}: cannot read the cells ({e}); give the evaluate stage's "
              "results/cells.json", file=sys.stderr)
        return 2
    print("| A | B | budget | A top-1 | B top-1 | B - A (points, 95% CI) | excludes 0 |")
    print("|---|---|---|---|---|---|---|")
    for pair in args.pairs:
        a, sep, b = pair.partition(":")
        if not sep or not a or not b:
            print(f"{pair!r}: expected A:B (two variant names)", file=sys.stderr)
            return 2
        for r in compare(cells, a, b):
            d = r["diff"]
            print(f"| {a} | {b} | {r['budget']} | {100 * r['a_mean']:.2f} | "
                  f"{100 * r['b_mean']:.2f} | {format_interval(d)} | "
                  f"{'yes' if d.excludes_zero else 'no'} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
