"""Per-run checkpoints: written atomically after every round, read back by ``--resume``.

A checkpoint holds the global adapter vector, the number of finished rounds,
the round history and the base-model evaluation, plus a fingerprint of the
configuration that produced it, so a checkpoint is never resumed under another
configuration.  It is one file written to a temporary name and renamed over the
old one: a crash at any moment leaves either the previous or the new checkpoint.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fedpriv.errors import CheckpointError

CHECKPOINT_FORMAT = 1


@dataclass
class Checkpoint:
    """State of a run after ``completed_rounds`` rounds."""

    fingerprint: str
    completed_rounds: int
    global_vector: np.ndarray
    history: list[dict[str, Any]] = field(default_factory=list)
    base_eval: dict[str, float] = field(default_factory=dict)
    elapsed_s: float = 0.0
    finished: bool = False
    canary_rounds: list[int] = field(default_factory=list)
    """Rounds whose release the audit's canary clients were observed in (may be empty)."""
    canary_mu: list[float] = field(default_factory=list)
    canary_projections: np.ndarray | None = None
    """One row of normalised projections per entry of ``canary_rounds``."""


def save_checkpoint(path: Path, ckpt: Checkpoint) -> None:
    """Write ``ckpt`` to ``path`` atomically (temporary file, fsync, rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {
        "format": CHECKPOINT_FORMAT,
        "fingerprint": ckpt.fingerprint,
        "completed_rounds": ckpt.completed_rounds,
        "history": ckpt.history,
        "base_eval": ckpt.base_eval,
        "elapsed_s": ckpt.elapsed_s,
        "finished": ckpt.finished,
        "canary_rounds": ckpt.canary_rounds,
        "canary_mu": ckpt.canary_mu,
    }
    payload = {"meta": json.dumps(meta), "global": torch.from_numpy(np.ascontiguousarray(
        ckpt.global_vector))}
    if ckpt.canary_projections is not None:
        payload["canaries"] = torch.from_numpy(np.ascontiguousarray(ckpt.canary_projections))
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as fh:
        torch.save(payload, fh)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def load_checkpoint(path: Path) -> Checkpoint | None:
    """Read a checkpoint; ``None`` when there is none at ``path``."""
    if not path.exists():
        return None
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
        meta = json.loads(payload["meta"])
        vector = payload["global"].numpy().copy()
        canaries = payload["canaries"].numpy().copy() if "canaries" in payload else None
    except Exception as err:  # any corruption: say where and what to do
        raise CheckpointError(
            f"checkpoint '{path}' cannot be read ({type(err).__name__}: {err}); delete it to "
            "start the run again"
        ) from None
    if meta.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"checkpoint '{path}' has format {meta.get('format')}, this "
                              f"fedpriv reads format {CHECKPOINT_FORMAT}; delete it to restart")
    return Checkpoint(
        fingerprint=meta["fingerprint"],
        completed_rounds=int(meta["completed_rounds"]),
        global_vector=vector,
        history=list(meta["history"]),
        base_eval=dict(meta["base_eval"]),
        elapsed_s=float(meta["elapsed_s"]),
        finished=bool(meta["finished"]),
        canary_rounds=[int(r) for r in meta.get("canary_rounds", [])],
        canary_mu=[float(mu) for mu in meta.get("canary_mu", [])],
        canary_projections=canaries,
    )
