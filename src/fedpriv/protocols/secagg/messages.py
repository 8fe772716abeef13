"""The typed messages of a SecAgg / SecAgg+ round, and their sizes on the wire.

Owns one frozen dataclass per message of the five phases (client → server and
the server's reply), the byte counts they are costed with, the checks of the
signed key advertisement and consistency signature that clients and server
apply, and the boundary check of a message received from a client
(:func:`check_client_message`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

import numpy as np

from fedpriv.errors import ProtocolError
from fedpriv.protocols import crypto
from fedpriv.protocols.base import (
    MESSAGE_HEADER_NBYTES,
    ClientId,
    Message,
    readonly_array,
)
from fedpriv.protocols.boundary import Received, check_bytes, check_client_ids
from fedpriv.protocols.secagg.stages import advertise_payload, consistency_payload

ROUND_NBYTES = 8
"""Every message carries its round number (8 bytes on the wire)."""
ID_NBYTES = 8
"""A client id inside a payload (8 bytes on the wire)."""


@dataclass(frozen=True)
class AdvertiseKeys(Message):
    """Phase 0, client → server: the client's two public keys (and their signature)."""

    round: int
    c_pk: bytes
    """X25519 public key of the share-encryption pair."""
    s_pk: bytes
    """X25519 public key of the mask pair."""
    signature: bytes | None = None
    """Ed25519 signature of :func:`advertise_payload` (session id, round, id, keys), when
    signing keys are configured."""

    def nbytes(self) -> int:
        """Header + round + two keys (+ a 64-byte signature)."""
        signature = 0 if self.signature is None else len(self.signature)
        return MESSAGE_HEADER_NBYTES + ROUND_NBYTES + len(self.c_pk) + len(self.s_pk) + signature


