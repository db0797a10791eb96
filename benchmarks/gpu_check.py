"""The steps of ``benchmarks/gpu_check.sh``: every GPU figure of the project in one JSON.

Each step is one process (``python benchmarks/gpu_check.py STEP --out DIR``) that the shell
script runs under its own timeout, and each merges what it has measured into ``DIR/gpu_check.json``
as it goes (read, update, atomic replace; one step at a time), so a step that is killed leaves
the earlier steps' figures and its own partial ones. ``mark`` records how a step ended (done,
failed with its exit code, timed out, skipped), ``summary`` writes ``DIR/summary.md`` (the table
for the docs). ``GPU_CHECK_TINY=1`` runs every step with small sizes on the CPU (the rehearsal).

Steps: ``env`` (versions, nvidia-smi, flash attention, a bf16 matmul), ``bench`` (one
benchmarks/train_step.py configuration), ``data`` (the scratch recipe's loader against the model),
``tests`` (the CUDA tests), ``fits`` (a short fit of each training path), ``fsdp`` (an FSDP fit,
its checkpoint reloaded), ``fmnist`` (Fashion-MNIST from scratch through our training code).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import threading
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

RESULT = "gpu_check.json"
SCHEMA = 1
H200_SPEC_BF16 = 989e12  # H100/H200 SXM dense bf16, the datasheet
H200_MEASURED_BF16 = 790e12  # 8192^3 bf16 matmul through PyTorch on an H200
TINY = os.environ.get("GPU_CHECK_TINY") == "1"
WORK = Path(os.environ.get("GPU_CHECK_WORK") or "/tmp/gpu_check_work")
# the offline mode: wheels and data fetched beforehand by benchmarks/gpu_fetch.sh
OFFLINE = Path(os.environ.get("GPU_CHECK_OFFLINE") or ROOT / ".gpu")


# --------------------------------------------------------------------------- the JSON


def atomic_json(path: Path, doc: dict) -> None:
    from pipeline.atomic import atomic_write_json

    atomic_write_json(path, doc, default=str)


def load(out: Path) -> dict:
    try:
        return json.loads((out / RESULT).read_text())
    except (OSError, ValueError):
        return {"schema": SCHEMA, "tiny": TINY, "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "steps": {}}


def update(out: Path, step: str, **fields) -> dict:
    """Merge ``fields`` into ``steps[step]`` of the JSON (atomically)."""
    doc = load(out)
    doc["steps"].setdefault(step, {}).update(fields)
    doc["updated"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    atomic_json(out / RESULT, doc)
    return doc


def device():
    import torch

    return torch.device("cpu" if TINY or not torch.cuda.is_available() else "cuda")


# --------------------------------------------------------------------------- params


def params_file() -> Path:
    """params.yaml, or in tiny mode a copy with small models (the same recipes)."""
    if not TINY:
        return ROOT / "params.yaml"
    import yaml

    p = yaml.safe_load((ROOT / "params.yaml").read_text())
    small = {"variant": "custom", "patch_size": 4, "embed_dim": 32, "depth": 2, "num_heads": 2,
             "mlp_ratio": 2.0}
    p["scratch"]["scratch_ti4"]["model"].update(small, img_size=32)
    p["finetune"]["finetune_b16"]["model"].update(small, img_size=64, patch_size=16)
    path = WORK / "params.tiny.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(p, sort_keys=False))
    return path


def digits_params():
    """params.yaml's scratch recipe on digits with a 2-block ViT, 2 epochs (as tests/conftest.py
    shrinks it); the fine-tune recipe is derived from it in ``step_fits``."""
    import yaml

    from pipeline.config import parse_params

    p = yaml.safe_load((ROOT / "params.yaml").read_text())
    scratch = p["scratch"]["scratch_ti4"]
    scratch["model"] = {"variant": "custom", "img_size": 16, "patch_size": 4, "embed_dim": 64,
                        "depth": 2, "num_heads": 2, "mlp_ratio": 2.0, "dropout": 0.0,
                        "attn_dropout": 0.0, "drop_path": 0.1}
    scratch["train"].update(epochs=2, batch_size=32, warmup_epochs=0.5, min_steps=None)
    scratch["augment"].update(crop_padding=1)  # 8 px digits
    p["base"].update(dataset="digits", mlflow_experiment="gpu-check")
    p["base"]["trainer"].update(accelerator="cpu" if device().type == "cpu" else "gpu",
                                devices=1, num_workers=0)
    p["scratch"], p["finetune"], p["pretrained"] = {"scratch": scratch}, {}, {}
    p["tune"] = {"scratch": {}, "finetune": {}}  # no searches: one recipe, timed
    return parse_params(p)


def digits_dir() -> Path:
    from pipeline.data import load_raw, prepare_dataset

    out = WORK / "digits" / "prepared"
    if not (out / "manifest.json").exists():  # prepare.MANIFEST
        prepare_dataset(load_raw("digits", out.parent / "raw"), out, val_fraction=0.2, seed=0,
                        max_train=640, max_test=160)
    return out


# --------------------------------------------------------------------------- steps


def step_env(out: Path, args) -> None:
    import importlib.metadata as md

    import torch

    dev = device()
    versions = {"python": platform.python_version(), "torch": torch.__version__,
                "cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version()}
    for dist in ("lightning", "torchmetrics", "timm", "torchvision", "numpy", "mlflow-skinny",
                 "mlflow", "pydantic", "albumentations", "sqlalchemy", "safetensors",
                 "opencv-python-headless", "triton"):
        try:
            versions[dist] = md.version(dist)
        except md.PackageNotFoundError:
            versions[dist] = None
    update(out, "env", versions=versions, device=str(dev), cpus=os.cpu_count(),
           platform=platform.platform())
    smi = {}
    try:
        q = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total,"
                            "clocks.max.sm,power.limit", "--format=csv,noheader"],
                           capture_output=True, text=True, timeout=30)
        smi["query"] = q.stdout.strip() or q.stderr.strip()
        full = subprocess.run(["nvidia-smi"], capture_output=True, text=True, timeout=30)
        print(full.stdout)
    except (OSError, subprocess.TimeoutExpired) as e:
        smi["query"] = f"not available ({type(e).__name__}: {e})"
    gpu = None
    if dev.type == "cuda":
        prop = torch.cuda.get_device_properties(dev)
        gpu = {"name": prop.name, "capability": f"{prop.major}.{prop.minor}",
               "memory_gib": prop.total_memory / 2**30, "sms": prop.multi_processor_count,
               "bf16": torch.cuda.is_bf16_supported()}
    update(out, "env", nvidia_smi=smi, gpu=gpu)

    from train_step import flash_check

    from pipeline.config import load_params

    params = load_params(params_file())
    flash = {}
    for name in ("finetune_b16", "scratch_ti4"):
        _, vp = params.variant(name)
        cfg = vp.model.vit_config(num_classes=10)
        flash[name] = flash_check(cfg, dev) if dev.type == "cuda" else "n/a (CPU)"
    update(out, "env", flash_attention=flash)

    n = 512 if dev.type == "cpu" else 8192
    dtype = torch.float32 if dev.type == "cpu" else torch.bfloat16
    a = torch.randn(n, n, device=dev, dtype=dtype)
    b = torch.randn(n, n, device=dev, dtype=dtype)
    for _ in range(3):
        a @ b
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    sync()
    t0 = time.perf_counter()
    for _ in range(10):
        a @ b
    sync()
    tflops = 2 * n**3 * 10 / (time.perf_counter() - t0) / 1e12
    update(out, "env", matmul={"n": n, "dtype": str(dtype), "tflops": tflops})
    print(f"env: {versions}\nflash: {flash}\nmatmul {n}^3 {dtype}: {tflops:.1f} TFLOP/s")


def with_mfu(fig: dict) -> dict:
    """Add MFU against the H200's datasheet and measured bf16 peaks (GPU only)."""
    gpu = fig.get("device", "cpu").startswith("cuda")
    for row in fig.get("batches", {}).values():
        for name in ("ours", "timm"):
            r = row.get(name)
            if r and gpu:
                flops = r["images_per_s"] * fig["flops_per_image"]
                r["tflops"] = flops / 1e12
                r["mfu_989"] = flops / H200_SPEC_BF16
                r["mfu_790"] = flops / H200_MEASURED_BF16
                if fig.get("peak_flops_lightning"):
                    r["mfu_lightning"] = flops / fig["peak_flops_lightning"]
    return fig


