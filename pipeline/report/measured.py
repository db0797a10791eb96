"""The documentation's tables of measured results, made from a run's results by one command.

A run's ``results/study.json`` (what ``evaluate`` computed: every interval with its method and
seeds), the test split's size from ``results/cells.json``, the dataset from its ``params.yaml``
and its record ``provenance.json`` (:mod:`pipeline.provenance`: commit, date, machine, command,
wall time) go into a snapshot ``<out>.json``; the table ``<out>.md`` is rendered from the
snapshot alone, so that a test can check that every table in ``docs/results/`` is what its
snapshot gives (:func:`check`). The report's lead figure goes beside it as ``<out>.png`` (its
hash in the snapshot), unless the run is one variant at one budget. ``--effect A:B`` adds a
knob's effect, variant B minus variant A paired by seed; the snapshot keeps the pairs::

    python -m pipeline.report.measured runs/quick docs/results/quick
    python -m pipeline.report.measured runs/knobs docs/results/knobs --effect scratch:scratch_ra3
    python -m pipeline.report.measured --check docs/results

The docs pages include the tables (MyST ``{include}``); nothing in them is typed by hand.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path

import yaml

from ..atomic import atomic_write, atomic_write_json, atomic_write_text
from ..errors import RecordError
from ..evaluation.stats import Interval, paired_by_seed
from ..layout import RESULTS, TUNED_SUFFIX
from ..provenance import digest, read_record
from .format import budget_header, interval_basis

# the report's lead figure, copied beside the table: the curve over budgets, or the dot plot
FIGURES = {"curve.png": "Test top-1 against labelled images per class: a line per variant "
                        "through its means, the 95% interval as a band",
           "study.png": "Each variant's mean test top-1 with its 95% interval, and each "
                        "fine-tuned/scratch pair's gain, paired seed by seed"}
STUDY_KEYS = ("seeds", "budgets", "top1", "gain", "gain_shift", "tta_views", "tta_top1",
              "tta_effect")


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise RecordError(f"{path}: missing; run the pipeline (its evaluate stage writes it)"
                          ) from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise RecordError(f"{path}: not valid JSON ({e}); run the evaluate stage again") from None


def snapshot(run_dir: Path, effects: Sequence[tuple[str, str]] = ()) -> dict:
    """What the table of ``run_dir`` is made from (RecordError, naming the file, when a part is
    missing or the run record describes other results). ``effects``: pairs ``(a, b)`` of
    variants of one arm whose paired difference ``b - a`` is a knob's effect (``make knobs``)."""
    run_dir = Path(run_dir)
    record = read_record(run_dir)
    study = _read_json(run_dir / RESULTS / "study.json")
    cells = _read_json(run_dir / RESULTS / "cells.json")
    try:
        dataset = yaml.safe_load((run_dir / "params.yaml").read_text())["base"]["dataset"]
    except (OSError, yaml.YAMLError, KeyError, TypeError):
        raise RecordError(f"{run_dir / 'params.yaml'}: no base.dataset; give the run's own "
                          "directory (a workspace or the project root)") from None
    per_seed = [{"variant": c["variant"], "budget": str(c["budget"]), "seed": c["seed"],
                 "top1": c["top1"]} for c in cells.values()]
    known = {c["variant"] for c in per_seed}
    for a, b in effects:
        if a not in known or b not in known:
            raise RecordError(f"{run_dir / RESULTS / 'cells.json'}: no variant "
                              f"{a if a not in known else b!r} for the effect {a}:{b} "
                              f"(variants: {sorted(known)})")
    return {"provenance": record, "dataset": dataset,
            "test_images": sorted({c["test_images"] for c in cells.values()}),
            "study": {k: study[k] for k in STUDY_KEYS if k in study}, "cells": per_seed,
            "effects": [list(e) for e in effects]}


def _interval(d: dict) -> Interval:
    return Interval(**{k: v for k, v in d.items()
                       if k in Interval.__dataclass_fields__ and k != "excludes_zero"})


def _num(x: float, signed: bool = False) -> str:
    """``+12.13``, ``−4.13``: two decimals, a true minus sign."""
    return f"{x:{'+' if signed else ''}.2f}".replace("-", "\u2212")


def _cell(d: dict | None, signed: bool) -> str:
    """``+12.13 [5.26, 19.00]`` in points; the mean alone without an interval."""
    if d is None:
        return "–"
    iv = _interval(d)
    mean = _num(100 * iv.mean, signed)
    if iv.method == "single":
        return mean
    return f"{mean} [{_num(100 * iv.low)}, {_num(100 * iv.high)}]"


