"""Accounting: cross-checked against closed forms and Google's dp-accounting.

References used here are independent of Opacus: the analytic Gaussian mechanism (Balle &
Wang 2018) evaluated by numerical integration and by dp-accounting, dp-accounting's RDP
accountant (same orders) and its PLD accountant (a different numerical method than PRV).
"""

from __future__ import annotations

import math
import re
import time

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import integrate, stats

from fedpriv.dp.accounting import (
    ACCOUNTANTS,
    DEFAULT_ACCOUNTANT,
    MAX_NOISE_MULTIPLIER,
    MIN_NOISE_MULTIPLIER,
    RDP_ORDERS,
    GaussianSteps,
    check_delta,
    delta_warning,
    epsilon,
    epsilon_both,
    epsilon_of,
    epsilon_replace_one,
    gaussian_delta_exact,
    gaussian_epsilon_exact,
    solve_noise_multiplier,
)
from fedpriv.errors import ConfigError

dp_accounting = pytest.importorskip("dp_accounting")
from dp_accounting.pld import pld_privacy_accountant  # noqa: E402
from dp_accounting.pld.privacy_loss_mechanism import GaussianPrivacyLoss  # noqa: E402
from dp_accounting.rdp import rdp_privacy_accountant  # noqa: E402

FAST = settings(max_examples=25, deadline=None)


def _event(sigma: float, q: float):
    gaussian = dp_accounting.GaussianDpEvent(sigma)
    return gaussian if q == 1 else dp_accounting.PoissonSampledDpEvent(q, gaussian)


def _google_rdp(stretches, delta, orders=RDP_ORDERS) -> float:
    accountant = rdp_privacy_accountant.RdpAccountant(orders=list(orders))
    for sigma, q, steps in stretches:
        accountant.compose(_event(sigma, q), steps)
    return float(accountant.get_epsilon(delta))


def _google_pld(stretches, delta) -> float:
    accountant = pld_privacy_accountant.PLDAccountant(value_discretization_interval=1e-3)
    for sigma, q, steps in stretches:
        accountant.compose(_event(sigma, q), steps)
    return float(accountant.get_epsilon(delta))


# ------------------------------------------------------------------ closed forms (q = 1)

def _delta_by_integration(eps: float, mu: float) -> float:
    """δ(ε) = ∫ max(0, p(x) − e^ε q(x)) dx for p = N(μ, 1), q = N(0, 1), by quadrature."""
    crossing = eps / mu + mu / 2  # p(x) >= e^ε q(x) exactly for x >= crossing
    value, _ = integrate.quad(
        lambda x: stats.norm.pdf(x - mu) - math.exp(eps) * stats.norm.pdf(x),
        crossing, np.inf, epsabs=1e-14, epsrel=1e-10, limit=200)
    return value


@pytest.mark.parametrize(("eps", "mu"), [(0.0, 1.0), (0.5, 1.0), (1.0, 0.5), (3.0, 2.0),
                                         (8.0, 4.0), (0.1, 0.05)])
def test_gaussian_delta_matches_numerical_integration(eps, mu):
    assert gaussian_delta_exact(eps, mu) == pytest.approx(_delta_by_integration(eps, mu),
                                                          rel=1e-7, abs=1e-14)


@FAST
@given(eps=st.floats(0, 30), mu=st.floats(0.02, 15))
def test_gaussian_delta_matches_dp_accounting(eps, mu):
    reference = GaussianPrivacyLoss(standard_deviation=1 / mu).get_delta_for_epsilon(eps)
    assert gaussian_delta_exact(eps, mu) == pytest.approx(reference, rel=1e-6, abs=1e-15)


def test_gaussian_delta_edge_cases_and_monotonicity():
    assert gaussian_delta_exact(1.0, 0.0) == 0.0
    assert gaussian_delta_exact(1.0, math.inf) == 1.0
    assert gaussian_delta_exact(0.0, 1.0) == pytest.approx(2 * stats.norm.cdf(0.5) - 1)
    deltas = [gaussian_delta_exact(e, 2.0) for e in np.linspace(0, 10, 50)]
    assert np.all(np.diff(deltas) < 0)
    with pytest.raises(ConfigError):
        gaussian_delta_exact(-1.0, 1.0)
    with pytest.raises(ConfigError):
        gaussian_delta_exact(1.0, -1.0)


