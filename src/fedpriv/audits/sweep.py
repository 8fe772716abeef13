"""Grid sweeps of an audit: ``fedpriv sweep CONFIG --grid KEY=v1,v2 ...``.

This module owns the plan and the run of a sweep:

- :func:`prepare_sweep` expands the grid into cells
  (:mod:`fedpriv.audits.grid`: keys, values, cells, validated before any runs),
  reads which cells an earlier invocation finished from the ledger
  (:mod:`fedpriv.audits.ledger`: ``OUT/sweep.jsonl``) and preflights the rest.
- :func:`run_sweep` runs each pending cell as an ordinary audit
  (:func:`~fedpriv.audits.runner.run_audit`) in ``OUT/cells/<id>/`` and appends
  its record to the ledger before the next starts; at the end ``OUT/sweep.json``
  gathers every cell and ``OUT/frontier.png`` draws all their runs on one
  privacy–utility frontier.

The runner (and with it torch) is imported only when cells are checked or run,
so parsing a grid stays cheap.  The grid's and the ledger's public names are
re-exported here, where the CLI and the tests import them.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fedpriv import __version__
from fedpriv.audits.config import AuditConfig, to_dict
from fedpriv.audits.grid import (
    RUNS_PREFIX,
    GridAxis,
    SweepCell,
    Value,
    apply_cell,
    cell_id,
    cell_label,
    format_value,
    key_type,
    parse_axis,
    parse_grid,
    parse_value,
    plan_cells,
    sweepable_keys,
)
from fedpriv.audits.ledger import (
    _atomic_write_json,
    append_ledger,
    config_hash,
    drop_torn_tail,
    read_ledger,
)
from fedpriv.audits.progress import AuditProgress
from fedpriv.errors import ConfigError, FedprivError

__all__ = [
    "CELLS_DIR",
    "FRONTIER_NAME",
    "LEDGER_NAME",
    "RUNS_PREFIX",
    "SUMMARY_NAME",
    "SWEEP_SCHEMA",
    "GridAxis",
    "SweepCell",
    "SweepPlan",
    "SweepProgress",
    "Value",
    "append_ledger",
    "apply_cell",
    "build_summary",
    "cell_id",
    "cell_label",
    "config_hash",
    "drop_torn_tail",
    "format_value",
    "frontier_runs",
    "key_type",
    "parse_axis",
    "parse_grid",
    "parse_value",
    "plan_cells",
    "prepare_sweep",
    "read_ledger",
    "run_cell",
    "run_sweep",
    "sweepable_keys",
    "write_frontier",
]

logger = logging.getLogger(__name__)

SWEEP_SCHEMA = 1
LEDGER_NAME = "sweep.jsonl"
SUMMARY_NAME = "sweep.json"
FRONTIER_NAME = "frontier.png"
CELLS_DIR = "cells"


# ---------------------------------------------------------------------------- sweep


class SweepProgress:
    """Callbacks :func:`run_sweep` calls as it goes; the CLI overrides them to draw progress."""

    def cell_started(self, cell: SweepCell, index: int, total: int) -> None:
        """Announce that ``cell`` (the ``index``-th of ``total`` to run now) starts."""

    def audit_progress(self, cell: SweepCell) -> AuditProgress:
        """Return the progress callbacks of the audit that runs ``cell``."""
        return AuditProgress()

    def cell_finished(self, cell: SweepCell, record: dict[str, Any]) -> None:
        """Report that ``cell`` finished (its ledger record, status ok or failed)."""


@dataclass(frozen=True)
class SweepPlan:
    """A checked sweep: its cells, and which of them an earlier invocation finished."""

    config: AuditConfig
    axes: tuple[GridAxis, ...]
    cells: tuple[SweepCell, ...]
    out_dir: Path
    finished: dict[str, dict[str, Any]]
    """Ledger records of this grid's cells that are done (skipped when run), by id."""

    @property
    def pending(self) -> tuple[SweepCell, ...]:
        """Cells still to run, in grid order."""
        return tuple(c for c in self.cells if c.id not in self.finished)

    @property
    def ledger_path(self) -> Path:
        """``OUT/sweep.jsonl``."""
        return self.out_dir / LEDGER_NAME


