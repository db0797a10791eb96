"""Predict with a trained ViT: top-k classes for image files, folders or in-memory images.

The model comes from a checkpoint our training stages wrote (``models/<variant>/best.ckpt``), from
an MLflow run (``runs:/<run_id>`` or the bare run id: the run's ``checkpoints/best.ckpt``
artifact), or from a registered model version (``models:/<name>/<version>``,
``models:/<name>/<alias>`` or ``models:/<name>@<alias>``: that version's run, same artifact).
MLflow is reached as the training stages reach it (``MLFLOW_TRACKING_URI``, else the project's
``mlflow.db``).

Images are converted to uint8 RGB (grayscale replicated, palettes expanded, an alpha channel
composited over black, 16-bit scaled to 8-bit, EXIF orientation applied) and then, one by one, go
through ``DevicePreprocess`` on the device, the module training uses: the whole image is resized
(bicubic, antialiased when shrinking; not cropped, so a non-square image is stretched) to the
model's square input size and normalised as in training.

    python -m pipeline.predict --model models/finetune_b16/best.ckpt photos/ cat.png
    python -m pipeline.predict --model runs:/<run_id> --json --top-k 3 --explain attn/ photos/
    vit-predict --model models:/vit-cifar10-finetune_b16/1 photos/

Exit code: 0 when every image was predicted, 1 when some file could not be read (each such file
gets its own error entry; the others are still predicted), 2 when nothing was run (bad model
source, no images found, bad arguments).

    >>> p = Predictor.load("models/finetune_b16/best.ckpt")
    >>> p.predict(["cat.png", pil_image, uint8_array], top_k=3)[0].top_k
    (('cat', 0.91), ('dog', 0.05), ('deer', 0.01))
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import sys
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps

from .evaluation import load_trained
from .explain import AttentionRecorder, attention_rollout, overlay
from .models import CheckpointError, VisionTransformer
from .training.preprocess import DevicePreprocess
from .training.tracking import tracking_uri

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
CHECKPOINT_ARTIFACT = "checkpoints/best.ckpt"  # where pipeline.training.run logs the best weights
_RUN_ID = re.compile(r"[0-9a-f]{32}")  # MLflow run ids are uuid4 hex

ImageLike = str | Path | Image.Image | np.ndarray


class ImageError(ValueError):
    """An image cannot be read or converted; the message names the file (or input) and why."""


# --------------------------------------------------------------------------- images


def to_rgb(image: Image.Image | np.ndarray) -> np.ndarray:
    """A PIL image or a uint8 array (H, W) / (H, W, 1|3|4) -> uint8 (H, W, 3) RGB.

    Gray is replicated, palette expanded, alpha composited over black (transparent pixels carry
    no colour), 16-bit gray scaled to 8 bits."""
    if isinstance(image, Image.Image):
        if image.mode in ("I;16", "I;16L", "I;16B", "I"):  # 16-bit PNG gray
            image = np.asarray(image, dtype=np.int64).clip(0, 65535) // 257
            image = image.astype(np.uint8)
        else:
            has_alpha = "A" in image.getbands() or "transparency" in image.info
            image = np.asarray(image.convert("RGBA" if has_alpha else "RGB"))
    arr = np.asarray(image)
    if arr.dtype != np.uint8:
        raise ImageError(f"expected uint8 pixels, got {arr.dtype}")
    if arr.ndim == 2:
        arr = arr[..., None]
    if arr.ndim != 3 or arr.shape[-1] not in (1, 3, 4) or 0 in arr.shape:
        raise ImageError(f"expected an (H, W) or (H, W, 1|3|4) image, got shape {arr.shape}")
    if arr.shape[-1] == 1:
        return np.repeat(arr, 3, axis=-1)
    if arr.shape[-1] == 4:
        rgb, a = arr[..., :3].astype(np.uint32), arr[..., 3:].astype(np.uint32)
        return ((rgb * a + 127) // 255).astype(np.uint8)  # over black
    return arr


def load_image(path: str | Path) -> np.ndarray:
    """uint8 (H, W, 3) RGB from an image file (PNG, JPEG, anything Pillow reads), EXIF orientation
    applied; ``ImageError`` naming the file and the reason when it cannot be read."""
    try:
        with Image.open(path) as im:
            im.load()  # decode now: a truncated or corrupt file fails here, not later
            return to_rgb(ImageOps.exif_transpose(im))
    except FileNotFoundError:
        raise ImageError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise ImageError(f"{path}: is a directory") from None
    except ImageError as e:
        raise ImageError(f"{path}: {e}") from None
    except Exception as e:  # noqa: BLE001 - Pillow raises OSError, SyntaxError, ValueError, ...
        raise ImageError(f"{path}: not a readable image ({type(e).__name__}: {e})") from None


def find_images(paths: Iterable[str | Path]) -> list[Path]:
    """Files as given (any suffix; a missing one is kept, to be reported when read), and the
    .png/.jpg/.jpeg files under folders, recursively and sorted; each file once."""
    out: list[Path] = []
    seen: set[Path] = set()
    for p in map(Path, paths):
        found = (sorted(f for f in p.rglob("*") if f.suffix.lower() in IMAGE_SUFFIXES
                        and f.is_file()) if p.is_dir() else [p])
        for f in found:
            key = f.resolve()
            if key not in seen:
                seen.add(key)
                out.append(f)
    return out


def _as_list(images: ImageLike | Sequence[ImageLike]) -> list[ImageLike]:
    """A list/tuple of images, a uint8 (N, H, W, C) batch, or one image (a batch of one)."""
    if isinstance(images, (list, tuple)):
        return list(images)
    if isinstance(images, np.ndarray) and images.ndim == 4:
        return list(images)
    return [images]


# --------------------------------------------------------------------------- model sources


def _mlflow_client(uri: str):
    from mlflow import MlflowClient

    if uri.startswith("sqlite:///"):
        db = Path(uri.removeprefix("sqlite:///"))
        if not db.is_file():
            raise CheckpointError(f"no MLflow database at {db}: run from the project root or set "
                                  "MLFLOW_TRACKING_URI")
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def _download(uri: str, run_id: str, artifact: str, dst: str) -> Path:
    from mlflow.artifacts import download_artifacts
    from mlflow.exceptions import MlflowException

    client = _mlflow_client(uri)
    try:
        client.get_run(run_id)
    except MlflowException as e:
        raise CheckpointError(f"no MLflow run {run_id} in {uri} ({e.error_code})") from None
    try:
        return Path(download_artifacts(run_id=run_id, artifact_path=artifact, dst_path=dst,
                                       tracking_uri=uri))
    except Exception as e:  # noqa: BLE001 - MlflowException, OSError, per artifact store
        raise CheckpointError(
            f"MLflow run {run_id} has no artifact {artifact} (did its training finish?): "
            f"{type(e).__name__}: {e}") from None


def _model_version_run(uri: str, spec: str) -> str:
    """The run id behind ``<name>/<version>``, ``<name>/<alias>`` or ``<name>@<alias>``."""
    from mlflow.exceptions import MlflowException

    name, sep, ref = spec.rpartition("@") if "@" in spec else spec.rpartition("/")
    if not sep or not name or not ref:
        raise CheckpointError(f"models:/{spec}: expected models:/<name>/<version> or "
                              "models:/<name>@<alias>")
    client = _mlflow_client(uri)
    try:
        mv = (client.get_model_version(name, ref) if ref.isdigit()
              else client.get_model_version_by_alias(name, ref))
    except MlflowException as e:
        what = "version" if ref.isdigit() else "alias"
        raise CheckpointError(f"models:/{spec}: registered model {name!r} has no {what} {ref!r} "
                              f"in {uri} ({e.error_code})") from None
    if not mv.run_id:
        raise CheckpointError(f"models:/{spec}: version {mv.version} was not registered from an "
                              "MLflow run, so there is no checkpoint artifact to load")
    return mv.run_id


@contextlib.contextmanager
def local_checkpoint(source: str | Path, uri: str | None = None) -> Iterator[Path]:
    """A local path to the checkpoint ``source`` names, downloaded into a temporary directory
    (removed afterwards) when it lives in MLflow."""
    s = str(source)
    if s.startswith(("runs:/", "models:/")) or (not Path(s).exists() and _RUN_ID.fullmatch(s)):
        uri = uri or tracking_uri()
        if s.startswith("models:/"):
            run_id, artifact = _model_version_run(uri, s.removeprefix("models:/")), None
        else:
            run_id, _, artifact = s.removeprefix("runs:/").strip("/").partition("/")
        with tempfile.TemporaryDirectory(prefix="vit-predict-") as tmp:
            yield _download(uri, run_id, artifact or CHECKPOINT_ARTIFACT, tmp)
    elif Path(s).is_file():
        yield Path(s)
    else:
        raise CheckpointError(
            f"no checkpoint at {s}: give a .ckpt file, runs:/<run_id>, an MLflow run id or "
            "models:/<name>/<version|alias>")


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
    """A trained ViT in eval mode on a device, with its class names. Device ``None``: CUDA if
    available; on a GPU the forward pass runs under bf16 autocast (fp16 without bf16)."""

    def __init__(self, model: VisionTransformer, classes: Sequence[str] | None = None, *,
                 device: str | torch.device | None = None, source: str | None = None) -> None:
        cfg = model.cfg
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.model = model.eval().to(self.device)
        self.classes = list(classes) if classes else [str(i) for i in range(cfg.num_classes)]
        if len(self.classes) != cfg.num_classes:
            raise ValueError(f"{len(self.classes)} class names for {cfg.num_classes} outputs")
        if cfg.in_chans not in (1, 3):
            raise ValueError(f"cannot feed images to a model with {cfg.in_chans} input channels")
        self.preprocess = DevicePreprocess(cfg.img_size, cfg.in_chans).to(self.device)
        self.amp_dtype = None
        if self.device.type == "cuda":
            self.amp_dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        self.source = source

    @classmethod
    def load(cls, source: str | Path, *, device: str | torch.device | None = None,
             tracking_uri: str | None = None) -> Predictor:
        """From a checkpoint path, ``runs:/<run_id>[/<artifact>]``, a bare run id, or
        ``models:/<name>/<version|alias>`` / ``models:/<name>@<alias>``."""
        with local_checkpoint(source, tracking_uri) as path:
            model, hp = load_trained(path)
        return cls(model, hp.get("classes"), device=device, source=str(source))

    @property
    def grid_size(self) -> int:
        return self.model.cfg.grid_size

    def _pixels(self, image: ImageLike) -> np.ndarray:
        """uint8 (H, W, in_chans)."""
        rgb = load_image(image) if isinstance(image, (str, Path)) else to_rgb(image)
        if self.model.cfg.in_chans == 1:
            return np.asarray(Image.fromarray(rgb).convert("L"))[..., None]
        return rgb

    @torch.no_grad()
    def _forward(self, pixels: Sequence[np.ndarray], explain: bool = False
                 ) -> tuple[np.ndarray, np.ndarray | None]:
        """Probabilities (B, classes) float32 and, if ``explain``, rollouts (B, grid, grid)."""
        # one image at a time (sizes may differ) through the module training uses
        x = torch.cat([self.preprocess(torch.from_numpy(np.require(p, requirements=["C", "W"]))
                                       .unsqueeze(0).to(self.device))
                       for p in pixels])  # (B, C, S, S)
        recorder = AttentionRecorder(self.model) if explain else contextlib.nullcontext()
        with recorder, torch.autocast(self.device.type, dtype=self.amp_dtype or torch.float32,
                                      enabled=self.amp_dtype is not None):
            logits = self.model(x)
        probs = logits.float().softmax(dim=-1).cpu().numpy()
        if not explain:
            return probs, None
        return probs, attention_rollout(recorder.attentions).cpu().numpy()

    def _batches(self, images, batch_size: int, explain: bool):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        items = _as_list(images)
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
                        help="a .ckpt file, runs:/<run_id>, an MLflow run id, or "
                        "models:/<name>/<version|alias>")
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
