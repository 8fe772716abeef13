"""The ``plain`` protocol: clients send their updates in the clear (the no-protection baseline).

One phase: every client sends :class:`PlainUpdate` (its update and weight); the
server forms the weighted mean Σ w_i Δ_i / Σ w_i over whoever arrived.  The
server sees every individual update, so its :class:`ServerView` carries them.
Spec: ``protocols/plain.md``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from fedpriv.errors import ConfigError, ProtocolError
from fedpriv.protocols.base import (
    MESSAGE_HEADER_NBYTES,
    AggregationProtocol,
    ClientId,
    ClientInput,
    ClientSession,
    Message,
    RoundContext,
    ServerSession,
    ServerView,
    check_client_input,
    check_update,
    check_weight,
    readonly_array,
)

WEIGHT_NBYTES = 8
"""The weight travels as one float64."""


def weighted_mean(
    updates: Sequence[np.ndarray], weights: Sequence[float]
) -> tuple[np.ndarray, float]:
    """Return (Σ w_i Δ_i / Σ w_i, Σ w_i), accumulated in float64.

    The mean has the common dtype of ``updates`` (float32 in, float32 out).
    Raises :class:`ProtocolError` for no updates or mismatched lengths.
    """
    if not updates or len(updates) != len(weights):
        raise ProtocolError(
            f"weighted_mean needs one weight per update and at least one update; got "
            f"{len(updates)} update(s) and {len(weights)} weight(s)."
        )
    weighted_sum = np.zeros(updates[0].shape, dtype=np.float64)
    total_weight = 0.0
    for update, weight in zip(updates, weights, strict=True):
        weighted_sum += float(weight) * update.astype(np.float64, copy=False)
        total_weight += float(weight)
    dtype = np.result_type(*(u.dtype for u in updates))
    return (weighted_sum / total_weight).astype(dtype), total_weight


@dataclass(frozen=True)
class PlainConfig:
    """Parameters of the plain protocol (none yet; kept for symmetry with the others)."""


@dataclass(frozen=True, eq=False)
class PlainUpdate(Message):
    """Phase 0, client → server: the client's update and weight, in the clear."""

    update: np.ndarray
    weight: float

    def __post_init__(self) -> None:
        what = f"PlainUpdate from client {self.sender}"
        object.__setattr__(self, "update", check_update(self.update, f"{what}: update"))
        object.__setattr__(self, "weight", check_weight(self.weight, f"{what}: weight"))

    def nbytes(self) -> int:
        """Header + the update's bytes + one float64 weight."""
        return MESSAGE_HEADER_NBYTES + int(self.update.nbytes) + WEIGHT_NBYTES


class PlainClient(ClientSession):
    """Client side of plain: sends its input in phase 0."""

    def __init__(self, client_id: ClientId, ctx: RoundContext, data: ClientInput) -> None:
        check_client_input(client_id, ctx, data)
        self.client_id = client_id
        self.ctx = ctx
        self._data = data

    def handle(self, phase: int, inbox: Message | None) -> Message | None:
        """Return the :class:`PlainUpdate` in phase 0; plain has no other phase."""
        if phase != 0 or inbox is not None:
            raise ProtocolError(
                f"plain client {self.client_id} was driven with phase={phase}, "
                f"inbox={type(inbox).__name__}; plain has a single phase 0 with no inbox."
            )
        return PlainUpdate(
            sender=self.client_id, update=self._data.update, weight=self._data.weight
        )


