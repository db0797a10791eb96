"""One training run of one variant: data, LightningModule, MLflow logger, checkpoints, Trainer.

Shared by the ``train_scratch`` and ``finetune`` stages and by local pretraining. Writes
``<out_dir>/best.ckpt``, ``last.ckpt`` and ``run.json`` (the MLflow run id, best score, timing);
``run.json`` is written last and atomically, so its presence means the run finished.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint

from ..atomic import atomic_write_json
from ..config import StageParams, TrainerParams
from ..data import PreparedDataModule
from ..models import VisionTransformer
from .checkpoint_io import FiniteCheckpointIO
from .module import ViTClassifier
from .tracking import RecordFailure, check_tracking, flatten, make_logger, tracking_uri

log = logging.getLogger(__name__)
MIXED = ("bf16-mixed", "16-mixed", "bf16-true")


@dataclass(frozen=True)
class TrainResult:
    run_id: str
    experiment_id: str
    tracking_uri: str
    best_ckpt: str
    last_ckpt: str
    best_val_acc: float
    epochs: int
    train_seconds: float
    num_params: int


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


def fit(
    *,
    name: str,
    stage: str,
    model: VisionTransformer,
    params: StageParams,
    trainer_params: TrainerParams,
    experiment: str,
    seed: int,
    data_dir: Path,
    out_dir: Path,
    logged_params: dict,
    freeze_epochs: int = 0,
    backbone_lr_scale: float = 1.0,
) -> TrainResult:
    """Train ``model`` on the prepared data in ``data_dir``; checkpoints and run.json in ``out_dir``."""
    out_dir = Path(out_dir)
    check_tracking()  # an unreachable server fails here, before any work
    L.seed_everything(seed, workers=True)
    tr, opt, aug = params.train, params.train.optimizer, params.augment
    dm = PreparedDataModule(
        str(data_dir),  # a str: checkpoints keep the datamodule's hparams, loadable weights_only
        batch_size=tr.batch_size,
        num_workers=trainer_params.num_workers,
        crop_padding=aug.crop_padding,
        hflip=aug.hflip,
        seed=seed,
    )
    dm.setup("fit")
    if dm.num_classes != model.cfg.num_classes:
        raise ValueError(
            f"{data_dir} has {dm.num_classes} classes but the model head has {model.cfg.num_classes}"
        )
    module = ViTClassifier(
        model,
        num_classes=dm.num_classes,
        optimizer=opt.name,
        lr=opt.lr,
        weight_decay=opt.weight_decay,
        momentum=opt.momentum,
        betas=opt.betas,
        warmup_epochs=tr.warmup_epochs,
        label_smoothing=tr.label_smoothing,
        freeze_epochs=freeze_epochs,
        backbone_lr_scale=backbone_lr_scale,
        model_config=model.cfg.to_dict(),
        classes=list(dm.classes),
    )
    precision, notice = resolve_precision(trainer_params)
    if notice:
        log.warning(notice)
    logger = make_logger(experiment, name, stage)
    try:
        num_params = sum(p.numel() for p in model.parameters())
        logger.log_hyperparams(
            {**flatten(logged_params), "model.num_params": num_params, "precision.resolved": precision}
        )
        if notice:
            logger.experiment.set_tag(logger.run_id, "precision_notice", notice)
        ckpt = ModelCheckpoint(
            dirpath=out_dir,
            filename="best",
            monitor="val/acc",
            mode="max",
            save_last=True,
            enable_version_counter=False,
        )
        trainer = L.Trainer(
            max_epochs=tr.epochs,
            accelerator=resolve_accelerator(trainer_params.accelerator),
            devices=trainer_params.devices,
            num_nodes=trainer_params.num_nodes,
            strategy=trainer_params.strategy,
            precision=precision,
            gradient_clip_val=tr.grad_clip,
            logger=logger,
            callbacks=[ckpt, LearningRateMonitor(logging_interval="epoch"), RecordFailure()],
            plugins=[FiniteCheckpointIO()],
            default_root_dir=out_dir,
            log_every_n_steps=min(50, max(1, len(dm.train_dataloader()))),
            deterministic=False,
        )
        start = time.perf_counter()
        trainer.fit(module, datamodule=dm)
        seconds = time.perf_counter() - start
        if not ckpt.best_model_path:
            raise RuntimeError(f"{name}: training finished without a checkpoint in {out_dir}")
        result = TrainResult(
            run_id=logger.run_id,
            experiment_id=logger.experiment_id,
            tracking_uri=tracking_uri(),
            best_ckpt=Path(ckpt.best_model_path).name,
            last_ckpt=Path(ckpt.last_model_path).name,
            best_val_acc=float(ckpt.best_model_score),
            epochs=trainer.current_epoch,
            train_seconds=seconds,
            num_params=num_params,
        )
        if trainer.is_global_zero:
            logger.log_metrics({"train_seconds": seconds})
            logger.experiment.log_artifact(logger.run_id, ckpt.best_model_path, "checkpoints")
            atomic_write_json(out_dir / "run.json", asdict(result))
        return result
    except BaseException as e:
        if logger.failure is None:  # failed outside trainer.fit: Lightning did not end the run
            logger.failure = e
            logger.finalize("failed")
        raise
