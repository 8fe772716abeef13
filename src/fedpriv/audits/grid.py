"""The grid of a sweep: its keys, its values, and the cells it expands to.

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

Pure parsing and config arithmetic: nothing here runs an audit or touches a file
(:mod:`fedpriv.audits.sweep` does).
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import math
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Union

from fedpriv.audits.config import (
    RUNS_PREFIX,
    AuditConfig,
    RunConfig,
    format_value,
    override,
)
from fedpriv.errors import ConfigError

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


def apply_cell(config: AuditConfig, overrides: Mapping[str, Value]) -> AuditConfig:
    """Return ``config`` with ``overrides`` applied, validated by :func:`from_mapping`.

    :func:`fedpriv.audits.config.override`, the one dotted-key override of the
    CLI flags and the grid: keys under ``runs.`` apply to every run,
    ``runs.dp`` resets a run's DP settings when it changes its mode (as ``--dp``
    does) and ``runs.epsilon`` sets the target ε of the DP runs only (as
    ``--epsilon`` does).  Errors and warnings name the cell.
    """
    return override(config, overrides, where=f"grid cell {cell_label(overrides)}")


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