def prepare_sweep(
    config: AuditConfig, axes: Sequence[GridAxis], out_dir: str | Path, *,
    retry_failed: bool = False, preflight: bool = True,
) -> SweepPlan:
    """Build every cell of the grid ``axes`` and check them all; read what already finished.

    Raises :class:`ConfigError` (nothing written) for an invalid cell or a
    ledger in ``out_dir`` written for another base config.  With ``preflight``
    each cell still to run also goes through
    :func:`fedpriv.audits.runner.preflight` (protocols, device, reachable ε).
    Failed cells count as finished unless ``retry_failed``.
    """
    axes = tuple(axes)
    cells = plan_cells(config, axes)
    out = Path(out_dir)
    ledger = out / LEDGER_NAME
    base_hash = config_hash(config)
    records = read_ledger(ledger)
    foreign = [r for r in records if r.get("config_hash") != base_hash]
    if foreign:
        raise ConfigError(f"'{ledger}' holds cells of another base config (it changed since "
                          f"they ran); use another --out, or delete '{ledger}' to start again")
    latest = {r["id"]: r for r in records}
    ids = {c.id for c in cells}
    finished = {
        i: r for i, r in latest.items()
        if i in ids and (r.get("status") == "ok" or not retry_failed)
    }
    plan = SweepPlan(config=config, axes=axes, cells=cells, out_dir=out, finished=finished)
    if preflight:
        from fedpriv.audits.runner import preflight as preflight_config

        for cell in plan.pending:
            try:
                preflight_config(cell.config)
            except FedprivError as err:
                raise ConfigError(f"grid cell {cell.label}: {err}") from None
    return plan


def _cell_record(
    cell: SweepCell, base_hash: str, status: str, error: str | None, wall_s: float,
    runs: list[dict[str, Any]],
) -> dict[str, Any]:
    return {
        "id": cell.id,
        "label": cell.label,
        "overrides": cell.overrides_dict(),
        "status": status,
        "error": error,
        "wall_s": wall_s,
        "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "config_hash": base_hash,
        "out": f"{CELLS_DIR}/{cell.id}",
        "runs": runs,
    }


def run_cell(cell: SweepCell, out_dir: Path, base_hash: str,
             progress: AuditProgress | None = None, engine: str = "inprocess") -> dict[str, Any]:
    """Run ``cell``'s audit in ``out_dir/cells/<id>/`` and return its ledger record.

    A run that fails inside the audit leaves the cell ``failed`` with its runs;
    a :class:`FedprivError` (or a ``RuntimeError`` such as running out of
    memory) that stops the whole audit gives a ``failed`` record with no runs.
    Leftovers of an interrupted earlier attempt are overwritten.  ``engine``
    aggregates the rounds (:data:`fedpriv.audits.runner.ENGINES`).
    """
    from fedpriv.audits.runner import audit_engine

    run_audit = audit_engine(engine)
    started = time.perf_counter()
    try:
        report = run_audit(cell.config, out_dir / CELLS_DIR / cell.id, overwrite=True,
                           progress=progress)
    except (FedprivError, RuntimeError) as err:
        logger.error("grid cell %s failed: %s", cell.label, err)
        return _cell_record(cell, base_hash, "failed", f"{type(err).__name__}: {err}",
                            time.perf_counter() - started, [])
    runs: list[dict[str, Any]] = report["runs"]
    failed = [r["name"] for r in runs if r["status"] != "ok"]
    return _cell_record(
        cell, base_hash, "failed" if failed else "ok",
        f"run(s) failed: {', '.join(failed)}" if failed else None,
        time.perf_counter() - started, runs,
    )


