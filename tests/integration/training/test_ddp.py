"""Training on several processes through Lightning's DDP: 2 CPU processes (gloo), real all-reduce.

1. The frozen-then-unfrozen schedule on a bare Trainer (``ddp_spawn``): Lightning's
   BackboneFinetuning unfreezes parameters that DDP never registered (issue 20340); our design
   keeps every parameter registered from the start. On every rank: the backbone did not move in
   the frozen epoch, it moved after, and all ranks hold identical weights.
2. The real fine-tune stage, ``python -m pipeline.stages.train`` with ``devices: 2, strategy:
   ddp``, launched the way ``dvc repro`` launches it (Lightning re-runs the command per rank):
   one MLflow run (joining no comparison parent) and one checkpoint set and model file (rank 0),
   validation metrics over every sample exactly once although the ranks' shares differ, and the
   same weights as one process with the same global batch (with layer-wise lr decay, repeated
   augmentation and gradient accumulation on).
"""

import os
import subprocess
import sys
from types import SimpleNamespace

import lightning as L
import mlflow
import pytest
import torch
import yaml
from conftest import TINY_MODEL, make_tiny_params

from pipeline.config import FinetuneRecipe, parse_params
from pipeline.data import load_prepared, load_raw, prepare_dataset
from pipeline.evaluation.metrics import classification_metrics
from pipeline.models import (
    ImageClassifier,
    VisionTransformer,
    batched_logits,
    build_vit,
    load_model_file,
    save_model_file,
)
from pipeline.records import History, RunRecord
from pipeline.stages import train as train_stage
from pipeline.tracking.comparison import PARENT_TAG
from pipeline.training import LitClassifier
from pipeline.training.checkpoint_io import read_weights
from pipeline.workspace import stage_env

VARIANT = "finetune"
CKPT_SET = ["best.ckpt", "history.json", "last.ckpt", "model.safetensors", "resume.json",
            "run.json"]


class _Data(L.LightningDataModule):
    def train_dataloader(self):
        g = torch.Generator().manual_seed(0)
        x = torch.randint(0, 256, (64, 8, 8, 3), dtype=torch.uint8, generator=g)
        y = torch.randint(0, 3, (64,), generator=g)
        return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=8)


class _Record(L.Callback):
    def __init__(self, out_dir):
        self.out_dir = out_dir

    def on_train_epoch_end(self, trainer, pl_module):
        state = {k: v.detach().clone() for k, v in pl_module.model.vit.state_dict().items()}
        torch.save(state, f"{self.out_dir}/rank{trainer.global_rank}_epoch{trainer.current_epoch}.pt")


def test_frozen_then_unfrozen_is_identical_across_ddp_ranks(tmp_path):
    torch.manual_seed(0)
    params = FinetuneRecipe.model_validate({
        "model": {"variant": "custom", "img_size": 8, "patch_size": 4, "embed_dim": 16,
                  "depth": 1, "num_heads": 2},
        "train": {"epochs": 2, "batch_size": 8, "warmup_epochs": 0,
                  "optimizer": {"name": "sgd", "lr": 0.05, "weight_decay": 0.05}},
        "augment": {"crop_padding": 0, "hflip": False},  # no Mixup/CutMix
        "pretrained": "tiny", "freeze_epochs": 1, "backbone_lr_scale": 0.5})
    model = ImageClassifier(VisionTransformer(params.model.vit_config(num_classes=3)))
    start = {k: v.clone() for k, v in model.vit.state_dict().items()}
    module = LitClassifier(model, params)
    trainer = L.Trainer(max_epochs=2, accelerator="cpu", devices=2, strategy="ddp_spawn",
                        logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, callbacks=[_Record(str(tmp_path))],
                        limit_val_batches=0)
    trainer.fit(module, datamodule=_Data())
    w = {(r, e): torch.load(tmp_path / f"rank{r}_epoch{e}.pt") for r in (0, 1) for e in (0, 1)}
    backbone = [k for k in start if not k.startswith("head.")]
    for r in (0, 1):
        assert all(torch.equal(w[r, 0][k], start[k]) for k in backbone)
        assert not torch.equal(w[r, 0]["head.weight"], start["head.weight"])
        assert any(not torch.equal(w[r, 1][k], w[r, 0][k]) for k in backbone)
    for e in (0, 1):
        for k in start:
            assert torch.equal(w[0, e][k], w[1, e][k]), f"ranks differ in {k} after epoch {e}"


