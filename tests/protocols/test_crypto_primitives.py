"""Crypto primitives of secure aggregation: key agreement, AEAD, signatures and the mask PRG."""

from __future__ import annotations

import ast
import inspect
import math

import numpy as np
import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from hypothesis import given, settings
from hypothesis import strategies as st

from fedpriv.errors import ConfigError, ProtocolError
from fedpriv.protocols import crypto
from fedpriv.protocols.crypto import (
    KEY_BYTES,
    NONCE_BYTES,
    SEED_BYTES,
    TAG_BYTES,
    add_mask,
    add_masks,
    decrypt,
    derive_key,
    encrypt,
    expand_mask,
    generate_ed25519,
    generate_x25519,
    random_seed,
    share_aad,
    sign,
    verify,
)
from fedpriv.protocols.encoding import word_dtype

ENC = b"fedpriv/secagg/enc"
MASK = b"fedpriv/secagg/mask"
SEED = bytes(range(SEED_BYTES))


def reference_mask(seed: bytes, length: int, bits: int) -> np.ndarray:
    """Return the mask the slow obvious way: AES-256-CTR of zeros, read little-endian."""
    width = 4 if bits <= 32 else 8
    stream = (
        Cipher(algorithms.AES(seed), modes.CTR(bytes(16))).encryptor().update(bytes(length * width))
    )
    words = [
        int.from_bytes(stream[i : i + width], "little") % 2**bits
        for i in range(0, len(stream), width)
    ]
    return np.array(words, dtype=word_dtype(bits))


# --- seeds and key agreement -------------------------------------------------------------


def test_random_seed_is_fresh_32_bytes() -> None:
    seeds = {random_seed() for _ in range(16)}
    assert len(seeds) == 16 and all(len(s) == SEED_BYTES for s in seeds)


def test_derive_key_is_symmetric_and_bound_to_purpose() -> None:
    a_priv, a_pub = generate_x25519()
    b_priv, b_pub = generate_x25519()
    c_priv, c_pub = generate_x25519()
    assert len(a_priv) == len(a_pub) == KEY_BYTES
    k_ab = derive_key(a_priv, b_pub, info=ENC)
    assert len(k_ab) == KEY_BYTES
    assert k_ab == derive_key(b_priv, a_pub, info=ENC)
    assert derive_key(a_priv, b_pub, info=MASK) != k_ab  # one shared secret, two keys
    assert derive_key(a_priv, c_pub, info=ENC) != k_ab
    assert derive_key(c_priv, b_pub, info=ENC) != k_ab


@pytest.mark.parametrize(
    ("private", "public", "match"),
    [
        (bytes(31), bytes(range(32)), "private key must be 32 bytes; got 31"),
        (bytes(32), bytes(33), "public key must be 32 bytes; got 33"),
        ("key", bytes(32), "must be bytes; got str"),
    ],
)
def test_derive_key_rejects_bad_key_lengths(private: object, public: object, match: str) -> None:
    with pytest.raises(ProtocolError, match=match):
        derive_key(private, public, info=ENC)  # type: ignore[arg-type]


def test_derive_key_rejects_small_order_peer_key_and_empty_info() -> None:
    a_priv, _ = generate_x25519()
    _, b_pub = generate_x25519()
    with pytest.raises(ProtocolError, match="small order"):
        derive_key(a_priv, bytes(32), info=ENC)
    with pytest.raises(ProtocolError, match="non-empty bytes `info`"):
        derive_key(a_priv, b_pub, info=b"")


# --- AES-GCM shares ----------------------------------------------------------------------


def test_share_aad_is_canonical() -> None:
    aad = share_aad(3, 7, 2)
    assert aad == b"fedpriv-secagg-share" + (3).to_bytes(8, "big", signed=True) + (7).to_bytes(
        8, "big", signed=True
    ) + (2).to_bytes(8, "big", signed=True)
    assert share_aad(7, 3, 2) != aad and share_aad(3, 7, 3) != aad
    assert share_aad(-1, 0, 0).endswith((-1).to_bytes(8, "big", signed=True) + bytes(16))
    with pytest.raises(ProtocolError, match="sender must fit a signed 64-bit int"):
        share_aad(2**63, 0, 0)
    with pytest.raises(ProtocolError, match="round_index must be an integer"):
        share_aad(0, 1, 1.0)  # type: ignore[arg-type]


def test_encrypt_roundtrip_with_fresh_nonces() -> None:
    key = random_seed()
    aad = share_aad(1, 2, 0)
    message = b"share bytes " * 5
    first, second = encrypt(key, message, aad=aad), encrypt(key, message, aad=aad)
    assert first != second and first[:NONCE_BYTES] != second[:NONCE_BYTES]
    assert len(first) == NONCE_BYTES + len(message) + TAG_BYTES
    assert decrypt(key, first, aad=aad) == decrypt(key, second, aad=aad) == message
    assert decrypt(key, encrypt(key, b"", aad=aad), aad=aad) == b""


