"""The typed messages of a ``ckks`` round and their exact wire format.

Owns the three messages — :class:`EncryptedUpdate` (client → server, signed),
:class:`DecryptRequest` (server → one key holder: the signed uploads) and :class:`ReleasedSum` (key
holder → server) — each with a concrete serialization (:meth:`payload` /
``from_payload``, big-endian ``struct`` fields and length-prefixed TenSEAL
ciphertexts), so that :meth:`nbytes` is the true serialized length plus the
16-byte notional header of every fedpriv message; and the boundary check of a
message received from a client (:func:`check_client_message`).
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fedpriv.errors import ProtocolError
from fedpriv.protocols.base import MESSAGE_HEADER_NBYTES, ClientId, Message, readonly_array
from fedpriv.protocols.boundary import (
    Received,
    check_answer,
    check_bytes,
    check_int,
    check_update_length,
)
from fedpriv.protocols.ckks.keys import KEY_ID_NBYTES, check_key_id

_PREFIX = struct.Struct(f">q{KEY_ID_NBYTES}s")  # round, key id
_COUNT = struct.Struct(">I")  # number of items / length of one ciphertext
_ID = struct.Struct(">q")
_GRID = struct.Struct(">iQ")  # grid exponent, number of released values
_LENGTH = struct.Struct(">Q")  # length of one forwarded upload
SIGNATURE_NBYTES = 64
"""Length of the Ed25519 signature on an upload."""


def _chunks(chunks: Sequence[bytes], what: str) -> tuple[bytes, ...]:
    if isinstance(chunks, (bytes, str)):
        raise ProtocolError(f"{what} must be a sequence of serialized ciphertexts, not one bytes.")
    items = tuple(chunks)
    if not items or not all(isinstance(c, bytes) and c for c in items):
        raise ProtocolError(f"{what} must hold at least one non-empty bytes ciphertext.")
    return items


def _chunks_nbytes(chunks: Sequence[bytes]) -> int:
    return _COUNT.size + sum(_COUNT.size + len(c) for c in chunks)


def _pack_chunks(chunks: Sequence[bytes]) -> bytes:
    parts = [_COUNT.pack(len(chunks))]
    for chunk in chunks:
        parts += [_COUNT.pack(len(chunk)), chunk]
    return b"".join(parts)


class _Reader:
    """Read big-endian fields from a payload, raising :class:`ProtocolError` when it is short."""

    def __init__(self, data: bytes, what: str) -> None:
        if not isinstance(data, bytes):
            raise ProtocolError(f"{what} payload must be bytes; got {type(data).__name__}.")
        self.data, self.pos, self.what = data, 0, what

    def take(self, size: int) -> bytes:
        if size < 0 or self.pos + size > len(self.data):
            raise ProtocolError(f"{self.what} payload is truncated or malformed.")
        out = self.data[self.pos : self.pos + size]
        self.pos += size
        return out

    def integer(self, layout: struct.Struct) -> int:
        (value,) = layout.unpack(self.take(layout.size))
        return int(value)

    def prefix(self) -> tuple[int, bytes]:
        round_index, key_id = _PREFIX.unpack(self.take(_PREFIX.size))
        return int(round_index), bytes(key_id)

    def chunks(self) -> tuple[bytes, ...]:
        count = self.integer(_COUNT)
        return tuple(self.take(self.integer(_COUNT)) for _ in range(count))

    def done(self) -> None:
        if self.pos != len(self.data):
            raise ProtocolError(f"{self.what} payload has {len(self.data) - self.pos} extra bytes.")


@dataclass(frozen=True, eq=False)
class EncryptedUpdate(Message):
    """Phase 0, client → server: CKKS ciphertexts of ``w'·clip(Δ)`` followed by ``w'·clip``, signed.

    ``chunks[j]`` is one serialized TenSEAL ``CKKSVector`` holding one ciphertext
    (slots ``j·N/2`` onwards).  ``signature`` is the sender's Ed25519 signature of
    :func:`~fedpriv.protocols.ckks.signing.upload_statement` (session, round, key
    id, sender, L, SHA-256 of the chunks): what a key holder checks before it adds
    the ciphertexts into the sum it decrypts.
    """

    round: int
    key_id: bytes
    chunks: tuple[bytes, ...] = field(repr=False)
    signature: bytes = field(repr=False)

    def __post_init__(self) -> None:
        check_key_id(self.key_id, f"EncryptedUpdate from client {self.sender}: key_id")
        object.__setattr__(self, "chunks", _chunks(self.chunks, "EncryptedUpdate.chunks"))
        if not isinstance(self.signature, bytes) or len(self.signature) != SIGNATURE_NBYTES:
            raise ProtocolError(
                f"EncryptedUpdate from client {self.sender}: the signature must be "
                f"{SIGNATURE_NBYTES} bytes (Ed25519); got {type(self.signature).__name__}."
            )

    def nbytes(self) -> int:
        """Header + round + key id + count + (length + ciphertext) per chunk + signature."""
        return (MESSAGE_HEADER_NBYTES + _PREFIX.size + _chunks_nbytes(self.chunks)
                + SIGNATURE_NBYTES)

    def payload(self) -> bytes:
        """Return the serialized message body (what :meth:`nbytes` counts after the header)."""
        return _PREFIX.pack(self.round, self.key_id) + _pack_chunks(self.chunks) + self.signature

    @classmethod
    def from_payload(cls, sender: ClientId, data: bytes) -> EncryptedUpdate:
        """Parse :meth:`payload`; raise :class:`ProtocolError` for a malformed one."""
        reader = _Reader(data, "EncryptedUpdate")
        round_index, key_id = reader.prefix()
        chunks = reader.chunks()
        signature = reader.take(SIGNATURE_NBYTES)
        reader.done()
        return cls(sender, round_index, key_id, chunks, signature)


@dataclass(frozen=True, eq=False)
class DecryptRequest(Message):
    """Server → one key holder: the contributors' signed uploads, whose sum it is asked to release.

    The server forwards the uploads as it received them; the key holder verifies
    every signature and computes the sum itself, so there is no server-made
    ciphertext for it to decrypt.
    """

    round: int
    key_id: bytes
    uploads: tuple[EncryptedUpdate, ...] = field(repr=False)
    """One signed :class:`EncryptedUpdate` per contributor, in increasing sender id."""

    def __post_init__(self) -> None:
        check_key_id(self.key_id, "DecryptRequest.key_id")
        if isinstance(self.uploads, (bytes, str)) or not hasattr(self.uploads, "__iter__"):
            raise ProtocolError("DecryptRequest.uploads must be a sequence of EncryptedUpdate.")
        uploads = tuple(self.uploads)
        if not uploads or not all(isinstance(u, EncryptedUpdate) for u in uploads):
            raise ProtocolError(
                "DecryptRequest.uploads must hold at least one EncryptedUpdate (the signed "
                "uploads of the contributors)."
            )
        object.__setattr__(self, "uploads", uploads)

    @property
    def contributors(self) -> tuple[ClientId, ...]:
        """The senders of the forwarded uploads, in the request's order."""
        return tuple(u.sender for u in self.uploads)

    def nbytes(self) -> int:
        """Header + round + key id + count + per upload (id + length + its payload)."""
        per_upload = sum(_ID.size + _LENGTH.size + u.nbytes() - MESSAGE_HEADER_NBYTES
                         for u in self.uploads)
        return MESSAGE_HEADER_NBYTES + _PREFIX.size + _COUNT.size + per_upload

    def payload(self) -> bytes:
        """Return the serialized message body."""
        parts = [_PREFIX.pack(self.round, self.key_id), _COUNT.pack(len(self.uploads))]
        for upload in self.uploads:
            body = upload.payload()
            parts += [_ID.pack(upload.sender), _LENGTH.pack(len(body)), body]
        return b"".join(parts)

    @classmethod
    def from_payload(cls, sender: ClientId, data: bytes) -> DecryptRequest:
        """Parse :meth:`payload`; raise :class:`ProtocolError` for a malformed one."""
        reader = _Reader(data, "DecryptRequest")
        round_index, key_id = reader.prefix()
        uploads = []
        for _ in range(reader.integer(_COUNT)):
            upload_sender = reader.integer(_ID)
            body = reader.take(reader.integer(_LENGTH))
            uploads.append(EncryptedUpdate.from_payload(upload_sender, body))
        reader.done()
        return cls(sender, round_index, key_id, tuple(uploads))


