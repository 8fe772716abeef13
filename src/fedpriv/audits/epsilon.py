"""Empirical ε: a lower bound on a run's privacy loss from one training run.

Privacy auditing with one (1) training run (Steinke, Nasr & Jagielski, NeurIPS
2023): ``m`` audit canaries are drawn before training and each is included in
the training data independently with probability ½.  After training the
auditor scores every canary (here: how much fine-tuning lowered its loss, the
base model being the reference), guesses "included" for the ``k₊`` highest
scores and "excluded" for the ``k₋`` lowest, and abstains on the rest.  If the
training run were (ε, δ)-DP, the number of correct guesses ``v`` out of ``r``
could exceed a Binomial(r, e^ε/(1+e^ε)) tail only by a δ-term (their Theorem 5.2
and Appendix D); the largest ε that this rejects at the chosen confidence is
the reported lower bound.  It is a *lower* bound: a valid DP run never gives a
bound above its theoretical ε (a test checks this over seeds), and a run
without DP that memorises gives a clearly positive one.

Canaries are examples (one record each), so the bound is on example-level ε;
a client-level guarantee implies the same example-level ε, so the comparison
with user-level or distributed DP runs is valid too.

The guess counts are not tuned on the outcome: a fixed ladder of balanced
counts is tried and the confidence is Bonferroni-corrected over the ladder,
so the reported maximum keeps its 95% level.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import stats

from fedpriv.errors import DataError

__all__ = [
    "GUESS_FRACTIONS",
    "EpsilonAudit",
    "epsilon_lower_bound",
    "guess_ladder",
    "one_run_audit",
    "p_value",
]

GUESS_FRACTIONS: tuple[float, ...] = (0.02, 0.1, 0.4, 0.8, 1.0)
"""Guesses tried, as fractions of the canaries (half "in", half "out" each)."""

def p_value(m: int, r: int, v: int, epsilon: float, delta: float) -> float:
    """Return P[≥ v correct of r guesses] for an (ε, δ)-DP run with m canaries (upper bound).

    Steinke, Nasr & Jagielski 2023, Theorem 5.2 / Appendix D: the number of
    correct guesses is dominated by Binomial(r, q), q = e^ε/(1+e^ε), up to a
    term ``2 m δ · max_i P[v > B ≥ v - i]/i``.

    Raises:
        DataError: If the counts or privacy parameters are out of range.
    """
    if not 0 <= v <= r <= m:
        raise DataError(f"need 0 <= correct <= guesses <= canaries, got v={v}, r={r}, m={m}")
    if epsilon < 0 or not 0 <= delta <= 1:
        raise DataError(f"need epsilon >= 0 and delta in [0, 1], got {epsilon}, {delta}")
    q = 1.0 / (1.0 + math.exp(-epsilon))
    beta = float(stats.binom.sf(v - 1, r, q))  # P[Binomial(r, q) >= v]
    alpha, mass = 0.0, 0.0
    if delta > 0 and v > 0:
        pmf = stats.binom.pmf(np.arange(v - 1, -1, -1), r, q)  # P[B = v-1], P[B = v-2], ...
        cumulative = np.cumsum(pmf)  # P[v > B >= v - i] for i = 1..v
        alpha = float(np.max(cumulative / np.arange(1, v + 1)))
        mass = alpha * delta * 2 * m
    return min(beta + mass, 1.0)


def epsilon_lower_bound(m: int, r: int, v: int, *, delta: float, p: float) -> float:
    """Return the largest ε that ``v`` correct of ``r`` guesses reject at level ``p`` (0 if none).

    Bisection on :func:`p_value`, which grows with ε: an (ε, δ)-DP claim with
    ``p_value < p`` is rejected, so every ε below the returned value is
    rejected at confidence ``1 - p``.
    """
    if not 0 < p < 1:
        raise DataError(f"p (one minus the confidence) must be in (0, 1), got {p}")
    if r == 0 or p_value(m, r, v, 0.0, delta) >= p:
        return 0.0
    low, high = 0.0, 1.0
    while p_value(m, r, v, high, delta) < p:
        low, high = high, high * 2
        if high > 1e3:  # pragma: no cover - p_value at ε = 1000 is 1 for any r < 10^400
            return low
    for _ in range(50):
        mid = (low + high) / 2
        if p_value(m, r, v, mid, delta) < p:
            low = mid
        else:
            high = mid
    return low


@dataclass(frozen=True)
class EpsilonAudit:
    """The one-run audit's outcome (the best of the guess ladder)."""

    epsilon: float
    canaries: int
    included: int
    guesses: int
    correct: int
    confidence: float
    delta: float
    ladder: tuple[tuple[int, int, float], ...]
    score: str = "loss drop from the base model"

    def to_report(self, theoretical: float | None = None) -> dict[str, Any]:
        """Return the ``leakage.epsilon_audit`` block."""
        return {
            "method": "one-run audit (Steinke, Nasr & Jagielski 2023)",
            "epsilon_lower_bound": self.epsilon,
            "theoretical_epsilon": theoretical,
            "confidence": self.confidence,
            "delta": self.delta,
            "canaries": self.canaries,
            "included": self.included,
            "guesses": self.guesses,
            "correct": self.correct,
            "score": self.score,
            "observed": "final global model (and the public base model as reference)",
            "ladder": [{"guesses": r, "correct": v, "epsilon": e} for r, v, e in self.ladder],
        }


