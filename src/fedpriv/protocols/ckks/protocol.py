"""The ``ckks`` protocol class: configuration, key material and session factories.

Owns :class:`CKKSProtocol`.  Constructed from a :class:`CKKSConfig` (as the
registry does), it derives the public parameters and, unless a key set is
passed in, generates a fresh one (keys are per-federation secret state: the
same protocol object serves every round).  Client sessions get the private
context; the server session gets :meth:`CKKSKeys.public` only.
"""

from __future__ import annotations

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
from fedpriv.protocols.ckks.keys import CKKSKeys
from fedpriv.protocols.ckks.params import CKKSParameters, choose_parameters
from fedpriv.protocols.ckks.server import CKKSServer


class CKKSProtocol(AggregationProtocol):
    """CKKS homomorphic aggregation (TenSEAL): the server adds ciphertexts it cannot decrypt."""

    name: ClassVar[str] = "ckks"
    reveals_individual_updates: ClassVar[bool] = False
    dropout_tolerant: ClassVar[bool] = True
    threat_model: ClassVar[str] = (
        "Honest-but-curious server holding only a public CKKS context: it sees ciphertexts and "
        "the noise-flooded, rounded weighted sum and total weight. Every client holds the secret "
        "key, so a client colluding with the server decrypts every individual update."
    )
    dropout_tolerance: ClassVar[str] = (
        "Any number of clients may drop before uploading (the sum covers those whose ciphertexts "
        "arrived, at least min_clients); afterwards up to 2 successive key holders may drop "
        "before releasing the sum (the next contributor is asked)."
    )
    config_type: ClassVar[type[CKKSConfig]] = CKKSConfig
    num_phases: ClassVar[int] = NUM_PHASES

    def __init__(self, config: CKKSConfig | None = None, *, keys: CKKSKeys | None = None) -> None:
        if config is not None and not isinstance(config, CKKSConfig):
            raise ConfigError(
                f"CKKSProtocol takes a CKKSConfig; got {type(config).__name__}. Build it with "
                "fedpriv.protocols.create('ckks', ...)."
            )
        self.config = config if config is not None else CKKSConfig()
        self.params: CKKSParameters = choose_parameters(self.config)
        if keys is None:
            keys = CKKSKeys.generate(self.params)
        elif not isinstance(keys, CKKSKeys) or keys.params != self.params:
            raise ConfigError(
                "CKKSProtocol(keys=...) needs a CKKSKeys made for this config's parameters "
                f"({self.params.describe()})."
            )
        self.keys = keys

    def __repr__(self) -> str:
        return f"CKKSProtocol({self.config!r}, key_id={self.keys.key_id.hex()})"

    def client(self, client_id: ClientId, ctx: RoundContext, data: ClientInput) -> ClientSession:
        """Return a :class:`CKKSClient`, which holds the private context."""
        return CKKSClient(self, client_id, ctx, data)

    def server(self, ctx: RoundContext) -> ServerSession:
        """Return a :class:`CKKSServer` given only the public context."""
        return CKKSServer(self, ctx, self.keys.public())


__all__ = ["CKKSProtocol"]
