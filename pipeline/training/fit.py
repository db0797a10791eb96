"""One training run of one model: :func:`fit` of a :class:`TrainingJob`.

Shared by the ``train_scratch`` and ``finetune`` stages (one study cell each) and by local
pretraining. In the job's dir (:mod:`pipeline.layout`) it writes ``best.ckpt`` and ``last.ckpt``
(Lightning's, for resuming only), ``resume.json`` (the MLflow run and params fingerprint, at the
start), ``history.json`` (per epoch), then the one artifact the run hands downstream,
``model.safetensors`` (the best weights with config, class names and preprocessing:
:mod:`pipeline.models.model_file`, also logged to the MLflow run under ``trained/``), and last
``run.json`` (:class:`~pipeline.records.RunRecord`), whose presence means the run finished. An
interrupted run resumes from ``last.ckpt`` in the same MLflow run
(:mod:`pipeline.training.resume`).

The steps are functions of their own: the data (:func:`training_data`), the Trainer and its
callbacks (:mod:`pipeline.training.trainer`), the resume decision
(:func:`~pipeline.training.resume.decide`: resume, start afresh, or keep a finished run), the
MLflow run (:func:`open_run`), and the export of the model file (:func:`export_model`).

    >>> job = TrainingJob(name="scratch/all/seed0", stage="train_scratch", recipe=recipe, seed=0,
    ...                   data_dir=Path("data/prepared"), out_dir=Path("models/scratch/all/seed0"),
    ...                   logged_params={...})
    >>> record = fit(job, ImageClassifier(vit), params.base.trainer, experiment="vit-pretraining")
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import lightning as L
import torch

from ..config import Recipe, TrainerParams
from ..data import PreparedDataModule
from ..data.passes import batches_per_epoch, min_batches
from ..hashing import fingerprint
from ..layout import MODEL_FILE, SPOOL_FILE
from ..models.classifier import ImageClassifier
from ..models.device import resolve_accelerator, resolve_precision
from ..models.model_file import save_model_file
from ..models.vit import VisionTransformer
from ..records import RunRecord
from ..tracking.logger import RunLogger, log_model_file, make_logger
from ..tracking.names import flatten
from ..tracking.runs import run_exists
from ..tracking.uri import check_tracking, tracking_uri
from .checkpoint_io import read_weights
from .hardware import compile_model, train_flops_per_batch
from .lightning_module import LitClassifier
from .resume import Resumable, Start, decide, fresh_requested
from .trainer import Checkpoints, build_trainer, run_callbacks, world_size_hint

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainingJob:
    """One training run: what it trains with, on what data, where its files go, and its MLflow
    run (name, stage, tags). ``logged_params`` is what the run is made of: logged as MLflow
    params, and a change of any of it starts a new run instead of resuming."""

    name: str  # the MLflow run's name: a cell key, or pretrain_<name>
    stage: str  # the DVC stage (a tag of the run)
    recipe: Recipe  # a fine-tune recipe brings its frozen start
    seed: int
    data_dir: Path  # prepared splits
    out_dir: Path  # the run's dir
    logged_params: Mapping = field(default_factory=dict)
    budget: int | None = None  # labelled images per class (None: the whole train split)
    tags: Mapping[str, str] = field(default_factory=dict)  # the cell's variant, seed, budget
    val_budget: int | None = None  # validation images per class (None: the whole val split)
    # the code that trains it (pipeline.hashing.code_digest at the stage's start): with it, a
    # finished run of the same params and code is kept rather than trained again
    code: str | None = None


@dataclass(frozen=True)
class TrainingData:
    """The run's DataModule, set up, and its size on each rank."""

    datamodule: PreparedDataModule
    labelled: int  # labelled training images
    passes: int  # passes over them per epoch (more under a train.min_steps floor)
    batches_per_epoch: int  # on each rank


def training_data(job: TrainingJob, trainer_params: TrainerParams) -> TrainingData:
    """The DataModule of ``job`` (its train split, or under ``budget`` a stratified subset of
    that many images per class chosen by ``seed``), set up for fitting. A ``train.min_steps``
    floor lengthens a small budget's epochs, not their number: each epoch passes over the
    labelled images as often as it takes to give ``min_steps / epochs`` optimizer steps, so
    warmup, the frozen start, validation and checkpoints keep their place in the run."""
    tr, aug = job.recipe.train, job.recipe.augment
    dm = PreparedDataModule(
        str(job.data_dir),  # a str: checkpoints keep the hparams, loadable weights_only
        batch_size=tr.batch_size,
        num_workers=trainer_params.num_workers,
        crop_padding=aug.crop_padding,
        hflip=aug.hflip,
        randaugment=aug.randaugment_args,
        erasing=aug.erasing,
        repeats=aug.repeats,
        seed=job.seed,
        budget=job.budget,
        # min_steps counts optimizer steps: accumulate_grad_batches batches each
        min_batches=min_batches(tr.epochs, tr.min_steps, tr.accumulate_grad_batches),
        val_budget=job.val_budget,
    )
    dm.setup("fit")
    # batches per epoch on each rank (the sampler splits the train set across ranks)
    world = world_size_hint(trainer_params)
    labelled = len(dm.dataset("train"))
    passes = dm.passes(world)
    return TrainingData(dm, labelled, passes,
                        batches_per_epoch(labelled, passes, tr.batch_size, world))


