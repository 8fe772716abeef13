"""The server side: drive a fedpriv server session through a Flower ``Grid``, phase by phase.

:func:`run_protocol_round` is the Flower counterpart of
:func:`fedpriv.protocols.run_round`: it creates the protocol's server session and,
for each phase, sends one Flower message to each node that the session has a
message for (every participant in phase 0), collects the replies within
``phase_timeout`` and hands the decoded fedpriv messages to the session.  A node
that does not answer in time, or answers with Flower's error reply (its
ClientApp raised, or the SuperLink reports the node unavailable), has dropped out
at that phase: it gets no further message this round, and the protocol's own
dropout handling completes the round (SecAgg+ reconstructs the masks of clients
that dropped after sharing their keys), exactly as ``run_round`` with
``dropouts={client: phase}`` would.

:class:`FedprivWorkflow` runs whole training rounds on top of it: choose the
participants, put the global vector (and the DP state the clients need) into
the phase-0 message, run the round, and apply the server's DP step
(:func:`fedpriv.dp.rounds.server_mean`, the same function the in-process loop
calls) to update the global vector.  Protocol ids are the nodes' ranks in
sorted Flower node-id order (:func:`assign_client_ids`).

Hostile nodes: a reply that does not decode, answers another round, phase or
client, or holds a message the network boundary refuses
(:func:`fedpriv.protocols.boundary.admit`: field types and ranges, sender, round,
the protocol's expected answer) is that node's failure — it drops out at that
phase, its reason in ``FlowerRoundResult.errors`` and in the result's
``rejected_clients`` — never the round's (unless too few clients remain for the
protocol's threshold) or the ServerApp's: an unexpected exception in the server
session becomes a :class:`ProtocolError` that :class:`FedprivWorkflow` records as
an aborted round.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, RecordDict
from flwr.serverapp import Grid

from fedpriv.dp.noise import key_generator, noise_seed
from fedpriv.dp.rounds import protocol_vector_size, server_mean
from fedpriv.errors import ConfigError, ProtocolError
from fedpriv.integrations.flower.records import (
    DP_RECORD,
    GLOBAL_ARRAY,
    GLOBAL_RECORD,
    MESSAGE_TYPE,
    PhaseReply,
    phase_content,
    read_reply,
)
from fedpriv.protocols.base import (
    SERVER_ID,
    AggregationProtocol,
    AggregationResult,
    ClientId,
    CostRecord,
    RoundContext,
    ServerSession,
    ServerView,
)
from fedpriv.protocols.base import Message as ProtocolMessage
from fedpriv.protocols.boundary import MAX_REASON_CHARS, admit
from fedpriv.protocols.driver import guarded

if TYPE_CHECKING:
    from fedpriv.dp.distributed import DistributedDP
    from fedpriv.dp.user import UserDPRound, UserLevelDP

logger = logging.getLogger(__name__)

DEFAULT_PHASE_TIMEOUT = 120.0
"""Seconds a phase waits for the nodes' replies before counting the rest as dropped."""
DEFAULT_POLL_INTERVAL = 0.1
"""Seconds between two pulls of replies (Flower's ``send_and_receive`` waits 3 s)."""

_T = TypeVar("_T")


def _timed(call: Callable[..., _T], *args: Any) -> tuple[_T, float]:
    start = time.perf_counter()
    value = call(*args)
    return value, time.perf_counter() - start


def assign_client_ids(node_ids: Iterable[int]) -> dict[ClientId, int]:
    """Return protocol client id → Flower node id: ranks 0..n−1 in sorted node-id order."""
    nodes = sorted(int(n) for n in node_ids)
    if len(set(nodes)) != len(nodes):
        raise ProtocolError(f"node ids must be distinct; got {nodes}.")
    return dict(enumerate(nodes))


