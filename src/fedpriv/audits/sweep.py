"""Grid sweeps of an audit: ``fedpriv sweep CONFIG --grid KEY=v1,v2 ...``.

This module owns the grid, its cells and the sweep's ledger:

- A grid axis is ``KEY=v1,v2,…`` where ``KEY`` is a dotted path into the
  :class:`~fedpriv.audits.config.AuditConfig` (``federation.lr``,
  ``model.lora.rank``, ``seed``) or, under ``runs.``, a setting applied to every
  run (``runs.epsilon``, ``runs.dp``, ``runs.protocol``,
  ``runs.protocol_params.NAME``).  Values are parsed with the field's type.
- A cell is one point of the cartesian product of the axes.  Its config is the
  base config's mapping with the cell's overrides, rebuilt through
  :func:`~fedpriv.audits.config.from_mapping`, so every cell is validated before
  the first one runs.  Its id hashes its sorted overrides, so it is the same in
  every re-run of the sweep, whatever the order of the ``--grid`` options.
- The ledger ``OUT/sweep.jsonl`` holds one JSON line per finished cell, written
  with a single ``write`` on a file opened ``O_APPEND`` and fsync'd.  A sweep
  stopped midway (Ctrl-C, a crash) keeps every cell that finished; running it
  again skips them.  A reader ignores a torn last line.

Each cell is an ordinary audit (:func:`~fedpriv.audits.runner.run_audit`) in
``OUT/cells/<id>/``; at the end ``OUT/sweep.json`` gathers every cell and
``OUT/frontier.png`` draws all their runs on one privacy–utility frontier.
The runner (and with it torch) is imported only when cells are checked or run,
so parsing a grid stays cheap.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import logging
import math
import os
import time
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Union

from fedpriv import __version__
from fedpriv.audits.config import AuditConfig, RunConfig, from_mapping, to_dict
from fedpriv.audits.progress import AuditProgress
from fedpriv.errors import ConfigError, FedprivError

logger = logging.getLogger(__name__)

SWEEP_SCHEMA = 1
LEDGER_NAME = "sweep.jsonl"
SUMMARY_NAME = "sweep.json"
FRONTIER_NAME = "frontier.png"
CELLS_DIR = "cells"
RUNS_PREFIX = "runs."
_NONE_WORDS = ("none", "null")
_TRUE_WORDS = ("true", "yes", "on")
_FALSE_WORDS = ("false", "no", "off")

Value = Union[int, float, bool, str, None]
"""A grid value, parsed with the type of the config field it sets."""


# ------------------------------------------------------------------------ grid keys


def _field_types(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _union_args(tp: Any) -> tuple[Any, ...]:
    if typing.get_origin(tp) in (Union, types.UnionType):
        return typing.get_args(tp)
    return (tp,)


def _without_none(tp: Any) -> Any:
    args = [a for a in _union_args(tp) if a is not type(None)]
    return args[0] if len(args) == 1 else tp


def _is_table(tp: Any) -> bool:
    return dataclasses.is_dataclass(_without_none(tp))


def _leaf_keys(cls: type, prefix: str) -> list[str]:
    """Every key of ``cls`` a grid can set, as dotted paths under ``prefix``."""
    keys: list[str] = []
    for name, tp in _field_types(cls).items():
        path = f"{prefix}{name}"
        inner = _without_none(tp)
        if cls is AuditConfig and name == "runs":
            keys += _leaf_keys(RunConfig, RUNS_PREFIX)
        elif cls is RunConfig and name == "name":
            continue
        elif dataclasses.is_dataclass(inner):
            keys += _leaf_keys(typing.cast(type, inner), f"{path}.")
        elif typing.get_origin(inner) is dict:
            keys.append(f"{path}.NAME")
        elif typing.get_origin(inner) is not tuple:
            keys.append(path)
    return keys


def sweepable_keys() -> list[str]:
    """Every dotted key a ``--grid`` option can set (``NAME``: any entry of that table)."""
    return _leaf_keys(AuditConfig, "")


def _unknown_key(key: str, where: str) -> ConfigError:
    valid = [k for k in sweepable_keys() if k.startswith(where)] if where else sweepable_keys()
    place = f" under {where.rstrip('.')}" if where else ""
    return ConfigError(f"unknown grid key '{key}'; valid keys{place}: {', '.join(valid)}")


def key_type(key: str) -> Any:
    """Return the type of the config field ``key`` sets (``Any`` for a table entry).

    Raises :class:`ConfigError` naming the valid keys when ``key`` is not a
    sweepable field (unknown, a table, a list, or a run's name).
    """
    parts = key.split(".")
    if not all(parts):
        raise ConfigError(f"grid key '{key}' is not a dotted config path like federation.lr")
    cls: type = AuditConfig
    where = ""
    for i, part in enumerate(parts):
        rest = parts[i + 1:]
        if cls is AuditConfig and not where and part == "runs":
            if not rest:
                raise _unknown_key(key, RUNS_PREFIX)
            cls, where = RunConfig, RUNS_PREFIX
            continue
        fields = _field_types(cls)
        if part not in fields:
            raise _unknown_key(key, where)
        if cls is RunConfig and part == "name":
            raise ConfigError("grid key 'runs.name' cannot be swept: run names identify the "
                              "runs of each cell; sweep another runs.* key")
        tp = fields[part]
        inner = _without_none(tp)
        here = f"{where}{part}"
        if dataclasses.is_dataclass(inner):
            if not rest:
                inside = [k for k in sweepable_keys() if k.startswith(f"{here}.")]
                raise ConfigError(f"grid key '{key}' is a table; sweep one of its keys: "
                                  f"{', '.join(inside)}")
            cls, where = typing.cast(type, inner), f"{here}."
            continue
        if typing.get_origin(inner) is dict:
            if len(rest) != 1:
                raise ConfigError(f"grid key '{key}': give one entry of the table {here}, "
                                  f"as {here}.NAME")
            return Any
        if rest:
            raise ConfigError(f"grid key '{key}': {here} is a single setting, not a table")
        if typing.get_origin(inner) is tuple:
            raise ConfigError(f"grid key '{key}' is a list and cannot be swept (grid values are "
                              "separated by commas); set it in the config file")
        return tp
    raise _unknown_key(key, where)  # pragma: no cover - the loop always returns or raises


# --------------------------------------------------------------------------- values


def _type_words(tp: Any) -> str:
    base = _without_none(tp)
    words = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}
    text = words.get(base, getattr(base, "__name__", str(base)))
    return text + (" or none" if type(None) in _union_args(tp) else "")


def _auto_value(text: str) -> Value:
    """Parse an entry of a free-form table (``protocol_params``, ``dp_params``)."""
    low = text.lower()
    if low in _NONE_WORDS:
        return None
    if low in ("true", "false"):
        return low == "true"
    for parse in (int, float):
        try:
            value = parse(text)
        except ValueError:
            continue
        if isinstance(value, float) and not math.isfinite(value):
            break
        return value
    return text


def parse_value(key: str, raw: str, tp: Any) -> Value:
    """Parse the grid value ``raw`` for ``key`` with the field's type ``tp``."""
    text = raw.strip()
    if not text:
        raise ConfigError(f"grid key '{key}' has an empty value; write KEY=v1,v2 with no "
                          "empty entries")
    if tp is Any:
        return _auto_value(text)
    low = text.lower()
    if type(None) in _union_args(tp) and low in _NONE_WORDS:
        return None
    base = _without_none(tp)
    expected = ConfigError(f"grid key '{key}' expects {_type_words(tp)}, got '{raw}'")
    if base is bool:
        if low in _TRUE_WORDS:
            return True
        if low in _FALSE_WORDS:
            return False
        raise expected
    if base is int:
        try:
            return int(text)
        except ValueError:
            raise expected from None
    if base is float:
        try:
            number = float(text)
        except ValueError:
            raise expected from None
        if not math.isfinite(number):
            raise ConfigError(f"grid key '{key}' expects a finite number, got '{raw}'")
        return number
    if base is str:
        return text
    raise expected  # pragma: no cover - every scalar field is bool/int/float/str


def format_value(value: Value) -> str:
    """Show a grid value compactly: ``3`` for 3.0, ``0.001``, ``none``, ``true``."""
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() and abs(value) < 1e15 else repr(value)
    return str(value)


@dataclass(frozen=True)
class GridAxis:
    """One ``--grid KEY=v1,v2`` option: a config key and the values it takes."""

    key: str
    values: tuple[Value, ...]


def parse_axis(option: str) -> GridAxis:
    """Parse one ``KEY=v1,v2`` option, checking the key and each value's type."""
    key, sep, raw_values = option.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError(f"grid option '{option}' must look like KEY=v1,v2 "
                          "(e.g. federation.lr=1e-3,3e-3)")
    tp = key_type(key)
    values = tuple(parse_value(key, raw, tp) for raw in raw_values.split(","))
    shown = [format_value(v) for v in values]
    repeated = sorted({s for s in shown if shown.count(s) > 1})
    if repeated:
        raise ConfigError(f"grid key '{key}' repeats the value(s) {', '.join(repeated)}; "
                          "give each value once")
    return GridAxis(key=key, values=values)


def parse_grid(options: Sequence[str]) -> tuple[GridAxis, ...]:
    """Parse every ``--grid`` option; a key may appear only once."""
    if not options:
        raise ConfigError("a sweep needs at least one --grid KEY=v1,v2 "
                          "(e.g. --grid federation.lr=1e-3,3e-3)")
    axes = tuple(parse_axis(o) for o in options)
    keys = [a.key for a in axes]
    repeated = sorted({k for k in keys if keys.count(k) > 1})
    if repeated:
        raise ConfigError(f"grid key(s) {', '.join(repeated)} given twice; put all values of a "
                          "key in one --grid KEY=v1,v2")
    return axes


# ---------------------------------------------------------------------------- cells


@dataclass(frozen=True)
class SweepCell:
    """One point of the grid: its overrides and the validated config they give."""

    id: str
    label: str
    overrides: tuple[tuple[str, Value], ...]
    """``(key, value)`` pairs sorted by key."""
    config: AuditConfig

    def overrides_dict(self) -> dict[str, Value]:
        """Return the overrides as a ``{key: value}`` mapping."""
        return dict(self.overrides)


def cell_id(overrides: Mapping[str, Value]) -> str:
    """Stable id of a cell: a hash of its overrides, sorted (order of ``--grid`` is irrelevant)."""
    canonical = json.dumps(sorted(overrides.items()), separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:12]


def cell_label(overrides: Mapping[str, Value]) -> str:
    """Readable label of a cell, e.g. ``federation.lr=0.001,runs.epsilon=3``."""
    return ",".join(f"{k}={format_value(v)}" for k, v in sorted(overrides.items()))


def _is_free_table_entry(parts: Sequence[str]) -> bool:
    return len(parts) >= 2 and parts[-2] in ("protocol_params", "dp_params")


def _set_path(node: dict[str, Any], parts: Sequence[str], value: Value) -> None:
    for part in parts[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            child = node[part] = {}
        node = child
    if value is None and _is_free_table_entry(parts):
        node.pop(parts[-1], None)  # a table entry set to none falls back to its default
    else:
        node[parts[-1]] = value


def _run_key_order(key: str) -> tuple[int, str]:
    # dp first: switching a run's DP mode resets its DP settings, which the others then set
    return (0 if key == "runs.dp" else 1, key)


def _apply_to_run(run: dict[str, Any], key: str, value: Value) -> bool:
    """Set ``key`` (``runs.…``) on one run mapping; return whether it applied to that run."""
    parts = key[len(RUNS_PREFIX):].split(".")
    if parts == ["dp"]:
        if value != run.get("dp", "none"):
            run["dp_params"] = {}  # mode-specific knobs of the old mode would be rejected
            if value == "none":
                run["epsilon"] = None
        run["dp"] = value
        return True
    if parts == ["epsilon"]:
        if run.get("dp", "none") == "none":
            return False  # as with --epsilon: the target ε of every DP run
        run["epsilon"] = value
        run.setdefault("dp_params", {}).pop("noise_multiplier", None)
        return True
    _set_path(run, parts, value)
    return True


def apply_cell(config: AuditConfig, overrides: Mapping[str, Value]) -> AuditConfig:
    """Return ``config`` with ``overrides`` applied, validated by :func:`from_mapping`.

    Keys under ``runs.`` apply to every run: ``runs.dp`` resets a run's DP
    settings when it changes its mode (as ``--dp`` does) and ``runs.epsilon``
    sets the target ε of the DP runs only (as ``--epsilon`` does).
    """
    data = to_dict(config)
    run_keys = sorted((k for k in overrides if k.startswith(RUNS_PREFIX)), key=_run_key_order)
    for key, value in overrides.items():
        if not key.startswith(RUNS_PREFIX):
            _set_path(data, key.split("."), value)
    for key in run_keys:
        applied = [_apply_to_run(run, key, overrides[key]) for run in data["runs"]]
        if not any(applied):
            logger.warning("grid cell %s: %s=%s sets no run (no run uses DP there)",
                           cell_label(overrides), key, format_value(overrides[key]))
    try:
        return from_mapping(AuditConfig, data)
    except ConfigError as err:
        raise ConfigError(f"grid cell {cell_label(overrides)}: {err}") from None


def plan_cells(config: AuditConfig, axes: Sequence[GridAxis]) -> tuple[SweepCell, ...]:
    """Build and validate every cell of the cartesian product of ``axes``, in grid order."""
    if not axes:
        raise ConfigError("a sweep needs at least one --grid KEY=v1,v2")
    keys = [a.key for a in axes]
    if "runs.epsilon" in keys and not any(
        run.dp != "none" for run in config.runs
    ) and "runs.dp" not in keys:
        raise ConfigError("grid key runs.epsilon needs a DP run: set dp in the config's "
                          "[[runs]] or sweep runs.dp too (e.g. runs.dp=sample)")
    cells = []
    for combo in itertools.product(*(a.values for a in axes)):
        overrides = dict(zip(keys, combo, strict=True))
        cells.append(SweepCell(
            id=cell_id(overrides), label=cell_label(overrides),
            overrides=tuple(sorted(overrides.items())), config=apply_cell(config, overrides),
        ))
    return tuple(cells)


def config_hash(config: AuditConfig) -> str:
    """Hash of the base config a sweep's cells start from (not its name or device)."""
    data = to_dict(config)
    data.pop("name", None)
    data.pop("device", None)
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


# --------------------------------------------------------------------------- ledger


def read_ledger(path: Path) -> list[dict[str, Any]]:
    """Return the cell records of ``sweep.jsonl``, oldest first.

    A last line without its newline is a write that was cut short: it is
    ignored, as is any line that is not a JSON object with an ``id``.
    """
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return []
    *complete, tail = data.split(b"\n")
    if tail.strip():
        logger.warning("%s: ignoring a torn last line (%d bytes)", path, len(tail))
    records = []
    for number, line in enumerate(complete, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:
            logger.warning("%s: ignoring line %d, which is not JSON", path, number)
            continue
        if not isinstance(record, dict) or not isinstance(record.get("id"), str):
            logger.warning("%s: ignoring line %d, which is not a cell record", path, number)
            continue
        records.append(record)
    return records


def drop_torn_tail(path: Path) -> int:
    """Cut a torn last line off ``path`` so the next append starts a line; return bytes cut."""
    try:
        with path.open("r+b") as f:
            data = f.read()
            keep = data.rfind(b"\n") + 1
            if keep == len(data):
                return 0
            f.truncate(keep)
            f.flush()
            os.fsync(f.fileno())
    except FileNotFoundError:
        return 0
    return len(data) - keep


def append_ledger(path: Path, record: Mapping[str, Any]) -> None:
    """Append ``record`` as one line: a single ``write`` on an ``O_APPEND`` file, then fsync."""
    line = (json.dumps(record, allow_nan=False, separators=(",", ":")) + "\n").encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        written = os.write(fd, line)
        if written != len(line):
            raise OSError(f"short write to {path}: {written} of {len(line)} bytes")
        os.fsync(fd)
    finally:
        os.close(fd)


def _atomic_write_json(path: Path, data: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", encoding="utf-8") as f:
        f.write(json.dumps(data, indent=2, allow_nan=False) + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


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
              engine: str = "inprocess") -> dict[str, Any]:
    """Run the plan's pending cells one by one; write ``sweep.json`` and ``frontier.png``.

    Each finished cell is appended to the ledger before the next one starts, so
    an interruption (``KeyboardInterrupt`` propagates) loses only the cell in
    flight.  Returns the summary written to ``sweep.json``.
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
