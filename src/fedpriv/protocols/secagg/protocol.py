"""The SecAgg and SecAgg+ protocol classes, and where a round's secrets come from.

Owns :class:`SecAggFamily` (what both share: construction from a config, signing
and verify keys, the session id, the round plan, the record of rounds each
client has started, session factories), :class:`SecAggProtocol`
(complete masking graph) and :class:`SecAggPlusProtocol` (random k-regular
graph), and the secret sources: :class:`SystemSecrets` (the OS CSPRNG, the
default) and :class:`DerivedSecrets` (deterministic, for tests and vectors only).
"""

from __future__ import annotations

import abc
import hashlib
import hmac
import secrets
from collections.abc import Callable, Iterable, Mapping
from fractions import Fraction
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
    advance_round,
)
from fedpriv.protocols.encoding import EncodeStats
from fedpriv.protocols.secagg.client import SecAggClient
from fedpriv.protocols.secagg.config import (
    RoundPlan,
    SecAggConfig,
    SecAggPlusConfig,
    weight_fraction_bits,
)
from fedpriv.protocols.secagg.messages import AdvertiseKeys
from fedpriv.protocols.secagg.server import SecAggServer
from fedpriv.protocols.secagg.stages import (
    MAX_SESSION_ID_BYTES,
    NUM_PHASES,
    round_binding,
    x25519_public,
)
from fedpriv.protocols.secagg_graph import (
    complete_graph,
    default_threshold,
    derive_graph_seed,
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


# ================================================================ protocols


EncodeObserver = Callable[[ClientId, int, EncodeStats], None]
"""Called as ``on_encode(client_id, round, stats)`` when a client encodes its update."""


class SecAggFamily(AggregationProtocol):
    """What SecAgg and SecAgg+ share; they differ only in the masking graph.

    ``signing_keys`` (client → Ed25519 private raw) makes clients sign their
    advertised keys and the announced survivor set; ``verify_keys`` (client →
    Ed25519 public raw) makes clients (and the server) check them — the defence
    against a server that forges clients or shows clients different survivor sets
    (active-server mode: Bonawitz et al. 2017, §6).  With either, ``session_id``
    (1 to 255 bytes, unique per run: e.g. Flower's run id) is required: it is in every
    signed message, so nothing signed in another run can be replayed.  In
    active-server mode the default threshold is above ⅔ of a neighbourhood and a
    configured one must be too; a client runs phase 0 (signs fresh keys) at most once
    per round, and only for a round above every round it started before.
    ``secret_source`` replaces the OS CSPRNG (tests and vectors only); ``on_encode``
    receives each client's clipping statistics.
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
        session_id: bytes | None = None,
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
        if session_id is None and (signing_keys is not None or verify_keys is not None):
            raise ConfigError(
                f"{type(self).__name__} with signing or verify keys needs a session_id: 1 to "
                f"{MAX_SESSION_ID_BYTES} bytes naming this run (e.g. Flower's run id), signed "
                "into every advertisement and consistency check so that a server cannot "
                "replay signed messages from another run."
            )
        if session_id is not None and (
            not isinstance(session_id, bytes) or not 1 <= len(session_id) <= MAX_SESSION_ID_BYTES
        ):
            raise ConfigError(
                f"session_id must be 1 to {MAX_SESSION_ID_BYTES} bytes naming this run (e.g. "
                f"str(run_id).encode()); got {session_id!r}."
            )
        self.session_id: bytes = b"" if session_id is None else session_id
        if self.active and config.threshold is not None and (
            Fraction(str(config.threshold)) <= Fraction(2, 3)
        ):
            raise ConfigError(
                f"with verify_keys (active-server mode) the threshold must be above 2/3 of a "
                f"neighbourhood; got threshold={config.threshold}. A server may show different "
                "survivor sets to parts of a neighbourhood, and with colluders among them only "
                "t > 2/3 keeps it from unmasking one client (Bonawitz et al. 2017, §6.3). Leave "
                "threshold unset for the default."
            )
        # Client → highest round it started (ran phase 0 for); see start_round().
        self._started: dict[ClientId, int] = {}
        self.secret_source = secret_source if secret_source is not None else SystemSecrets()
        if not isinstance(self.secret_source, SecretSource):
            raise ConfigError("secret_source must be a SecretSource (e.g. SystemSecrets()).")
        self.on_encode = on_encode

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.config!r})"

    @abc.abstractmethod
    def degree(self, num_participants: int) -> int:
        """Return the number of neighbours per client in a round of ``num_participants``."""

    @property
    def active(self) -> bool:
        """Whether clients verify signatures: the active-server mode (``verify_keys`` given)."""
        return self.verify_keys is not None

    def start_round(self, client_id: ClientId, round_index: int) -> None:
        """Record that ``client_id`` runs phase 0 of ``round_index``; refuse one not above its last.

        Called by a client session with a signing key before it signs fresh keys. A
        server that replays phase 0 of a round a client already started would get a
        second sum over another survivor set from the same inputs (their difference is
        one client's update), so the client refuses: :class:`ProtocolError`.
        """
        advance_round(self._started, client_id, round_index, lambda last: (
            f"{self.name} client {client_id} already started round {last}; phase 0 of round "
            f"{round_index} is refused (a server replaying a round could learn the "
            "difference of two sums of the same inputs). Number rounds increasingly."))

    @abc.abstractmethod
    def graph_seed(self, ctx: RoundContext, advertised: Iterable[AdvertiseKeys]) -> bytes | None:
        """Return the round's graph seed from the advertised keys (``None``: complete graph)."""

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
        if self.config.threshold is None:
            threshold = default_threshold(
                degree + 1, active=self.active, minimum=self.config.min_threshold
            )
        else:
            threshold = reconstruction_threshold(
                degree + 1, self.config.threshold, self.config.min_threshold
            )
        minimum = max(self.config.min_participants, threshold)
        if n < minimum:
            raise ProtocolError(
                f"round {ctx.round} has {n} participant(s), fewer than the {minimum} a client "
                f"accepts (max(min_participants={self.config.min_participants}, t={threshold})); "
                "select more clients per round."
            )
        return RoundPlan(
            spec=spec,
            degree=degree,
            threshold=threshold,
            min_participants=minimum,
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
        "weighted sum of the survivors' updates and the sum of their weights; with signing "
        "and verify keys (t > 2/3 of n, ConsistencyCheck round) also an active server."
    )
    dropout_tolerance: ClassVar[str] = (
        "Up to n - t clients may drop, at any of the 5 phases; with fewer than t left the round "
        "aborts (ProtocolError)."
    )
    config_type: ClassVar[type[SecAggConfig]] = SecAggConfig

    def degree(self, num_participants: int) -> int:
        """Return ``n − 1``: the complete graph."""
        return num_participants - 1

    def graph_seed(self, ctx: RoundContext, advertised: Iterable[AdvertiseKeys]) -> bytes | None:
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
        "neighbourhood of k+1), learns only the weighted sum and the sum of weights; with "
        "signing and verify keys (t > 2/3 of k+1, ConsistencyCheck round) also an active server."
    )
    dropout_tolerance: ClassVar[str] = (
        "Up to k+1-t clients of any neighbourhood may drop, at any of the 5 phases, as long as "
        "the survivors stay connected in the masking graph; otherwise the round aborts "
        "(ProtocolError)."
    )
    config_type: ClassVar[type[SecAggConfig]] = SecAggPlusConfig

    def degree(self, num_participants: int) -> int:
        """Return the configured degree capped at ``n − 1`` (default ``2·ceil(log2 n)``)."""
        return effective_degree(num_participants, self.config.degree)  # type: ignore[attr-defined]

    def graph_seed(self, ctx: RoundContext, advertised: Iterable[AdvertiseKeys]) -> bytes | None:
        """Return the hash of every advertised key pair (:func:`derive_graph_seed`).

        Not drawn by the server, so it cannot retry seeds until a target's neighbours
        are its colluders (Bell et al. 2020 assume a random graph).
        """
        return derive_graph_seed(
            round_binding(self.session_id, ctx.round),
            ((e.sender, e.c_pk, e.s_pk) for e in advertised),
        )

    def graph(self, ctx: RoundContext, seed: bytes | None) -> dict[ClientId, frozenset[ClientId]]:
        """Return the Harary graph of the round's degree on the ring order ``seed`` defines."""
        if not isinstance(seed, bytes) or len(seed) != 32:
            raise ProtocolError("secagg+ needs the round's 32-byte graph seed.")
        return harary_graph(ctx.participants, self.degree(len(ctx.participants)), seed)
