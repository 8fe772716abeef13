"""The SecAgg and SecAgg+ protocol classes, and where a round's secrets come from.

Owns :class:`SecAggFamily` (what both share: construction from a config, signing
and verify keys, the round plan, session factories), :class:`SecAggProtocol`
(complete masking graph) and :class:`SecAggPlusProtocol` (random k-regular
graph), and the secret sources: :class:`SystemSecrets` (the OS CSPRNG, the
default) and :class:`DerivedSecrets` (deterministic, for tests and vectors only).
"""

from __future__ import annotations

import abc
import hashlib
import hmac
import secrets
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import ClassVar

import numpy as np

from fedpriv.errors import ConfigError, ProtocolError
from fedpriv.protocols import crypto
from fedpriv.protocols.base import (
    AggregationProtocol,
    ClientId,
    ClientInput,
    RoundContext,
)
from fedpriv.protocols.encoding import EncodeStats
from fedpriv.protocols.secagg.client import SecAggClient
from fedpriv.protocols.secagg.config import (
    RoundPlan,
    SecAggConfig,
    SecAggPlusConfig,
    weight_fraction_bits,
)
from fedpriv.protocols.secagg.server import SecAggServer
from fedpriv.protocols.secagg.stages import NUM_PHASES, x25519_public
from fedpriv.protocols.secagg_graph import (
    complete_graph,
    effective_degree,
    harary_graph,
    reconstruction_threshold,
)

# ================================================================ secrets


class SecretSource(abc.ABC):
    """Where a round's secrets come from: the OS CSPRNG, or (tests, vectors) a fixed master seed."""

    @abc.abstractmethod
    def x25519(self, client_id: ClientId, round_index: int, purpose: str) -> tuple[bytes, bytes]:
        """Return an X25519 pair ``(private raw, public raw)`` for ``purpose`` ("c" or "s")."""

    @abc.abstractmethod
    def self_mask_seed(self, client_id: ClientId, round_index: int) -> bytes:
        """Return the 32-byte self-mask seed ``b_i``."""

    @abc.abstractmethod
    def rounding_rng(self, client_id: ClientId, round_index: int) -> np.random.Generator:
        """Return the generator of the stochastic rounding (not secret, but unpredictable)."""

    @abc.abstractmethod
    def graph_seed(self, round_index: int) -> bytes:
        """Return the server's public 32-byte SecAgg+ graph seed for the round."""


class SystemSecrets(SecretSource):
    """Fresh secrets from the OS CSPRNG (``secrets``): the default, and the only safe choice."""

    def x25519(self, client_id: ClientId, round_index: int, purpose: str) -> tuple[bytes, bytes]:
        """Return a fresh pair from :func:`fedpriv.protocols.crypto.generate_x25519`."""
        return crypto.generate_x25519()

    def self_mask_seed(self, client_id: ClientId, round_index: int) -> bytes:
        """Return :func:`fedpriv.protocols.crypto.random_seed`."""
        return crypto.random_seed()

    def rounding_rng(self, client_id: ClientId, round_index: int) -> np.random.Generator:
        """Return a generator seeded with 128 bits from ``secrets``."""
        return np.random.default_rng(secrets.randbits(128))

    def graph_seed(self, round_index: int) -> bytes:
        """Return 32 bytes from ``secrets``."""
        return secrets.token_bytes(32)


