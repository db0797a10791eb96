"""One hyperparameter search: K trials of a variant's recipe at one label budget, with Optuna,
selected on validation top-1 (the test split is in a dir of its own, never opened here).

Trials run one after another in this process (no process per trial). Each draws its params with
a sampler seeded by ``sampler.seed`` and the trial's number, so the same params give the same
trials, and a resumed search draws what an uninterrupted one would. The study lives in the
search's dir (``study.journal``, Optuna's journal storage): a killed search resumes with every
finished trial kept; a trial it was in the middle of is marked failed (``interrupted``) and run
again with the same params, so none is lost and none counted twice. Several workers can share
one search: each runs this with ``join=True`` against the same storage (the journal file on
shared storage, or an RDB URL: Optuna advises PostgreSQL or MySQL, not SQLite, for parallel
workers), and every worker asks for trials until K are finished or running (two workers asking
for the last place at once may both get one: a search of several workers can end with up to one
trial more per extra worker, as with Optuna's own ``MaxTrialsCallback``). Start the stage's own
process first: it marks trials left running by a killed search as interrupted when it opens it.

Pruning (``prune``): after each epoch the trial reports its validation top-1
(:class:`~pipeline.tuning.pruning.PruneHopeless`) and Optuna's median rule may stop it; the
record says how many FLOPs the stopped epochs would have cost.

Written at the end: ``trials.json`` (:class:`~pipeline.records.SearchRecord`) and, beside the
search dir, ``chosen.json`` (:class:`~pipeline.records.Choice`), the best completed trial's params
(ties: the earlier trial). The MLflow side is :mod:`pipeline.tracking.searches`.

    >>> record, choice = run_search(job)
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import optuna
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)
from optuna.trial import TrialState

from ..config import Recipe, SearchParams, TrainerParams, trial_recipe
from ..config.tune import ChoiceSpace, RangeSpace
from ..data.budgets import budget_indices
from ..data.splits import load_split
from ..errors import one_line
from ..hashing import fingerprint
from ..layout import STUDY_FILE
from ..models.classifier import ImageClassifier
from ..records import Choice, SearchRecord, TrialRecord
from ..training.trial import TrialFit, fit_trial
from .pruning import PruneHopeless

log = logging.getLogger(__name__)
optuna.logging.set_verbosity(optuna.logging.WARNING)

INTERRUPTED = "interrupted"  # user attr of a trial a killed search left running
SPEC = "spec"  # study user attr: the fingerprint of what the search is


@dataclass(frozen=True)
class SearchJob:
    """One search: the variant's recipe (as written), its search params, the data and budget,
    where its files go, and how a trial's model starts (``start``: a recipe to a fresh model,
    seeded, pretrained weights loaded)."""

    arm: str
    variant: str
    budget: str  # "10", ..., "all"
    search: SearchParams
    recipe: Recipe
    data_dir: Path
    out_dir: Path  # the search dir (study.journal, trials.json)
    chosen_file: Path
    trainer_params: TrainerParams
    start: Callable[[Recipe, int], ImageClassifier]  # (recipe, seed) -> model
    identity: dict  # what else the trials depend on (data manifest, weights): the fingerprint

    @property
    def budget_images(self) -> int | None:
        return None if self.budget == "all" else int(self.budget)

    @property
    def val_budget(self) -> int | None:
        """Validation images per class the trials select on (None: the whole split)."""
        return self.budget_images if self.search.validation == "budget" else None

    def spec(self) -> str:
        """Fingerprint of everything a trial's result depends on: a change starts a new study."""
        return fingerprint({"search": self.search.model_dump(mode="json"),
                            "recipe": self.recipe.model_dump(mode="json"), "arm": self.arm,
                            "budget": self.budget, **self.identity})


def distributions(search: SearchParams) -> dict[str, BaseDistribution]:
    out: dict[str, BaseDistribution] = {}
    for key, space in search.space.items():
        if isinstance(space, ChoiceSpace):
            out[key] = CategoricalDistribution(space.choices)
        elif space.integer:
            out[key] = IntDistribution(int(space.low), int(space.high), log=space.log)
        else:
            out[key] = FloatDistribution(space.low, space.high, log=space.log)
    return out


def space_record(search: SearchParams) -> dict[str, dict]:
    return {k: (v.model_dump() if isinstance(v, RangeSpace) else {"choices": list(v.choices)})
            for k, v in search.space.items()}