def open_run(job: TrainingJob, experiment: str, start: Start, uri: str) -> RunLogger:
    """The MLflow logger of a run that starts as ``start`` says
    (:func:`~pipeline.training.resume.decide`): a new run, or the one being resumed (a new one
    when that run is not in ``uri``)."""
    run_id = start.run_id
    if run_id is not None and (start.tracking_uri != uri or not run_exists(run_id, uri)):
        log.warning("MLflow run %s (of %s) is not in %s; the resumed training logs to a new run",
                    run_id, start.tracking_uri, uri)
        run_id = None
    if start.resuming:
        log.info("%s: resuming from %s in MLflow run %s", job.name, start.ckpt_path, run_id)
    return make_logger(experiment, job.name, job.stage, run_id=run_id,
                       spool=job.out_dir / SPOOL_FILE)


def fit(job: TrainingJob, model: ImageClassifier, trainer_params: TrainerParams,
        experiment: str, *, fresh: bool | None = None) -> RunRecord:
    """Train ``model`` as ``job`` says; checkpoints, the model file and ``run.json`` in its dir.
    Returns the run's record (written on global rank 0 only).

    Resumes an interrupted run of the same params from its ``last.ckpt``; ``fresh`` (default:
    the ``PIPELINE_FRESH`` environment variable) starts afresh instead."""
    out_dir = Path(job.out_dir)
    uri = check_tracking()  # an unreachable server fails here, before any work
    L.seed_everything(job.seed, workers=True)
    data = training_data(job, trainer_params)
    dm = data.datamodule
    if dm.num_classes != model.cfg.num_classes:
        raise ValueError(f"{job.data_dir} has {dm.num_classes} classes but the model head has "
                         f"{model.cfg.num_classes}")
    if torch.cuda.is_available():
        torch.set_float32_matmul_precision("high")  # TF32 for what runs in fp32
    if trainer_params.compile:
        compile_model(model.vit)
    classes = list(dm.classes)
    module = LitClassifier(model, job.recipe, classes=classes)
    # read by ThroughputMonitor: FLOPs/s over the device's peak is train/device/mfu
    module.flops_per_batch = train_flops_per_batch(model.cfg, job.recipe.train.batch_size)
    precision, notice = resolve_precision(trainer_params.precision,
                                          resolve_accelerator(trainer_params.accelerator))
    if notice:
        log.warning(notice)
    num_params = sum(p.numel() for p in model.parameters())
    hparams = {**flatten(dict(job.logged_params)), "model.num_params": num_params,
               "precision.resolved": precision, "data.labelled": data.labelled,
               "data.passes": data.passes}
    start = decide(out_dir, fingerprint(hparams),
                   fresh=fresh_requested() if fresh is None else fresh, code=job.code)
    if start.finished:  # trained before with these params and this code: nothing to do
        return RunRecord.read(out_dir)
    logger = open_run(job, experiment, start, uri)
    try:
        # the run is created (or reopened) and recorded in resume.json together, in setup
        resumable = Resumable(start, logger, hparams, uri,
                              tags={**job.tags, **({"precision_notice": notice} if notice else {})})
        checkpoints = Checkpoints.in_dir(out_dir)
        callbacks = run_callbacks(out_dir, checkpoints, recipe=job.recipe, data_dir=job.data_dir,
                                  logger=logger, resumable=resumable,
                                  batches_per_epoch=data.batches_per_epoch)
        trainer = build_trainer(trainer_params, job.recipe, precision=precision, logger=logger,
                                callbacks=callbacks, out_dir=out_dir,
                                batches_per_epoch=data.batches_per_epoch)
        # an explicit path or None: never Lightning's ckpt_path="last", which only warns when
        # there is nothing to resume from
        trainer.fit(module, datamodule=dm, ckpt_path=start.ckpt_path)
        seconds = resumable.train_seconds()
        best = checkpoints.best
        if not best.best_model_path:
            raise RuntimeError(f"{job.name}: training finished without a checkpoint in {out_dir}")
        record = RunRecord(
            run_id=logger.run_id, experiment_id=logger.experiment_id, tracking_uri=tracking_uri(),
            best_ckpt=Path(best.best_model_path).name,
            last_ckpt=Path(checkpoints.last.best_model_path).name, model_file=MODEL_FILE,
            labelled=data.labelled, passes=data.passes, steps=trainer.global_step,
            best_val_acc=float(best.best_model_score), epochs=trainer.current_epoch,
            train_seconds=seconds, num_params=num_params, code_sha256=job.code)
        if trainer.is_global_zero:
            model_file = export_model(Path(best.best_model_path), model, out_dir, classes,
                                      info={"variant": job.name, "stage": job.stage,
                                            "run_id": logger.run_id,
                                            "best_val_acc": record.best_val_acc,
                                            "params": dict(job.logged_params)})
            logger.log_metrics({"train_seconds": seconds})
            log_model_file(logger, model_file)
            record = record.model_copy(update={"tracking_outage": logger.outage})
            record.write(out_dir)  # last: the run finished
        return record
    except BaseException as e:
        if logger.failure is None:  # failed outside trainer.fit: Lightning did not end the run
            logger.failure = e
            logger.finalize("failed")
        raise


def export_model(best_ckpt: Path, model: ImageClassifier, out_dir: Path, classes: list[str],
                 info: dict) -> Path:
    """The best checkpoint's weights as the trained-model file ``<out_dir>/model.safetensors``
    (with its config, class names and ``model``'s preprocessing), written atomically."""
    vit = VisionTransformer(model.cfg)
    vit.load_state_dict(read_weights(best_ckpt))
    return save_model_file(ImageClassifier(vit, model.preprocess), out_dir / MODEL_FILE,
                           classes=classes, info=info)