@pytest.mark.parametrize(("eps", "mu"), [(40.0, 3.0), (1000.0, 30.0), (200.0, 6.0),
                                         (500.0, 12.0), (1e-3, 1e-3), (0.01, 0.02)])
def test_gaussian_delta_keeps_relative_accuracy_in_the_tails(eps, mu):
    """Tiny δ (both terms underflow-prone) and tiny μ (the two terms nearly cancel)."""
    mpmath = pytest.importorskip("mpmath")
    mpmath.mp.dps = 60
    e, m = mpmath.mpf(eps), mpmath.mpf(mu)
    exact = mpmath.ncdf(m / 2 - e / m) - mpmath.exp(e) * mpmath.ncdf(-m / 2 - e / m)
    ours = gaussian_delta_exact(eps, mu)
    assert ours > 0
    assert ours == pytest.approx(float(exact), rel=1e-9)


@pytest.mark.parametrize(("sigma", "steps", "delta"),
                         [(1.0, 1, 1e-5), (2.0, 100, 1e-5), (5.0, 1000, 1e-6), (20.0, 10, 1e-3)])
def test_gaussian_epsilon_exact_inverts_delta(sigma, steps, delta):
    eps = gaussian_epsilon_exact(sigma, steps, delta)
    assert gaussian_delta_exact(eps, math.sqrt(steps) / sigma) == pytest.approx(delta, rel=1e-8)
    reference = dp_accounting.get_epsilon_gaussian(sigma / math.sqrt(steps), delta)
    assert eps == pytest.approx(reference, rel=1e-8)


def test_gaussian_epsilon_exact_zero_cases():
    assert gaussian_epsilon_exact(1.0, 0, 1e-5) == 0.0
    # so much noise that δ(0) is already below the target: (0, δ)-DP
    assert gaussian_epsilon_exact(1e4, 1, 0.5) == 0.0


@pytest.mark.parametrize(("sigma", "steps", "delta"),
                         [(1.0, 1, 1e-5), (2.0, 100, 1e-5), (5.0, 1000, 1e-6), (20.0, 10, 1e-3),
                          (50.0, 10, 1e-5)])
def test_accountants_against_exact_gaussian_without_subsampling(sigma, steps, delta):
    exact = gaussian_epsilon_exact(sigma, steps, delta)
    prv = epsilon(sigma, 1.0, steps, delta, "prv")
    rdp = epsilon(sigma, 1.0, steps, delta, "rdp")
    # PRV: within ~2 % of exact, and never below it: we report the upper end of PRV's
    # error interval (estimate + eps_error, eps_error = min(0.01, 1 % of ε) here), not the
    # point estimate, which is within 1e-5 of exact in these cases
    assert exact + 0.5 * min(0.01, 0.01 * exact) <= prv <= exact * 1.02
    # RDP: a valid but looser upper bound
    assert exact <= rdp <= 1.5 * exact


# ------------------------------------------------------------------ subsampled (q < 1)

# Optimal RDP order is an integer here, where both libraries use the exact binomial
# expansion: agreement to rounding.
@pytest.mark.parametrize(("sigma", "q", "steps", "delta"),
                         [(1.0, 0.01, 1000, 1e-5), (0.7, 0.001, 10000, 1e-5),
                          (1.0, 1.0, 100, 1e-5)])
def test_rdp_matches_dp_accounting_at_integer_orders(sigma, q, steps, delta):
    ours = epsilon(sigma, q, steps, delta, "rdp")
    assert ours == pytest.approx(_google_rdp([(sigma, q, steps)], delta), rel=1e-5)


# dp-accounting bounds fractional orders from above (and drops those whose series does not
# converge), Opacus evaluates them exactly: ours may be lower, by little.
@pytest.mark.parametrize(("sigma", "q", "steps", "delta"),
                         [(0.8, 0.05, 500, 1e-5), (2.0, 0.2, 300, 1e-6), (5.0, 0.5, 50, 1e-5),
                          (1.2, 0.1, 2000, 1e-5)])
