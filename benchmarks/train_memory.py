"""GPU memory of one training step of our ViT in bf16, counted on the CPU (no GPU needed).

For each config (``B/16@224``: a variant at an image size), one training step under bf16 autocast
(``precision: bf16-mixed``) holds, at its peak:

- the weights, fp32 (4 bytes per parameter), and their gradients, fp32 (4);
- the optimizer state: SGD with momentum one fp32 copy of the weights (4), AdamW two (8);
- autocast's bf16 copies of the Linear and Conv weights, which the backward needs (2): the part
  of the saved tensors that does not grow with the batch;
- the activations: every tensor autograd saves for the backward, counted with
  ``torch.autograd.graph.saved_tensors_hooks`` during a forward and cross-entropy, each storage
  once (views share their storage), the parameters left out (counted above). Counted at batch 1
  and 2: the difference is the bytes per image (exactly linear: the tests count batch 3 too).

The forward runs under ``FakeTensorMode``: CPU tensors without data, so autocast's CPU rules and
the kernels' output shapes apply but nothing is computed or allocated, and H/14 counts in a
second; ``--real`` counts on real CPU tensors instead (slow, the same bytes: the tests check).

Two attention paths, both counted:
- ``flash``: the flash kernel, which our attention takes on a GPU in bf16 (the GPU check's
  ``env`` step checks it). It saves q, k, v (views of the qkv output), its output and a fp32
  log-sum-exp per head and token, as the CUDA kernel does; counted with the CPU flash kernel.
- ``math``: ``scaled_dot_product_attention``'s fallback. It upcasts bf16 q, k, v to fp32 on every
  device and saves the fp32 (B, heads, N, N) probabilities: the s-squared term below.

Not counted: the CUDA context, cuBLAS/cuDNN workspaces, the caching allocator's fragmentation
and reserve, the input batch (0.6 MB per image at 224 px), the backward's transient gradients (of
about one block), an EMA of the weights (4 bytes per parameter), DDP's gradient buckets. The
total also adds all the gradients to all the activations, although the gradients fill as the
backward frees the activations (an overcount of up to the gradients): neither way is it a bound.
``benchmarks/gpu_check.sh`` measures the real peak (``torch.cuda.max_memory_allocated``, AdamW)
of B/16 and L/16 to set against ``--optimizer adamw``.

Cross-check, printed per config: one block's activations per image equal, to the byte,

    flash: 20sh + 4sm + 4as + 16s        math: 26sh + 4sm + 4as^2 + 16s

(s tokens, h width, m MLP width, a heads; 36sh and 42sh at m = 4h), against Korthikanti et al.
2022 ("Reducing Activation Recomputation in Large Transformer Models", Sec. 4.1): 34sh + 5as^2 in
16 bit (see ``block_bytes`` for the differences).

    python benchmarks/train_memory.py                        # B/16, L/16, H/14 at 224 and ~384
    python benchmarks/train_memory.py --config L/16@224 --optimizer adamw --batch-sizes 32,64
    python benchmarks/train_memory.py --variant-name finetune_b16 --json memory.json
"""

from __future__ import annotations

import argparse
import contextlib
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from pipeline.models.variants import ViTConfig, variant_config
from pipeline.models.vit import VisionTransformer

ATTENTION = {"flash": SDPBackend.FLASH_ATTENTION, "math": SDPBackend.MATH}
STATES = {"sgd": 1, "adamw": 2}  # fp32 copies of the weights: momentum; exp_avg and exp_avg_sq
# H/14 at 392, not 384 (a multiple of 14); the paper fine-tunes at 384 and higher
CONFIGS = ("B/16@224", "B/16@384", "L/16@224", "L/16@384", "H/14@224", "H/14@392")
# what the GPUs offer to a process (H100 80 GB: about 78 GiB, H200 141 GB: about 139)
BUDGETS = {"H100": 78.0, "H200": 139.0}
GIB, MIB = 2**30, 2**20