@dataclass(frozen=True)
class FlowerRoundResult:
    """What :func:`run_protocol_round` produced."""

    result: AggregationResult
    """As :func:`fedpriv.protocols.run_round` returns it (aggregate, view, cost, stats)."""
    dropouts: Mapping[ClientId, int]
    """Client → the phase it did not answer (``run_round``'s ``dropouts`` of the same round)."""
    errors: Mapping[ClientId, str]
    """Client → why it counts as dropped (timeout, the node's error reply, a bad reply)."""
    metrics: Mapping[ClientId, Mapping[str, float]]
    """Client → the metrics its application reported in phase 0 (e.g. training loss)."""
    node_ids: Mapping[ClientId, int]
    """Protocol client id → Flower node id, for the participants."""


def _exchange(
    grid: Grid, outgoing: Mapping[ClientId, Message], timeout: float, poll_interval: float,
) -> tuple[dict[ClientId, Message], dict[ClientId, str]]:
    """Push ``outgoing``; return (replies by client, why the others failed) after ``timeout``."""
    failures: dict[ClientId, str] = {}
    if not outgoing:
        return {}, failures
    deadline = time.monotonic() + timeout
    pushed = {i for i in grid.push_messages(list(outgoing.values())) if i}
    pending: dict[str, ClientId] = {}
    for client_id, message in outgoing.items():
        message_id = message.metadata.message_id
        if message_id in pushed:
            pending[message_id] = client_id
        else:
            failures[client_id] = "the SuperLink refused the message (node unknown or gone)"
    replies: dict[ClientId, Message] = {}
    while pending:
        for reply in grid.pull_messages(set(pending)):
            message_id = reply.metadata.reply_to_message_id
            if message_id in pending:
                replies[pending.pop(message_id)] = reply
        if not pending or time.monotonic() >= deadline:
            break
        time.sleep(poll_interval)
    for client_id in pending.values():
        failures[client_id] = f"no reply within {timeout:g} s"
    return replies, failures


def _short(text: str) -> str:
    return text if len(text) <= MAX_REASON_CHARS else text[: MAX_REASON_CHARS - 1] + "…"


def _admit_reply(
    reply: Message, protocol: AggregationProtocol, ctx: RoundContext, phase: int,
    client_id: ClientId, node_id: int, last_sent: ProtocolMessage | None,
    server: ServerSession,
) -> PhaseReply:
    """Return client ``client_id``'s checked reply to ``phase``; raise ProtocolError if hostile.

    Decodes the reply (:func:`read_reply`), checks that it answers this round and
    phase as this client, and passes its message through the boundary
    (:func:`fedpriv.protocols.boundary.admit`).  Anything else that goes wrong on
    the reply's content is reported as :class:`ProtocolError` too.
    """
    where = f"round {ctx.round}, phase {phase}"
    try:
        parsed = read_reply(reply.content, node=f"client {client_id} (node {node_id})")
        if (parsed.round, parsed.phase, parsed.client_id) != (ctx.round, phase, client_id):
            raise ProtocolError(
                f"it answers round {parsed.round}, phase {parsed.phase} as client "
                f"{parsed.client_id}")
    except ProtocolError as err:
        raise ProtocolError(_short(f"{where}: {err}")) from None
    except Exception as err:  # any failure on a node's reply is the node's
        raise ProtocolError(_short(f"{where}: {type(err).__name__} reading the reply")) from None
    if parsed.message is not None:
        admit(parsed.message, protocol=protocol, ctx=ctx, phase=phase,
              client_id=client_id, reply=last_sent, server=server)
    return parsed


