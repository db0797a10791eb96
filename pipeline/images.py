"""Images as the classifier takes them: any image file, PIL image or array -> uint8 (H, W, 3) RGB.

Gray is replicated, palettes expanded, an alpha channel composited over black, 16-bit scaled to
8-bit, EXIF orientation applied; a file that cannot be read raises :class:`ImageError` naming it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")

ImageLike = str | Path | Image.Image | np.ndarray


class ImageError(ValueError):
    """An image cannot be read or converted; the message names the file (or input) and why."""


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


def as_list(images: ImageLike | Sequence[ImageLike]) -> list[ImageLike]:
    """A list/tuple of images, a uint8 (N, H, W, C) batch, or one image (a batch of one)."""
    if isinstance(images, (list, tuple)):
        return list(images)
    if isinstance(images, np.ndarray) and images.ndim == 4:
        return list(images)
    return [images]
