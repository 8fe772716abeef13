"""One-run audits from canaries the auditor controls: canary clients and gradient canaries.

**Client level** (user-level and distributed DP, ``leakage.client_audit``). The
run planted ``m`` canary clients (:mod:`fedpriv.attacks.client_canaries`), each
a new client included with probability ½; its inclusion is one client added or
removed, so the run's stated ε (add/remove of a client) is the reference. Two
adversaries are audited from the same canaries:

* ``all_rounds`` — the server of central DP after the noise, or anyone who saw
  every round's released aggregate: the likelihood-ratio score of each canary
  over the per-round releases;
* ``final_model`` — anyone holding only the released model: the canary's
  coordinate of ``final − initial``.

Each observation gets the one-run lower bound (Steinke, Nasr & Jagielski 2023,
the (ε, δ) analysis), the f-DP analysis of the same guesses (Mahloujifar, Melis
& Chaudhuri 2024) where it applies, Andrew et al. (2024)'s ε *estimate* (not a
bound: the Gaussian fitted to the canaries' scores, converted to ε at δ), and
the idealized ceiling of the bound for this ``m``, ε and analysis (what a
perfect attack on an ideal Gaussian mechanism of exactly the stated ε reaches,
:func:`fedpriv.audits.ceiling.idealized_lower_bound`): a bound far below its
ceiling is a weak audit, not a proof of privacy.  A bound above the stated ε
is a violation: the guarantee does not hold as stated.

**Example level, white box** (sample-level DP, ``leakage.gradient_audit``).  One
client held ``m`` gradient (Dirac) canary records
(:mod:`fedpriv.attacks.gradient_canaries`), each included with probability ½:
a canary in or out is one record added or removed, the relation sample-level
ε is stated for; the reference is the holder's ε.  ``all_rounds`` scores each
canary on what the server saw of the holder in every round it took part (its
update under ``plain``, the aggregate under secure aggregation), summed over
rounds — per round the subsampled Gaussian's likelihood ratio where the
update is linear in the noised gradients (local SGD, own update), else minus
the signed coordinate; ``final_model`` on the released model's change.  No ε estimate: the
local optimizer (AdamW) makes the scores' distribution no Gaussian of known
shape.
"""

from __future__ import annotations

import time
from functools import partial
from typing import Any

import numpy as np

from fedpriv.attacks.client_canaries import CanaryClients, CanaryRound
from fedpriv.attacks.gradient_canaries import GradientCanaries
from fedpriv.audits.ceiling import idealized_lower_bound
from fedpriv.audits.epsilon import EpsilonAudit, one_run_audit
from fedpriv.audits.fdp import one_run_audit_fdp
from fedpriv.audits.gdp import gaussian_epsilon_estimate

__all__ = ["CLIENT_RELATION", "RECORD_RELATION", "measure_client_epsilon",
           "measure_gradient_epsilon", "observation_block"]

CLIENT_RELATION = "add/remove one client"
"""A canary client included or not is one client added to or removed from the federation."""
RECORD_RELATION = "add/remove one record"
"""A gradient canary included or not is one record of its client added or removed."""


def observation_block(
    scores: np.ndarray, included: np.ndarray, *, observed: str, score: str, delta: float,
    confidence: float, reference: float | None, estimate: bool = True,
    f_dp_valid: str | None = None, audit: EpsilonAudit | None = None,
) -> dict[str, Any]:
    """Return one observation's bounds, estimate and ceilings (report.json's shape).

    ``estimate``: add Andrew et al.'s Gaussian-fit ε estimate (null otherwise, and
    when fewer than two canaries are in or out: no Gaussian fits one score).
    ``f_dp_valid``: why the mechanism is μ-GDP with the μ of its stated ε (a
    composition of unsubsampled Gaussians), so that the f-DP bound may be held
    against the stated ε; None: it is reported for comparison only and never
    flags a violation (a subsampled or discrete mechanism's trade-off curve can
    cross the Gaussian one of the same (ε, δ)).  ``audit``: the (ε, δ) audit of
    these scores when the caller already ran it.
    """
    if audit is None:
        audit = one_run_audit(scores, included, delta=delta, confidence=confidence)
    fdp = one_run_audit_fdp(scores, included, delta=delta, confidence=confidence)
    m = int(scores.size)
    guess = (gaussian_epsilon_estimate(scores[included], scores[~included], delta=delta)
             if estimate and 2 <= included.sum() <= included.size - 2 else None)
    block: dict[str, Any] = {
        "observed": observed,
        "score": score,
        "epsilon_lower_bound": audit.epsilon,
        "guesses": audit.guesses,
        "correct": audit.correct,
        "ladder": [{"guesses": r, "correct": v, "epsilon": e} for r, v, e in audit.ladder],
        "f_dp": {"epsilon_lower_bound": fdp.epsilon, "mu_lower_bound": fdp.mu,
                 "guesses": fdp.guesses, "correct": fdp.correct,
                 "valid": f_dp_valid is not None,
                 "why": f_dp_valid or "reported beside the (ε, δ) bound only: the mechanism "
                                      "is not exactly μ-GDP (subsampled or discrete noise)"},
        "epsilon_estimate": guess,
        "idealized_lower_bound": None,
        "idealized_lower_bound_f_dp": None,
    }
    if reference is not None and reference > 0:
        block["idealized_lower_bound"] = idealized_lower_bound(
            m, reference, delta=delta, confidence=confidence, analysis="eps-delta")
        block["idealized_lower_bound_f_dp"] = idealized_lower_bound(
            m, reference, delta=delta, confidence=confidence, analysis="f-dp")
    block["violation"] = reference is not None and (
        audit.epsilon > reference or (f_dp_valid is not None and fdp.epsilon > reference))
    return block


