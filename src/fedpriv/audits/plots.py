"""Figures of an audit drawn from report.json: privacy–utility frontier, ROC curves, inversions.

Every function takes run entries as they stand in report.json's ``runs`` list
(so ``fedpriv report`` can redraw an old audit, and ``fedpriv sweep`` can pass
the runs of every grid cell) and writes one PNG.  Runs that failed, or lack a
figure, are left out of a panel rather than failing it.

Matplotlib is imported inside the functions (``import fedpriv`` stays light)
and used through its object API on an Agg canvas: no pyplot, so no global
backend switch and no figure registry to leak into.
"""

from __future__ import annotations

import logging
import math
import textwrap
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

logger = logging.getLogger(__name__)

DPI = 120
MAX_EXAMPLES_PER_RUN = 2
"""Inversion examples shown per run."""
MAX_TEXT_CHARS = 160
"""Longest original / recovered text shown in the inversion table (longer ones are cut)."""
MAX_TABLE_ROWS = 60
"""Rows of the inversion table; the rest are counted in a closing note."""
ROC_MIN_FPR = 1e-3

_DP_MARKERS = {"none": "X", "sample": "o", "user": "s", "distributed": "D"}
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


# ----------------------------------------------------------------- frontier


def _frontier_points(runs: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Return the numbers the frontier needs from each run with a perplexity."""
    points = []
    for run in runs:
        ppl = _number(_get(run, "utility", "perplexity"))
        if ppl is None:
            continue
        points.append({
            "name": str(run.get("name", "?")),
            "dp": str(_get(run, "dp", "mode") or "none"),
            "ppl": ppl,
            "base": _number(_get(run, "utility", "base_perplexity")),
            "epsilon": _number(_get(run, "privacy", "epsilon")),
            "delta": _number(_get(run, "privacy", "delta")),
            "unit": _get(run, "privacy", "unit"),
            "auc": _number(_get(run, "leakage", "mia", "auc")),
            "rouge1": _number(_get(run, "leakage", "inversion", "rouge1")),
            "emp_eps": best_lower_bound(run),
            "estimate": _number(_get(run, "leakage", "client_audit", "observations",
                                     "all_rounds", "epsilon_estimate")),
            "confidence": _number(_get(run, "leakage", "epsilon_audit", "confidence")
                                  or _get(run, "leakage", "client_audit", "confidence")
                                  or _get(run, "leakage", "gradient_audit", "confidence")),
        })
    return points


def best_lower_bound(run: dict[str, Any]) -> float | None:
    """Return the largest one-run (ε, δ) lower bound of any of the run's audits (None: none)."""
    bounds = [_number(_get(run, "leakage", "empirical_epsilon")),
              _number(_get(run, "leakage", "client_audit", "epsilon_lower_bound")),
              _number(_get(run, "leakage", "gradient_audit", "epsilon_lower_bound"))]
    found = [b for b in bounds if b is not None]
    return max(found) if found else None


def _epsilon_label(points: Sequence[dict[str, Any]]) -> str:
    dp = [p for p in points if p["epsilon"] is not None]
    deltas = {p["delta"] for p in dp}
    units = {p["unit"] for p in dp}
    if not dp:
        delta = "no DP run"
    elif len(deltas) == 1 and None not in deltas:
        delta = f"δ={next(iter(deltas)):.0e}"
    else:
        delta = "δ per run in report.json"
    unit = f" per {next(iter(units))}" if len(units) == 1 and None not in units else ""
    return f"ε{unit} ({delta}; lower is more private)"


def _base_lines(axes: Sequence[Axes], points: Sequence[dict[str, Any]]) -> None:
    bases = sorted({round(p["base"], 6) for p in points if p["base"] is not None})
    for i, base in enumerate(bases):
        for ax in axes:
            ax.axvline(base, color="0.45", ls="--", lw=1.0, zorder=1,
                       label=f"base model ppl {base:.2f}" if i < 3 else None)


def _x_limits(axes: Sequence[Axes], points: Sequence[dict[str, Any]]) -> None:
    xs = [p["ppl"] for p in points] + [p["base"] for p in points if p["base"] is not None]
    lo, hi = min(xs), max(xs)
    span = max(hi - lo, 0.05 * max(abs(hi), 1.0))
    for ax in axes:
        ax.set_xlim(lo - 0.1 * span, hi + 0.12 * span)


def _legend_below(ax: Axes, ncol: int) -> None:
    """Put the legend under the axes, markers grey: colours stand for runs, shapes for figures."""
    import numpy as np
    from matplotlib.collections import PathCollection

    legend = ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.11), ncol=ncol, fontsize=8,
                       frameon=False, handletextpad=0.4, columnspacing=1.2)
    for handle in legend.legend_handles:
        if isinstance(handle, PathCollection):
            faces = np.asarray(handle.get_facecolor(), dtype=float).reshape(-1, 4)
            hollow = faces.size == 0 or faces[0, 3] == 0
            handle.set_edgecolor("0.25")
            handle.set_facecolor("none" if hollow else "0.65")


