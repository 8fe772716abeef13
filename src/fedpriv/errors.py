"""Errors raised by fedpriv.

Every error is a ``ValueError`` subclass so that callers that already catch
``ValueError`` for bad input keep working.  Messages say what was wrong *and*
what to do about it; the CLI prints them as one line and exits with code 2.
"""

from __future__ import annotations


class FedprivError(ValueError):
    """Base class of every error fedpriv raises on purpose."""


class ConfigError(FedprivError):
    """An audit configuration (TOML file, CLI flag or Python object) is invalid."""


class DataError(FedprivError):
    """Input data is missing, malformed or cannot be split as requested."""


class ModelError(FedprivError):
    """A model or tokenizer cannot be loaded or adapted as requested."""


class ProtocolError(FedprivError):
    """An aggregation protocol was misused or received an invalid message."""


class CheckpointError(FedprivError):
    """A checkpoint is missing, corrupt, or belongs to another configuration."""


class MissingDependencyError(FedprivError, ImportError):
    """An optional package needed for the requested feature is not installed."""

    def __init__(self, package: str, extra: str, feature: str) -> None:
        super().__init__(
            f"{feature} needs the '{package}' package; install it with "
            f"`pip install 'fedpriv[{extra}]'` (or `pip install {package}`)."
        )
        self.package = package
        self.extra = extra
