"""The contract every aggregation protocol implements, and what a round produces.

A protocol here is a pair of transport-free state machines: one
:class:`ClientSession` per participant and one :class:`ServerSession`, exchanging
typed, frozen :class:`Message` objects over ``num_phases`` phases.  Nothing in this
module sends bytes anywhere; :func:`fedpriv.protocols.driver.run_round` moves the
messages in-process, and other drivers (Flower) can move them over a network.

A round yields an :class:`AggregationResult`: the aggregate, the
:class:`ServerView` (exactly what an honest-but-curious server observed, which is
what the attacks get) and a :class:`CostRecord` (bytes and seconds per role).
"""

from __future__ import annotations

import abc
import math
import numbers
import operator
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, ClassVar

import numpy as np

from fedpriv.errors import ProtocolError

ClientId = int
"""A client's identifier within a round: a non-negative integer."""

SERVER_ID: ClientId = -1
"""The ``sender`` of every message the server sends."""

MESSAGE_HEADER_NBYTES = 16
"""Bytes every message costs on the wire besides its payload, for cost accounting.

A notional header: sender id (4 bytes), message type tag (4 bytes) and payload
length (8 bytes).
"""


def readonly_array(values: Any, *, dtype: Any = None) -> np.ndarray:
    """Return a read-only copy of ``values`` as an array (optionally of ``dtype``).

    Messages and views hold arrays; copying and freezing them means a caller that
    later reuses its buffer cannot change what was "sent" or "observed".  An array
    that is already a read-only owner of its data (e.g. this function's output)
    is returned as is.
    """
    if (
        isinstance(values, np.ndarray)
        and values.flags.owndata
        and not values.flags.writeable
        and (dtype is None or values.dtype == np.dtype(dtype))
    ):
        return values
    array = np.array(values, dtype=dtype, copy=True)
    array.setflags(write=False)
    return array


def advance_round(
    latest: dict[Any, int], key: Any, round_index: int, refusal: Callable[[int], str],
) -> None:
    """Record ``round_index`` as ``key``'s latest round; refuse one not above the last.

    The guard against a server re-running a round a party already took part in
    (two sums of the same inputs over different sets reveal their difference):
    raises :class:`ProtocolError` with ``refusal(last)`` when ``round_index`` is
    not greater than the round recorded for ``key``.
    """
    last = latest.get(key)
    if last is not None and round_index <= last:
        raise ProtocolError(refusal(last))
    latest[key] = round_index


def check_weight(weight: Any, what: str) -> float:
    """Return ``weight`` as a float, or raise :class:`ProtocolError` unless finite and > 0.

    ``what`` names the value in the error message.
    """
    if isinstance(weight, bool) or not isinstance(weight, numbers.Real):
        raise ProtocolError(
            f"{what} must be a positive real number (e.g. the client's number of training "
            f"examples); got {weight!r} of type {type(weight).__name__}."
        )
    value = float(weight)
    if not math.isfinite(value) or value <= 0.0:
        raise ProtocolError(
            f"{what} must be finite and > 0; got {value!r}. Give every client a positive "
            "FedAvg weight (e.g. its number of training examples), or leave it out of the round."
        )
    return value


def check_update(update: Any, what: str) -> np.ndarray:
    """Return ``update`` as a read-only 1-D float array, or raise :class:`ProtocolError`.

    Rejects non-numeric or boolean dtypes, other shapes, empty and non-finite
    arrays; integer arrays become float64.  ``what`` names the value in errors.
    """
    array = np.asarray(update)
    if array.dtype == np.bool_ or not (
        np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer)
    ):
        raise ProtocolError(
            f"{what} must be a real-valued numeric array; got dtype {array.dtype}. "
            "Pass the flat adapter update as a float array."
        )
    if array.ndim != 1:
        raise ProtocolError(
            f"{what} must be 1-D (the flat adapter update); got shape {array.shape}. "
            "Flatten it first, e.g. with `update.ravel()`."
        )
    if array.size == 0:
        raise ProtocolError(f"{what} is empty; pass the client's flat adapter update.")
    finite = np.isfinite(array)
    if not finite.all():
        bad = np.flatnonzero(~finite)
        raise ProtocolError(
            f"{what} contains {bad.size} non-finite value(s) (NaN or ±inf), the first at "
            f"index {int(bad[0])}; fix or clip the local training step, or leave the client "
            "out of the round."
        )
    dtype = array.dtype if np.issubdtype(array.dtype, np.floating) else np.float64
    return readonly_array(array, dtype=dtype)


