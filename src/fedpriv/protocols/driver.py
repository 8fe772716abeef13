"""The in-process message driver: runs one round of any protocol, with dropouts and costs.

:func:`run_round` is the only place where messages move.  It owns the order of
events, which every protocol can rely on:

1. create the server session, then one client session per participant;
2. for each phase ``p`` in ``range(server.num_phases)``:

   a. every alive client whose dropout phase is ``p`` vanishes, for good: it
      neither receives the pending reply nor sends anything from now on;
   b. every other alive client, in client-id order, gets ``handle(p, inbox)``,
      where ``inbox`` is the server's reply to it from phase ``p - 1`` (or ``None``);
   c. each message passes the network boundary
      (:func:`fedpriv.protocols.boundary.admit`: field types and ranges, sender,
      round, the protocol's expected answer, the session's ``check_message``); a
      client whose message is refused drops out at ``p``, as in (a), and its
      reason lands in :attr:`AggregationResult.rejected_clients`;
   d. the server ``collect``s the admitted messages of ``p`` and returns replies;

3. the server ``finish``es and gives its ``view``.

One client's message never fails the round by itself: it is refused and the
client dropped.  The round fails (:class:`ProtocolError`) only when the protocol
cannot form an aggregate from the others (too few left for its threshold), and
an unexpected exception inside the server session becomes a :class:`ProtocolError`
too, so a caller that skips aborted rounds survives it.

Bytes: a message sent counts towards its sender's ``bytes_up``, a reply delivered
towards its recipient's ``bytes_down``.  Seconds: ``time.perf_counter`` around
each session call (session creation included), per client and for the server.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any, TypeVar

import numpy as np

from fedpriv.errors import ConfigError, ProtocolError
from fedpriv.protocols.base import (
    SERVER_ID,
    AggregationProtocol,
    AggregationResult,
    ClientId,
    ClientInput,
    ClientSession,
    CostRecord,
    Message,
    RoundContext,
    check_client_input,
)
from fedpriv.protocols.boundary import admit

_T = TypeVar("_T")

logger = logging.getLogger(__name__)


def _timed(call: Callable[..., _T], *args: Any) -> tuple[_T, float]:
    start = time.perf_counter()
    value = call(*args)
    return value, time.perf_counter() - start


def guarded(call: Callable[..., _T], what: str, *args: Any) -> _T:
    """Return ``call(*args)``; an exception other than :class:`ProtocolError` becomes one.

    Used around server-session calls: the messages they see passed the boundary,
    so an unexpected exception there is a protocol bug that a hostile message
    found; it aborts the round (``ProtocolError``), never the process.
    """
    try:
        return call(*args)
    except ProtocolError:
        raise
    except Exception as err:  # see docstring
        raise ProtocolError(
            f"{what} failed with {type(err).__name__}; the round is aborted. This is a bug "
            "in the protocol that one client's message triggered: please report it."
        ) from err


def _check_inputs(ctx: RoundContext, inputs: Mapping[ClientId, ClientInput]) -> None:
    missing = sorted(set(ctx.participants) - set(inputs))
    unexpected = sorted(set(inputs) - set(ctx.participants))
    if missing or unexpected:
        raise ProtocolError(
            f"round {ctx.round}: inputs must hold exactly one ClientInput per participant "
            f"{list(ctx.participants)}; missing {missing}, unexpected {unexpected}. "
            "Pass inputs for the selected clients only, or fix RoundContext.participants."
        )
    for client_id in ctx.participants:
        check_client_input(client_id, ctx, inputs[client_id])


def _check_dropouts(
    protocol: AggregationProtocol,
    ctx: RoundContext,
    dropouts: Mapping[ClientId, int],
    num_phases: int,
) -> None:
    for client_id, phase in dropouts.items():
        if client_id not in ctx.participants:
            raise ProtocolError(
                f"dropouts names client {client_id}, which is not a participant of round "
                f"{ctx.round} ({list(ctx.participants)}); list only participants."
            )
        if (
            isinstance(phase, bool)
            or not isinstance(phase, (int, np.integer))
            or not (0 <= phase < num_phases)
        ):
            raise ProtocolError(
                f"dropouts[{client_id}] = {phase!r} is out of range: the '{protocol.name}' "
                f"protocol has {num_phases} phase(s), so a dropout phase must be an integer in "
                f"0..{num_phases - 1}; leave a client out of `dropouts` if it does not drop."
            )


def _check_message(message: object, phase: int, expected_sender: ClientId, role: str) -> Message:
    if not isinstance(message, Message) or message.sender != expected_sender:
        sender = getattr(message, "sender", None)
        raise ProtocolError(
            f"phase {phase}: {role} produced {type(message).__name__} with sender {sender!r}; "
            f"expected a Message with sender {expected_sender}. This is a bug in the protocol."
        )
    return message


def run_round(
    protocol: AggregationProtocol,
    ctx: RoundContext,
    inputs: Mapping[ClientId, ClientInput],
    *,
    dropouts: Mapping[ClientId, int] | None = None,
) -> AggregationResult:
    """Run one round of ``protocol`` in-process and return the aggregate, view and cost.

    ``inputs`` holds one :class:`ClientInput` per participant of ``ctx``.
    ``dropouts`` maps a client to the phase at whose start it vanishes (phase 0:
    it never sends anything); clients not in it stay to the end.  A client whose
    message the boundary refuses (:func:`fedpriv.protocols.boundary.admit`) drops
    out at that phase; the result's ``rejected_clients`` says why.  Raises
    :class:`ProtocolError` for inputs that do not match ``ctx``, dropout phases
    out of range, or when the protocol cannot form an aggregate (e.g. every
    client dropped); an exception a client session raises is not caught.
    """
    _check_inputs(ctx, inputs)
    dropouts = dict(dropouts or {})

    bytes_up = dict.fromkeys(ctx.participants, 0)
    bytes_down = dict.fromkeys(ctx.participants, 0)
    client_seconds = dict.fromkeys(ctx.participants, 0.0)

    server, server_seconds = _timed(protocol.server, ctx)
    num_phases = server.num_phases
    if isinstance(num_phases, bool) or not isinstance(num_phases, int) or num_phases < 1:
        raise ProtocolError(
            f"the '{protocol.name}' server session has num_phases={num_phases!r}; it must be "
            "an integer >= 1. This is a bug in the protocol."
        )
    if num_phases != protocol.num_phases:
        raise ProtocolError(
            f"the '{protocol.name}' server session has {num_phases} phases but the protocol "
            f"declares num_phases={protocol.num_phases}. This is a bug in the protocol."
        )
    _check_dropouts(protocol, ctx, dropouts, num_phases)

    clients: dict[ClientId, ClientSession] = {}
    for client_id in ctx.participants:
        clients[client_id], client_seconds[client_id] = _timed(
            protocol.client, client_id, ctx, inputs[client_id]
        )

    alive = set(ctx.participants)
    inbox: dict[ClientId, Message] = {}
    received: list[Message] = []
    rejected: dict[ClientId, str] = {}
    for phase in range(num_phases):
        alive -= {c for c in alive if dropouts.get(c) == phase}
        sent: dict[ClientId, Message] = {}
        for client_id in ctx.participants:
            if client_id not in alive:
                continue
            reply = inbox.get(client_id)
            if reply is not None:
                bytes_down[client_id] += reply.nbytes()
            message, seconds = _timed(clients[client_id].handle, phase, reply)
            client_seconds[client_id] += seconds
            if message is None:
                continue
            start = time.perf_counter()
            try:
                admitted = admit(message, protocol=protocol, ctx=ctx, phase=phase,
                                 client_id=client_id, reply=reply, server=server)
                size = guarded(admitted.nbytes, f"client {client_id}'s message's nbytes()")
            except ProtocolError as err:
                alive.discard(client_id)
                rejected[client_id] = str(err)
                logger.warning("%s; client %d counts as dropped", err, client_id)
            else:
                sent[client_id] = admitted
                bytes_up[client_id] += size
            server_seconds += time.perf_counter() - start
        received.extend(sent.values())
        replies, seconds = _timed(guarded, server.collect, f"the '{protocol.name}' server's "
                                  f"collect(phase={phase})", phase, MappingProxyType(sent))
        server_seconds += seconds
        inbox = {}
        for client_id, reply in replies.items():
            if client_id not in ctx.participants:
                raise ProtocolError(
                    f"phase {phase}: the server replied to client {client_id}, which is not a "
                    f"participant ({list(ctx.participants)}). This is a bug in the protocol."
                )
            inbox[client_id] = _check_message(reply, phase, SERVER_ID, "the server")
        if inbox and phase == num_phases - 1:
            raise ProtocolError(
                f"the '{protocol.name}' server replied to clients {sorted(inbox)} after the last "
                f"phase ({phase}); nothing would deliver them. This is a bug in the protocol."
            )

    (aggregate, total_weight, survivors), seconds = _timed(
        guarded, server.finish, f"the '{protocol.name}' server's finish()")
    server_seconds += seconds
    view = guarded(server.view, f"the '{protocol.name}' server's view()")
    if (
        view.survivors != survivors
        or len(view.transcript) != len(received)
        or any(seen is not sent_ for seen, sent_ in zip(view.transcript, received, strict=True))
    ):
        raise ProtocolError(
            f"the '{protocol.name}' server's view disagrees with the round: survivors "
            f"{list(view.survivors)} vs {list(survivors)}, {len(view.transcript)} messages in the "
            f"transcript vs {len(received)} received. This is a bug in the protocol."
        )
    silent = sorted(set(survivors) - {m.sender for m in received})
    if silent:
        raise ProtocolError(
            f"the '{protocol.name}' server counts clients {silent} as survivors, but they never "
            "sent a message this round. This is a bug in the protocol."
        )
    if np.shape(aggregate) != (ctx.vector_size,):
        raise ProtocolError(
            f"the '{protocol.name}' server returned an aggregate of shape {np.shape(aggregate)}; "
            f"expected ({ctx.vector_size},). This is a bug in the protocol."
        )
    cost = CostRecord(
        bytes_up=bytes_up,
        bytes_down=bytes_down,
        client_seconds=client_seconds,
        server_seconds=server_seconds,
    )
    return AggregationResult(
        aggregate=aggregate,
        total_weight=total_weight,
        survivors=survivors,
        view=view,
        cost=cost,
        client_stats={cid: dict(session.stats()) for cid, session in clients.items()},
        rejected_clients=MappingProxyType(rejected),
    )


def draw_dropouts(
    participants: tuple[ClientId, ...],
    fraction: float,
    num_phases: int,
    rng: np.random.Generator,
) -> dict[ClientId, int]:
    """Pick ``round(fraction · n)`` participants to drop, each at a uniformly random phase.

    The result is a ``dropouts`` mapping for :func:`run_round`.  ``rng`` only
    simulates failures (nothing secret depends on it).
    """
    if not 0 <= fraction < 1:
        raise ConfigError(f"dropout fraction must be in [0, 1), got {fraction}")
    count = round(fraction * len(participants))
    if count == 0:
        return {}
    chosen = rng.choice(len(participants), size=count, replace=False)
    phases = rng.integers(0, num_phases, size=count)
    return {participants[int(i)]: int(p) for i, p in zip(chosen, phases, strict=True)}