@dataclass(frozen=True, eq=False)
class ReleasedSum(Message):
    """Key holder → server: the flooded sum rounded to the grid, as integer multiples of it.

    The released value of slot ``j`` is ``units[j] · 2^grid_exponent``: the first
    L entries are Σ w'·clip(Δ), the last Σ w'·clip.
    """

    round: int
    key_id: bytes
    grid_exponent: int
    units: np.ndarray = field(repr=False)

    def __post_init__(self) -> None:
        check_key_id(self.key_id, f"ReleasedSum from client {self.sender}: key_id")
        units = np.asarray(self.units)
        if units.dtype != np.int64 or units.ndim != 1 or units.size < 2:
            raise ProtocolError(
                f"ReleasedSum.units must be a 1-D int64 array of L + 1 >= 2 grid multiples; got "
                f"{units.dtype} of shape {units.shape}."
            )
        object.__setattr__(self, "units", readonly_array(units))
        object.__setattr__(self, "grid_exponent", int(self.grid_exponent))

    def values(self) -> np.ndarray:
        """Return the released float64 values ``units · 2^grid_exponent``."""
        return np.ldexp(self.units.astype(np.float64), self.grid_exponent)

    def nbytes(self) -> int:
        """Header + round + key id + grid exponent + count + 8 bytes per value."""
        return MESSAGE_HEADER_NBYTES + _PREFIX.size + _GRID.size + int(self.units.nbytes)

    def payload(self) -> bytes:
        """Return the serialized message body (values as big-endian int64)."""
        head = _PREFIX.pack(self.round, self.key_id) + _GRID.pack(
            self.grid_exponent, self.units.size
        )
        return head + self.units.astype(">i8").tobytes()

    @classmethod
    def from_payload(cls, sender: ClientId, data: bytes) -> ReleasedSum:
        """Parse :meth:`payload`; raise :class:`ProtocolError` for a malformed one."""
        reader = _Reader(data, "ReleasedSum")
        round_index, key_id = reader.prefix()
        exponent, count = _GRID.unpack(reader.take(_GRID.size))
        units = np.frombuffer(reader.take(8 * int(count)), dtype=">i8").astype(np.int64)
        reader.done()
        return cls(sender, round_index, key_id, int(exponent), units)