@dataclass(frozen=True)
class KeyDirectory(Message):
    """Phase 0 reply, server → client: every advertisement the server accepted (U1).

    All of them, not only the client's neighbours: the SecAgg+ graph seed is the hash
    of all advertised keys, which each client recomputes (so the server cannot grind it).
    """

    round: int
    keys: tuple[AdvertiseKeys, ...]
    """One entry per accepted advertisement, the client's own included."""
    graph_seed: bytes | None = None
    """SecAgg+: the round's graph seed, the hash of ``keys`` (clients recompute and compare);
    ``None`` for SecAgg."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "keys", tuple(self.keys))

    def nbytes(self) -> int:
        """Header + round + seed + (id + entry payload) per entry."""
        seed = 0 if self.graph_seed is None else len(self.graph_seed)
        entries = sum(ID_NBYTES + k.nbytes() - MESSAGE_HEADER_NBYTES for k in self.keys)
        return MESSAGE_HEADER_NBYTES + ROUND_NBYTES + seed + entries


@dataclass(frozen=True, eq=False)
class ShareKeys(Message):
    """Phase 1, client → server: encrypted shares per neighbour, and a commitment to ``b_i``."""

    round: int
    ciphertexts: Mapping[ClientId, bytes] = field(repr=False)
    """Recipient → AES-GCM ciphertext of (sender, recipient, share of s^SK, share of b)."""
    self_mask_commitment: bytes = field(repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "ciphertexts", MappingProxyType(dict(self.ciphertexts)))

    def nbytes(self) -> int:
        """Header + round + commitment + (id + ciphertext) per recipient."""
        payload = sum(ID_NBYTES + len(ct) for ct in self.ciphertexts.values())
        return MESSAGE_HEADER_NBYTES + ROUND_NBYTES + len(self.self_mask_commitment) + payload


@dataclass(frozen=True, eq=False)
class RoutedShares(Message):
    """Phase 1 reply, server → client: the ciphertexts addressed to the client, by sender."""

    round: int
    ciphertexts: tuple[tuple[ClientId, bytes], ...] = field(repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "ciphertexts", tuple(tuple(p) for p in self.ciphertexts))

    def nbytes(self) -> int:
        """Header + round + (id + ciphertext) per sender."""
        payload = sum(ID_NBYTES + len(ct) for _, ct in self.ciphertexts)
        return MESSAGE_HEADER_NBYTES + ROUND_NBYTES + payload


@dataclass(frozen=True, eq=False)
class MaskedInput(Message):
    """Phase 2, client → server: ``y_i`` = encoded ``w_i·Δ_i`` ‖ encoded ``w_i``, masked."""

    round: int
    masked: np.ndarray

    def __post_init__(self) -> None:
        object.__setattr__(self, "masked", readonly_array(self.masked))

    def nbytes(self) -> int:
        """Header + round + the masked words."""
        return MESSAGE_HEADER_NBYTES + ROUND_NBYTES + int(self.masked.nbytes)


@dataclass(frozen=True)
class SurvivorList(Message):
    """Phase 2 reply, server → client: every client whose masked input the server accepted (U3).

    The same list goes to every survivor; each signs it in the ConsistencyCheck round.
    """

    round: int
    survivors: tuple[ClientId, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "survivors", tuple(self.survivors))

    def nbytes(self) -> int:
        """Header + round + one id per survivor."""
        return MESSAGE_HEADER_NBYTES + ROUND_NBYTES + ID_NBYTES * len(self.survivors)


@dataclass(frozen=True)
class ConsistencySignature(Message):
    """Phase 3, client → server: the client's signature over the announced survivor set.

    Ed25519 over :func:`consistency_payload` (session id, round, id, survivors) when
    signing keys are configured (active-server mode); ``None`` otherwise, where the
    message is a bare acknowledgement (honest-but-curious mode, see the spec).
    """

    round: int
    signature: bytes | None = None

    def nbytes(self) -> int:
        """Header + round (+ a 64-byte signature)."""
        signature = 0 if self.signature is None else len(self.signature)
        return MESSAGE_HEADER_NBYTES + ROUND_NBYTES + signature


@dataclass(frozen=True)
class ConsistencyProof(Message):
    """Phase 3 reply, server → client: the consistency signatures of the client's neighbourhood.

    One ``(signer, signature)`` pair per survivor of the client's neighbourhood (itself
    included) that signed; the client unmasks only with at least ``t`` valid ones over
    the survivor set it signed itself (Bonawitz et al. 2017, round 3 → 4).
    """

    round: int
    signatures: tuple[tuple[ClientId, bytes | None], ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "signatures", tuple(tuple(p) for p in self.signatures))

    def nbytes(self) -> int:
        """Header + round + (id + signature) per signer."""
        payload = sum(ID_NBYTES + (0 if sig is None else len(sig)) for _, sig in self.signatures)
        return MESSAGE_HEADER_NBYTES + ROUND_NBYTES + payload


@dataclass(frozen=True, eq=False)
class UnmaskShares(Message):
    """Phase 4, client → server: per neighbour, a share of ``b_j`` or of ``s_j^SK``, never both."""

    round: int
    self_mask_shares: Mapping[ClientId, bytes] = field(repr=False)
    """Survivor j → this client's share of ``b_j``."""
    mask_key_shares: Mapping[ClientId, bytes] = field(repr=False)
    """Dropped j → this client's share of ``s_j^SK``."""

    def __post_init__(self) -> None:
        for name in ("self_mask_shares", "mask_key_shares"):
            object.__setattr__(self, name, MappingProxyType(dict(getattr(self, name))))

    def nbytes(self) -> int:
        """Header + round + (id + share) per share."""
        shares = [*self.self_mask_shares.values(), *self.mask_key_shares.values()]
        return MESSAGE_HEADER_NBYTES + ROUND_NBYTES + sum(ID_NBYTES + len(s) for s in shares)


def _verify_key(verify_keys: Mapping[ClientId, bytes], client_id: ClientId, who: str) -> bytes:
    if client_id not in verify_keys:
        raise ProtocolError(
            f"{who}: no verify key is configured for client {client_id}; pass one Ed25519 "
            "public key per participant in verify_keys."
        )
    return verify_keys[client_id]


