"""The typed messages of a SecAgg / SecAgg+ round, and their sizes on the wire.

Owns one frozen dataclass per message of the four phases (client → server and
the server's reply), the byte counts they are costed with, the check of a
signed key advertisement that client and server both apply, and the boundary
check of a message received from a client (:func:`check_client_message`).
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
from fedpriv.protocols.secagg.stages import advertise_payload

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
    """Ed25519 signature of :func:`advertise_payload`, when signing keys are configured."""

    def nbytes(self) -> int:
        """Header + round + two keys (+ a 64-byte signature)."""
        signature = 0 if self.signature is None else len(self.signature)
        return MESSAGE_HEADER_NBYTES + ROUND_NBYTES + len(self.c_pk) + len(self.s_pk) + signature


@dataclass(frozen=True)
class KeyDirectory(Message):
    """Phase 0 reply, server → client: the advertised keys of the client's neighbourhood."""

    round: int
    keys: tuple[AdvertiseKeys, ...]
    """One entry per advertised neighbour, the client itself included."""
    graph_seed: bytes | None = None
    """SecAgg+: the public seed of the round's masking graph; ``None`` for SecAgg."""

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
    """Phase 2 reply, server → client: the client's neighbours (and itself) whose input arrived."""

    round: int
    survivors: tuple[ClientId, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "survivors", tuple(self.survivors))

    def nbytes(self) -> int:
        """Header + round + one id per survivor."""
        return MESSAGE_HEADER_NBYTES + ROUND_NBYTES + ID_NBYTES * len(self.survivors)


@dataclass(frozen=True, eq=False)
class UnmaskShares(Message):
    """Phase 3, client → server: per neighbour, a share of ``b_j`` or of ``s_j^SK``, never both."""

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


def _verify_advertisement(
    entry: AdvertiseKeys, verify_keys: Mapping[ClientId, bytes], who: str
) -> None:
    if entry.sender not in verify_keys:
        raise ProtocolError(
            f"{who}: no verify key is configured for client {entry.sender}; pass one Ed25519 "
            "public key per participant in verify_keys."
        )
    if entry.signature is None:
        raise ProtocolError(f"{who}: client {entry.sender}'s advertised keys are not signed.")
    payload = advertise_payload(entry.round, entry.sender, entry.c_pk, entry.s_pk)
    try:
        crypto.verify(verify_keys[entry.sender], payload, entry.signature)
    except ProtocolError:
        raise ProtocolError(
            f"{who}: the signature on client {entry.sender}'s advertised keys does not verify "
            "(forged or altered keys)."
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
    elif isinstance(message, UnmaskShares):
        for name in ("self_mask_shares", "mask_key_shares"):
            shares = getattr(message, name)
            check_client_ids(shares, received, name)
            for owner, share in shares.items():
                check_bytes(share, f"{name}[{owner}]", maximum=UNMASK_SHARE_MAX_NBYTES)