def step_bench(out: Path, args) -> None:
    import train_step

    argv = ["--params", str(params_file()), *args.rest]
    if TINY:
        argv += ["--device", "cpu"]
    targs = train_step.parser().parse_args(argv)
    update(out, args.key, argv=argv)
    train_step.run(targs, report=lambda fig: update(out, args.key, **with_mfu(dict(fig))))


def step_data(out: Path, args) -> None:
    """The scratch recipe's train loader (augmentation in ``--workers`` processes) against the
    images/s the model trains at (read from the bench step's figures)."""
    import tempfile

    from train_step import bench_data, synthetic_prepared

    from pipeline.config import load_params

    dev = device()
    params = load_params(params_file())
    _, vp = params.variant(args.variant)
    cfg = vp.model.vit_config(num_classes=10)
    bs = vp.train.batch_size if not TINY else 16
    workers = args.workers if not TINY else 2
    update(out, "data", variant=args.variant, workers=workers, batch_size=bs)
    with tempfile.TemporaryDirectory(dir=WORK) as tmp:
        data = synthetic_prepared(Path(tmp), (32, 32, 3), 10,
                                  n=max(4096, bs * (args.batches + 4)))
        rate = bench_data(data, vp.augment, cfg, dev, bs, workers, args.batches)
    bench = load(out)["steps"].get(args.bench_key, {}).get("batches", {})
    model = {b: r["ours"]["images_per_s"] for b, r in bench.items() if "ours" in r}
    fields = {"images_per_s": rate, "batches": args.batches,
              "randaugment": vp.augment.randaugment_args, "erasing": vp.augment.erasing,
              "model_images_per_s": model}
    if model:
        at = model.get(str(bs))
        fields["over_model_at_recipe_batch"] = rate / at if at else None
        fields["over_fastest_model"] = rate / max(model.values())
    update(out, "data", **fields)
    print(f"data: {rate:.0f} images/s in {workers} workers (batch {bs}); model {model}")


