"""What an audit run produced, as typed values: written by the runner, read by the report.

:class:`RunOutcome` is one run's result (status, training, DP plan, adapter)
and :class:`Leakage` the measurements the runner made on it.  The report, the
progress callbacks and the CLI read these; only :meth:`Leakage.to_report`
turns them into the ``leakage`` block of ``report.json``.  Kept free of torch
(training results are only named for type checking), so the CLI can import it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from fedpriv.audits.config import RunConfig
from fedpriv.dp.config import DPPlan
from fedpriv.lora import LoraSettings

if TYPE_CHECKING:
    from fedpriv.train import TrainingResult


@dataclass
class Leakage:
    """One run's leakage measurements; a measurement not made (or that failed) is ``None``.

    The blocks are the dicts the measuring functions return
    (:mod:`fedpriv.audits.leakage`, :mod:`fedpriv.audits.canary_audit`);
    their layout is the report's.
    """

    mia: dict[str, Any] | None = None
    """Membership inference on the final model (:func:`~fedpriv.audits.leakage.measure_leakage`)."""
    canary: dict[str, Any] | None = None
    """Exposure of the planted data canaries in the final model."""
    client_audit: dict[str, Any] | None = None
    """One-run audit with canary clients (user-level and distributed DP)."""
    gradient_audit: dict[str, Any] | None = None
    """One-run audit with white-box gradient canaries (sample-level DP)."""
    empirical_epsilon: float | None = None
    """The one-run audit's ε lower bound from the audit canaries."""
    epsilon_audit: dict[str, Any] | None = None
    """That audit's details (:func:`~fedpriv.audits.leakage.measure_epsilon`)."""
    mia_update: dict[str, Any] | None = None
    """Membership inference on one client's update, when the server sees it."""
    inversion: dict[str, Any] | None = None
    """The gradient-inversion probe on what the server saw."""
    errors: dict[str, str] = field(default_factory=dict)
    """Measurements that failed, by step name: ``"ErrorType: message"``."""
    _errors_at: int | None = field(default=None, init=False, repr=False, compare=False)
    # How many measurements were in before the first failure: the report has always listed
    # ``errors`` there, and the runner fills the fields in their order.

    def record_error(self, step: str, err: BaseException) -> None:
        """Record that measurement ``step`` failed with ``err`` (the run still counts)."""
        if self._errors_at is None:
            self._errors_at = len(self._measurements())
        self.errors[step] = f"{type(err).__name__}: {err}"

    def raise_error(self, step: str) -> None:
        """Raise (as a RuntimeError) the error measurement ``step`` failed with, if it did."""
        if step in self.errors:
            raise RuntimeError(f"not measured on the shared model: {self.errors[step]}")

    def _measurements(self) -> list[tuple[str, Any]]:
        return [(item.name, getattr(self, item.name)) for item in dataclasses.fields(self)
                if item.name not in ("errors", "_errors_at")
                and getattr(self, item.name) is not None]

    def to_report(self) -> dict[str, Any]:
        """Return the ``leakage`` block of report.json: no key for a measurement not made."""
        entries = self._measurements()
        if self.errors:
            at = len(entries) if self._errors_at is None else self._errors_at
            entries.insert(at, ("errors", dict(self.errors)))
        return dict(entries)


@dataclass
class RunOutcome:
    """One run's result as the report needs it."""

    run: RunConfig
    lora: LoraSettings
    status: str
    error: str | None = None
    training: TrainingResult | None = None
    adapter_size: int = 0
    adapter_dir: str | None = None
    dp: DPPlan | None = None
    leakage: Leakage = field(default_factory=Leakage)
    shared_with: str | None = None
    """Shared training: the run whose trajectory this run took (its protocol's aggregate
    matched every round), or ``None`` when the run trained on its own."""
    shared_deviation: float | None = None
    """Shared training: the largest entry of |own aggregate − ``shared_with``'s| seen."""