def _draw_epsilon_panel(ax: Axes, points: Sequence[dict[str, Any]], colors: dict[str, Any]
                        ) -> tuple[list[tuple[Any, ...]], list[tuple[float, float]]]:
    """ε against perplexity: theoretical ε (filled), best lower bound (hollow), estimate (×).

    Runs without DP sit on a row marked "no DP (ε=∞)" above a break of the axis.
    On a log axis an empirical ε of 0 sits on the bottom edge.
    """
    finite = [p["epsilon"] for p in points if p["epsilon"] is not None]
    emp = [p["emp_eps"] for p in points if p["emp_eps"] is not None]
    estimates = [p["estimate"] for p in points if p.get("estimate") is not None]
    values = finite + emp + estimates
    positive = [v for v in values if v > 0]
    log = bool(positive) and max(positive) / min(positive) > 8
    if positive or values:
        if log:
            lo, hi = min(positive) / 1.6, max(positive) * 1.6
            inf_y, gap_y, top = hi * 3.0, hi * math.sqrt(3.0), hi * 3.0 * 1.7
            ax.set_yscale("log")
        else:
            lo, hi = 0.0, max(max(values, default=1.0) * 1.12, 0.1)
            inf_y, gap_y, top = hi * 1.22, hi * 1.11, hi * 1.32
        ticks = _nice_ticks(max(lo, 1e-12) if log else lo, hi, log=log)
        ax.set_ylim(lo, top)
    else:
        ticks, inf_y, gap_y, lo = [], 1.0, None, 0.0
        ax.set_ylim(0.0, 2.0)
    ax.set_yticks([*ticks, inf_y], [f"{t:g}" for t in ticks] + ["no DP\n(ε=∞)"])
    ax.minorticks_off()
    if gap_y is not None:
        # The axis is broken between the finite values and the ∞ row.
        ax.axhline(gap_y, color="0.6", lw=0.8, ls=(0, (1, 3)))
        ax.text(0.0, gap_y, "≈", transform=ax.get_yaxis_transform(), ha="center",
                va="center", fontsize=12, color="0.3", clip_on=False,
                bbox={"boxstyle": "square,pad=0.05", "fc": "white", "ec": "none"})
    seen: set[str] = set()
    labels, markers = [], []
    for p in points:
        color = colors[p["name"]]
        y = inf_y if p["epsilon"] is None else p["epsilon"]
        mode = "none" if p["epsilon"] is None else p["dp"]
        key = "no DP" if mode == "none" else f"theoretical ε, DP {mode}"
        ax.scatter([p["ppl"]], [y], s=46, marker=_DP_MARKERS.get(mode, "o"), color=color,
                   edgecolors="black", linewidths=0.5, zorder=3,
                   label=None if key in seen else key)
        seen.add(key)
        markers.append((p["ppl"], y))
        if p["emp_eps"] is not None:
            emp_y = p["emp_eps"] if not log or p["emp_eps"] > 0 else lo
            conf = f", {100 * p['confidence']:.0f}% conf." if p["confidence"] else ""
            floor = "; 0 on the bottom edge" if log and any(v == 0 for v in emp) else ""
            key = f"empirical ε lower bound (one-run audit{conf}{floor})"
            ax.scatter([p["ppl"]], [emp_y], s=46, marker="s", facecolors="none",
                       edgecolors=color, linewidths=1.4, zorder=3, clip_on=False,
                       label=None if key in seen else key)
            seen.add(key)
            ax.plot([p["ppl"]] * 2, [emp_y, y], color=color, lw=0.8, ls=":", zorder=2)
            markers.append((p["ppl"], emp_y))
        if p.get("estimate") is not None and (not log or p["estimate"] > 0):
            key = "ε estimate (canary clients, Andrew et al. 2024)"
            ax.scatter([p["ppl"]], [p["estimate"]], s=52, marker="x", color=color,
                       linewidths=1.4, zorder=3, label=None if key in seen else key)
            seen.add(key)
            markers.append((p["ppl"], p["estimate"]))
        labels.append((p["ppl"], y, p["name"], color))
    ax.set_ylabel(_epsilon_label(points))
    ax.set_xlabel("held-out perplexity (lower is better)")
    ax.set_title("privacy guarantee (ε) vs utility", fontsize=10)
    ax.grid(True, alpha=0.25)
    return labels, markers