def block_bytes(cfg: ViTConfig, attention: str) -> int:
    """Activation bytes one encoder block saves per image under bf16 autocast (dropout off).

    Korthikanti et al. count 34sh + 5as^2 per layer and sequence in 16 bit: 11sh + 5as^2 for
    attention (its input, Q, K, V, the projection's input, a dropout mask; softmax output,
    dropout mask and dropout output), 19sh for the MLP (input, GeLU input, fc2 input, a dropout
    mask) and 4sh for the two LayerNorms' inputs. Ours differs:
    - no dropout (the fine-tune recipe): no masks, -2sh and the dropout share of 5as^2;
    - the LayerNorms' inputs are the fp32 residual stream (autocast runs LayerNorm in fp32 and a
      bf16 branch added to it stays fp32): 4 bytes, not 2, +4sh; their mean and 1/std, fp32 per
      token, +16s (the paper leaves them out);
    - flash keeps no s^2 tensor, only a fp32 log-sum-exp per head and token, +4as (its output
      is the projection's input, one storage);
    - math: torch upcasts q, k, v to fp32 (12sh instead of the qkv output's 6sh) and saves the
      fp32 probabilities once (4as^2; softmax and the product with v share them).
    """
    s, h, a = cfg.num_patches + 1, cfg.embed_dim, cfg.num_heads
    m = int(h * cfg.mlp_ratio)
    if attention == "flash":
        return 20 * s * h + 4 * s * m + 4 * a * s + 16 * s
    return 26 * s * h + 4 * s * m + 4 * a * s * s + 16 * s


def korthikanti_bytes(cfg: ViTConfig) -> int:
    """34sh + 5as^2: Korthikanti et al. 2022's activations per layer and sequence, 16 bit."""
    s, h, a = cfg.num_patches + 1, cfg.embed_dim, cfg.num_heads
    return 34 * s * h + 5 * a * s * s


@contextlib.contextmanager
def training_model(cfg: ViTConfig, real: bool):
    """The model in training mode, on fake CPU tensors (no data) or real ones; tensors made
    inside the block are of the same kind."""
    if real:
        yield VisionTransformer(cfg).train()
        return
    from torch._subclasses.fake_tensor import FakeTensorMode

    # built on the meta device first, outside the fake mode: the init draws random numbers,
    # which fake tensors cannot (they hold no values); to_empty then makes fake CPU tensors
    with torch.device("meta"):
        model = VisionTransformer(cfg)
    with FakeTensorMode(allow_non_fake_inputs=True):
        yield model.to_empty(device="cpu").train()


def saved_bytes(model: VisionTransformer, batch: int, attention: str) -> int:
    """Bytes autograd keeps for the backward of ``model``'s forward and cross-entropy on a batch
    of ``batch`` images under bf16 autocast, with ``attention`` (flash | math): each saved
    tensor's storage once, the parameters' own storages left out."""
    cfg = model.cfg
    x = torch.randn(batch, cfg.in_chans, cfg.img_size, cfg.img_size)
    y = torch.zeros(batch, dtype=torch.long)
    params = {p.untyped_storage()._cdata for p in model.parameters()}
    saved: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()  # _cdata: the storage's address, shared by all its views
        if storage._cdata not in params:
            saved[storage._cdata] = storage.nbytes()
        return t

    with (sdpa_kernel(ATTENTION[attention]),
          torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t),
          torch.autocast("cpu", dtype=torch.bfloat16)):
        loss = F.cross_entropy(model(x), y)
    total = sum(saved.values())  # while `loss` keeps every saved storage alive (no address reused)
    del loss
    return total