def _verify_advertisement(
    entry: AdvertiseKeys, verify_keys: Mapping[ClientId, bytes], session_id: bytes, who: str
) -> None:
    verify_key = _verify_key(verify_keys, entry.sender, who)
    if not isinstance(entry.signature, bytes):
        raise ProtocolError(f"{who}: client {entry.sender}'s advertised keys are not signed.")
    payload = advertise_payload(session_id, entry.round, entry.sender, entry.c_pk, entry.s_pk)
    try:
        crypto.verify(verify_key, payload, entry.signature)
    except ProtocolError:
        raise ProtocolError(
            f"{who}: the signature on client {entry.sender}'s advertised keys does not verify "
            "(forged or altered keys, or signed for another session or round)."
        ) from None


def _verify_consistency(
    signer: ClientId,
    signature: bytes | None,
    survivors: tuple[ClientId, ...],
    round_index: int,
    verify_keys: Mapping[ClientId, bytes],
    session_id: bytes,
    who: str,
) -> None:
    verify_key = _verify_key(verify_keys, signer, who)
    if not isinstance(signature, bytes):
        raise ProtocolError(f"{who}: client {signer}'s consistency check is not signed.")
    payload = consistency_payload(session_id, round_index, signer, survivors)
    try:
        crypto.verify(verify_key, payload, signature)
    except ProtocolError:
        raise ProtocolError(
            f"{who}: client {signer}'s consistency signature does not verify over the announced "
            "survivor set (the server showed it another set, or forged it)."
        ) from None


# --------------------------------------------------------------------------- boundary checks
# What the server checks of a client's message before its session sees it
# (fedpriv.protocols.boundary.admit calls check_client_message).

SIGNATURE_NBYTES = 64
"""An Ed25519 signature."""
PUBLIC_KEY_NBYTES = 32
"""An X25519 public key; also the size of a self-mask commitment (SHA-256)."""
SHARE_CIPHERTEXT_MAX_NBYTES = 4096
"""Longest accepted encrypted share pair (a real one is about 150 bytes)."""
UNMASK_SHARE_MAX_NBYTES = 1024
"""Longest accepted unmasking share (a real one is about 40 bytes)."""


def check_client_message(message: Message, received: Received) -> None:
    """Raise :class:`ProtocolError` unless ``message`` is a well-formed SecAgg client message.

    Checks that every key, signature, ciphertext and share is bytes of a plausible
    length, that every client id is a participant (a share never addressed to its
    sender) and that a masked input is a 1-D array of unsigned words.  Which message
    a phase expects, the masked input's length and what needs the session's state
    (neighbourhoods, survivors) are the server session's checks: it discards a
    client that fails them (``SecAggServerView.rejected``) rather than failing.
    """
    if isinstance(message, AdvertiseKeys):
        check_bytes(message.c_pk, "c_pk", exact=PUBLIC_KEY_NBYTES)
        check_bytes(message.s_pk, "s_pk", exact=PUBLIC_KEY_NBYTES)
        if message.signature is not None:
            check_bytes(message.signature, "the signature", exact=SIGNATURE_NBYTES)
    elif isinstance(message, ShareKeys):
        check_client_ids(message.ciphertexts, received, "the share map", allow_self=False)
        for recipient, ciphertext in message.ciphertexts.items():
            check_bytes(ciphertext, f"the shares for client {recipient}",
                        maximum=SHARE_CIPHERTEXT_MAX_NBYTES)
        check_bytes(message.self_mask_commitment, "the self-mask commitment",
                    exact=PUBLIC_KEY_NBYTES)
    elif isinstance(message, MaskedInput):
        if message.masked.dtype.kind != "u" or message.masked.ndim != 1:
            raise ProtocolError(
                "the masked input must be a 1-D array of unsigned words; got "
                f"{message.masked.dtype} of shape {message.masked.shape}."
            )
    elif isinstance(message, ConsistencySignature):
        if message.signature is not None:
            check_bytes(message.signature, "the consistency signature", exact=SIGNATURE_NBYTES)
    elif isinstance(message, UnmaskShares):
        for name in ("self_mask_shares", "mask_key_shares"):
            shares = getattr(message, name)
            check_client_ids(shares, received, name)
            for owner, share in shares.items():
                check_bytes(share, f"{name}[{owner}]", maximum=UNMASK_SHARE_MAX_NBYTES)
