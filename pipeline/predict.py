"""Predict with a trained ViT: top-k classes for image files, folders or in-memory images.

The model is the trained-model file a training stage wrote (``models/<variant>/model.safetensors``,
or the variant's dir), from an MLflow run (``runs:/<run_id>`` or the bare run id: the run's
``trained/model.safetensors`` artifact), or from a registered model version
(``models:/<name>/<version>``, ``models:/<name>/<alias>`` or ``models:/<name>@<alias>``: that
version's run, same artifact). MLflow is reached as the training stages reach it
(``MLFLOW_TRACKING_URI``, else the project's ``mlflow.db``).

Images are converted to uint8 RGB (grayscale replicated, palettes expanded, an alpha channel
composited over black, 16-bit scaled to 8-bit, EXIF orientation applied) and then go through the
:class:`~pipeline.models.ImageClassifier` training uses, each image preprocessed on its own on the
device (with the autocast of :func:`~pipeline.models.autocast_dtype`): the whole image is resized
(bicubic, antialiased when shrinking; not cropped, so a non-square image is stretched) to the
model's square input size and normalised as in training.

    python -m pipeline.predict --model models/finetune_b16/model.safetensors photos/ cat.png
    python -m pipeline.predict --model runs:/<run_id> --json --top-k 3 --explain attn/ photos/
    vit-predict --model models:/vit-cifar10-finetune_b16/1 photos/

Exit code: 0 when every image was predicted, 1 when some file could not be read (each such file
gets its own error entry; the others are still predicted), 2 when nothing was run (bad model
source, no images found, bad arguments).

    >>> p = Predictor.load("models/finetune_b16")
    >>> p.predict(["cat.png", pil_image, uint8_array], top_k=3)[0].top_k
    (('cat', 0.91), ('dog', 0.05), ('deer', 0.01))
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .errors import CheckpointError
from .explain import overlay, rollout
from .images import ImageError, ImageLike, as_list, find_images, load_image, to_rgb
from .models.classifier import ImageClassifier
from .models.device import autocast, autocast_dtype
from .models.model_file import load_model_file
from .models.vit import VisionTransformer
from .tracking.model_uris import local_model_file

__all__ = ["ImageError", "Prediction", "Predictor", "find_images", "load_image", "main",
           "predict_files", "to_rgb"]

# --------------------------------------------------------------------------- predictor


@dataclass(frozen=True)
class Prediction:
    """The top-k classes of one image, most probable first."""

    top_k: tuple[tuple[str, float], ...]  # (class name, probability)
    indices: tuple[int, ...]  # class indices, same order

    @property
    def label(self) -> str:
        return self.top_k[0][0]

    @property
    def probability(self) -> float:
        return self.top_k[0][1]

    def to_dict(self) -> list[dict]:
        return [{"class": c, "index": i, "probability": p}
                for (c, p), i in zip(self.top_k, self.indices)]


class Predictor:
    """A trained classifier in eval mode on a device, with its class names. Device ``None``: CUDA
    if available; the autocast dtype is :func:`~pipeline.models.autocast_dtype`'s for the device
    (bf16 on a GPU that has it, fp16 on one that has not, fp32 on a CPU)."""

    def __init__(self, classifier: ImageClassifier | VisionTransformer,
                 classes: Sequence[str] | None = None, *,
                 device: str | torch.device | None = None, source: str | None = None) -> None:
        if isinstance(classifier, VisionTransformer):  # with the default preprocessing
            classifier = ImageClassifier(classifier)
        cfg = classifier.cfg
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.classifier = classifier.eval().to(self.device)
        self.classes = list(classes) if classes else [str(i) for i in range(cfg.num_classes)]
        if len(self.classes) != cfg.num_classes:
            raise ValueError(f"{len(self.classes)} class names for {cfg.num_classes} outputs")
        if cfg.in_chans not in (1, 3):
            raise ValueError(f"cannot feed images to a model with {cfg.in_chans} input channels")
        self.amp_dtype = autocast_dtype(self.device)
        self.source = source

    @classmethod
    def load(cls, source: str | Path, *, device: str | torch.device | None = None,
             tracking_uri: str | None = None) -> Predictor:
        """From a model file (or a variant's dir holding one), ``runs:/<run_id>[/<artifact>]``, a
        bare run id, or ``models:/<name>/<version|alias>`` / ``models:/<name>@<alias>``."""
        with local_model_file(source, tracking_uri) as path:
            trained = load_model_file(path)
        return cls(trained.classifier, trained.classes, device=device, source=str(source))

    @property
    def grid_size(self) -> int:
        return self.classifier.cfg.grid_size

    def _pixels(self, image: ImageLike) -> np.ndarray:
        """uint8 (H, W, in_chans)."""
        rgb = load_image(image) if isinstance(image, (str, Path)) else to_rgb(image)
        if self.classifier.cfg.in_chans == 1:
            return np.asarray(Image.fromarray(rgb).convert("L"))[..., None]
        return rgb

    @torch.no_grad()
    def _forward(self, pixels: Sequence[np.ndarray], explain: bool = False
                 ) -> tuple[np.ndarray, np.ndarray | None]:
        """Probabilities (B, classes) float32 and, if ``explain``, rollouts (B, grid, grid)."""
        images = [torch.from_numpy(np.require(p, requirements=["C", "W"])).to(self.device)
                  for p in pixels]  # sizes may differ: the classifier resizes each
        with autocast(self.device, self.amp_dtype):
            logits, masks = rollout(self.classifier, images) if explain else \
                (self.classifier(images), None)
        probs = logits.float().softmax(dim=-1).cpu().numpy()
        return probs, (None if masks is None else masks.cpu().numpy())

    def _batches(self, images, batch_size: int, explain: bool):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        items = as_list(images)
        for start in range(0, len(items), batch_size):
            yield self._forward([self._pixels(im) for im in items[start:start + batch_size]],
                                explain)

    def predict_proba(self, images: ImageLike | Sequence[ImageLike], *,
                      batch_size: int = 64) -> np.ndarray:
        """Class probabilities, float32 (N, classes), rows summing to 1.

        ``images``: a list of paths, PIL images and uint8 (H, W) / (H, W, C) arrays, a uint8
        (N, H, W, C) batch, or one image. An unreadable file raises ``ImageError`` naming it."""
        out = [p for p, _ in self._batches(images, batch_size, explain=False)]
        return np.concatenate(out) if out else np.zeros((0, len(self.classes)), np.float32)

    def top_k(self, probs: np.ndarray, k: int = 5) -> list[Prediction]:
        """``Prediction`` per row of ``probs`` (N, classes)."""
        if k < 1:
            raise ValueError(f"top_k must be >= 1, got {k}")
        k = min(k, probs.shape[-1])
        idx = np.argsort(-probs, axis=-1, kind="stable")[:, :k]
        return [Prediction(tuple((self.classes[i], float(row[i])) for i in ids),
                           tuple(int(i) for i in ids)) for row, ids in zip(probs, idx)]

    def predict(self, images: ImageLike | Sequence[ImageLike], top_k: int = 5, *,
                batch_size: int = 64) -> list[Prediction]:
        """The ``top_k`` most probable classes of each image (see ``predict_proba``)."""
        return self.top_k(self.predict_proba(images, batch_size=batch_size), top_k)

    def explain(self, image: ImageLike) -> np.ndarray:
        """Attention rollout of one image: float32 (grid, grid), non-negative, summing to 1.
        ``pipeline.explain.overlay(image, mask)`` draws it."""
        (_, masks), = self._batches([image], 1, explain=True)
        return masks[0]


# --------------------------------------------------------------------------- CLI


def _overlay_name(out_dir: Path, path: Path, taken: set[str]) -> Path:
    """``<stem>_attention.png``; ``<stem>_2_attention.png``, ... when two inputs share a stem."""
    name, n = f"{path.stem}_attention.png", 1
    while name in taken:
        n += 1
        name = f"{path.stem}_{n}_attention.png"
    taken.add(name)
    return out_dir / name


def predict_files(predictor: Predictor, files: Sequence[Path], *, top_k: int, batch_size: int,
                  explain_dir: Path | None = None) -> Iterator[dict]:
    """One record per file, in order: ``{"path", "predictions": [...]}`` (plus ``"attention"``,
    the overlay written), or ``{"path", "error"}`` when the file cannot be read or written."""
    taken: set[str] = set()
    for start in range(0, len(files), batch_size):
        chunk = files[start:start + batch_size]
        records: list[dict] = []
        good: list[tuple[dict, np.ndarray]] = []
        for f in chunk:
            records.append({"path": str(f)})
            try:
                good.append((records[-1], predictor._pixels(f)))
            except ImageError as e:
                records[-1]["error"] = str(e)
        if good:
            probs, masks = predictor._forward([px for _, px in good], explain_dir is not None)
            for i, ((rec, px), pred) in enumerate(zip(good, predictor.top_k(probs, top_k))):
                rec["predictions"] = pred.to_dict()
                if masks is not None:
                    out = _overlay_name(explain_dir, Path(rec["path"]), taken)
                    try:
                        overlay(px, masks[i]).save(out)
                        rec["attention"] = str(out)
                    except OSError as e:
                        rec["error"] = f"{out}: cannot write the attention overlay ({e})"
        yield from records


def _table_rows(rec: dict, width: int) -> list[str]:
    path = rec["path"].ljust(width)
    if "predictions" not in rec:
        return [f"{path}  error: {rec['error']}"]
    lines = []
    for rank, p in enumerate(rec["predictions"], 1):
        lines.append(f"{path if rank == 1 else ' ' * width}  {rank:>4}  "
                     f"{p['probability']:11.4f}  {p['class']}")
    if "attention" in rec:
        lines.append(f"{' ' * width}  attention: {rec['attention']}")
    if "error" in rec:
        lines.append(f"{' ' * width}  error: {rec['error']}")
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="vit-predict", description="Top-k classes (and attention maps) of images with a "
        "trained ViT. Exit code 0: all images predicted; 1: some files failed (each reported, "
        "the rest predicted); 2: nothing run (bad model source, no images, bad arguments).")
    parser.add_argument("paths", nargs="+", metavar="PATH",
                        help="image files, or folders searched recursively for .png/.jpg/.jpeg")
    parser.add_argument("--model", required=True, metavar="SOURCE",
                        help="a model.safetensors (or a variant's dir, models/<variant>), "
                        "runs:/<run_id>, an MLflow run id, or models:/<name>/<version|alias>")
    parser.add_argument("--top-k", type=int, default=5, help="classes per image (default 5)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--batch-size", type=int, default=64, help="images per forward pass")
    parser.add_argument("--explain", type=Path, metavar="OUT_DIR",
                        help="write an attention-rollout overlay <stem>_attention.png per image")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: cuda if any)")
    args = parser.parse_args(argv)
    if args.top_k < 1 or args.batch_size < 1:
        parser.error("--top-k and --batch-size must be >= 1")

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # stderr: our errors
    files = find_images(args.paths)
    try:
        if not files:
            raise FileNotFoundError(f"no .png/.jpg/.jpeg images in {', '.join(args.paths)}")
        if args.explain is not None:
            args.explain.mkdir(parents=True, exist_ok=True)
        # RuntimeError: weights that do not fit the checkpoint's config, or an unusable --device
        predictor = Predictor.load(args.model, device=args.device)
    except (CheckpointError, OSError, ValueError, RuntimeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2

    records = predict_files(predictor, files, top_k=args.top_k, batch_size=args.batch_size,
                            explain_dir=args.explain)
    failed = 0
    if args.json:
        results = list(records)
        failed = sum("error" in r for r in results)
        json.dump({"model": str(args.model), "results": results, "failed": failed},
                  sys.stdout, indent=2)
        print()
    else:
        width = max(len("file"), *(len(str(f)) for f in files))
        print(f"{'file'.ljust(width)}  rank  probability  class")
        for rec in records:
            failed += "error" in rec
            print("\n".join(_table_rows(rec, width)), flush=True)
    if failed:
        print(f"{failed} of {len(files)} files failed", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