@dataclass(frozen=True)
class StepMemory:
    """One training step's memory in bytes; ``total(batch, attention)`` at its peak."""

    config: str
    params: int
    optimizer: str
    weights: int  # fp32
    grads: int  # fp32
    optimizer_state: int  # fp32, STATES[optimizer] copies
    weight_copies: int  # autocast's bf16 weight copies saved for the backward
    per_image: dict[str, int]  # attention -> activation bytes per image
    per_block: dict[str, int]  # attention -> one block's activation bytes per image (counted)

    @property
    def fixed(self) -> int:
        return self.weights + self.grads + self.optimizer_state + self.weight_copies

    def total(self, batch: int, attention: str) -> int:
        return self.fixed + batch * self.per_image[attention]

    def max_batch(self, budget: float, attention: str) -> int:
        """The largest batch whose count fits in ``budget`` bytes (0: not even one image)."""
        return max(0, int((budget - self.fixed) // self.per_image[attention]))


def per_image(cfg: ViTConfig, attention: str, real: bool) -> tuple[int, int]:
    """(activation bytes per image, batch-independent saved bytes) from batch 1 and 2."""
    with training_model(cfg, real) as model:
        one, two = (saved_bytes(model, b, attention) for b in (1, 2))
    return two - one, 2 * one - two


def count(cfg: ViTConfig, *, optimizer: str = "sgd", label: str = "", real: bool = False
          ) -> StepMemory:
    """Count one training step of ``cfg`` (see the module docstring)."""
    with torch.device("meta"):
        params = sum(p.numel() for p in VisionTransformer(cfg).parameters())
    images, fixed, blocks = {}, {}, {}
    for attention in ATTENTION:
        images[attention], fixed[attention] = per_image(cfg, attention, real)
        # one block: the same model with one block more, less the model with one
        two, one = (per_image(replace(cfg, depth=d), attention, real)[0] for d in (2, 1))
        blocks[attention] = two - one
    assert fixed["flash"] == fixed["math"], fixed  # the weight copies do not depend on attention
    return StepMemory(config=label or f"{cfg.embed_dim}d/{cfg.depth}L@{cfg.img_size}",
                      params=params, optimizer=optimizer, weights=4 * params, grads=4 * params,
                      optimizer_state=4 * STATES[optimizer] * params,
                      weight_copies=fixed["flash"], per_image=images, per_block=blocks)


def parse_config(text: str, num_classes: int) -> tuple[str, ViTConfig]:
    variant, _, img = text.partition("@")
    if not img.isdigit():
        raise SystemExit(f"--config {text!r}: expected VARIANT@IMG_SIZE, e.g. L/16@224")
    return text, variant_config(variant, img_size=int(img), num_classes=num_classes)


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--config", action="append", default=[],
                    help=f"VARIANT@IMG_SIZE, repeatable (default: {', '.join(CONFIGS)})")
    ap.add_argument("--variant-name", action="append", default=[],
                    help="a scratch or finetune variant of --params (its model), repeatable")
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--optimizer", choices=sorted(STATES), default="sgd",
                    help="sgd: the fine-tune recipe (momentum); adamw: the scratch recipe and "
                         "benchmarks/train_step.py")
    ap.add_argument("--batch-sizes", default="32,64,128,256")
    ap.add_argument("--num-classes", type=int, default=10)
    ap.add_argument("--headroom", type=float, default=0.1,
                    help="share of each GPU's memory left for what is not counted [0.1]")
    ap.add_argument("--real", action="store_true",
                    help="count on real CPU tensors, not FakeTensorMode (slow)")
    ap.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    return ap


def configs(args) -> list[tuple[str, ViTConfig]]:
    out = [parse_config(c, args.num_classes) for c in args.config]
    if args.variant_name:
        from pipeline.config import load_params

        params = load_params(args.params)
        for name in args.variant_name:
            _, vp = params.variant(name)
            cfg = vp.model.vit_config(num_classes=args.num_classes)
            out.append((f"{name} ({vp.model.variant}@{cfg.img_size})", cfg))
    return out or [parse_config(c, args.num_classes) for c in CONFIGS]


