"""The stage functions of a ``ckks`` round: bytes and arrays in, bytes and arrays out.

Owns the client's clip-weight-chunk step and its *streaming* encryption (one
ciphertext alive at a time), the check that a serialized ciphertext belongs to
the federation's parameters, the chunk-by-chunk homomorphic sum that the key
holder recomputes from the signed uploads and decrypts, and the release: Gaussian
noise flooding drawn from the OS CSPRNG, then rounding to a public power-of-two
grid (Li & Micciancio 2021: a raw CKKS decryption ``m + e`` together with its
ciphertext reveals the secret key).
Sessions (:mod:`~fedpriv.protocols.ckks.client`, :mod:`~fedpriv.protocols.ckks.server`)
wrap these; nothing here keeps state.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Sequence

import numpy as np
import tenseal as ts

from fedpriv.errors import ProtocolError
from fedpriv.protocols import crypto
from fedpriv.protocols.base import ClientId
from fedpriv.protocols.ckks.params import CKKSParameters

UNITS_LIMIT = 2**62
"""Released grid multiples must stay below this in size (int64 with room to sum)."""


def clipped_chunks(
    update: np.ndarray, weight_fraction: float, clip: float, sizes: Sequence[int]
) -> Iterator[tuple[np.ndarray, int]]:
    """Yield, per ciphertext, (float64 values, how many entries were clipped).

    The values, over all chunks, are ``w'·clip(Δ, ±clip)`` followed by one weight
    slot ``w'·clip``; each chunk is built only when asked for, so the client never
    holds the whole weighted vector.
    """
    length = update.shape[0]
    if sum(sizes) != length + 1:
        raise ProtocolError(
            f"chunk sizes {list(sizes)} do not cover an update of {length} entries plus the "
            "weight slot; this is a bug in the ckks protocol."
        )
    start = 0
    for size in sizes:
        stop = start + size
        data_stop = min(stop, length)
        values = np.empty(size, dtype=np.float64)
        part = values[: max(data_stop - start, 0)]
        part[:] = update[start:data_stop]
        clipped = int(np.count_nonzero(np.abs(part) > clip))
        np.clip(part, -clip, clip, out=part)
        part *= weight_fraction
        if stop == length + 1:
            values[-1] = weight_fraction * clip
        yield values, clipped
        start = stop


def encrypt_chunks(
    context: ts.Context, chunks: Iterable[np.ndarray], scale: float
) -> Iterator[bytes]:
    """Encrypt each chunk into one CKKS ciphertext and yield it serialized, one at a time.

    Only one ``CKKSVector`` is alive at any moment: it is serialized and dropped
    before the next chunk is encrypted (``tests/protocols/test_ckks.py`` checks it).
    """
    for values in chunks:
        vector = ts.ckks_vector(context, values, scale=scale)
        data: bytes = vector.serialize()
        del vector
        yield data


def load_ciphertext(
    context: ts.Context, data: bytes, size: int, params: CKKSParameters, what: str
) -> ts.CKKSVector:
    """Return the ``CKKSVector`` in ``data`` after checking it fits ``params`` and holds ``size``.

    Raises :class:`ProtocolError` naming ``what`` for bytes that do not parse
    under ``context`` (e.g. another context's parameters), and for a vector of
    another size, scale, ring degree or level than a fresh ciphertext of ``params``.
    """
    try:
        vector = ts.ckks_vector_from(context, data)
    except (ValueError, RuntimeError, TypeError) as err:
        raise ProtocolError(
            f"{what} is not a CKKS ciphertext under this federation's parameters ({err}); was "
            "it made with another context? Encrypt with the federation's CKKSKeys."
        ) from None
    ciphertexts = vector.ciphertext()
    if vector.size() != size or len(ciphertexts) != 1:
        raise ProtocolError(
            f"{what} holds {vector.size()} values in {len(ciphertexts)} ciphertext(s); expected "
            f"{size} values in one ciphertext (the round's chunk layout)."
        )
    ciphertext = ciphertexts[0]
    found = (ciphertext.size(), ciphertext.poly_modulus_degree(),
             ciphertext.coeff_modulus_size(), ciphertext.scale, ciphertext.is_ntt_form())
    expected = (2, params.poly_modulus_degree, len(params.data_primes), params.scale, True)
    if found != expected:
        raise ProtocolError(
            f"{what} is not a fresh ciphertext of this federation: (polynomials, ring degree, "
            f"primes, scale, NTT form) = {found}, expected {expected}."
        )
    return vector


def check_ciphertexts(
    context: ts.Context, chunks: Sequence[bytes], sizes: Sequence[int],
    params: CKKSParameters, what: str,
) -> None:
    """Raise :class:`ProtocolError` unless every chunk loads as a fresh ciphertext of ``params``.

    The server runs it on each upload on its own, so that one client's malformed
    ciphertext drops that client instead of aborting the sum of everyone.
    """
    if len(chunks) != len(sizes):
        raise ProtocolError(
            f"{what} has {len(chunks)} ciphertexts; the round's update needs {len(sizes)}."
        )
    for index, (data, size) in enumerate(zip(chunks, sizes, strict=True)):
        vector = load_ciphertext(context, data, size, params, f"{what}: ciphertext {index}")
        del vector


def decrypt_sum(
    context: ts.Context,
    uploads: Sequence[tuple[ClientId, Sequence[bytes]]],
    sizes: Sequence[int],
    params: CKKSParameters,
    who: str,
) -> Iterator[np.ndarray]:
    """Yield, chunk by chunk, the raw decryption of the sum of ``uploads``: never to be released.

    The key holder's own homomorphic sum of the verified uploads (it never decrypts a
    ciphertext it did not add itself); each ciphertext is checked as it is loaded, and
    at most two ciphertext objects are alive at a time.
    """
    for index, size in enumerate(sizes):
        total: ts.CKKSVector | None = None
        for client_id, chunks in uploads:
            what = f"{who}: ciphertext {index} of client {client_id}"
            vector = load_ciphertext(context, chunks[index], size, params, what)
            if total is None:
                total = vector
            else:
                total.add_(vector)
            del vector
        if total is None:
            raise ProtocolError(f"{who}: nothing to sum; this is a bug in the ckks protocol.")
        values = np.asarray(total.decrypt(), dtype=np.float64)
        del total
        yield values


def csprng_normal(size: int) -> np.ndarray:
    """Return ``size`` independent N(0, 1) draws from the OS CSPRNG (never ``numpy.random``).

    A fresh 32-byte seed from :mod:`secrets` keys AES-256-CTR
    (:func:`fedpriv.protocols.crypto.expand_mask`); its 64-bit words become uniforms
    in (0, 1) with 53 random bits, and Box–Muller turns pairs of them into normals.
    """
    if size < 0:
        raise ProtocolError(f"csprng_normal needs a size >= 0; got {size}.")
    half = (size + 1) // 2
    words = crypto.expand_mask(crypto.random_seed(), 2 * half, bits=64)
    uniform = (np.right_shift(words, np.uint64(11)).astype(np.float64) + 0.5) * 2.0**-53
    radius = np.sqrt(-2.0 * np.log(uniform[:half]))
    angle = 2.0 * math.pi * uniform[half:]
    return np.concatenate([radius * np.cos(angle), radius * np.sin(angle)])[:size]


def check_decrypted(raw: np.ndarray, params: CKKSParameters, contributors: int, who: str) -> None:
    """Raise :class:`ProtocolError` if a raw decryption lies outside what ``contributors`` can sum.

    Every slot of an honest sum is at most ``m · clip`` in size (plus the error
    bound); a ciphertext made under another key set with the same parameters
    decrypts to values of order q/Δ instead.  Nothing is released then.
    """
    limit = contributors * params.clip + params.release_bound(contributors)
    worst = float(np.max(np.abs(raw))) if raw.size else 0.0
    if not worst <= limit:
        raise ProtocolError(
            f"{who}: the decrypted sum has an entry of size {worst:.3g}, beyond the {limit:.3g} "
            f"that {contributors} clipped clients can reach: some ciphertext was made under "
            "another key set (or with values beyond clip). Nothing is released; the round is "
            "aborted."
        )


def flood_and_round(raw: np.ndarray, flood_std: float, grid_exponent: int) -> np.ndarray:
    """Return ``round((raw + N(0, flood_std²)) / 2^grid_exponent)`` as int64 grid multiples.

    The noise comes from :func:`csprng_normal`; the caller releases only these
    multiples, never ``raw``.
    """
    noisy = raw + flood_std * csprng_normal(raw.shape[0])
    units = np.rint(np.ldexp(noisy, -grid_exponent))
    if units.size and not float(np.max(np.abs(units))) < UNITS_LIMIT:
        raise ProtocolError(
            f"a released value exceeds 2^62 grid steps of 2^{grid_exponent}; the parameters do "
            "not fit the values (raise precision or lower max_clients · clip)."
        )
    return units.astype(np.int64)


__all__ = [
    "check_ciphertexts",
    "check_decrypted",
    "clipped_chunks",
    "csprng_normal",
    "decrypt_sum",
    "encrypt_chunks",
    "flood_and_round",
    "load_ciphertext",
]