def test_rdp_close_to_dp_accounting_same_orders(sigma, q, steps, delta):
    ours = epsilon(sigma, q, steps, delta, "rdp")
    google = _google_rdp([(sigma, q, steps)], delta)
    assert google * 0.99 <= ours <= google * (1 + 1e-9)
    integer_orders = [a for a in RDP_ORDERS if float(a).is_integer()]
    assert ours <= _google_rdp([(sigma, q, steps)], delta, integer_orders) * (1 + 1e-9)


@pytest.mark.parametrize(("sigma", "q", "steps", "delta"),
                         [(1.0, 0.01, 1000, 1e-5), (0.8, 0.05, 500, 1e-5), (2.0, 0.2, 300, 1e-6),
                          (5.0, 0.5, 50, 1e-5), (0.7, 0.001, 10000, 1e-5)])
def test_prv_matches_dp_accounting_pld(sigma, q, steps, delta):
    ours = epsilon(sigma, q, steps, delta, "prv")
    assert ours == pytest.approx(_google_pld([(sigma, q, steps)], delta), rel=0.03)
    assert ours <= epsilon(sigma, q, steps, delta, "rdp")


def test_prv_is_fast_for_tens_of_thousands_of_steps():
    epsilon(1.0, 0.01, 10, 1e-5, "prv")  # imports
    start = time.perf_counter()
    value = epsilon(1.0, 0.004, 50_000, 1e-5, "prv")
    elapsed = time.perf_counter() - start
    assert elapsed < 5.0  # ~0.1 s on one core; generous for a loaded CI machine
    assert value == pytest.approx(_google_pld([(1.0, 0.004, 50_000)], 1e-5), rel=0.03)


def test_prv_agrees_with_opacus_prv_accountant():
    from opacus.accountants import PRVAccountant

    accountant = PRVAccountant()
    accountant.history = [(1.0, 0.02, 400), (2.0, 0.05, 300)]
    reference = accountant.get_epsilon(1e-5)
    ours = epsilon_of([GaussianSteps(1.0, 0.02, 400), GaussianSteps(2.0, 0.05, 300)], 1e-5, "prv")
    assert ours == pytest.approx(reference, abs=0.03)


# ------------------------------------------------------------------ composition

def test_epsilon_of_single_stretch_is_epsilon():
    for accountant in ACCOUNTANTS:
        assert epsilon_of([GaussianSteps(1.1, 0.02, 700)], 1e-5, accountant) == pytest.approx(
            epsilon(1.1, 0.02, 700, 1e-5, accountant), rel=1e-12)


def test_epsilon_of_rdp_is_the_hand_composed_curve():
    from opacus.accountants.analysis.rdp import compute_rdp, get_privacy_spent

    orders = list(RDP_ORDERS)
    curve = (compute_rdp(q=0.02, noise_multiplier=1.0, steps=400, orders=orders)
             + compute_rdp(q=0.1, noise_multiplier=3.0, steps=250, orders=orders))
    by_hand, _ = get_privacy_spent(orders=orders, rdp=curve, delta=1e-5)
    first, second = GaussianSteps(1.0, 0.02, 400), GaussianSteps(3.0, 0.1, 250)
    both = epsilon_of([first, second], 1e-5, "rdp")
    assert both == pytest.approx(float(by_hand), rel=1e-10)
    assert both > epsilon_of([first], 1e-5, "rdp") and both > epsilon_of([second], 1e-5, "rdp")
    # RDP beats naive composition
    assert both < epsilon_of([first], 1e-5, "rdp") + epsilon_of([second], 1e-5, "rdp")
    assert both == pytest.approx(_google_rdp([(1.0, 0.02, 400), (3.0, 0.1, 250)], 1e-5),
                                 rel=0.01)


def test_epsilon_of_prv_heterogeneous():
    first, second = GaussianSteps(1.0, 0.02, 400), GaussianSteps(3.0, 0.1, 250)
    both = epsilon_of([first, second], 1e-5, "prv")
    assert both > epsilon_of([first], 1e-5, "prv")
    assert both > epsilon_of([second], 1e-5, "prv")
    assert both == pytest.approx(_google_pld([(1.0, 0.02, 400), (3.0, 0.1, 250)], 1e-5),
                                 rel=0.03)
    # splitting a homogeneous stretch changes nothing but numerical error
    split = epsilon_of([GaussianSteps(1.0, 0.02, 150), GaussianSteps(1.0, 0.02, 250)], 1e-5,
                       "prv")
    assert split == pytest.approx(epsilon_of([first], 1e-5, "prv"), rel=0.02)