@dataclass(frozen=True, eq=False)
class ClientInput:
    """What one client contributes to a round.

    ``update`` is stored as a read-only 1-D float copy (integer arrays become
    float64); ``weight`` as a float.
    """

    update: np.ndarray
    """The client's flat adapter update Δ_i: 1-D, finite, real."""
    weight: float
    """The client's FedAvg weight (e.g. its number of training examples): finite, > 0."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "update", check_update(self.update, "ClientInput.update"))
        object.__setattr__(self, "weight", check_weight(self.weight, "ClientInput.weight"))


@dataclass(frozen=True)
class Message(abc.ABC):
    """Base of every protocol message: a typed, frozen dataclass with a wire size.

    Subclasses are frozen dataclasses too (use ``eq=False`` when they hold arrays).
    """

    sender: ClientId
    """The sending client, or :data:`SERVER_ID` for the server."""

    @abc.abstractmethod
    def nbytes(self) -> int:
        """Return the size on the wire of a reasonable serialisation of this message.

        Used for cost accounting only: payload bytes (e.g. ``array.nbytes``) plus
        :data:`MESSAGE_HEADER_NBYTES`.
        """


def _as_int(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ProtocolError(f"{what} must be an integer; got {value!r}.")
    return operator.index(value)


@dataclass(frozen=True)
class RoundContext:
    """The public facts of one round that every party knows before it starts.

    ``participants`` may be given as any iterable of client ids; it is stored
    sorted as a tuple.
    """

    round: int
    """Round number, ≥ 0."""
    participants: tuple[ClientId, ...]
    """Clients selected for this round: sorted, unique, non-negative, non-empty."""
    vector_size: int
    """Length of every client's update, ≥ 1."""

    def __post_init__(self) -> None:
        round_ = _as_int(self.round, "RoundContext.round")
        if round_ < 0:
            raise ProtocolError(f"RoundContext.round must be >= 0; got {round_}.")
        if isinstance(self.participants, (str, bytes)) or not isinstance(
            self.participants, Iterable
        ):
            raise ProtocolError(
                "RoundContext.participants must be a collection of client ids; "
                f"got {self.participants!r}."
            )
        ids = [_as_int(c, "every RoundContext participant") for c in self.participants]
        if not ids:
            raise ProtocolError(
                "RoundContext.participants is empty; select at least one client for the round."
            )
        if min(ids) < 0:
            raise ProtocolError(
                f"client ids must be >= 0 ({SERVER_ID} denotes the server); "
                f"got participants {sorted(ids)}."
            )
        duplicates = sorted({c for c in ids if ids.count(c) > 1})
        if duplicates:
            raise ProtocolError(
                f"RoundContext.participants lists client(s) {duplicates} more than once; "
                "list every participant exactly once."
            )
        vector_size = _as_int(self.vector_size, "RoundContext.vector_size")
        if vector_size < 1:
            raise ProtocolError(
                f"RoundContext.vector_size must be >= 1 (the length of the flat adapter "
                f"update); got {vector_size}."
            )
        object.__setattr__(self, "round", round_)
        object.__setattr__(self, "participants", tuple(sorted(ids)))
        object.__setattr__(self, "vector_size", vector_size)


def check_phase(who: str, phase: int, expected: int, num_phases: int) -> None:
    """Raise :class:`ProtocolError` unless a session driven with ``phase`` expects it.

    ``who`` names the session in the message ("secagg client 3 (round 0)").
    """
    if phase != expected:
        raise ProtocolError(
            f"{who} was driven with phase {phase} but expects phase {expected}; "
            f"phases run once each, in order 0..{num_phases - 1}."
        )


def check_all_phases_run(who: str, phases_run: int, num_phases: int) -> None:
    """Raise :class:`ProtocolError` when a server's ``finish()`` comes before its last phase."""
    if phases_run != num_phases:
        raise ProtocolError(
            f"{who}: finish() after {phases_run} of {num_phases} phases; drive every "
            "phase first (run_round does)."
        )


def check_client_input(client_id: ClientId, ctx: RoundContext, data: ClientInput) -> None:
    """Raise :class:`ProtocolError` unless ``data`` is a valid input of ``client_id`` in ``ctx``."""
    if client_id not in ctx.participants:
        raise ProtocolError(
            f"client {client_id} is not a participant of round {ctx.round} "
            f"(participants: {list(ctx.participants)}); add it to RoundContext.participants."
        )
    if not isinstance(data, ClientInput):
        raise ProtocolError(
            f"the input of client {client_id} must be a ClientInput; "
            f"got {type(data).__name__}. Wrap it as ClientInput(update, weight)."
        )
    size = data.update.shape[0]
    if size != ctx.vector_size:
        raise ProtocolError(
            f"client {client_id}'s update has {size} entries but round {ctx.round} expects "
            f"vector_size={ctx.vector_size}; every update must have the same length "
            "(build the RoundContext with the adapter's flat size)."
        )


