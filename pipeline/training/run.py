"""One training run of one variant: data, LightningModule, MLflow logger, checkpoints, Trainer.

Shared by the ``train_scratch`` and ``finetune`` stages and by local pretraining. Writes
``<out_dir>/best.ckpt``, ``last.ckpt`` (Lightning's, for resuming only), ``resume.json`` (the MLflow
run and params fingerprint, at the start), ``history.json`` (per epoch), then the one artifact the
run hands downstream, ``model.safetensors`` (the best weights with config, class names and
preprocessing: :mod:`pipeline.models.artifact`, also logged to the MLflow run under ``trained/``),
and last ``run.json`` (the MLflow run id, best score, timing); ``run.json`` is written atomically
and last, so its presence means the run finished. An interrupted run resumes from ``last.ckpt`` in
the same MLflow run (see :mod:`pipeline.training.resume`).
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import (
    EMAWeightAveraging,
    LearningRateMonitor,
    ModelCheckpoint,
    ThroughputMonitor,
)

from ..atomic import atomic_write_json
from ..config import StageParams, TrainerParams
from ..data import PreparedDataModule
from ..data.passes import batches_per_epoch, min_batches
from ..models.artifact import MODEL_ARTIFACT, MODEL_FILE, save_checkpoint
from ..models.classifier import ImageClassifier
from ..models.vit import VisionTransformer
from ..records import RUN
from ..store import tracking_uri
from .checkpoint_io import FiniteCheckpointIO, read_weights
from .hardware import build_strategy, compile_model, train_flops_per_batch
from .history import EpochHistory
from .module import ViTClassifier
from .resume import Resumable, decide, fingerprint, fresh_requested
from .tracking import (
    RecordFailure,
    TrainingContext,
    check_tracking,
    flatten,
    make_logger,
    run_exists,
)

log = logging.getLogger(__name__)
# resume.json and a resumed run's checkpoints are meant to be in the checkpoint dir
warnings.filterwarnings("ignore", message=r"Checkpoint directory .* exists and is not empty")
MIXED = ("bf16-mixed", "16-mixed", "bf16-true")


@dataclass(frozen=True)
class TrainResult:
    run_id: str
    experiment_id: str
    tracking_uri: str
    best_ckpt: str
    last_ckpt: str
    model_file: str  # the trained-model file in the run's dir (what evaluate, predict read)
    best_val_acc: float
    epochs: int
    train_seconds: float
    num_params: int
    labelled: int = 0  # labelled training images (the budget's subset, or the whole split)
    passes: int = 1  # passes over them per epoch (more under a min_steps floor)
    steps: int = 0  # optimizer steps taken


def resolve_accelerator(accelerator: str) -> str:
    if accelerator != "auto":
        return "gpu" if accelerator == "cuda" else accelerator
    return "gpu" if torch.cuda.is_available() else "cpu"


def resolve_precision(trainer: TrainerParams) -> tuple[str, str | None]:
    """The precision to run with, and a notice when the requested one had to change."""
    accel = resolve_accelerator(trainer.accelerator)
    want = trainer.precision
    if accel == "cpu" and want in MIXED:
        return "32-true", f"precision {want} needs a GPU; running 32-true on the CPU"
    if accel == "gpu" and want.startswith("bf16") and not torch.cuda.is_bf16_supported():
        return "16-mixed", f"this GPU has no bf16; running 16-mixed instead of {want}"
    return want, None


def batch_size_of(batch) -> int:
    """Images in an ``(images, labels)`` batch (ThroughputMonitor's ``batch_size_fn``)."""
    return len(batch[1])


def world_size_hint(trainer: TrainerParams) -> int:
    """Processes the Trainer will run, where the params say it (``devices: auto``: 1)."""
    devices = trainer.devices
    if isinstance(devices, list):
        per_node = len(devices)
    else:
        per_node = devices if isinstance(devices, int) else 1
    return per_node * trainer.num_nodes


def fit(
    *,
    name: str,
    stage: str,
    model: ImageClassifier,
    params: StageParams,
    trainer_params: TrainerParams,
    experiment: str,
    seed: int,
    data_dir: Path,
    out_dir: Path,
    logged_params: dict,
    budget: int | None = None,
    tags: dict[str, str] | None = None,
    fresh: bool | None = None,
) -> TrainResult:
    """Train ``model`` with the recipe ``params`` (a fine-tune variant's params bring its frozen
    start) on the prepared data in ``data_dir`` (its train split, or under ``budget`` a stratified
    subset of that many images per class chosen by ``seed``); checkpoints, the model file and
    run.json in ``out_dir``. ``tags`` go onto the MLflow run (the cell's variant, seed, budget).
    A ``train.min_steps`` floor lengthens a small budget's epochs, not their number: each epoch
    passes over the labelled images as often as it takes to give ``min_steps / epochs`` optimizer
    steps, so warmup, the frozen start, validation and checkpoints keep their place in the run.

    Resumes an interrupted run of the same params from ``out_dir/last.ckpt``; ``fresh`` (default:
    the ``PIPELINE_FRESH`` environment variable) starts afresh instead."""
    out_dir = Path(out_dir)
    uri = check_tracking()  # an unreachable server fails here, before any work
    L.seed_everything(seed, workers=True)
    tr, aug = params.train, params.augment
    dm = PreparedDataModule(
        str(data_dir),  # a str: checkpoints keep the datamodule's hparams, loadable weights_only
        batch_size=tr.batch_size,
        num_workers=trainer_params.num_workers,
        crop_padding=aug.crop_padding,
        hflip=aug.hflip,
        randaugment=aug.randaugment_args,
        erasing=aug.erasing,
        repeats=aug.repeats,
        seed=seed,
        budget=budget,
        # min_steps counts optimizer steps: accumulate_grad_batches batches each
        min_batches=min_batches(tr.epochs, tr.min_steps, tr.accumulate_grad_batches),
    )
    dm.setup("fit")
    if dm.num_classes != model.cfg.num_classes:
        raise ValueError(
            f"{data_dir} has {dm.num_classes} classes but the model head has {model.cfg.num_classes}"
        )
    if torch.cuda.is_available():
        torch.set_float32_matmul_precision("high")  # TF32 for what runs in fp32
    if trainer_params.compile:
        compile_model(model.vit)
    classes = list(dm.classes)
    module = ViTClassifier(model, params, classes=classes)
    # read by ThroughputMonitor: FLOPs/s over the device's peak is train/device/mfu
    module.flops_per_batch = train_flops_per_batch(model.cfg, tr.batch_size)
    precision, notice = resolve_precision(trainer_params)
    if notice:
        log.warning(notice)
    num_params = sum(p.numel() for p in model.parameters())
    # batches per epoch on each rank (the sampler splits the train set across ranks)
    world = world_size_hint(trainer_params)
    labelled = len(dm.dataset("train"))
    passes = dm.passes(world)
    per_rank = batches_per_epoch(labelled, passes, tr.batch_size, world)
    hparams = {**flatten(logged_params), "model.num_params": num_params,
               "precision.resolved": precision, "data.labelled": labelled,
               "data.passes": passes}
    start = decide(out_dir, fingerprint(hparams),
                   fresh=fresh_requested() if fresh is None else fresh)
    run_id = start.run_id
    if run_id is not None and (start.tracking_uri != uri or not run_exists(run_id, uri)):
        log.warning("MLflow run %s (of %s) is not in %s; the resumed training logs to a new run",
                    run_id, start.tracking_uri, uri)
        run_id = None
    if start.resuming:
        log.info("%s: resuming from %s in MLflow run %s", name, start.ckpt_path, run_id)
    logger = make_logger(experiment, name, stage, run_id=run_id,
                         spool=out_dir / "unsent_metrics.jsonl")
    try:
        # the run is created (or reopened) and recorded in resume.json together, in setup
        resumable = Resumable(start, logger, hparams, uri,
                              tags={**(tags or {}),
                                    **({"precision_notice": notice} if notice else {})})
        ckpt = ModelCheckpoint(
            dirpath=out_dir, filename="best", monitor="val/acc", mode="max",
            enable_version_counter=False,
        )
        # Every epoch, improved or not: Lightning 2.6's save_last=True rewrites last.ckpt only in
        # an epoch that also saved a top-k checkpoint, so a resume would lose the epochs since.
        last = ModelCheckpoint(dirpath=out_dir, filename="last", enable_version_counter=False)
        log_every = min(50, per_rank)
        trainer = L.Trainer(
            max_epochs=tr.epochs,
            accelerator=resolve_accelerator(trainer_params.accelerator),
            devices=trainer_params.devices,
            num_nodes=trainer_params.num_nodes,
            strategy=build_strategy(trainer_params.strategy),
            precision=precision,
            gradient_clip_val=tr.grad_clip,
            accumulate_grad_batches=tr.accumulate_grad_batches,
            logger=logger,
            callbacks=[
                EpochHistory(out_dir),  # before the checkpoints: its rows go into them
                ckpt,
                last,
                LearningRateMonitor(logging_interval="epoch"),
                # train/samples_per_sec, train/device/mfu, ... over a window of steps
                ThroughputMonitor(batch_size_of, window_size=max(2, min(100, per_rank))),
                RecordFailure(),
                resumable,
                TrainingContext(logger, data_dir),  # after resumable, which sets the run up
                *([EMAWeightAveraging(decay=tr.ema_decay)] if tr.ema_decay else []),
            ],
            plugins=[FiniteCheckpointIO()],
            default_root_dir=out_dir,
            log_every_n_steps=log_every,
            deterministic=False,
        )
        # an explicit path or None: never Lightning's ckpt_path="last", which only warns when
        # there is nothing to resume from
        trainer.fit(module, datamodule=dm, ckpt_path=start.ckpt_path)
        seconds = resumable.train_seconds()
        if not ckpt.best_model_path:
            raise RuntimeError(f"{name}: training finished without a checkpoint in {out_dir}")
        result = TrainResult(
            run_id=logger.run_id,
            experiment_id=logger.experiment_id,
            tracking_uri=tracking_uri(),
            best_ckpt=Path(ckpt.best_model_path).name,
            last_ckpt=Path(last.best_model_path).name,
            model_file=MODEL_FILE,
            labelled=labelled,
            passes=passes,
            steps=trainer.global_step,
            best_val_acc=float(ckpt.best_model_score),
            epochs=trainer.current_epoch,
            train_seconds=seconds,
            num_params=num_params,
        )
        if trainer.is_global_zero:
            model_file = export_model(Path(ckpt.best_model_path), model, out_dir, classes,
                                      info={"variant": name, "stage": stage,
                                            "run_id": logger.run_id,
                                            "best_val_acc": result.best_val_acc,
                                            "params": logged_params})
            logger.log_metrics({"train_seconds": seconds})
            logger.call("logging the model file", logger.experiment.log_artifact,
                        logger.run_id, str(model_file), MODEL_ARTIFACT.rpartition("/")[0])
            atomic_write_json(out_dir / RUN, {**asdict(result),
                                                     "tracking_outage": logger.outage})
        return result
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
    return save_checkpoint(ImageClassifier(vit, model.preprocess), out_dir / MODEL_FILE,
                           classes=classes, info=info)
