"""Two pictures of one video's features (opt-in ``save_plots=true``; needs matplotlib).

Saved next to the features as

- ``<stem>_top1_timeline.png``, 1000 x 360 px: the top-1 Kinetics-400 class of
  every window along the video's timeline (x: seconds, or frames when the video
  states no frame rate; bar: the window, centred on its middle and one step
  wide when windows overlap; bar height: the class's softmax probability, the
  axis ending just above the highest; colour: the class, the 9 most frequent
  named in the legend);
- ``<stem>_similarity.png``, 600 x 540 px: the cosine similarity of the
  features of every pair of windows, colours from the smallest value to 1
  (repeated content shows up as bright
  off-diagonal blocks, scene cuts as dark bands).

Figures are built with matplotlib's object API (no pyplot, no global backend)
and rendered by Agg, so drawing works headless. matplotlib is imported only
when a picture is drawn: extraction without plots does not need it.
"""

from __future__ import annotations

import math
import os
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np

from r21d_features.utils.outputs.atomic import atomic_write
from r21d_features.utils.core.errors import SettingsError
from r21d_features.utils.core.console import plural
from r21d_features.utils.outputs.output_paths import output_file
from r21d_features.utils.outputs.predictions import top_k

if TYPE_CHECKING:
    from matplotlib.figure import Figure

DPI = 100
TIMELINE_SIZE_PX = (1000, 360)  # width, height
SIMILARITY_SIZE_PX = (600, 540)
PLOT_SUFFIXES = {"top1_timeline": "_top1_timeline.png", "similarity": "_similarity.png"}
# Classes with their own colour in the timeline (tab10 minus grey); the rest are drawn grey as "other".
MAX_COLOURED_CLASSES = 9
_OTHER_COLOUR = "#9e9e9e"


class PlotsUnavailableError(SettingsError):
    """matplotlib is missing; the message says how to install it."""


def require_matplotlib() -> None:
    """Raise :class:`PlotsUnavailableError` now, before any work, when matplotlib is missing."""
    try:
        import matplotlib  # noqa: F401, PLC0415 (optional dependency, imported on demand)
    except ImportError:
        raise PlotsUnavailableError(
            "save_plots=true needs matplotlib, which is not installed; "
            "run: pip install matplotlib (or pip install '.[plots]')"
        ) from None


def _new_figure(size_px: tuple[int, int]) -> "Figure":
    require_matplotlib()
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: PLC0415
    from matplotlib.figure import Figure  # noqa: PLC0415

    fig = Figure(figsize=(size_px[0] / DPI, size_px[1] / DPI), dpi=DPI)
    FigureCanvasAgg(fig)  # a renderer to measure text with (_fit_left_margin)
    return fig


def _fit_left_margin(fig: "Figure", ax, pad_px: float = 6.0) -> None:  # noqa: ANN001
    """Move ``ax``'s left edge right (its right edge stays) until its y tick labels and y label
    lie inside the figure: their width depends on the values (``0.0005`` is wider than ``0.5``)."""
    overflow_px = pad_px - ax.yaxis.get_tightbbox(fig.canvas.get_renderer()).x0
    if overflow_px > 0:
        left, bottom, width, height = ax.get_position().bounds
        shift = overflow_px / fig.bbox.width
        ax.set_position((left + shift, bottom, width - shift, height))


def _time_axis(window_bounds: Sequence[tuple[int, int]], fps: float) -> tuple[np.ndarray, str]:
    """Window spans ``(num_windows, 2)`` in seconds when ``fps`` is usable, else in frames, and the unit."""
    frames = np.asarray(window_bounds, dtype=np.float64).reshape(-1, 2)
    if fps > 0 and math.isfinite(fps):
        return frames / fps, "s"
    return frames, "frames"


def _empty_note(ax, text: str = "no full window: the video is shorter than one window") -> None:  # noqa: ANN001
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes)
    ax.set_xticks([])
    ax.set_yticks([])


def cosine_similarity_matrix(features: np.ndarray) -> np.ndarray:
    """``(num_windows, D)`` features -> ``(num_windows, num_windows)`` float32 cosine
    similarities in [-1, 1] (an all-zero row is similar to nothing: 0)."""
    feats = np.asarray(features, dtype=np.float64)
    norms = np.linalg.norm(feats, axis=1, keepdims=True)
    unit = feats / np.maximum(norms, 1e-12)
    return np.clip(unit @ unit.T, -1.0, 1.0).astype(np.float32)


