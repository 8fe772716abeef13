"""Privacy accounting for the (subsampled) Gaussian mechanism, as pure functions.

Every DP mechanism in fedpriv is a composition of Poisson-subsampled Gaussian
mechanisms: DP-SGD steps inside a client (one training example is the unit) or
DP-FedAvg rounds (one client is the unit).  A homogeneous stretch of such steps
is a :class:`GaussianSteps` (noise multiplier σ, sampling rate q, count); this
module turns a sequence of stretches into the ε it spends at a given δ, and
solves for the smallest σ that meets a target ε.  It holds no state: the
stateful wrappers (if any) live with the trainers.

Two accountants, both over Opacus's analysis code:

- ``"rdp"`` — Rényi DP (Mironov, "Rényi Differential Privacy", CSF 2017,
  https://arxiv.org/abs/1702.07476), with the subsampled-Gaussian RDP of
  Mironov, Talwar & Zhang 2019 and the RDP → (ε, δ) conversion of Balle et al.
  2020 (both in :mod:`opacus.accountants.analysis.rdp`).  A valid upper bound,
  typically 5–20 % above the true ε.
- ``"prv"`` — numerical composition of privacy loss random variables (Gopi, Lee
  & Wutschitz, "Numerical Composition of Differential Privacy", NeurIPS 2021,
  https://arxiv.org/abs/2106.02848; :mod:`opacus.accountants.analysis.prv`).
  Tight up to a stated numerical error; we report its *upper* estimate, and never
  more than the RDP bound (both are upper bounds on the true ε, so their minimum is
  one too).  This is :data:`DEFAULT_ACCOUNTANT`: 7–12 % below RDP in fedpriv's
  settings, and a solve for σ takes well under a second.  :func:`epsilon_both` gives
  both values for a report at little more than the cost of the PRV one.

Neighbouring relation.  Every ε here is for *add/remove one unit* unless the function
says otherwise.  :func:`epsilon_replace_one` gives the ε for *replacing* one unit's
data (what an audit canary planted inside an existing client realises under user-level
DP): exact for q = 1 (a Gaussian of sensitivity 2C is one of sensitivity C at half the
noise multiplier), a valid upper bound for q < 1.

Independent references for the tests (and for anyone who wants a closed form):
:func:`gaussian_delta_exact` and :func:`gaussian_epsilon_exact`, the analytic
Gaussian mechanism of Balle & Wang, "Improving the Gaussian Mechanism for
Differential Privacy", ICML 2018 (https://arxiv.org/abs/1805.06530), which is
exact for q = 1 where T steps of noise multiplier σ are one Gaussian mechanism
with sensitivity-to-noise ratio √T / σ.
"""

from __future__ import annotations

import functools
import logging
import math
import numbers
import operator
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeAlias

import numpy as np
from scipy import optimize, special

from fedpriv.errors import ConfigError

logger = logging.getLogger(__name__)

ACCOUNTANTS: tuple[str, ...] = ("rdp", "prv")
DEFAULT_ACCOUNTANT: str = "prv"
"""The accountant a run should use unless told otherwise: the tightest one here that is a
valid upper bound (PRV's upper estimate, never above RDP).  The pure functions below keep
``"rdp"`` as their keyword default (callers pass the run's accountant explicitly)."""
MAX_NOISE_MULTIPLIER: float = 100.0
"""Largest σ :func:`solve_noise_multiplier` will consider."""
MIN_NOISE_MULTIPLIER: float = 0.01
"""Smallest σ :func:`solve_noise_multiplier` returns (ε there is in the millions)."""

RDP_ORDERS: tuple[float, ...] = (
    *(1 + x / 10.0 for x in range(1, 100)),
    *range(11, 64),
    128, 256, 512, 1024,
)
"""Rényi orders α: Opacus's default grid plus the large orders of Google's dp-accounting,
which matter for small ε (large σ: the best α grows like σ·sqrt(2 log(1/δ)))."""

# PRV discretisation.  Opacus's defaults are eps_error=0.01 and delta_error=δ/1000; the
# grid then has about 2·L·sqrt(T·log(12/δ_err)/2)/eps_error points (L ≈ ε at a much
# smaller δ, plus 3), i.e. millions of points (seconds, GBs for small σ) once T reaches
# tens of thousands.  We keep δ_err = δ/1000 (the upper estimate is taken at δ − δ_err,
# so a small δ_err costs nothing, and it enters the grid only through a logarithm) and
# ask for eps_error = min(0.01, 1 % of the RDP ε), coarsened just enough that the grid
# stays under _PRV_MAX_GRID points.  Since L grows with ε, the coarsened error is still
# ~2.5·sqrt(10·T)/_PRV_MAX_GRID relative to ε (≈ 0.5 % at T = 10⁵) and an evaluation
# takes ~0.1–0.3 s whatever T is.  The error is added to the reported ε, so coarsening
# never makes the bound optimistic.
_PRV_EPS_ERROR = 0.01
_PRV_EPS_ERROR_RELATIVE = 0.01
_PRV_DELTA_ERROR_FRACTION = 1e-3
_PRV_MAX_GRID = 2**19


