"""The gradient-inversion table (``inversion.png``): original vs recovered texts per run.

:func:`inversion_rows` picks and cuts (and, when asked, redacts) the rows;
:func:`plot_inversion` renders them as a table figure.
"""

from __future__ import annotations

import textwrap
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from fedpriv.audits.plots.common import _get, _new_figure, _number, _ok_runs, _save

MAX_EXAMPLES_PER_RUN = 2
"""Inversion examples shown per run."""
MAX_TEXT_CHARS = 160
"""Longest original / recovered text shown in the inversion table (longer ones are cut)."""
MAX_TABLE_ROWS = 60
"""Rows of the inversion table; the rest are counted in a closing note."""


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
