"""Crypto primitives of secure aggregation: bytes-in/bytes-out wrappers over ``cryptography``.

This module owns every use of a cipher, key exchange or signature in fedpriv's
secure-aggregation protocols, so that the protocol packages (``secagg/``) only
move bytes between stage functions, in the style of Flower's
``flwr/common/secure_aggregation/crypto``:

- X25519 key agreement followed by HKDF-SHA256 (:func:`generate_x25519`,
  :func:`derive_key`): one key pair per purpose, as in Bonawitz et al. 2017
  (*Practical Secure Aggregation for Privacy-Preserving Machine Learning*, CCS),
  where each client advertises ``c_u^PK`` (share encryption) and ``s_u^PK``
  (pairwise masks).  The HKDF ``info`` binds a derived key to its purpose, so the
  same shared secret never keys both the AEAD and the mask PRG.
- AES-256-GCM authenticated encryption of the Shamir shares clients send each
  other through the server (:func:`encrypt`, :func:`decrypt`, :func:`share_aad`).
  The additional data binds each ciphertext to (sender, receiver, round), so a
  curious server cannot replay or redirect a share (Bonawitz et al. 2017, §4: the
  shares are encrypted *and authenticated* under the pairwise key).
- Ed25519 signatures of advertised keys for the active-adversary variant
  (:func:`generate_ed25519`, :func:`sign`, :func:`verify`); :func:`verify` raises,
  it never returns a ``bool`` that a caller could forget to check.
- The mask PRG (:func:`expand_mask`, :func:`add_mask`, :func:`add_masks`): AES-256 in CTR mode keyed
  with the whole 256-bit seed, read as little-endian words over ``Z_{2^bits}``.
  Masks must be computationally indistinguishable from uniform for the one-time-pad
  argument of Bonawitz et al. 2017 (Thm. 6.2) and Bell et al. 2020 (*Secure
  Single-Server Aggregation with (Poly)Logarithmic Overhead*, CCS) to hold, so a
  seed is never folded to fewer bits nor stretched by ``numpy.random``.

Secrets (private keys, seeds, derived keys) are only ever returned to the caller;
nothing here logs them.  Malformed key material and failed authentication raise
:class:`~fedpriv.errors.ProtocolError`; bad parameters (``bits``, ``length``, a
mismatched buffer) raise :class:`~fedpriv.errors.ConfigError`.
"""

from __future__ import annotations

import numbers
import os
import secrets
import struct
import sys
from collections.abc import Iterable
from typing import Any

import numpy as np
from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
)

from fedpriv.errors import ConfigError, ProtocolError
from fedpriv.protocols.encoding import word_dtype

__all__ = [
    "KEY_BYTES",
    "NONCE_BYTES",
    "SEED_BYTES",
    "SIGNATURE_BYTES",
    "TAG_BYTES",
    "add_mask",
    "add_masks",
    "decrypt",
    "derive_key",
    "encrypt",
    "expand_mask",
    "generate_ed25519",
    "generate_x25519",
    "random_seed",
    "share_aad",
    "sign",
    "verify",
]

KEY_BYTES = 32
"""Length of every symmetric key, X25519 key and Ed25519 key (256 bits)."""
SEED_BYTES = 32
"""Length of a mask seed: the full 256-bit AES key of the mask PRG."""
NONCE_BYTES = 12
"""Length of the AES-GCM nonce that :func:`encrypt` prepends to each ciphertext."""
TAG_BYTES = 16
"""Length of the AES-GCM authentication tag that ends each ciphertext."""
SIGNATURE_BYTES = 64
"""Length of an Ed25519 signature."""

_SHARE_AAD_PREFIX = b"fedpriv-secagg-share"
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
_KEY_HINT = "Derive the key with derive_key(...)."

# Mask PRG: each seed keys exactly one mask (a fresh b_u per round, and a pairwise
# seed derived per round), so the (key, counter block) pairs never repeat and a
# fixed all-zero initial counter block is safe: CTR mode only needs the
# (key, nonce) pair to be unique.  Callers must not reuse a seed for two masks.
_CTR_NONCE = bytes(16)
_AES_BLOCK = 16
# update_into needs len(data) + block − 1 bytes of output room (cryptography docs,
# CipherContext.update_into); the last < 16 bytes go through update() instead.
_UPDATE_INTO_SLACK = _AES_BLOCK - 1
# Keystream = AES-CTR encryption of zeros, fed in chunks from one immutable buffer
# (L2-sized, so the plaintext stays in cache while the output streams to memory).
_ZERO_CHUNK = memoryview(bytes(1 << 18))
# add_masks interleaves its masks block by block: the accumulator block and the
# keystream block stay in L1/L2 across all masks instead of streaming a full-length
# keystream buffer through memory once per mask.
_MASK_BLOCK_BYTES = 1 << 18