class DerivedSecrets(SecretSource):
    """Deterministic secrets: ``HMAC-SHA256(master, label ‖ round ‖ id)``. Tests and vectors ONLY.

    Anyone who knows ``master`` knows every key and seed of every round, so this
    is for reproducible tests and the JSON test vectors, never for a deployment.
    Shamir coefficients and AES-GCM nonces stay random (they come from
    :mod:`fedpriv.protocols.shamir` and :mod:`fedpriv.protocols.crypto`), so
    ciphertexts and shares differ between runs while keys, masks and masked
    vectors do not.
    """

    def __init__(self, master: bytes) -> None:
        if not isinstance(master, bytes) or len(master) < 16:
            raise ConfigError("DerivedSecrets needs a master seed of at least 16 bytes.")
        self._master = master

    def derive(self, label: str, *numbers_: int) -> bytes:
        """Return the 32 bytes that ``label`` and ``numbers_`` (signed 64-bit) select."""
        data = label.encode() + b"".join(v.to_bytes(8, "big", signed=True) for v in numbers_)
        return hmac.new(self._master, data, hashlib.sha256).digest()

    def x25519(self, client_id: ClientId, round_index: int, purpose: str) -> tuple[bytes, bytes]:
        """Return the pair whose private key is ``derive("x25519-" + purpose, round, id)``."""
        private_raw = self.derive(f"x25519-{purpose}", round_index, client_id)
        return private_raw, x25519_public(private_raw)

    def self_mask_seed(self, client_id: ClientId, round_index: int) -> bytes:
        """Return ``derive("self-mask", round, id)``."""
        return self.derive("self-mask", round_index, client_id)

    def rounding_rng(self, client_id: ClientId, round_index: int) -> np.random.Generator:
        """Return ``default_rng`` seeded with ``derive("rounding", round, id)`` as an integer."""
        return np.random.default_rng(
            int.from_bytes(self.derive("rounding", round_index, client_id), "big")
        )

    def graph_seed(self, round_index: int) -> bytes:
        """Return ``derive("graph", round)``."""
        return self.derive("graph", round_index)


# ================================================================ protocols


EncodeObserver = Callable[[ClientId, int, EncodeStats], None]
"""Called as ``on_encode(client_id, round, stats)`` when a client encodes its update."""


class SecAggFamily(AggregationProtocol):
    """What SecAgg and SecAgg+ share; they differ only in the masking graph.

    ``signing_keys`` (client → Ed25519 private raw) makes clients sign their
    advertised keys; ``verify_keys`` (client → Ed25519 public raw) makes clients
    (and the server) check them — the defence against a server that forges
    clients.  ``secret_source`` replaces the OS CSPRNG (tests and vectors only);
    ``on_encode`` receives each client's clipping statistics.
    """

    reveals_individual_updates: ClassVar[bool] = False
    dropout_tolerant: ClassVar[bool] = True
    num_phases: ClassVar[int] = NUM_PHASES
    config_type: ClassVar[type[SecAggConfig]]

    def __init__(
        self,
        config: SecAggConfig | None = None,
        *,
        signing_keys: Mapping[ClientId, bytes] | None = None,
        verify_keys: Mapping[ClientId, bytes] | None = None,
        secret_source: SecretSource | None = None,
        on_encode: EncodeObserver | None = None,
    ) -> None:
        config_type = type(self).config_type
        if config is None:
            config = config_type()
        if type(config) is not config_type:
            raise ConfigError(
                f"{type(self).__name__} takes a {config_type.__name__}; got "
                f"{type(config).__name__}. Build it with fedpriv.protocols.create({self.name!r})."
            )
        self.config = config
        self.signing_keys = None if signing_keys is None else MappingProxyType(dict(signing_keys))
        self.verify_keys = None if verify_keys is None else MappingProxyType(dict(verify_keys))
        self.secret_source = secret_source if secret_source is not None else SystemSecrets()
        if not isinstance(self.secret_source, SecretSource):
            raise ConfigError("secret_source must be a SecretSource (e.g. SystemSecrets()).")
        self.on_encode = on_encode

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.config!r})"

    @abc.abstractmethod
    def degree(self, num_participants: int) -> int:
        """Return the number of neighbours per client in a round of ``num_participants``."""

    @abc.abstractmethod
    def draw_graph_seed(self, ctx: RoundContext) -> bytes | None:
        """Return the server's public graph seed (``None`` for the complete graph)."""

    @abc.abstractmethod
    def graph(self, ctx: RoundContext, seed: bytes | None) -> dict[ClientId, frozenset[ClientId]]:
        """Return the round's masking graph from its public seed."""

    def neighbourhood(
        self, ctx: RoundContext, client_id: ClientId, seed: bytes | None
    ) -> frozenset[ClientId]:
        """Return ``client_id``'s neighbours (not itself) in the graph of ``seed``."""
        return self.graph(ctx, seed)[client_id]

    def plan(self, ctx: RoundContext) -> RoundPlan:
        """Return the public parameters of the round ``ctx`` (raises if it cannot run)."""
        n = len(ctx.participants)
        spec = self.config.fixed_point(n)
        degree = self.degree(n)
        threshold = reconstruction_threshold(
            degree + 1, self.config.threshold, self.config.min_threshold
        )
        return RoundPlan(
            spec=spec,
            degree=degree,
            threshold=threshold,
            weight_bits=weight_fraction_bits(spec.bits, n),
            max_weight=self.config.max_weight,
        )

    def client(self, client_id: ClientId, ctx: RoundContext, data: ClientInput) -> SecAggClient:
        """Return the session of ``client_id`` (checks its input against ``ctx``)."""
        return SecAggClient(self, client_id, ctx, data)

    def server(self, ctx: RoundContext) -> SecAggServer:
        """Return the server's session for the round."""
        return SecAggServer(self, ctx)


