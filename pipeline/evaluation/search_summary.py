"""The searches, summarised for the report, ``study.json`` and the comparison's MLflow parent:
per (arm, variant, budget) the protocol (space, method, K, selection rule, validation images),
the choice and its validation score, what the search cost (seconds, training FLOPs; what pruning
saved), and the expected best validation top-1 after n trials, n = 1..K
(:func:`~pipeline.evaluation.expected_max.expected_max`), against trials and against compute.

A pruned trial enters the expected-max curve with the best score it reached before it was
stopped: a lower bound of what it would have reached, which the median rule judged below the
others'. A failed trial (no score) is left out of the curve and counted in the cost.

    >>> summaries = load_searches(params, Path("models"))
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..layout import budget_order, search_dir
from ..records import SearchRecord
from .expected_max import ExpectedMax, expected_max

if TYPE_CHECKING:
    from ..config import Params


@dataclass(frozen=True)
class SearchSummary:
    arm: str
    variant: str
    budget: str
    record: SearchRecord
    curve: ExpectedMax | None  # None: no trial finished with a score

    @property
    def chosen(self):
        return next((t for t in self.record.trials if t.number == self.record.chosen), None)

    @property
    def seconds(self) -> float:
        return sum(t.seconds for t in self.record.trials)

    @property
    def flops(self) -> float:
        return sum(t.flops for t in self.record.trials)

    @property
    def flops_saved(self) -> float:
        """Training FLOPs the pruned trials' remaining epochs would have cost."""
        return sum((t.planned_epochs - t.epochs) * t.flops_per_epoch
                   for t in self.record.trials if t.state == "pruned")

    def count(self, state: str) -> int:
        return sum(t.state == state for t in self.record.trials)

    def space_text(self) -> str:
        """The space in words: ``lr in [0.0003, 0.003] (log); backbone_lr_scale in {0.5, 1}``."""
        parts = []
        for key, spec in self.record.space.items():
            if "choices" in spec:
                values = (f"{c:g}" if isinstance(c, float) else str(c) for c in spec["choices"])
                parts.append(f"{key} in {{{', '.join(values)}}}")
            else:
                scale = " (log)" if spec.get("log") else ""
                parts.append(f"{key} in [{spec['low']:g}, {spec['high']:g}]{scale}")
        return "; ".join(parts)

    def method_text(self) -> str:
        r = self.record
        text = f"{r.sampler} (seed {r.sampler_seed}), {len(r.trials)} of K={r.trials_requested}"
        if r.pruning:
            text += (f", median pruning after {r.pruning['warmup_epochs']} epochs "
                     f"({r.pruning['startup_trials']} startup trials)")
        return text

    def selection_text(self) -> str:
        r = self.record
        which = ("as many per class as the budget" if r.validation == "budget"
                 else "the whole split")
        return (f"best val top-1 over {r.epochs} epochs, on {r.val_images} validation images "
                f"({which}), trial seed {r.train_seed}")

    def to_dict(self) -> dict:
        chosen = self.chosen
        out = {"arm": self.arm, "variant": self.variant, "budget": self.budget,
               "sampler": self.record.sampler, "trials_requested": self.record.trials_requested,
               "trials": len(self.record.trials), "space": self.record.space,
               "selection": self.selection_text(), "val_images": self.record.val_images,
               "chosen": None if chosen is None else {"trial": chosen.number,
                                                      "params": dict(chosen.params),
                                                      "val_acc": chosen.value},
               "cost": {"seconds": self.seconds, "gflops": self.flops / 1e9,
                        "complete": self.count("complete"), "pruned": self.count("pruned"),
                        "failed": self.count("failed"),
                        "gflops_saved_by_pruning": self.flops_saved / 1e9}}
        if self.curve is not None:
            out["expected_max"] = {"n": list(self.curve.n), "mean": list(self.curve.mean),
                                   "std": list(self.curve.std),
                                   "gflops": [c / 1e9 for c in self.curve.compute]}
        return out


def summarise_search(arm: str, record: SearchRecord) -> SearchSummary:
    scored = [t for t in record.trials if t.value is not None]
    curve = None
    if scored:
        curve = expected_max([t.value for t in scored], costs=[t.flops for t in scored])
    return SearchSummary(arm, record.variant, record.budget, record, curve)


def load_searches(params: Params, models_dir: Path) -> list[SearchSummary]:
    """Every search of ``params`` at every budget, from its ``trials.json`` (RecordError, one line,
    for a missing or damaged one)."""
    out = []
    budgets = sorted((str(b) for b in params.prepare.budgets), key=budget_order)
    for arm, variant, _ in params.tune.searches():
        for budget in budgets:
            record = SearchRecord.read(search_dir(variant, budget, models_dir))
            out.append(summarise_search(arm, record))
    return out
