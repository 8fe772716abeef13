"""Helpers every audit figure shares: figures and saving, report lookups, colours, labels.

Figures live on their own Agg canvas (:func:`_new_figure`), never in pyplot's
registry.  :func:`_get` and :func:`_number` read report.json entries that may
lack a level or hold a non-finite value.  :func:`choose_label_offsets` places
point labels clear of markers and of each other (pure arithmetic in display
pixels); :func:`_place_labels` applies it to an axes.  Matplotlib is imported
inside the functions.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

DPI = 120
_NICE_STEPS = (1.0, 2.0, 5.0)


# ----------------------------------------------------------------- shared helpers


def _new_figure(width: float, height: float) -> Figure:
    """Return a figure on its own Agg canvas (not registered with pyplot)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=DPI)
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fig.savefig(path, dpi=DPI, bbox_inches="tight", pad_inches=0.15,
                    metadata={"Software": None})
    finally:
        fig.clear()  # free the artists now; the figure is not referenced elsewhere
    return path


def _get(mapping: Any, *keys: str) -> Any:
    """``mapping[k1][k2]...``, or ``None`` when any level is missing or not a dict."""
    for key in keys:
        if not isinstance(mapping, dict):
            return None
        mapping = mapping.get(key)
    return mapping


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def _interval_text(interval: Any) -> str:
    """`` [low, high]`` of a report's ``*_ci`` pair, or ``""`` when it is null or malformed."""
    if not isinstance(interval, (list, tuple)) or len(interval) != 2:
        return ""
    low, high = (_number(v) for v in interval)
    return "" if low is None or high is None else f" [{low:.3f}, {high:.3f}]"


def _ok_runs(runs: Sequence[dict[str, Any]]) -> tuple[list[dict[str, Any]], int]:
    """Return the runs that finished, and how many did not."""
    ok = [r for r in runs if r.get("status", "ok") == "ok"]
    return ok, len(runs) - len(ok)


def _run_colors(names: Sequence[str]) -> dict[str, Any]:
    """One colour per run name, the same in every figure of a report."""
    from matplotlib import colormaps

    if len(names) <= 10:
        cmap, n = colormaps["tab10"], 10
    elif len(names) <= 20:
        cmap, n = colormaps["tab20"], 20
    else:
        cmap, n = colormaps["turbo"], len(names)
    return {name: cmap(i / max(n - 1, 1) if n > 20 else i) for i, name in enumerate(names)}


def _font_size(n_labels: int) -> float:
    return 8.0 if n_labels <= 12 else 7.0 if n_labels <= 30 else 6.0


def _note(ax: Axes, text: str) -> None:
    ax.text(0.5, 0.5, text, transform=ax.transAxes, ha="center", va="center",
            fontsize=11, color="0.35", wrap=True)


def _nice_ticks(lo: float, hi: float, *, log: bool) -> list[float]:
    """Round tick values (1, 2, 5 × 10^k on a log axis) within ``[lo, hi]``."""
    if log:
        ticks = [s * 10.0**k for k in range(math.floor(math.log10(lo)) - 1,
                                            math.ceil(math.log10(hi)) + 1) for s in _NICE_STEPS]
        inside = [t for t in ticks if lo <= t * (1 + 1e-9) and t <= hi * (1 + 1e-9)]
        return inside if len(inside) <= 8 else [t for t in inside
                                                 if math.isclose(t, 10 ** round(math.log10(t)))]
    from matplotlib.ticker import MaxNLocator

    return [float(t) for t in MaxNLocator(6).tick_values(lo, hi) if lo <= t <= hi]


_Box = tuple[float, float, float, float]
"""``(x0, y0, x1, y1)`` in display pixels."""

_LABEL_DIRECTIONS = ((1, 1), (1, -1), (-1, 1), (-1, -1), (0, 1), (0, -1), (1, 0), (-1, 0))
_LABEL_RADII = (4, 9, 15, 23, 33, 46, 62)
"""Offsets (points) tried around a point for its label, nearest first."""
_MARKER_HALF = 4.0
"""Half the side of the box a marker occupies, in points."""


def _overlap(a: _Box, b: _Box) -> float:
    width = min(a[2], b[2]) - max(a[0], b[0])
    height = min(a[3], b[3]) - max(a[1], b[1])
    return width * height if width > 0 and height > 0 else 0.0


