"""Gaussian DP conversions (Dong, Roth & Su 2022) and the Andrew et al. (2024) ε estimate."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedpriv.audits.gdp import gaussian_epsilon_estimate, gaussian_mu, gdp_delta, gdp_epsilon
from fedpriv.errors import DataError


@settings(max_examples=60, deadline=None)
@given(st.floats(0.05, 8.0), st.sampled_from([1e-8, 1e-5, 1e-3, 0.05]))
def test_epsilon_and_mu_invert_each_other(mu: float, delta: float) -> None:
    epsilon = gdp_epsilon(mu, delta)
    if epsilon > 0:
        assert gdp_delta(mu, epsilon) == pytest.approx(delta, rel=1e-6)
        assert gaussian_mu(epsilon, delta) == pytest.approx(mu, rel=1e-6)
    else:
        assert gdp_delta(mu, 0.0) <= delta


def test_known_values_and_edges() -> None:
    # 1-GDP is (ε, 1e-5)-DP at ε ≈ 4.38 (Dong et al.'s Figure 3 range).
    assert gdp_epsilon(1.0, 1e-5) == pytest.approx(4.377, abs=1e-3)
    assert gdp_epsilon(0.0, 1e-5) == 0.0
    assert gdp_delta(0.0, 1.0) == 0.0
    assert gaussian_mu(0.0, 1e-5) == pytest.approx(2.5e-5, rel=0.01)  # δ(0) = 2Φ(μ/2) - 1
    with pytest.raises(DataError, match="delta"):
        gdp_epsilon(1.0, 0.0)
    with pytest.raises(DataError, match="epsilon"):
        gaussian_mu(-1.0, 1e-5)


@pytest.mark.parametrize("mu", [0.2, 0.5, 1.0, 2.0, 4.0])
@pytest.mark.parametrize("delta", [1e-5, 1e-3])
def test_epsilon_matches_dp_accounting_for_one_gaussian_mechanism(mu: float,
                                                                  delta: float) -> None:
    dp_accounting = pytest.importorskip("dp_accounting")
    from dp_accounting.pld import pld_privacy_accountant
    from dp_accounting.rdp import rdp_privacy_accountant

    event = dp_accounting.GaussianDpEvent(noise_multiplier=1 / mu)
    pld = pld_privacy_accountant.PLDAccountant(value_discretization_interval=1e-3)
    pld.compose(event)
    assert gdp_epsilon(mu, delta) == pytest.approx(pld.get_epsilon(delta), rel=0.01)
    rdp = rdp_privacy_accountant.RdpAccountant()
    rdp.compose(event)
    assert gdp_epsilon(mu, delta) <= rdp.get_epsilon(delta) * (1 + 1e-6)  # RDP is looser


@pytest.mark.parametrize("mu", [0.5, 1.0, 2.0, 3.0])
def test_estimate_recovers_epsilon_from_gaussian_scores(mu: float) -> None:
    rng = np.random.default_rng(int(mu * 10))
    scores_in, scores_out = rng.normal(mu, 1.0, 2000), rng.normal(0.0, 1.0, 2000)
    estimate = gaussian_epsilon_estimate(scores_in, scores_out, delta=1e-5)
    assert estimate == pytest.approx(gdp_epsilon(mu, 1e-5), rel=0.10)


def test_estimate_is_scale_free_clipped_and_checked() -> None:
    rng = np.random.default_rng(0)
    scores_in, scores_out = rng.normal(1.0, 1.0, 500), rng.normal(0.0, 1.0, 500)
    base = gaussian_epsilon_estimate(scores_in, scores_out, delta=1e-5)
    assert gaussian_epsilon_estimate(3 * scores_in + 7, 3 * scores_out + 7,
                                     delta=1e-5) == pytest.approx(base)
    assert gaussian_epsilon_estimate(scores_out, scores_in + 5, delta=1e-5) == 0.0
    with pytest.raises(DataError, match="at least two"):
        gaussian_epsilon_estimate([1.0], scores_out, delta=1e-5)
    with pytest.raises(DataError, match="all equal"):
        gaussian_epsilon_estimate(scores_in, [2.0, 2.0], delta=1e-5)
    with pytest.raises(DataError, match="not finite"):
        gaussian_epsilon_estimate([1.0, np.inf], scores_out, delta=1e-5)