def run_protocol_round(
    grid: Grid,
    protocol: AggregationProtocol,
    ctx: RoundContext,
    node_ids: Mapping[ClientId, int],
    *,
    application: RecordDict | None = None,
    phase_timeout: float = DEFAULT_PHASE_TIMEOUT,
    poll_interval: float = DEFAULT_POLL_INTERVAL,
    on_phase_end: Callable[[int, int], None] | None = None,
) -> FlowerRoundResult:
    """Run one round of ``protocol`` over ``grid``; return the aggregate, view, cost, dropouts.

    ``node_ids`` maps every participant of ``ctx`` to its Flower node id.
    ``application`` is added to every phase-0 message (the nodes' ``make_input``
    reads it: e.g. the global adapter).  ``on_phase_end(round, phase)`` is called
    after the server session collected each phase.  Raises :class:`ProtocolError`
    when the protocol cannot form an aggregate (too many dropouts) or a participant
    has no node id.
    """
    missing = sorted(set(ctx.participants) - set(node_ids))
    if missing:
        raise ProtocolError(
            f"round {ctx.round}: participants {missing} have no Flower node id; pass one node "
            "id per participant (see assign_client_ids)."
        )
    for name, value in (("phase_timeout", phase_timeout), ("poll_interval", poll_interval)):
        if not value > 0:
            raise ConfigError(f"{name} must be > 0 seconds; got {value!r}.")
    participants = ctx.participants
    bytes_up = dict.fromkeys(participants, 0)
    bytes_down = dict.fromkeys(participants, 0)
    client_seconds = dict.fromkeys(participants, 0.0)
    server, server_seconds = _timed(protocol.server, ctx)
    num_phases = server.num_phases
    if num_phases != protocol.num_phases:
        raise ProtocolError(
            f"the '{protocol.name}' server session has {num_phases} phases but the protocol "
            f"declares {protocol.num_phases}. This is a bug in the protocol."
        )
    alive = set(participants)
    inbox: dict[ClientId, ProtocolMessage] = {}
    received: list[ProtocolMessage] = []
    dropouts: dict[ClientId, int] = {}
    errors: dict[ClientId, str] = {}
    rejected: dict[ClientId, str] = {}
    stats: dict[ClientId, dict[str, float]] = {}
    metrics: dict[ClientId, Mapping[str, float]] = {}
    for phase in range(num_phases):
        targets = sorted(participants if phase == 0 else (c for c in inbox if c in alive))
        outgoing = {
            c: Message(
                phase_content(protocol, ctx, phase, c, inbox.get(c),
                              application if phase == 0 else None),
                node_ids[c], MESSAGE_TYPE, ttl=phase_timeout, group_id=str(ctx.round),
            )
            for c in targets
        }
        for c in targets:
            if c in inbox:
                bytes_down[c] += inbox[c].nbytes()
        replies, failures = _exchange(grid, outgoing, phase_timeout, poll_interval)
        sent: dict[ClientId, ProtocolMessage] = {}
        for c in targets:
            reason = failures.get(c)
            reply = replies.get(c)
            if reply is not None and reply.has_error():
                reason = _short(f"node error {reply.error.code}: {reply.error.reason}")
            elif reply is not None:
                start = time.perf_counter()
                try:
                    parsed = _admit_reply(reply, protocol, ctx, phase, c, node_ids[c],
                                          inbox.get(c), server)
                    size = 0 if parsed.message is None else guarded(
                        parsed.message.nbytes, f"client {c}'s message's nbytes()")
                except ProtocolError as err:
                    reason = f"bad reply: {err}"
                    rejected[c] = reason
                else:
                    client_seconds[c] += parsed.seconds
                    stats[c] = dict(parsed.stats)
                    if phase == 0:
                        metrics[c] = dict(parsed.metrics)
                    if parsed.message is not None:
                        sent[c] = parsed.message
                        bytes_up[c] += size
                server_seconds += time.perf_counter() - start
            if reason is not None:
                alive.discard(c)
                dropouts[c] = phase
                errors[c] = reason
                logger.warning("round %d phase %d: client %d (node %d) dropped out: %s",
                               ctx.round, phase, c, node_ids[c], reason)
        received.extend(sent.values())
        replies_out, seconds = _timed(guarded, server.collect, f"the '{protocol.name}' server's "
                                      f"collect(phase={phase})", phase, MappingProxyType(sent))
        server_seconds += seconds
        inbox = {}
        for c, message in replies_out.items():
            if c not in participants or message.sender != SERVER_ID:
                raise ProtocolError(
                    f"phase {phase}: the server session replied to {c} with sender "
                    f"{message.sender}. This is a bug in the protocol."
                )
            inbox[c] = message
        if inbox and phase == num_phases - 1:
            raise ProtocolError(
                f"the '{protocol.name}' server replied after the last phase. This is a bug in "
                "the protocol."
            )
        if on_phase_end is not None:
            on_phase_end(ctx.round, phase)
    (aggregate, total_weight, survivors), seconds = _timed(
        guarded, server.finish, f"the '{protocol.name}' server's finish()")
    server_seconds += seconds
    view = guarded(server.view, f"the '{protocol.name}' server's view()")
    if view.survivors != survivors or len(view.transcript) != len(received):
        raise ProtocolError(
            f"the '{protocol.name}' server's view disagrees with the round. This is a bug in "
            "the protocol."
        )
    result = AggregationResult(
        aggregate=aggregate, total_weight=total_weight, survivors=survivors, view=view,
        cost=CostRecord(bytes_up=bytes_up, bytes_down=bytes_down,
                        client_seconds=client_seconds, server_seconds=server_seconds),
        client_stats=stats, rejected_clients=MappingProxyType(rejected),
    )
    return FlowerRoundResult(
        result=result, dropouts=MappingProxyType(dropouts), errors=MappingProxyType(errors),
        metrics=MappingProxyType(metrics),
        node_ids=MappingProxyType({c: node_ids[c] for c in participants}),
    )


