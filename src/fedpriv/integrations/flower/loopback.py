"""An in-process Flower ``Grid``, and the engine that runs fedpriv rounds through it.

:class:`LoopbackGrid` implements Flower's ``Grid`` for nodes that live in the
calling process: every message is delivered to a ClientApp (or ClientApp
function) with the node's ``Context``, and both the messages and the context go
through Flower's protobuf serialization on the way, as they do between a
SuperLink, a SuperNode and a ``flwr-clientapp`` process — so only what survives
serialization survives between phases.  A node can be taken offline at a given
round and phase (:meth:`LoopbackGrid.drop`); messages to it are then answered
with the ``NODE_UNAVAILABLE`` error reply a SuperLink gives for a node that left.

:func:`flower_round_runner` turns it into a round runner for
:class:`fedpriv.train.FederatedTrainer`: each round's aggregation then goes
through the Flower path (:func:`~.server.run_protocol_round` and
:class:`~.client.FedprivClient`), and the ServerView it records is the Flower
server's.  :func:`run_audit_on_flower` runs a whole ``fedpriv audit`` that way.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from flwr.app import Context, Error, Message, RecordDict
from flwr.clientapp import ClientApp
from flwr.common.constant import SUPERLINK_NODE_ID, ErrorCode
from flwr.common.serde import (
    context_from_proto,
    context_to_proto,
    message_from_proto,
    message_to_proto,
)
from flwr.serverapp import Grid
from flwr.supercore.run import Run
from flwr.supercore.task_identity import TaskIdentity

from fedpriv.errors import ProtocolError
from fedpriv.integrations.flower.client import FedprivClient, LocalUpdate
from fedpriv.integrations.flower.records import ROUND_RECORD
from fedpriv.integrations.flower.server import (
    DEFAULT_PHASE_TIMEOUT,
    FlowerRoundResult,
    run_protocol_round,
)
from fedpriv.protocols.base import (
    AggregationProtocol,
    AggregationResult,
    ClientId,
    ClientInput,
    RoundContext,
)

ClientAppFunction = Callable[[Message, Context], Message]

NODE_UNAVAILABLE_REASON = "the node is offline (LoopbackGrid.drop)"


def _copy_message(message: Message) -> Message:
    copy = message_from_proto(message_to_proto(message))
    copy.metadata.__dict__["_message_id"] = message.metadata.message_id
    return copy


def _copy_context(context: Context) -> Context:
    return context_from_proto(context_to_proto(context))


class LoopbackGrid(Grid):
    """A Flower ``Grid`` whose nodes run ``client_app`` in this process (see module docstring).

    ``node_ids`` are the Flower node ids (any distinct positive integers);
    ``node_configs`` optionally gives each node's ``node_config``; ``run_config``
    is every node's run config.
    """

    def __init__(
        self,
        client_app: ClientApp | ClientAppFunction,
        node_ids: Iterable[int],
        *,
        run_id: int = 1,
        run_config: Mapping[str, Any] | None = None,
        node_configs: Mapping[int, Mapping[str, Any]] | None = None,
    ) -> None:
        nodes = sorted(int(n) for n in node_ids)
        if not nodes or len(set(nodes)) != len(nodes) or min(nodes) <= 0:
            raise ProtocolError(f"LoopbackGrid needs distinct positive node ids; got {nodes}.")
        self._app = client_app
        self._run = Run.create_empty(run_id)
        # Flower stamps messages with the process's task identity; a ServerApp process has
        # one, a plain Python process (a test, an audit) gets the loopback run's.
        try:
            TaskIdentity.run_id  # noqa: B018 - raises when no identity is set
        except RuntimeError:
            TaskIdentity.run_id = run_id
            TaskIdentity.task_id = run_id
            TaskIdentity.node_id = SUPERLINK_NODE_ID
        configs = dict(node_configs or {})
        self._contexts = {
            n: Context(run_id=run_id, node_id=n, node_config=dict(configs.get(n, {})),
                       state=RecordDict(), run_config=dict(run_config or {}))
            for n in nodes
        }
        self._replies: dict[str, Message] = {}
        self._drops: dict[int, tuple[int, int]] = {}
        self.delivered: list[tuple[int, int, int]] = []
        """(node id, round, phase) of every fedpriv message a node handled, in order."""

    # ------------------------------------------------------------------ Grid API
    def set_run(self, run: Run) -> None:
        """Set the run this grid operates in."""
        self._run = run

    @property
    def run(self) -> Run:
        """The run this grid operates in."""
        return self._run

    def create_message(
        self, content: RecordDict, message_type: str, dst_node_id: int, group_id: str,
        ttl: float | None = None,
    ) -> Message:
        """Return a new message to ``dst_node_id`` (Flower's deprecated helper)."""
        return Message(content, dst_node_id, message_type, ttl=ttl, group_id=group_id)

    def get_node_ids(self) -> list[int]:
        """Return the ids of the nodes (offline ones included, as a SuperLink does)."""
        return sorted(self._contexts)

    def push_messages(self, messages: Iterable[Message]) -> list[str]:
        """Deliver each message to its node now; return the message ids."""
        ids = []
        for message in messages:
            message.metadata.__dict__["_message_id"] = message.object_id
            node = message.metadata.dst_node_id
            if node not in self._contexts:
                continue  # unknown node: not stored, as a SuperLink refuses it
            ids.append(message.metadata.message_id)
            self._replies[message.metadata.message_id] = self._deliver(node, message)
        return ids

    def pull_messages(self, message_ids: Iterable[str]) -> list[Message]:
        """Return (and forget) the replies to ``message_ids`` that exist."""
        return [self._replies.pop(i) for i in list(message_ids) if i in self._replies]

    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None,
    ) -> list[Message]:
        """Push ``messages`` and return their replies (all present at once here)."""
        return self.pull_messages(self.push_messages(messages))

    # ------------------------------------------------------------------ nodes
    def drop(self, node_id: int, *, round_index: int, phase: int) -> None:
        """Take ``node_id`` offline from ``phase`` of round ``round_index`` on."""
        if node_id not in self._contexts:
            raise ProtocolError(f"LoopbackGrid has no node {node_id}.")
        self._drops[node_id] = (round_index, phase)

    def context(self, node_id: int) -> Context:
        """Return (a copy of) ``node_id``'s current context."""
        return _copy_context(self._contexts[node_id])

    def _offline(self, node_id: int, message: Message) -> bool:
        if node_id not in self._drops:
            return False
        record = message.content.config_records.get(ROUND_RECORD)
        if record is None:
            return True
        at = (record.get("round"), record.get("phase"))
        return isinstance(at[0], int) and isinstance(at[1], int) and at >= self._drops[node_id]

    def _deliver(self, node_id: int, message: Message) -> Message:
        if self._offline(node_id, message):
            reply = Message(Error(ErrorCode.NODE_UNAVAILABLE, NODE_UNAVAILABLE_REASON),
                            reply_to=message)
        else:
            record = message.content.config_records.get(ROUND_RECORD)
            if record is not None:
                self.delivered.append((node_id, record.get("round"), record.get("phase")))  # type: ignore[arg-type]
            received = _copy_message(message)
            context = _copy_context(self._contexts[node_id])
            try:
                reply = self._app(received, context)
            except Exception as err:  # a ClientApp error becomes an error reply, as in Flower
                reply = Message(Error(ErrorCode.CLIENT_APP_RAISED_EXCEPTION,
                                      f"{type(err).__name__}: {err}"), reply_to=message)
            else:
                self._contexts[node_id] = _copy_context(context)
        reply.metadata.__dict__["_message_id"] = reply.object_id
        return _copy_message(reply)


