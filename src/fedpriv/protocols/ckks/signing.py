"""Who signed an upload: the signed statement of a ``ckks`` upload and the clients' Ed25519 keys.

Owns what makes a key holder's decryption safe against an active server
(spec: ``protocols/ckks.md``, "Verified sums").  Every client signs, with
Ed25519, the statement :func:`upload_statement` — domain, session id, round, key
id, its own id, the update length and the SHA-256 of its ciphertexts
(:func:`upload_digest`).  A key holder decrypts only a sum that it recomputed
itself from uploads whose signatures verify under the public keys it knows: a
ciphertext the server crafted (e.g. ``(0, K)``, which would return the canonical
embedding of the secret key; Li & Micciancio, EUROCRYPT 2021) carries no
client's signature, and an old round's or another session's upload fails the
statement.

:class:`UploadSigners` holds the keys: each client's private signing key (only
its own, in a deployment) and every client's public verify key.  Built with
:meth:`UploadSigners.simulated`, it generates a key pair per client id on first
use — a stand-in, for the in-process simulation, of the PKI a deployment
provisions out of band.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Mapping, Sequence
from types import MappingProxyType

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from fedpriv.errors import ConfigError, ProtocolError
from fedpriv.protocols import crypto
from fedpriv.protocols.base import ClientId

UPLOAD_DOMAIN = b"fedpriv/ckks/upload/v1"
"""Prefix of every signed upload statement (domain separation from secagg's signatures)."""
SESSION_ID_NBYTES = 16
"""Size of the session id every statement carries."""
_STATEMENT = struct.Struct(f">{SESSION_ID_NBYTES}sq16sqqI32s")
_LENGTH = struct.Struct(">Q")


def check_session_id(session_id: object, what: str) -> bytes:
    """Return ``session_id`` if it is :data:`SESSION_ID_NBYTES` bytes; else raise ConfigError."""
    if not isinstance(session_id, bytes) or len(session_id) != SESSION_ID_NBYTES:
        raise ConfigError(
            f"{what} must be {SESSION_ID_NBYTES} bytes (one value per federation run, known "
            f"to every party, e.g. secrets.token_bytes(16)); got {session_id!r}."
        )
    return session_id


def upload_digest(chunks: Sequence[bytes]) -> bytes:
    """Return SHA-256 over the ciphertexts, each prefixed by its 8-byte length (unambiguous)."""
    digest = hashlib.sha256()
    digest.update(_LENGTH.pack(len(chunks)))
    for chunk in chunks:
        digest.update(_LENGTH.pack(len(chunk)))
        digest.update(chunk)
    return digest.digest()


def upload_statement(
    session_id: bytes, round_index: int, key_id: bytes, client_id: ClientId,
    vector_size: int, num_chunks: int, digest: bytes,
) -> bytes:
    """Return the bytes a client signs for its upload (and a key holder verifies).

    ``UPLOAD_DOMAIN ‖ session id (16) ‖ round (>q) ‖ key id (16) ‖ client id (>q) ‖
    L (>q) ‖ number of ciphertexts (>I) ‖ SHA-256 of the ciphertexts (32)``.
    """
    try:
        body = _STATEMENT.pack(session_id, round_index, key_id, client_id, vector_size,
                               num_chunks, digest)
    except struct.error as err:
        raise ProtocolError(f"an upload statement field is out of range: {err}.") from None
    return UPLOAD_DOMAIN + body


def _public_of(private_raw: bytes, client_id: ClientId) -> bytes:
    try:
        private = Ed25519PrivateKey.from_private_bytes(private_raw)
    except ValueError as err:
        raise ConfigError(
            f"signing_keys[{client_id}] is not a raw 32-byte Ed25519 private key ({err}); use "
            "fedpriv.protocols.crypto.generate_ed25519()."
        ) from None
    return private.public_key().public_bytes_raw()


class UploadSigners:
    """The Ed25519 keys of a ``ckks`` federation: private signing keys and public verify keys.

    ``signing_keys`` maps a client to its raw 32-byte private key (a deployed client
    holds only its own); ``verify_keys`` maps every client to its raw public key
    (a key holder needs all of them; a server may hold them to drop forged uploads
    early).  Nothing here is ever sent: the keys are provisioned out of band.
    """

    def __init__(
        self,
        signing_keys: Mapping[ClientId, bytes] | None = None,
        verify_keys: Mapping[ClientId, bytes] | None = None,
        *,
        generate_missing: bool = False,
    ) -> None:
        self._signing = {int(c): bytes(k) for c, k in (signing_keys or {}).items()}
        self._verify = {int(c): bytes(k) for c, k in (verify_keys or {}).items()}
        for client_id, private in self._signing.items():
            public = _public_of(private, client_id)
            if self._verify.setdefault(client_id, public) != public:
                raise ConfigError(
                    f"verify_keys[{client_id}] is not the public key of signing_keys"
                    f"[{client_id}]; provision each client's key pair consistently."
                )
        self.generate_missing = generate_missing

    @classmethod
    def simulated(cls) -> UploadSigners:
        """Return signers that make a key pair per client id on first use (in-process only)."""
        return cls(generate_missing=True)

    def __repr__(self) -> str:
        return (f"UploadSigners(signing={sorted(self._signing)}, verify={sorted(self._verify)}, "
                f"generate_missing={self.generate_missing})")

    def _generate(self, client_id: ClientId) -> None:
        private, public = crypto.generate_ed25519()
        self._signing[client_id], self._verify[client_id] = private, public

    def sign(self, client_id: ClientId, statement: bytes) -> bytes:
        """Return ``client_id``'s Ed25519 signature of ``statement``.

        Raises:
            ConfigError: If this party holds no signing key for ``client_id``.
        """
        if client_id not in self._signing:
            if not self.generate_missing or client_id in self._verify:
                raise ConfigError(
                    f"ckks client {client_id} holds no Ed25519 signing key; pass "
                    "CKKSProtocol(..., signing_keys={client_id: private_raw}) (keys from "
                    "fedpriv.protocols.crypto.generate_ed25519(), provisioned out of band)."
                )
            self._generate(client_id)
        return crypto.sign(self._signing[client_id], statement)

    def verify(self, client_id: ClientId, statement: bytes, signature: bytes, who: str) -> None:
        """Return ``None`` if ``signature`` is ``client_id``'s on ``statement``; else raise.

        Raises:
            ProtocolError: For an unknown client or a signature that does not verify.
        """
        public = self._verify.get(client_id)
        if public is None:
            raise ProtocolError(
                f"{who}: no verify key is known for client {client_id}, so its upload cannot be "
                "checked and is refused; give every key holder all clients' public keys "
                "(CKKSProtocol(..., verify_keys=...))."
            )
        try:
            crypto.verify(public, statement, signature)
        except ProtocolError:
            raise ProtocolError(
                f"{who}: the signature on client {client_id}'s upload does not verify (forged, "
                "altered, replayed from another round or session, or under another key set); "
                "refused."
            ) from None

    def knows(self, client_id: ClientId) -> bool:
        """Whether a verify key is known for ``client_id``."""
        return client_id in self._verify

    def verify_keys(self) -> Mapping[ClientId, bytes]:
        """Return the public verify keys known here (a read-only copy)."""
        return MappingProxyType(dict(self._verify))


__all__ = [
    "SESSION_ID_NBYTES",
    "UPLOAD_DOMAIN",
    "UploadSigners",
    "check_session_id",
    "upload_digest",
    "upload_statement",
]