def _split(pair: str, variants: list[str]) -> tuple[str, str]:
    """``finetune-tuned-scratch-tuned`` -> ``("finetune-tuned", "scratch-tuned")``: split where
    both sides are variants (names may hold ``-``)."""
    for i, ch in enumerate(pair):
        if ch == "-" and pair[:i] in variants and pair[i + 1:] in variants:
            return pair[:i], pair[i + 1:]
    raise RecordError(f"the pair {pair!r} is not two of the study's variants ({variants})")


Row = tuple[str, bool, dict, Callable[[str, int], float | None] | None]


def _rows(snap: dict) -> list[Row]:
    """Every row of the tables: its label, whether it is a difference (signed), its intervals
    per budget, and its figure for (budget, seed) in points (None: a row of the main table
    alone, as TTA's are)."""
    study = snap["study"]
    variants = list(study["top1"])
    top = {(c["variant"], c["budget"], c["seed"]): 100 * c["top1"] for c in snap["cells"]}

    def diff(b: str, a: str) -> Callable[[str, int], float | None]:
        def at(budget: str, seed: int) -> float | None:
            xa, xb = top.get((a, budget, seed)), top.get((b, budget, seed))
            return None if xa is None or xb is None else xb - xa
        return at

    def shift(ft: str, sc: str) -> Callable[[str, int], float | None]:
        fixed, tuned = diff(ft, sc), diff(ft + TUNED_SUFFIX, sc + TUNED_SUFFIX)

        def at(budget: str, seed: int) -> float | None:
            f, t = fixed(budget, seed), tuned(budget, seed)
            return None if f is None or t is None else t - f
        return at

    rows: list[Row] = []
    for pair, by_budget in study["gain"].items():
        ft, sc = _split(pair, variants)
        rows.append((f"**gain**: {ft} − {sc}", True, by_budget, diff(ft, sc)))
    for pair, by_budget in study.get("gain_shift", {}).items():
        ft, sc = _split(pair, variants)
        rows.append((f"tuned minus fixed gain: {ft} − {sc}", True, by_budget, shift(ft, sc)))
    for variant, by_budget in study["top1"].items():
        rows.append((f"top-1: {variant}", False, by_budget,
                     lambda budget, seed, v=variant: top.get((v, budget, seed))))
    for a, b in snap.get("effects", []):
        rows.append((f"**effect**: {b} − {a}", True, _effect(snap, a, b), diff(b, a)))
    for variant, by_budget in study.get("tta_top1", {}).items():
        rows.append((f"top-1 with TTA: {variant}", False, by_budget, None))
    for variant, by_budget in study.get("tta_effect", {}).items():
        rows.append((f"TTA effect: {variant}", True, by_budget, None))
    return rows


def _effect(snap: dict, a: str, b: str) -> dict[str, dict]:
    """``b - a`` per budget, paired seed by seed over the seeds both have (Student's t; one
    seed: the difference alone), as the study's intervals are written."""
    return {r["budget"]: asdict(r["diff"]) for r in paired_by_seed(snap["cells"], a, b)}


def _budget(study: dict, budget: str) -> str:
    """``20 per class (200 images)``: the header with the labelled images the cells saw."""
    labelled = {d.get("labelled") for by in study["top1"].values() for b, d in by.items()
                if b == budget} - {None}
    count = f" ({labelled.pop():,} labelled images)" if len(labelled) == 1 else ""
    return budget_header(budget) + count


def _machine(m: dict) -> str:
    gpus = ", ".join(m.get("gpus") or []) or "no GPU"
    return f"{m['cpu']}, {m['cores']} cores, {gpus}"


def render(snap: dict) -> str:
    """The Markdown table of one snapshot, with the sentence that says what made it."""
    p, study = snap["provenance"], snap["study"]
    budgets = study["budgets"]
    rows = _rows(snap)
    single = [_interval(d) for _, signed, by, _ in rows if not signed for d in by.values()]
    basis = interval_basis(single, paired=False)
    if study["gain"] or snap.get("effects"):
        basis += "; the gains and effects paired seed by seed"
    images = "/".join(f"{n:,}" for n in snap["test_images"])
    seeds = study["seeds"]
    over = (f"the mean over seeds {', '.join(map(str, seeds))}" if len(seeds) > 1
            else f"one run (seed {seeds[0]})")
    run = "from an empty workspace (every stage ran)" if p["fresh"] else \
        "(some stages' outputs were already there)"
    tta = (f" Test-time augmentation (TTA): {study['tta_views']}; its effect is TTA minus plain "
           "top-1, paired seed by seed." if study.get("tta_views") else "")
    lines = [
        f"Test top-1 on {snap['dataset']} ({images} test images), in points: {over} with its "
        f"interval in brackets ({basis})."
        f"{tta}",
        "",
        f"Measured on {p['date']} at commit `{p['commit']}` on {_machine(p['machine'])}, by "
        f"`{p['command']}`: {p['wall_s']:.0f} s of wall time {run}.",
        "",
        "| | " + " | ".join(_budget(study, b) for b in budgets) + " |",
        "|---|" + "---:|" * len(budgets),
    ]
    for label, signed, by_budget, _ in rows:
        lines.append(f"| {label} | "
                     + " | ".join(_cell(by_budget.get(b), signed) for b in budgets) + " |")
    if snap.get("figure"):
        fig = snap["figure"]
        lines += ["", f"![{fig['alt']}]({fig['file']})"]
    if len(seeds) > 1:
        lines += ["", "Seed by seed (a scratch and a fine-tune cell of one seed saw the same "
                  "labelled images in the same order):"]
        for budget in budgets:
            lines += ["", *_seed_table(study, budget, seeds, rows)]
    return "\n".join(lines) + "\n"