class SecAggProtocol(SecAggFamily):
    """SecAgg (Bonawitz et al. 2017): every pair of clients masks; the server learns the sum."""

    name: ClassVar[str] = "secagg"
    threat_model: ClassVar[str] = (
        "Honest-but-curious server, possibly colluding with up to t-1 clients, learns only the "
        "weighted sum of the survivors' updates and the sum of their weights."
    )
    dropout_tolerance: ClassVar[str] = (
        "Up to n - t clients may drop, at any of the 4 phases; with fewer than t left the round "
        "aborts (ProtocolError)."
    )
    config_type: ClassVar[type[SecAggConfig]] = SecAggConfig

    def degree(self, num_participants: int) -> int:
        """Return ``n − 1``: the complete graph."""
        return num_participants - 1

    def draw_graph_seed(self, ctx: RoundContext) -> bytes | None:
        """Return ``None``: the complete graph needs no seed."""
        return None

    def graph(self, ctx: RoundContext, seed: bytes | None) -> dict[ClientId, frozenset[ClientId]]:
        """Return the complete graph on the participants (``seed`` must be ``None``)."""
        if seed is not None:
            raise ProtocolError("secagg uses the complete graph; a graph seed was sent.")
        return complete_graph(ctx.participants)


class SecAggPlusProtocol(SecAggFamily):
    """SecAgg+ (Bell et al. 2020): masks only along a random k-regular graph, O(k·L) per client."""

    name: ClassVar[str] = "secagg+"
    threat_model: ClassVar[str] = (
        "Honest-but-curious server, possibly colluding with up to t-1 clients (t counted in a "
        "neighbourhood of k+1), learns only the weighted sum and the sum of weights."
    )
    dropout_tolerance: ClassVar[str] = (
        "Up to k+1-t clients of any neighbourhood may drop, at any of the 4 phases; otherwise "
        "the round aborts (ProtocolError)."
    )
    config_type: ClassVar[type[SecAggConfig]] = SecAggPlusConfig

    def degree(self, num_participants: int) -> int:
        """Return the configured degree capped at ``n − 1`` (default ``2·ceil(log2 n)``)."""
        return effective_degree(num_participants, self.config.degree)  # type: ignore[attr-defined]

    def draw_graph_seed(self, ctx: RoundContext) -> bytes | None:
        """Return 32 fresh public bytes (from the secret source: ``secrets`` by default)."""
        return self.secret_source.graph_seed(ctx.round)

    def graph(self, ctx: RoundContext, seed: bytes | None) -> dict[ClientId, frozenset[ClientId]]:
        """Return the Harary graph of the round's degree on the ring order ``seed`` defines."""
        if not isinstance(seed, bytes) or len(seed) != 32:
            raise ProtocolError("secagg+ needs the round's 32-byte graph seed from the server.")
        return harary_graph(ctx.participants, self.degree(len(ctx.participants)), seed)
