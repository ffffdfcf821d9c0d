"""The charts' canvas: one style (rc params, colours), figure setup, legends, PNG encoding.

Every chart module draws on a figure made here and saves it here, so that the charts look
alike and are encoded alike; it is the only module of the charts that selects matplotlib's
backend (Agg, no pyplot state).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # before anything imports pyplot; this module itself never does

import numpy as np
from matplotlib.artist import Artist
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.typing import RcKeyType

from poolbench import format as fmt
from poolbench.files import atomic_file

DPI = 110
WIDTH = 11.0  # inches

STYLE: dict[RcKeyType, Any] = {
    "font.family": "DejaVu Sans",
    "font.size": 10,
    # FreeType's hinting (matplotlib's "default": the font's, else its autohinter) was a
    # third of the charts' drawing time here; unhinted glyphs read as well at these sizes
    "text.hinting": "no_hinting",
    "axes.titlesize": 11,
    "axes.titleweight": "bold",
    "axes.titlelocation": "left",
    # titles at the axes' top (+ titlepad): where matplotlib's automatic placement puts them
    # here anyway (no tick labels on top, no offset text), without measuring every tick label
    # of the axes and its twins first (a quarter of a chart's drawing time)
    "axes.titley": 1.0,
    # no offset text above a y axis (it would sit under such a title): ticks in full numbers
    "axes.formatter.useoffset": False,
    "axes.labelsize": 10,
    "axes.labelcolor": "#333333",
    "axes.edgecolor": "#999999",
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.color": "#e5e5e5",
    "grid.linewidth": 0.8,
    "xtick.color": "#555555",
    "ytick.color": "#555555",
    "legend.frameon": False,
    "legend.fontsize": 9,
    "figure.facecolor": "white",
    "figure.titlesize": 13,
    "figure.titleweight": "bold",
    "savefig.facecolor": "white",
}
VARIANT_COLORS = ["#c44e52", "#4c72b0", "#55a868", "#8172b2", "#ccb974", "#64b5cd", "#937860"]
ENGINE_COLORS = [
    "#4c72b0",
    "#dd8452",
    "#55a868",
    "#c44e52",
    "#8172b2",
    "#937860",
    "#da8bc3",
    "#8c8c8c",
    "#ccb974",
    "#64b5cd",
    "#a1c9f4",
    "#ffb482",
    "#8de5a1",
    "#ff9f9b",
    "#d0bbff",
    "#debb9b",
]
STATE_COLORS = {
    "active": "#dd8452",
    "idle in transaction": "#c44e52",
    "idle": "#4c72b0",
    "other": "#8c8c8c",
}
PHASE_COLORS = {"warmup": "#f2f2f2", "load": "#fff4e0", "idle": "#e8f1fa"}
MODEL_COLOR = "#d55e00"


def _legend(ax: Axes, extra: Sequence[Artist] | None = None, **kwargs: Any) -> None:
    """Legend right of the axes: the axes' own entries, then extra handles (e.g. phases)."""
    handles, labels = ax.get_legend_handles_labels()
    for handle in extra or []:
        handles.append(handle)
        labels.append(handle.get_label())
    x = kwargs.pop("x", 1.01)
    if handles:
        ax.legend(handles, labels, loc="upper left", bbox_to_anchor=(x, 1.0), **kwargs)


def _figure(rows: int, height_per_row: float, title: str) -> Figure:
    fig = Figure(figsize=(WIDTH, 0.9 + rows * height_per_row), dpi=DPI)
    FigureCanvasAgg(fig)
    fig.suptitle(title, x=0.01, ha="left")
    return fig


def _save(fig: Figure, path: Path) -> None:
    """The figure as a PNG: RGB when every pixel is opaque (always, on the white facecolor),
    deflated at level 3: the pixels matplotlib's savefig writes, in a smaller file, encoded in
    two thirds of the CPU time (its RGBA at level 6 was a third of the charts' time)."""
    from PIL import Image, PngImagePlugin

    _fix_empty_labels(fig)
    fig.canvas.draw()
    rgba = np.asarray(fig.canvas.buffer_rgba())  # type: ignore[attr-defined]
    # read in place (a copy of the strided RGB view cost as much as the deflating), and made
    # RGB by PIL when the alpha channel is opaque throughout
    height, width = rgba.shape[:2]
    image = Image.frombuffer("RGBA", (width, height), rgba, "raw", "RGBA", 0, 1)
    if image.getchannel("A").getextrema() == (255, 255):
        image = image.convert("RGB")
    info = PngImagePlugin.PngInfo()
    info.add_text(
        "Software", f"Matplotlib version{matplotlib.__version__}, https://matplotlib.org/"
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(path, "wb") as out:
        image.save(out, format="png", pnginfo=info, dpi=(DPI, DPI), compress_level=3)


def _fix_empty_labels(fig: Figure) -> None:
    """Pin every axis label without text where it is: matplotlib would otherwise measure the
    axis' tick labels a second time at each draw to move a label that draws nothing (the
    upper panels' time axis, the twin axes')."""
    for ax in fig.axes:
        for axis in (ax.xaxis, ax.yaxis):
            if not axis.label.get_text():
                axis.set_label_coords(0.5, 0.5)


def _variant_color(i: int) -> str:
    return VARIANT_COLORS[i % len(VARIANT_COLORS)]


def _fmt(value: float | None) -> str:
    return fmt.count(value)


def _no_data(ax: Axes, text: str = "not sampled") -> None:
    ax.text(0.5, 0.5, text, transform=ax.transAxes, ha="center", va="center", color="#999999")