LEAKAGE_SERIES: tuple[tuple[str, str, int, str], ...] = (
    ("auc", "o", 46, "MIA ROC AUC (released model)"),
    ("rouge1", "^", 52, "inversion ROUGE-1 (server's view)"),
)
"""The frontier's measured-leakage series: key, marker, marker size, legend label."""


def _draw_leakage_panel(ax: Axes, points: Sequence[dict[str, Any]], colors: dict[str, Any]
                        ) -> tuple[list[tuple[Any, ...]], list[tuple[float, float]]]:
    """Measured leakage against perplexity: MIA AUC (circles), inversion ROUGE-1 (triangles)."""
    ax.axhline(0.5, color="0.55", ls=":", lw=1.0, label="chance (AUC 0.5)", zorder=1)
    labels, markers = [], []
    drawn = {"auc": False, "rouge1": False}
    for p in points:
        color = colors[p["name"]]
        ys = []
        for key, marker, size, label in LEAKAGE_SERIES:
            if p[key] is None:
                continue
            ax.scatter([p["ppl"]], [p[key]], s=size, marker=marker, color=color, zorder=3,
                       edgecolors="black", linewidths=0.5, label=None if drawn[key] else label)
            drawn[key] = True
            ys.append(p[key])
        if len(ys) > 1:
            ax.plot([p["ppl"]] * 2, [min(ys), max(ys)], color=color, lw=0.8, alpha=0.6,
                    zorder=2)
        markers += [(p["ppl"], y) for y in ys]
        if ys:
            labels.append((p["ppl"], max(ys), p["name"], color))
    ax.set_ylim(-0.03, 1.05)
    ax.set_ylabel("MIA ROC AUC (0.5 = chance), circles\n"
                  "inversion ROUGE-1 (0 = nothing recovered), triangles")
    ax.set_xlabel("held-out perplexity (lower is better)")
    ax.set_title("measured leakage vs utility", fontsize=10)
    ax.grid(True, alpha=0.25)
    if not (drawn["auc"] or drawn["rouge1"]):
        _note(ax, "no leakage measured in these runs")
    return labels, markers


