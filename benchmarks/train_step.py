"""Training throughput: our ViT against timm's VisionTransformer, and the data pipeline against both.

In one process, on one device, for one config (a ``scratch`` or ``finetune`` variant of a params
file, or ``--variant``/``--img-size``):

1. a training step (forward, cross-entropy, backward, AdamW step; bf16 autocast and fused AdamW
   on a GPU, fp32 on a CPU) of our ViT and of timm's ``VisionTransformer`` built with the same
   sizes, alternated in rounds so that clock and thermal drift hit both alike: images/s of each,
   the ratio ours/timm, MFU (training FLOPs/s, counted by torch's FLOP counter, over the
   device's dense peak from Lightning's table) and on a GPU the peak memory of each, for one or
   several batch sizes (``--batch-sizes``), optionally ``torch.compile``-d (``--compile``);
   on a GPU also whether the flash kernel of ``scaled_dot_product_attention`` takes our attention;
2. the data pipeline alone: the variant's train loader (albumentations in ``num_workers``
   workers, the same sampler and per-sample seeding as training) over prepared arrays, moved to
   the device, preprocessed and Mixup/CutMix-ed there: images/s, and its ratio to the model.

    python benchmarks/train_step.py --params params.yaml --variant-name scratch_ti4
    python benchmarks/train_step.py --variant B/16 --img-size 224 --batch-sizes 64,128,256

Prints a table; ``--json FILE`` also writes the figures (benchmarks/gpu_check.py calls ``run``).
timm is a dev dependency (``pip install -e '.[dev]'``).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import numpy as np
import torch
import torch.nn.functional as F

from pipeline.config import load_params
from pipeline.data import PreparedDataModule
from pipeline.data.sources import RawDataset
from pipeline.data.splits import prepare_dataset
from pipeline.models import DevicePreprocess, VisionTransformer
from pipeline.training.hardware import train_flops_per_batch
from pipeline.training.mixing import BatchMix


def timm_twin(cfg):
    """timm's VisionTransformer with our config's sizes (class token, no pre-norm, as ours)."""
    from timm.models.vision_transformer import VisionTransformer

    return VisionTransformer(img_size=cfg.img_size, patch_size=cfg.patch_size,
                             in_chans=cfg.in_chans, num_classes=cfg.num_classes,
                             embed_dim=cfg.embed_dim, depth=cfg.depth, num_heads=cfg.num_heads,
                             mlp_ratio=cfg.mlp_ratio, drop_path_rate=cfg.drop_path)


def step_fn(model, device, batch_size, img_size, num_classes, amp):
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=device.type == "cuda")
    x = torch.randn(batch_size, 3, img_size, img_size, device=device)
    y = torch.randint(0, num_classes, (batch_size,), device=device)

    def step():
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_steps(step, n, device) -> float:
    sync(device)
    t0 = time.perf_counter()
    for _ in range(n):
        step()
    sync(device)
    return time.perf_counter() - t0


def peak_flops(device) -> float | None:
    """The device's dense bf16 peak FLOP/s (Lightning's table), None on a CPU."""
    if device.type != "cuda":
        return None
    from lightning.fabric.utilities.throughput import get_available_flops

    return get_available_flops(device, torch.bfloat16)


def flash_check(cfg, device) -> str:
    """Whether our attention runs on the flash kernel alone (bf16, on this GPU)."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    model = VisionTransformer(cfg).to(device)
    x = torch.randn(2, 3, cfg.img_size, cfg.img_size, device=device)
    try:
        with sdpa_kernel(SDPBackend.FLASH_ATTENTION), torch.autocast("cuda", torch.bfloat16):
            model(x).float().sum().backward()
    except RuntimeError as e:
        return f"no ({str(e).splitlines()[0]})"
    return "yes (forward and backward)"


def bench_models(cfg, device, batch_size, steps, rounds, amp, compile_=False) -> dict[str, dict]:
    models = {"ours": VisionTransformer(cfg), "timm": timm_twin(cfg)}
    out = {}
    steps_fns = {}
    for name, model in models.items():
        model.to(device).train()
        if compile_:
            model.compile()  # in place, for both
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        steps_fns[name] = step_fn(model, device, batch_size, cfg.img_size, cfg.num_classes, amp)
        time_steps(steps_fns[name], 3, device)  # warm-up: kernels, allocator, optimizer state
        peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
        out[name] = {"params": sum(p.numel() for p in model.parameters()), "peak_gib": peak,
                     "rates": []}
    for _ in range(rounds):  # alternate, so drift hits both alike
        for name, step in steps_fns.items():
            out[name]["rates"].append(batch_size * steps / time_steps(step, steps, device))
    for r in out.values():
        r["images_per_s"] = statistics.median(r["rates"])
    return out


