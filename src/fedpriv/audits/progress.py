"""Progress callbacks of the audit runner (kept free of heavy imports for the CLI)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from fedpriv.audits.config import RunConfig
from fedpriv.audits.results import RunOutcome

if TYPE_CHECKING:
    from fedpriv.train.loop import RoundRecord


class AuditProgress:
    """Callbacks the runner calls as it goes; the CLI overrides them to draw progress."""

    def run_started(self, run: RunConfig, total_rounds: int, first_round: int) -> None:
        """Announce that ``run`` starts training (``first_round`` > 0 when resumed)."""

    def run_shared(self, run: RunConfig, trained_by: str, total_rounds: int) -> None:
        """Announce that ``run`` took run ``trained_by``'s trajectory (shared training)."""

    def round_finished(self, run: RunConfig, record: RoundRecord) -> None:
        """Report a round of ``run`` that finished and was checkpointed."""

    def run_finished(self, run: RunConfig, outcome: RunOutcome) -> None:
        """Report that ``run`` finished (successfully or not)."""