def plot_frontier(runs: Sequence[dict[str, Any]], path: Path, *, title: str) -> Path:
    """Draw the privacy–utility frontier of ``runs`` (report.json run entries) into ``path``.

    Left: ε against held-out perplexity -- the theoretical ε (filled markers,
    shape by DP mode; runs without DP on a row marked "no DP (ε=∞)" above a
    break of the axis) and, where the report has one, the empirical ε lower
    bound of the one-run audit (hollow squares on the same axis, joined to the
    run's ε by a dotted line: a bound above the guarantee would refute it).
    Right: measured leakage against the same perplexity -- MIA ROC AUC
    (circles) and gradient-inversion ROUGE-1 (triangles).  Dashed vertical line:
    the base model's perplexity.  Each run keeps one colour and is labelled with
    its name.  Failed runs and runs without a perplexity are left out (counted
    in a note under the figure).

    Returns:
        ``path``.
    """
    ok, failed = _ok_runs(runs)
    points = _frontier_points(ok)
    skipped = failed + len(ok) - len(points)
    fontsize = _font_size(len(points))
    height = 6.2 if len(points) <= 15 else 6.2 + min(0.1 * (len(points) - 15), 4.0)
    fig = _new_figure(15.0, height)
    left, right = fig.subplots(1, 2)
    if not points:
        for ax in (left, right):
            _note(ax, "no finished run with a held-out perplexity in the report")
            ax.set_axis_off()
        fig.suptitle(title)
        return _save(fig, path)
    colors = _run_colors([p["name"] for p in points])
    _base_lines((left, right), points)
    left_labels, left_markers = _draw_epsilon_panel(left, points, colors)
    right_labels, right_markers = _draw_leakage_panel(right, points, colors)
    _x_limits((left, right), points)
    _legend_below(left, 2)
    _legend_below(right, 2)
    fig.suptitle(title)
    if skipped:
        fig.text(0.5, 0.0, f"{skipped} run(s) left out: failed or no held-out perplexity",
                 ha="center", va="top", fontsize=8, color="0.35")
    fig.tight_layout()
    _place_labels(left, left_labels, left_markers, fontsize)
    _place_labels(right, right_labels, right_markers, fontsize)
    return _save(fig, path)


# ----------------------------------------------------------------- ROC


def _roc_arrays(roc: Any) -> tuple[list[float], list[float]] | None:
    """Return ``(fpr, tpr)`` lists from ``{"fpr": [...], "tpr": [...]}`` or ``[[f, t], ...]``."""
    try:
        if isinstance(roc, dict):
            fpr = [float(f) for f in roc["fpr"]]
            tpr = [float(t) for t in roc["tpr"]]
        elif isinstance(roc, list):
            fpr = [float(point[0]) for point in roc]
            tpr = [float(point[1]) for point in roc]
        else:
            return None
    except (KeyError, TypeError, ValueError, IndexError):
        return None
    if not fpr or len(fpr) != len(tpr):
        return None
    return fpr, tpr


def plot_roc(runs: Sequence[dict[str, Any]], path: Path, *, title: str) -> Path:
    """Draw each run's membership-inference ROC curve (``leakage.mia.roc``) into ``path``.

    The FPR axis is logarithmic from 10⁻³ to 1 (the low-FPR regime is where an
    attack is useful); the dotted curve is chance (TPR = FPR).  The legend
    gives each run's name, the attack plotted (the strongest) and its AUC
    with its confidence interval.  Runs without ROC points are left out; with
    none at all, the figure says so.

    Returns:
        ``path``.
    """
    import numpy as np

    ok, _ = _ok_runs(runs)
    curves = []
    for run in ok:
        mia = _get(run, "leakage", "mia")
        arrays = _roc_arrays(_get(mia, "roc"))
        if arrays is not None:
            curves.append((str(run.get("name", "?")), mia, arrays))
    fig = _new_figure(8.5 if len(curves) <= 12 else 11.0, 6.0)
    ax = fig.subplots()
    grid = np.geomspace(ROC_MIN_FPR, 1.0, 100)
    ax.plot(grid, grid, color="0.5", ls=":", lw=1.0, label="chance (TPR = FPR)")
    colors = _run_colors([name for name, _, _ in curves])
    for i, (name, mia, (fpr, tpr)) in enumerate(curves):
        # FPR 0 cannot sit on a log axis: draw it just left of the visible range.
        x = np.maximum(np.asarray(fpr), ROC_MIN_FPR / 10)
        auc = _number(mia.get("auc"))
        attack = mia.get("attack")
        label = name + (f" — {attack}" if attack else "") + \
            (f" (AUC {auc:.3f}{_interval_text(mia.get('auc_ci'))})" if auc is not None else "")
        # Beyond ten runs neighbouring colours are close: line styles tell them apart.
        style = ("-", "--", "-.", ":")[i % 4] if len(curves) > 10 else "-"
        ax.plot(x, tpr, color=colors[name], lw=1.6 if len(curves) <= 10 else 1.1, ls=style,
                drawstyle="steps-post", label=label)
    counts = {_number(mia.get("n_nonmembers")) for _, mia, _ in curves}
    if len(counts) == 1 and (n := counts.pop()) is not None and n * ROC_MIN_FPR < 1:
        # Left of 1/n the curve is flat by construction: no threshold separates less.
        ax.axvline(1 / n, color="0.7", lw=0.8, ls="--",
                   label=f"smallest measurable FPR (1/{n:.0f} non-members)")
    ax.set_xscale("log")
    ax.set_xlim(ROC_MIN_FPR, 1.0)
    ax.set_ylim(0.0, 1.01)
    ax.set_xlabel("false positive rate (non-members flagged, log scale)")
    ax.set_ylabel("true positive rate (members found)")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.25)
    if not curves:
        _note(ax, "no ROC points in report")
    if len(curves) <= 12:
        ax.legend(loc="upper left", fontsize=8, framealpha=0.85)
    else:
        ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=6.5,
                  ncol=1 + len(curves) // 30, framealpha=0.85)
    fig.tight_layout()
    return _save(fig, path)