def row(m: StepMemory, sizes: list[int], headroom: float) -> dict:
    """The JSON row of ``m``: its bytes, the totals at ``sizes`` and the largest batches."""
    return {**asdict(m),
            "total": {str(b): {a: m.total(b, a) for a in ATTENTION} for b in sizes},
            "max_batch": {gpu: {a: m.max_batch(gib * GIB * (1 - headroom), a) for a in ATTENTION}
                          for gpu, gib in BUDGETS.items()}}


def run(args: argparse.Namespace) -> dict:
    """Count every config, print the table and the formula check, and return the figures."""
    sizes = [int(b) for b in args.batch_sizes.split(",")]
    fig = {"optimizer": args.optimizer, "precision": "bf16 autocast, fp32 weights",
           "counted_on": "real CPU tensors" if args.real else "FakeTensorMode (CPU, no data)",
           "torch": torch.__version__, "headroom": args.headroom,
           "budgets_gib": BUDGETS, "rows": []}
    print(f"One training step's memory, counted on the CPU ({fig['counted_on']}, torch "
          f"{torch.__version__}), not measured on a GPU: bf16 autocast, fp32 weights and "
          f"gradients, {args.optimizer} ({STATES[args.optimizer]} fp32 state per weight).\n"
          f"GiB = 2^30 bytes; each pair is flash / math attention.")
    todo = configs(args)
    w = max(13, *(len(label) + 2 for label, _ in todo))
    print(f"{'config':<{w}}{'params':>8}{'w+g+opt':>9}{'bf16 w':>8}{'act/image MiB':>17}"
          + "".join(f"{f'batch {b} GiB':>16}" for b in sizes)
          + "".join(f"{f'max {g} {BUDGETS[g]:g}G':>15}" for g in BUDGETS))
    checks = []
    for label, cfg in todo:
        m = count(cfg, optimizer=args.optimizer, label=label, real=args.real)
        r = row(m, sizes, args.headroom)
        r["formula_block"] = {a: block_bytes(cfg, a) for a in ATTENTION}
        r["korthikanti_block"] = korthikanti_bytes(cfg)
        fig["rows"].append(r)
        emit(args, fig)
        print(f"{label:<{w}}{m.params / 1e6:>7.1f}M"
              f"{(m.weights + m.grads + m.optimizer_state) / GIB:>9.2f}"
              f"{m.weight_copies / GIB:>8.2f}{pair(m.per_image, MIB):>17}"
              + "".join(f"{pair(r['total'][str(b)], GIB):>16}" for b in sizes)
              + "".join(f"{pair(r['max_batch'][g], spec='.0f'):>15}" for g in BUDGETS))
        off = {a: m.per_block[a] - r["formula_block"][a] for a in ATTENTION}
        checks.append(f"  {label}: {pair(m.per_block, MIB, '.2f')} MiB counted, "
                      f"{'equal to the formulas' if not any(off.values()) else f'off by {off}'};"
                      f" Korthikanti et al.: {r['korthikanti_block'] / MIB:.2f} MiB")
    print(f"w+g+opt: fp32 weights, gradients and optimizer state; bf16 w: autocast's weight "
          f"copies; max: the largest batch whose count fits in {1 - args.headroom:.0%} of the "
          f"GPU's GiB.\nNot counted: the CUDA context, workspaces, the allocator's "
          f"fragmentation, a block's transient gradients.")
    print("One block's activations per image (flash / math), against flash 20sh+4sm+4as+16s, "
          "math 26sh+4sm+4as^2+16s (s tokens, h width, m MLP width, a heads) and Korthikanti et "
          "al.'s 34sh+5as^2:")
    print("\n".join(checks))
    return fig


def pair(d: dict, unit: float = 1, spec: str = ".1f") -> str:
    """``"flash / math"`` of a dict keyed by attention path."""
    return f"{d['flash'] / unit:{spec}} / {d['math'] / unit:{spec}}"


def emit(args, fig: dict) -> None:
    if args.json:
        from pipeline.atomic import atomic_write_json

        atomic_write_json(args.json, fig)


def main() -> None:
    run(parser().parse_args())


if __name__ == "__main__":
    main()
