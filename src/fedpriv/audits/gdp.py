"""Gaussian differential privacy (μ-GDP): (ε, δ) conversions and an ε estimate from scores.

A mechanism is μ-GDP (Dong, Roth & Su, "Gaussian differential privacy", JRSS-B
2022) when telling any two neighbouring datasets apart from its output is at
least as hard as telling N(0, 1) from N(μ, 1): its trade-off function is
``f_μ(α) = Φ(Φ⁻¹(1 - α) - μ)``.  The Gaussian mechanism with sensitivity 1 and
noise σ is exactly (1/σ)-GDP.  μ-GDP holds if and only if (ε, δ(ε))-DP holds
for every ε ≥ 0 with (their Corollary 2.13)

    δ(ε) = Φ(-ε/μ + μ/2) - e^ε Φ(-ε/μ - μ/2),

which this module inverts both ways (:func:`gdp_epsilon`, :func:`gaussian_mu`).
It also holds the ε estimate of Andrew et al. (ICLR 2024), which reads μ off
the canary scores assuming they are Gaussian (:func:`gaussian_epsilon_estimate`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from fedpriv.dp.accounting import gaussian_delta_exact, gaussian_epsilon_exact
from fedpriv.dp.accounting import gaussian_mu as accounting_gaussian_mu
from fedpriv.errors import DataError

__all__ = ["gaussian_epsilon_estimate", "gaussian_mu", "gdp_delta", "gdp_epsilon"]

def _check_delta(delta: float) -> None:
    if not 0 < delta < 1:
        raise DataError(f"delta must be in (0, 1), got {delta}; use e.g. 1e-5 (below 1/n)")


def gdp_delta(mu: float, epsilon: float) -> float:
    """Return δ(ε) of a μ-GDP mechanism: the smallest δ with (ε, δ)-DP.

    Dong, Roth & Su 2022, Corollary 2.13 (the accountant's
    :func:`~fedpriv.dp.accounting.gaussian_delta_exact`, in log space).

    Raises:
        DataError: If μ or ε is negative or not finite.
    """
    if not (math.isfinite(mu) and mu >= 0 and math.isfinite(epsilon) and epsilon >= 0):
        raise DataError(f"need finite mu >= 0 and epsilon >= 0, got mu={mu}, epsilon={epsilon}")
    return gaussian_delta_exact(epsilon, mu)


def gdp_epsilon(mu: float, delta: float) -> float:
    """Return the ε at which a μ-GDP mechanism is (ε, δ)-DP (0 if δ(0) ≤ δ already).

    One Gaussian mechanism of noise multiplier 1/μ
    (:func:`~fedpriv.dp.accounting.gaussian_epsilon_exact`).

    Raises:
        DataError: If μ is negative or not finite, or δ is not in (0, 1).
    """
    _check_delta(delta)
    if not (math.isfinite(mu) and mu >= 0):
        raise DataError(f"mu must be finite and >= 0, got {mu}")
    if mu == 0:
        return 0.0
    return gaussian_epsilon_exact(1 / mu, 1, delta)


def gaussian_mu(epsilon: float, delta: float) -> float:
    """Return the μ for which μ-GDP is exactly (ε, δ)-DP: δ(ε; μ) = δ.

    The Gaussian mechanism with noise multiplier σ = 1/μ is then (ε, δ)-DP and
    no less noise is (:func:`~fedpriv.dp.accounting.gaussian_mu`).

    Raises:
        DataError: If ε is negative or not finite, or δ is not in (0, 1).
    """
    _check_delta(delta)
    if not (math.isfinite(epsilon) and epsilon >= 0):
        raise DataError(f"epsilon must be finite and >= 0, got {epsilon}")
    return accounting_gaussian_mu(epsilon, delta)


def gaussian_epsilon_estimate(
    scores_in: Sequence[float] | np.ndarray,
    scores_out: Sequence[float] | np.ndarray,
    *,
    delta: float,
) -> float:
    """Estimate ε from the scores of included and excluded canaries, assuming they are Gaussian.

    Andrew, Kairouz, Oh, Oprea, McMahan & Suriyakumar, "One-shot empirical
    privacy estimation for federated learning" (ICLR 2024): if the scores of
    excluded canaries are N(m, s²) and those of included ones are shifted by
    μ·s, the score reveals membership exactly like μ-GDP, so
    ``μ̂ = (mean(in) - mean(out)) / std(out)`` (clipped at 0) and
    ``ε = gdp_epsilon(μ̂, δ)``.  It is an *estimate*, not a bound: no
    confidence level, and it is only as good as the Gaussian assumption.

    Raises:
        DataError: If either group has fewer than two scores, a score is not
            finite, the excluded scores do not vary, or δ is not in (0, 1).
    """
    inside = np.asarray(scores_in, dtype=np.float64).ravel()
    outside = np.asarray(scores_out, dtype=np.float64).ravel()
    if inside.size < 2 or outside.size < 2:
        raise DataError(f"need at least two scores of included and of excluded canaries, got "
                        f"{inside.size} and {outside.size}; plant more canaries")
    if not (np.all(np.isfinite(inside)) and np.all(np.isfinite(outside))):
        raise DataError("a canary score is not finite; check the model's losses")
    spread = float(np.std(outside, ddof=1))
    if spread == 0:
        raise DataError("the excluded canaries' scores are all equal, so no Gaussian fits them; "
                        "check that the scores come from the trained model")
    mu_hat = max((float(np.mean(inside)) - float(np.mean(outside))) / spread, 0.0)
    return gdp_epsilon(mu_hat, delta)