def step_tests(out: Path, args) -> None:
    import xml.etree.ElementTree as ET

    junit = WORK / "junit.xml"
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-o", "addopts=",
           "-W", "ignore::DeprecationWarning", "-W", "ignore::FutureWarning",
           f"--junitxml={junit}", "-rs", *args.tests]
    update(out, "tests", command=" ".join(cmd[1:]))
    rc = subprocess.run(cmd, cwd=ROOT).returncode
    cases = []
    if junit.exists():
        for case in ET.parse(junit).iter("testcase"):
            outcome, message = "passed", None
            for tag in ("failure", "error", "skipped"):
                el = case.find(tag)
                if el is not None:
                    outcome = "failed" if tag in ("failure", "error") else "skipped"
                    message = (el.get("message") or "")[:300]
            cases.append({"test": f"{case.get('classname')}::{case.get('name')}",
                          "outcome": outcome, "seconds": float(case.get("time") or 0),
                          **({"message": message} if message else {})})
    counts = {k: sum(c["outcome"] == k for c in cases) for k in ("passed", "failed", "skipped")}
    update(out, "tests", pytest_rc=rc, counts=counts, cases=cases)
    if rc not in (0, 5):
        raise SystemExit(rc)
    if not TINY and (counts["skipped"] or counts["passed"] != len(args.tests)):
        raise SystemExit(f"on a GPU every one of {len(args.tests)} tests must run and pass")


