"""Stage ``pretrained``: put the pretrained ViT weights the fine-tuning starts from in one file,
``<out>/model.safetensors`` (timm layout), pinned by DVC like any other output.

``pretrained.source``:
- ``hub``: fetch ``hub_id`` from the Hugging Face hub (ImageNet-21k ViT-B/16 by default);
- ``file``: copy a local checkpoint (``pretrained.path``);
- ``train``: pretrain a ViT here on ``pretrained.pretrain.dataset`` (the offline quick run:
  real images, real training, not random weights called pretrained).
Either way the weights are checked to fit the ``finetune.model`` architecture before anything else
runs, so a mismatch fails here and not an hour into fine-tuning.

The weights file is replaced atomically, so a failed fetch or pretraining never costs the weights
already there. Pretraining keeps its checkpoints in ``<out>/checkpoints`` (``persist: true`` in
dvc.yaml), so an interrupted pretraining resumes like the training stages.

    python -m pipeline.stages.pretrained --out models/pretrained
"""

from __future__ import annotations

import argparse
import logging
import shutil
from pathlib import Path

import lightning as L

from safetensors.torch import save_file

from ..atomic import atomic_write, atomic_write_json
from ..config import Params
from ..data import load_raw, prepare_dataset
from ..data.prepare import MANIFEST
from ..evaluation import load_trained
from ..models import VisionTransformer, build_vit, read_checkpoint, timm_to_ours
from ..training.resume import file_sha256
from ..training.run import fit
from ._cli import stage_main

log = logging.getLogger("pretrained")


def pretrain(params: Params, raw_dir: Path, out_dir: Path) -> VisionTransformer:
    """Train ``pretrained.pretrain`` on its dataset; returns the best model (timm layout).
    Checkpoints go to ``<out_dir>/checkpoints``, where an interrupted pretraining resumes."""
    pp = params.pretrained.pretrain
    data_dir = out_dir / "data"
    raw = load_raw(pp.dataset, raw_dir, download=params.prepare.download)
    manifest = prepare_dataset(raw, data_dir, val_fraction=pp.val_fraction,
                               seed=params.base.seed, max_train=pp.max_train)
    L.seed_everything(params.base.seed)  # the same seed gives the same initial weights
    model = build_vit("custom", **pp.model.vit_config(num_classes=manifest["num_classes"]).to_dict())
    result = fit(
        name="pretrain", stage="pretrained", model=model, params=pp,
        trainer_params=params.base.trainer, experiment=params.base.mlflow_experiment,
        seed=params.base.seed, data_dir=data_dir, out_dir=out_dir / "checkpoints",
        logged_params={"pretrained": params.pretrained.model_dump(), "base": params.base.model_dump(),
                       "data.manifest_sha256": file_sha256(data_dir / MANIFEST)},
    )
    best, _ = load_trained(out_dir / "checkpoints" / result.best_ckpt)
    shutil.rmtree(data_dir)  # the prepared pretraining arrays are not an output
    return best


def run(params: Params, args: argparse.Namespace) -> Path:
    pt = params.pretrained
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if pt.source == "train":
        state = pretrain(params, Path(args.raw), out).state_dict()
        source = f"trained here on {pt.pretrain.dataset}"
    else:
        for leftover in ("checkpoints", "data"):  # of an earlier source: train
            shutil.rmtree(out / leftover, ignore_errors=True)
        source = pt.hub_id if pt.source == "hub" else pt.path
        state = read_checkpoint(source)
    # Fail now, not an hour in, if the weights do not fit the fine-tuning architecture
    # (the head is replaced anyway, so its class count does not matter here).
    timm_to_ours(state, params.finetune.model.vit_config(num_classes=1))
    state = {k: v.contiguous() for k, v in state.items()}
    target = atomic_write(out / "model.safetensors", lambda tmp: save_file(state, str(tmp)))
    atomic_write_json(out / "info.json", {"source": pt.source, "from": source,
                                          "file": target.name})
    log.info("pretrained weights (%s) in %s", source, target)
    return target


def add_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--raw", default="data/raw", help="raw datasets (source: train)")
    parser.add_argument("--out", default="models/pretrained")


if __name__ == "__main__":
    stage_main(__doc__, add_args, run)