class PlainServer(ServerSession):
    """Server side of plain: keeps every update it receives and averages them."""

    num_phases = 1

    def __init__(self, ctx: RoundContext) -> None:
        self.ctx = ctx
        self._received: dict[ClientId, PlainUpdate] = {}
        self._transcript: list[Message] = []
        self._collected = False
        self._result: tuple[np.ndarray, float, tuple[ClientId, ...]] | None = None

    def collect(
        self, phase: int, messages: Mapping[ClientId, Message]
    ) -> Mapping[ClientId, Message]:
        """Store the phase-0 updates after checking them; plain sends no replies."""
        if phase != 0 or self._collected:
            raise ProtocolError(
                f"plain server of round {self.ctx.round} got collect(phase={phase}) after "
                f"{int(self._collected)} earlier collect(s); plain has a single phase 0, "
                "collected once."
            )
        self._collected = True
        for client_id, message in messages.items():
            if not isinstance(message, PlainUpdate) or message.sender != client_id:
                raise ProtocolError(
                    f"plain server expected a PlainUpdate from client {client_id}; got "
                    f"{type(message).__name__} from sender {message.sender}."
                )
            if client_id not in self.ctx.participants:
                raise ProtocolError(
                    f"plain server got an update from client {client_id}, which is not a "
                    f"participant of round {self.ctx.round} ({list(self.ctx.participants)})."
                )
            if message.update.shape[0] != self.ctx.vector_size:
                raise ProtocolError(
                    f"client {client_id}'s update has {message.update.shape[0]} entries but "
                    f"round {self.ctx.round} expects vector_size={self.ctx.vector_size}."
                )
            self._transcript.append(message)
            self._received[client_id] = message
        return {}

    def finish(self) -> tuple[np.ndarray, float, tuple[ClientId, ...]]:
        """Return the weighted mean over the clients whose update arrived."""
        if self._result is None:
            survivors = tuple(sorted(self._received))
            if not survivors:
                raise ProtocolError(
                    f"round {self.ctx.round}: no client's update reached the plain server "
                    f"(all {len(self.ctx.participants)} participants dropped out), so there is "
                    "nothing to aggregate; skip the round or lower the dropout rate."
                )
            received = [self._received[c] for c in survivors]
            aggregate, total_weight = weighted_mean(
                [m.update for m in received], [m.weight for m in received]
            )
            self._result = (readonly_array(aggregate), total_weight, survivors)
        return self._result

    def view(self) -> ServerView:
        """Everything, in the clear: each survivor's update and weight, and the aggregate."""
        aggregate, total_weight, survivors = self.finish()
        return ServerView(
            protocol=PlainProtocol.name,
            round=self.ctx.round,
            participants=self.ctx.participants,
            survivors=survivors,
            aggregate=aggregate,
            total_weight=total_weight,
            individual_updates={c: self._received[c].update for c in survivors},
            individual_weights={c: self._received[c].weight for c in survivors},
            transcript=tuple(self._transcript),
        )


class PlainProtocol(AggregationProtocol):
    """No protection: the server sees every client's update (the baseline to compare with)."""

    name: ClassVar[str] = "plain"
    reveals_individual_updates: ClassVar[bool] = True
    dropout_tolerant: ClassVar[bool] = True
    threat_model: ClassVar[str] = (
        "None: an honest-but-curious server sees every client's individual update and weight."
    )
    dropout_tolerance: ClassVar[str] = (
        "Any number of clients may drop; the aggregate is the weighted mean of the clients "
        "whose update arrived (at least one must)."
    )
    config_type: ClassVar[type[PlainConfig]] = PlainConfig

    def __init__(self, config: PlainConfig | None = None) -> None:
        if config is not None and not isinstance(config, PlainConfig):
            raise ConfigError(
                f"PlainProtocol takes a PlainConfig; got {type(config).__name__}. "
                "Build it with fedpriv.protocols.create('plain')."
            )
        self.config = config if config is not None else PlainConfig()

    def client(self, client_id: ClientId, ctx: RoundContext, data: ClientInput) -> ClientSession:
        """Return a :class:`PlainClient` (checks that ``data`` fits ``ctx``)."""
        return PlainClient(client_id, ctx, data)

    def server(self, ctx: RoundContext) -> ServerSession:
        """Return a :class:`PlainServer`."""
        return PlainServer(ctx)


__all__ = [
    "PlainClient",
    "PlainConfig",
    "PlainProtocol",
    "PlainServer",
    "PlainUpdate",
    "weighted_mean",
]