def one_fit(name, model, sp, trainer, exp, data, out_dir):
    """``fit`` of ``model`` (an ImageClassifier) with the recipe ``sp`` (a fine-tune recipe
    brings its frozen start), afresh; (its RunRecord, its figures)."""
    from pipeline.errors import RecordError
    from pipeline.models.device import resolve_accelerator, resolve_precision
    from pipeline.records import RunRecord
    from pipeline.training.fit import TrainingJob, fit

    t0 = time.perf_counter()
    job = TrainingJob(name=name, stage="gpu_check", recipe=sp, seed=0, data_dir=data,
                      out_dir=out_dir, logged_params={"check": name})
    res = fit(job, model, trainer, exp, fresh=True)
    try:  # whether MLflow took every record (an outage spools them to unsent_metrics.jsonl)
        outage = RunRecord.read(out_dir).tracking_outage
    except RecordError as e:
        outage = f"run.json unreadable: {e}"
    precision = resolve_precision(trainer.precision, resolve_accelerator(trainer.accelerator))[0]
    return res, {"seconds": time.perf_counter() - t0, "train_seconds": res.train_seconds,
                 "mlflow_outage": outage, "mlflow_run": res.run_id,
                 "epochs": res.epochs, "best_val_acc": res.best_val_acc,
                 "precision": precision, "accelerator": trainer.accelerator,
                 "strategy": trainer.strategy, "compile": trainer.compile,
                 "params": res.num_params}


def new_classifier(vp, num_classes: int = 10):
    """A fresh :class:`~pipeline.models.ImageClassifier` for the variant params ``vp``."""
    from pipeline.models import ImageClassifier, VisionTransformer

    return ImageClassifier(VisionTransformer(vp.model.vit_config(num_classes=num_classes)))


def evaluate(classifier, images, labels, *, batch_size: int, dev, precision: str | None = None):
    """(metrics, images/s) of ``classifier`` on uint8 ``images``: the evaluate stage's
    :func:`~pipeline.evaluation.cell.evaluate_classifier` at the autocast dtype of
    :func:`~pipeline.models.autocast_dtype` (top1, top5, loss, ...)."""
    import numpy as np

    from pipeline.evaluation.cell import evaluate_classifier
    from pipeline.models import autocast_dtype

    ev = evaluate_classifier(classifier, np.asarray(images), np.array(labels, dtype=np.int64),
                             batch_size=batch_size, device=dev,
                             dtype=autocast_dtype(dev, precision))
    return ev.metrics, ev.images_per_s


def step_fits(out: Path, args) -> None:
    """A short fit of each training path: the scratch recipe (AdamW, RandAugment, erasing,
    Mixup/CutMix, stochastic depth, bf16), the fine-tune recipe (SGD, frozen backbone then
    unfrozen at a lower lr), fp16 with the loss scaler, EMA weights, and torch.compile."""
    import lightning as L

    from pipeline.config import FinetuneRecipe
    from pipeline.layout import MODEL_FILE
    from pipeline.models import load_model_file

    params = digits_params()
    data = digits_dir()
    trainer = params.base.trainer
    sp = params.scratch["scratch"]
    # the fine-tune recipe on the same model: SGD, no weight decay, no label smoothing, light
    # augmentation, the backbone frozen for 1 epoch and then trained at half the lr
    base = sp.model_dump()
    ft = FinetuneRecipe.model_validate({
        **base,
        "train": {**base["train"], "label_smoothing": 0.0,
                  "optimizer": {"name": "sgd", "lr": 0.01, "weight_decay": 0.0}},
        "augment": {**base["augment"], "randaugment": None, "erasing": 0.0, "mixup_alpha": 0.0,
                    "cutmix_alpha": 0.0, "mix_prob": 0.0},
        "pretrained": "scratch_bf16", "freeze_epochs": 1, "backbone_lr_scale": 0.5})
    paths = [
        ("scratch_bf16", sp, trainer),
        ("finetune_frozen_then_unfrozen", ft, trainer),
        ("scratch_fp16", sp, trainer.model_copy(update={"precision": "16-mixed"})),
        ("scratch_ema", sp.model_copy(update={"train": sp.train.model_copy(
            update={"ema_decay": 0.99})}), trainer),
        ("scratch_compile", sp, trainer.model_copy(update={"compile": True})),
    ]
    for name, vp, tr in paths:
        L.seed_everything(0)
        model = new_classifier(vp)
        if name.startswith("finetune"):  # from the scratch fit's weights, as from pretrained
            done = WORK / "fits" / "scratch_bf16" / MODEL_FILE
            if done.exists():
                model.vit.load_state_dict(load_model_file(done).classifier.vit.state_dict())
        update(out, "fits", **{name: {"status": "running"}})
        try:
            _, fig = one_fit(name, model, vp, tr, "gpu-check-fits", data, WORK / "fits" / name)
            fig["status"] = "ok"
        except Exception as e:  # the next path still runs
            traceback.print_exc()
            fig = {"status": "failed", "error": f"{type(e).__name__}: {str(e)[:300]}"}
        update(out, "fits", **{name: fig})
        print(f"fit {name}: {fig}")
    failed = [k for k, v in load(out)["steps"]["fits"].items()
              if isinstance(v, dict) and v.get("status") == "failed"]
    if failed:
        raise SystemExit(f"failed: {failed}")