def _params(devices: int, batch_size: int) -> dict:
    p = make_tiny_params()
    p["base"]["trainer"].update(devices=devices, strategy="ddp" if devices > 1 else "auto")
    ft = p["finetune"][VARIANT]
    # with layer-wise lr decay, repeated augmentation (the ranks' copies of an image are the
    # one device's consecutive ones) and gradient accumulation: the same global steps
    ft["train"].update(batch_size=batch_size, epochs=2, warmup_epochs=0.5,
                       accumulate_grad_batches=2)
    ft["augment"].update(repeats=2)
    ft.update(freeze_epochs=1, layer_decay=0.7)
    p["pretrained"]["tiny"] = {"source": "file", "path": "pre.safetensors"}
    return p


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The stage on 2 processes x 8 images (a subprocess, as dvc runs it), and in this process
    on 1 x 16: the same global batches (the sampler splits each seeded permutation by rank)."""
    root = tmp_path_factory.mktemp("ddp")
    data = root / "prepared"
    # 132 train, 33 val: the ranks validate 17 and 16 images
    prepare_dataset(load_raw("digits", root / "raw"), data, val_fraction=0.2, seed=0,
                    max_train=165, max_test=20)
    torch.manual_seed(1)
    cfg = {k: v for k, v in TINY_MODEL.items() if k != "variant"}
    pretrained = save_model_file(build_vit("custom", num_classes=7, **cfg),
                                 root / "pre.safetensors")
    (root / "ddp.yaml").write_text(yaml.safe_dump(_params(2, 8)))
    uri = f"sqlite:///{root / 'mlflow.db'}"
    cmd = [sys.executable, "-m", "pipeline.stages.train", VARIANT, "--params", "ddp.yaml",
           "--data", str(data), "--out", "models/ddp", "--pretrained", str(pretrained)]
    proc = subprocess.run(cmd, cwd=root, env={**stage_env(), "MLFLOW_TRACKING_URI": uri},
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    with pytest.MonkeyPatch.context() as m:
        m.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'one.db'}")
        args = SimpleNamespace(variant=VARIANT, data=str(data), out=str(root / "models/one"),
                               pretrained=str(pretrained), fresh=False, seed=None, budget="all")
        train_stage.run(parse_params(_params(1, 16)), args)
    return SimpleNamespace(root=root, data=data, uri=uri, pretrained=pretrained,
                           ddp=root / "models/ddp", one=root / "models/one")


def test_rank_zero_alone_logs_and_saves(runs):
    assert sorted(os.listdir(runs.ddp)) == CKPT_SET
    client = mlflow.MlflowClient(runs.uri)
    (exp,) = [e for e in client.search_experiments() if e.name == "tests"]
    found = client.search_runs([exp.experiment_id])
    # one run, of rank 0; training joins no comparison parent (the evaluate stage does that)
    assert len(found) == 1 and found[0].info.run_name == f"{VARIANT}/all/seed0", \
        [(r.info.run_name, r.data.tags) for r in found]
    run = found[0]
    assert run.info.status == "FINISHED"
    assert PARENT_TAG not in run.data.tags
    assert [a.path for a in client.list_artifacts(run.info.run_id, "trained")] == \
        ["trained/model.safetensors"]
    # one value per epoch, not one per rank, at optimizer steps (8 batches a rank and epoch,
    # accumulated 2 by 2)
    assert [m.step for m in client.get_metric_history(run.info.run_id, "val/acc")] == [3, 7]
    record = RunRecord.read(runs.ddp)
    assert record.run_id == run.info.run_id and record.epochs == 2
    # ThroughputMonitor: the global rate counts both ranks
    m = run.data.metrics
    assert m["train/samples_per_sec"] == pytest.approx(2 * m["train/device/samples_per_sec"])


def test_val_metrics_count_every_sample_once(runs):
    """Lightning's default sampler would pad the 33 val images to 34 with a repeat."""
    _, splits = load_prepared(runs.data)
    images, labels = splits["val"]
    assert len(labels) % 2 == 1
    classifier = load_model_file(runs.ddp / "model.safetensors").classifier
    # the weights the last validation saw
    classifier.vit.load_state_dict(read_weights(runs.ddp / "last.ckpt"))
    logits, _ = batched_logits(classifier, images, batch_size=64, device=torch.device("cpu"))
    single = classification_metrics(logits, labels)
    last = History.read(runs.ddp).epochs[-1]
    assert last.val_acc == pytest.approx(single.top1, abs=1e-6)
    assert last.val_loss == pytest.approx(single.loss, abs=1e-5)
    correct = single.top1 * len(labels)
    assert correct == pytest.approx(round(correct), abs=1e-4)  # a count out of 33, not of 34
    client = mlflow.MlflowClient(runs.uri)
    run_id = RunRecord.read(runs.ddp).run_id
    assert client.get_run(run_id).data.metrics["val/acc"] == pytest.approx(single.top1, abs=1e-6)


def test_frozen_then_unfrozen_matches_one_device(runs):
    ddp, one = (read_weights(r / "last.ckpt") for r in (runs.ddp, runs.one))
    VisionTransformer(load_model_file(runs.ddp / "model.safetensors").cfg).load_state_dict(ddp)
    assert sorted(ddp) == sorted(one)
    for k in one:
        torch.testing.assert_close(ddp[k], one[k], rtol=0, atol=1e-5, msg=k)
    rows = [History.read(r).epochs for r in (runs.ddp, runs.one)]
    assert len(rows[0]) == len(rows[1]) == 2
    for a, b in zip(*rows):
        assert a.model_dump() == pytest.approx(b.model_dump(), abs=1e-5)
    # and it did train: the head from zero, the backbone away from its pretrained weights
    from safetensors.torch import load_file

    start = load_file(runs.pretrained)
    assert ddp["head.weight"].abs().sum() > 0
    moved = [k for k in ddp if not k.startswith("head.") and not torch.equal(ddp[k], start[k])]
    assert moved