def test_every_tampered_byte_fails_authentication() -> None:
    key = random_seed()
    aad = share_aad(1, 2, 0)
    ciphertext = encrypt(key, b"0123456789", aad=aad)
    for index in range(len(ciphertext)):
        tampered = bytearray(ciphertext)
        tampered[index] ^= 0x01
        with pytest.raises(ProtocolError, match="share ciphertext failed authentication"):
            decrypt(key, bytes(tampered), aad=aad)


def test_wrong_aad_key_or_truncation_fails_authentication() -> None:
    key = random_seed()
    ciphertext = encrypt(key, b"secret share", aad=share_aad(1, 2, 0))
    for aad in (share_aad(2, 1, 0), share_aad(1, 2, 1), share_aad(1, 3, 0), b""):
        with pytest.raises(ProtocolError, match="share ciphertext failed authentication"):
            decrypt(key, ciphertext, aad=aad)
    with pytest.raises(ProtocolError, match="share ciphertext failed authentication"):
        decrypt(random_seed(), ciphertext, aad=share_aad(1, 2, 0))
    with pytest.raises(ProtocolError, match=r"share ciphertext failed authentication.*truncated"):
        decrypt(key, ciphertext[: NONCE_BYTES + TAG_BYTES - 1], aad=share_aad(1, 2, 0))
    with pytest.raises(ProtocolError, match="AES-GCM key must be 32 bytes; got 16"):
        encrypt(bytes(16), b"x", aad=b"")


# --- Ed25519 -----------------------------------------------------------------------------


def test_sign_and_verify() -> None:
    private, public = generate_ed25519()
    assert len(private) == len(public) == KEY_BYTES
    signature = sign(private, b"advertised keys")
    assert verify(public, b"advertised keys", signature) is None
    with pytest.raises(ProtocolError, match="signature verification failed"):
        verify(public, b"advertised keyz", signature)
    forged = bytearray(signature)
    forged[0] ^= 1
    with pytest.raises(ProtocolError, match="signature verification failed"):
        verify(public, b"advertised keys", bytes(forged))
    _, other_public = generate_ed25519()
    with pytest.raises(ProtocolError, match="signature verification failed"):
        verify(other_public, b"advertised keys", signature)
    with pytest.raises(ProtocolError, match="public key must be 32 bytes"):
        verify(public[:-1], b"advertised keys", signature)
    with pytest.raises(ProtocolError, match="private key must be 32 bytes"):
        sign(private + b"\0", b"m")


# --- mask PRG ----------------------------------------------------------------------------


def test_expand_mask_known_answer() -> None:
    # FIPS-197 style: AES-256 with the all-zero key encrypts the zero block to dc95c078….
    first = expand_mask(bytes(32), 4, bits=32)
    assert first.astype("<u4").tobytes().hex() == "dc95c078a2408989ad48a21492842087"


@pytest.mark.parametrize("bits", [1, 7, 20, 31, 32, 33, 52, 63, 64])
@pytest.mark.parametrize("length", [0, 1, 3, 4, 5, 16, (1 << 16) - 1, 1 << 16, (1 << 16) + 3])
def test_expand_mask_matches_reference(bits: int, length: int) -> None:
    # Lengths straddle the 15-byte update_into tail and the 256 KiB zero-chunk boundary.
    mask = expand_mask(SEED, length, bits=bits)
    assert mask.dtype == word_dtype(bits) and mask.shape == (length,)
    np.testing.assert_array_equal(mask, reference_mask(SEED, length, bits))


@settings(max_examples=60, deadline=None)
@given(
    seed=st.binary(min_size=32, max_size=32), bits=st.integers(1, 64), length=st.integers(0, 300)
)
def test_expand_mask_is_deterministic_and_in_range(seed: bytes, bits: int, length: int) -> None:
    mask = expand_mask(seed, length, bits=bits)
    np.testing.assert_array_equal(mask, expand_mask(seed, length, bits=bits))
    assert all(int(v) < 2**bits for v in mask)


def test_expand_mask_uses_the_whole_seed() -> None:
    masks = []
    for position in (0, 15, 16, 31):  # a folded or truncated seed would collide somewhere
        seed = bytearray(SEED)
        seed[position] ^= 0x80
        masks.append(expand_mask(bytes(seed), 64, bits=32).tobytes())
    masks.append(expand_mask(SEED, 64, bits=32).tobytes())
    assert len(set(masks)) == len(masks)