def step_fsdp(out: Path, args) -> None:
    """An FSDP fit of a few steps on the one GPU, its full checkpoint reloaded into a plain model
    (strict ``load_state_dict``, as the export of the model file does) and the model file
    evaluated: the validation accuracy must equal the checkpoint's."""
    import lightning as L
    import torch

    from pipeline.data import load_prepared
    from pipeline.models import VisionTransformer, load_model_file
    from pipeline.training.checkpoint_io import read_weights

    params = digits_params()
    data = digits_dir()
    dev = device()
    strategy = "fsdp" if dev.type == "cuda" else "auto"  # FSDP has no CPU path (the rehearsal)
    tr = params.base.trainer.model_copy(update={"strategy": strategy})
    sp = params.scratch["scratch"]
    sp = sp.model_copy(update={"train": sp.train.model_copy(update={"epochs": 2})})
    L.seed_everything(0)
    model = new_classifier(sp)
    # before FSDP wraps the blocks
    shapes = {k: v.shape for k, v in model.vit.state_dict().items()}
    update(out, "fsdp", strategy=strategy,
           **({} if strategy == "fsdp" else {"note": "CPU stand-in: FSDP needs CUDA"}))
    res, fig = one_fit("fsdp", model, sp, tr, "gpu-check-fsdp", data, WORK / "fsdp")
    update(out, "fsdp", **fig)
    ckpt = WORK / "fsdp" / res.best_ckpt
    weights = read_weights(ckpt)  # the ViT's weights (model.vit.*) in the Lightning checkpoint
    shapes_ok = {k: v.shape for k, v in weights.items()} == shapes
    reloaded = VisionTransformer(model.cfg)
    reloaded.load_state_dict(weights)  # strict: full, unsharded
    trained = load_model_file(WORK / "fsdp" / res.model_file)  # exported from best.ckpt
    file_state = trained.classifier.vit.state_dict()
    file_ok = sorted(file_state) == sorted(weights) and all(
        torch.equal(file_state[k], weights[k]) for k in weights)
    _, splits = load_prepared(data)
    images, labels = splits["val"]
    ev, _ = evaluate(trained.classifier, images, labels, batch_size=256, dev=dev,
                     precision=tr.precision)
    n = len(labels)
    agree = abs(ev.top1 - res.best_val_acc) <= 1.0 / n + 1e-6
    update(out, "fsdp", checkpoint=ckpt.name, checkpoint_mib=ckpt.stat().st_size / 2**20,
           full_unsharded_shapes=shapes_ok, model_file_matches_checkpoint=file_ok,
           reloaded_val_acc=ev.top1, checkpoint_val_acc=res.best_val_acc, val_images=n,
           reload_agrees=agree)
    print(f"fsdp: {fig}; reloaded val acc {ev.top1:.4f} vs {res.best_val_acc:.4f}")
    if not (shapes_ok and file_ok and agree):
        raise SystemExit("the reloaded FSDP checkpoint does not reproduce its validation accuracy")


