"""Canary clients (Andrew et al. 2024) through the real user-level and distributed DP server steps.

No model: the real clients' sum is a fixed vector, the canaries ride on the
same :func:`fedpriv.dp.rounds.server_mean` the loop calls, and the audit scores
what that releases.  The mutation test lives here at its cheapest: at a stated
ε = 1 the audit must flag the noise divided by 10 and must not flag the real
noise, over several seeds.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedpriv.attacks.client_canaries import CanaryClients
from fedpriv.audits.epsilon import one_run_audit
from fedpriv.dp.accounting import epsilon, gaussian_epsilon_exact, solve_noise_multiplier
from fedpriv.dp.distributed import DistributedDP, DistributedDPSettings
from fedpriv.dp.rounds import server_mean
from fedpriv.dp.user import UserDPSettings, UserLevelDP
from fedpriv.errors import ConfigError

DIM = 4096
M = 1000
DELTA = 1e-5


def user_run(sigma: float, rounds: int, *, noise_scale: float, seed: int,
             rate: float = 1.0) -> tuple[CanaryClients, np.ndarray]:
    """Release ``rounds`` rounds of user-level DP with canaries; return them and their scores."""
    clients = 10
    dp = UserLevelDP(UserDPSettings(noise_multiplier=sigma, clip=1.0), num_clients=clients,
                     clients_per_round=max(1, round(rate * clients)), seed=None,
                     secret=bytes([seed]) * 32)
    dp.noise_scale = noise_scale
    canaries = CanaryClients.draw(M, DIM, np.random.default_rng([seed, 1]),
                                  sample_rate=dp.sample_rate)
    real = np.random.default_rng([seed, 2]).normal(size=DIM)
    real *= 3.0 / np.linalg.norm(real)  # a few real clients' clipped sum, identical each round
    observed = []
    for r in range(rounds):
        extra = canaries.round_sum(DIM, dp.clip, np.random.default_rng([seed, 3, r]))
        mean, _ = server_mean(real, 1.0, update_size=DIM, round_index=r, user_dp=dp,
                              extra_sum=extra)
        observed.append(canaries.observe(r, mean * dp.expected_clients, norm=dp.clip,
                                         noise_std=dp.update_noise * dp.clip))
    return canaries, canaries.all_rounds_scores(observed)


def test_draw_places_each_canary_on_its_own_coordinate() -> None:
    canaries = CanaryClients.draw(300, 500, np.random.default_rng(0))
    assert len(set(canaries.coordinates.tolist())) == 300
    assert set(np.unique(canaries.signs).tolist()) <= {-1.0, 1.0}
    assert 100 < canaries.included.sum() < 200
    vector = canaries.round_sum(500, 2.0, np.random.default_rng(1))
    assert np.linalg.norm(vector[canaries.coordinates[~canaries.included]]) == 0
    assert np.allclose(canaries.project(vector)[canaries.included], 2.0)


@settings(max_examples=25, deadline=None)
@given(st.integers(2, 64), st.floats(0.05, 1.0), st.integers(0, 2**32 - 1))
def test_round_sum_takes_part_at_the_rate_and_only_when_included(
        count: int, rate: float, seed: int) -> None:
    canaries = CanaryClients.draw(count, 128, np.random.default_rng(seed), sample_rate=rate)
    vector = canaries.round_sum(128, 1.0, np.random.default_rng(seed + 1))
    present = canaries.project(vector)
    assert np.all(present[~canaries.included] == 0)
    assert np.all(np.isin(present, [0.0, 1.0]))
    assert np.linalg.norm(vector) <= np.sqrt(canaries.included.sum()) + 1e-12


def test_bad_inputs_say_what_to_do() -> None:
    with pytest.raises(ConfigError, match="client_canaries"):
        CanaryClients.draw(10, 5, np.random.default_rng(0))
    with pytest.raises(ConfigError, match="rate"):
        CanaryClients.draw(4, 5, np.random.default_rng(0), sample_rate=0.0)
    canaries = CanaryClients.draw(4, 5, np.random.default_rng(0))
    with pytest.raises(ConfigError, match="DP runs only"):
        canaries.observe(0, np.zeros(5), norm=1.0, noise_std=0.0)
    with pytest.raises(ConfigError, match="user-level or distributed"):
        server_mean(np.zeros(5), 1.0, update_size=5, round_index=0, extra_sum=np.zeros(5))


def test_scores_follow_the_gaussian_mechanism_they_observe() -> None:
    """Q = 1: the score is Σ(μx − μ²/2): N(−Tμ²/2, Tμ²) out, N(+Tμ²/2, Tμ²) in."""
    sigma, rounds = 4.0, 16
    canaries, scores = user_run(sigma, rounds, noise_scale=1.0, seed=0)
    mu_total = np.sqrt(rounds) / sigma
    out, inside = scores[~canaries.included], scores[canaries.included]
    assert abs(out.mean() + mu_total**2 / 2) < 4 * mu_total / np.sqrt(out.size)
    assert abs(inside.mean() - mu_total**2 / 2) < 4 * mu_total / np.sqrt(inside.size)
    assert 0.85 < out.std() / mu_total < 1.15


@pytest.mark.parametrize("seed", range(3))
def test_mutation_noise_over_ten_is_flagged_at_epsilon_one_and_real_noise_is_not(
        seed: int) -> None:
    rounds = 8
    sigma = solve_noise_multiplier(1.0, 1.0, rounds, DELTA)
    stated = epsilon(sigma, 1.0, rounds, DELTA)
    assert stated <= 1.0 + 1e-9
    assert abs(gaussian_epsilon_exact(sigma, rounds, DELTA) - stated) < 0.1
    canaries, real = user_run(sigma, rounds, noise_scale=1.0, seed=seed)
    honest = one_run_audit(real, canaries.included, delta=DELTA)
    assert honest.epsilon <= stated
    canaries, weak = user_run(sigma, rounds, noise_scale=0.1, seed=seed)
    broken = one_run_audit(weak, canaries.included, delta=DELTA)
    assert broken.epsilon > stated


def test_subsampled_rounds_use_the_mixture_likelihood() -> None:
    """Q < 1, broken noise: still flagged; real noise: the bound stays below the PLD-free ε."""
    rounds, rate = 20, 0.3
    sigma = solve_noise_multiplier(2.0, rate, rounds, DELTA)
    stated = epsilon(sigma, rate, rounds, DELTA)
    canaries, real = user_run(sigma, rounds, noise_scale=1.0, seed=5, rate=rate)
    assert one_run_audit(real, canaries.included, delta=DELTA).epsilon <= stated
    canaries, weak = user_run(sigma, rounds, noise_scale=0.0, seed=5, rate=rate)
    assert one_run_audit(weak, canaries.included, delta=DELTA).epsilon > stated


def test_distributed_dp_adds_canaries_before_the_clients_noise() -> None:
    """The decoded release holds each taking-part canary's full sensitivity, plus Skellam noise."""
    dim, clients = 256, 4
    mech = DistributedDP(DistributedDPSettings(noise_multiplier=1.0, clip=1.0, bits=20),
                         dim=dim, expected_clients=clients, seed=None, secret=b"k" * 32)
    mech.noise_scale = 0.0  # no noise: the decoded sum is exact up to rounding
    canaries = CanaryClients.draw(64, dim, np.random.default_rng(0))
    norm = mech.l2_sensitivity * mech.scale
    rng = np.random.default_rng(1)
    updates = [rng.normal(size=dim) * 0.01 for _ in range(clients)]
    residues = sum(mech.client_encode(u, 0, c)[0] for c, u in enumerate(updates))
    extra = canaries.round_sum(dim, norm, np.random.default_rng(2))
    mean, _ = server_mean(np.asarray(residues) / clients, float(clients), update_size=dim,
                          round_index=0, dist_dp=mech, extra_sum=extra)
    released = mean * mech.expected_clients
    expected = np.sum(updates, axis=0) + extra
    assert np.max(np.abs(released - expected)) < 4 * clients * mech.scale
    assert norm >= 1.0  # the accounted sensitivity is at least the clip bound