@dataclass(frozen=True)
class GaussianSteps:
    """One homogeneous stretch of a composition: ``steps`` Poisson-subsampled Gaussians."""

    noise_multiplier: float
    """σ: noise standard deviation over the L2 sensitivity (the clip bound); > 0."""
    sample_rate: float
    """q in (0, 1]: Poisson sampling probability of each unit; 1 means no subsampling."""
    steps: int
    """How many times the mechanism runs; >= 0."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "noise_multiplier", _check_noise_multiplier(
            self.noise_multiplier))
        object.__setattr__(self, "sample_rate", _check_sample_rate(self.sample_rate))
        object.__setattr__(self, "steps", _check_steps(self.steps))


# --------------------------------------------------------------------------- validation


def _real(value: object, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ConfigError(f"{name} must be a number, got {value!r}")
    return float(value)


def _check_noise_multiplier(noise_multiplier: object) -> float:
    sigma = _real(noise_multiplier, "noise multiplier")
    if sigma == 0:
        raise ConfigError(
            "DP is on but the noise multiplier is 0: with no noise there is no privacy "
            "(ε = ∞). Give a noise multiplier > 0 (e.g. 1.0) or a target epsilon instead")
    if not (math.isfinite(sigma) and sigma > 0):
        raise ConfigError(f"noise multiplier must be a finite number > 0, got {sigma}; "
                          "typical values are 0.5–5")
    return sigma


def _check_sample_rate(sample_rate: object) -> float:
    q = _real(sample_rate, "sample rate")
    if not (math.isfinite(q) and 0 < q <= 1):
        raise ConfigError(
            f"sample rate must be in (0, 1], got {q}: it is the probability that one unit "
            "(example or client) takes part in a step, e.g. batch size / dataset size")
    return q


def _check_count(value: object, name: str, minimum: int = 0) -> int:
    if isinstance(value, bool) or not hasattr(value, "__index__"):
        raise ConfigError(f"{name} must be a whole number >= {minimum}, got {value!r}")
    count = operator.index(value)
    if count < minimum:
        raise ConfigError(f"{name} must be >= {minimum}, got {count}")
    return count


def _check_steps(steps: object) -> int:
    return _check_count(steps, "steps")


def _check_accountant(accountant: object) -> str:
    if accountant not in ACCOUNTANTS:
        raise ConfigError(f"unknown accountant {accountant!r}; valid: {', '.join(ACCOUNTANTS)} "
                          "(rdp: fast upper bound; prv: tighter, numerical)")
    return str(accountant)


def check_delta(delta: float) -> float:
    """Return ``delta`` as a float if it is a usable δ: finite and in (0, 1).

    Raises :class:`ConfigError` otherwise, with the usual choice as a hint.
    """
    value = _real(delta, "delta")
    if not (math.isfinite(value) and 0 < value < 1):
        raise ConfigError(f"delta must be in (0, 1), got {delta!r}; 1e-5 is usual, and it "
                          "should be well below 1 / (number of units protected)")
    return value


def _check_epsilon(epsilon: object, name: str) -> float:
    value = _real(epsilon, name)
    if not (math.isfinite(value) and value > 0):
        raise ConfigError(f"{name} must be a finite number > 0, got {epsilon!r}; "
                          "ε between 1 and 10 is usual")
    return value


@contextmanager
def _quiet_numerics() -> Iterator[None]:
    """Silence Opacus's 'optimal order is the smallest/largest alpha' and log(0) noise.

    Both are expected here: tiny σ puts the optimum at α → 1 (ε is astronomical anyway),
    and q = 1 makes the PRV evaluate log(1 − q) = −inf on purpose.
    """
    with warnings.catch_warnings(), np.errstate(divide="ignore", over="ignore",
                                                invalid="ignore"):
        warnings.filterwarnings("ignore", message="Optimal order is the", category=UserWarning)
        yield


# --------------------------------------------------------------------------- accountants


@functools.lru_cache(maxsize=1024)
def _rdp_per_step(noise_multiplier: float, sample_rate: float) -> tuple[float, ...]:
    """Return the Rényi DP of one subsampled Gaussian at every order of :data:`RDP_ORDERS`.

    Cached: the solver and the PRV domain both revisit the same (σ, q), and Opacus's
    fractional-order series are the slow part of an evaluation.
    """
    from opacus.accountants.analysis.rdp import compute_rdp

    curve = compute_rdp(q=sample_rate, noise_multiplier=noise_multiplier, steps=1,
                        orders=list(RDP_ORDERS))
    return tuple(float(value) for value in np.atleast_1d(curve))


def _rdp_curve(composition: Sequence[GaussianSteps]) -> np.ndarray:
    """Return the Rényi DP of a composition (RDP adds up: Mironov 2017, Proposition 1)."""
    total = np.zeros(len(RDP_ORDERS))
    for stretch in composition:
        total = total + stretch.steps * np.asarray(
            _rdp_per_step(stretch.noise_multiplier, stretch.sample_rate))
    return total


def _rdp_to_epsilon(rdp: np.ndarray, delta: float) -> float:
    from opacus.accountants.analysis.rdp import get_privacy_spent

    eps, _ = get_privacy_spent(orders=list(RDP_ORDERS), rdp=rdp, delta=delta)
    value = float(eps)
    return value if not math.isnan(value) else math.inf


def _prv_domain_half_width(composition: Sequence[GaussianSteps], delta_error: float) -> float:
    """Return the truncation bound L of the PRV grid, as Opacus's ``compute_safe_domain_size``.

    Same rule (Gopi et al. 2021, remark 5.6), on our cached RDP curves instead of
    recomputing them twice on Opacus's grid: the composition's ε at δ_err/4, and each
    single step's ε at δ_err/(8T).  ``eps_error`` and the 3-unit margin are added by the
    caller.
    """
    total = sum(s.steps for s in composition)
    bound = _rdp_to_epsilon(_rdp_curve(composition), delta_error / 4)
    for stretch in composition:
        single = np.asarray(_rdp_per_step(stretch.noise_multiplier, stretch.sample_rate))
        bound = max(bound, _rdp_to_epsilon(single, delta_error / (8 * total)))
    return bound


def _fft_friendly_domain(domain_class: Any, half_width: float, mesh: float) -> Any:
    """Return Opacus's aligned grid over [-half_width, half_width], of an FFT-friendly size.

    ``Domain.create_aligned`` gives the grid -n·mesh, ..., (n + 1)·mesh (size 2n + 2, with
    0 at index n, which the FFT composition relies on) for n = ceil(half_width / mesh); a
    size with a large prime factor makes that FFT several times slower, so we widen n to
    the next size 2n + 2 that is 5-smooth (a few % more points at most).
    """
    from scipy.fft import next_fast_len

    size = next_fast_len(2 * math.ceil(half_width / mesh) + 2, real=True)
    while size % 2:
        size = next_fast_len(size + 1, real=True)
    below = size // 2 - 1
    return domain_class(t_min=-below * mesh, t_max=(below + 1) * mesh, size=size)


class _ReplaceOnePoissonGaussianPRV:
    """Privacy loss of the Poisson-subsampled Gaussian under *replace-one* (one direction).

    In units of the sensitivity C (each unit's clipped contribution has norm ≤ 1) with
    noise std σ, replacing a unit sampled with probability q moves the output between
    ``P = q·N(−1, σ²) + (1 − q)·N(0, σ²)`` and ``Q = q·N(+1, σ²) + (1 − q)·N(0, σ²)``:
    the pair dp-accounting uses for ``NeighboringRelation.REPLACE_ONE`` under Poisson
    sampling (``privacy_loss_mechanism.AdditiveNoisePrivacyLoss``, REPLACE adjacency;
    Doroshenko, Ghazi, Kamath, Kumar & Manurangsi, "Connect the Dots", PETS 2022).  The pair
    is symmetric (x ↦ −x swaps P and Q), so one direction gives the whole PRV.

    The privacy loss ``L(x) = log(r + c/u) − log(r + c·u)`` with ``u = e^{x/σ²}``,
    ``r = 1 − q``, ``c = q·e^{−1/(2σ²)}`` decreases in x, so ``P(L ≤ t) = P(X ≥ x(t))``
    where ``u(t)`` is the positive root of ``c·e^t·u² + r·(e^t − 1)·u − c = 0``.  Only
    :meth:`cdf` is needed by Opacus's truncation and discretisation.
    """

    def __init__(self, sample_rate: float, noise_multiplier: float) -> None:
        self.sample_rate = sample_rate
        self.noise_multiplier = noise_multiplier

    def _threshold(self, t: np.ndarray) -> np.ndarray:
        """Return x(t), where L(x(t)) = t, without overflow for |t| up to ~700."""
        q, sigma = self.sample_rate, self.noise_multiplier
        r = 1.0 - q
        log_c = math.log(q) - 1.0 / (2 * sigma**2)
        c = math.exp(log_c)
        t = np.clip(np.asarray(t, dtype=np.float64), -700.0, 700.0)
        positive = t > 0
        # t > 0: divide by e^t: c·u² + r(1 − e^{−t})·u − c·e^{−t} = 0, root 2C/(B + sqrt(B² + 4AC)).
        b_pos = -r * np.expm1(-np.where(positive, t, 1.0))
        ac_pos = c * c * np.exp(-np.where(positive, t, 1.0))
        log_u_pos = (math.log(2.0) + log_c - np.where(positive, t, 1.0)
                     - np.log(b_pos + np.sqrt(b_pos * b_pos + 4 * ac_pos)))
        # t <= 0: A = c·e^t, B = r·(e^t − 1) <= 0, C = c: root (−B + sqrt(B² + 4AC)) / (2A).
        t_neg = np.where(positive, -1.0, t)
        b_neg = r * np.expm1(t_neg)
        ac_neg = c * c * np.exp(t_neg)
        log_u_neg = (np.log(-b_neg + np.sqrt(b_neg * b_neg + 4 * ac_neg))
                     - math.log(2.0) - log_c - t_neg)
        return sigma**2 * np.where(positive, log_u_pos, log_u_neg)

    def cdf(self, t: Any) -> np.ndarray:
        """Return P(L ≤ t) for X ~ P: ``q·Φ̄((x(t) + 1)/σ) + (1 − q)·Φ̄(x(t)/σ)``."""
        q, sigma = self.sample_rate, self.noise_multiplier
        x = self._threshold(t)
        return q * special.ndtr(-(x + 1) / sigma) + (1 - q) * special.ndtr(-x / sigma)


def _prv_epsilon(composition: Sequence[GaussianSteps], delta: float, rdp_bound: float, *,
                 replace_one: bool = False) -> float:
    """Return the PRV upper estimate of ε (Gopi et al. 2021), on a grid of bounded size.

    ``replace_one``: the replace-one PRV (:class:`_ReplaceOnePoissonGaussianPRV`) for
    stretches with q < 1, add/remove at σ/2 for q = 1; the grid's truncation bound then
    comes from the RDP of q = 1 at σ/2, an upper bound on the replace-one RDP (joint
    quasi-convexity of Rényi divergence over the sampled / not-sampled coupling).
    """
    from opacus.accountants.analysis.prv import (
        Domain,
        PoissonSubsampledGaussianPRV,
        TruncatedPrivacyRandomVariable,
        compose_heterogeneous,
        discretize,
    )

    counts = [s.steps for s in composition]
    delta_error = delta * _PRV_DELTA_ERROR_FRACTION
    eps_error = min(_PRV_EPS_ERROR, _PRV_EPS_ERROR_RELATIVE * rdp_bound)
    bounding = [_halved(s) for s in composition] if replace_one else list(composition)
    loss_bound = _prv_domain_half_width(bounding, delta_error)
    spread = math.sqrt(sum(counts) * math.log(12 / delta_error) / 2)  # mesh = eps_error/spread
    eps_error = max(eps_error, 2 * (loss_bound + 3) * spread / _PRV_MAX_GRID)
    half_width = max(loss_bound, eps_error) + 3
    if not math.isfinite(half_width):
        raise FloatingPointError("the privacy loss is unbounded at this noise level")
    domain = _fft_friendly_domain(Domain, half_width, eps_error / spread)
    prvs: list[Any] = []
    for stretch in composition:
        if not replace_one:
            prvs.append(PoissonSubsampledGaussianPRV(stretch.sample_rate,
                                                     stretch.noise_multiplier))
        elif stretch.sample_rate == 1:
            prvs.append(PoissonSubsampledGaussianPRV(1.0, stretch.noise_multiplier / 2))
        else:
            prvs.append(_ReplaceOnePoissonGaussianPRV(stretch.sample_rate,
                                                      stretch.noise_multiplier))
    dprvs = [discretize(TruncatedPrivacyRandomVariable(prv, domain.t_min, domain.t_max), domain)
             for prv in prvs]
    composed = compose_heterogeneous(dprvs=dprvs, num_self_compositions=counts)
    _, _, eps_upper = composed.compute_epsilon(delta, delta_error, eps_error)
    return float(eps_upper)


def _halved(stretch: GaussianSteps) -> GaussianSteps:
    """Return the same steps without subsampling at half the noise (replace-one at q = 1)."""
    return GaussianSteps(stretch.noise_multiplier / 2, 1.0, stretch.steps)


def _check_composition(composition: Sequence[GaussianSteps]) -> list[GaussianSteps]:
    """Return the stretches of ``composition`` that take steps, after checking their type."""
    stretches = list(composition)
    for stretch in stretches:
        if not isinstance(stretch, GaussianSteps):
            raise ConfigError(f"a composition is a sequence of GaussianSteps, got {stretch!r}; "
                              "build each stretch as GaussianSteps(noise_multiplier, "
                              "sample_rate, steps)")
    return [s for s in stretches if s.steps > 0]


def _epsilons(stretches: Sequence[GaussianSteps], delta: float,
              with_prv: bool) -> tuple[float, float | None]:
    """Return (RDP ε, PRV ε or None) of non-empty ``stretches``; PRV is never above RDP."""
    with _quiet_numerics():
        rdp = _rdp_to_epsilon(_rdp_curve(stretches), delta)
        if not with_prv or not math.isfinite(rdp):
            return rdp, (rdp if with_prv else None)
        try:
            prv = _prv_epsilon(stretches, delta, rdp)
        except (ValueError, RuntimeError, FloatingPointError, MemoryError) as error:
            logger.warning("PRV accounting failed numerically (%s); reporting the RDP bound "
                           "ε=%.4g instead", error, rdp)
            return rdp, rdp
    if not math.isfinite(prv):
        return rdp, rdp
    # Both are upper bounds on the true ε (PRV: the upper end of its error interval, not
    # its point estimate), so the smaller one is too; PRV is the tighter one except where
    # its additive numerical error dominates (tiny ε, or σ so small that ε is huge).
    return rdp, min(prv, rdp)


def epsilon_of(
    composition: Sequence[GaussianSteps], delta: float,
    accountant: str = "rdp",
) -> float:
    """Return the ε that the composition of ``composition``'s stretches spends at ``delta``.

    Stretches may differ in σ and q (a client's rounds at different noise, adaptive-clipping
    phases, ...).  RDP sums the stretches' Rényi curves; PRV convolves their privacy-loss
    distributions.  An empty composition, or one with no steps, spends 0.  The relation is
    add/remove of one unit.
    """
    delta = check_delta(delta)
    accountant = _check_accountant(accountant)
    stretches = _check_composition(composition)
    if not stretches:
        return 0.0
    rdp, prv = _epsilons(stretches, delta, with_prv=accountant == "prv")
    return rdp if prv is None else prv


def epsilon_both(composition: Sequence[GaussianSteps], delta: float) -> dict[str, float]:
    """Return ``{"rdp": ε, "prv": ε}`` for ``composition`` at ``delta`` (add/remove one unit).

    Both are valid upper bounds on the true ε; a report can show both.  Costs one PRV
    evaluation (the RDP curve it needs for its grid is the RDP answer).
    """
    delta = check_delta(delta)
    stretches = _check_composition(composition)
    if not stretches:
        return {"rdp": 0.0, "prv": 0.0}
    rdp, prv = _epsilons(stretches, delta, with_prv=True)
    return {"rdp": rdp, "prv": rdp if prv is None else prv}


def epsilon(noise_multiplier: float, sample_rate: float, steps: int, delta: float,
            accountant: str = "rdp") -> float:
    """Return the ε spent at ``delta`` by ``steps`` Poisson-subsampled Gaussian mechanisms.

    ``noise_multiplier`` is σ (noise std over the sensitivity), ``sample_rate`` q in
    (0, 1].  0 steps spend 0.
    """
    return epsilon_of([GaussianSteps(noise_multiplier, sample_rate, steps)], delta, accountant)


def epsilon_group(
    composition: Sequence[GaussianSteps], delta: float, group: int,
    accountant: str = "rdp",
) -> float:
    """Return the ε at ``delta`` for adding or removing a *group* of ``group`` units at once.

    Group privacy for Poisson-subsampled Gaussian steps (e.g. an audit canary
    repeated ``k`` times in one client's data): each copy is sampled with rate
    ``q``, so the group takes part in a step with probability ``1 − (1 − q)^k``
    and then moves the clipped sum by at most ``k·C`` (every copy sampled and
    aligned).  The pair ``(N(k·C), N(0))`` dominates every such shift (the
    hockey-stick divergence is convex in its first argument), so each stretch
    is accounted as the subsampled Gaussian of noise multiplier ``σ/k`` and
    rate ``1 − (1 − q)^k``: a valid upper bound, far below the generic
    ``k·ε`` with ``δ·k·e^{(k−1)ε}``.  ``group = 1`` is :func:`epsilon_of`.

    Raises:
        ConfigError: If ``group`` is not an integer >= 1, or as :func:`epsilon_of`.
    """
    size = _check_count(group, "group size (copies of one unit)", minimum=1)
    grouped = [GaussianSteps(s.noise_multiplier / size, 1 - (1 - s.sample_rate) ** size, s.steps)
               for s in _check_composition(composition)]
    return epsilon_of(grouped, delta, accountant)


def epsilon_replace_one(
    composition: Sequence[GaussianSteps], delta: float,
    accountant: str = "rdp",
) -> float:
    """Return the ε at ``delta`` for *replacing* one unit's data (replace-one relation).

    Under the replace-one relation the sum of clipped contributions moves by up to 2C,
    not C.  Without subsampling (every stretch at q = 1) the Gaussian mechanism of
    sensitivity 2C and noise σC is exactly the one of sensitivity C and noise (σ/2)C, so
    this is ``epsilon_of`` at half the noise multiplier: exact up to the accountant
    (dp-accounting's ``NeighboringRelation.REPLACE_ONE`` PLD gives the same).

    With Poisson subsampling (some q < 1) Opacus's RDP and PRV only know add/remove, so
    those stretches are accounted with the replace-one privacy loss random variable of
    :class:`_ReplaceOnePoissonGaussianPRV` (the pair dp-accounting's PLD uses for
    ``REPLACE_ONE``), whatever ``accountant`` is: RDP has no replace-one subsampled bound
    here.  The result is never above the no-amplification bound (q = 1 at σ/2 with
    ``accountant``), which is valid because the replaced unit is sampled or not in both
    datasets alike (joint convexity of the hockey-stick divergence).

    Distributed (Skellam) DP: replace-one doubles both sensitivities, so it is
    :func:`fedpriv.dp.distributed.skellam_epsilon` with ``2·Δ₁`` and ``2·Δ₂``.
    """
    delta = check_delta(delta)
    accountant = _check_accountant(accountant)
    stretches = _check_composition(composition)
    if not stretches:
        return 0.0
    unamplified = epsilon_of([_halved(s) for s in stretches], delta, accountant)
    if all(s.sample_rate == 1 for s in stretches) or not math.isfinite(unamplified):
        return unamplified
    with _quiet_numerics():
        try:
            replaced = _prv_epsilon(stretches, delta, unamplified, replace_one=True)
        except (ValueError, RuntimeError, FloatingPointError, MemoryError) as error:
            logger.warning("replace-one PRV accounting failed numerically (%s); reporting the "
                           "bound without amplification ε=%.4g instead", error, unamplified)
            return unamplified
    return min(replaced, unamplified) if math.isfinite(replaced) else unamplified


def _format_up(value: float) -> str:
    """Return ``value`` rounded *up* to two significant digits, so that it is reachable."""
    if value <= 0 or not math.isfinite(value):
        return f"{value:g}"
    scale = 10 ** (math.floor(math.log10(value)) - 1)
    return f"{math.ceil(value / scale * (1 - 1e-12)) * scale:.10g}"


def solve_noise_multiplier(target_epsilon: float, sample_rate: float, steps: int, delta: float,
                           accountant: str = "rdp", *,
                           tolerance: float = 0.01) -> float:
    """Return the smallest σ (up to relative ``tolerance``) whose ε at ``delta`` is <= target.

    The answer σ satisfies ``epsilon(σ, ...) <= target_epsilon`` and, unless it is
    :data:`MIN_NOISE_MULTIPLIER`, ``epsilon(σ·(1 − tolerance), ...) > target_epsilon``
    (a bracketed search; ε decreases in σ).  Raises :class:`ConfigError` when even
    :data:`MAX_NOISE_MULTIPLIER` does not reach the target, naming the smallest ε that can
    be reached.
    """
    target = _check_epsilon(target_epsilon, "target epsilon")
    q = _check_sample_rate(sample_rate)
    count = _check_steps(steps)
    delta = check_delta(delta)
    accountant = _check_accountant(accountant)
    tol = _real(tolerance, "tolerance")
    if not 0 < tol < 0.5:
        raise ConfigError(f"tolerance must be in (0, 0.5), got {tolerance!r}; 0.01 (1 %) is usual")
    if count == 0:
        raise ConfigError("solving a noise multiplier for 0 steps: nothing is released, so any "
                          "noise meets any ε; train at least one step or turn DP off")

    def eps_at(sigma: float, which: str = accountant) -> float:
        return epsilon(sigma, q, count, delta, which)

    def unreachable(floor: float) -> ConfigError:
        reachable = _format_up(floor)
        return ConfigError(
            f"ε={target:g} cannot be reached with δ={delta:g} over {count} steps at sampling "
            f"rate {q:g} (noise multiplier ≤ {MAX_NOISE_MULTIPLIER:g} reaches ε ≥ {reachable}); "
            f"ask for ε ≥ {reachable}, or train fewer steps / sample a smaller fraction")

    # PRV ε <= RDP ε (epsilon_of takes the smaller), so an RDP answer is a valid upper end
    # for PRV, and RDP (cached, ~ms) narrows the search before PRV (~0.1 s a call) runs.
    def rdp_at(sigma: float) -> float:
        return eps_at(sigma, "rdp")

    bracket = _bracket(rdp_at, target, _initial_guess(target, q, count, delta))
    if bracket is None:  # RDP cannot reach the target even at MAX_NOISE_MULTIPLIER
        floor = eps_at(MAX_NOISE_MULTIPLIER)
        if floor > target:
            raise unreachable(floor)
        high = MAX_NOISE_MULTIPLIER  # only PRV gets here
    else:
        high = bracket if isinstance(bracket, float) else _search(rdp_at, target, *bracket, tol)
    if accountant == "rdp" or high == MIN_NOISE_MULTIPLIER:
        return high
    # The PRV σ is typically 5–15 % below the RDP one: bracket it downwards from there.
    bracket = _bracket(eps_at, target, high, upper=(high, eps_at(high)))
    if bracket is None:  # pragma: no cover - eps_at(high) <= target was just checked
        raise unreachable(eps_at(MAX_NOISE_MULTIPLIER))
    return bracket if isinstance(bracket, float) else _search(eps_at, target, *bracket, tol)


def gaussian_mu(target_epsilon: float, delta: float) -> float:
    """Return μ of the one Gaussian mechanism whose ε at ``delta`` is ``target_epsilon``."""
    def excess(mu: float) -> float:  # δ(ε) increases with μ
        return gaussian_delta_exact(target_epsilon, mu) - delta

    if excess(1e3) <= 0:
        return 1e3
    return float(optimize.brentq(excess, 1e-9, 1e3, xtol=1e-12, rtol=1e-6))


def _initial_guess(target_epsilon: float, sample_rate: float, steps: int, delta: float) -> float:
    """Return a starting σ for the search: a cheap approximation of the answer.

    q = 1: T steps are one Gaussian with μ = √T/σ (Balle & Wang 2018), exactly.  q < 1: the
    central-limit approximation of Bu, Dong, Long & Su 2020, μ ≈ q·sqrt(T·(e^{1/σ²} − 1)).
    RDP then needs ~10 % more noise.  Only the search's speed depends on this guess.
    """
    mu = gaussian_mu(target_epsilon, delta)
    if sample_rate == 1:
        sigma = math.sqrt(steps) / mu
    else:
        sigma = 1 / math.sqrt(math.log1p((mu / sample_rate) ** 2 / steps))
    return min(max(1.1 * sigma, MIN_NOISE_MULTIPLIER), MAX_NOISE_MULTIPLIER)


Bracket: TypeAlias = tuple[tuple[float, float], tuple[float, float]]


def _bracket(eps_at: Callable[[float], float], target: float, start: float, *,
             upper: tuple[float, float] | None = None) -> float | Bracket | None:
    """Return ((low, ε), (high, ε)) with ε(low) > target >= ε(high) around ``start``.

    Steps out from ``start`` by a factor 1.25, then 1.25², ... so a poor start costs only
    logarithmically many evaluations.  Returns MIN_NOISE_MULTIPLIER when that σ already
    meets the target, and None when MAX_NOISE_MULTIPLIER does not.  ``upper`` is a known
    (σ, ε <= target) to start from instead.
    """
    sigma, value = upper if upper is not None else (start, eps_at(start))
    factor = 1.25
    if value > target:
        while sigma < MAX_NOISE_MULTIPLIER:
            above = min(sigma * factor, MAX_NOISE_MULTIPLIER)
            above_value = eps_at(above)
            if above_value <= target:
                return (sigma, value), (above, above_value)
            sigma, value, factor = above, above_value, factor * factor
        return None
    while sigma > MIN_NOISE_MULTIPLIER:
        below = max(sigma / factor, MIN_NOISE_MULTIPLIER)
        below_value = eps_at(below)
        if below_value > target:
            return (below, below_value), (sigma, value)
        sigma, value, factor = below, below_value, factor * factor
    return MIN_NOISE_MULTIPLIER


def _search(eps_at: Callable[[float], float], target: float, lower: tuple[float, float],
            upper: tuple[float, float], tolerance: float) -> float:
    """Return the smallest σ in (low, high] with eps_at(σ) <= target, to relative tolerance.

    ``lower`` = (low, eps_at(low)) with eps_at(low) > target, ``upper`` = (high,
    eps_at(high)) with eps_at(high) <= target; eps_at nonincreasing.  Safeguarded regula
    falsi on (log σ, log ε), which is close to linear: interpolate, probe just above the
    estimate, then probe ``high·(1 − tolerance)`` to close the bracket; fall back to
    geometric bisection whenever an iteration fails to halve the bracket.  Usually 2–4
    evaluations instead of bisection's ~10.
    """
    (low, eps_low), (high, eps_high) = lower, upper

    def probe(sigma: float) -> bool:
        nonlocal low, eps_low, high, eps_high
        value = eps_at(sigma)
        if value <= target:
            high, eps_high = sigma, value
            return True
        low, eps_low = sigma, value
        return False

    bisect = False
    while low < high * (1 - tolerance):
        width = math.log(high / low)
        candidate = math.sqrt(low * high)
        if not bisect and eps_high > 0 and math.isfinite(eps_low):
            fraction = math.log(eps_low / target) / math.log(eps_low / eps_high)
            estimate = low * math.exp(fraction * width) * (1 + tolerance / 2)
            if low < estimate:
                candidate = min(estimate, high * (1 - tolerance))
        # Close the bracket from below when the new high is already near the root (its ε
        # within ~2·tolerance of the target: ε(σ) is roughly ∝ σ^-1 to σ^-2 there).
        if (probe(candidate) and eps_high >= target * (1 - 2 * tolerance)
                and low < high * (1 - tolerance)):
            probe(high * (1 - tolerance))
        bisect = math.log(high / low) > width / 2
    return high


# --------------------------------------------------------------------------- closed forms


def gaussian_delta_exact(epsilon: float, sensitivity_over_sigma: float) -> float:
    """Return the exact δ(ε) of one Gaussian mechanism with ratio μ = Δ/σ (Balle & Wang 2018).

    δ(ε) = Φ(μ/2 − ε/μ) − e^ε Φ(−μ/2 − ε/μ), evaluated in log space so that small δ keep
    their relative accuracy.  μ = 0 (infinite noise) gives 0; μ = ∞ gives 1.
    """
    eps = _real(epsilon, "epsilon")
    if not (math.isfinite(eps) and eps >= 0):
        raise ConfigError(f"epsilon must be a finite number >= 0, got {epsilon!r}")
    mu = _real(sensitivity_over_sigma, "sensitivity / sigma")
    if math.isnan(mu) or mu < 0:
        raise ConfigError(f"sensitivity / sigma must be >= 0, got {sensitivity_over_sigma!r}")
    if mu == 0:
        return 0.0
    if math.isinf(mu):
        return 1.0
    log_first = float(special.log_ndtr(mu / 2 - eps / mu))
    log_second = eps + float(special.log_ndtr(-mu / 2 - eps / mu))
    if log_second >= log_first:
        return 0.0
    return float(-math.exp(log_first) * math.expm1(log_second - log_first))


def gaussian_epsilon_exact(noise_multiplier: float, steps: int, delta: float) -> float:
    """Return the exact ε of ``steps`` unsubsampled (q = 1) Gaussian mechanisms at ``delta``.

    T Gaussian mechanisms of noise multiplier σ compose to one with μ = √T / σ; ε is the
    root of :func:`gaussian_delta_exact` (δ decreases in ε), found by bracketing and Brent's
    method to 1e-12 absolute.
    """
    sigma = _check_noise_multiplier(noise_multiplier)
    count = _check_steps(steps)
    delta = check_delta(delta)
    if count == 0:
        return 0.0
    mu = math.sqrt(count) / sigma
    if gaussian_delta_exact(0.0, mu) <= delta:
        return 0.0
    high = 1.0
    while gaussian_delta_exact(high, mu) > delta:
        high *= 2
    return float(optimize.brentq(lambda e: gaussian_delta_exact(e, mu) - delta, 0.0, high,
                                 xtol=1e-12, rtol=1e-12))


def delta_warning(delta: float, population: int, unit: str) -> str | None:
    """Return a warning when δ is not small against 1/``population``, else ``None``.

    A mechanism that publishes one randomly chosen ``unit`` (client, training record) in
    full is (0, 1/population)-DP, so δ >= 1/population promises nothing.
    """
    delta = check_delta(delta)
    size = _check_count(population, "population (number of clients or records)", minimum=1)
    if delta < 1 / size:
        return None
    suggestion = min(-5, math.floor(math.log10(1 / size)) - 1)
    plural = unit if size == 1 else f"{unit}s"
    return (f"δ={delta:g} is not small against 1/{size} ({size} {plural}): a mechanism that "
            f"leaks one whole {unit} at random satisfies it; use δ < 1/{size}, "
            f"e.g. 1e{suggestion}")
