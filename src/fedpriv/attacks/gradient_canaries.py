"""Gradient canaries: white-box audit records of sample-level DP-SGD, to measure ε in one run.

Nasr, Hayes, Steinke, Balle, Tramèr, Jagielski, Carlini & Terzis (USENIX Security
2023, "Tight auditing of differentially private machine learning") show that
the tightest audit of DP-SGD plants records whose *gradient* the auditor
chooses — a "Dirac" canary, non-zero on one coordinate only — instead of crafted
inputs; Steinke, Nasr & Jagielski (NeurIPS 2023, "Privacy auditing with one (1)
training run") audit with many such canaries in a single run, each included
with probability ½.  This module owns those canaries; the DP-SGD hook that
plants them is :func:`fedpriv.dp.sample.train_local_dp` (``gradient_canaries=``).

Each canary is one *record* of the client that holds it, so a canary included or
not is one record added or removed: the add/remove-one-record relation of
sample-level DP, whose reference is the run's stated (per-client) ε.  Canary
``j`` has its own coordinate ``i_j`` of the flat vector of trainable parameters
(distinct coordinates, in the order :func:`fedpriv.models.get_adapter_vector`
flattens them) and a random sign ``s_j``; its gradient is the fixed vector
``C·s_j·e_{i_j}``, whose norm is exactly the clip bound ``C`` — the largest
contribution one record may make, which clipping leaves as it is.  In every
DP-SGD step an included canary is sampled with the same Poisson probability
``q`` as every real example (from the generator the caller passes, which it
derives from the run's DP secret, so who was sampled stays secret as the batches
do), and when sampled its gradient is added to the clipped sum *before* the
noise: exactly what Opacus would do with a record of that gradient.  Planting
and scoring ``m`` canaries costs ``O(m)`` per step whatever the adapter's size.

The score is read from what the server sees — the client's update, or the
final model minus the initial one: ``−s_j·update[i_j]`` (a descent step moves
*against* the gradient, so an included canary pushes its coordinate by
``−lr·C·s_j/(q·n)`` per sampled SGD step).  Higher means "included";
:func:`fedpriv.audits.epsilon.one_run_audit` turns the scores and the secret
inclusion flags into an ε lower bound.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fedpriv.attacks.dirac import DiracCanaries, draw_dirac
from fedpriv.errors import ConfigError

__all__ = ["GradientCanaries"]


@dataclass(frozen=True)
class GradientCanaries(DiracCanaries):
    """``m`` Dirac gradient canaries: each one record whose gradient is ``C·s_j·e_{i_j}``."""

    @classmethod
    def draw(cls, count: int, dim: int, rng: np.random.Generator) -> GradientCanaries:
        """Draw ``count`` canaries on distinct coordinates of a ``dim``-long parameter vector.

        See :func:`~fedpriv.attacks.dirac.draw_dirac`.

        Raises:
            ConfigError: If ``count`` is not between 1 and ``dim``.
        """
        if isinstance(count, bool) or not isinstance(count, int) or not 0 < count <= dim:
            raise ConfigError(f"{count!r} gradient canaries for {dim} trainable parameters: give "
                              "between 1 and the adapter's size (get_adapter_vector(...).size)")
        return cls(*draw_dirac(count, dim, rng))

    @staticmethod
    def sgd_round_log_ratio(normalised: np.ndarray, *, steps: int, sample_rate: float,
                            noise_multiplier: float) -> np.ndarray:
        """Return each canary's log-likelihood ratio (took part vs not) for one SGD round.

        Under local SGD a client's round update is ``−lr/(q·n)·Σ_t (clipped
        sum_t + N(0, (σC)²))`` over its ``steps`` DP-SGD steps, so a canary's
        score scaled by ``q·n/(lr·σ·C)`` is ``y ~ N(k/σ, steps)`` when it was
        sampled in ``k ~ Binomial(steps, q)`` of them (``k = 0`` if it is not
        included).  The ratio is ``log Σ_k P(k)·exp(k·y/(σ·steps) −
        k²/(2σ²·steps))``, the Poisson-subsampled Gaussian's, per round.
        """
        from scipy import stats

        y = np.asarray(normalised, dtype=np.float64)
        ks = np.arange(steps + 1, dtype=np.float64)
        log_pk = stats.binom.logpmf(ks, steps, sample_rate)
        mu = 1.0 / noise_multiplier
        terms = (log_pk[None, :] + ks[None, :] * mu * y[:, None] / steps
                 - (ks[None, :] * mu) ** 2 / (2 * steps))
        top = terms.max(axis=1, keepdims=True)
        return (top + np.log(np.exp(terms - top).sum(axis=1, keepdims=True)))[:, 0]

    def scores(self, update: np.ndarray) -> np.ndarray:
        """Return ``−s_j·update[i_j]``: higher when canary ``j`` pushed the model (included).

        ``update`` is what the server sees: the client's update or the final
        model minus the initial one.
        """
        return -self.project(update)