def test_no_steps_spend_nothing():
    for accountant in ACCOUNTANTS:
        assert epsilon(1.0, 0.5, 0, 1e-5, accountant) == 0.0
        assert epsilon_of([], 1e-5, accountant) == 0.0
        assert epsilon_of([GaussianSteps(1.0, 0.1, 0)] * 3, 1e-5, accountant) == 0.0
    # zero-step stretches do not disturb the rest
    assert epsilon_of([GaussianSteps(0.5, 0.9, 0), GaussianSteps(1.0, 0.1, 50)], 1e-5, "rdp") == (
        epsilon(1.0, 0.1, 50, 1e-5, "rdp"))


@FAST
@given(sigma=st.floats(0.3, 50), ratio=st.floats(1.001, 3), q=st.floats(0.001, 1),
       steps=st.integers(1, 3000))
def test_rdp_epsilon_decreases_in_noise(sigma, ratio, q, steps):
    more_noise = epsilon(sigma * ratio, q, steps, 1e-5, "rdp")
    assert more_noise <= epsilon(sigma, q, steps, 1e-5, "rdp") * (1 + 1e-12)


@FAST
@given(sigma=st.floats(0.3, 50), q=st.floats(0.001, 1), steps=st.integers(1, 3000),
       more=st.integers(1, 3000))
def test_rdp_epsilon_increases_in_steps(sigma, q, steps, more):
    assert epsilon(sigma, q, steps, 1e-5, "rdp") <= epsilon(sigma, q, steps + more, 1e-5, "rdp")


