"""The typed messages of a ``ckks`` round and their exact wire format.

Owns the three messages — :class:`EncryptedUpdate` (client → server),
:class:`DecryptRequest` (server → one key holder) and :class:`ReleasedSum` (key
holder → server) — each with a concrete serialization (:meth:`payload` /
``from_payload``, big-endian ``struct`` fields and length-prefixed TenSEAL
ciphertexts), so that :meth:`nbytes` is the true serialized length plus the
16-byte notional header of every fedpriv message.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from fedpriv.errors import ProtocolError
from fedpriv.protocols.base import MESSAGE_HEADER_NBYTES, ClientId, Message, readonly_array
from fedpriv.protocols.ckks.keys import KEY_ID_NBYTES, check_key_id

_PREFIX = struct.Struct(f">q{KEY_ID_NBYTES}s")  # round, key id
_COUNT = struct.Struct(">I")  # number of items / length of one ciphertext
_ID = struct.Struct(">q")
_GRID = struct.Struct(">iQ")  # grid exponent, number of released values


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
    """Phase 0, client → server: CKKS ciphertexts of ``w'·clip(Δ)`` followed by ``w'·clip``.

    ``chunks[j]`` is one serialized TenSEAL ``CKKSVector`` holding one ciphertext
    (slots ``j·N/2`` onwards).
    """

    round: int
    key_id: bytes
    chunks: tuple[bytes, ...] = field(repr=False)

    def __post_init__(self) -> None:
        check_key_id(self.key_id, f"EncryptedUpdate from client {self.sender}: key_id")
        object.__setattr__(self, "chunks", _chunks(self.chunks, "EncryptedUpdate.chunks"))

    def nbytes(self) -> int:
        """Header + round + key id + count + (length + ciphertext) per chunk."""
        return MESSAGE_HEADER_NBYTES + _PREFIX.size + _chunks_nbytes(self.chunks)

    def payload(self) -> bytes:
        """Return the serialized message body (what :meth:`nbytes` counts after the header)."""
        return _PREFIX.pack(self.round, self.key_id) + _pack_chunks(self.chunks)

    @classmethod
    def from_payload(cls, sender: ClientId, data: bytes) -> EncryptedUpdate:
        """Parse :meth:`payload`; raise :class:`ProtocolError` for a malformed one."""
        reader = _Reader(data, "EncryptedUpdate")
        round_index, key_id = reader.prefix()
        chunks = reader.chunks()
        reader.done()
        return cls(sender, round_index, key_id, chunks)


@dataclass(frozen=True, eq=False)
class DecryptRequest(Message):
    """Server → one key holder: the summed ciphertexts of ``contributors``, to release."""

    round: int
    key_id: bytes
    contributors: tuple[ClientId, ...]
    """The clients whose ciphertexts are in the sum (the survivors)."""
    chunks: tuple[bytes, ...] = field(repr=False)

    def __post_init__(self) -> None:
        check_key_id(self.key_id, "DecryptRequest.key_id")
        object.__setattr__(self, "contributors", tuple(int(c) for c in self.contributors))
        object.__setattr__(self, "chunks", _chunks(self.chunks, "DecryptRequest.chunks"))

    def nbytes(self) -> int:
        """Header + round + key id + count + ids + count + (length + ciphertext) per chunk."""
        ids = _COUNT.size + _ID.size * len(self.contributors)
        return MESSAGE_HEADER_NBYTES + _PREFIX.size + ids + _chunks_nbytes(self.chunks)

    def payload(self) -> bytes:
        """Return the serialized message body."""
        ids = _COUNT.pack(len(self.contributors)) + b"".join(
            _ID.pack(c) for c in self.contributors
        )
        return _PREFIX.pack(self.round, self.key_id) + ids + _pack_chunks(self.chunks)

    @classmethod
    def from_payload(cls, sender: ClientId, data: bytes) -> DecryptRequest:
        """Parse :meth:`payload`; raise :class:`ProtocolError` for a malformed one."""
        reader = _Reader(data, "DecryptRequest")
        round_index, key_id = reader.prefix()
        contributors = tuple(reader.integer(_ID) for _ in range(reader.integer(_COUNT)))
        chunks = reader.chunks()
        reader.done()
        return cls(sender, round_index, key_id, contributors, chunks)


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


__all__ = ["DecryptRequest", "EncryptedUpdate", "ReleasedSum"]
