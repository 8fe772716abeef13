"""fedpriv: private federated fine-tuning of language models, with measured leakage.

The public surface is small; heavy parts (torch, transformers) load only when a
name that needs them is first used::

    from fedpriv import load_preset, run_audit
    report = run_audit(load_preset("quick"), "out/")

Secure-aggregation protocols work on plain numpy arrays without the training
loop: see :mod:`fedpriv.protocols`.
"""

from __future__ import annotations

import importlib
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

from fedpriv.errors import ConfigError, DataError, FedprivError, ModelError, ProtocolError

try:
    __version__ = version("fedpriv")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.1.0"

_LAZY = {
    "AuditConfig": "fedpriv.audits.config",
    "load_config": "fedpriv.audits.config",
    "load_preset": "fedpriv.audits.config",
    "run_audit": "fedpriv.audits.runner",
    "FederatedTrainer": "fedpriv.train.loop",
}

__all__ = [
    "AuditConfig",
    "ConfigError",
    "DataError",
    "FederatedTrainer",
    "FedprivError",
    "ModelError",
    "ProtocolError",
    "__version__",
    "load_config",
    "load_preset",
    "run_audit",
]

if TYPE_CHECKING:
    from fedpriv.audits.config import AuditConfig, load_config, load_preset
    from fedpriv.audits.runner import run_audit
    from fedpriv.train.loop import FederatedTrainer


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'fedpriv' has no attribute {name!r}")