def guess_ladder(
    scores: Sequence[float] | np.ndarray,
    included: Sequence[bool] | np.ndarray,
    *,
    confidence: float,
    fractions: Sequence[float] = GUESS_FRACTIONS,
) -> tuple[tuple[int, int], ...]:
    """Return ``(guesses, correct)`` for each rung of the ladder (higher score = "in").

    For each fraction ``f`` the ``f·m/2`` top-scored canaries are guessed "in"
    and as many bottom-scored ones "out"; ties are broken at random but
    reproducibly (seeded by ``m``), so equal scores carry no hidden order.  The
    guesses depend on the scores only, never on the truth, as the one-run
    audits (Steinke et al. 2023; Mahloujifar et al. 2024) require.

    Raises:
        DataError: If scores and inclusion flags differ in length or are empty,
            a score is not finite, the confidence is out of range or the ladder
            is empty.
    """
    values = np.asarray(scores, dtype=np.float64)
    truth = np.asarray(included, dtype=bool)
    m = values.size
    if m == 0 or truth.shape != values.shape:
        raise DataError(f"need one inclusion flag per canary score, got {truth.size} flags "
                        f"for {m} scores")
    if not np.all(np.isfinite(values)):
        raise DataError("a canary score is not finite; check the model's losses")
    if not 0 < confidence < 1:
        raise DataError(f"confidence must be in (0, 1), got {confidence}")
    if len(fractions) == 0 or not all(0 < f <= 1 for f in fractions):
        raise DataError(f"guess fractions must be a non-empty list in (0, 1], got {fractions}")
    order = np.lexsort((np.random.default_rng(m).random(m), -values))
    rungs: list[tuple[int, int]] = []
    for fraction in fractions:
        k = max(1, int(fraction * m / 2))
        top, bottom = order[:k], order[m - k:]
        rungs.append((2 * k, int(truth[top].sum() + (~truth[bottom]).sum())))
    return tuple(rungs)


def one_run_audit(
    scores: Sequence[float] | np.ndarray,
    included: Sequence[bool] | np.ndarray,
    *,
    delta: float,
    confidence: float = 0.95,
    fractions: Sequence[float] = GUESS_FRACTIONS,
) -> EpsilonAudit:
    """Guess membership of the canaries from their scores and bound ε (higher score = "in").

    For each fraction ``f`` of the ladder the ``f·m/2`` top-scored canaries are
    guessed "in" and as many bottom-scored ones "out" (:func:`guess_ladder`);
    the bound of each is computed at level ``(1 - confidence) / len(fractions)``
    and the largest is returned (Bonferroni over the ladder keeps the overall
    confidence).

    Raises:
        DataError: If scores and inclusion flags differ in length or are empty,
            a score is not finite, or the confidence is out of range.
    """
    rungs = guess_ladder(scores, included, confidence=confidence, fractions=fractions)
    m = int(np.asarray(scores).size)
    p = (1 - confidence) / len(fractions)
    ladder = tuple((r, v, epsilon_lower_bound(m, r, v, delta=delta, p=p)) for r, v in rungs)
    best = max(ladder, key=lambda entry: entry[2])
    return EpsilonAudit(epsilon=best[2], canaries=m,
                        included=int(np.asarray(included, dtype=bool).sum()), guesses=best[0],
                        correct=best[1], confidence=confidence, delta=delta, ladder=ladder)