class ClientSession(abc.ABC):
    """One client's side of one round: a state machine driven phase by phase."""

    @abc.abstractmethod
    def handle(self, phase: int, inbox: Message | None) -> Message | None:
        """Advance to ``phase`` and return the message to send to the server, if any.

        Called once per phase while the client is alive, in increasing phase
        order.  ``inbox`` is the server's reply addressed to this client after the
        previous phase (always ``None`` in phase 0, and ``None`` when the server
        sent this client nothing).
        """

    def stats(self) -> Mapping[str, float]:
        """Client-side counters the caller may report (never sent to the server).

        E.g. how many values fixed-point encoding clipped.  Empty by default.
        """
        return {}


class ServerSession(abc.ABC):
    """The server's side of one round: a state machine driven phase by phase."""

    num_phases: int
    """How many phases the round has; the driver calls ``collect`` once per phase."""

    @abc.abstractmethod
    def collect(
        self, phase: int, messages: Mapping[ClientId, Message]
    ) -> Mapping[ClientId, Message]:
        """Receive the messages of the clients alive in ``phase``; return replies per client.

        A client missing from ``messages`` dropped out (or had nothing to send).
        Replies are delivered at the start of the next phase to the clients still
        alive; after the last phase the server must return no replies.
        """

    def check_message(self, phase: int, client_id: ClientId, message: Message) -> None:
        """Raise :class:`ProtocolError` if ``client_id``'s ``message`` must be refused.

        The drivers call this for every client message of ``phase`` before
        :meth:`collect` (after :func:`fedpriv.protocols.boundary.admit`'s type, range
        and protocol checks), and drop a client whose message it refuses, as if the
        client had dropped out at ``phase``.  Override it for checks that need the
        session's state (e.g. that a ciphertext parses under the server's context);
        it must not change the session.  The default accepts.
        """
        return None

    @abc.abstractmethod
    def finish(self) -> tuple[np.ndarray, float, tuple[ClientId, ...]]:
        """Return (weighted mean of the survivors' updates, their total weight, survivors).

        Raises :class:`ProtocolError` when no aggregate can be formed (e.g. no
        survivor, or fewer than the protocol's threshold).
        """

    @abc.abstractmethod
    def view(self) -> ServerView:
        """Return exactly what the server observed during the round."""


@dataclass(frozen=True, eq=False)
class ServerView:
    """Exactly what an honest-but-curious server observed in one round (attacks consume this).

    Nothing here is ground truth the server did not see: protocols that hide
    individual updates or weights set those fields to ``None``.
    """

    protocol: str
    """Name of the protocol that produced this view."""
    round: int
    participants: tuple[ClientId, ...]
    survivors: tuple[ClientId, ...]
    """Clients whose input is in ``aggregate``."""
    aggregate: np.ndarray
    """What the server learned: the weighted mean of the survivors' updates."""
    total_weight: float | None
    """Sum of the survivors' weights; ``None`` where the protocol hides it."""
    individual_updates: Mapping[ClientId, np.ndarray] | None
    """Per-client updates, only where the protocol reveals them (plain); else ``None``."""
    individual_weights: Mapping[ClientId, float] | None
    """Per-client weights, only where the protocol reveals them; else ``None``."""
    transcript: tuple[Message, ...]
    """Every message the server received, in order (by phase, then by client id)."""

    def __post_init__(self) -> None:
        unknown = sorted(set(self.survivors) - set(self.participants))
        if unknown:
            raise ProtocolError(
                f"ServerView of round {self.round}: survivors {unknown} are not participants "
                f"{list(self.participants)}; this is a bug in the '{self.protocol}' protocol."
            )
        for name in ("individual_updates", "individual_weights"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, MappingProxyType(dict(value)))

    @property
    def observes_individual_updates(self) -> bool:
        """Whether the server saw individual clients' updates (true for plain)."""
        return self.individual_updates is not None

    @property
    def dropped(self) -> tuple[ClientId, ...]:
        """Participants whose input is not in the aggregate."""
        survivors = set(self.survivors)
        return tuple(c for c in self.participants if c not in survivors)


def _add_by_client(a: Mapping[ClientId, Any], b: Mapping[ClientId, Any]) -> dict[ClientId, Any]:
    return {c: a.get(c, 0) + b.get(c, 0) for c in sorted(set(a) | set(b))}


def _mean(values: Iterable[float]) -> float:
    values = list(values)
    return float(sum(values) / len(values)) if values else 0.0


