"""The privacy–utility frontier figure (``frontier.png``).

Two panels against held-out perplexity: ε (theoretical, best one-run lower
bound, canary estimate) and measured leakage (MIA ROC AUC, inversion
ROUGE-1).  :func:`best_lower_bound` picks the bound the report's summary table
shows too.  ``fedpriv sweep`` draws the runs of every grid cell here.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fedpriv.audits.plots.common import (
    _font_size,
    _get,
    _new_figure,
    _nice_ticks,
    _note,
    _number,
    _ok_runs,
    _place_labels,
    _run_colors,
    _save,
)

if TYPE_CHECKING:
    from matplotlib.axes import Axes

_DP_MARKERS = {"none": "X", "sample": "o", "user": "s", "distributed": "D"}


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