# ----------------------------------------------------------------- inversion


def _cut(text: str, limit: int = MAX_TEXT_CHARS) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def inversion_rows(runs: Sequence[dict[str, Any]], redact: bool) -> list[tuple[str, str, str]]:
    """Rows ``(run, original, recovered)`` of the inversion table, texts cut and maybe redacted.

    At most :data:`MAX_EXAMPLES_PER_RUN` examples per run, taken in turn from
    each observation (e.g. client 0's then client 1's update).  The run cell
    names the run, what the server observed and the ROUGE-1 of that
    observation.  An observation without examples gives one row saying so.

    Args:
        runs: report.json run entries; failed runs and runs without
            ``leakage.inversion`` are skipped.
        redact: Pass every original and recovered text through
            :func:`fedpriv.attacks.metrics.redact`
            (e-mail addresses and digits masked; idempotent).  ``False`` shows
            what the report holds (already redacted unless the audit chose not to).

    Returns:
        One tuple of display strings per row.
    """
    from fedpriv.attacks.metrics import redact as redact_text

    show: Callable[[str], str] = redact_text if redact else (lambda s: s)
    rows: list[tuple[str, str, str]] = []
    ok, _ = _ok_runs(runs)
    for run in ok:
        inversion = _get(run, "leakage", "inversion")
        if not isinstance(inversion, dict):
            continue
        name = str(run.get("name", "?"))
        observations = [o for o in inversion.get("observations") or [] if isinstance(o, dict)]
        if not observations:
            reason = inversion.get("error") or "no observation in report"
            rows.append((f"{name} · {inversion.get('observed', '?')}", "—",
                         f"({_cut(str(reason))})"))  # fedpriv's own message, not data
            continue
        queues = []
        for obs in observations:
            rouge = _number(obs.get("rouge1"))
            cell = f"{name} · {obs.get('observed', '?')}" + \
                (f" · ROUGE-1 {rouge:.2f}" if rouge is not None else "")
            examples = [e for e in obs.get("examples") or [] if isinstance(e, dict)]
            queues.append((cell, examples))
        picked: list[tuple[str, str, str]] = []
        depth = 0
        while len(picked) < MAX_EXAMPLES_PER_RUN and any(len(ex) > depth for _, ex in queues):
            for cell, examples in queues:
                if depth < len(examples) and len(picked) < MAX_EXAMPLES_PER_RUN:
                    example = examples[depth]
                    picked.append((cell, show(_cut(str(example.get("original", "")))),
                                   show(_cut(str(example.get("recovered", ""))))))
            depth += 1
        if not picked:
            picked = [(cell, "—", "(nothing recovered)")
                      for cell, _ in queues[:MAX_EXAMPLES_PER_RUN]]
        rows.extend(picked)
    return rows


