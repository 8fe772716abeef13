"""f-DP one-run audit: a lower bound on μ (Gaussian DP) and ε from one training run.

Auditing f-differential privacy in one run (Mahloujifar, Melis & Chaudhuri,
2024) keeps the experiment of :mod:`fedpriv.audits.epsilon` (m canaries, each
included with probability ½, ``r`` guesses of which ``v`` are correct) but
tests a whole trade-off curve instead of one (ε, δ) pair.  Here the curves are
the Gaussian ones ``f_μ`` (μ-GDP, see :mod:`fedpriv.audits.gdp`), the family a
DP-SGD run actually follows, so the (ε, δ) the bound implies is read off the
GDP curve rather than off a Binomial with a δ-term, which is what makes the
f-DP bound tighter on Gaussian mechanisms.

The bound on the number ``W`` of correct guesses.  Fix ``c ≥ 1`` and a canary
``i``.  Knowing the other canaries' membership, "guess ``i`` as the adversary
does, but only when at least ``c - 1`` of the *other* guesses are correct" is a
test between two neighbouring datasets, so an f-DP run keeps its success below
``f̄ = 1 - f`` of its error (with the ½ prior and the concavity of ``f̄``).
Summed over the canaries this is, for every ``c = 1 .. r``,

    E[W·1{W ≥ c}] / m  ≤  f̄( E[(r - W)·1{W ≥ c - 1}] / m ).

(the paper's Theorem for guessing games with abstention).  The largest
``P[W ≥ v]`` these constraints allow is found as in the paper's recursive
algorithm: put mass ``τ`` at ``v`` and, walking down the levels, add at each
level just the mass its constraint requires; ``τ`` is impossible when the
mass needed exceeds 1.  A μ is rejected at level ``p`` when ``τ = p`` is
impossible, and :func:`fdp_lower_bound` returns the largest rejected μ.

Like the (ε, δ) audit this gives a *lower* bound: a run that is μ₀-GDP gives
a bound above μ₀ with probability at most ``p`` (a test checks it over seeds).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import special

from fedpriv.audits.epsilon import GUESS_FRACTIONS, EpsilonAudit, guess_ladder
from fedpriv.audits.gdp import gdp_epsilon
from fedpriv.errors import DataError

__all__ = [
    "FdpAudit",
    "FdpBound",
    "fdp_lower_bound",
    "fdp_p_value",
    "mu_lower_bounds",
    "one_run_audit_fdp",
]

_MU_BRACKET = (0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0)
"""Upper ends tried for μ (a bound above 64 would need far more canaries than fit memory)."""
_GRID = 15
"""Interior points per refinement pass of the μ search (each pass shrinks the bracket 16×)."""
_MU_TOLERANCE = 1e-4
"""Width below which the μ bracket stops shrinking (absolute, in units of μ)."""


def _check_counts(m: int, r: int, v: int) -> None:
    if not 0 <= v <= r <= m:
        raise DataError(f"need 0 <= correct <= guesses <= canaries, got v={v}, r={r}, m={m}")


def _impossible(m: int, guesses: np.ndarray, correct: np.ndarray, mu: np.ndarray,
                tau: np.ndarray | float) -> np.ndarray:
    """Return where ``P[W ≥ v] ≥ τ`` is impossible for a μ-GDP run (True = impossible).

    ``guesses`` and ``correct`` have shape ``(B, 1)``; ``mu`` and ``tau``
    broadcast against ``(B, N)``.  State after the levels ≥ i: ``R`` =
    E[W·1{W ≥ i}]/m and ``H`` = E[(r - W)·1{W ≥ i}]/m.  Level ``i`` must bring
    ``H`` up to ``f̄⁻¹(R)`` (the constraint for c = i + 1), where
    ``f̄_μ⁻¹(y) = Φ(Φ⁻¹(y) - μ)``; mass ``x`` at level ``i`` adds
    ``(r - i)x/m`` to ``H`` and ``i·x/m`` to ``R``.  The total mass is
    ``m(R + H)/r`` and must not exceed 1.
    """
    r = guesses.astype(np.float64)
    v = correct.astype(np.float64)
    shape = np.broadcast_shapes(mu.shape, np.shape(tau), r.shape)
    correct_mass = np.broadcast_to(tau * v / m, shape).copy()
    wrong_mass = np.broadcast_to(tau * (r - v) / m, shape).copy()
    for step in range(1, int(correct.max(initial=0)) + 1):
        level = v - step
        active = level >= 0
        # r - level > 0 since level < v <= r; inactive rows get weight 0.
        slope = np.where(active, np.maximum(level, 0) / (r - np.minimum(level, r - 1)), 0.0)
        needed = special.ndtr(special.ndtri(np.minimum(correct_mass, 1.0)) - mu)
        added = np.maximum(needed - wrong_mass, 0.0) * active
        wrong_mass += added
        correct_mass += slope * added
    return np.asarray(m * (correct_mass + wrong_mass) > r * (1 + 1e-12), dtype=bool)


def fdp_p_value(m: int, r: int, v: int, mu: float) -> float:
    """Return an upper bound on P[≥ v correct of r guesses] for a μ-GDP run with m canaries.

    The largest ``τ`` that the recursion of Mahloujifar, Melis & Chaudhuri
    (2024) does not rule out, to within 1e-9 (bisection on ``τ``).

    Raises:
        DataError: If the counts are out of range or μ is negative.
    """
    _check_counts(m, r, v)
    if not (math.isfinite(mu) and mu >= 0):
        raise DataError(f"mu must be finite and >= 0, got {mu}")
    if v == 0:
        return 1.0
    shape = (1, 1)
    guesses, correct = np.full(shape, r), np.full(shape, v)
    mu_values = np.full(shape, mu)
    low, high = 0.0, 1.0
    if not _impossible(m, guesses, correct, mu_values, high)[0, 0]:
        return 1.0
    while high - low > 1e-9:
        grid = np.linspace(low, high, 17)[1:-1].reshape(1, -1)
        out = _impossible(m, guesses, correct, np.broadcast_to(mu_values, grid.shape), grid)[0]
        first = int(np.argmax(out)) if out.any() else grid.shape[1]
        low = float(grid[0, first - 1]) if first > 0 else low
        high = float(grid[0, first]) if first < grid.shape[1] else high
    return high


def mu_lower_bounds(m: int, guesses: np.ndarray, correct: np.ndarray, *, p: float) -> np.ndarray:
    """Return the largest μ rejected at level ``p`` for each ``(r, v)`` pair (0 if none).

    The batched form of :func:`fdp_lower_bound` (μ only, counts not checked),
    for callers that bound many outcomes at once such as the idealized ceiling.

    All pairs are searched together: a bracket from :data:`_MU_BRACKET`, then
    passes over a grid of :data:`_GRID` points per bracket until it is
    narrower than :data:`_MU_TOLERANCE`.  The rejection is monotone in μ
    (larger μ allow more correct guesses), so each pass keeps the largest
    rejected grid point as the lower end.
    """
    r = np.asarray(guesses, dtype=np.int64).reshape(-1, 1)
    v = np.asarray(correct, dtype=np.int64).reshape(-1, 1)
    low = np.zeros(r.shape)
    rejected_at_zero = _impossible(m, r, v, low, p)
    bracket = np.asarray(_MU_BRACKET).reshape(1, -1)
    out = _impossible(m, r, v, np.broadcast_to(bracket, (r.shape[0], bracket.size)), p)
    # out[b, j]: μ = bracket[j] still rejected; the first False ends the bracket.
    first_kept = np.where(out.all(axis=1), bracket.size - 1, np.argmin(out, axis=1))
    high = bracket[0, first_kept].reshape(-1, 1)
    below = np.where(first_kept > 0, bracket[0, np.maximum(first_kept - 1, 0)], 0.0)
    low = np.where(rejected_at_zero[:, :1], below.reshape(-1, 1), 0.0)
    # Rows whose largest bracket is still rejected keep it as their (capped) bound.
    capped = np.asarray(out.all(axis=1, keepdims=True), dtype=bool)
    low = np.where(capped, bracket[0, -1], low)
    todo = rejected_at_zero[:, 0] & ~capped[:, 0]
    while todo.any():
        rows = np.flatnonzero(todo)
        fractions = np.arange(1, _GRID + 1) / (_GRID + 1)
        grid = low[rows] + (high[rows] - low[rows]) * fractions.reshape(1, -1)
        out = _impossible(m, r[rows], v[rows], grid, p)
        count = out.sum(axis=1)  # rejected points form a prefix of the grid
        new_low = np.where(count > 0, grid[np.arange(rows.size), np.maximum(count - 1, 0)],
                           low[rows, 0])
        new_high = np.where(count < _GRID, grid[np.arange(rows.size),
                                                np.minimum(count, _GRID - 1)], high[rows, 0])
        low[rows, 0], high[rows, 0] = new_low, new_high
        todo[rows] = (new_high - new_low) > _MU_TOLERANCE
    return np.asarray(low[:, 0], dtype=np.float64)


@dataclass(frozen=True)
class FdpBound:
    """A μ-GDP lower bound and the ε it implies at ``delta``."""

    mu: float
    epsilon: float
    delta: float


def fdp_lower_bound(m: int, r: int, v: int, *, delta: float, p: float) -> FdpBound:
    """Return the largest μ that ``v`` correct of ``r`` guesses reject at level ``p``, and its ε.

    Mahloujifar, Melis & Chaudhuri (2024) with the Gaussian trade-off curves:
    every μ below the returned one is rejected at confidence ``1 - p`` (to
    within 1e-4), i.e. the run is not μ-GDP for such μ.  ``epsilon`` is the ε
    of μ-GDP at ``delta`` (:func:`~fedpriv.audits.gdp.gdp_epsilon`), the
    figure to compare with :func:`~fedpriv.audits.epsilon.epsilon_lower_bound`.

    Raises:
        DataError: If the counts, ``p`` or ``delta`` are out of range.
    """
    _check_counts(m, r, v)
    if not 0 < p < 1:
        raise DataError(f"p (one minus the confidence) must be in (0, 1), got {p}")
    mu = float(mu_lower_bounds(m, np.array([r]), np.array([v]), p=p)[0]) if v > 0 else 0.0
    return FdpBound(mu=mu, epsilon=gdp_epsilon(mu, delta), delta=delta)


@dataclass(frozen=True)
class FdpAudit(EpsilonAudit):
    """The f-DP one-run audit's outcome: :class:`EpsilonAudit` plus the μ-GDP bound."""

    mu: float = 0.0
    mu_ladder: tuple[float, ...] = ()

    def to_report(self, theoretical: float | None = None) -> dict[str, Any]:
        """Return the ``epsilon_audit`` block, with μ and the f-DP method named."""
        block = super().to_report(theoretical)
        block["method"] = ("one-run f-DP audit, Gaussian trade-off "
                           "(Mahloujifar, Melis & Chaudhuri 2024)")
        block["mu_lower_bound"] = self.mu
        for entry, mu in zip(block["ladder"], self.mu_ladder, strict=True):
            entry["mu"] = mu
        return block