# --------------------------------------------------------------------------- boundary checks
# What the server checks of a client's message before its session sees it
# (fedpriv.protocols.boundary.admit calls check_client_message).

CHUNK_MAX_NBYTES = 64 * 2**20
"""Longest accepted serialized ciphertext (a fresh one at N = 2¹⁵ is about 1.3 MiB)."""
GRID_EXPONENT_RANGE = (-1074, 1023)
"""A release grid 2^e must be a float64."""

_ANSWERS: dict[type | None, tuple[type, ...]] = {
    None: (EncryptedUpdate,),
    DecryptRequest: (ReleasedSum,),
}


def check_client_message(message: Message, received: Received) -> None:
    """Raise :class:`ProtocolError` unless ``message`` is a well-formed ``ckks`` client message.

    An :class:`EncryptedUpdate` only in phase 0, under the federation's key id, with
    the round's number of ciphertexts, each non-empty and at most
    :data:`CHUNK_MAX_NBYTES`; a :class:`ReleasedSum` only from the client asked to
    decrypt, under the key id, with the grid the request's contributor count fixes
    and one int64 per entry plus the weight slot.  Whether a ciphertext parses under
    the federation's context is the server session's check.
    """
    check_answer(message, received, _ANSWERS)
    protocol: Any = received.protocol
    key_id = getattr(protocol, "key_id", None)
    params = getattr(protocol, "params", None)
    if isinstance(message, (EncryptedUpdate, ReleasedSum)) and (
        isinstance(key_id, bytes) and message.key_id != key_id
    ):
        raise ProtocolError(
            f"its {type(message).__name__} is under key id {message.key_id.hex()}, not the "
            f"federation's {key_id.hex()}."
        )
    if isinstance(message, EncryptedUpdate):
        if params is not None:
            expected = len(params.chunk_sizes(received.ctx.vector_size))
            if len(message.chunks) != expected:
                raise ProtocolError(
                    f"it sent {len(message.chunks)} ciphertexts; the round needs {expected}."
                )
        for index, chunk in enumerate(message.chunks):
            check_bytes(chunk, f"ciphertext {index}", maximum=CHUNK_MAX_NBYTES)
    elif isinstance(message, ReleasedSum):
        low, high = GRID_EXPONENT_RANGE
        check_int(message.grid_exponent, "the grid exponent", minimum=low, maximum=high)
        if message.units.dtype != np.int64:
            raise ProtocolError(f"the released units must be int64; got {message.units.dtype}.")
        check_update_length(message.units, received.ctx.vector_size + 1, "the released units")
        request = received.reply
        if params is not None and isinstance(request, DecryptRequest):
            expected_grid = params.grid_exponent(len(request.contributors))
            if message.grid_exponent != expected_grid:
                raise ProtocolError(
                    f"the release is on grid 2^{message.grid_exponent}; {len(request.contributors)}"
                    f" contributors fix 2^{expected_grid}."
                )


__all__ = ["SIGNATURE_NBYTES", "DecryptRequest", "EncryptedUpdate", "ReleasedSum",
           "check_client_message"]
