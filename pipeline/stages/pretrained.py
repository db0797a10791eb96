"""Stage ``pretrained@<name>``: put the pretrained ViT weights ``pretrained.<name>`` in one file,
``<out>/model.safetensors`` (timm layout), pinned by DVC like any other output.

``pretrained.<name>.source``:
- ``hub``: fetch ``hub_id`` from the Hugging Face hub (e.g. ImageNet-21k ViT-B/16);
- ``file``: copy a local checkpoint (``path``);
- ``train``: pretrain a ViT here on ``pretrain.dataset`` (the offline quick run: real images,
  real training, not random weights called pretrained).
Either way the weights are checked to fit the model of every ``finetune`` variant that starts from
them before anything else runs, so a mismatch fails here and not an hour into fine-tuning.

The weights file is replaced atomically, so a failed fetch or pretraining never costs the weights
already there. Pretraining keeps its checkpoints in ``<out>/checkpoints`` (``persist: true`` in
dvc.yaml), so an interrupted pretraining resumes like the training stages.

    python -m pipeline.stages.pretrained b16_in21k --out models/pretrained/b16_in21k
"""

from __future__ import annotations

import argparse
import logging
import shutil
from pathlib import Path

import lightning as L

from ..atomic import atomic_write_json
from ..config import Params
from ..data import load_raw, prepare_dataset
from ..data.splits import MANIFEST
from ..errors import CheckpointError, ParamsError
from ..hashing import file_sha256
from ..layout import CHECKPOINTS, DATA_RAW, MODEL_FILE, pretrained_dir
from ..models.classifier import ImageClassifier
from ..models.mapping import timm_to_ours
from ..models.model_file import TrainedModel, load_model_file, save_model_file
from ..models.vit import VisionTransformer
from ..models.weights import read_checkpoint
from ..training.fit import TrainingJob, fit
from ._cli import stage_main

log = logging.getLogger("pretrained")


def pretrain(params: Params, name: str, raw_dir: Path, out_dir: Path) -> TrainedModel:
    """Train ``pretrained.<name>.pretrain`` on its dataset; returns the best model (read back from
    the run's model file). Checkpoints go to ``<out_dir>/checkpoints``, where an interrupted
    pretraining resumes."""
    pp = params.pretrained[name].pretrain
    data_dir = out_dir / "data"
    raw = load_raw(pp.dataset, raw_dir, download=params.prepare.download)
    manifest = prepare_dataset(raw, data_dir, val_fraction=pp.val_fraction,
                               seed=params.base.seed, max_train=pp.max_train)
    L.seed_everything(params.base.seed)  # the same seed gives the same initial weights
    vit = VisionTransformer(pp.model.vit_config(num_classes=manifest["num_classes"]))
    job = TrainingJob(
        name=f"pretrain_{name}", stage="pretrained", recipe=pp, seed=params.base.seed,
        data_dir=data_dir, out_dir=out_dir / CHECKPOINTS,
        logged_params={"pretrained": params.pretrained[name].model_dump(),
                       "base": params.base.model_dump(), "kind": "pretrain",
                       "data.manifest_sha256": file_sha256(data_dir / MANIFEST)})
    record = fit(job, ImageClassifier(vit, **pp.model.normalisation), params.base.trainer,
                 params.base.mlflow_experiment)
    best = load_model_file(out_dir / CHECKPOINTS / record.model_file)
    shutil.rmtree(data_dir)  # the prepared pretraining arrays are not an output
    return best


def run(params: Params, args: argparse.Namespace) -> Path:
    name = args.name
    if name not in params.pretrained:
        raise ParamsError(f"no pretrained.{name} in params (have {sorted(params.pretrained)})")
    pt = params.pretrained[name]
    out = Path(args.out) if args.out else pretrained_dir(name)
    out.mkdir(parents=True, exist_ok=True)
    trained = None
    if pt.source == "train":
        trained = pretrain(params, name, Path(args.raw), out)
        state = trained.classifier.vit.state_dict()
        source = f"trained here on {pt.pretrain.dataset}"
    else:
        for leftover in (CHECKPOINTS, "data"):  # of an earlier source: train
            shutil.rmtree(out / leftover, ignore_errors=True)
        source = pt.hub_id if pt.source == "hub" else pt.path
        state = read_checkpoint(source)
    # Fail now, not an hour in, if the weights do not fit a fine-tuning architecture
    # (the head is replaced anyway, so its class count does not matter here).
    for variant, ft in params.finetune.items():
        if ft.pretrained == name:
            try:
                timm_to_ours(state, ft.model.vit_config(num_classes=1))
            except CheckpointError as e:
                raise CheckpointError(f"pretrained.{name} ({source}) does not fit "
                                      f"finetune.{variant}.model: {e}") from None
    info = {"name": name, "source": pt.source, "from": source, "file": MODEL_FILE}
    if trained is not None:  # weights of ours: the whole model file (config, classes, ...)
        target = save_model_file(trained.classifier, out / MODEL_FILE, classes=trained.classes,
                                 info={**trained.info, **info})
    else:  # timm layout, whatever the source's; fine-tuning maps it like any checkpoint
        target = save_model_file(state, out / MODEL_FILE, info=info)
    atomic_write_json(out / "info.json", info)
    log.info("pretrained weights %s (%s) in %s", name, source, target)
    return target


def add_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--raw", default=str(DATA_RAW), help="raw datasets (source: train)")
    parser.add_argument("name", help="a key of the pretrained section of params.yaml")
    parser.add_argument("--out", default=None, help="default: models/pretrained/<name>")


if __name__ == "__main__":
    stage_main(__doc__, add_args, run)
