"""The idealized ceiling: the best one-run bound a perfectly calibrated Gaussian run can give.

How high can the one-run audit go when the run is exactly (ε, δ)-DP and the
auditor sees the best possible score?  Simulate it: ``m`` canaries, each
included with probability ½; a Gaussian mechanism calibrated so that μ-GDP is
exactly (ε, δ)-DP (:func:`~fedpriv.audits.gdp.gaussian_mu`); each canary's score
is N(μ, 1) when included and N(0, 1) when not — the likelihood-ratio statistic
of that mechanism, so no score does better.  The guess ladder and Bonferroni
level are those of :func:`~fedpriv.audits.epsilon.one_run_audit`, the bound
either the (ε, δ) one (Steinke, Nasr & Jagielski 2023) or the f-DP one
(Mahloujifar, Melis & Chaudhuri 2024).  A real run's empirical ε should be
read against this ceiling, not against the theoretical ε: with 1000 canaries
the (ε, δ) analysis of an ε = 8 run reaches only about 2.5–2.8.
"""

from __future__ import annotations

import functools
import math
from typing import Literal

import numpy as np

from fedpriv.audits.epsilon import GUESS_FRACTIONS, epsilon_lower_bound, guess_ladder
from fedpriv.audits.fdp import mu_lower_bounds
from fedpriv.audits.gdp import gaussian_mu, gdp_epsilon
from fedpriv.errors import DataError

__all__ = ["ANALYSES", "idealized_lower_bound"]

Analysis = Literal["eps-delta", "f-dp"]
ANALYSES: tuple[str, ...] = ("eps-delta", "f-dp")
"""The bounds :func:`idealized_lower_bound` can simulate."""


@functools.lru_cache(maxsize=256)
def idealized_lower_bound(
    m: int,
    epsilon: float,
    *,
    delta: float = 1e-5,
    confidence: float = 0.95,
    analysis: Analysis = "eps-delta",
    trials: int = 25,
    seed: int = 0,
) -> float:
    """Return the median one-run lower bound on ε of an exactly (ε, δ)-DP Gaussian run.

    ``trials`` independent draws of the ideal experiment (module docstring),
    each audited with the standard ladder (:data:`~fedpriv.audits.epsilon.GUESS_FRACTIONS`)
    at ``confidence``; the median of their bounds is returned.  Results are
    cached (the same arguments give the same number: the draws come from
    ``numpy.random.default_rng(seed)``).  About a second for m = 1000 and the
    default 25 trials.

    Raises:
        DataError: If m, ε, δ, the confidence, the trial count or the analysis
            is out of range.
    """
    if analysis not in ANALYSES:
        raise DataError(f"unknown analysis {analysis!r}; choose one of {', '.join(ANALYSES)}")
    if m < 2 or trials < 1:
        raise DataError(f"need at least 2 canaries and 1 trial, got m={m}, trials={trials}")
    if not (math.isfinite(epsilon) and epsilon >= 0):
        raise DataError(f"epsilon must be finite and >= 0, got {epsilon}")
    mu = gaussian_mu(epsilon, delta)
    rng = np.random.default_rng(seed)
    rungs: list[tuple[tuple[int, int], ...]] = []
    for _ in range(trials):
        included = rng.random(m) < 0.5
        scores = rng.standard_normal(m) + mu * included
        rungs.append(guess_ladder(scores, included, confidence=confidence))
    p = (1 - confidence) / len(GUESS_FRACTIONS)
    pairs = sorted({pair for trial in rungs for pair in trial})
    if analysis == "eps-delta":
        bound = {(r, v): epsilon_lower_bound(m, r, v, delta=delta, p=p) for r, v in pairs}
    else:
        mus = mu_lower_bounds(m, np.array([r for r, _ in pairs]),
                               np.array([v for _, v in pairs]), p=p)
        bound = {pair: gdp_epsilon(float(mu), delta) for pair, mu in zip(pairs, mus, strict=True)}
    return float(np.median([max(bound[pair] for pair in trial) for trial in rungs]))
