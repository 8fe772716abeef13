"""Fixed-point encoding: sized so sums never wrap, unbiased rounding, clipping never silent."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedpriv.errors import ConfigError, ProtocolError
from fedpriv.protocols.encoding import (
    CLIP_MODES,
    EncodeStats,
    FixedPointSpec,
    add_words,
    clip_vector,
    decode_sum,
    encode,
    quantization_bound,
    sum_words,
    word_dtype,
)

# Slack for float64 rounding on top of the scheme's own bound.
FLOAT_SLACK = 1e-9

specs = st.builds(
    FixedPointSpec,
    clip=st.sampled_from([0.01, 0.5, 1.0, 3.7, 100.0]),
    resolution=st.sampled_from([2.0**-24, 2.0**-16, 1e-5, 0.3e-3, 0.01]),
    max_clients=st.integers(1, 64),
    clip_mode=st.sampled_from(CLIP_MODES),
)


def ring_sum(words: list[np.ndarray], spec: FixedPointSpec) -> np.ndarray:
    acc = np.zeros_like(words[0])
    for w in words:
        add_words(acc, w, bits=spec.bits)
    return acc


# --- the spec ----------------------------------------------------------------------------


def test_spec_derivation_example() -> None:
    spec = FixedPointSpec(clip=1.0, resolution=2**-20, max_clients=10)
    assert spec.value_bound == 1.0
    assert spec.max_level == 2**20 + 1
    # 10 · (2^20 + 1) = 10_485_770 < 2^24 = 16_777_216, but ≥ 2^23: 24 magnitude bits + sign.
    assert spec.bits == 25 and spec.modulus == 2**25
    assert spec.word_dtype == np.dtype(np.uint32)
    line = spec.explain()
    assert "\n" not in line and "bits=25" in line and "10485770" in line


@settings(max_examples=200, deadline=None)
@given(spec=specs)
def test_bits_is_the_smallest_that_cannot_wrap(spec: FixedPointSpec) -> None:
    worst = spec.max_clients * spec.max_level
    assert 2 ** (spec.bits - 1) > worst >= 2 ** (spec.bits - 2)
    levels = Fraction(spec.clip) / Fraction(spec.resolution)  # exact: no float rounding
    assert spec.max_level - 2 < levels <= spec.max_level - 1
    assert spec.word_dtype == (np.uint32 if spec.bits <= 32 else np.uint64)


def test_word_dtype() -> None:
    assert word_dtype(1) == word_dtype(32) == np.dtype(np.uint32)
    assert word_dtype(33) == word_dtype(64) == np.dtype(np.uint64)
    for bad in (0, 65, True, 8.0):
        with pytest.raises(ConfigError, match=r"bits must be an integer in \[1, 64\]"):
            word_dtype(bad)  # type: ignore[arg-type]


def test_spec_needing_more_than_64_bits_is_refused_with_the_bit_count() -> None:
    clip, resolution, clients = 1.0, 2.0**-50, 2**20
    needed = (clients * (2**50 + 1)).bit_length() + 1
    assert needed > 64
    with pytest.raises(ConfigError, match=rf"needs {needed}-bit words, more than 64") as info:
        FixedPointSpec(clip=clip, resolution=resolution, max_clients=clients)
    message = str(info.value)
    assert "larger resolution" in message and "fewer clients" in message


def test_spec_finer_than_float64_is_refused() -> None:
    with pytest.raises(ConfigError, match="finer than float64"):
        FixedPointSpec(clip=1.0, resolution=2.0**-55, max_clients=1)


def test_largest_spec_uses_64_bit_words() -> None:
    spec = FixedPointSpec(clip=1.0, resolution=2.0**-40, max_clients=2**22)
    assert spec.bits == 64 and spec.word_dtype == np.dtype(np.uint64)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"clip": 0.0}, r"clip must be finite and > 0; got 0\.0"),
        ({"clip": -1}, "clip must be finite and > 0"),
        ({"clip": math.nan}, "clip must be finite and > 0"),
        ({"clip": math.inf}, "clip must be finite and > 0"),
        ({"clip": True}, "clip must be a real number"),
        ({"resolution": 0.0}, "resolution must be finite and > 0"),
        ({"resolution": "1e-3"}, "resolution must be a real number"),
        ({"max_clients": 0}, "max_clients must be >= 1; got 0"),
        ({"max_clients": 2.0}, "max_clients must be an integer"),
        ({"clip_mode": "linf"}, r"clip_mode must be one of \['l2', 'coordinate'\]"),
    ],
)
def test_spec_rejects_bad_parameters(kwargs: dict[str, object], match: str) -> None:
    params: dict[str, object] = {"clip": 1.0, "resolution": 1e-3, "max_clients": 4}
    params.update(kwargs)
    with pytest.raises(ConfigError, match=match):
        FixedPointSpec(**params)  # type: ignore[arg-type]


def test_spec_is_frozen() -> None:
    spec = FixedPointSpec(clip=1, resolution=0.5, max_clients=3)
    assert isinstance(spec.clip, float) and spec.clip == 1.0
    with pytest.raises(AttributeError):
        spec.bits = 3  # type: ignore[misc]


# --- clipping ----------------------------------------------------------------------------


def test_coordinate_clipping_is_counted() -> None:
    spec = FixedPointSpec(clip=1.0, resolution=1e-3, max_clients=2)
    x = np.array([0.5, 1.5, -2.0, 1.0, -1.0, 3.0, -0.1])
    clipped, stats = clip_vector(x, spec)
    np.testing.assert_array_equal(clipped, [0.5, 1.0, -1.0, 1.0, -1.0, 1.0, -0.1])
    assert stats == EncodeStats(
        clipped=3, scaled_norm=False, original_norm=float(np.linalg.norm(x))
    )
    assert clip_vector(np.zeros(4), spec)[1].clipped == 0


def test_l2_clipping_is_counted() -> None:
    spec = FixedPointSpec(clip=1.0, resolution=1e-3, max_clients=2, clip_mode="l2")
    x = np.array([3.0, 4.0, 0.0])
    clipped, stats = clip_vector(x, spec)
    assert stats == EncodeStats(clipped=3, scaled_norm=True, original_norm=5.0)
    np.testing.assert_allclose(clipped, [0.6, 0.8, 0.0])
    small = np.array([0.3, -0.4])
    unchanged, stats = clip_vector(small, spec)
    np.testing.assert_array_equal(unchanged, small)
    assert stats == EncodeStats(clipped=0, scaled_norm=False, original_norm=0.5)


@settings(max_examples=100, deadline=None)
@given(
    spec=specs,
    x=st.lists(st.floats(-1e6, 1e6, allow_nan=False), min_size=1, max_size=50),
)
def test_clipping_respects_the_value_bound(spec: FixedPointSpec, x: list[float]) -> None:
    clipped, stats = clip_vector(np.array(x), spec)
    assert np.all(np.abs(clipped) <= spec.value_bound)
    if spec.clip_mode == "l2":
        assert np.linalg.norm(clipped) <= spec.clip * (1 + 1e-12)
        assert stats.clipped == (len(x) if stats.scaled_norm else 0)
    else:
        assert stats.clipped == int(np.sum(np.abs(np.array(x)) > spec.clip))


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_input_is_refused(bad: float) -> None:
    spec = FixedPointSpec(clip=1.0, resolution=1e-3, max_clients=2)
    x = np.array([0.1, bad, 0.2, bad])
    with pytest.raises(ProtocolError, match=r"contains 2 non-finite value\(s\)"):
        encode(x, spec, np.random.default_rng(0))
    with pytest.raises(ProtocolError, match="real-valued numeric array"):
        encode(np.array(["a"]), spec, np.random.default_rng(0))


def test_encode_needs_a_generator() -> None:
    spec = FixedPointSpec(clip=1.0, resolution=1e-3, max_clients=2)
    with pytest.raises(ConfigError, match=r"numpy\.random\.Generator"):
        encode(np.zeros(3), spec, 0)  # type: ignore[arg-type]


# --- encode / decode ---------------------------------------------------------------------


@settings(max_examples=150, deadline=None)
@given(
    spec=specs,
    x=st.lists(st.floats(-200.0, 200.0, allow_nan=False), min_size=1, max_size=40),
    seed=st.integers(0, 2**32 - 1),
)
def test_one_vector_roundtrips_within_resolution(
    spec: FixedPointSpec, x: list[float], seed: int
) -> None:
    vector = np.array(x)
    words, stats = encode(vector, spec, np.random.default_rng(seed))
    assert words.dtype == spec.word_dtype and words.shape == vector.shape
    assert int(words.max()) < spec.modulus
    clipped, expected_stats = clip_vector(vector, spec)
    assert stats == expected_stats
    error = np.abs(decode_sum(words, spec) - clipped)
    assert error.max() <= quantization_bound(spec, 1) * (1 + FLOAT_SLACK)


@settings(max_examples=60, deadline=None)
@given(spec=specs, seed=st.integers(0, 2**32 - 1), data=st.data())
def test_sum_of_up_to_max_clients_decodes_to_the_clipped_sum(
    spec: FixedPointSpec, seed: int, data: st.DataObject
) -> None:
    rng = np.random.default_rng(seed)
    clients = data.draw(st.integers(1, spec.max_clients))
    vectors = [rng.uniform(-2 * spec.clip, 2 * spec.clip, size=30) for _ in range(clients)]
    encoded = [encode(v, spec, rng)[0] for v in vectors]
    truth = np.sum([clip_vector(v, spec)[0] for v in vectors], axis=0)
    error = np.abs(decode_sum(ring_sum(encoded, spec), spec) - truth)
    assert error.max() <= quantization_bound(spec, clients) * (1 + FLOAT_SLACK) + 1e-12 * clients


@pytest.mark.parametrize(
    "spec",
    [
        FixedPointSpec(clip=1.0, resolution=2**-10, max_clients=7),  # clip / resolution integral
        FixedPointSpec(clip=1.0, resolution=0.3, max_clients=5),  # … and not integral
        FixedPointSpec(clip=0.7, resolution=1e-4, max_clients=100),
        FixedPointSpec(clip=2.5, resolution=2**-12, max_clients=33, clip_mode="l2"),
        FixedPointSpec(clip=1.0, resolution=2.0**-40, max_clients=2**22),  # 64-bit words
    ],
)
@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_worst_case_all_clients_at_the_bound_never_wraps(spec: FixedPointSpec, sign: float) -> None:
    rng = np.random.default_rng(7)
    size = 16
    if spec.clip_mode == "coordinate":
        x = np.full(size, sign * 10 * spec.clip)  # every coordinate clipped to ±clip
    else:
        x = np.zeros(size)
        x[0] = sign * 10 * spec.clip  # all the norm in one coordinate: x_0 = ±clip after scaling
    words, stats = encode(x, spec, rng)
    assert stats.clipped > 0
    clients = spec.max_clients
    # The same worst-case vector from every client: sum the words clients times.
    total = (words.astype(object) * clients % spec.modulus).astype(spec.word_dtype)
    truth = clients * clip_vector(x, spec)[0]
    error = np.abs(decode_sum(total, spec) - truth)
    assert error.max() <= quantization_bound(spec, clients) * (1 + FLOAT_SLACK)


@pytest.mark.parametrize(
    "spec",
    [
        FixedPointSpec(clip=1.0, resolution=0.3, max_clients=5),
        FixedPointSpec(clip=1.0, resolution=2**-20, max_clients=10),
        FixedPointSpec(clip=1.0, resolution=2.0**-40, max_clients=2**22),
    ],
)
def test_the_largest_possible_sum_decodes_without_wrapping(spec: FixedPointSpec) -> None:
    # max_clients summands of max_level steps each, of either sign: the extremes of the ring.
    extreme = spec.max_clients * spec.max_level
    words = np.array([extreme % spec.modulus, -extreme % spec.modulus, 0], dtype=spec.word_dtype)
    decoded = decode_sum(words, spec)
    np.testing.assert_allclose(decoded, [extreme * spec.resolution, -extreme * spec.resolution, 0])
    # And the ring has no more room than it needs: one bit fewer could not hold the extreme.
    assert extreme >= 2 ** (spec.bits - 2)


def test_stochastic_rounding_is_unbiased() -> None:
    resolution = 0.01
    spec = FixedPointSpec(clip=1.0, resolution=resolution, max_clients=1)
    fractions = np.array([0.0, 0.1, 0.25, 0.5, 0.75, 0.9, 0.99])
    x = np.concatenate([(3 + fractions) * resolution, -(7 + fractions) * resolution])
    draws = 20_000
    rng = np.random.default_rng(20240501)
    batch = np.tile(x, draws)  # one call, many independent roundings
    errors = (decode_sum(encode(batch, spec, rng)[0], spec) - batch).reshape(draws, -1)
    bias = errors.mean(axis=0)
    p = np.concatenate([fractions, fractions])  # P(round up) is frac or 1 − frac: same variance
    sigma = resolution * np.sqrt(p * (1 - p) / draws)  # std of the mean of Bernoulli steps
    assert np.all(np.abs(bias) <= 5 * sigma + 1e-12)
    # The test has power: round-to-nearest (biased at every fraction but 0 and 0.5) fails it.
    nearest_bias = np.round(x / resolution) * resolution - x
    assert np.any(np.abs(nearest_bias) > 5 * sigma + 1e-12)
    # And rounding really is random: the same input does not always encode the same way.
    assert len(np.unique(errors[:, 1])) == 2


def test_decoded_l2_vector_has_bounded_norm() -> None:
    spec = FixedPointSpec(clip=1.0, resolution=1e-4, max_clients=4, clip_mode="l2")
    x = np.random.default_rng(1).normal(size=1000) * 10
    words, stats = encode(x, spec, np.random.default_rng(2))
    assert stats.scaled_norm and stats.clipped == 1000
    assert np.linalg.norm(decode_sum(words, spec)) <= spec.clip + math.sqrt(1000) * 1e-4


def test_encode_keeps_shape_and_accepts_integers() -> None:
    spec = FixedPointSpec(clip=10.0, resolution=0.5, max_clients=3)
    words, _ = encode(np.array([[1, -2], [3, -4]]), spec, np.random.default_rng(0))
    assert words.shape == (2, 2)
    np.testing.assert_array_equal(decode_sum(words, spec), [[1, -2], [3, -4]])
    empty, stats = encode(np.zeros(0), spec, np.random.default_rng(0))
    assert empty.shape == (0,) and stats.clipped == 0


def test_decode_sum_rejects_non_words() -> None:
    spec = FixedPointSpec(clip=1.0, resolution=1e-3, max_clients=2)
    with pytest.raises(ProtocolError, match="unsigned integer words"):
        decode_sum(np.zeros(3), spec)


def test_add_words_checks_its_operands() -> None:
    spec = FixedPointSpec(clip=1.0, resolution=1e-3, max_clients=2)
    acc = np.zeros(3, dtype=spec.word_dtype)
    with pytest.raises(ProtocolError, match="same spec"):
        add_words(acc, np.zeros(3, dtype=np.uint64), bits=spec.bits)
    with pytest.raises(ConfigError, match="acc must be a writeable uint32"):
        add_words(np.zeros(3), np.zeros(3, dtype=np.uint32), bits=spec.bits)
    add_words(acc, np.full(3, spec.modulus - 1, dtype=spec.word_dtype), bits=spec.bits)
    add_words(acc, np.full(3, 2, dtype=spec.word_dtype), bits=spec.bits)
    np.testing.assert_array_equal(acc, [1, 1, 1])


def test_quantization_bound() -> None:
    spec = FixedPointSpec(clip=1.0, resolution=1e-3, max_clients=5)
    assert quantization_bound(spec, 5) == pytest.approx(5e-3)
    assert quantization_bound(spec, 0) == 0.0
    with pytest.raises(ConfigError, match="may wrap around"):
        quantization_bound(spec, 6)


def naive_encode(x: np.ndarray, spec: FixedPointSpec, rng: np.random.Generator) -> np.ndarray:
    """Return the textbook whole-array encoding: clip, divide, floor, one draw per coordinate."""
    clipped, _ = clip_vector(x, spec)
    scaled = clipped / spec.resolution
    levels = np.floor(scaled)
    levels += rng.random(levels.shape) < scaled - levels
    np.clip(levels, -spec.max_level, spec.max_level, out=levels)
    return (levels.astype(np.int64).astype(object) % spec.modulus).astype(spec.word_dtype)


@pytest.mark.parametrize(
    "spec",
    [
        FixedPointSpec(clip=1.0, resolution=2**-20, max_clients=100),
        FixedPointSpec(clip=0.7, resolution=1e-4, max_clients=100),
        FixedPointSpec(clip=2.5, resolution=2**-12, max_clients=33, clip_mode="l2"),
        FixedPointSpec(clip=1.0, resolution=2.0**-40, max_clients=2**22),  # 64-bit words
        FixedPointSpec(clip=1.0, resolution=2.0**-30, max_clients=2),  # bits = word size
    ],
)
@pytest.mark.parametrize("size", [1, 1000, 3 * 2**15 + 11])
def test_blockwise_encode_matches_the_whole_array_reference(
    spec: FixedPointSpec, size: int
) -> None:
    x = np.random.default_rng(size).normal(scale=0.6, size=size)  # some coordinates clipped
    words, stats = encode(x, spec, np.random.default_rng(3))
    np.testing.assert_array_equal(words, naive_encode(x, spec, np.random.default_rng(3)))
    assert stats == clip_vector(x, spec)[1]
    out = np.empty(size + 1, dtype=spec.word_dtype)
    into, _ = encode(x, spec, np.random.default_rng(3), out=out[:-1])
    assert np.shares_memory(into, out)
    np.testing.assert_array_equal(out[:-1], words)


def test_encode_checks_its_out_buffer() -> None:
    spec = FixedPointSpec(clip=1.0, resolution=1e-3, max_clients=2)
    with pytest.raises(ConfigError, match="out must be a uint32 array of shape"):
        encode(np.zeros(3), spec, np.random.default_rng(0), out=np.empty(4, dtype=np.uint32))
    with pytest.raises(ConfigError, match="C-contiguous and writeable"):
        encode(np.zeros(3), spec, np.random.default_rng(0), out=np.empty(6, np.uint32)[::2])


@pytest.mark.parametrize("bits", [12, 28, 32, 40, 64])
def test_sum_words_equals_add_words_and_leaves_out_words_outside_the_ring(bits: int) -> None:
    dtype = word_dtype(bits)
    rng = np.random.default_rng(bits)
    length = 2**16 + 5  # more than one block
    vectors = [
        rng.integers(0, 2**bits, size=length, dtype=np.uint64, endpoint=False).astype(dtype)
        for _ in range(6)
    ]
    expected = np.zeros(length, dtype=dtype)
    for words in vectors:
        add_words(expected, words, bits=bits)
    total, left_out = sum_words(vectors, bits=bits)
    assert left_out == ()
    np.testing.assert_array_equal(total, expected)
    if bits < dtype.itemsize * 8:
        bad = vectors[1].copy()
        bad[-1] = dtype.type(1 << bits)  # just outside Z_{2^bits}
        total, left_out = sum_words([vectors[0], bad, *vectors[2:]], bits=bits)
        assert left_out == (1,)
        rest = np.zeros(length, dtype=dtype)
        for words in [vectors[0], *vectors[2:]]:
            add_words(rest, words, bits=bits)
        np.testing.assert_array_equal(total, rest)
    with pytest.raises(ProtocolError, match="vector 1 has 3 words"):
        sum_words([vectors[0], vectors[1][:3]], bits=bits)
