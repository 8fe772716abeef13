"""The node side: a ClientApp function that runs a fedpriv client session, phase by phase.

:class:`FedprivClient` is a Flower ClientApp function (``(Message, Context) ->
Message``) for messages of type ``train.fedpriv``.  Per message it

1. reads and checks the phase header, and refuses a round announced under another
   protocol or parameters than the node's own (:func:`~.records.protocol_spec`);
2. phase 0: refuses a round not above the highest one this node started (kept in
   ``Context.state`` under :data:`~.state.STARTED_RECORD`: a server replaying a
   round would get two sums of the same inputs over different survivor sets,
   whose difference is one client's update), then asks the application for its
   input (``make_input``: local training, then the DP step of
   :mod:`fedpriv.dp.rounds`) and creates the
   :class:`~fedpriv.protocols.ClientSession`; later phases: resumes the session
   suspended in ``Context.state`` (:mod:`.state`), first driving it with no inbox
   through any phase the server sent this node nothing in, as the in-process
   driver does;
3. drives the session with the server's message and replies with the session's
   message (if any), its stats and its protocol seconds;
4. suspends the session into ``Context.state``, or deletes it after the last phase.

An exception (including a :class:`~fedpriv.errors.ProtocolError` a session raises
when it detects a faulty server) becomes Flower's error reply, which the server
counts as this client dropping out.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
from flwr.app import ConfigRecord, Context, Message
from flwr.clientapp import ClientApp

from fedpriv.dp.rounds import protocol_vector
from fedpriv.errors import ConfigError, ProtocolError
from fedpriv.integrations.flower.records import (
    DP_RECORD,
    GLOBAL_ARRAY,
    GLOBAL_RECORD,
    MESSAGE_TYPE,
    PhaseHeader,
    protocol_spec,
    read_header,
    read_inbox,
    reply_content,
)
from fedpriv.integrations.flower.state import (
    SESSION_RECORD,
    STARTED_RECORD,
    resume,
    start_round,
    suspend,
)
from fedpriv.protocols.base import (
    AggregationProtocol,
    ClientId,
    ClientInput,
    ClientSession,
    RoundContext,
)

if TYPE_CHECKING:  # a node process imports only what its round needs
    from fedpriv.dp.distributed import DistributedDP
    from fedpriv.dp.user import UserLevelDP

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class LocalUpdate:
    """What the application hands to the protocol in phase 0, and metrics to report."""

    input: ClientInput
    """The protocol input: the (DP-processed) flat update and the FedAvg weight."""
    metrics: Mapping[str, float] = field(default_factory=dict)
    """E.g. the local training loss; sent to the server in the phase-0 reply."""


MakeInput = Callable[[Message, Context, ClientId, RoundContext], LocalUpdate]
"""``make_input(message, context, client_id, ctx)``: train locally on the phase-0 message
(which carries the server's application records) and return the round's input."""

ProtocolSource = Callable[[Context], AggregationProtocol]
"""Builds the node's protocol from its context (run config, node config: e.g. key files)."""


class FedprivClient:
    """A ClientApp function that runs this node's side of fedpriv rounds.

    ``protocol`` is the node's own protocol object, or a function building it from
    the node's ``Context`` (called on every message: a deployment starts a fresh
    process per message, so build it from configuration, e.g. ``context.run_config``
    and, for ``ckks``, a key file named in ``context.node_config``).  ``make_input``
    produces the phase-0 input (see :data:`MakeInput`).
    """

    def __init__(self, protocol: AggregationProtocol | ProtocolSource,
                 make_input: MakeInput) -> None:
        if isinstance(protocol, AggregationProtocol):
            fixed = protocol
            self._protocol: ProtocolSource = lambda _context: fixed
        elif callable(protocol):
            self._protocol = protocol
        else:
            raise ProtocolError(
                f"FedprivClient needs an AggregationProtocol or a function of the Context that "
                f"returns one; got {type(protocol).__name__}."
            )
        if not callable(make_input):
            raise ProtocolError("FedprivClient needs make_input(message, context, client_id, "
                                "ctx) -> LocalUpdate.")
        self._make_input = make_input

    def __call__(self, message: Message, context: Context) -> Message:
        """Handle one phase message; return the reply (see the module docstring)."""
        header = read_header(message.content)
        protocol = self._protocol(context)
        if not isinstance(protocol, AggregationProtocol):
            raise ProtocolError(
                f"the node's protocol source returned {type(protocol).__name__}, not an "
                "AggregationProtocol."
            )
        local = protocol_spec(protocol)
        if header.protocol != local:
            raise ProtocolError(
                f"the server runs round {header.round} with protocol {header.protocol}, but this "
                f"node is configured for {local}; refusing to take part. Give the server and "
                "every node the same protocol configuration."
            )
        if not 0 <= header.phase < protocol.num_phases:
            raise ProtocolError(
                f"phase {header.phase} is out of range: '{protocol.name}' has "
                f"{protocol.num_phases} phases."
            )
        inbox = read_inbox(message.content)
        metrics: Mapping[str, float] = {}
        seconds = 0.0
        if header.phase == 0:
            if inbox is not None:
                raise ProtocolError("a phase-0 message must not carry a server message.")
            self._start_round(context, header)
            ctx = header.context()
            local_update = self._make_input(message, context, header.client_id, ctx)
            if not isinstance(local_update, LocalUpdate):
                raise ProtocolError(
                    f"make_input must return a LocalUpdate; got {type(local_update).__name__}."
                )
            metrics = local_update.metrics
            start = time.perf_counter()
            session = protocol.client(header.client_id, ctx, local_update.input)
            seconds += time.perf_counter() - start
        else:
            session, next_phase = self._load(context, header, protocol)
            start = time.perf_counter()
            for skipped in range(next_phase, header.phase):
                if session.handle(skipped, None) is not None:
                    raise ProtocolError(
                        f"client {header.client_id} had a message to send in phase {skipped}, "
                        "which the server skipped it in; the server is faulty."
                    )
            seconds += time.perf_counter() - start
        start = time.perf_counter()
        outgoing = session.handle(header.phase, inbox)
        seconds += time.perf_counter() - start
        if header.phase == protocol.num_phases - 1:
            context.state.config_records.pop(SESSION_RECORD, None)
        else:
            context.state.config_records[SESSION_RECORD] = ConfigRecord({
                "round": header.round, "client-id": header.client_id,
                "next-phase": header.phase + 1, "session": suspend(session),
            })
        content = reply_content(header, outgoing, seconds, session.stats(), metrics)
        return Message(content, reply_to=message)

    @staticmethod
    def _start_round(context: Context, header: PhaseHeader) -> None:
        """Refuse phase 0 of a round not above the highest this node started; record it."""
        start_round(
            context, STARTED_RECORD, header.round,
            f"client {header.client_id} already started round {{highest}}; phase 0 of round "
            "{round} is refused (a replayed round would give the server two sums of the same "
            "inputs). The server must number rounds increasingly.")

    @staticmethod
    def _load(
        context: Context, header: PhaseHeader, protocol: AggregationProtocol,
    ) -> tuple[ClientSession, int]:
        record = context.state.config_records.get(SESSION_RECORD)
        if record is None:
            raise ProtocolError(
                f"client {header.client_id} got phase {header.phase} of round {header.round} but "
                "holds no session: it missed phase 0 or lost its Context.state (a restarted "
                "SuperNode); it drops out of this round."
            )
        if record.get("round") != header.round or record.get("client-id") != header.client_id:
            raise ProtocolError(
                f"client {header.client_id} holds a session of round {record.get('round')!r} "
                f"(client {record.get('client-id')!r}), not of round {header.round}; it drops "
                "out of this round."
            )
        next_phase = record.get("next-phase")
        data = record.get("session")
        if not isinstance(next_phase, int) or not isinstance(data, bytes):
            raise ProtocolError("the suspended session record in Context.state is malformed.")
        if header.phase < next_phase:
            raise ProtocolError(
                f"client {header.client_id} already ran phase {next_phase - 1} of round "
                f"{header.round}; phase {header.phase} again is refused (replayed message)."
            )
        return resume(data, protocol), next_phase


def fedpriv_client_app(protocol: AggregationProtocol | ProtocolSource,
                       make_input: MakeInput) -> ClientApp:
    """Return a ClientApp whose ``train.fedpriv`` handler is a :class:`FedprivClient`.

    To add fedpriv rounds to an existing ClientApp instead, register the handler
    yourself: ``app.train("fedpriv")(FedprivClient(protocol, make_input))``.
    """
    app = ClientApp()
    app.train(MESSAGE_TYPE.split(".", 1)[1])(FedprivClient(protocol, make_input))
    return app


def read_global(message: Message) -> np.ndarray:
    """Return the global vector a :class:`~.server.FedprivWorkflow` phase-0 message carries."""
    records = message.content.array_records
    if GLOBAL_RECORD not in records or GLOBAL_ARRAY not in records[GLOBAL_RECORD]:
        raise ProtocolError(
            f"the phase-0 message has no {GLOBAL_RECORD!r} ArrayRecord with array "
            f"{GLOBAL_ARRAY!r}; it was not sent by FedprivWorkflow."
        )
    return records[GLOBAL_RECORD][GLOBAL_ARRAY].numpy()


def server_dp_record(message: Message, *, local: str, node: str = "this node",
                     ) -> ConfigRecord | None:
    """Return the server's DP record of the round, after checking its mode is ``local``.

    Raises :class:`ConfigError` when the server's DP mode (``none`` without the
    record) differs from the node's (``none``, ``user`` or ``distributed``).
    """
    record = message.content.config_records.get(DP_RECORD)
    mode = "none" if record is None else record.get("mode")
    if mode != local:
        raise ConfigError(
            f"the server runs DP mode {mode!r} but {node} is configured for {local!r}; give "
            "the server and every node the same DP configuration."
        )
    return record


def restore_server_clip(record: ConfigRecord, user_dp: UserLevelDP) -> None:
    """Make ``user_dp`` clip to the round's bound in the server's DP record.

    The bound moves under adaptive clipping.  Raises :class:`ProtocolError` when
    the record holds none.
    """
    clip = record.get("clip")
    if isinstance(clip, bool) or not isinstance(clip, float):
        raise ProtocolError(f"the server's DP record holds no clip bound; got {clip!r}.")
    user_dp.restore(clip)


def client_protocol_vector(
    message: Message, delta: np.ndarray, *, client_id: ClientId, ctx: RoundContext,
    user_dp: UserLevelDP | None = None, dist_dp: DistributedDP | None = None,
) -> np.ndarray:
    """Return what this client hands to the protocol for its update ``delta``.

    The same step as the in-process loop (:func:`fedpriv.dp.rounds.protocol_vector`),
    with the round's DP state taken from the server's phase-0 message: the current
    clip bound under user-level DP (it moves under adaptive clipping), the public
    rotation salt under distributed DP.  Raises :class:`ConfigError` when the
    server's DP mode differs from the node's.
    """
    if dist_dp is not None:  # the client's noise share must be secret from the server
        from fedpriv.integrations.flower.server import refuse_seeded_dp

        refuse_seeded_dp(dist_dp, f"client {client_id}'s DistributedDP")
    local = "user" if user_dp is not None else "distributed" if dist_dp is not None else "none"
    record = server_dp_record(message, local=local)
    if user_dp is not None and record is not None:
        restore_server_clip(record, user_dp)
    if dist_dp is not None and record is not None:
        salt = record.get("rotation-salt")
        if not isinstance(salt, str):
            raise ProtocolError(f"the server's DP record holds no rotation salt; got {salt!r}.")
        dist_dp.use_rotation_salt(salt)
    return protocol_vector(delta, round_index=ctx.round, client=client_id, user_dp=user_dp,
                           dist_dp=dist_dp)


__all__ = [
    "FedprivClient",
    "LocalUpdate",
    "MakeInput",
    "ProtocolSource",
    "client_protocol_vector",
    "fedpriv_client_app",
    "read_global",
    "restore_server_clip",
    "server_dp_record",
]