def wait_for_nodes(grid: Grid, count: int, timeout: float) -> list[int]:
    """Return the grid's node ids once at least ``count`` are connected.

    Raises :class:`ProtocolError` after ``timeout`` seconds with fewer.
    """
    deadline = time.monotonic() + timeout
    while True:
        nodes = sorted(int(n) for n in grid.get_node_ids())
        if len(nodes) >= count:
            return nodes
        if time.monotonic() >= deadline:
            raise ProtocolError(
                f"only {len(nodes)} of the {count} SuperNodes this run needs connected within "
                f"{timeout:g} s; start more SuperNodes or lower the number of clients."
            )
        time.sleep(0.2)


def dp_record(user_dp: UserLevelDP | None, dist_dp: DistributedDP | None) -> ConfigRecord:
    """Return the DP state the clients need this round (the clip bound, the rotation salt)."""
    fields: dict[str, Any] = {"mode": "none"}
    if user_dp is not None:
        fields = {"mode": "user", "clip": float(user_dp.clip)}
    elif dist_dp is not None:
        fields = {"mode": "distributed", "rotation-salt": dist_dp.rotation_salt}
    return ConfigRecord(fields)


@dataclass(frozen=True)
class WorkflowRound:
    """One round of :class:`FedprivWorkflow`."""

    round: int
    global_vector: np.ndarray
    """The global vector after the round (unchanged when the round aborted)."""
    flower: FlowerRoundResult | None
    """``None`` when nobody took part or the protocol aborted the round."""
    dp_round: UserDPRound | None = None
    aborted: str | None = None