@pytest.mark.parametrize(("q", "steps"), [(0.01, 1000), (0.3, 50)])
def test_prv_epsilon_monotone_on_a_grid(q, steps):
    values = [epsilon(s, q, steps, 1e-5, "prv") for s in (0.7, 1.0, 1.02, 2.0, 5.0)]
    assert np.all(np.diff(values) < 0)
    longer = [epsilon(1.0, q, t, 1e-5, "prv") for t in (steps // 2, steps, 2 * steps)]
    assert longer[0] < longer[1] < longer[2]


# ------------------------------------------------------------------ solving σ

@FAST
@given(target=st.floats(0.5, 20), q=st.floats(0.01, 1), steps=st.integers(1, 2000))
def test_solved_noise_is_smallest_meeting_target(target, q, steps):
    try:
        sigma = solve_noise_multiplier(target, q, steps, 1e-5, "rdp", tolerance=0.01)
    except ConfigError:
        # only when even the largest σ allowed cannot reach the target
        assert epsilon(MAX_NOISE_MULTIPLIER, q, steps, 1e-5, "rdp") > target
        return
    assert MIN_NOISE_MULTIPLIER <= sigma <= MAX_NOISE_MULTIPLIER
    assert epsilon(sigma, q, steps, 1e-5, "rdp") <= target
    assert sigma == MIN_NOISE_MULTIPLIER or epsilon(sigma * 0.99, q, steps, 1e-5, "rdp") > target


@pytest.mark.parametrize(("target", "q", "steps"),
                         [(8.0, 0.01, 1000), (1.0, 0.01, 5000), (3.0, 0.1, 2000), (0.5, 1.0, 1)])
def test_solved_noise_with_prv(target, q, steps):
    sigma = solve_noise_multiplier(target, q, steps, 1e-5, "prv")
    assert epsilon(sigma, q, steps, 1e-5, "prv") <= target
    assert epsilon(sigma * 0.99, q, steps, 1e-5, "prv") > target
    # the tighter accountant needs less noise for the same promise
    assert sigma < solve_noise_multiplier(target, q, steps, 1e-5, "rdp")


def test_solver_tolerance_is_relative():
    coarse = solve_noise_multiplier(2.0, 0.05, 500, 1e-5, "rdp", tolerance=0.2)
    assert epsilon(coarse, 0.05, 500, 1e-5, "rdp") <= 2.0
    assert epsilon(coarse * 0.8, 0.05, 500, 1e-5, "rdp") > 2.0
    fine = solve_noise_multiplier(2.0, 0.05, 500, 1e-5, "rdp", tolerance=0.001)
    assert fine <= coarse and epsilon(fine * 0.999, 0.05, 500, 1e-5, "rdp") > 2.0


def test_solver_returns_lower_end_when_any_noise_would_do():
    # one step at a tiny sampling rate: even σ = MIN_NOISE_MULTIPLIER stays far below 1e9
    assert epsilon(MIN_NOISE_MULTIPLIER, 1e-6, 1, 0.5, "rdp") < 1e9
    assert solve_noise_multiplier(1e9, 1e-6, 1, 0.5, "rdp") == MIN_NOISE_MULTIPLIER


@pytest.mark.parametrize("accountant", ACCOUNTANTS)
def test_unreachable_target_names_the_smallest_reachable_epsilon(accountant):
    with pytest.raises(ConfigError) as caught:
        solve_noise_multiplier(0.01, 0.25, 800, 1e-5, accountant)
    message = str(caught.value)
    assert "0.01" in message and "800 steps" in message and "0.25" in message
    match = re.search(r"reaches ε ≥ ([0-9.e+-]+)\)", message)
    assert match, message
    reachable = float(match.group(1))
    floor = epsilon(MAX_NOISE_MULTIPLIER, 0.25, 800, 1e-5, accountant)
    assert floor <= reachable <= floor * 1.05
    assert f"ask for ε ≥ {match.group(1)}" in message
    # and asking for it works
    sigma = solve_noise_multiplier(reachable, 0.25, 800, 1e-5, accountant)
    assert sigma <= MAX_NOISE_MULTIPLIER


# ------------------------------------------------------------------ validation

def test_zero_noise_is_refused():
    with pytest.raises(ConfigError, match="noise multiplier is 0"):
        epsilon(0.0, 0.1, 10, 1e-5)
    with pytest.raises(ConfigError, match="noise multiplier is 0"):
        GaussianSteps(0, 0.1, 10)
    with pytest.raises(ConfigError, match="noise multiplier"):
        gaussian_epsilon_exact(0.0, 10, 1e-5)


@pytest.mark.parametrize("sigma", [-1.0, math.inf, math.nan, "1.0", None])
def test_bad_noise_multiplier(sigma):
    with pytest.raises(ConfigError, match="noise multiplier"):
        epsilon(sigma, 0.1, 10, 1e-5)


@pytest.mark.parametrize("delta", [0.0, 1.0, -1e-5, 2.0, math.nan, math.inf, "1e-5", None])
def test_bad_delta(delta):
    with pytest.raises(ConfigError, match="delta"):
        check_delta(delta)
    with pytest.raises(ConfigError, match="delta"):
        epsilon(1.0, 0.1, 10, delta)
    with pytest.raises(ConfigError, match="delta"):
        solve_noise_multiplier(1.0, 0.1, 10, delta)


def test_check_delta_accepts_and_returns_float():
    assert check_delta(1e-5) == 1e-5
    assert isinstance(check_delta(np.float32(0.5)), float)


@pytest.mark.parametrize("q", [0.0, -0.1, 1.5, math.nan, math.inf, "0.1"])
def test_bad_sample_rate(q):
    with pytest.raises(ConfigError, match="sample rate"):
        epsilon(1.0, q, 10, 1e-5)
    with pytest.raises(ConfigError, match="sample rate"):
        solve_noise_multiplier(1.0, q, 10, 1e-5)


@pytest.mark.parametrize("steps", [-1, 1.5, 10.0, True, "10", None])
def test_bad_steps(steps):
    with pytest.raises(ConfigError, match="steps"):
        epsilon(1.0, 0.1, steps, 1e-5)


def test_numpy_integers_are_steps():
    assert epsilon(1.0, 0.1, np.int64(10), 1e-5) == epsilon(1.0, 0.1, 10, 1e-5)


def test_unknown_accountant_lists_the_valid_ones():
    for call in (lambda: epsilon(1.0, 0.1, 10, 1e-5, "gdp"),
                 lambda: epsilon_of([GaussianSteps(1.0, 0.1, 10)], 1e-5, "RDP"),
                 lambda: solve_noise_multiplier(1.0, 0.1, 10, 1e-5, "moments")):
        with pytest.raises(ConfigError, match="rdp, prv"):
            call()


@pytest.mark.parametrize("target", [0.0, -1.0, math.inf, math.nan])
def test_bad_target_epsilon(target):
    with pytest.raises(ConfigError, match="target epsilon"):
        solve_noise_multiplier(target, 0.1, 10, 1e-5)


def test_bad_solver_arguments():
    with pytest.raises(ConfigError, match="tolerance"):
        solve_noise_multiplier(1.0, 0.1, 10, 1e-5, tolerance=0.0)
    with pytest.raises(ConfigError, match="tolerance"):
        solve_noise_multiplier(1.0, 0.1, 10, 1e-5, tolerance=0.7)
    with pytest.raises(ConfigError, match="0 steps"):
        solve_noise_multiplier(1.0, 0.1, 0, 1e-5)


def test_composition_must_hold_gaussian_steps():
    with pytest.raises(ConfigError, match="GaussianSteps"):
        epsilon_of([(1.0, 0.1, 10)], 1e-5)  # type: ignore[list-item]


def test_gaussian_steps_is_frozen_and_normalised():
    stretch = GaussianSteps(2, 1, np.int32(3))
    assert (stretch.noise_multiplier, stretch.sample_rate, stretch.steps) == (2.0, 1.0, 3)
    assert isinstance(stretch.steps, int)
    with pytest.raises(AttributeError):
        stretch.steps = 4  # type: ignore[misc]


# ------------------------------------------------------------------ δ warning

def test_delta_warning_when_delta_is_not_small():
    message = delta_warning(0.05, 50, "client")
    assert message == ("δ=0.05 is not small against 1/50 (50 clients): a mechanism that leaks "
                       "one whole client at random satisfies it; use δ < 1/50, e.g. 1e-5")
    assert delta_warning(0.02, 50, "client") is not None  # exactly 1/n still warns
    assert delta_warning(0.0199, 50, "client") is None
    assert delta_warning(1e-5, 50, "client") is None
    many = delta_warning(1e-5, 1_000_000, "training record")
    assert many is not None
    assert "(1000000 training records)" in many and "e.g. 1e-7" in many
    assert "(2 clients)" in (delta_warning(0.5, 2, "client") or "")
    assert delta_warning(0.999, 1, "client") is None  # δ < 1 = 1/1 always


def test_delta_warning_validates():
    with pytest.raises(ConfigError, match="population"):
        delta_warning(1e-5, 0, "client")
    with pytest.raises(ConfigError, match="delta"):
        delta_warning(0.0, 10, "client")


def test_tiny_noise_is_finite_or_infinite_never_nan():
    for accountant in ACCOUNTANTS:
        value = epsilon(MIN_NOISE_MULTIPLIER, 0.5, 100, 1e-5, accountant)
        assert not math.isnan(value) and value > 1e3



# ------------------------------------------------------------------ replace-one, both accountants

@pytest.mark.parametrize(("sigma", "q"), [(1.0, 0.1), (0.5, 0.5), (3.0, 0.01), (1.2, 0.99)])
def test_replace_one_prv_cdf_against_the_privacy_loss(sigma, q):
    """P(L ≤ L(x)) = P_P(X ≥ x) for the pair P = qN(−1,σ²)+(1−q)N(0,σ²), Q = its mirror."""
    from fedpriv.dp.accounting import _ReplaceOnePoissonGaussianPRV

    prv = _ReplaceOnePoissonGaussianPRV(q, sigma)
    xs = np.linspace(-4 * sigma - 1, 4 * sigma + 1, 41)

    def density(x: np.ndarray, shift: float) -> np.ndarray:
        return q * stats.norm.pdf(x, shift, sigma) + (1 - q) * stats.norm.pdf(x, 0, sigma)

    losses = np.log(density(xs, -1.0)) - np.log(density(xs, 1.0))
    assert np.all(np.diff(losses) < 0)  # the loss decreases in x, as the CDF assumes
    survival = (q * stats.norm.sf(xs, -1.0, sigma) + (1 - q) * stats.norm.sf(xs, 0, sigma))
    np.testing.assert_allclose(prv.cdf(losses), survival, rtol=1e-6, atol=1e-12)
    # and the CDF is a CDF: 0 and 1 far out, nondecreasing, finite for huge |t|
    ends = prv.cdf(np.array([-1e4, -800.0, 800.0, 1e4]))
    np.testing.assert_allclose(ends, [0, 0, 1, 1], atol=1e-12)
    grid = prv.cdf(np.linspace(-50, 50, 2001))
    assert np.all(np.diff(grid) >= -1e-15) and np.all(np.isfinite(grid))


def test_replace_one_bounds_and_empty():
    steps = [GaussianSteps(1.0, 0.1, 100)]
    for accountant in ACCOUNTANTS:
        replaced = epsilon_replace_one(steps, 1e-5, accountant)
        assert epsilon_of(steps, 1e-5, accountant) < replaced
        assert replaced <= epsilon(0.5, 1.0, 100, 1e-5, accountant)  # never above no amplification
        assert epsilon_replace_one([], 1e-5, accountant) == 0.0
        assert epsilon_replace_one([GaussianSteps(1.0, 0.1, 0)], 1e-5, accountant) == 0.0
    # heterogeneous: q = 1 and q < 1 stretches compose
    mixed = epsilon_replace_one([GaussianSteps(4.0, 1.0, 8), GaussianSteps(1.0, 0.1, 50)], 1e-5)
    assert mixed > epsilon_replace_one([GaussianSteps(4.0, 1.0, 8)], 1e-5)
    assert mixed > epsilon_replace_one([GaussianSteps(1.0, 0.1, 50)], 1e-5)


def test_replace_one_and_both_validate():
    with pytest.raises(ConfigError, match="delta"):
        epsilon_replace_one([GaussianSteps(1.0, 0.1, 10)], 0.0)
    with pytest.raises(ConfigError, match="rdp, prv"):
        epsilon_replace_one([GaussianSteps(1.0, 0.1, 10)], 1e-5, "pld")
    with pytest.raises(ConfigError, match="GaussianSteps"):
        epsilon_replace_one([(1.0, 0.1, 10)], 1e-5)  # type: ignore[list-item]
    with pytest.raises(ConfigError, match="delta"):
        epsilon_both([GaussianSteps(1.0, 0.1, 10)], 1.5)
    with pytest.raises(ConfigError, match="GaussianSteps"):
        epsilon_both([(1.0, 0.1, 10)], 1e-5)  # type: ignore[list-item]
    assert epsilon_both([], 1e-5) == {"rdp": 0.0, "prv": 0.0}


@pytest.mark.parametrize("accountant", ACCOUNTANTS)
def test_accountants_never_below_the_pld_lower_bound(accountant):
    """Neither accountant (PRV is :data:`DEFAULT_ACCOUNTANT`) is ever optimistic."""
    from dp_accounting.pld import privacy_loss_distribution

    assert DEFAULT_ACCOUNTANT in ACCOUNTANTS
    for sigma, q, steps in [(1.0, 0.1, 100), (2.5, 0.5, 64), (4.0, 1.0, 8), (0.7, 0.01, 3000),
                            (20.0, 0.5, 10), (0.3, 0.2, 5)]:
        floor = privacy_loss_distribution.from_gaussian_mechanism(
            sigma, pessimistic_estimate=False, value_discretization_interval=1e-3,
            sampling_prob=q).self_compose(steps).get_epsilon_for_delta(1e-5)
        assert epsilon(sigma, q, steps, 1e-5, accountant) >= floor


def test_group_epsilon_is_exact_without_sampling_and_grows_with_the_group() -> None:
    """Copies of a unit at q = 1 are one Gaussian of σ/k (exact ε); with q < 1 ε grows with k."""
    from fedpriv.dp.accounting import GaussianSteps, epsilon_group, gaussian_epsilon_exact

    full = [GaussianSteps(4.0, 1.0, 10)]
    assert epsilon_group(full, 1e-5, 1) == pytest.approx(epsilon_of(full, 1e-5))
    for k in (2, 4):
        assert epsilon_group(full, 1e-5, k, "prv") == pytest.approx(
            gaussian_epsilon_exact(4.0 / k, 10, 1e-5), rel=0.03)
    sampled = [GaussianSteps(1.2, 0.05, 300)]
    base = epsilon_of(sampled, 1e-5)
    values = [epsilon_group(sampled, 1e-5, k) for k in (1, 2, 4)]
    assert values[0] == pytest.approx(base)
    assert base < values[1] < values[2]
    with pytest.raises(ConfigError, match="group size"):
        epsilon_group(sampled, 1e-5, 0)