def _label_box(anchor: tuple[float, float], size: tuple[float, float],
               offset: tuple[float, float]) -> _Box:
    """Return the box of a ``size`` text put at ``offset`` from ``anchor``, aligned away."""
    (ax_, ay), (w, h), (ox, oy) = anchor, size, offset
    x0 = ax_ + ox if ox > 0 else ax_ + ox - w if ox < 0 else ax_ - w / 2
    y0 = ay + oy if oy > 0 else ay + oy - h if oy < 0 else ay - h / 2
    return (x0, y0, x0 + w, y0 + h)


def choose_label_offsets(
    anchors: Sequence[tuple[float, float]], sizes: Sequence[tuple[float, float]],
    obstacles: Sequence[_Box], bounds: _Box, *, points_to_px: float = 1.0,
) -> list[tuple[float, float]]:
    """Greedily pick an offset (in points) for each label so that labels do not collide.

    Each label tries offsets in rings of growing radius around its anchor and
    takes the first whose box stays inside ``bounds`` and overlaps neither an
    obstacle (markers, legends) nor a label placed before it; failing that, the
    candidate with the least overlap.  Pure arithmetic in display pixels, so the
    same input always gives the same layout.

    Args:
        anchors: The labelled points, in pixels.
        sizes: Width and height of each label, in pixels.
        obstacles: Boxes to keep clear, in pixels.
        bounds: The box labels must stay inside (the axes).
        points_to_px: Pixels per point (``dpi / 72``).

    Returns:
        One ``(dx, dy)`` offset in points per label.
    """
    taken = list(obstacles)
    chosen: list[tuple[float, float]] = []
    candidates = [(float(dx * r), float(dy * r))
                  for r in _LABEL_RADII for dx, dy in _LABEL_DIRECTIONS]
    for anchor, size in zip(anchors, sizes, strict=True):
        best, best_cost = candidates[0], math.inf
        for offset in candidates:
            box = _label_box(anchor, size, (offset[0] * points_to_px, offset[1] * points_to_px))
            if box[0] < bounds[0] or box[1] < bounds[1] or box[2] > bounds[2] \
                    or box[3] > bounds[3]:
                continue
            cost = sum(_overlap(box, other) for other in taken)
            if cost < best_cost:
                best, best_cost = offset, cost
                if cost == 0:
                    break
        chosen.append(best)
        taken.append(_label_box(anchor, size, (best[0] * points_to_px, best[1] * points_to_px)))
    return chosen


def _place_labels(ax: Axes, labels: Sequence[tuple[float, float, str, Any]],
                  markers: Sequence[tuple[float, float]], fontsize: float) -> None:
    """Write each ``(x, y, text, colour)`` label beside its point, clear of ``markers``.

    Call once the axes' limits and the figure's layout are final: placement is
    worked out in display space (:func:`choose_label_offsets`).  A label put
    further than a marker's width from its point gets a thin leader line.
    """
    from matplotlib.font_manager import FontProperties

    fig = ax.get_figure()
    if fig is None or not labels:
        return
    renderer = fig.canvas.get_renderer()  # type: ignore[attr-defined]
    px = fig.dpi / 72.0
    font = FontProperties(size=fontsize)
    pad = 1.5 * px
    sizes = []
    for _, _, text, _ in labels:
        width, height, _ = renderer.get_text_width_height_descent(text, font, ismath=False)
        sizes.append((width + 2 * pad, height + 2 * pad))
    to_px = ax.transData.transform
    anchors = [tuple(to_px((x, y))) for x, y, _, _ in labels]
    half = _MARKER_HALF * px
    obstacles = [(mx - half, my - half, mx + half, my + half)
                 for mx, my in (tuple(to_px(m)) for m in markers)]
    legend = ax.get_legend()
    if legend is not None:
        extent = legend.get_window_extent(renderer)
        obstacles.append((extent.x0, extent.y0, extent.x1, extent.y1))
    box = ax.get_window_extent(renderer)
    offsets = choose_label_offsets(anchors, sizes, obstacles, (box.x0, box.y0, box.x1, box.y1),
                                   points_to_px=px)
    for (x, y, text, color), (dx, dy) in zip(labels, offsets, strict=True):
        ha = "left" if dx > 0 else "right" if dx < 0 else "center"
        va = "bottom" if dy > 0 else "top" if dy < 0 else "center"
        far = max(abs(dx), abs(dy)) > _LABEL_RADII[1]
        ax.annotate(text, (x, y), xytext=(dx, dy), textcoords="offset points", ha=ha, va=va,
                    fontsize=fontsize, color=color, annotation_clip=False,
                    arrowprops={"arrowstyle": "-", "color": color, "lw": 0.5, "alpha": 0.7,
                                "shrinkA": 0, "shrinkB": 3} if far else None)
