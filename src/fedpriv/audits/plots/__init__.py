"""Figures of an audit drawn from report.json: privacy–utility frontier, ROC curves, inversions.

Every function takes run entries as they stand in report.json's ``runs`` list
(so ``fedpriv report`` can redraw an old audit, and ``fedpriv sweep`` can pass
the runs of every grid cell) and writes one PNG.  Runs that failed, or lack a
figure, are left out of a panel rather than failing it.

This package owns :data:`PLOT_FILES` and :func:`write_plots`, which draws them
all; each figure lives in its own module (:mod:`.frontier`, :mod:`.roc`,
:mod:`.inversion`) over the shared helpers of :mod:`.common`.

Matplotlib is imported inside the functions (``import fedpriv`` stays light)
and used through its object API on an Agg canvas: no pyplot, so no global
backend switch and no figure registry to leak into.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fedpriv.audits.plots.common import DPI, _get, choose_label_offsets
from fedpriv.audits.plots.frontier import LEAKAGE_SERIES, best_lower_bound, plot_frontier
from fedpriv.audits.plots.inversion import (
    MAX_EXAMPLES_PER_RUN,
    MAX_TABLE_ROWS,
    MAX_TEXT_CHARS,
    inversion_rows,
    plot_inversion,
)
from fedpriv.audits.plots.roc import ROC_MIN_FPR, plot_roc

__all__ = [
    "DPI",
    "LEAKAGE_SERIES",
    "MAX_EXAMPLES_PER_RUN",
    "MAX_TABLE_ROWS",
    "MAX_TEXT_CHARS",
    "PLOT_FILES",
    "ROC_MIN_FPR",
    "best_lower_bound",
    "choose_label_offsets",
    "inversion_rows",
    "plot_frontier",
    "plot_inversion",
    "plot_roc",
    "write_plots",
]

logger = logging.getLogger(__name__)


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