def run_round_over_flower(
    protocol: AggregationProtocol, ctx: RoundContext, inputs: Mapping[ClientId, ClientInput],
    *, dropouts: Mapping[ClientId, int] | None = None,
    phase_timeout: float = DEFAULT_PHASE_TIMEOUT,
) -> FlowerRoundResult:
    """Run one round like :func:`~fedpriv.protocols.run_round`, but through Flower messages.

    One in-process node per participant (node id = client id + 1) runs
    :class:`~.client.FedprivClient` with ``inputs``; ``dropouts`` takes a client's
    node offline from that phase on.
    """
    missing = sorted(set(ctx.participants) - set(inputs))
    if missing:
        raise ProtocolError(f"round {ctx.round}: no input for participants {missing}.")

    def make_input(_message: Message, _context: Context, client_id: ClientId,
                   _ctx: RoundContext) -> LocalUpdate:
        return LocalUpdate(inputs[client_id])

    node_ids = {c: c + 1 for c in ctx.participants}
    grid = LoopbackGrid(FedprivClient(protocol, make_input), node_ids.values())
    for client_id, phase in (dropouts or {}).items():
        grid.drop(node_ids[client_id], round_index=ctx.round, phase=phase)
    return run_protocol_round(grid, protocol, ctx, node_ids, phase_timeout=phase_timeout)


def flower_round_runner(
    *, phase_timeout: float = DEFAULT_PHASE_TIMEOUT,
) -> Callable[..., AggregationResult]:
    """Return a round runner for :class:`fedpriv.train.FederatedTrainer` (Flower message path).

    Use it as ``FederatedTrainer(..., round_runner=flower_round_runner())`` or, for
    every trainer an audit builds, inside ``use_round_runner(flower_round_runner())``.
    """

    def runner(protocol: AggregationProtocol, ctx: RoundContext,
               inputs: Mapping[ClientId, ClientInput], *,
               dropouts: Mapping[ClientId, int] | None = None) -> AggregationResult:
        flower = run_round_over_flower(protocol, ctx, inputs, dropouts=dropouts,
                                       phase_timeout=phase_timeout)
        return flower.result

    return runner


def run_audit_on_flower(config: Any, out_dir: str | Path, **kwargs: Any) -> dict[str, Any]:
    """Run :func:`fedpriv.audits.runner.run_audit` with every round aggregated over Flower.

    Local training, DP, the attacks and report.json are the audit's own; each
    round's protocol messages travel as Flower messages between the server
    workflow and one :class:`~.client.FedprivClient` per client (on a
    :class:`LoopbackGrid`), so the ServerViews the attacks consume are the Flower
    server's.  ``kwargs`` go to ``run_audit`` (``resume``, ``overwrite``, ``progress``).
    A run in the deterministic DP mode is refused (:class:`ConfigError`).
    """
    from fedpriv.audits.runner import run_audit
    from fedpriv.errors import ConfigError
    from fedpriv.train.loop import use_round_runner

    seeded = [run.name for run in config.runs if run.dp_config().deterministic]
    if seeded:
        raise ConfigError(
            f"run(s) {', '.join(seeded)}: the deterministic DP mode derives noise and sampling "
            "from the public seed, which the Flower integration refuses (a Flower server must "
            "never know a client's noise); drop --dp-deterministic / dp_params.deterministic")
    with use_round_runner(flower_round_runner()):
        return run_audit(config, out_dir, **kwargs)


__all__ = [
    "LoopbackGrid",
    "flower_round_runner",
    "run_audit_on_flower",
    "run_round_over_flower",
]
