"""The membership-inference ROC figure (``roc.png``): one curve per run, log-scale FPR."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fedpriv.audits.plots.common import (
    _get,
    _interval_text,
    _new_figure,
    _note,
    _number,
    _ok_runs,
    _run_colors,
    _save,
)

ROC_MIN_FPR = 1e-3


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