def frontier_runs(
    records: Sequence[Mapping[str, Any]], keys: Sequence[str] | None = None,
) -> list[dict[str, Any]]:
    """Every run of every cell, its name prefixed with the cell's label.

    With ``keys`` (the axes that take more than one value) the label shows
    only those, so settings shared by every cell do not crowd the figure.
    """
    def label(record: Mapping[str, Any]) -> str:
        shown = {k: v for k, v in record.get("overrides", {}).items() if k in (keys or ())}
        return cell_label(shown) if shown else str(record["label"])

    return [
        {**run, "name": f"{label(record)}/{run['name']}"}
        for record in records for run in record.get("runs", [])
    ]


def write_frontier(
    records: Sequence[Mapping[str, Any]], path: Path, *, title: str,
    keys: Sequence[str] | None = None,
) -> Path | None:
    """Draw the runs of all cells on one frontier; on any failure log a warning, return None."""
    runs = frontier_runs(records, keys)
    if not runs:
        return None
    try:
        from fedpriv.audits.plots import plot_frontier
    except ImportError as err:
        logger.warning("no frontier plot: fedpriv.audits.plots is not available (%s)", err)
        return None
    try:
        return plot_frontier(runs, path, title=title)
    except Exception as err:  # a figure is a nice-to-have: never lose a sweep over it
        logger.warning("no frontier plot: plotting failed with %s: %s", type(err).__name__, err)
        return None


def build_summary(plan: SweepPlan, records: Mapping[str, Mapping[str, Any]],
                  frontier: Path | None) -> dict[str, Any]:
    """``sweep.json``: the base config, the grid and every cell's record, in grid order."""
    return {
        "schema": SWEEP_SCHEMA,
        "fedpriv_version": __version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "config_name": plan.config.name,
        "config_hash": config_hash(plan.config),
        "config": to_dict(plan.config),
        "grid": {a.key: list(a.values) for a in plan.axes},
        "cells": [records[c.id] for c in plan.cells if c.id in records],
        "frontier": None if frontier is None else frontier.name,
    }


def run_sweep(plan: SweepPlan, *, progress: SweepProgress | None = None,
              engine: str = "inprocess", stop: Callable[[], bool] | None = None,
              ) -> dict[str, Any]:
    """Run the plan's pending cells one by one; write ``sweep.json`` and ``frontier.png``.

    Each finished cell is appended to the ledger before the next one starts, so
    an interruption (``KeyboardInterrupt`` propagates) loses only the cell in
    flight.  ``stop`` is asked before each cell: when it returns true, the sweep
    raises ``KeyboardInterrupt`` there (an interrupt whose exception was lost
    still stops it).  Returns the summary written to ``sweep.json``.
    """
    progress = progress or SweepProgress()
    plan.out_dir.mkdir(parents=True, exist_ok=True)
    cut = drop_torn_tail(plan.ledger_path)
    if cut:
        logger.warning("%s: dropped a torn last line (%d bytes)", plan.ledger_path, cut)
    base_hash = config_hash(plan.config)
    records: dict[str, dict[str, Any]] = dict(plan.finished)
    pending = plan.pending
    for index, cell in enumerate(pending):
        if stop is not None and stop():
            raise KeyboardInterrupt
        progress.cell_started(cell, index, len(pending))
        record = run_cell(cell, plan.out_dir, base_hash, progress.audit_progress(cell),
                          engine=engine)
        append_ledger(plan.ledger_path, record)
        records[cell.id] = record
        progress.cell_finished(cell, record)
    ordered = [records[c.id] for c in plan.cells if c.id in records]
    title = f"fedpriv sweep — {plan.config.name}: {' × '.join(a.key for a in plan.axes)}"
    varying = [a.key for a in plan.axes if len(a.values) > 1]
    frontier = write_frontier(ordered, plan.out_dir / FRONTIER_NAME, title=title, keys=varying)
    summary = build_summary(plan, records, frontier)
    _atomic_write_json(plan.out_dir / SUMMARY_NAME, summary)
    return summary
