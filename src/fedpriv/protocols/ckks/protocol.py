"""The ``ckks`` protocol class: configuration, key material and session factories.

Owns :class:`CKKSProtocol`.  Constructed from a :class:`CKKSConfig` (as the
registry does), it derives the public parameters and, unless a key set is
passed in, generates a fresh one (keys are per-federation secret state: the
same protocol object serves every round).  Client sessions get the private
context; the server session gets :meth:`CKKSKeys.public` only.

A server that must never load the secret key (a Flower ServerApp on another
machine than the key holders) builds its protocol object from the public part
alone: ``CKKSProtocol(config, public=keys.public())``.  That object serves
server sessions and refuses to make client sessions.

Clients sign their uploads with Ed25519 (``signing_keys``: each client's private
key, only its own in a deployment) and key holders verify them (``verify_keys``:
every client's public key; a server given them drops badly signed uploads early).
Without either, the object is every party of an in-process simulation and plays
the PKI itself (:meth:`UploadSigners.simulated`).  ``session_id`` (16 bytes,
default: the key id) goes into every signature, so uploads of another run under
the same key set are refused.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar

from fedpriv.errors import ConfigError
from fedpriv.protocols.base import (
    AggregationProtocol,
    ClientId,
    ClientInput,
    ClientSession,
    RoundContext,
    ServerSession,
)
from fedpriv.protocols.ckks.client import NUM_PHASES, CKKSClient
from fedpriv.protocols.ckks.config import CKKSConfig
from fedpriv.protocols.ckks.keys import CKKSKeys, CKKSPublicContext, load_public_context
from fedpriv.protocols.ckks.params import CKKSParameters, choose_parameters
from fedpriv.protocols.ckks.server import CKKSServer
from fedpriv.protocols.ckks.signing import UploadSigners, check_session_id


def _public_only_error() -> ConfigError:
    return ConfigError(
        "this CKKSProtocol holds only the public context (server side) and cannot make "
        "client sessions; a client needs the federation's private key set: "
        "CKKSProtocol(config, keys=CKKSKeys.from_private_bytes(params, data, key_id))."
    )


class CKKSProtocol(AggregationProtocol):
    """CKKS homomorphic aggregation (TenSEAL): the server adds ciphertexts it cannot decrypt."""

    name: ClassVar[str] = "ckks"
    reveals_individual_updates: ClassVar[bool] = False
    dropout_tolerant: ClassVar[bool] = True
    threat_model: ClassVar[str] = (
        "Server holding only a public CKKS context: honest-but-curious, it sees ciphertexts and "
        "the noise-flooded, rounded weighted sum and total weight; active, it still gets no "
        "server-chosen ciphertext decrypted (a key holder decrypts only its own sum of uploads "
        "their senders signed for this round, session and key, at least min_clients of them, "
        "once per round, max_releases per key), but it can drop clients down to min_clients. "
        "Every client holds the secret key and the key holder sees every upload: ONE CLIENT "
        "COLLUDING WITH THE SERVER (or a curious key holder) DECRYPTS EVERY INDIVIDUAL UPDATE. "
        "Threshold CKKS would remove this single point of trust; not available here."
    )
    dropout_tolerance: ClassVar[str] = (
        "Any number of clients may drop (or send a malformed or badly signed upload, which drops "
        "them) before the sum, if at least min_clients valid uploads remain; afterwards up to 2 "
        "successive key holders may drop before releasing (the next contributor is asked), none "
        "if key_holder is fixed."
    )
    config_type: ClassVar[type[CKKSConfig]] = CKKSConfig
    num_phases: ClassVar[int] = NUM_PHASES

    def __init__(
        self,
        config: CKKSConfig | None = None,
        *,
        keys: CKKSKeys | None = None,
        public: CKKSPublicContext | None = None,
        signing_keys: Mapping[ClientId, bytes] | None = None,
        verify_keys: Mapping[ClientId, bytes] | None = None,
        session_id: bytes | None = None,
    ) -> None:
        if config is not None and not isinstance(config, CKKSConfig):
            raise ConfigError(
                f"CKKSProtocol takes a CKKSConfig; got {type(config).__name__}. Build it with "
                "fedpriv.protocols.create('ckks', ...)."
            )
        self.config = config if config is not None else CKKSConfig()
        self.params: CKKSParameters = choose_parameters(self.config)
        if keys is not None and public is not None:
            raise ConfigError(
                "CKKSProtocol takes keys= (clients, or a server in the same process) or "
                "public= (a server that must not hold the secret key), not both."
            )
        self._keys: CKKSKeys | None
        if public is not None:
            if not isinstance(public, CKKSPublicContext):
                raise ConfigError(
                    f"CKKSProtocol(public=...) needs a CKKSPublicContext (CKKSKeys.public()); "
                    f"got {type(public).__name__}."
                )
            load_public_context(public.context_bytes)  # refuses a context with a secret key
            if signing_keys is not None:
                raise ConfigError(
                    "a server-only CKKSProtocol(public=...) signs nothing; pass signing_keys "
                    "to the clients' protocol objects only."
                )
            self._keys, self.public_context = None, public
        else:
            if keys is None:
                keys = CKKSKeys.generate(self.params)
            elif not isinstance(keys, CKKSKeys) or keys.params != self.params:
                raise ConfigError(
                    "CKKSProtocol(keys=...) needs a CKKSKeys made for this config's parameters "
                    f"({self.params.describe()})."
                )
            self._keys, self.public_context = keys, keys.public()
        self.session_id = check_session_id(
            self.public_context.key_id if session_id is None else session_id,
            "CKKSProtocol session_id")
        """Bound into every signed upload: the key id unless a run passes its own."""
        if signing_keys is None and verify_keys is None:
            # In-process simulation: this object is every party, and plays the PKI that a
            # deployment provisions out of band.  A server-only object gets no keys.
            self.signers = UploadSigners.simulated() if public is None else UploadSigners()
        else:
            self.signers = UploadSigners(signing_keys, verify_keys)

    @property
    def keys(self) -> CKKSKeys:
        """The federation's private key set (client side).

        Raises:
            ConfigError: If this object was built from the public context only.
        """
        if self._keys is None:
            raise _public_only_error()
        return self._keys

    @property
    def has_secret_key(self) -> bool:
        """Whether this object holds the private key set (``False``: server-only)."""
        return self._keys is not None

    @property
    def key_id(self) -> bytes:
        """The key set's public id (every message carries it)."""
        return self.public_context.key_id

    def __repr__(self) -> str:
        side = "" if self.has_secret_key else ", public only"
        return f"CKKSProtocol({self.config!r}, key_id={self.key_id.hex()}{side})"

    def client(self, client_id: ClientId, ctx: RoundContext, data: ClientInput) -> ClientSession:
        """Return a :class:`CKKSClient`, which holds the private context.

        Raises:
            ConfigError: If this object holds only the public context.
        """
        if self._keys is None:
            raise _public_only_error()
        return CKKSClient(self, client_id, ctx, data)

    def server(self, ctx: RoundContext) -> ServerSession:
        """Return a :class:`CKKSServer` given only the public context."""
        return CKKSServer(self, ctx, self.public_context)


__all__ = ["CKKSProtocol"]
