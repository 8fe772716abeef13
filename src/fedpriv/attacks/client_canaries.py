"""Canary clients: the auditor's own clients, planted to measure client-level ε in one run.

Andrew, Kairouz, Oh, Oprea, McMahan & Suriyakumar (ICLR 2024, "One-shot
empirical privacy estimation for federated learning") audit user-level DP by
adding *canary clients* whose update is a fixed random direction of norm ``C``
(the clip bound) and measuring how much of each direction the released model
deltas contain.  Random directions in a high-dimensional space are nearly
orthogonal to each other and to the real updates; here they are exactly so: each
canary's direction is a signed basis vector ``s_j·e_{i_j}`` on its own coordinate
``i_j`` (distinct coordinates, random signs), so planting ``m`` canaries and
scoring them costs ``O(m)`` per round whatever the adapter's size.  The random
sign makes the real clients' contribution to a coordinate a zero-mean
nuisance.

Each canary is *included* with probability ½, independently, before training
(Steinke, Nasr & Jagielski 2023's one-run audit).  An included canary is one
more client of the federation: it takes part in a round with the real clients'
participation rate (Poisson-sampled from the run's secret randomness under
user-level DP; every round under distributed DP, which credits no sampling),
and then contributes ``C_r·s_j·e_{i_j}`` to the round's sum before the noise —
exactly what it would send through the protocol (its vector is already clipped,
and a canary client adds no noise share of its own under distributed DP, which
only makes the audited mechanism *less* private than accounted).  So a canary
included or not is one client added or removed: the audit's relation is
add/remove of a client, and its reference is the run's stated ε.

Scores (higher = "included"):

* ``all_rounds`` — the server's view: every round's released noised sum.  Each
  round gives ``x_r = s_j·(released sum)[i_j] / noise std``, which is
  ``N(μ_r, 1)`` if the canary took part (``μ_r = C_r / noise std``) and
  ``N(0, 1)`` otherwise; the score is the log-likelihood ratio of the
  Poisson-subsampled Gaussian, ``Σ_r log(1 − q + q·exp(μ_r x_r − μ_r²/2))``.
* ``final_model`` — what anyone holding the released model sees:
  ``s_j·(final − initial)[i_j]`` (training's own response to the planted
  coordinates included).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from fedpriv.attacks.dirac import DiracCanaries, draw_dirac
from fedpriv.errors import ConfigError

__all__ = ["CanaryClients", "CanaryRound"]


@dataclass(frozen=True)
class CanaryRound:
    """One round's canary observation: normalised projections and their expected shift."""

    round: int
    projections: np.ndarray
    """``x_r`` per canary: signed coordinate of the released sum over its noise std."""
    mu: float
    """Shift of ``x_r`` for a canary that took part: canary norm over noise std."""


@dataclass(frozen=True)
class CanaryClients(DiracCanaries):
    """``m`` canary clients: Dirac directions, each included (secret from the model) or not."""

    sample_rate: float = 1.0
    """Probability that an included canary takes part in a round."""

    def __post_init__(self) -> None:
        """Check the canaries (:class:`DiracCanaries`) and the participation rate."""
        super().__post_init__()
        if not 0 < self.sample_rate <= 1:
            raise ConfigError(f"the canaries' participation rate must be in (0, 1], got "
                              f"{self.sample_rate}")

    @classmethod
    def draw(cls, count: int, dim: int, rng: np.random.Generator, *,
             sample_rate: float = 1.0) -> CanaryClients:
        """Draw ``count`` canaries on distinct coordinates of a ``dim``-long update.

        See :func:`~fedpriv.attacks.dirac.draw_dirac`.

        Raises:
            ConfigError: If there are more canaries than coordinates or the rate is
                not in (0, 1].
        """
        if not 0 < count <= dim:
            raise ConfigError(f"{count} canary clients for an update of {dim} values: give "
                              "attacks.client_canaries between 1 and the adapter's size")
        return cls(*draw_dirac(count, dim, rng), sample_rate=float(sample_rate))

    def round_sum(self, dim: int, norm: float, rng: np.random.Generator) -> np.ndarray:
        """Return the sum of the included canaries that take part this round (norm ``C`` each).

        ``rng`` draws who takes part (the run's secret randomness): one uniform per
        canary, so the draw does not depend on which are included.
        """
        taking_part = self.taking_part(self.sample_rate, rng)
        vector = np.zeros(dim)
        vector[self.coordinates[taking_part]] = norm * self.signs[taking_part]
        return vector

    def observe(self, round_index: int, released_sum: np.ndarray, *, norm: float,
                noise_std: float) -> CanaryRound:
        """Normalise a round's released noised sum into the canaries' ``x_r``."""
        if not (noise_std > 0 and math.isfinite(noise_std)):
            raise ConfigError(f"the round's noise standard deviation must be > 0, got "
                              f"{noise_std}; canary clients audit DP runs only")
        return CanaryRound(round_index, self.project(released_sum) / noise_std,
                           float(norm / noise_std))

    def all_rounds_scores(self, rounds: list[CanaryRound]) -> np.ndarray:
        """Log-likelihood ratio of "took part w.p. q each round" against "never" per canary."""
        scores = np.zeros(self.count)
        q = self.sample_rate
        for entry in rounds:
            mu, x = entry.mu, entry.projections
            log_ratio = mu * x - mu * mu / 2
            if q >= 1:
                scores += log_ratio
            else:  # log(1 − q + q·e^l), stable for large |l|
                scores += np.logaddexp(math.log1p(-q), math.log(q) + log_ratio)
        return scores

    def final_model_scores(self, delta: np.ndarray) -> np.ndarray:
        """Scores from the final model's change only: ``s_j·(final − initial)[i_j]``."""
        return self.project(delta)
