"""Shamir secret sharing of short secrets (32-byte seeds and keys) over ``GF(2^521 − 1)``.

SecAgg (Bonawitz et al. 2017, §4) has every client ``t``-out-of-``n`` share its
self-mask seed ``b_u`` and its mask private key ``s_u^SK`` with the other
clients, so the server can remove the masks of dropped clients (from shares of
``s_u^SK``) and of survivors (from shares of ``b_u``) once at least ``t`` clients
answer, while any ``t − 1`` colluding parties learn nothing (Shamir 1979: a random
polynomial of degree ``t − 1`` is information-theoretically hiding at ``t − 1``
points).  SecAgg+ (Bell et al. 2020) does the same among a client's neighbours.

This module owns that sharing, as pure functions on bytes:

- the field is ``GF(p)`` with the Mersenne prime ``p = 2^521 − 1`` (:data:`PRIME`),
  larger than ``2^520``, so any secret of up to 65 bytes (in particular every
  32-byte seed) is a field element and no reduction loses information;
- client ``i`` evaluates at ``x = i + 1`` (never at 0, which is the secret);
- coefficients come from ``secrets.randbelow`` (the OS CSPRNG), never from
  ``random`` or ``numpy.random``;
- a share is ``y`` as :data:`SHARE_BYTES` (66) big-endian bytes, whatever the secret;
- :func:`reconstruct_verified` tolerates bad shares when a check of the secret
  (a commitment, a public key) is available: it finds ``t`` shares whose secret
  passes the check and names the holders whose shares lie off that polynomial.
"""

from __future__ import annotations

import itertools
import numbers
import secrets
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from fedpriv.errors import ConfigError, ProtocolError

__all__ = [
    "MAX_SECRET_BYTES",
    "PRIME",
    "SHARE_BYTES",
    "reconstruct_secret",
    "reconstruct_verified",
    "split_secret",
]

PRIME = 2**521 - 1
"""The field modulus: a Mersenne prime > 2^256, so any 32-byte secret is a field element."""
SHARE_BYTES = 66
"""Length of every share: a field element as big-endian bytes (ceil(521 / 8))."""
MAX_SECRET_BYTES = 65
"""Longest secret that is always a field element (2^520 < PRIME)."""
_MAX_ID = 2**63 - 1


def _check_threshold(threshold: Any) -> int:
    if isinstance(threshold, bool) or not isinstance(threshold, numbers.Integral):
        raise ConfigError(
            f"threshold must be an integer (the number of shares needed to reconstruct); "
            f"got {threshold!r}."
        )
    if threshold < 1:
        raise ConfigError(f"threshold must be >= 1; got {threshold}.")
    return int(threshold)


def _check_id(share_id: Any, error: type[ConfigError] | type[ProtocolError]) -> int:
    if isinstance(share_id, bool) or not isinstance(share_id, numbers.Integral):
        raise error(f"share ids are client ids (integers >= 0); got {share_id!r}.")
    number = int(share_id)
    if not 0 <= number <= _MAX_ID:
        raise error(f"share ids are client ids in [0, 2^63 − 1]; got {number}.")
    return number


def split_secret(secret: bytes, *, threshold: int, share_ids: Sequence[int]) -> dict[int, bytes]:
    """Return ``threshold``-out-of-``len(share_ids)`` Shamir shares of ``secret``, by share id.

    ``share_ids`` are client ids (unique integers ≥ 0); client ``i``'s share is the
    value at ``x = i + 1`` of a fresh random polynomial of degree ``threshold − 1``
    whose constant term is ``secret`` (read big-endian), as :data:`SHARE_BYTES`
    big-endian bytes.  Two splits of the same secret give independent shares (for
    ``threshold ≥ 2``; with ``threshold = 1`` every share *is* the secret).

    Raises :class:`ConfigError` unless ``1 ≤ threshold ≤ len(share_ids)``, the ids
    are unique and ``secret`` is bytes of at most :data:`MAX_SECRET_BYTES`.
    """
    if not isinstance(secret, (bytes, bytearray, memoryview)):
        raise ConfigError(f"secret must be bytes; got {type(secret).__name__}.")
    secret = bytes(secret)
    if len(secret) > MAX_SECRET_BYTES:
        raise ConfigError(
            f"secret is {len(secret)} bytes; at most {MAX_SECRET_BYTES} fit the field "
            "GF(2^521 − 1). Share a 32-byte seed and expand it instead."
        )
    threshold = _check_threshold(threshold)
    if isinstance(share_ids, (str, bytes)) or not isinstance(share_ids, Sequence):
        raise ConfigError(f"share_ids must be a sequence of client ids; got {share_ids!r}.")
    ids = [_check_id(i, ConfigError) for i in share_ids]
    if len(set(ids)) != len(ids):
        duplicates = sorted({i for i in ids if ids.count(i) > 1})
        raise ConfigError(
            f"share_ids list {duplicates} more than once; give each shareholder one id."
        )
    if threshold > len(ids):
        raise ConfigError(
            f"threshold {threshold} exceeds the number of shareholders {len(ids)}: the secret "
            "could never be reconstructed. Lower the threshold or add shareholders."
        )
    # Coefficients a_1..a_{t−1} uniform in GF(p), from the OS CSPRNG.
    coefficients = [int.from_bytes(secret, "big")] + [
        secrets.randbelow(PRIME) for _ in range(threshold - 1)
    ]
    shares: dict[int, bytes] = {}
    for share_id in ids:
        x = share_id + 1
        y = 0
        for coefficient in reversed(coefficients):  # Horner
            y = (y * x + coefficient) % PRIME
        shares[share_id] = y.to_bytes(SHARE_BYTES, "big")
    return shares