def synthetic_prepared(root: Path, shape, num_classes: int, n: int, seed: int = 0) -> Path:
    """Prepared arrays of random uint8 images of ``shape`` (the pipeline's cost does not depend
    on the pixel values), written by the real prepare code."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % num_classes
    raw = RawDataset(name="cifar10" if num_classes == 10 else "cifar100",
                     classes=[f"c{i}" for i in range(num_classes)],
                     train_images=rng.integers(0, 256, (n, *shape), dtype=np.uint8),
                     train_labels=labels.astype(np.int64),
                     test_images=rng.integers(0, 256, (num_classes, *shape), dtype=np.uint8),
                     test_labels=np.arange(num_classes, dtype=np.int64), sources={})
    prepare_dataset(raw, root / "prepared", val_fraction=0.02, seed=seed)
    return root / "prepared"


def bench_data(data_dir, augment, cfg, device, batch_size, num_workers, batches) -> float:
    dm = PreparedDataModule(str(data_dir), batch_size=batch_size, num_workers=num_workers,
                            crop_padding=augment.crop_padding, hflip=augment.hflip,
                            randaugment=augment.randaugment_args, erasing=augment.erasing)
    dm.setup("fit")
    pre = DevicePreprocess(cfg.img_size, cfg.in_chans).to(device)
    mix = BatchMix.create(dm.num_classes, mixup_alpha=augment.mixup_alpha,
                          cutmix_alpha=augment.cutmix_alpha, prob=augment.mix_prob)
    loader = iter(dm.train_dataloader())
    n, t0 = 0, None
    for i in range(batches + 2):
        images, labels = next(loader)
        images = images.to(device, non_blocking=True)
        labels = labels.to(device, non_blocking=True)
        x = pre(images)
        if mix is not None:
            x, _ = mix(x, labels)
        if i == 1:  # after the workers' start-up
            sync(device)
            t0 = time.perf_counter()
        elif i > 1:
            n += len(labels)
    sync(device)
    return n / (time.perf_counter() - t0)


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--variant-name", help="a scratch or finetune variant of --params")
    ap.add_argument("--variant", help="a ViT name such as B/16 (instead of --variant-name)")
    ap.add_argument("--img-size", type=int)
    ap.add_argument("--batch-size", type=int)
    ap.add_argument("--batch-sizes", help="comma-separated, e.g. 64,128,256 (the model part)")
    ap.add_argument("--compile", action="store_true", help="torch.compile both models")
    ap.add_argument("--num-classes", type=int, default=10)
    ap.add_argument("--steps", type=int, default=10, help="training steps per timed round")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--data", type=Path, help="prepared dir (default: synthetic, 32x32x3)")
    ap.add_argument("--data-batches", type=int, default=30)
    ap.add_argument("--num-workers", type=int, help="default: base.trainer.num_workers")
    ap.add_argument("--no-data", action="store_true", help="skip the data-pipeline part")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    return ap


def run(args: argparse.Namespace, report=None) -> dict:
    """Measure, print the table, and return the figures as a dict; ``report(figures)`` is called
    after each batch size and at the end (the partial dict so far), so a caller can keep them
    even if a later batch size or the data part is killed."""
    params = load_params(args.params)
    device = torch.device(args.device)
    amp = device.type == "cuda"
    if args.variant_name:
        _, vp = params.variant(args.variant_name)
        cfg = vp.model.vit_config(num_classes=args.num_classes)
        batch_size = args.batch_size or vp.train.batch_size
        augment, label = vp.augment, args.variant_name
    else:
        if not args.variant or not args.img_size:
            raise SystemExit("give --variant-name, or --variant and --img-size")
        from pipeline.models.variants import variant_config

        cfg = variant_config(args.variant, num_classes=args.num_classes, img_size=args.img_size)
        batch_size, augment, label = args.batch_size or 128, None, args.variant
    torch.manual_seed(0)
    sizes = [int(b) for b in args.batch_sizes.split(",")] if args.batch_sizes else [batch_size]
    peak = peak_flops(device)
    flops_per_image = train_flops_per_batch(cfg, 1)
    fig = {"config": label, "model": {"embed_dim": cfg.embed_dim, "depth": cfg.depth,
                                      "patch_size": cfg.patch_size, "img_size": cfg.img_size,
                                      "num_heads": cfg.num_heads},
           "device": str(device),
           "device_name": torch.cuda.get_device_name(device) if amp else "cpu",
           "precision": "bf16 autocast" if amp else "fp32", "compile": bool(args.compile),
           "torch": torch.__version__, "flops_per_image": flops_per_image,
           "peak_flops_lightning": peak, "steps": args.steps, "rounds": args.rounds,
           "batches": {}}

    def emit():
        if report is not None:
            report(fig)
        if args.json:
            from pipeline.atomic import atomic_write_json

            atomic_write_json(args.json, fig)

    print(f"{label}: {cfg.embed_dim}d/{cfg.depth}L/{cfg.patch_size}p@{cfg.img_size}, "
          f"{device} ({torch.cuda.get_device_name(device) if amp else 'fp32'}"
          f"{', bf16 autocast, fused AdamW' if amp else ''}"
          f"{', torch.compile' if args.compile else ''}), torch {torch.__version__}; "
          f"{flops_per_image / 1e9:.2f} GFLOPs per training image; peak "
          f"{f'{peak / 1e12:.0f} TFLOP/s bf16 dense' if peak else 'n/a (CPU)'}")
    if amp:
        fig["flash_attention"] = flash_check(cfg, device)
        print(f"  flash attention: {fig['flash_attention']}")
    emit()
    rate_at = {}
    for bs in sizes:
        try:
            res = bench_models(cfg, device, bs, args.steps, args.rounds, amp, args.compile)
        except torch.cuda.OutOfMemoryError:
            print(f"  batch {bs}: out of memory")
            fig["batches"][str(bs)] = {"error": "out of memory"}
            torch.cuda.empty_cache()
            emit()
            continue
        for name, r in res.items():
            mem = f"{r['peak_gib']:.2f} GiB" if r["peak_gib"] is not None else "n/a (CPU)"
            mfu = (f"{r['images_per_s'] * flops_per_image / peak:.1%}" if peak else "n/a")
            rates = ", ".join(f"{v:.0f}" for v in r["rates"])
            print(f"  batch {bs:4d} train step {name:4s}: {r['images_per_s']:9.1f} images/s "
                  f"(rounds: {rates}); MFU {mfu}; {r['params'] / 1e6:.2f}M params; "
                  f"peak memory {mem}")
        ratio = res["ours"]["images_per_s"] / res["timm"]["images_per_s"]
        print(f"  batch {bs:4d} ours / timm: {ratio:.3f}x")
        rate_at[bs] = res["ours"]["images_per_s"]
        fig["batches"][str(bs)] = {**{name: {k: r[k] for k in ("images_per_s", "rates", "params",
                                                                 "peak_gib")}
                                          for name, r in res.items()},
                                   "ours_over_timm": ratio}
        emit()
    if augment is None or not rate_at or args.no_data:
        return fig
    batch_size = batch_size if batch_size in rate_at else next(iter(rate_at))
    workers = params.base.trainer.num_workers if args.num_workers is None else args.num_workers
    with tempfile.TemporaryDirectory() as tmp:
        data = args.data or synthetic_prepared(Path(tmp), (32, 32, 3), args.num_classes,
                                               n=max(4096, batch_size * (args.data_batches + 4)))
        rate = bench_data(data, augment, cfg, device, batch_size, workers, args.data_batches)
    print(f"  data pipeline ({workers} workers, RandAugment "
          f"{'on' if augment.randaugment else 'off'}, erasing {augment.erasing}): "
          f"{rate:.0f} images/s = {rate / rate_at[batch_size]:.2f}x what the model "
          f"consumes (goal >= 2x)")
    fig["data"] = {"workers": workers, "batch_size": batch_size, "images_per_s": rate,
                   "model_images_per_s": rate_at[batch_size],
                   "over_model": rate / rate_at[batch_size],
                   "randaugment": bool(augment.randaugment), "erasing": augment.erasing,
                   "batches": args.data_batches}
    emit()
    return fig


def main() -> None:
    run(parser().parse_args())


if __name__ == "__main__":
    main()