def one_run_audit_fdp(
    scores: Sequence[float] | np.ndarray,
    included: Sequence[bool] | np.ndarray,
    *,
    delta: float,
    confidence: float = 0.95,
    fractions: Sequence[float] = GUESS_FRACTIONS,
) -> FdpAudit:
    """Guess membership as :func:`~fedpriv.audits.epsilon.one_run_audit` does and bound μ (f-DP).

    Same guesses (:func:`~fedpriv.audits.epsilon.guess_ladder`, ties broken
    the same way) and the same Bonferroni level ``(1 - confidence) /
    len(fractions)`` per rung; each rung's bound is :func:`fdp_lower_bound`
    and the rung with the largest μ is reported.

    Raises:
        DataError: If scores and inclusion flags differ in length or are empty,
            a score is not finite, or the confidence or δ is out of range.
    """
    rungs = guess_ladder(scores, included, confidence=confidence, fractions=fractions)
    m = int(np.asarray(scores).size)
    p = (1 - confidence) / len(fractions)
    mus = mu_lower_bounds(m, np.array([r for r, _ in rungs]), np.array([v for _, v in rungs]), p=p)
    epsilons = [gdp_epsilon(float(mu), delta) for mu in mus]
    best = int(np.argmax(mus))
    ladder = tuple((r, v, eps) for (r, v), eps in zip(rungs, epsilons, strict=True))
    return FdpAudit(epsilon=epsilons[best], canaries=m,
                    included=int(np.asarray(included, dtype=bool).sum()),
                    guesses=rungs[best][0], correct=rungs[best][1], confidence=confidence,
                    delta=delta, ladder=ladder, mu=float(mus[best]),
                    mu_ladder=tuple(float(mu) for mu in mus))