def trial_sampler(search: SearchParams, number: int) -> optuna.samplers.BaseSampler:
    """The sampler that draws trial ``number``: seeded by the search's seed and the number."""
    seed = (search.sampler.seed * 1_000_003 + number) % 2**32
    name = search.sampler.name
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "tpe":  # random draws until half the trials (at most 10) are in, as TPE needs
        startup = min(10, max(1, search.trials // 2))
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=startup)
    # one order of the grid for the whole search (trial n takes its n-th point): the search's
    # seed, not the trial's
    grid = {k: list(v.choices) for k, v in search.space.items()}
    return _Grid(grid, seed=search.sampler.seed)


class _Grid(optuna.samplers.GridSampler):
    """Optuna's grid sampler, used through ask and tell: its ``after_trial`` stops the study
    once the grid is done, which only ``study.optimize`` allows; the search stops at K itself."""

    def after_trial(self, study, trial, state, values) -> None:
        pass


def open_storage(url_or_path: str | Path) -> optuna.storages.BaseStorage:
    """An RDB URL (``postgresql://...``, ``mysql://...``, ``sqlite:///...``) or a journal file."""
    text = str(url_or_path)
    if "://" in text:
        return optuna.storages.RDBStorage(text)
    from optuna.storages.journal import JournalFileBackend

    Path(text).parent.mkdir(parents=True, exist_ok=True)
    return optuna.storages.JournalStorage(JournalFileBackend(text))


def _counted(t: optuna.trial.FrozenTrial) -> bool:
    """A finished trial that uses up the budget (an interrupted one is run again instead)."""
    if t.state in (TrialState.COMPLETE, TrialState.PRUNED):
        return True
    return t.state == TrialState.FAIL and not t.user_attrs.get(INTERRUPTED)


def load_study(job: SearchJob, storage_url: str | Path | None = None, *,
               join: bool = False) -> optuna.Study:
    """The search's study, created or resumed; with a changed spec, a new one (the old storage
    file set aside). Not ``join``: trials left running by a killed search are marked failed
    (interrupted) and queued again with their params."""
    path = Path(job.out_dir) / STUDY_FILE
    storage_url = storage_url or path
    pruner = optuna.pruners.NopPruner()
    if job.search.prune is not None:
        pruner = optuna.pruners.MedianPruner(n_startup_trials=job.search.prune.startup_trials,
                                             n_warmup_steps=job.search.prune.warmup_epochs)
    name = f"{job.variant}/{job.budget}"
    spec = job.spec()
    study = optuna.create_study(storage=open_storage(storage_url), study_name=name,
                                direction="maximize", pruner=pruner, load_if_exists=True)
    old = study.user_attrs.get(SPEC)
    if old is not None and old != spec:
        if join or storage_url != path:
            raise RuntimeError(f"search {name} in {storage_url} was made with other params; "
                               "give it a storage of its own")
        log.warning("%s: the search's params, recipe or data changed; starting a new search "
                    "(the old one kept as %s.old)", name, path.name)
        path.replace(path.with_name(path.name + ".old"))
        return load_study(job, storage_url, join=join)
    if old is None:
        study.set_user_attr(SPEC, spec)
    if not join:
        for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            study._storage.set_trial_user_attr(t._trial_id, INTERRUPTED, True)
            study._storage.set_trial_state_values(t._trial_id, TrialState.FAIL)
            study.enqueue_trial(t.params, user_attrs={"rerun_of": t.number},
                                skip_if_exists=False)
            log.warning("%s: trial %d was interrupted; it runs again with the same params",
                        name, t.number)
    return study


def _run_one(job: SearchJob, study: optuna.Study, trial: optuna.Trial) -> TrialRecord:
    overrides = dict(trial.params)
    recipe = trial_recipe(job.recipe, job.search, overrides)
    prune = PruneHopeless(trial) if job.search.prune is not None else None
    fit: TrialFit | None = None
    error = None
    try:
        model = job.start(recipe, job.search.seed)
        fit = fit_trial(recipe, model, data_dir=job.data_dir, budget=job.budget_images,
                        seed=job.search.seed, trainer_params=job.trainer_params,
                        val_budget=job.val_budget, callbacks=[prune] if prune else [])
        state = "pruned" if prune and prune.pruned_at is not None else "complete"
    except Exception as e:  # a diverged or broken trial uses up its place, recorded as failed
        state, error = "failed", one_line(e)
        log.warning("%s/%s trial %d failed: %s", job.variant, job.budget, trial.number, error)
    value = None if fit is None or fit.best != fit.best else fit.best
    if fit is not None:
        trial.set_user_attr("curve", fit.curve)
        trial.set_user_attr("seconds", fit.seconds)
        trial.set_user_attr("flops", fit.flops)
        trial.set_user_attr("flops_per_epoch", fit.flops_per_epoch)
    if error:
        trial.set_user_attr("error", error)
    if state == "complete" and value is not None:
        study.tell(trial, value)
    elif state == "pruned":
        study.tell(trial, state=TrialState.PRUNED)
    else:
        state = "failed"
        study.tell(trial, state=TrialState.FAIL)
    return _record(study.get_trials(deepcopy=False)[trial.number], recipe.train.epochs)


def _record(t: optuna.trial.FrozenTrial, planned: int) -> TrialRecord:
    state = {TrialState.COMPLETE: "complete", TrialState.PRUNED: "pruned"}.get(t.state, "failed")
    curve = [float(v) for v in t.user_attrs.get("curve", [])]
    finite = [v for v in curve if v == v]
    return TrialRecord(
        number=t.number, params=dict(t.params), state=state,
        value=max(finite) if finite else None, curve=curve, epochs=len(curve),
        planned_epochs=planned, seconds=float(t.user_attrs.get("seconds", 0.0)),
        flops=float(t.user_attrs.get("flops", 0.0)),
        flops_per_epoch=float(t.user_attrs.get("flops_per_epoch", 0.0)),
        error=t.user_attrs.get("error"))


def run_search(job: SearchJob, *, storage_url: str | Path | None = None, join: bool = False,
               on_trial: Callable[[TrialRecord], None] | None = None,
               poll_seconds: float = 2.0) -> tuple[SearchRecord, Choice | None]:
    """Run ``job``'s search until K trials are counted (see the module docstring); then (not
    ``join``: after waiting for other workers' trials) write ``trials.json`` and
    ``chosen.json``. ``on_trial`` is told of each trial this process finishes."""
    study = load_study(job, storage_url, join=join)
    dists = distributions(job.search)
    planned = trial_recipe(job.recipe, job.search, {}).train.epochs
    name = f"{job.variant}/{job.budget}"
    while True:
        trials = study.get_trials(deepcopy=False)
        counted = sum(_counted(t) for t in trials)
        running = sum(t.state == TrialState.RUNNING for t in trials)
        waiting = sum(t.state == TrialState.WAITING for t in trials)
        if counted + running >= job.search.trials and not waiting:
            break
        if counted >= job.search.trials:
            break
        study.sampler = trial_sampler(job.search, len(trials))
        trial = study.ask(fixed_distributions=dists)
        log.info("%s: trial %d of %d: %s", name, counted + running + 1, job.search.trials,
                 trial.params)
        record = _run_one(job, study, trial)
        log.info("%s: trial %d %s, best val/acc %s in %.0f s", name, record.number, record.state,
                 "-" if record.value is None else f"{record.value:.4f}", record.seconds)
        if on_trial is not None:
            on_trial(record)
    if join:
        return summarise(job, study, planned), None
    while any(t.state == TrialState.RUNNING for t in study.get_trials(deepcopy=False)):
        time.sleep(poll_seconds)  # other workers' trials: the choice waits for them
    record = summarise(job, study, planned)
    choice = None
    if record.chosen is not None:
        best = next(t for t in record.trials if t.number == record.chosen)
        choice = Choice(variant=job.variant, budget=job.budget, overrides=dict(best.params),
                        value=float(best.value), trial=best.number, trials=len(record.trials))
    return record, choice


def summarise(job: SearchJob, study: optuna.Study, planned: int,
              run_id: str | None = None) -> SearchRecord:
    """The counted trials (in number order) and the chosen one: the best completed value, the
    earlier trial on a tie."""
    trials = [_record(t, planned) for t in study.get_trials(deepcopy=False) if _counted(t)]
    complete = [t for t in trials if t.state == "complete" and t.value is not None]
    chosen = max(complete, key=lambda t: (t.value, -t.number)).number if complete else None
    s = job.search
    val_images = _val_images(job)
    return SearchRecord(
        arm=job.arm, variant=job.variant, budget=job.budget, sampler=s.sampler.name,
        sampler_seed=s.sampler.seed, trials_requested=s.trials, objective=s.objective,
        space=space_record(s), validation=s.validation, val_images=val_images,
        train_seed=s.seed, epochs=planned,
        pruning=None if s.prune is None else s.prune.model_dump(), trials=trials,
        chosen=chosen, run_id=run_id)


def _val_images(job: SearchJob) -> int:
    """Validation images the trials select on (the subset the DataModule takes)."""
    _, _, labels = load_split(job.data_dir, "val")
    if job.val_budget is None:
        return int(len(labels))
    return int(len(budget_indices(labels, [job.val_budget], job.search.seed)[job.val_budget]))