def _seed_table(study: dict, budget: str, seeds: list[int], rows: list[Row]) -> list[str]:
    """The figures of every seed at one budget, for the rows that have them."""
    lines = [f"| {_budget(study, budget)} | " + " | ".join(f"seed {s}" for s in seeds) + " |",
             "|---|" + "---:|" * len(seeds)]
    for label, signed, _, at in rows:
        if at is not None:
            values = [at(budget, s) for s in seeds]
            lines.append(f"| {label} | " + " | ".join(
                "–" if v is None else _num(v, signed) for v in values) + " |")
    return lines


def write(run_dir: Path, out: Path, effects: Sequence[tuple[str, str]] = ()
          ) -> tuple[Path, Path]:
    """``<out>.json`` (the snapshot), ``<out>.md`` (its table) and ``<out>.png`` (the report's
    lead figure, when the run has one), each written atomically; without ``effects``, those of
    the snapshot there before (a table keeps its knobs)."""
    out = Path(out)
    before = out.with_suffix(".json")
    if not effects and before.is_file():
        effects = [tuple(e) for e in json.loads(before.read_text()).get("effects", [])]
    snap = snapshot(run_dir, effects)
    written = []
    one_dot = len(snap["study"]["top1"]) == 1 and len(snap["study"]["budgets"]) == 1
    for name, alt in FIGURES.items():
        src = Path(run_dir, RESULTS, "report", "figures", name)
        if src.is_file() and not one_dot:  # one variant at one budget: the table says it all
            png = out.with_suffix(".png")
            written.append(atomic_write(png, lambda tmp: shutil.copyfile(src, tmp)))
            if not snap["study"]["gain"]:
                alt = alt.split(", and each")[0]  # one arm: the figure has no gains
            snap["figure"] = {"file": png.name, "alt": alt, "sha256": digest(png)}
            break
    return (atomic_write_json(out.with_suffix(".json"), snap),
            atomic_write_text(out.with_suffix(".md"), render(snap)), *written)


def check(directory: Path) -> list[str]:
    """The tables in ``directory`` that are not what their snapshot renders to (or have none),
    and the figures that are not the ones the snapshot names."""
    stale = []
    for snap_file in sorted(Path(directory).glob("*.json")):
        snap = json.loads(snap_file.read_text())
        table = snap_file.with_suffix(".md")
        if not table.is_file() or table.read_text() != render(snap):
            stale.append(str(table))
        fig = snap.get("figure")
        if fig and digest(snap_file.parent / fig["file"]) != fig["sha256"]:
            stale.append(str(snap_file.parent / fig["file"]))
    return stale


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", type=Path, nargs="?", help="a run's directory (runs/quick)")
    parser.add_argument("out", type=Path, nargs="?", help="docs/results/<name> (no suffix)")
    parser.add_argument("--effect", action="append", default=[], metavar="A:B",
                        help="a knob's effect, variant B minus variant A paired by seed "
                             "(repeatable; kept in the snapshot for the next run)")
    parser.add_argument("--check", type=Path, metavar="DIR",
                        help="only check that DIR's tables are what their snapshots give")
    args = parser.parse_args(argv)
    try:
        if args.check:
            stale = check(args.check)
            if stale:
                sys.exit(f"stale: {', '.join(stale)}; run python -m pipeline.report.measured "
                         "<run dir> <table> again")
            return
        if args.run_dir is None or args.out is None:
            parser.error("give a run directory and the table's path without suffix")
        effects = []
        for pair in args.effect:
            a, sep, b = pair.partition(":")
            if not (sep and a and b):
                parser.error(f"--effect {pair!r}: give two variants as A:B")
            effects.append((a, b))
        for path in write(args.run_dir, args.out, effects):
            print(path)
    except RecordError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