@dataclass
class CostRecord:
    """Bytes and seconds one round (or, after :meth:`merge`, several rounds) cost.

    Every participant has an entry in each per-client dict, 0 for a client that
    sent or received nothing.  After merging rounds, a client's entry is its total
    over the rounds it took part in.
    """

    bytes_up: dict[ClientId, int]
    """Client → server bytes per client, summed over phases."""
    bytes_down: dict[ClientId, int]
    """Server → client bytes per client, summed over phases."""
    client_seconds: dict[ClientId, float]
    """Time spent in each client's protocol code."""
    server_seconds: float
    """Time spent in the server's protocol code."""

    @classmethod
    def empty(cls) -> CostRecord:
        """Return a record of no cost, the neutral start for :meth:`merge`."""
        return cls(bytes_up={}, bytes_down={}, client_seconds={}, server_seconds=0.0)

    def bytes_up_per_client(self) -> float:
        """Mean upload bytes over the participants (0.0 for an empty record)."""
        return _mean(self.bytes_up.values())

    def bytes_down_per_client(self) -> float:
        """Mean download bytes over the participants (0.0 for an empty record)."""
        return _mean(self.bytes_down.values())

    def client_seconds_total(self) -> float:
        """Sum of the clients' protocol seconds."""
        return float(sum(self.client_seconds.values()))

    def protocol_seconds(self) -> float:
        """Server seconds plus the sum of client seconds."""
        return self.server_seconds + self.client_seconds_total()

    def merge(self, other: CostRecord) -> CostRecord:
        """Return the sum of two records (same or different clients); neither is changed."""
        return CostRecord(
            bytes_up=_add_by_client(self.bytes_up, other.bytes_up),
            bytes_down=_add_by_client(self.bytes_down, other.bytes_down),
            client_seconds=_add_by_client(self.client_seconds, other.client_seconds),
            server_seconds=self.server_seconds + other.server_seconds,
        )

    def to_dict(self) -> dict[str, float]:
        """Return the summary that goes into ``report.json``'s ``cost``."""
        return {
            "bytes_up_per_client": self.bytes_up_per_client(),
            "bytes_down_per_client": self.bytes_down_per_client(),
            "client_s": self.client_seconds_total(),
            "server_s": self.server_seconds,
            "protocol_s": self.protocol_seconds(),
        }


@dataclass(frozen=True, eq=False)
class AggregationResult:
    """Everything one round of a protocol produced."""

    aggregate: np.ndarray
    """Weighted mean of the survivors' updates."""
    total_weight: float
    """Sum of the survivors' weights."""
    survivors: tuple[ClientId, ...]
    """Clients whose update is in ``aggregate``."""
    view: ServerView
    """What the server observed (give this, never the inputs, to attacks)."""
    cost: CostRecord
    client_stats: Mapping[ClientId, Mapping[str, float]] = field(default_factory=dict)
    """Each client session's :meth:`ClientSession.stats` at the end of the round."""
    rejected_clients: Mapping[ClientId, str] = field(default_factory=dict)
    """Client → why the driver refused one of its messages at the network boundary
    (:func:`fedpriv.protocols.boundary.admit`); such a client counts as dropped from
    that phase on.  Empty when every message was well formed."""


class AggregationProtocol(abc.ABC):
    """A secure-aggregation protocol: a factory of client and server sessions for a round.

    A protocol object holds only its (validated, frozen) configuration; all
    per-round state lives in the sessions it creates.  To be registered with
    :func:`fedpriv.protocols.registry.register`, a subclass also sets
    ``config_type`` (a frozen dataclass), ``threat_model`` and
    ``dropout_tolerance``, and takes an instance of ``config_type`` as its only
    constructor argument.
    """

    name: ClassVar[str]
    """Registry name, also written into every ServerView and report."""
    reveals_individual_updates: ClassVar[bool]
    """Whether the server sees any individual client's update."""
    dropout_tolerant: ClassVar[bool]
    """Whether a round still yields an aggregate when some clients drop out."""
    threat_model: ClassVar[str]
    """One line: who is trusted and what the server learns."""
    dropout_tolerance: ClassVar[str]
    """One line: how many clients may drop, and at which phases."""
    config_type: ClassVar[type[Any]]
    """The frozen dataclass of this protocol's parameters."""
    num_phases: ClassVar[int] = 1
    """Phases of a round (equal to its server sessions' ``num_phases``; the driver checks)."""

    @abc.abstractmethod
    def client(self, client_id: ClientId, ctx: RoundContext, data: ClientInput) -> ClientSession:
        """Return the session of ``client_id`` for the round ``ctx`` with input ``data``."""

    @abc.abstractmethod
    def server(self, ctx: RoundContext) -> ServerSession:
        """Return the server's session for the round ``ctx``."""