def _batch_inverse(values: list[int]) -> list[int]:
    """Return the inverses mod PRIME of non-zero ``values`` with one modular inversion."""
    prefix = [1] * (len(values) + 1)
    for k, value in enumerate(values):
        prefix[k + 1] = prefix[k] * value % PRIME
    inverse = pow(prefix[-1], -1, PRIME)
    result = [0] * len(values)
    for k in range(len(values) - 1, -1, -1):
        result[k] = inverse * prefix[k] % PRIME
        inverse = inverse * values[k] % PRIME
    return result


def _evaluate(xs: list[int], weighted: list[int], x: int) -> int:
    """Return ``Σ_j weighted_j · Π_{k≠j} (x − x_k)`` mod PRIME in O(t) (prefix/suffix products)."""
    t = len(xs)
    suffix = [1] * (t + 1)
    for k in range(t - 1, -1, -1):
        suffix[k] = suffix[k + 1] * (x - xs[k]) % PRIME
    total, prefix = 0, 1
    for j in range(t):
        total = (total + weighted[j] * prefix % PRIME * suffix[j + 1]) % PRIME
        prefix = prefix * (x - xs[j]) % PRIME
    return total


def _point(share_id: Any, share: Any) -> tuple[int, int]:
    """Return the point ``(id + 1, y)`` of one share, or raise :class:`ProtocolError`."""
    x = _check_id(share_id, ProtocolError) + 1
    if not isinstance(share, (bytes, bytearray, memoryview)) or len(share) != SHARE_BYTES:
        raise ProtocolError(
            f"the share of id {share_id} must be {SHARE_BYTES} bytes; got "
            f"{len(share) if isinstance(share, (bytes, bytearray)) else type(share).__name__}"
            ". The message was truncated or forged."
        )
    y = int.from_bytes(bytes(share), "big")
    if y >= PRIME:
        raise ProtocolError(
            f"the share of id {share_id} is not a field element (>= 2^521 − 1); "
            "it was corrupted or forged."
        )
    return x, y


def _interpolate(basis: Sequence[tuple[int, int]]) -> tuple[list[int], list[int]]:
    """Return ``(xs, weighted)``, with which :func:`_evaluate` interpolates through ``basis``.

    Barycentric weights ``w_j = 1 / Π_{k≠j} (x_j − x_k)``; then
    ``P(x) = Σ_j y_j w_j Π_{k≠j} (x − x_k)`` for the unique polynomial through the basis.
    """
    xs = [x for x, _ in basis]
    denominators = [1] * len(xs)
    for j, xj in enumerate(xs):
        for k, xk in enumerate(xs):
            if k != j:
                denominators[j] = denominators[j] * (xj - xk) % PRIME
    weighted = [
        y * w % PRIME for (_, y), w in zip(basis, _batch_inverse(denominators), strict=True)
    ]
    return xs, weighted


def reconstruct_secret(
    shares: Mapping[int, bytes], *, threshold: int, secret_len: int = 32
) -> bytes:
    """Return the ``secret_len``-byte secret that ``shares`` (share id → share) encode.

    Lagrange interpolation at 0 through the ``threshold`` shares with the smallest
    ids; every further share given is then checked to lie on the same polynomial,
    so pass all the shares you have to detect corrupted ones.

    Raises :class:`ProtocolError` when fewer than ``threshold`` shares are given
    ("need t, got m"), when a share is malformed, when the extra shares are
    inconsistent, or when the interpolated value does not fit ``secret_len``
    bytes (a sign of wrong or forged shares, or of a wrong threshold: with fewer
    than ``threshold`` honest shares the result is a uniformly random field element,
    which fits 32 bytes with probability 2^-265).
    """
    threshold = _check_threshold(threshold)
    if (
        isinstance(secret_len, bool)
        or not isinstance(secret_len, numbers.Integral)
        or not 1 <= secret_len <= MAX_SECRET_BYTES
    ):
        raise ConfigError(
            f"secret_len must be an integer in [1, {MAX_SECRET_BYTES}]; got {secret_len!r}."
        )
    if not isinstance(shares, Mapping):
        raise ProtocolError(
            f"shares must be a mapping share id → share bytes; got {type(shares).__name__}."
        )
    if len(shares) < threshold:
        raise ProtocolError(
            f"cannot reconstruct the secret: need {threshold} shares, got {len(shares)}. "
            "Too many clients dropped out; the round cannot be completed."
        )
    points = sorted(_point(share_id, share) for share_id, share in shares.items())
    basis, extra = points[:threshold], points[threshold:]
    xs, weighted = _interpolate(basis)
    inconsistent = [x - 1 for x, y in extra if _evaluate(xs, weighted, x) != y]
    if inconsistent:
        raise ProtocolError(
            f"the shares of ids {inconsistent} are inconsistent with the shares of ids "
            f"{[x - 1 for x in xs]} (they do not lie on one polynomial of degree "
            f"{threshold - 1}): some share was corrupted or forged, or the threshold is wrong."
        )
    value = _evaluate(xs, weighted, 0)
    if value >= 1 << (8 * secret_len):
        raise ProtocolError(
            f"the reconstructed secret does not fit {secret_len} bytes: the shares are wrong, "
            f"forged or from different secrets, or threshold={threshold} is not the threshold "
            "they were split with."
        )
    return value.to_bytes(secret_len, "big")