def measure_client_epsilon(
    canaries: CanaryClients, rounds: list[CanaryRound], final_delta: np.ndarray, *,
    delta: float, confidence: float, reference: float | None, gaussian: bool = True,
) -> dict[str, Any]:
    """Return the ``leakage.client_audit`` block of a run with canary clients.

    ``gaussian``: the noise is Gaussian (user-level DP; distributed DP's is Skellam).

    ``rounds`` are the released rounds' canary observations, ``final_delta`` the
    released model's change ``final − initial`` (adapter vectors); ``reference``
    the run's stated ε for adding or removing a client.
    """
    started = time.perf_counter()
    included = np.asarray(canaries.included, dtype=bool)
    exact = ("every round releases the sum plus Gaussian noise, every client takes part: the "
             "composition is exactly μ-GDP" if canaries.sample_rate >= 1 and gaussian else None)
    block = partial(observation_block, delta=delta, confidence=confidence, reference=reference,
                    f_dp_valid=exact)
    observations = {
        "all_rounds": block(
            canaries.all_rounds_scores(rounds), included,
            observed=f"every released round's noised aggregate ({len(rounds)} rounds)",
            score="log-likelihood ratio of the canary's signed coordinate over the rounds "
                  "(Poisson-subsampled Gaussian)"),
        "final_model": block(
            canaries.final_model_scores(final_delta), included,
            observed="final global model (and the initial adapter as reference)",
            score="the canary's signed coordinate of final − initial"),
    }
    bounds = [o["epsilon_lower_bound"] for o in observations.values()]
    return {
        "method": "canary clients (Andrew et al. 2024) scored by the one-run audit "
                  "(Steinke, Nasr & Jagielski 2023)",
        "canaries": canaries.count,
        "included": int(included.sum()),
        "sample_rate": canaries.sample_rate,
        "relation": CLIENT_RELATION,
        "reference_epsilon": reference,
        "confidence": confidence,
        "delta": delta,
        "epsilon_lower_bound": max(bounds),
        "observations": observations,
        "violation": any(o["violation"] for o in observations.values()),
        "seconds": time.perf_counter() - started,
    }


def measure_gradient_epsilon(
    canaries: GradientCanaries, rounds: list[CanaryRound], final_delta: np.ndarray, *,
    holder: int, delta: float, confidence: float, reference: float | None,
) -> dict[str, Any]:
    """Return the ``leakage.gradient_audit`` block of a sample-level DP run with gradient canaries.

    ``rounds`` hold the canaries' scores on what the server saw of client
    ``holder`` in each round it took part; ``reference`` is that client's
    stated ε (add/remove one record).
    """
    started = time.perf_counter()
    included = np.asarray(canaries.included, dtype=bool)
    block = partial(observation_block, delta=delta, confidence=confidence, reference=reference,
                    estimate=False)
    summed = np.sum([r.projections for r in rounds], axis=0) if rounds else np.zeros(
        canaries.count)
    observations = {
        "all_rounds": block(
            summed, included,
            observed=f"what the server saw of client {holder} in the {len(rounds)} rounds it "
                     "took part in (its update under plain, the aggregate under secure "
                     "aggregation)",
            score="per round, the Poisson-subsampled Gaussian's log-likelihood ratio where "
                  "the holder's own update is linear in its noised gradients (local SGD "
                  "without weight decay), else minus the canary's signed coordinate; summed "
                  "over the rounds"),
        "final_model": block(
            canaries.scores(final_delta), included,
            observed="final global model (and the initial adapter as reference)",
            score="minus the canary's signed coordinate of final − initial"),
    }
    return {
        "method": "gradient (Dirac) canaries (Nasr et al. 2023) scored by the one-run audit "
                  "(Steinke, Nasr & Jagielski 2023)",
        "canaries": canaries.count,
        "included": int(included.sum()),
        "holder": holder,
        "relation": RECORD_RELATION,
        "reference_epsilon": reference,
        "confidence": confidence,
        "delta": delta,
        "epsilon_lower_bound": max(o["epsilon_lower_bound"] for o in observations.values()),
        "observations": observations,
        "violation": any(o["violation"] for o in observations.values()),
        "seconds": time.perf_counter() - started,
    }