def top1_timeline_figure(
    window_bounds: Sequence[tuple[int, int]],
    fps: float,
    logits: np.ndarray,
    labels: Sequence[str],
    title: str = "",
) -> "Figure":
    """Top-1 class of each window along the timeline.

    ``window_bounds[i] = (start_frame, end_frame_exclusive)``; ``logits``:
    ``(num_windows, num_classes)`` float; ``labels[c]`` names class ``c``.
    """
    fig = _new_figure(TIMELINE_SIZE_PX)
    ax = fig.add_axes((0.06, 0.15, 0.62, 0.72))
    fig.text(0.01, 0.98, title, ha="left", va="top", fontsize=9)
    spans, unit = _time_axis(window_bounds, fps)
    if len(spans) == 0:
        _empty_note(ax)
        return fig
    best = [top_k(row, k=1)[0] for row in np.asarray(logits)]
    classes = [idx for idx, _, _ in best]
    probs = np.array([prob for _, _, prob in best])
    # Most frequent classes first; ties by first appearance (Counter keeps insertion order).
    ranked = [c for c, _ in Counter(classes).most_common()]
    palette = [c for i, c in enumerate(_tab10()) if i != 7]  # index 7 is tab10's grey
    colour_of = {c: palette[i] for i, c in enumerate(ranked[:MAX_COLOURED_CLASSES])}
    colours = [colour_of.get(c, _OTHER_COLOUR) for c in classes]
    # Overlapping windows (step < stack) would hide each other: such bars are one step wide, centred.
    widths = spans[:, 1] - spans[:, 0]
    if len(spans) > 1:
        widths = np.minimum(widths, spans[1, 0] - spans[0, 0])
    ax.bar(spans.mean(axis=1), probs, width=widths, color=colours, edgecolor="white", linewidth=0.5)
    ax.set_xlim(0, spans[:, 1].max())
    ax.set_ylim(0, min(1.0, float(probs.max()) * 1.15))  # low-confidence bars stay visible
    ax.set_xlabel(f"time ({unit})" if unit == "s" else "frame")
    ax.set_ylabel("top-1 probability")
    from matplotlib.patches import Patch  # noqa: PLC0415

    counts = Counter(classes)
    handles = [Patch(color=colour_of[c], label=f"{labels[c]} ({counts[c]})") for c in ranked[:MAX_COLOURED_CLASSES]]
    rest = ranked[MAX_COLOURED_CLASSES:]
    if rest:
        handles.append(Patch(color=_OTHER_COLOUR, label=f"{plural(len(rest), 'other class', 'other classes')} ({sum(counts[c] for c in rest)})"))
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=8,
              title="top-1 class (windows)", title_fontsize=8, frameon=False)
    _fit_left_margin(fig, ax)
    return fig


def similarity_figure(
    features: np.ndarray,
    window_bounds: Sequence[tuple[int, int]],
    fps: float,
    title: str = "",
) -> "Figure":
    """Window-by-window cosine similarity of ``features`` ``(num_windows, D)``; axes
    labelled with each window's start time."""
    fig = _new_figure(SIMILARITY_SIZE_PX)
    ax = fig.add_axes((0.12, 0.1, 0.68, 0.8))
    fig.text(0.01, 0.98, title, ha="left", va="top", fontsize=9)
    if len(features) == 0:
        _empty_note(ax)
        return fig
    similarity = cosine_similarity_matrix(features)
    # Colours span the data's range up to 1: pooled ReLU features are all rather similar, and a fixed
    # [-1, 1] range would paint every matrix the same colour. The colour bar gives the numbers.
    vmin = min(float(similarity.min()), 1.0 - 1e-6)
    image = ax.imshow(similarity, vmin=vmin, vmax=1.0, cmap="viridis", interpolation="nearest")
    colorbar_ax = fig.add_axes((0.84, 0.1, 0.03, 0.8))
    fig.colorbar(image, cax=colorbar_ax, label="cosine similarity")

    from matplotlib.ticker import FuncFormatter, MaxNLocator  # noqa: PLC0415

    spans, unit = _time_axis(window_bounds, fps)
    starts = spans[:, 0]

    def start_label(value: float, _pos: int) -> str:
        i = int(round(value))
        if abs(value - i) > 1e-6 or not 0 <= i < len(starts):
            return ""
        return f"{starts[i]:.1f}" if unit == "s" else f"{starts[i]:.0f}"

    for axis in (ax.xaxis, ax.yaxis):
        axis.set_major_locator(MaxNLocator(nbins=8, integer=True))
        axis.set_major_formatter(FuncFormatter(start_label))
    name = f"window start ({unit})" if unit == "s" else "window start (frame)"
    ax.set_xlabel(name)
    ax.set_ylabel(name)
    _fit_left_margin(fig, ax)
    return fig


def _tab10() -> list:
    from matplotlib import colormaps  # noqa: PLC0415

    return list(colormaps["tab10"].colors)


def save_png(fig: "Figure", path: str | os.PathLike) -> Path:
    """Write ``fig`` as a PNG of exactly its figure size in pixels, atomically."""
    return atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=DPI))


def plot_paths(folder: str | os.PathLike, video_path: str, video_root: str | None = None) -> dict[str, Path]:
    """``{"top1_timeline": <folder>/<video id>_top1_timeline.png, "similarity": <folder>/<video id>_similarity.png}``
    (video id: :func:`utils.outputs.output_paths.video_id`)."""
    return {name: output_file(folder, video_path, video_root, suffix) for name, suffix in PLOT_SUFFIXES.items()}


def save_video_plots(
    folder: str | os.PathLike,
    video_path: str,
    features: np.ndarray,
    window_bounds: Sequence[tuple[int, int]],
    fps: float,
    logits: np.ndarray,
    labels: Sequence[str],
    title: str = "",
    video_root: str | None = None,
) -> list[Path]:
    """Draw both pictures of one video into ``folder``; returns the PNG paths."""
    paths = plot_paths(folder, video_path, video_root)
    return [
        save_png(top1_timeline_figure(window_bounds, fps, logits, labels, title), paths["top1_timeline"]),
        save_png(similarity_figure(features, window_bounds, fps, title), paths["similarity"]),
    ]
