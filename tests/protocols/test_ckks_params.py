"""CKKS parameter choice, error bounds and config validation; the noise model against TenSEAL."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
import tenseal as ts
from hypothesis import given, settings
from hypothesis import strategies as st

from fedpriv.errors import ConfigError
from fedpriv.protocols.ckks import CKKSConfig, CKKSKeys, CKKSProtocol, choose_parameters
from fedpriv.protocols.ckks.keys import new_context
from fedpriv.protocols.ckks.params import (
    MAX_COEFF_MODULUS_BITS,
    NOISE_MARGIN,
    float_error,
    slot_noise_std,
    split_data_bits,
    tail_factor,
)
from fedpriv.protocols.ckks.stages import csprng_normal


def test_defaults_fit_n4096_with_an_80_bit_modulus() -> None:
    params = choose_parameters(CKKSConfig())
    assert params.poly_modulus_degree == 4096 and params.slots == 2048
    assert params.coeff_mod_bit_sizes == (56, 24, 29)
    assert sum(params.coeff_mod_bit_sizes) <= MAX_COEFF_MODULUS_BITS[4096] == 109
    assert params.scale_bits == 68 and params.data_bits == 80
    for m in (1, 2, 10, 50, 100):
        assert params.release_bound(m) <= params.precision == 2.0**-30
        assert params.flood_std(m) == 2.0**20 * params.error_bound(m)
        assert params.flood_std(m) / 2 < params.grid(m) <= params.flood_std(m)
    # The sum of 100 clipped entries times the scale fits the modulus with a bit to spare.
    assert math.log2(params.value_bound * params.scale) + 2 <= params.data_bits
    assert params.chunk_sizes(2047) == (2048,)
    assert params.chunk_sizes(2048) == (2048, 1)
    assert params.chunk_sizes(5000) == (2048, 2048, 905)
    assert "N=4096" in params.describe()


def test_tail_factor_is_the_union_bounded_gaussian_tail() -> None:
    for count in (1, 1000, 2**26):
        tau = tail_factor(count)
        assert 2 * count * math.exp(-(tau**2) / 2) == pytest.approx(2.0**-40, rel=1e-9)
        # The bound holds against the exact tail (erfc) with room to spare.
        assert count * math.erfc(tau / math.sqrt(2)) <= 2.0**-40


def test_split_data_bits_prefers_byte_sized_primes() -> None:
    assert split_data_bits(37, 4096) == (37,)
    assert split_data_bits(12, 4096) == (21,)  # at least log2(2N) + 8 bits
    assert split_data_bits(77, 4096) == (56, 24)
    assert split_data_bits(81, 4096) == (56, 32)
    assert split_data_bits(200, 8192) == (56, 56, 56, 32)


@settings(max_examples=200, deadline=None)
@given(
    clip=st.floats(1e-3, 10.0),
    max_clients=st.integers(1, 5000),
    precision_bits=st.integers(8, 44),
    flood_bits=st.integers(0, 40),
    length_bits=st.integers(0, 34),
)
def test_chosen_parameters_meet_the_precision_or_fail_loudly(
    clip: float, max_clients: int, precision_bits: int, flood_bits: int, length_bits: int,
) -> None:
    precision = clip * 2.0**-precision_bits
    try:
        config = CKKSConfig(clip=clip, max_clients=max_clients, min_clients=1,
                            precision=precision, flood_bits=flood_bits,
                            max_vector_size=2**length_bits)
    except ConfigError as err:
        assert "precision" in str(err)
        return
    params = choose_parameters(config)
    n = params.poly_modulus_degree
    assert sum(params.coeff_mod_bit_sizes) <= MAX_COEFF_MODULUS_BITS[n]
    assert all(17 <= b <= 60 for b in params.coeff_mod_bit_sizes)
    assert params.data_bits >= params.scale_bits + max(math.log2(max_clients * clip), 0) + 2
    for m in {1, max_clients // 2 or 1, max_clients}:
        assert params.release_bound(m) <= precision
    if n > 2048:  # the next smaller ring could not have held these moduli
        with pytest.raises(ConfigError):
            CKKSConfig(clip=clip, max_clients=max_clients, min_clients=1, precision=precision,
                       flood_bits=flood_bits, max_vector_size=2**length_bits,
                       poly_modulus_degree=n // 2)


@pytest.mark.parametrize(
    ("params", "match"),
    [
        ({"clip": -1.0}, "clip must be finite and > 0"),
        ({"clip": True}, "clip must be a real number"),
        ({"precision": 2.0}, r"precision \(2.0\) must be below clip"),
        ({"max_clients": 0}, r"max_clients must be an integer in \[1, "),
        ({"min_clients": 5, "max_clients": 4}, r"min_clients must be an integer in \[1, 4\]"),
        ({"flood_bits": 61}, r"flood_bits must be an integer in \[0, 60\]"),
        ({"poly_modulus_degree": 3000}, "poly_modulus_degree must be one of"),
        ({"coeff_mod_bit_sizes": (60,)}, "at least two primes"),
        ({"coeff_mod_bit_sizes": (70, 30)}, r"entry must be an integer in \[17, 60\]"),
        ({"coeff_mod_bit_sizes": "56,24"}, "sequence of prime bit sizes"),
        ({"coeff_mod_bit_sizes": (40, 29)}, "cannot hold values up to .* needs 77 bits"),
        ({"scale_bits": 40}, r"scale 2\^40 cannot reach precision .* at least 2\^67"),
        ({"precision": 1e-13}, "below the double-precision floor"),
        ({"coeff_mod_bit_sizes": (60,) * 15}, "no CKKS ring degree holds precision"),
        ({"poly_modulus_degree": 2048}, r"N=2048 allows 54 bits"),
        ({"poly_modulus_degree": 4096, "coeff_mod_bit_sizes": (56, 56, 29)}, "allows 109 bits"),
    ],
)
def test_config_errors_say_what_to_change(params: dict[str, Any], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        CKKSConfig(**params)


def test_explicit_parameters_are_used_as_given() -> None:
    config = CKKSConfig(poly_modulus_degree=8192, coeff_mod_bit_sizes=(60, 40, 60),
                        scale_bits=75, min_clients=1)
    params = choose_parameters(config)
    assert (params.poly_modulus_degree, params.coeff_mod_bit_sizes, params.scale_bits) == (
        8192, (60, 40, 60), 75)
    proto = CKKSProtocol(config)
    assert proto.keys.private_context.is_private()
    with pytest.raises(ConfigError, match=r"made for this config's parameters"):
        CKKSProtocol(CKKSConfig(), keys=proto.keys)


def test_noise_model_matches_tenseal_within_the_margin() -> None:
    """The measured decryption error of fresh ciphertexts (and of a sum) fits σ_N."""
    params = choose_parameters(CKKSConfig(min_clients=1))
    context = new_context(params)
    rng = np.random.default_rng(0)
    scale = 2.0**30  # small enough that the error, not double rounding, is what we see
    predicted = slot_noise_std(params.poly_modulus_degree) / NOISE_MARGIN / scale
    errors = []
    for _ in range(8):
        values = rng.uniform(-1, 1, params.slots)
        vector = ts.ckks_vector(context, values, scale=scale)
        errors.append(np.asarray(vector.decrypt()) - values)
    measured = float(np.std(np.concatenate(errors)))
    assert predicted / 1.1 < measured < predicted * NOISE_MARGIN
    vectors = [ts.ckks_vector(context, np.zeros(params.slots), scale=scale) for _ in range(9)]
    total = vectors[0]
    for vector in vectors[1:]:
        total = total + vector
    summed = float(np.std(total.decrypt()))
    assert predicted * 3 / 1.15 < summed < predicted * 3 * NOISE_MARGIN
    bound = params.error_bound(1) * params.scale / scale
    assert float(np.max(np.abs(np.concatenate(errors)))) < bound
    assert float_error(params.value_bound, params.poly_modulus_degree) < params.precision / 10


def test_keys_round_trip_through_private_bytes() -> None:
    params = choose_parameters(CKKSConfig())
    keys = CKKSKeys.generate(params)
    assert "secret" not in repr(keys) and keys.key_id.hex() in repr(keys)
    copy = CKKSKeys.from_private_bytes(params, keys.private_context_bytes(), keys.key_id)
    vector = ts.ckks_vector(keys.private_context, [0.5, -0.25], scale=params.scale)
    back = ts.ckks_vector_from(copy.private_context, vector.serialize())
    np.testing.assert_allclose(back.decrypt(), [0.5, -0.25], atol=1e-12)
    assert len(keys.public().context_bytes) < 200  # parameters only: no key of any kind
    assert CKKSKeys.generate(params).key_id != keys.key_id


def test_csprng_normal_is_standard_normal_and_fresh() -> None:
    draws = csprng_normal(200_001)
    assert draws.shape == (200_001,)
    assert abs(draws.mean()) < 5 / math.sqrt(draws.size)
    assert draws.std() == pytest.approx(1.0, abs=0.01)
    ordered = np.sort(draws)
    cdf = 0.5 * (1 + np.vectorize(math.erf)(ordered / math.sqrt(2)))
    ks = np.max(np.abs(cdf - np.arange(1, draws.size + 1) / draws.size))
    assert ks < 1.63 / math.sqrt(draws.size)  # Kolmogorov–Smirnov at the 1 % level
    assert not np.array_equal(csprng_normal(10), csprng_normal(10))
    assert csprng_normal(0).shape == (0,)
