"""User-level DP-FedAvg: clipping, central noise, fixed denominator, adaptive clipping, sampling."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from fedpriv.dp.noise import gaussian, noise_seed
from fedpriv.dp.user import (
    UserDPSettings,
    UserLevelDP,
    clip_update,
    next_clip,
    update_noise_multiplier,
)
from fedpriv.errors import ConfigError


@settings(max_examples=40, deadline=None)
@given(
    st.lists(st.floats(-100, 100, allow_nan=False), min_size=1, max_size=50),
    st.floats(1e-3, 10),
)
def test_clip_update_bounds_norm_and_keeps_direction(values, clip):
    update = np.array(values, dtype=np.float32)
    clipped, norm = clip_update(update, clip)
    assert norm == pytest.approx(float(np.linalg.norm(update.astype(np.float64))))
    assert np.linalg.norm(clipped.astype(np.float64)) <= clip * (1 + 1e-5)
    if norm <= clip:
        assert clipped is update
    else:
        np.testing.assert_allclose(clipped, update * (clip / norm), rtol=1e-5, atol=1e-12)


def test_gaussian_noise_is_standard_normal_and_keyed():
    key = noise_seed(7, 3)
    x = gaussian(key, 200_001, 1.0)
    assert x.shape == (200_001,)
    assert abs(x.mean()) < 0.01
    assert x.std() == pytest.approx(1.0, rel=0.01)
    assert stats.kstest(x, "norm").pvalue > 1e-3
    np.testing.assert_array_equal(gaussian(key, 200_001, 2.0), 2.0 * x)
    assert not np.allclose(gaussian(noise_seed(7, 4), 1000, 1.0), x[:1000])
    assert noise_seed(None, 1) != noise_seed(None, 1)  # fresh OS randomness when no seed
    with pytest.raises(ConfigError):
        gaussian(key, 10, -1.0)


def test_update_noise_multiplier_matches_andrew_et_al():
    # (σ_Δ⁻² + (2σ_b)⁻²)^(-1/2) gives back σ: the two queries together cost σ.
    sigma, sb = 1.0, 5.0
    z = update_noise_multiplier(sigma, sb)
    assert (z**-2 + (2 * sb) ** -2) ** -0.5 == pytest.approx(sigma)
    assert z > sigma
    with pytest.raises(ConfigError, match="2σ_b"):
        update_noise_multiplier(3.0, 1.0)


def test_next_clip_moves_towards_the_quantile():
    assert next_clip(1.0, 0.9, 0.5, 0.2) < 1.0  # most unclipped: bound too large, shrink
    assert next_clip(1.0, 0.1, 0.5, 0.2) > 1.0
    assert next_clip(1.0, 0.5, 0.5, 0.2) == pytest.approx(1.0)
    assert next_clip(2.0, 0.0, 0.5, 0.2) == pytest.approx(2.0 * math.exp(0.1))


def test_settings_validation():
    with pytest.raises(ConfigError, match="noise multiplier is 0"):
        UserDPSettings(noise_multiplier=0.0, clip=1.0)
    with pytest.raises(ConfigError, match="clip"):
        UserDPSettings(noise_multiplier=1.0, clip=-1.0)
    with pytest.raises(ConfigError, match="target_quantile"):
        UserDPSettings(noise_multiplier=1.0, clip=1.0, target_quantile=1.5)
    with pytest.raises(ConfigError, match="2σ_b"):  # 10 clients: σ_b = 0.5, so σ must be < 1
        UserLevelDP(UserDPSettings(noise_multiplier=2.0, clip=1.0, adaptive_clip=True),
                    num_clients=10, clients_per_round=10, seed=0)


def test_server_step_is_fixed_denominator_mean_plus_calibrated_noise():
    n, k, size = 100, 20, 50_000
    dp = UserLevelDP(UserDPSettings(noise_multiplier=1.5, clip=0.3),
                     num_clients=n, clients_per_round=k, seed=1)
    summed = np.full(size, 0.2)
    mean, info = dp.server_step(summed, size, round_index=0)
    assert info.clip == info.next_clip == 0.3
    noise = mean - summed / k  # divided by the *expected* number of clients qN = k
    assert abs(noise.mean()) < 5 * 1.5 * 0.3 / k / math.sqrt(size)
    assert noise.std() == pytest.approx(1.5 * 0.3 / k, rel=0.02)
    again, _ = dp.server_step(summed, size, round_index=0)
    np.testing.assert_array_equal(mean, again)  # seeded: reproducible audits
    other, _ = dp.server_step(summed, size, round_index=1)
    assert not np.allclose(other, mean)
    empty, _ = dp.server_step(None, size, round_index=2)  # nobody sampled: pure noise
    assert empty.std() == pytest.approx(1.5 * 0.3 / k, rel=0.02)
    with pytest.raises(ConfigError):
        dp.server_step(np.zeros(size + 1), size, round_index=3)


def test_poisson_client_sampling_rate():
    dp = UserLevelDP(UserDPSettings(noise_multiplier=1.0, clip=1.0),
                     num_clients=50, clients_per_round=10, seed=0)
    rng = np.random.default_rng(0)
    sizes = [len(dp.sample(rng)) for _ in range(2000)]
    assert np.mean(sizes) == pytest.approx(10, rel=0.03)
    assert len(set(sizes)) > 5  # variable, as Poisson sampling is
    full = UserLevelDP(UserDPSettings(noise_multiplier=1.0, clip=1.0),
                       num_clients=5, clients_per_round=5, seed=0)
    assert full.sample(rng) == (0, 1, 2, 3, 4)


def test_adaptive_clip_tracks_the_target_quantile():
    n = 2000
    dp = UserLevelDP(
        UserDPSettings(noise_multiplier=1.0, clip=3.0, adaptive_clip=True, target_quantile=0.5),
        num_clients=n, clients_per_round=n, seed=0,
    )
    rng = np.random.default_rng(1)
    size = 4
    for r in range(80):
        norms = rng.uniform(0.0, 1.0, n)  # median update norm 0.5
        vectors = []
        for norm in norms:
            update = np.zeros(size, dtype=np.float32)
            update[0] = norm
            vec, _ = dp.client_vector(update)
            assert vec.shape == (size + 1,)
            vectors.append(vec)
        dp.server_step(np.sum(vectors, axis=0, dtype=np.float64), size, round_index=r)
    assert dp.clip == pytest.approx(0.5, rel=0.1)


def test_client_vector_appends_the_unclipped_bit_only_when_adaptive():
    plain = UserLevelDP(UserDPSettings(noise_multiplier=1.0, clip=1.0),
                        num_clients=2, clients_per_round=2, seed=0)
    vec, norm = plain.client_vector(np.array([3.0, 4.0]))
    assert vec.shape == (2,) and norm == pytest.approx(5.0)
    np.testing.assert_allclose(vec, [0.6, 0.8])
    adaptive = UserLevelDP(
        UserDPSettings(noise_multiplier=0.5, clip=1.0, adaptive_clip=True, count_stddev=1.0),
        num_clients=2, clients_per_round=2, seed=0)
    # the bit is centred, b − ½ = ±½ (sensitivity ½, as Andrew et al.'s σ split assumes)
    np.testing.assert_allclose(adaptive.client_vector(np.array([3.0, 4.0]))[0], [0.6, 0.8, -0.5])
    np.testing.assert_allclose(adaptive.client_vector(np.array([0.3, 0.4]))[0], [0.3, 0.4, 0.5])
    # the boundary counts as unclipped, and the dtype of the update is kept
    boundary = adaptive.client_vector(np.array([0.0, 1.0], dtype=np.float32))[0]
    assert boundary.dtype == np.float32 and boundary[-1] == 0.5


@settings(max_examples=30, deadline=None)
@given(st.lists(st.floats(0.0, 5.0), min_size=1, max_size=40), st.floats(0.1, 4.0))
def test_adaptive_bits_are_plus_or_minus_half(norms, clip):
    """Whatever the update, the count coordinate a client sends is ±½: sensitivity ½."""
    dp = UserLevelDP(
        UserDPSettings(noise_multiplier=0.5, clip=clip, adaptive_clip=True, count_stddev=1.0),
        num_clients=len(norms), clients_per_round=len(norms), seed=0)
    for norm in norms:
        update = np.zeros(3)
        update[1] = norm
        bit = dp.client_vector(update)[0][-1]
        assert bit == (0.5 if norm <= clip else -0.5)


def test_server_estimates_the_unclipped_share_from_centred_bits():
    """b̄ = (Σ(b_i − ½) + noise)/(expected clients) + ½ is unbiased for the unclipped share."""
    k, unclipped, rounds = 40, 10, 3000
    dp = UserLevelDP(
        UserDPSettings(noise_multiplier=1.0, clip=1.0, adaptive_clip=True, clip_lr=1e-9),
        num_clients=k, clients_per_round=k, seed=3)
    bits = np.array([0.5] * unclipped + [-0.5] * (k - unclipped))
    fractions = []
    for r in range(rounds):
        summed = np.array([0.0, float(bits.sum())])
        fractions.append(dp.server_step(summed, 1, round_index=r)[1].noisy_unclipped_fraction)
    values = np.asarray(fractions, dtype=np.float64)
    # noise std of b̄ is σ_b / k = (k/20)/k = 0.05; the mean of 3000 rounds is within 5 s.e.
    assert values.std() == pytest.approx(dp.count_stddev / k, rel=0.05)
    assert abs(values.mean() - unclipped / k) < 5 * dp.count_stddev / k / math.sqrt(rounds)