@dataclass
class FedprivWorkflow:
    """Federated rounds over a Flower grid: fedpriv's protocol and DP, one message per phase.

    Clients use :class:`~fedpriv.integrations.flower.client.FedprivClient` with a
    ``make_input`` that trains from the ``"global"`` ArrayRecord and calls
    :func:`~fedpriv.integrations.flower.client.client_protocol_vector`.  With
    ``user_dp`` the participants are Poisson-sampled and the server adds the
    central noise, both from keys of ``user_dp``'s secret (or fresh from the OS):
    never from a seed, which a report or a config would make public.  A DP object
    built with a seed and no secret (the deterministic debugging mode) is refused.
    """

    protocol: AggregationProtocol
    user_dp: UserLevelDP | None = None
    dist_dp: DistributedDP | None = None
    server_lr: float = 1.0
    phase_timeout: float = DEFAULT_PHASE_TIMEOUT
    poll_interval: float = DEFAULT_POLL_INTERVAL
    views: list[ServerView] = field(default_factory=list)
    """The ServerView of every completed round (what an audit of this run consumes)."""

    def __post_init__(self) -> None:
        for name, mech in (("user_dp", self.user_dp), ("dist_dp", self.dist_dp)):
            if mech is not None:
                refuse_seeded_dp(mech, f"FedprivWorkflow's {name}")

    def participants(self, round_index: int, node_ids: Mapping[ClientId, int]) -> tuple[int, ...]:
        """Return the round's participants: every node, or a Poisson sample under user DP.

        The sample is keyed by ``user_dp``'s secret (fresh OS keys without one), so
        who took part is not derivable from anything public.
        """
        if self.user_dp is None:
            return tuple(sorted(node_ids))
        if self.user_dp.num_clients != len(node_ids):
            raise ConfigError(
                f"user-level DP was set up for {self.user_dp.num_clients} clients but "
                f"{len(node_ids)} nodes are connected; build UserLevelDP with num_clients equal "
                "to the number of nodes."
            )
        key = noise_seed(None, round_index, purpose="client-sampling", secret=self.user_dp.secret)
        return self.user_dp.sample(key_generator(key))

    def round(
        self, grid: Grid, round_index: int, global_vector: np.ndarray,
        node_ids: Mapping[ClientId, int], *, application: RecordDict | None = None,
        on_phase_end: Callable[[int, int], None] | None = None,
    ) -> WorkflowRound:
        """Run round ``round_index`` from ``global_vector``; return the new global vector."""
        participants = self.participants(round_index, node_ids)
        flower: FlowerRoundResult | None = None
        aggregate: np.ndarray | None = None
        total_weight = 0.0
        if participants:
            content = RecordDict(dict(application.items()) if application is not None else {})
            content.array_records[GLOBAL_RECORD] = ArrayRecord(
                {GLOBAL_ARRAY: Array(np.ascontiguousarray(global_vector))})
            content.config_records[DP_RECORD] = dp_record(self.user_dp, self.dist_dp)
            size = protocol_vector_size(global_vector.size, user_dp=self.user_dp,
                                        dist_dp=self.dist_dp)
            ctx = RoundContext(round=round_index, participants=participants, vector_size=size)
            try:
                flower = run_protocol_round(
                    grid, self.protocol, ctx, node_ids, application=content,
                    phase_timeout=self.phase_timeout, poll_interval=self.poll_interval,
                    on_phase_end=on_phase_end,
                )
            except ProtocolError as err:
                logger.warning("round %d aborted: %s", round_index, err)
                return WorkflowRound(round_index, global_vector, None, aborted=str(err))
            aggregate, total_weight = flower.result.aggregate, flower.result.total_weight
            self.views.append(flower.result.view)
        elif self.user_dp is None:  # pragma: no cover - only Poisson sampling picks nobody
            raise ConfigError("a round without participants needs user-level DP")
        mean, dp_round = server_mean(
            aggregate, total_weight, update_size=global_vector.size, round_index=round_index,
            user_dp=self.user_dp, dist_dp=self.dist_dp,
        )
        step = (self.server_lr * mean).astype(global_vector.dtype)
        return WorkflowRound(round_index, global_vector + step, flower, dp_round)


def refuse_seeded_dp(mechanism: UserLevelDP | DistributedDP, who: str) -> None:
    """Raise ConfigError when ``mechanism`` derives its randomness from a (public) seed.

    Over Flower the server and every node are separate parties: noise or sampling
    keyed by a seed that the server (or a config, or a report) knows can be
    regenerated and removed.  Build the mechanism with ``seed=None`` (fresh OS
    keys) or a ``secret`` its owner keeps.
    """
    if mechanism.secret is None and mechanism.seed is not None:
        raise ConfigError(
            f"{who} derives its DP noise and sampling from seed {mechanism.seed}, which the "
            "server knows: over Flower that noise could be regenerated and removed. Build it "
            "with seed=None (keys from the OS) or secret=<32 secret bytes>; the deterministic "
            "DP mode is for in-process debugging only")


__all__ = [
    "DEFAULT_PHASE_TIMEOUT",
    "DEFAULT_POLL_INTERVAL",
    "FedprivWorkflow",
    "FlowerRoundResult",
    "WorkflowRound",
    "assign_client_ids",
    "dp_record",
    "refuse_seeded_dp",
    "run_protocol_round",
    "wait_for_nodes",
]