def test_expand_mask_reuses_out() -> None:
    out = np.full(1000, 7, dtype=np.uint64)
    result = expand_mask(SEED, 1000, bits=40, out=out)
    assert result is out
    np.testing.assert_array_equal(out, expand_mask(SEED, 1000, bits=40))
    empty = np.empty(0, dtype=np.uint32)
    assert expand_mask(SEED, 0, bits=32, out=empty) is empty


@pytest.mark.parametrize(
    ("out", "match"),
    [
        (np.empty(10, dtype=np.uint64), "1-D uint32 array of 10 words; got a uint64"),
        (np.empty(11, dtype=np.uint32), r"got a uint32 array of shape \(11,\)"),
        (np.empty(20, dtype=np.uint32)[::2], "C-contiguous and writeable"),
        ([0] * 10, "must be a numpy array; got list"),
    ],
)
def test_expand_mask_rejects_bad_out(out: object, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        expand_mask(SEED, 10, bits=32, out=out)  # type: ignore[arg-type]


def test_expand_mask_rejects_bad_parameters() -> None:
    with pytest.raises(ProtocolError, match=r"mask seed must be 32 bytes; got 16.*never shorten"):
        expand_mask(bytes(16), 4, bits=32)
    for bits in (0, 65, True, 32.0):
        with pytest.raises(ConfigError, match="bits must be"):
            expand_mask(SEED, 4, bits=bits)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="length must be in"):
        expand_mask(SEED, -1, bits=32)
    readonly = np.empty(4, dtype=np.uint32)
    readonly.setflags(write=False)
    with pytest.raises(ConfigError, match="writeable"):
        expand_mask(SEED, 4, bits=32, out=readonly)


@settings(max_examples=60, deadline=None)
@given(
    seed=st.binary(min_size=32, max_size=32),
    bits=st.integers(1, 64),
    length=st.integers(0, 200),
    acc_seed=st.integers(0, 2**32 - 1),
)
def test_add_mask_then_subtract_restores_exactly(
    seed: bytes, bits: int, length: int, acc_seed: int
) -> None:
    dtype = word_dtype(bits)
    rng = np.random.default_rng(acc_seed)  # test data only, not a secret
    start = rng.integers(0, 2**bits, size=length, dtype=np.uint64, endpoint=False).astype(dtype)
    acc = start.copy()
    scratch = np.empty(length, dtype=dtype)
    add_mask(acc, seed, bits=bits, scratch=scratch)
    expected = (
        start.astype(object) + expand_mask(seed, length, bits=bits).astype(object)
    ) % 2**bits
    assert acc.tolist() == expected.tolist()
    add_mask(acc, seed, bits=bits, sign=-1, scratch=scratch)
    np.testing.assert_array_equal(acc, start)


def test_pairwise_masks_cancel_in_the_sum() -> None:
    bits, length = 27, 5000
    pair_seed = random_seed()
    x_a = np.arange(length, dtype=np.uint32)
    x_b = np.arange(length, dtype=np.uint32)[::-1].copy()
    y_a, y_b = x_a.copy(), x_b.copy()
    add_mask(y_a, pair_seed, bits=bits, sign=1)  # smaller id adds
    add_mask(y_b, pair_seed, bits=bits, sign=-1)  # larger id subtracts
    assert not np.array_equal(y_a, x_a)
    total = (y_a + y_b) & np.uint32(2**bits - 1)
    np.testing.assert_array_equal(total, (x_a + x_b) & np.uint32(2**bits - 1))


def test_add_mask_reduces_an_unreduced_accumulator() -> None:
    acc = np.full(8, 0xFFFFFFFF, dtype=np.uint32)
    add_mask(acc, SEED, bits=12)
    assert int(acc.max()) < 2**12


def test_add_mask_rejects_bad_arguments() -> None:
    acc = np.zeros(8, dtype=np.uint32)
    for bad_sign in (0, 2, True, -1.0 + 0.5):
        with pytest.raises(ConfigError, match="sign must be 1"):
            add_mask(acc, SEED, bits=32, sign=bad_sign)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="acc must be a 1-D uint64 array"):
        add_mask(acc, SEED, bits=40)
    with pytest.raises(ConfigError, match="acc must be a 1-D numpy array"):
        add_mask(np.zeros((2, 4), dtype=np.uint32), SEED, bits=32)
    with pytest.raises(ConfigError, match="scratch must be a 1-D uint32 array of 8 words"):
        add_mask(acc, SEED, bits=32, scratch=np.empty(7, dtype=np.uint32))
    with pytest.raises(ConfigError, match="must not overlap"):
        add_mask(acc, SEED, bits=32, scratch=acc)


