"""SecAgg / SecAgg+ wire constants and pure stage functions.

Owns the domain separators and HKDF ``info`` strings, the phase count and key
size, and the bytes-in/bytes-out steps that the client and server sessions wrap:
the signed payloads (key advertisement, consistency check — both bound to the
run's session id and the round), the self-mask commitment, the share plaintext
layout, and the masking of an encoded input (spec: ``protocols/secagg.md``).
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Mapping

import numpy as np
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from fedpriv.errors import ProtocolError
from fedpriv.protocols import crypto
from fedpriv.protocols.base import ClientId

ENCRYPTION_INFO = b"fedpriv/secagg/enc"
"""HKDF ``info`` of the pairwise key that encrypts shares (from the ``c`` key pairs)."""
MASK_INFO = b"fedpriv/secagg/mask"
"""HKDF ``info`` of the pairwise mask seed ``s_ij`` (from the ``s`` key pairs)."""
ADVERTISE_DOMAIN = b"fedpriv/secagg/advertise/v2"
"""Prefix of the advertisement a client signs: ``‖ session ‖ round ‖ id ‖ c_pk ‖ s_pk``."""
CONSISTENCY_DOMAIN = b"fedpriv/secagg/consistency/v1"
"""Prefix of the consistency check a client signs: ``‖ session ‖ round ‖ id ‖ survivors``."""
MAX_SESSION_ID_BYTES = 255
"""Longest session (run) id: it travels as one length byte and the bytes."""
COMMITMENT_DOMAIN = b"fedpriv/secagg/self-mask-commitment/v1"
"""Prefix of the self-mask commitment ``SHA-256(domain ‖ round ‖ id ‖ b_i)``."""
NUM_PHASES = 5
KEY_NBYTES = crypto.KEY_BYTES

_SHARE_HEADER = struct.Struct(">qqHH")


def x25519_public(private_raw: bytes) -> bytes:
    """Return the raw X25519 public key of a raw private key."""
    return X25519PrivateKey.from_private_bytes(private_raw).public_key().public_bytes_raw()


def session_field(session_id: bytes) -> bytes:
    """Return ``len (1 byte) ‖ session_id``: how a session id enters every signed payload."""
    if not isinstance(session_id, bytes) or len(session_id) > MAX_SESSION_ID_BYTES:
        raise ProtocolError(
            f"a session id is at most {MAX_SESSION_ID_BYTES} bytes; got "
            f"{type(session_id).__name__} of length {len(session_id)}."
            if isinstance(session_id, bytes)
            else f"a session id must be bytes; got {type(session_id).__name__}."
        )
    return bytes([len(session_id)]) + session_id


def round_binding(session_id: bytes, round_index: int) -> bytes:
    """Return ``session_field(session_id) ‖ round`` (``>q``): what binds a value to one round."""
    return session_field(session_id) + struct.pack(">q", round_index)


def advertise_payload(
    session_id: bytes, round_index: int, client_id: ClientId, c_pk: bytes, s_pk: bytes
) -> bytes:
    """Return the bytes a client signs when advertising its keys (active-server variant).

    ``ADVERTISE_DOMAIN ‖ len ‖ session_id ‖ round ‖ id`` (``>qq``) ``‖ c_pk ‖ s_pk``: the
    session id stops a server from replaying a signed advertisement from another
    run, the round from another round of this run.
    """
    return (
        ADVERTISE_DOMAIN + session_field(session_id)
        + struct.pack(">qq", round_index, client_id) + c_pk + s_pk
    )


def consistency_payload(
    session_id: bytes, round_index: int, client_id: ClientId, survivors: tuple[ClientId, ...]
) -> bytes:
    """Return the bytes a client signs in the ConsistencyCheck round (Bonawitz et al. 2017, §6).

    ``CONSISTENCY_DOMAIN ‖ len ‖ session_id ‖ round ‖ id ‖ count`` (``>qqQ``) then each
    survivor id (``>q``) in increasing order: the survivor set the server announced.
    """
    ordered = sorted(survivors)
    return (
        CONSISTENCY_DOMAIN + session_field(session_id)
        + struct.pack(">qqQ", round_index, client_id, len(ordered))
        + b"".join(struct.pack(">q", c) for c in ordered)
    )


def self_mask_commitment(round_index: int, client_id: ClientId, seed: bytes) -> bytes:
    """Return ``SHA-256(COMMITMENT_DOMAIN ‖ round ‖ id ‖ b_i)``, checked after reconstruction."""
    payload = COMMITMENT_DOMAIN + struct.pack(">qq", round_index, client_id) + seed
    return hashlib.sha256(payload).digest()


def pack_shares(
    sender: ClientId, receiver: ClientId, mask_key_share: bytes, seed_share: bytes
) -> bytes:
    """Return the plaintext of one encrypted share pair: ``>qqHH`` ids and lengths, then shares."""
    header = _SHARE_HEADER.pack(sender, receiver, len(mask_key_share), len(seed_share))
    return header + mask_key_share + seed_share


def unpack_shares(plaintext: bytes) -> tuple[ClientId, ClientId, bytes, bytes]:
    """Invert :func:`pack_shares`; raise :class:`ProtocolError` on a malformed plaintext."""
    if len(plaintext) < _SHARE_HEADER.size:
        raise ProtocolError("a decrypted share is shorter than its header; it was forged.")
    sender, receiver, key_len, seed_len = _SHARE_HEADER.unpack_from(plaintext)
    if len(plaintext) != _SHARE_HEADER.size + key_len + seed_len:
        raise ProtocolError("a decrypted share has inconsistent lengths; it was forged.")
    body = plaintext[_SHARE_HEADER.size :]
    return sender, receiver, body[:key_len], body[key_len:]


def pairwise_sign(client_id: ClientId, peer: ClientId) -> int:
    """Return +1 if ``client_id < peer`` (it adds ``PRG(s_ij)``), else −1 (it subtracts)."""
    return 1 if client_id < peer else -1


def apply_masks(
    vector: np.ndarray,
    *,
    client_id: ClientId,
    self_mask_seed: bytes,
    pairwise_seeds: Mapping[ClientId, bytes],
    bits: int,
) -> None:
    """Add ``PRG(b_i) + Σ_j sign(i, j)·PRG(s_ij)`` to ``vector`` in place, mod ``2^bits``."""
    masks = [(self_mask_seed, 1)]
    masks += [
        (pairwise_seeds[peer], pairwise_sign(client_id, peer)) for peer in sorted(pairwise_seeds)
    ]
    crypto.add_masks(vector, masks, bits=bits)


def mask_input(
    words: np.ndarray,
    *,
    client_id: ClientId,
    self_mask_seed: bytes,
    pairwise_seeds: Mapping[ClientId, bytes],
    bits: int,
) -> np.ndarray:
    """Return ``words + PRG(b_i) + Σ_j sign(i, j)·PRG(s_ij)`` mod ``2^bits`` (a new array)."""
    masked = np.array(words, dtype=words.dtype, copy=True)
    apply_masks(
        masked, client_id=client_id, self_mask_seed=self_mask_seed,
        pairwise_seeds=pairwise_seeds, bits=bits,
    )
    return masked