MAX_SUBSETS = 4096
"""Most ``t``-subsets :func:`reconstruct_verified` tries before it gives up."""


def reconstruct_verified(
    shares: Mapping[int, bytes],
    *,
    threshold: int,
    check: Callable[[bytes], bool],
    secret_len: int = 32,
    max_subsets: int = MAX_SUBSETS,
) -> tuple[bytes, frozenset[int]]:
    """Return ``(secret, bad ids)``: the secret passing ``check``, and shares shown to be bad.

    ``check`` recognises the one right secret (it compares a commitment or a public
    key: binding, so no other secret passes).  Malformed shares are bad outright.
    Of the ``m`` well-formed ones, ``threshold``-subsets are tried — the ``t`` smallest
    ids first (one pass when no share is bad), then ``e = 1, 2, …`` left out of the
    ``t + e`` smallest, at most ``max_subsets`` subsets — for one whose secret passes
    ``check``.  The secret is then right, but the subset's polynomial may not be the
    dealer's: errors can cancel at 0 (e.g. ±1 on three shares whose Lagrange weights
    at 0 sum to zero), so blaming the shares off it could name honest holders.  So
    shares are named bad only from a polynomial that agrees with more than
    ``(m + t − 2) / 2`` shares: two polynomials of degree ``t − 1`` through the checked
    point ``(0, secret)`` that both agree that often share ``t − 1`` more points, so
    they are one, and with ``e`` bad shares and ``2e ≤ m − t + 1`` it is the dealer's
    (Reed–Solomon unique decoding, with the check as one more known-good point).
    Beyond that radius the secret is returned and only the malformed shares are named.

    Raises :class:`ProtocolError` when fewer than ``threshold`` well-formed shares
    remain or no subset passes ``check`` (too many bad shares to tell).
    """
    threshold = _check_threshold(threshold)
    if not isinstance(shares, Mapping):
        raise ProtocolError(
            f"shares must be a mapping share id → share bytes; got {type(shares).__name__}."
        )
    points: dict[int, int] = {}
    bad: set[int] = set()
    for share_id, share in shares.items():
        try:
            x, y = _point(share_id, share)
        except ProtocolError:
            if isinstance(share_id, int) and not isinstance(share_id, bool):
                bad.add(share_id)
            continue
        points[x] = y
    if len(points) < threshold:
        raise ProtocolError(
            f"cannot reconstruct the secret: need {threshold} well-formed shares, got "
            f"{len(points)} (malformed: {sorted(bad)})."
        )
    xs_all = sorted(points)

    def attempt(subset: Sequence[int]) -> tuple[bytes, set[int]] | None:
        """Return the subset's secret and the shares off its polynomial, if it passes."""
        xs, weighted = _interpolate([(x, points[x]) for x in subset])
        value = _evaluate(xs, weighted, 0)
        if value >= 1 << (8 * secret_len):
            return None
        secret = value.to_bytes(secret_len, "big")
        if not check(secret):
            return None
        chosen = set(subset)
        off = {x - 1 for x in xs_all if x not in chosen and _evaluate(xs, weighted, x) != points[x]}
        return secret, off

    m = len(xs_all)
    found_secret: bytes | None = None
    tried = 0
    # Leave e shares out of the window of the t + e smallest ids, fewest first: when
    # at most e shares are bad, some choice leaves t good ones (and e = 0 is one pass).
    for leave_out in range(m - threshold + 1):
        window = xs_all[: threshold + leave_out]
        for excluded in itertools.combinations(window, leave_out):
            if tried >= max_subsets:
                break
            tried += 1
            found = attempt([x for x in window if x not in excluded])
            if found is None:
                continue
            secret, off = found
            if 2 * (m - len(off)) > m + threshold - 2:  # unique decoding: blame is sound
                return secret, frozenset(bad | off)
            found_secret = found_secret or secret
    if found_secret is not None:
        return found_secret, frozenset(bad)
    raise ProtocolError(
        f"cannot reconstruct the secret: no {threshold} of the {len(xs_all)} well-formed shares "
        f"(tried {tried} subsets) give a secret that passes its check (commitment or public "
        "key); too many shares are corrupted or forged to tell the good ones."
    )