def plot_inversion(runs: Sequence[dict[str, Any]], path: Path, *, title: str,
                   redact: bool) -> Path:
    """Render a table of original vs recovered texts of each run's gradient inversion.

    Rows come from :func:`inversion_rows` (``redact`` as there); long texts are
    cut to :data:`MAX_TEXT_CHARS` characters and wrapped.

    Returns:
        ``path``.
    """
    rows = inversion_rows(runs, redact)
    hidden = max(len(rows) - MAX_TABLE_ROWS, 0)
    rows = rows[:MAX_TABLE_ROWS]
    widths = (34, 58, 58)  # characters per column (monospace)
    header = ("run · what the server observed", "original text (truth)",
              "recovered by the attack")
    wrapped = [[textwrap.wrap(cell, width) or [""] for cell, width in zip(row, widths,
                                                                         strict=True)]
               for row in rows]
    line_h = 0.16  # inches per text line at 8.5 pt
    row_lines = [max(len(c) for c in cells) for cells in wrapped]
    body_h = sum(n * line_h + 0.14 for n in row_lines)
    height = 1.1 + line_h + 0.2 + max(body_h, 0.6) + (0.3 if hidden else 0)
    fig = _new_figure(15.0, height)
    ax = fig.add_axes((0.01, 0.0, 0.98, 1.0))
    ax.set_axis_off()
    ax.set_xlim(0.0, 1.0)
    ax.set_ylim(height, 0.0)  # y in inches from the top
    col_x = (0.005, 0.30, 0.65)
    ax.text(0.5, 0.35, title + ("" if redact else "  (not redacted)"), ha="center",
            va="center", fontsize=12)
    y = 0.8
    for x, text in zip(col_x, header, strict=True):
        ax.text(x, y, text, ha="left", va="top", fontsize=9, fontweight="bold")
    y += line_h + 0.12
    ax.axhline(y - 0.06, color="0.3", lw=0.8)
    if not rows:
        ax.text(0.5, y + 0.3, "no gradient inversion in report", ha="center", va="center",
                fontsize=11, color="0.35")
    for i, (cells, n_lines) in enumerate(zip(wrapped, row_lines, strict=True)):
        row_h = n_lines * line_h + 0.14
        if i % 2 == 0:
            ax.axhspan(y - 0.04, y - 0.04 + row_h, color="0.94", zorder=0)
        for x, lines in zip(col_x, cells, strict=True):
            ax.text(x, y + 0.03, "\n".join(lines), ha="left", va="top", fontsize=8.5,
                    family="monospace", linespacing=1.25)
        y += row_h
    if hidden:
        ax.text(0.005, y + 0.1, f"… {hidden} more row(s) in report.json", ha="left",
                va="top", fontsize=8.5, color="0.35")
    return _save(fig, path)


# ----------------------------------------------------------------- all plots


PLOT_FILES = {
    "frontier.png": "privacy–utility frontier: ε (theoretical, and the empirical lower bound) "
                    "and measured leakage (MIA ROC AUC, inversion ROUGE-1) against held-out "
                    "perplexity, one labelled point per run",
    "roc.png": "membership-inference ROC curve of each run (its strongest attack), on a "
               "log-scale false positive rate",
    "inversion.png": "gradient inversion (DAGER) on the FedSGD probe round: original vs "
                     "recovered texts, as the server could read them",
}
"""The figures :func:`write_plots` writes, with what each shows."""


def write_plots(report: dict[str, Any], out_dir: Path, *, redact: bool = True) -> list[Path]:
    """Write ``frontier.png``, ``roc.png`` and ``inversion.png`` of ``report`` into ``out_dir``.

    A figure that fails is logged as a warning and skipped; the others are still
    written.

    Returns:
        The paths written.
    """
    runs = report.get("runs") or []
    name = _get(report, "config", "name") or "audit"
    jobs: list[tuple[str, Callable[[Path], Path]]] = [
        ("frontier.png", lambda p: plot_frontier(
            runs, p, title=f"fedpriv audit '{name}' — privacy–utility frontier")),
        ("roc.png", lambda p: plot_roc(
            runs, p, title=f"fedpriv audit '{name}' — membership inference ROC")),
        ("inversion.png", lambda p: plot_inversion(
            runs, p, title=f"fedpriv audit '{name}' — gradient inversion (DAGER, FedSGD probe)",
            redact=redact)),
    ]
    written = []
    for filename, draw in jobs:
        try:
            written.append(draw(out_dir / filename))
        except Exception as err:  # a figure is a convenience: never lose the others
            logger.warning("could not draw %s: %s: %s", filename, type(err).__name__, err)
    return written