@pytest.mark.parametrize("bits", [12, 28, 32, 40, 64])
@pytest.mark.parametrize("length", [0, 1, 3, 5000, 3 * 2**16 + 7])
def test_add_masks_equals_one_add_mask_per_seed(bits: int, length: int) -> None:
    dtype = word_dtype(bits)
    rng = np.random.default_rng(bits * 7 + length)  # test data only, not a secret
    start = rng.integers(0, 2**bits, size=length, dtype=np.uint64, endpoint=False).astype(dtype)
    masks = [(bytes([i]) * SEED_BYTES, 1 if i % 3 else -1) for i in range(5)]
    expected = start.copy()
    for seed, sign_ in masks:
        add_mask(expected, seed, bits=bits, sign=sign_)
    acc = start.copy()
    add_masks(acc, masks, bits=bits)
    np.testing.assert_array_equal(acc, expected)
    # reduce=False: congruent mod 2^bits, reduced later in one AND.
    lazy = start.copy()
    add_masks(lazy, masks, bits=bits, reduce=False)
    if bits < dtype.itemsize * 8:
        np.bitwise_and(lazy, dtype.type(2**bits - 1), out=lazy)
    np.testing.assert_array_equal(lazy, expected)
    # Subtracting the same masks restores the accumulator exactly.
    add_masks(acc, [(seed, -sign_) for seed, sign_ in masks], bits=bits)
    np.testing.assert_array_equal(acc, start)


def test_add_masks_rejects_bad_arguments() -> None:
    acc = np.zeros(8, dtype=np.uint32)
    with pytest.raises(ConfigError, match="sign must be 1"):
        add_masks(acc, [(SEED, 0)], bits=32)
    with pytest.raises(ProtocolError, match="mask seed must be 32 bytes"):
        add_masks(acc, [(SEED[:16], 1)], bits=32)
    with pytest.raises(ConfigError, match="acc must be a 1-D uint64 array"):
        add_masks(acc, [(SEED, 1)], bits=40)
    with pytest.raises(ConfigError, match="acc must be a 1-D numpy array"):
        add_masks(np.zeros((2, 4), dtype=np.uint32), [(SEED, 1)], bits=32)
    add_masks(acc, [], bits=32)
    assert not acc.any()


def test_no_non_cryptographic_generator_in_crypto_module() -> None:
    tree = ast.parse(inspect.getsource(crypto))
    imported = {
        alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.Import)
        for alias in node.names
    }
    imported |= {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert not {"random", "numpy.random"} & imported
    attributes = {node.attr for node in ast.walk(tree) if isinstance(node, ast.Attribute)}
    assert "random" not in attributes  # no np.random.…


# --- uniformity of the mask (a chi-square test that can fail) ----------------------------


def chi_square_p_value(counts: np.ndarray) -> float:
    """Upper-tail p-value of Pearson's chi-square against uniform (Wilson–Hilferty approx.)."""
    expected = counts.sum() / counts.size
    statistic = float(((counts - expected) ** 2).sum() / expected)
    df = counts.size - 1
    z = ((statistic / df) ** (1 / 3) - (1 - 2 / (9 * df))) / math.sqrt(2 / (9 * df))
    return 0.5 * math.erfc(z / math.sqrt(2))


ALPHA = 1e-6  # deterministic inputs (fixed seeds): the threshold only separates good from bad


@pytest.mark.parametrize("seed", [SEED, bytes(32), b"\xff" * 32])
def test_expand_mask_bytes_are_uniform(seed: bytes) -> None:
    raw = expand_mask(seed, 1 << 16, bits=32).view(np.uint8)
    assert chi_square_p_value(np.bincount(raw, minlength=256)) > ALPHA


@pytest.mark.parametrize("bits", [1, 5, 12])
def test_expand_mask_values_are_uniform(bits: int) -> None:
    values = expand_mask(SEED, 1 << 16, bits=bits)
    assert chi_square_p_value(np.bincount(values, minlength=2**bits)) > ALPHA


def test_chi_square_rejects_non_uniform_masks() -> None:
    # Sanity check of the test itself: degenerate "masks" must be rejected.
    zero_mask = np.zeros(1 << 16, dtype=np.uint32).view(np.uint8)
    assert chi_square_p_value(np.bincount(zero_mask, minlength=256)) < ALPHA
    good = expand_mask(SEED, 1 << 16, bits=32).view(np.uint8)
    seven_bit = good & 0x7F  # a mask that lost its top bit
    assert chi_square_p_value(np.bincount(seven_bit, minlength=256)) < ALPHA
    biased = np.where(good < 8, 0, good).astype(np.uint8)  # 3 % of bytes forced to 0
    assert chi_square_p_value(np.bincount(biased, minlength=256)) < ALPHA
