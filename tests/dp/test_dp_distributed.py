"""Distributed DP (Skellam through secure aggregation): rotation, rounding, noise, accounting."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import linalg, stats
from scipy.special import logsumexp

from fedpriv.dp import accounting
from fedpriv.dp.distributed import (
    DEFAULT_BETA,
    DistributedDP,
    DistributedDPSettings,
    centred_mod,
    choose_scale,
    conditional_round,
    hadamard_transform,
    padded_dimension,
    planned_epsilon,
    rounded_l2_bound,
    sensitivities,
    skellam_epsilon,
    skellam_rdp,
    solve_noise_multiplier,
    wraparound_probability,
)
from fedpriv.errors import ConfigError, ProtocolError
from fedpriv.protocols import ClientInput, RoundContext, create, run_round
from fedpriv.protocols.encoding import FixedPointSpec, decode_sum, encode, sum_words

FAST = settings(max_examples=30, deadline=None)


def clipped(update: np.ndarray, clip: float) -> np.ndarray:
    norm = float(np.linalg.norm(update))
    return update * (clip / norm) if norm > clip else update


def residues_to_sum(dp: DistributedDP, vectors: list[np.ndarray]) -> np.ndarray:
    """Return what the server gets from an exact secure sum of the values, as integers."""
    total = np.sum(vectors, axis=0)
    return dp.residue_sum(total / len(vectors), float(len(vectors)))


# --------------------------------------------------------------------------- rotation


@pytest.mark.parametrize("size", [1, 2, 8, 64])
def test_hadamard_transform_matches_the_matrix_and_is_its_own_inverse(size):
    x = np.random.default_rng(size).normal(size=size)
    reference = linalg.hadamard(size) @ x / math.sqrt(size)
    np.testing.assert_allclose(hadamard_transform(x), reference, atol=1e-12)
    np.testing.assert_allclose(hadamard_transform(hadamard_transform(x)), x, atol=1e-12)
    assert np.linalg.norm(hadamard_transform(x)) == pytest.approx(np.linalg.norm(x))
    with pytest.raises(ConfigError, match="power of two"):
        hadamard_transform(np.ones(3 * size + 3))


def test_padded_dimension():
    assert [padded_dimension(d) for d in (1, 2, 3, 4, 5, 1000, 1024)] == [1, 2, 4, 4, 8, 1024, 1024]
    with pytest.raises(ConfigError):
        padded_dimension(0)


def test_rotation_is_orthogonal_public_and_changes_every_round():
    s = DistributedDPSettings(1.0, 1.0)
    dp = DistributedDP(s, dim=100, expected_clients=3, seed=5)
    twin = DistributedDP(s, dim=100, expected_clients=3, seed=5)
    assert dp.padded_dim == 128
    x = np.random.default_rng(0).normal(size=128)
    y = dp.rotate(x, 4)
    assert np.linalg.norm(y) == pytest.approx(np.linalg.norm(x), rel=1e-12)
    np.testing.assert_allclose(dp.unrotate(y, 4), x, atol=1e-12)
    np.testing.assert_array_equal(twin.rotate(x, 4), y)  # same seed and round: same rotation
    assert not np.allclose(dp.rotate(x, 5), y)
    # The rotation matrix (columns = rotated basis vectors) is orthogonal.
    matrix = np.stack([dp.rotate(e, 4) for e in np.eye(128)], axis=1)
    np.testing.assert_allclose(matrix.T @ matrix, np.eye(128), atol=1e-12)
    # Without a seed, each run draws its own (public) rotation.
    a = DistributedDP(s, dim=100, expected_clients=3, seed=None)
    b = DistributedDP(s, dim=100, expected_clients=3, seed=None)
    assert not np.allclose(a.rotate(x, 0), b.rotate(x, 0))


# --------------------------------------------------------------------------- rounding


@FAST
@given(
    st.lists(st.floats(-50, 50, allow_nan=False), min_size=1, max_size=64),
    st.sampled_from([0.0, 0.1, DEFAULT_BETA, 0.9]),
    st.integers(0, 2**32),
)
def test_conditional_round_always_meets_its_bound(values, beta, seed):
    x = np.array(values)
    bound = rounded_l2_bound(float(np.linalg.norm(x)), beta, x.size)
    rounded, tries = conditional_round(x, bound, np.random.default_rng(seed))
    assert rounded.dtype == np.int64 and tries >= 1
    assert np.linalg.norm(rounded.astype(np.float64)) <= bound
    assert np.all((rounded == np.floor(x)) | (rounded == np.floor(x) + 1))


def test_conditional_round_is_nearly_unbiased_and_passes_with_probability_one_minus_beta():
    # The hardest vector for the bound: every fractional part 1/2 (maximal rounding variance).
    d, c = 256, 20.0
    x = np.full(d, 0.5)
    x[0] += c - np.linalg.norm(x) if c > np.linalg.norm(x) else 0.0
    bound = rounded_l2_bound(float(np.linalg.norm(x)), DEFAULT_BETA, d)
    rng = np.random.default_rng(1)
    draws, tries = zip(*(conditional_round(x, bound, rng) for _ in range(600)), strict=True)
    mean = np.mean(draws, axis=0)
    assert np.max(np.abs(mean - x)) < 0.12  # ~5 standard errors of a ±1/2 coordinate mean
    assert abs(float(np.mean(mean - x))) < 0.02  # no systematic shrinkage to speak of
    # Each try passes with probability >= 1 - β, so tries average at most 1/(1 - β).
    assert np.mean(tries) <= 1.15 / (1 - DEFAULT_BETA)
    # A bound below what rounding can reach is refused, not looped on forever.
    with pytest.raises(ProtocolError, match="norm bound"):
        conditional_round(x, 0.5 * float(np.linalg.norm(x)), rng, max_tries=5)


# --------------------------------------------------------------------------- encode/decode


def tiny_noise(bits: int = 24, k: float = 4.0) -> DistributedDPSettings:
    return DistributedDPSettings(1e-13, 0.7, bits=bits, k_stddevs=k)


def rounding_error_bound(dp: DistributedDP, clients: int) -> float:
    """Return γ·n·√d, a bound on ‖decoded − Σ clipped‖₂ without noise.

    Each client's rounding moves it by < √d (< 1 a coordinate) in the integer domain, and
    γ·(inverse rotation) preserves norms.
    """
    return dp.scale * clients * math.sqrt(dp.padded_dim)


@pytest.mark.parametrize(("dim", "clients"), [(1, 1), (300, 5), (1024, 8)])
def test_roundtrip_recovers_the_sum_of_clipped_updates(dim, clients):
    dp = DistributedDP(tiny_noise(), dim=dim, expected_clients=clients, seed=11)
    assert dp.variance * dp.padded_dim < 1e-6  # no noise to speak of
    rng = np.random.default_rng(dim)
    updates = [rng.normal(size=dim) * rng.choice([0.01, 1.0]) for _ in range(clients)]
    truth = np.sum([clipped(u, 0.7) for u in updates], axis=0)
    sent = []
    for client, update in enumerate(updates):
        values, stats_ = dp.client_encode(update.astype(np.float32), 3, client)
        assert values.dtype == np.float64 and values.shape == (dp.padded_dim,)
        assert np.all(np.abs(values) <= 1.0)  # within secagg's clip: never clipped
        np.testing.assert_array_equal(values / dp.resolution, np.rint(values / dp.resolution))
        assert stats_["clipped"] == (1.0 if np.linalg.norm(update) > 0.7 else 0.0)
        assert stats_["rounded_norm"] <= dp.l2_sensitivity
        sent.append(values)
    decoded = dp.server_decode(residues_to_sum(dp, sent), 3)
    assert decoded.shape == (dim,) and decoded.dtype == np.float64
    error = decoded - truth
    assert np.linalg.norm(error) <= rounding_error_bound(dp, clients)
    # Rounding noise has variance ≤ 1/4 per client and coordinate: RMS ≤ γ·√n/2 (with slack).
    assert np.sqrt(np.mean(error**2)) <= 1.5 * dp.scale * math.sqrt(clients) / 2
    # Decoding with another round's rotation does not recover anything.
    wrong = dp.server_decode(residues_to_sum(dp, sent), 4)
    if dim > 1:
        assert np.linalg.norm(wrong - truth) > 10 * rounding_error_bound(dp, clients)


def test_residues_that_wrap_are_recovered_when_the_true_sum_fits():
    # Few bits and k = 1 make one client's coordinate (C/γ) exceed m/2, so single residues wrap.
    dp = DistributedDP(tiny_noise(bits=12, k=1.0), dim=256, expected_clients=2, seed=2)
    half = dp.modulus // 2
    assert dp.settings.clip / dp.scale > 4 * half
    spike = dp.settings.clip * dp.unrotate(np.eye(256)[17], 0)  # rotates to C·e_17

    def decode(updates: list[np.ndarray]) -> np.ndarray:
        sent = [dp.client_encode(u, 0, i)[0] for i, u in enumerate(updates)]
        integers = [dp.client_integers(u, 0, i)[0] for i, u in enumerate(updates)]
        assert max(np.max(np.abs(z)) for z in integers) > half  # each client's value wraps
        return dp.server_decode(residues_to_sum(dp, sent), 0)

    for share in (-1.0, -0.9):  # true sums 0 and 0.1·C/γ ≈ 1637 < m/2 = 2048
        truth = spike + share * spike
        error = decode([spike, share * spike]) - truth
        assert np.linalg.norm(error) <= rounding_error_bound(dp, 2)
    # A true sum outside [−m/2, m/2) cannot be recovered: the check above can fail.
    truth = spike + 0.2 * spike
    assert np.linalg.norm(decode([spike, 0.2 * spike]) - truth) > 100 * rounding_error_bound(dp, 2)


def test_centred_mod():
    values = np.array([-9, -8, -5, -4, -1, 0, 3, 4, 7, 8, 12])
    np.testing.assert_array_equal(centred_mod(values, 8), [-1, 0, 3, -4, -1, 0, 3, -4, -1, 0, -4])


def test_fixed_point_encoding_with_secagg_params_is_exact():
    # The secagg encoding of z·r is exact: its decoded sum gives the residue sum back.
    dp = DistributedDP(DistributedDPSettings(1.0, 1.0, bits=20), dim=200, expected_clients=6,
                       seed=0)
    params = dp.secagg_params()
    assert params == {"clip": 1.0, "resolution": 2.0**-19, "clip_mode": "coordinate"}
    spec = FixedPointSpec(max_clients=6, **params)
    rng = np.random.default_rng(0)
    sent = [dp.client_encode(rng.normal(size=200), 1, c)[0] for c in range(6)]
    words = [encode(v, spec, rng)[0] for v in sent]
    total, left_out = sum_words(words, bits=spec.bits)
    assert left_out == ()
    mean = decode_sum(total, spec) / 6
    exact = np.sum([np.rint(v / dp.resolution).astype(np.int64) for v in sent], axis=0)
    np.testing.assert_array_equal(dp.residue_sum(mean, 6.0), exact)
    with pytest.raises(ProtocolError, match="integer residues"):
        dp.residue_sum(mean + 0.3 * dp.resolution / 6, 6.0)


@pytest.mark.parametrize("protocol", ["secagg", "secagg+"])
def test_end_to_end_through_secure_aggregation_with_a_dropout(protocol):
    n, dim = 5, 40
    dp = DistributedDP(tiny_noise(bits=20), dim=dim, expected_clients=n, seed=9)
    proto = create(protocol, **dp.secagg_params())
    rng = np.random.default_rng(3)
    updates = {c: rng.normal(size=dim) for c in range(n)}
    inputs = {c: ClientInput(dp.client_encode(u, 7, c)[0], weight=1.0)
              for c, u in updates.items()}
    ctx = RoundContext(round=7, participants=tuple(range(n)), vector_size=dp.padded_dim)
    result = run_round(proto, ctx, inputs, dropouts={2: 0})
    assert 2 not in result.survivors
    decoded = dp.server_decode(dp.residue_sum(result.aggregate, result.total_weight), 7)
    truth = np.sum([clipped(updates[c], 0.7) for c in result.survivors], axis=0)
    assert np.linalg.norm(decoded - truth) <= rounding_error_bound(dp, len(result.survivors))
    assert dp.round_variance(len(result.survivors)) == pytest.approx(dp.variance * 4 / 5)


# --------------------------------------------------------------------------- noise


def test_skellam_shares_have_variance_mu_over_n_and_the_sum_has_std_sigma_clip():
    sigma, clip, n, dim = 2.0, 0.5, 4, 2**13
    dp = DistributedDP(DistributedDPSettings(sigma, clip), dim=dim, expected_clients=n, seed=4)
    assert dp.scale * math.sqrt(dp.variance) == pytest.approx(sigma * clip)
    zero = np.zeros(dim)
    shares = [dp.client_integers(zero, 0, c)[0] for c in range(n)]  # zero rounds exactly to 0
    for share in shares:
        assert share.dtype == np.int64
        assert np.var(share) == pytest.approx(dp.variance / n, rel=0.05)
        assert abs(np.mean(share)) < 4 * math.sqrt(dp.variance / n / dim)
    assert stats.pearsonr(shares[0], shares[1]).pvalue > 1e-3  # independent keys per client
    np.testing.assert_array_equal(dp.client_integers(zero, 0, 0)[0], shares[0])  # seeded
    assert not np.array_equal(dp.client_integers(zero, 1, 0)[0], shares[0])  # fresh each round
    sent = [dp.client_encode(zero, 0, c)[0] for c in range(n)]
    noise = dp.server_decode(residues_to_sum(dp, sent), 0)
    assert np.std(noise) == pytest.approx(sigma * clip, rel=0.05)


# --------------------------------------------------------------------------- accounting


def exact_skellam_rdp(alpha: int, shift: int, mu: float) -> float:
    """D_α(Sk + shift ‖ Sk) for Skellam of variance μ, summed over its support."""
    half = mu / 2
    width = int(shift + 40 * math.sqrt(mu) + 100)
    k = np.arange(-width, width + 1)
    log_p = stats.skellam.logpmf(k, half, half)
    log_q = stats.skellam.logpmf(k - shift, half, half)
    ok = np.isfinite(log_p) & np.isfinite(log_q)
    return float(logsumexp(alpha * log_q[ok] + (1 - alpha) * log_p[ok]) / (alpha - 1))


@pytest.mark.parametrize("mu", [1.0, 5.0, 40.0])
@pytest.mark.parametrize("shift", [1, 3])
def test_skellam_rdp_bounds_the_exact_one_dimensional_divergence(mu, shift):
    for alpha in (2, 3, 8, 20):
        exact = exact_skellam_rdp(alpha, shift, mu)
        bound = float(skellam_rdp([alpha], shift, shift, mu)[0])
        assert exact <= bound * (1 + 1e-9)
        if mu >= 40 and alpha <= 3:  # and near the Gaussian's α·Δ²/(2μ) for small α·Δ/μ
            assert exact == pytest.approx(alpha * shift**2 / (2 * mu), rel=0.05)


@FAST
@given(st.integers(2, 500), st.floats(1, 1e4), st.floats(1, 1e12), st.integers(1, 2**20))
def test_skellam_rdp_is_the_gaussian_plus_a_vanishing_correction(alpha, l2, mu, dim):
    l1 = min(math.sqrt(dim) * l2, l2 * l2)
    gaussian = alpha * l2 * l2 / (2 * mu)
    value = float(skellam_rdp([alpha], l1, l2, mu)[0])
    assert value >= gaussian
    # Scaling μ by 100 keeps the Gaussian term's shape; the correction's share shrinks.
    larger = float(skellam_rdp([alpha], l1, l2, 100 * mu)[0])
    assert (larger - gaussian / 100) <= (value - gaussian) / 10 * (1 + 1e-9)


def test_skellam_rdp_converges_to_the_gaussian_as_mu_grows():
    alpha, l2 = np.array([2, 10, 100]), 50.0
    l1 = l2 * l2
    ratios = [skellam_rdp(alpha, l1, l2, mu) / (alpha * l2**2 / (2 * mu))
              for mu in (1e2, 1e4, 1e6, 1e8)]
    assert np.all(np.diff(np.array(ratios), axis=0) <= 0)
    np.testing.assert_allclose(ratios[-1], 1.0, rtol=1e-6)
    assert np.all(ratios[0] > 1.01)


def test_skellam_epsilon_composes_and_matches_the_gaussian_for_large_variance():
    l2 = 1e4
    l1 = l2 * 2**8
    mu = (3.0 * l2) ** 2  # noise multiplier 3 in the integer domain
    eps = [skellam_epsilon([mu] * t, l1, l2, 1e-5) for t in (1, 10, 100)]
    assert eps[0] < eps[1] < eps[2]
    assert skellam_epsilon([], l1, l2, 1e-5) == 0.0
    # Fewer noise shares (dropouts) cost more.
    assert skellam_epsilon([mu * 0.5] * 10, l1, l2, 1e-5) > eps[1]
    # Against the central Gaussian accountant (fractional orders too, so it may be a bit lower).
    gaussian = accounting.epsilon(3.0, 1.0, 10, 1e-5)
    assert gaussian * 0.999 <= eps[1] <= gaussian * 1.01
    with pytest.raises(ConfigError, match="variance"):
        skellam_epsilon([mu, 0.0], l1, l2, 1e-5)


def test_distributed_epsilon_tracks_survivors():
    dp = DistributedDP(DistributedDPSettings(1.5, 1.0), dim=5000, expected_clients=10, seed=0)
    full = dp.epsilon([dp.round_variance(10)] * 20, 1e-5)
    dropped = dp.epsilon([dp.round_variance(10)] * 19 + [dp.round_variance(6)], 1e-5)
    assert full < dropped
    assert full == pytest.approx(planned_epsilon(dp.settings, dim=5000, expected_clients=10,
                                                 rounds=20, delta=1e-5))
    worst = planned_epsilon(dp.settings, dim=5000, expected_clients=10, rounds=20, delta=1e-5,
                            min_survivors=6)
    assert dropped < worst
    # At 20 bits the distributed mechanism costs about what central DP at the same σ does.
    central = accounting.epsilon(1.5, 1.0, 20, 1e-5)
    assert central * 0.999 <= full <= central * 1.03


def test_sensitivities_follow_the_rounding_bound():
    s = DistributedDPSettings(1.0, 2.0, bits=16)
    scale = choose_scale(s, 1000, 10)
    l1, l2 = sensitivities(s, 1000, scale)
    d = 1024
    c = 2.0 / scale
    assert l2 == pytest.approx(min(c + math.sqrt(d), math.sqrt(
        c * c + d / 4 + math.sqrt(2 * 0.5) * (c + math.sqrt(d) / 2))))
    assert l2 > c
    assert l1 == pytest.approx(min(math.sqrt(d) * l2, l2 * l2))


def test_solve_noise_multiplier_meets_the_target():
    kwargs = {"dim": 4096, "expected_clients": 10}
    sigma = solve_noise_multiplier(3.0, 50, 1e-5, **kwargs)

    def eps(s: float, **extra: int) -> float:
        return planned_epsilon(DistributedDPSettings(s, 1.0), rounds=50, delta=1e-5, **kwargs,
                               **extra)

    assert eps(sigma) <= 3.0 < eps(sigma * 0.99)
    central = accounting.solve_noise_multiplier(3.0, 1.0, 50, 1e-5)
    assert central * 0.99 <= sigma <= central * 1.05
    worst = solve_noise_multiplier(3.0, 50, 1e-5, min_survivors=5, **kwargs)
    assert eps(worst, min_survivors=5) <= 3.0 and worst > sigma
    # Few bits cap μ (the noise must fit the modulus), so ε has a floor.
    with pytest.raises(ConfigError, match="cannot be reached"):
        solve_noise_multiplier(0.5, 1000, 1e-5, dim=2**16, expected_clients=10, bits=8)


# --------------------------------------------------------------------------- wrap-around


def test_wraparound_probability_is_small_for_the_defaults():
    for dim, n, sigma in ((2**20, 100, 1.0), (2**17, 10, 0.3), (5_000_000, 1000, 10.0)):
        assert wraparound_probability(DistributedDPSettings(sigma, 1.0), dim, n) < 1e-6
    # ... and not for the papers' k = 3 at a million coordinates.
    assert wraparound_probability(DistributedDPSettings(1.0, 1.0, k_stddevs=3.0), 2**20, 10) == 1


def test_wraparound_probability_bounds_the_empirical_frequency():
    s = DistributedDPSettings(1.0, 1.0, bits=10, k_stddevs=3.5)
    dp = DistributedDP(s, dim=64, expected_clients=4, seed=3)
    bound = dp.wraparound_probability()
    assert 0 < bound < 0.5
    update = np.full(64, 1 / 8)  # all clients aligned: the largest signal
    half, trials, rounds_wrapped, coordinates_wrapped = dp.modulus // 2, 400, 0, 0
    for r in range(trials):
        total = sum(dp.client_integers(update, r, c)[0] for c in range(4))
        wrapped = int(np.count_nonzero((total >= half) | (total < -half)))
        rounds_wrapped += wrapped > 0
        coordinates_wrapped += wrapped
    assert rounds_wrapped > 0  # the stress case does wrap
    assert rounds_wrapped / trials <= bound
    assert coordinates_wrapped / trials <= bound  # the union bound bounds the mean count too
    assert dp.wraparound_probability(clients=2) < bound


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"noise_multiplier": 0.0}, "noise multiplier is 0"),
        ({"noise_multiplier": -1.0}, "noise_multiplier"),
        ({"noise_multiplier": math.nan}, "noise_multiplier"),
        ({"clip": 0.0}, "clip"),
        ({"bits": 3}, "bits"),
        ({"bits": 40}, "bits"),
        ({"bits": 20.0}, "bits"),
        ({"k_stddevs": 0.0}, "k_stddevs"),
        ({"beta": 1.0}, "beta"),
        ({"beta": -0.1}, "beta"),
    ],
)
def test_bad_settings_are_refused(kwargs, match):
    base = {"noise_multiplier": 1.0, "clip": 1.0}
    with pytest.raises(ConfigError, match=match):
        DistributedDPSettings(**{**base, **kwargs})


def test_bad_parameters_are_refused():
    s = DistributedDPSettings(1.0, 1.0, bits=4)
    with pytest.raises(ConfigError, match="raise bits"):
        DistributedDP(s, dim=10, expected_clients=8, seed=0)
    with pytest.raises(ConfigError, match="expected_clients"):
        DistributedDP(DistributedDPSettings(1.0, 1.0), dim=10, expected_clients=0, seed=0)
    with pytest.raises(ConfigError, match="dimension"):
        DistributedDP(DistributedDPSettings(1.0, 1.0), dim=0, expected_clients=2, seed=0)
    with pytest.raises(ConfigError, match="integer orders"):
        skellam_rdp([1.5], 1.0, 1.0, 10.0)
    with pytest.raises(ConfigError, match="variance"):
        skellam_rdp([2], 1.0, 1.0, 0.0)
    with pytest.raises(ConfigError, match="delta"):
        skellam_epsilon([1.0], 1.0, 1.0, 1.5)
    with pytest.raises(ConfigError, match="sensitivities"):
        skellam_rdp([2], -1.0, 1.0, 10.0)
    with pytest.raises(ConfigError, match="min_survivors"):
        planned_epsilon(DistributedDPSettings(1.0, 1.0), dim=10, expected_clients=2, rounds=3,
                        delta=1e-5, min_survivors=3)
    with pytest.raises(ConfigError, match="target epsilon"):
        solve_noise_multiplier(0.0, 10, 1e-5, dim=10, expected_clients=2)
    dp = DistributedDP(DistributedDPSettings(1.0, 1.0), dim=10, expected_clients=2, seed=0)
    with pytest.raises(ProtocolError, match="length 10"):
        dp.client_encode(np.ones(11), 0, 0)
    with pytest.raises(ProtocolError, match="non-finite"):
        dp.client_encode(np.array([np.nan] + [0.0] * 9), 0, 0)
    with pytest.raises(ProtocolError, match="integers"):
        dp.server_decode(np.full(16, 0.5), 0)
    with pytest.raises(ProtocolError, match="16 values"):
        dp.server_decode(np.zeros(10, dtype=np.int64), 0)