def step_fmnist(out: Path, args) -> None:
    """Fashion-MNIST from scratch with params.fmnist.yaml's recipe through pipeline.training.fit
    .fit on the GPU, as many epochs as fit in ``--budget`` seconds (a 1-epoch fit times an
    epoch first), then the test split evaluated with the model file (the best checkpoint's
    weights)."""
    import torch

    from pipeline.config import load_params
    from pipeline.data import load_prepared, load_split, prepare_dataset, sources
    from pipeline.errors import RecordError
    from pipeline.models import load_model_file
    from pipeline.records import History

    t_start = time.perf_counter()
    raw_dir = OFFLINE / "fmnist"
    sources.SYSTEM_DIRS = {}  # only these files count; the loader checks each md5
    # downloaded (md5-checked) where the offline files are missing and the network answers
    raw = sources.load_raw("fashion_mnist", raw_dir, download=True)
    update(out, "fmnist", files=str(raw_dir / "fashion_mnist"), md5=raw.sources)
    params = load_params(ROOT / "params.fmnist.yaml")
    vp = params.scratch["fmnist_vit"]
    prepared, test_dir = WORK / "fmnist" / "prepared", WORK / "fmnist" / "test"
    prepare_dataset(raw, prepared, val_fraction=params.prepare.val_fraction, seed=params.base.seed,
                    max_train=3000 if TINY else None, max_test=1000 if TINY else None,
                    test_dir=test_dir)
    del raw
    dev = device()
    workers = min(args.workers, os.cpu_count() or 1) if not TINY else 1
    tr = params.base.trainer.model_copy(update={
        "accelerator": "gpu" if dev.type == "cuda" else "cpu", "num_workers": workers})
    if TINY:
        vp = vp.model_copy(update={"model": vp.model.model_copy(update={"depth": 2,
                                                                         "embed_dim": 32})})

    def run(epochs: int, out_dir: Path):
        torch.manual_seed(params.base.seed)
        model = new_classifier(vp)
        warmup = min(vp.train.warmup_epochs, max(epochs / 10, 0.5))
        sp = vp.model_copy(update={"train": vp.train.model_copy(
            update={"epochs": epochs, "warmup_epochs": warmup})})
        return one_fit("fmnist_vit", model, sp, tr, "gpu-check-fmnist", prepared, out_dir)

    _, cal = run(1, WORK / "fmnist" / "calibrate")
    per_epoch = cal["train_seconds"]
    left = args.budget - (time.perf_counter() - t_start) - 15  # the test evaluation and exit
    epochs = max(1, min(args.max_epochs, int(left // per_epoch)))
    update(out, "fmnist", budget_s=args.budget, calibration_epoch_s=per_epoch,
           epochs_planned=epochs,
           recipe="params.fmnist.yaml fmnist_vit", workers=workers, precision=cal["precision"],
           warmup_epochs=min(vp.train.warmup_epochs, max(epochs / 10, 0.5)))
    print(f"fmnist: one epoch took {per_epoch:.1f} s; {epochs} epochs fit in the "
          f"{args.budget:.0f} s budget")
    run_dir = WORK / "fmnist" / "run"
    stop = threading.Event()

    def watch():  # the accuracy curve so far, should the step be killed mid-run
        while not stop.wait(10):
            try:
                rows = History.read(run_dir).epochs
            except RecordError:
                continue
            update(out, "fmnist", curve=curve_of(rows), epochs_done=len(rows))

    threading.Thread(target=watch, daemon=True).start()
    res, fig = run(epochs, run_dir)
    stop.set()
    rows = History.read(run_dir).epochs
    _, splits = load_prepared(prepared)
    n_train = len(splits["train"][1])
    update(out, "fmnist", fit=fig, curve=curve_of(rows), epochs_done=len(rows),
           train_images=n_train,
           train_images_per_s=n_train * res.epochs / res.train_seconds)
    trained = load_model_file(run_dir / res.model_file)  # the best checkpoint's weights
    _, images, labels = load_split(test_dir, "test")
    ev, ips = evaluate(trained.classifier, images, labels, batch_size=1024, dev=dev,
                       precision=tr.precision)
    update(out, "fmnist", test_acc=ev.top1, test_top5=ev.top5, test_images=len(labels),
           eval_images_per_s=ips, best_val_acc=res.best_val_acc,
           anchor="92.3-93.0% (ViT from scratch, 200 epochs; ANCHORS.md)")
    print(f"fmnist: test accuracy {ev.top1:.4f} after {res.epochs} epochs")


def curve_of(rows) -> list[dict]:
    """The epochs of a :class:`~pipeline.records.History` as JSON rows."""
    return [r.model_dump() for r in rows]


# --------------------------------------------------------------------------- bookkeeping


def step_mark(out: Path, args) -> None:
    status = args.status or ("ok" if args.rc == 0 else
                             f"timed out after {args.timeout} s" if args.rc in (124, 137) else
                             f"failed (exit {args.rc})")
    update(out, args.key, status=status, seconds=args.seconds, timeout_s=args.timeout,
           **({"note": args.note} if args.note else {}))


def fmt(x, spec=".0f", none="–"):
    return none if x is None else format(x, spec)


def step_summary(out: Path, args) -> None:
    doc = load(out)
    doc["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    doc["wall_s"] = args.wall
    atomic_json(out / RESULT, doc)
    s = doc["steps"]
    env = s.get("env", {})
    v = env.get("versions", {})
    gpu = env.get("gpu") or {}
    lines = [f"GPU check{' (TINY: CPU, small sizes)' if doc.get('tiny') else ''}: "
             f"{gpu.get('name', env.get('device', '?'))}, torch {v.get('torch')} "
             f"(CUDA {v.get('cuda')}), lightning {v.get('lightning')}, timm {v.get('timm')}, "
             f"{env.get('cpus')} CPUs; {fmt(doc.get('wall_s'))} s in all.", ""]
    mm = env.get("matmul") or {}
    lines += [f"- flash attention (bf16, forward+backward): "
              f"{'; '.join(f'{k}: {x}' for k, x in (env.get('flash_attention') or {}).items())}",
              f"- matmul {mm.get('n')}^3 {mm.get('dtype')}: {fmt(mm.get('tflops'), '.3g')} TFLOP/s",
              ""]
    lines += ["| step | status | seconds |", "|---|---|---|"]
    for name, st in s.items():
        lines.append(f"| {name} | {st.get('status', 'not finished')} | {fmt(st.get('seconds'))} |")
    lines += ["", "| config | batch | compile | ours img/s | timm img/s | ours/timm | MFU ours "
              "(989 / 790 TFLOP/s) | peak mem ours / timm GiB |",
              "|---|---|---|---|---|---|---|---|"]
    for key, st in s.items():
        if not key.startswith("bench"):
            continue
        for bs, row in (st.get("batches") or {}).items():
            if "ours" not in row:
                lines.append(f"| {st.get('config')} | {bs} | {st.get('compile')} | "
                             f"{row.get('error')} | | | | |")
                continue
            o, t = row["ours"], row["timm"]
            lines.append(
                f"| {st.get('config')} @{st['model']['img_size']} | {bs} | "
                f"{'yes' if st.get('compile') else 'no'} | {o['images_per_s']:.0f} | "
                f"{t['images_per_s']:.0f} | {row['ours_over_timm']:.3f} | "
                f"{fmt(o.get('mfu_989'), '.1%')} / {fmt(o.get('mfu_790'), '.1%')} | "
                f"{fmt(o.get('peak_gib'), '.2f')} / {fmt(t.get('peak_gib'), '.2f')} |")
    d = s.get("data", {})
    if "images_per_s" in d:
        lines += ["", f"- data loader ({d.get('variant')} recipe, {d.get('workers')} workers, "
                  f"batch {d.get('batch_size')}): {d['images_per_s']:.0f} images/s = "
                  f"{fmt(d.get('over_model_at_recipe_batch'), '.2f')}x the model at that batch, "
                  f"{fmt(d.get('over_fastest_model'), '.2f')}x its fastest "
                  f"({', '.join(f'batch {b}: {r:.0f}' for b, r in d['model_images_per_s'].items())}"
                  f" img/s); goal >= 2x"]
    t = s.get("tests", {})
    if "counts" in t:
        c = t["counts"]
        each = ", ".join(f"{x['test'].split('::')[-1]} {x['outcome']}" for x in t["cases"])
        lines += [f"- CUDA tests: {c['passed']} passed, {c['failed']} failed, {c['skipped']} "
                  f"skipped ({each})"]
    f = s.get("fits", {})
    fits = [f"{k} {x.get('status')} ({fmt(x.get('seconds'))} s, {x.get('precision')}, val "
            f"{fmt(x.get('best_val_acc'), '.3f')}"
            f"{', MLflow outage: ' + str(x['mlflow_outage']) if x.get('mlflow_outage') else ''})"
            for k, x in f.items() if isinstance(x, dict)]
    if fits:
        lines += [f"- training paths: {'; '.join(fits)}"]
    fs = s.get("fsdp", {})
    if "reload_agrees" in fs:
        lines += [f"- FSDP ({fs.get('strategy')}): {fs.get('epochs')} epochs in "
                  f"{fmt(fs.get('seconds'))} s, checkpoint "
                  f"{fmt(fs.get('checkpoint_mib'), '.1f')} MiB reloaded: val acc "
                  f"{fs.get('reloaded_val_acc'):.4f} vs {fs.get('checkpoint_val_acc'):.4f} "
                  f"({'agrees' if fs['reload_agrees'] else 'DIFFERS'})"]
    fm = s.get("fmnist", {})
    if fm:
        curve = ", ".join(f"{r.get('val_acc', 0):.3f}" for r in fm.get("curve", []))
        lines += [f"- Fashion-MNIST from scratch ({fm.get('recipe')}, {fm.get('precision')}, "
                  f"{fm.get('workers')} workers): {fm.get('epochs_done')} of "
                  f"{fm.get('epochs_planned')} epochs, test accuracy "
                  f"{fmt(fm.get('test_acc'), '.2%')} (anchor 92.3-93.0%), "
                  f"{fmt(fm.get('train_images_per_s'))} train images/s, "
                  f"{fmt((fm.get('fit') or {}).get('train_seconds'))} s of training; val accuracy "
                  f"per epoch: {curve}"]
    (out / "summary.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    bad = [k for k, st in s.items() if st.get("status") != "ok"]
    if bad:
        raise SystemExit(f"gpu_check: not ok: {', '.join(bad)}")


# the tests that skip without CUDA (tests/integration/test_gpu_check.py: each one exists)
CUDA_TESTS = (
    "tests/integration/training/test_precision.py::test_bf16_is_the_gpu_default",
    "tests/integration/training/test_precision.py::"
    "test_fp16_loss_scaler_state_survives_a_resume[cuda]",
    "tests/integration/test_predict.py::test_gpu_runs_under_autocast_and_agrees_with_the_cpu",
)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("step", choices=["env", "bench", "data", "tests", "fits", "fsdp", "fmnist",
                                     "mark", "summary"])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--key", help="bench, mark: the step's key in the JSON")
    ap.add_argument("--variant", default="scratch_ti4")
    ap.add_argument("--workers", type=int, default=16)
    ap.add_argument("--batches", type=int, default=40)
    ap.add_argument("--bench-key", default="bench_ti4")
    ap.add_argument("--budget", type=float, default=240.0)
    ap.add_argument("--max-epochs", type=int, default=200)
    ap.add_argument("--tests", nargs="*", default=list(CUDA_TESTS))
    ap.add_argument("--rc", type=int, default=0)
    ap.add_argument("--seconds", type=float)
    ap.add_argument("--timeout", type=float)
    ap.add_argument("--status")
    ap.add_argument("--note")
    ap.add_argument("--wall", type=float)
    argv = list(sys.argv[1:] if argv is None else argv)
    rest = argv[argv.index("--") + 1:] if "--" in argv else []  # bench: train_step.py's args
    args = ap.parse_args(argv[:len(argv) - len(rest) - (1 if "--" in argv else 0)])
    args.rest = rest
    args.out.mkdir(parents=True, exist_ok=True)
    WORK.mkdir(parents=True, exist_ok=True)
    key = args.key or args.step
    args.key = key
    if args.step not in ("mark", "summary"):
        update(args.out, key, status="running")
    step = globals()[f"step_{args.step}"]
    try:
        step(args.out, args)
    except SystemExit:
        raise
    except BaseException as e:
        traceback.print_exc()
        update(args.out, key, error=f"{type(e).__name__}: {str(e)[:500]}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