def _check_bytes(value: Any, length: int, what: str, hint: str) -> bytes:
    """Return ``value`` as ``bytes`` or raise :class:`ProtocolError` unless it has ``length``."""
    if not isinstance(value, (bytes, bytearray, memoryview)):
        raise ProtocolError(f"{what} must be bytes; got {type(value).__name__}. {hint}")
    raw = bytes(value)
    if len(raw) != length:
        raise ProtocolError(f"{what} must be {length} bytes; got {len(raw)}. {hint}")
    return raw


def _check_int(value: Any, what: str, lo: int, hi: int, hint: str) -> int:
    """Return ``value`` as an ``int`` or raise :class:`ConfigError` unless ``lo ≤ value ≤ hi``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ConfigError(f"{what} must be an integer; got {value!r}. {hint}")
    number = int(value)
    if not lo <= number <= hi:
        raise ConfigError(f"{what} must be in [{lo}, {hi}]; got {number}. {hint}")
    return number


def random_seed() -> bytes:
    """Return a fresh uniformly random 32-byte seed from the OS CSPRNG (``secrets``)."""
    return secrets.token_bytes(SEED_BYTES)


# ---------------------------------------------------------------------------
# X25519 key agreement + HKDF
# ---------------------------------------------------------------------------


def generate_x25519() -> tuple[bytes, bytes]:
    """Return a fresh X25519 key pair as ``(private raw 32 B, public raw 32 B)``."""
    private = X25519PrivateKey.generate()
    private_raw = private.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
    public_raw = private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    return private_raw, public_raw


def derive_key(private_raw: bytes, peer_public_raw: bytes, *, info: bytes) -> bytes:
    """Return the 32-byte key that this party and its peer agree on for the purpose ``info``.

    X25519 exchange of ``private_raw`` with ``peer_public_raw``, then HKDF-SHA256
    (no salt, 32 bytes of output) with ``info`` naming the purpose, e.g.
    ``b"fedpriv/secagg/enc"`` or ``b"fedpriv/secagg/mask"``.  Symmetric:
    ``derive_key(a_priv, b_pub, info=i) == derive_key(b_priv, a_pub, info=i)``.

    Raises :class:`ProtocolError` for keys of the wrong length or a peer public key
    of small order (an all-zero shared secret, which X25519 implementations reject).
    """
    hint = "X25519 keys are the 32-byte raw encodings returned by generate_x25519()."
    private = X25519PrivateKey.from_private_bytes(
        _check_bytes(private_raw, KEY_BYTES, "the X25519 private key", hint)
    )
    peer = X25519PublicKey.from_public_bytes(
        _check_bytes(peer_public_raw, KEY_BYTES, "the peer's X25519 public key", hint)
    )
    if not isinstance(info, bytes) or not info:
        raise ProtocolError(
            f"derive_key needs a non-empty bytes `info` naming the key's purpose "
            f"(e.g. b'fedpriv/secagg/enc'); got {info!r}."
        )
    try:
        shared = private.exchange(peer)
    except ValueError as err:
        raise ProtocolError(
            "X25519 key agreement failed: the peer's public key is of small order "
            "(it yields an all-zero shared secret). Reject this peer's advertised key."
        ) from err
    return HKDF(algorithm=hashes.SHA256(), length=KEY_BYTES, salt=None, info=info).derive(shared)


# ---------------------------------------------------------------------------
# AES-256-GCM for the shares
# ---------------------------------------------------------------------------


def share_aad(sender: int, receiver: int, round_index: int) -> bytes:
    """Return the canonical additional data that binds an encrypted share to its route.

    ``b"fedpriv-secagg-share" + struct.pack(">qqq", sender, receiver, round_index)``:
    a share decrypts only for the (sender, receiver, round) it was encrypted for.
    """
    values: list[int] = []
    for what, value in (("sender", sender), ("receiver", receiver), ("round_index", round_index)):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):
            raise ProtocolError(f"share_aad: {what} must be an integer; got {value!r}.")
        if not _INT64_MIN <= int(value) <= _INT64_MAX:
            raise ProtocolError(f"share_aad: {what} must fit a signed 64-bit int; got {value}.")
        values.append(int(value))
    return _SHARE_AAD_PREFIX + struct.pack(">qqq", *values)


def encrypt(key: bytes, plaintext: bytes, *, aad: bytes) -> bytes:
    """Encrypt and authenticate ``plaintext`` under the 32-byte ``key`` with AES-256-GCM.

    Returns ``nonce (12 B, fresh from os.urandom) ‖ ciphertext ‖ tag (16 B)``.  A
    random 96-bit nonce per message is safe for the few messages a pairwise key
    encrypts in one round.  ``aad`` is authenticated but not encrypted; use
    :func:`share_aad` for shares.
    """
    aead = AESGCM(_check_bytes(key, KEY_BYTES, "the AES-GCM key", _KEY_HINT))
    nonce = os.urandom(NONCE_BYTES)
    return nonce + aead.encrypt(nonce, bytes(plaintext), bytes(aad))


def decrypt(key: bytes, ciphertext: bytes, *, aad: bytes) -> bytes:
    """Return the plaintext of a :func:`encrypt` output, or raise :class:`ProtocolError`.

    Any tampering with the nonce, ciphertext or tag, a different ``aad`` (another
    sender, receiver or round) or a wrong key fails authentication.
    """
    aead = AESGCM(_check_bytes(key, KEY_BYTES, "the AES-GCM key", _KEY_HINT))
    if not isinstance(ciphertext, (bytes, bytearray, memoryview)):
        raise ProtocolError(f"the share ciphertext must be bytes; got {type(ciphertext).__name__}.")
    data = bytes(ciphertext)
    if len(data) < NONCE_BYTES + TAG_BYTES:
        raise ProtocolError(
            f"share ciphertext failed authentication: it is {len(data)} bytes, shorter than "
            f"a nonce and a tag ({NONCE_BYTES + TAG_BYTES}); the message was truncated or "
            "forged — treat the sender as malicious or dropped."
        )
    try:
        return aead.decrypt(data[:NONCE_BYTES], data[NONCE_BYTES:], bytes(aad))
    except InvalidTag as err:
        raise ProtocolError(
            "share ciphertext failed authentication (wrong key, wrong sender/receiver/round "
            "in the additional data, or a tampered message); drop this share and treat its "
            "sender as malicious or dropped."
        ) from err


# ---------------------------------------------------------------------------
# Ed25519 signatures
# ---------------------------------------------------------------------------


def generate_ed25519() -> tuple[bytes, bytes]:
    """Return a fresh Ed25519 signing key pair as ``(private raw 32 B, public raw 32 B)``."""
    private = Ed25519PrivateKey.generate()
    private_raw = private.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
    public_raw = private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    return private_raw, public_raw


def sign(private_raw: bytes, message: bytes) -> bytes:
    """Return the 64-byte Ed25519 signature of ``message`` under ``private_raw``."""
    hint = "Ed25519 keys are the 32-byte raw encodings returned by generate_ed25519()."
    private = Ed25519PrivateKey.from_private_bytes(
        _check_bytes(private_raw, KEY_BYTES, "the Ed25519 private key", hint)
    )
    return private.sign(bytes(message))


def verify(public_raw: bytes, message: bytes, signature: bytes) -> None:
    """Return ``None`` if ``signature`` is a valid Ed25519 signature of ``message``; else raise.

    Raises :class:`ProtocolError` for a bad signature or malformed key; it never
    returns a ``bool`` that a caller could forget to check.
    """
    hint = "Ed25519 public keys are the 32-byte raw encodings returned by generate_ed25519()."
    try:
        public = Ed25519PublicKey.from_public_bytes(
            _check_bytes(public_raw, KEY_BYTES, "the Ed25519 public key", hint)
        )
    except ValueError as err:
        if isinstance(err, ProtocolError):
            raise
        raise ProtocolError(f"the Ed25519 public key is malformed: {err}. {hint}") from err
    if not isinstance(signature, (bytes, bytearray, memoryview)):
        raise ProtocolError(f"the signature must be bytes; got {type(signature).__name__}.")
    try:
        public.verify(bytes(signature), bytes(message))
    except InvalidSignature as err:
        raise ProtocolError(
            "signature verification failed: the message was not signed by the holder of this "
            "public key (forged or altered); reject the message and its sender."
        ) from err


# ---------------------------------------------------------------------------
# Mask PRG
# ---------------------------------------------------------------------------


def _check_bits(bits: Any) -> int:
    return _check_int(
        bits, "bits", 1, 64, "Use the word size of the fixed-point encoding (FixedPointSpec.bits)."
    )


def _check_seed(seed: Any) -> bytes:
    return _check_bytes(
        seed,
        SEED_BYTES,
        "the mask seed",
        "Mask seeds are 32 bytes (random_seed() or derive_key(..., info=b'fedpriv/secagg/mask')); "
        "never shorten or fold them.",
    )


def _check_buffer(buf: Any, what: str, length: int, dtype: np.dtype) -> np.ndarray:
    if not isinstance(buf, np.ndarray):
        raise ConfigError(f"{what} must be a numpy array; got {type(buf).__name__}.")
    if buf.dtype != dtype or buf.shape != (length,):
        raise ConfigError(
            f"{what} must be a 1-D {dtype} array of {length} words; got a {buf.dtype} array of "
            f"shape {buf.shape}. Allocate it with np.empty({length}, dtype=word_dtype(bits))."
        )
    if not (buf.flags.c_contiguous and buf.flags.writeable):
        raise ConfigError(
            f"{what} must be C-contiguous and writeable; pass a fresh np.empty buffer, "
            "not a strided view or a read-only array."
        )
    return buf


def _keystream_into(seed: bytes, words: np.ndarray) -> None:
    """Overwrite ``words`` with AES-256-CTR keystream bytes under ``seed`` (counter from 0)."""
    raw = words.view(np.uint8).data
    nbytes = len(raw)
    encryptor = Cipher(algorithms.AES(seed), modes.CTR(_CTR_NONCE)).encryptor()
    pos = 0
    chunk = len(_ZERO_CHUNK)
    while nbytes - pos > _UPDATE_INTO_SLACK:
        step = min(chunk, nbytes - pos - _UPDATE_INTO_SLACK)
        pos += encryptor.update_into(_ZERO_CHUNK[:step], raw[pos:])
    if pos < nbytes:
        raw[pos:] = encryptor.update(_ZERO_CHUNK[: nbytes - pos])
    if sys.byteorder == "big":  # words are defined as little-endian, on every host
        words.byteswap(inplace=True)


def expand_mask(
    seed: bytes, length: int, *, bits: int, out: np.ndarray | None = None
) -> np.ndarray:
    """Return ``length`` uniform words over ``Z_{2^bits}`` expanded from a 32-byte ``seed``.

    Word ``i`` is bytes ``[i·w, (i+1)·w)`` of the AES-256-CTR keystream (key =
    ``seed``, initial counter block = 16 zero bytes), read little-endian, where
    ``w`` is 4 bytes for ``bits ≤ 32`` (dtype ``uint32``) and 8 bytes otherwise
    (``uint64``), then reduced mod ``2^bits``.  Because ``2^bits`` divides the word
    range, every word is exactly uniform when the keystream is.

    ``out``, if given, is a C-contiguous writeable 1-D array of ``length`` words of
    ``word_dtype(bits)``; it is filled and returned (no allocation).  Each seed
    must key exactly one mask.
    """
    seed = _check_seed(seed)
    bits = _check_bits(bits)
    length = _check_int(length, "length", 0, 2**62, "Pass the number of words of the update.")
    dtype = word_dtype(bits)
    out = np.empty(length, dtype=dtype) if out is None else _check_buffer(out, "out", length, dtype)
    _keystream_into(seed, out)
    if bits < dtype.itemsize * 8:
        np.bitwise_and(out, dtype.type((1 << bits) - 1), out=out)
    return out


def add_mask(
    acc: np.ndarray,
    seed: bytes,
    *,
    bits: int,
    sign: int = 1,
    scratch: np.ndarray | None = None,
) -> None:
    """Add (``sign=1``) or subtract (``sign=-1``) the mask of ``seed`` to ``acc``, mod ``2^bits``.

    ``acc`` is a 1-D C-contiguous writeable array of ``word_dtype(bits)`` and is
    updated in place; on return every word is reduced mod ``2^bits`` (even if it
    was not before).  ``scratch`` (same shape and dtype) receives the keystream;
    pass one buffer for all the masks of a round to avoid an allocation per mask.
    ``add_mask(acc, s, bits=b)`` followed by ``add_mask(acc, s, bits=b, sign=-1)``
    restores an ``acc`` that was reduced mod ``2^bits`` exactly.
    """
    seed = _check_seed(seed)
    bits = _check_bits(bits)
    if isinstance(sign, bool) or not isinstance(sign, numbers.Integral) or sign not in (1, -1):
        raise ConfigError(
            f"sign must be 1 (add the mask) or -1 (subtract it); got {sign!r}. In SecAgg the "
            "client with the smaller id adds the pairwise mask and the larger one subtracts it."
        )
    dtype = word_dtype(bits)
    if not isinstance(acc, np.ndarray) or acc.ndim != 1:
        raise ConfigError(
            "acc must be a 1-D numpy array of masked words; got "
            f"{type(acc).__name__}{'' if not isinstance(acc, np.ndarray) else acc.shape}."
        )
    acc = _check_buffer(acc, "acc", acc.shape[0], dtype)
    if scratch is None:
        scratch = np.empty(acc.shape[0], dtype=dtype)
    else:
        scratch = _check_buffer(scratch, "scratch", acc.shape[0], dtype)
        if np.shares_memory(scratch, acc):
            raise ConfigError("scratch must not overlap acc; pass a separate buffer.")
    # Raw keystream words are uniform mod 2^wordsize; since 2^bits divides 2^wordsize,
    # wrapping uint arithmetic followed by one AND equals adding the reduced mask.
    _keystream_into(seed, scratch)
    if sign == 1:
        np.add(acc, scratch, out=acc)
    else:
        np.subtract(acc, scratch, out=acc)
    if bits < dtype.itemsize * 8:
        np.bitwise_and(acc, dtype.type((1 << bits) - 1), out=acc)


def add_masks(
    acc: np.ndarray,
    masks: Iterable[tuple[bytes, int]],
    *,
    bits: int,
    reduce: bool = True,
) -> None:
    """Add ``Σ sign · PRG(seed)`` over ``masks`` (pairs ``(seed, sign)``) to ``acc`` in place.

    The same words as calling :func:`add_mask` once per pair, in fewer passes: the
    keystreams are generated block by block into a small cache-resident buffer and
    added (``sign=1``) or subtracted (``sign=-1``) with wrapping ``uint`` arithmetic,
    and the reduction mod ``2^bits`` is one ``AND`` at the end.  That is exact
    because ``2^bits`` divides the word modulus ``2^32`` / ``2^64``: wrapping sums
    agree with the true sum mod ``2^bits`` whatever the order of reduction.

    ``acc`` is a 1-D C-contiguous writeable array of ``word_dtype(bits)``.  With
    ``reduce=False`` the final ``AND`` is skipped (the words are then only correct
    mod ``2^bits``), for a caller that adds more terms and reduces once itself.
    Each seed must key exactly one mask.
    """
    bits = _check_bits(bits)
    dtype = word_dtype(bits)
    if not isinstance(acc, np.ndarray) or acc.ndim != 1:
        raise ConfigError(
            "acc must be a 1-D numpy array of masked words; got "
            f"{type(acc).__name__}{'' if not isinstance(acc, np.ndarray) else acc.shape}."
        )
    acc = _check_buffer(acc, "acc", acc.shape[0], dtype)
    pairs: list[tuple[bytes, int]] = []
    for seed, sign in masks:
        if isinstance(sign, bool) or not isinstance(sign, numbers.Integral) or sign not in (1, -1):
            raise ConfigError(
                f"sign must be 1 (add the mask) or -1 (subtract it); got {sign!r}. In SecAgg the "
                "client with the smaller id adds the pairwise mask and the larger one subtracts it."
            )
        pairs.append((_check_seed(seed), int(sign)))
    encryptors = [
        (Cipher(algorithms.AES(seed), modes.CTR(_CTR_NONCE)).encryptor(), sign)
        for seed, sign in pairs
    ]
    block_words = _MASK_BLOCK_BYTES // dtype.itemsize
    # update_into needs len(data) + block − 1 bytes of output room: keep a spare block.
    keystream = np.empty(block_words + _AES_BLOCK // dtype.itemsize, dtype=dtype)
    raw = keystream.view(np.uint8).data
    swap = sys.byteorder == "big"  # words are defined as little-endian, on every host
    for start in range(0, acc.shape[0], block_words):
        target = acc[start : start + block_words]
        count = target.shape[0]
        nbytes = count * dtype.itemsize
        words = keystream[:count]
        for encryptor, sign in encryptors:
            filled = 0
            while filled < nbytes:
                filled += encryptor.update_into(_ZERO_CHUNK[: nbytes - filled], raw[filled:])
            if swap:
                words.byteswap(inplace=True)
            if sign == 1:
                np.add(target, words, out=target)
            else:
                np.subtract(target, words, out=target)
    if reduce and bits < dtype.itemsize * 8:
        np.bitwise_and(acc, dtype.type((1 << bits) - 1), out=acc)
