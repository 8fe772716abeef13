"""The ledger of a sweep: ``OUT/sweep.jsonl``, one JSON line per finished cell.

Each record is written with a single ``write`` on a file opened ``O_APPEND``
and fsync'd, so a sweep stopped midway (Ctrl-C, a crash) keeps every cell that
finished and running it again skips them; a reader ignores a torn last line.
Records carry :func:`config_hash` of the base config they ran from, so a ledger
is never resumed under another config.  ``sweep.json`` is replaced atomically.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from fedpriv.audits.config import AuditConfig, to_dict

logger = logging.getLogger(__name__)


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
