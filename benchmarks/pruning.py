"""What pruning saves, and whether it changes the choice: each search of a params file run twice
on the same prepared data, with its pruning and without (every trial to its end), in throwaway
dirs, printing per search the trials' states, the compute (training TFLOPs, seconds) and the
chosen config of both.

    python benchmarks/pruning.py --params params.quick.yaml --workspace runs/quick

``--workspace``: a workspace where ``make quick`` (or ``dvc repro``) has run, for its prepared
data and pretrained weights. Nothing in it is written; MLflow is not used.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pipeline.config import load_params  # noqa: E402
from pipeline.layout import PREPARED, pretrained_file  # noqa: E402
from pipeline.training.start import start_model  # noqa: E402
from pipeline.tuning.search import SearchJob, run_search  # noqa: E402


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def commit() -> str:
    out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                         cwd=Path(__file__).resolve().parent)
    return out.stdout.strip() or "unknown"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--params", default="params.quick.yaml", type=Path)
    parser.add_argument("--workspace", default="runs/quick", type=Path)
    args = parser.parse_args()
    params = load_params(args.params)
    data = args.workspace / PREPARED
    import json

    num_classes = int(json.loads((data / "manifest.json").read_text())["num_classes"])
    print(f"# commit {commit()}, {cpu_model()}, {os.cpu_count()} cores; "
          f"python benchmarks/pruning.py --params {args.params} --workspace {args.workspace}")
    for arm, variant, search in params.tune.searches():
        _, recipe = params.variant(variant)
        weights = None
        if arm == "finetune":
            weights = args.workspace / pretrained_file(recipe.pretrained)
        for budget in (str(b) for b in params.prepare.budgets):
            results = {}
            for label, s in (("pruned", search), ("unpruned", search.model_copy(
                    update={"prune": None}))):
                with tempfile.TemporaryDirectory() as tmp:
                    job = SearchJob(
                        arm=arm, variant=variant, budget=budget, search=s, recipe=recipe,
                        data_dir=data, out_dir=Path(tmp) / "search",
                        chosen_file=Path(tmp) / "chosen.json",
                        trainer_params=params.base.trainer,
                        start=lambda r, seed, w=weights: start_model(
                            r, num_classes=num_classes, seed=seed, pretrained=w),
                        identity={})
                    record, choice = run_search(job)
                results[label] = (record, choice)
            print(f"\n{variant} ({arm}) at budget {budget}, K={search.trials}, "
                  f"{search.sampler.name}")
            for label, (record, choice) in results.items():
                flops = sum(t.flops for t in record.trials) / 1e12
                seconds = sum(t.seconds for t in record.trials)
                states = {st: sum(t.state == st for t in record.trials)
                          for st in ("complete", "pruned", "failed")}
                print(f"  {label:9s}: {flops:.3f} TFLOPs, {seconds:.1f} s of trials, {states}; "
                      f"chose trial {choice.trial} {choice.overrides} at val top-1 "
                      f"{choice.value:.4f}")
                for t in record.trials:
                    print(f"    trial {t.number}: {t.state:8s} {t.epochs:2d}/{t.planned_epochs} "
                          f"epochs, best val {t.value if t.value is not None else float('nan'):.4f}"
                          f"  {t.params}")
            (rp, cp), (ru, cu) = results["pruned"], results["unpruned"]
            saved = 1 - sum(t.flops for t in rp.trials) / sum(t.flops for t in ru.trials)
            same = cp.overrides == cu.overrides
            print(f"  pruning saved {100 * saved:.0f}% of the training FLOPs; "
                  f"the choice is {'the same' if same else 'DIFFERENT'}")


if __name__ == "__main__":
    main()
