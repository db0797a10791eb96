"""How the report's figures look and are rasterised: matplotlib's object API on an Agg canvas (no
pyplot, no global backend switch), :func:`png_bytes` in memory, one colour per variant
(:func:`variant_colors`, in the order given) and a marker per kind (:func:`marker`).

A leaf of :mod:`pipeline.report`: it imports matplotlib only."""

from __future__ import annotations

import io
from typing import TYPE_CHECKING

from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

if TYPE_CHECKING:
    import numpy as np

DPI = 120
_MARKERS = {"scratch": "o", "finetune": "^"}


def figure(width: float, height: float) -> Figure:
    """An empty figure of ``width`` x ``height`` inches, constrained layout, on its own Agg
    canvas (whatever pyplot's backend is)."""
    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def png_bytes(fig: Figure) -> bytes:
    """``fig`` as PNG bytes, on white."""
    buf = io.BytesIO()
    # tight: a legend placed outside the axes is never cut at the figure's edge
    fig.savefig(buf, format="png", dpi=DPI, facecolor="white", bbox_inches="tight",
                pad_inches=0.15)
    return buf.getvalue()


def variant_colors(n: int) -> list[tuple]:
    """n distinct colours: tab10, then tab20, then evenly spaced hues."""
    if n <= 10:
        return [colormaps["tab10"](i) for i in range(n)]
    if n <= 20:
        return [colormaps["tab20"](i) for i in range(n)]
    return [colormaps["hsv"](i / n) for i in range(n)]


def marker(kind: str) -> str:
    """The marker of a variant kind: a circle for scratch, a triangle for finetune."""
    return _MARKERS.get(kind, "s")


def message(ax: Axes, text: str) -> None:
    """``text`` in the middle of an empty ``ax`` (a figure with nothing to draw)."""
    ax.text(0.5, 0.5, text, ha="center", va="center", fontsize=12, color="#555",
            transform=ax.transAxes, wrap=True)
    ax.set_xticks([])
    ax.set_yticks([])


def show_image(ax: Axes, image: np.ndarray) -> None:
    """uint8 (H, W, C) with C in {1, 3}, gray for C=1, pixels upscaled nearest."""
    if image.shape[-1] == 1:
        ax.imshow(image[..., 0], cmap="gray", vmin=0, vmax=255, interpolation="nearest")
    else:
        ax.imshow(image, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
