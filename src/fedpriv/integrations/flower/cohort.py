"""Cohorts: one Flower node trains many simulated clients together, for cross-device scale.

A cross-device federation has far more clients than machines.  Here a Flower
node hosts a *cohort* of simulated clients (their data and one shared model)
and trains the ones the server names each round with the batched trainer
(:class:`~fedpriv.train.batched.BatchedClientTrainer`); Flower spreads the
cohorts over processes and machines (a simulation's workers, or SuperNodes).

- Node side: :class:`CohortClient`, a ClientApp function for messages of type
  :data:`COHORT_MESSAGE_TYPE` (``train.fedpriv_cohort``; register it with
  ``app.train("fedpriv_cohort")`` or use :func:`cohort_client_app`).  The
  application supplies the node's :class:`CohortNode` (model, clients' token
  ids, local-training settings, generators) through ``load(context)``, called
  once per node and process and cached.  Per message the node trains every
  named client from the global vector and replies with
  ``Σ_i w_i · v_i`` over its clients, where ``v_i`` is client ``i``'s update
  (``local − global``, or what the node's ``transform`` makes of it, e.g.
  user-level DP clipping: :class:`UserDPTransform`) and ``w_i`` its FedAvg
  weight, together with ``Σ_i w_i``, the client count and each client's mean
  local loss.
- Server side: :func:`run_cohort_round` splits the round's clients over the
  nodes (:func:`split_clients`: contiguous chunks, or a given client → node
  assignment when nodes hold different clients' data), sends one message per
  node, and returns the weighted mean ``Σ sums / Σ weights``.  A node that
  errs, times out or sends a malformed reply has all its clients dropped
  (:attr:`CohortRoundResult.dropped` says why); the mean is over the rest.

**No secure aggregation.**  The server sees each node's partial sum in the
clear.  It also decides which clients each node sums: a node sent one client
reveals that client's update, so nothing here protects a client's update from
the server (a sum over several clients hides one only from whoever sees no
more than the sum).  The node is trusted with its clients' data and updates (it holds and trains
them), as in the cross-device simulations of Flower and pfl-research.  Use it
as a plain FedAvg round, or under user-level DP with the server's central
noise (:func:`fedpriv.dp.rounds.server_mean`), whose threat model trusts the
server with the noiseless sum anyway.  For secure aggregation run one protocol
client per node with :class:`~.client.FedprivClient` instead.

Wire layout (spec: ``protocols/flower.md``, section "Cohorts"):

- server → node: ConfigRecord :data:`COHORT_RECORD` (format version, round,
  the client ids to train, the vector size), ArrayRecord
  :data:`~.records.GLOBAL_RECORD` holding the global vector as
  :data:`~.records.GLOBAL_ARRAY`, under user-level DP ConfigRecord
  :data:`~.records.DP_RECORD` (the round's clip bound), and any application
  records;
- node → server: ConfigRecord :data:`COHORT_REPLY_RECORD` (round, client ids,
  total weight, count, per-client mean losses, seconds) and ArrayRecord
  :data:`COHORT_SUM_RECORD` holding the float64 weighted sum as
  :data:`COHORT_SUM_ARRAY`.
"""

from __future__ import annotations

import logging
import math
import numbers
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid

from fedpriv.dp.rounds import DP_CLIENT_WEIGHT, protocol_vector, protocol_vector_size
from fedpriv.errors import ConfigError, ProtocolError
from fedpriv.integrations.flower.client import restore_server_clip, server_dp_record
from fedpriv.integrations.flower.records import DP_RECORD, GLOBAL_ARRAY, GLOBAL_RECORD
from fedpriv.integrations.flower.server import (
    DEFAULT_PHASE_TIMEOUT,
    DEFAULT_POLL_INTERVAL,
    _exchange,
    _short,
    dp_record,
)
from fedpriv.integrations.flower.state import start_round
from fedpriv.protocols.boundary import check_int

if TYPE_CHECKING:  # a node process imports torch only when it trains
    import torch

    from fedpriv.dp.user import UserLevelDP
    from fedpriv.train.batched import BatchedClientTrainer, DPJobSettings
    from fedpriv.train.batching import TokenIds
    from fedpriv.train.local import LocalTrainingSettings

logger = logging.getLogger(__name__)

COHORT_WIRE_VERSION = 1
"""Version of the cohort record layout; a node refuses a message of another."""
COHORT_MESSAGE_TYPE = "train.fedpriv_cohort"
"""Flower message type of a cohort round; register with ``app.train("fedpriv_cohort")``."""
COHORT_RECORD = "fedpriv.cohort"
"""Server → node ConfigRecord: version, round, clients, vector-size."""
COHORT_REPLY_RECORD = "fedpriv.cohort-reply"
"""Node → server ConfigRecord: round, clients, weight, count, losses, seconds."""
COHORT_SUM_RECORD = "fedpriv.cohort-sum"
"""Node → server ArrayRecord holding the weighted sum of the cohort's updates."""
COHORT_SUM_ARRAY = "sum"
"""Name of the weighted sum's array inside :data:`COHORT_SUM_RECORD`."""
COHORT_STARTED_RECORD = "fedpriv.cohort-started"
"""ConfigRecord in the node's ``Context.state``: the highest round it started (never replayed)."""
MAX_COHORT_CLIENTS = 1 << 20
"""Most client ids one cohort message may name."""


@dataclass(frozen=True)
class CohortRound:
    """What a node's update transform may need about the round it runs in."""

    round: int
    message: Message
    """The server's message (its application records, e.g. :data:`~.records.DP_RECORD`)."""
    context: Context
    """The node's Flower context (run and node config)."""


UpdateTransform = Callable[[CohortRound, int, np.ndarray], tuple[np.ndarray, float]]
"""``transform(round, client, delta) -> (vector, weight)``: what client ``client`` contributes
for its raw update ``delta = local − global``; every vector of a round must have one length."""


class UserDPTransform:
    """User-level DP-FedAvg on a cohort node: clip each client's update, weight 1.

    The same step as the in-process loop (:func:`fedpriv.dp.rounds.protocol_vector`
    with ``user_dp``: clip to the round's bound, plus the clipped bit under
    adaptive clipping).  The round's clip bound comes from the server's
    :data:`~.records.DP_RECORD` (:func:`run_cohort_round` with ``user_dp=``
    sends it; it moves under adaptive clipping); a round without that record,
    or in another DP mode, is refused (:class:`ConfigError`).  The server adds
    the noise to the sum (:func:`fedpriv.dp.rounds.server_mean`).
    """

    def __init__(self, user_dp: UserLevelDP) -> None:
        self.user_dp = user_dp

    def __call__(self, cohort: CohortRound, client: int, delta: np.ndarray,
                 ) -> tuple[np.ndarray, float]:
        """Return client ``client``'s clipped vector and its weight (1)."""
        record = server_dp_record(cohort.message, local="user", node="this cohort node")
        assert record is not None
        restore_server_clip(record, self.user_dp)
        vector = protocol_vector(delta, round_index=cohort.round, client=client,
                                 user_dp=self.user_dp)
        return vector, DP_CLIENT_WEIGHT


@dataclass
class CohortNode:
    """What a cohort node trains with: the application builds it in ``load(context)``.

    Its clients' generators are keyed as :class:`fedpriv.train.FederatedTrainer`
    keys them without DP (batch order ``np.random.default_rng([seed, round, 3,
    client])``), so a cohort round reproduces the in-process loop's clients.
    Under DP pass ``batch_rng`` (and, for DP-SGD, ``noise``) keyed by a secret the
    node keeps: a public seed would let anyone regenerate the sampling and noise.
    """

    trainer: BatchedClientTrainer
    """The batched trainer over the node's model (shared by all its clients)."""
    examples: Mapping[int, Sequence[TokenIds]]
    """Client id → its token-id sequences: every client this node can train."""
    settings: LocalTrainingSettings
    seed: int = 0
    """Public seed of the default batch-order generators."""
    weights: Mapping[int, float] | None = None
    """Client id → FedAvg weight (default: its example count; the loop's weights are these
    over the largest count, which gives the same mean).  Ignored under ``transform``."""
    batch_rng: Callable[[int, int], np.random.Generator] | None = None
    """``batch_rng(round, client)``: orders (DP-SGD: Poisson-samples) the client's batches."""
    dp: DPJobSettings | None = None
    """Sample-level DP-SGD settings (then ``noise`` is required)."""
    noise: Callable[[int, int], torch.Generator] | None = None
    """``noise(round, client)``: the client's DP-SGD noise generator."""
    nominal_sizes: Mapping[int, int] | None = None
    """Client id → public size for DP-SGD's sample rate (default: its example count)."""
    transform: UpdateTransform | None = None
    """Applied to each client's ``delta`` before summing (e.g. :class:`UserDPTransform`)."""

    def __post_init__(self) -> None:
        if self.dp is not None and self.noise is None:
            raise ConfigError("a cohort node under DP-SGD (dp=...) needs noise(round, client) "
                              "giving each client's noise generator.")
        if self.transform is not None and not callable(self.transform):
            raise ConfigError("CohortNode.transform must be a function (round, client, delta) "
                              "-> (vector, weight).")

    def generator(self, round_index: int, client: int) -> np.random.Generator:
        """Return ``client``'s batch-order generator for ``round_index``."""
        if self.batch_rng is not None:
            return self.batch_rng(round_index, client)
        return np.random.default_rng([self.seed, round_index, 3, client])

    def weight(self, client: int) -> float:
        """Return ``client``'s FedAvg weight (without a transform)."""
        if self.weights is not None:
            return float(self.weights[client])
        return float(len(self.examples[client]))


CohortSource = Callable[[Context], CohortNode]
"""``load(context)``: build the node's :class:`CohortNode` (e.g. from ``context.node_config``)."""


@dataclass(frozen=True)
class CohortRequest:
    """The server's cohort message, checked."""

    round: int
    clients: tuple[int, ...]
    global_vector: np.ndarray
    vector_size: int


def _integer(record: ConfigRecord, key: str, what: str) -> int:
    value = record.get(key)
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ProtocolError(f"{what}: field {key!r} must be an integer; got {value!r}.")
    return check_int(value, f"{what}: field {key!r}")


def _client_ids(record: ConfigRecord, key: str, what: str) -> tuple[int, ...]:
    raw = record.get(key)
    if not isinstance(raw, list) or not raw or not all(
        isinstance(c, int) and not isinstance(c, bool) and c >= 0 for c in raw
    ):
        raise ProtocolError(f"{what}: {key!r} must be a non-empty list of client ids >= 0.")
    if len(raw) > MAX_COHORT_CLIENTS or len(set(raw)) != len(raw):
        raise ProtocolError(f"{what}: {key!r} must name at most {MAX_COHORT_CLIENTS} distinct "
                            "clients.")
    return tuple(int(c) for c in raw)


def _vector(records: Mapping[str, ArrayRecord], name: str, array: str, size: int,
            what: str) -> np.ndarray:
    if name not in records or array not in records[name]:
        raise ProtocolError(f"{what} has no {name!r} ArrayRecord with array {array!r}.")
    vector = records[name][array].numpy()
    if vector.ndim != 1 or vector.size != size or vector.dtype.kind != "f":
        raise ProtocolError(
            f"{what}: {name!r} must be a 1-D float vector of {size} entries; got dtype "
            f"{vector.dtype} and shape {vector.shape}.")
    if not np.all(np.isfinite(vector)):
        raise ProtocolError(f"{what}: {name!r} holds non-finite values.")
    return vector


def read_cohort_request(content: RecordDict) -> CohortRequest:
    """Return the checked :class:`CohortRequest` in a server → node cohort message."""
    what = "the cohort message"
    if COHORT_RECORD not in content.config_records:
        raise ProtocolError(
            f"{what} has no {COHORT_RECORD!r} ConfigRecord; it was not sent by "
            "run_cohort_round (or by an incompatible fedpriv version).")
    record = content.config_records[COHORT_RECORD]
    version = _integer(record, "version", what)
    if version != COHORT_WIRE_VERSION:
        raise ProtocolError(
            f"{what} uses wire version {version}; this node speaks {COHORT_WIRE_VERSION}. "
            "Install the same fedpriv version on the server and every node.")
    round_index = _integer(record, "round", what)
    if round_index < 0:
        raise ProtocolError(f"{what}: the round must be >= 0; got {round_index}.")
    size = _integer(record, "vector-size", what)
    if size < 1:
        raise ProtocolError(f"{what}: the vector size must be >= 1; got {size}.")
    clients = _client_ids(record, "clients", what)
    vector = _vector(content.array_records, GLOBAL_RECORD, GLOBAL_ARRAY, size, what)
    return CohortRequest(round_index, clients, vector, size)


class CohortClient:
    """A ClientApp function that trains this node's cohort of clients (see module docstring).

    ``load(context)`` returns the node's :class:`CohortNode`; it is called once
    per (run, node) in this process and cached, at most ``cache_size`` nodes
    (a simulation worker serves many nodes: let ``load`` share one model among
    them).  A deployment starts a fresh ``flwr-clientapp`` process per message,
    so there it runs every round: keep it cheap or the model on the node's disk.

    Raises (Flower turns it into the error reply the server counts as the node's
    clients dropping): :class:`ProtocolError` for a malformed message, a client
    this node does not host, a global vector of another size than the node's
    adapter, a replayed round; :class:`ConfigError` for a DP mismatch.
    """

    def __init__(self, load: CohortSource, *, cache_size: int = 4) -> None:
        if not callable(load):
            raise ConfigError("CohortClient needs load(context) -> CohortNode.")
        if cache_size < 1:
            raise ConfigError(f"cache_size must be >= 1; got {cache_size}.")
        self._load = load
        self._cache_size = cache_size
        self._nodes: OrderedDict[tuple[int, int], CohortNode] = OrderedDict()

    def node(self, context: Context) -> CohortNode:
        """Return the node's :class:`CohortNode` (loaded once per run and node, then cached)."""
        key = (int(context.run_id), int(context.node_id))
        if key in self._nodes:
            self._nodes.move_to_end(key)
            return self._nodes[key]
        from fedpriv.train.batched import BatchedClientTrainer

        node = self._load(context)
        if not isinstance(node, CohortNode) or not isinstance(node.trainer,
                                                              BatchedClientTrainer):
            raise ConfigError(
                f"load(context) must return a CohortNode holding a BatchedClientTrainer; got "
                f"{type(node).__name__}.")
        self._nodes[key] = node
        while len(self._nodes) > self._cache_size:
            self._nodes.popitem(last=False)
        return node

    def __call__(self, message: Message, context: Context) -> Message:
        """Train the clients the message names; reply with their weighted sum and losses."""
        start = time.perf_counter()
        request = read_cohort_request(message.content)
        node = self.node(context)
        unknown = sorted(set(request.clients) - set(node.examples))
        if unknown:
            raise ProtocolError(
                f"node {context.node_id} hosts no data for clients {unknown[:20]}"
                f"{' …' if len(unknown) > 20 else ''}; give run_cohort_round an assignment that "
                "sends each client to the node holding its data.")
        if request.vector_size != node.trainer.adapter_values:
            raise ProtocolError(
                f"the global vector has {request.vector_size} entries but node "
                f"{context.node_id}'s adapter has {node.trainer.adapter_values}; give the server "
                "and every node the same model and LoRA settings.")
        server_dp_record(message, node=f"node {context.node_id}",
                         local="user" if isinstance(node.transform, UserDPTransform) else "none")
        start_round(
            context, COHORT_STARTED_RECORD, request.round,
            f"node {context.node_id} already trained round {{highest}}; round {{round}} is "
            "refused (a replayed round would train the same clients with the same generators "
            "again). The server must number rounds increasingly.")
        summed, weight, losses = self._train(node, request, CohortRound(
            request.round, message, context))
        reply = RecordDict()
        reply.array_records[COHORT_SUM_RECORD] = ArrayRecord({COHORT_SUM_ARRAY: Array(summed)})
        reply.config_records[COHORT_REPLY_RECORD] = ConfigRecord({
            "round": request.round, "clients": list(request.clients), "weight": weight,
            "count": len(request.clients), "losses": losses,
            "seconds": time.perf_counter() - start,
        })
        return Message(reply, reply_to=message)

    @staticmethod
    def _train(node: CohortNode, request: CohortRequest, cohort: CohortRound,
               ) -> tuple[np.ndarray, float, list[float]]:
        from fedpriv.train.batched import ClientJob

        trained = [c for c in request.clients if node.examples[c]]
        jobs = [ClientJob(
            client=c, examples=node.examples[c], rng=node.generator(request.round, c),
            noise=None if node.noise is None or node.dp is None else node.noise(
                request.round, c),
            nominal_size=None if node.nominal_sizes is None else node.nominal_sizes[c],
        ) for c in trained]
        global_vector = request.global_vector.astype(np.float32)
        outputs = node.trainer.train(jobs, global_vector, node.settings, dp=node.dp)
        local = {c: out for c, out in zip(trained, outputs, strict=True)}
        summed: np.ndarray | None = None
        total = 0.0
        losses: list[float] = []
        for c in request.clients:
            if c in local:  # a client without examples keeps the global adapter
                vector, result = local[c]
                delta = vector.astype(np.float64) - request.global_vector.astype(np.float64)
                losses.append(float(result.mean_loss))
            else:
                delta = np.zeros(request.vector_size)
                losses.append(float("nan"))
            if node.transform is not None:
                update, weight = node.transform(cohort, c, delta)
            else:
                update, weight = delta, node.weight(c)
            update = np.asarray(update, dtype=np.float64)
            if not (math.isfinite(weight) and weight >= 0):
                raise ConfigError(f"client {c}'s FedAvg weight must be finite and >= 0; got "
                                  f"{weight!r}.")
            if summed is None:
                summed = np.zeros(update.shape, dtype=np.float64)
            if update.shape != summed.shape or update.ndim != 1:
                raise ConfigError(
                    f"client {c}'s transformed update has shape {update.shape}, the cohort's "
                    f"others {summed.shape}; a transform must give every client one length.")
            summed += float(weight) * update
            total += float(weight)
        assert summed is not None  # the request names at least one client
        return summed, total, losses


def cohort_client_app(load: CohortSource, *, cache_size: int = 4) -> ClientApp:
    """Return a ClientApp whose ``train.fedpriv_cohort`` handler is a :class:`CohortClient`.

    To add cohort rounds to an existing ClientApp, register the handler yourself:
    ``app.train("fedpriv_cohort")(CohortClient(load))``.
    """
    app = ClientApp()
    app.train(COHORT_MESSAGE_TYPE.split(".", 1)[1])(CohortClient(load, cache_size=cache_size))
    return app


# ====================================================================== server side

def split_clients(
    clients: Iterable[int], node_ids: Iterable[int], *,
    assignment: Mapping[int, int] | None = None,
) -> dict[int, tuple[int, ...]]:
    """Return node id → the clients it trains this round (nodes with none left out).

    Without ``assignment``: the clients, sorted, in contiguous chunks over the
    nodes in sorted node-id order, sizes differing by at most one (for nodes that
    all hold every client's data).  With ``assignment`` (client → node id): each
    client to its node; raises :class:`ConfigError` when a client has none or its
    node is not among ``node_ids``.
    """
    ordered = sorted({int(c) for c in clients})
    nodes = sorted({int(n) for n in node_ids})
    if not nodes:
        raise ConfigError("a cohort round needs at least one node.")
    if assignment is None:
        chunks = np.array_split(np.asarray(ordered, dtype=np.int64), len(nodes))
        return {n: tuple(int(c) for c in chunk) for n, chunk in zip(nodes, chunks, strict=True)
                if chunk.size}
    missing = [c for c in ordered if c not in assignment]
    if missing:
        raise ConfigError(f"clients {missing[:20]} have no node in the assignment; map every "
                          "client of the round to the node holding its data.")
    absent = sorted({int(assignment[c]) for c in ordered} - set(nodes))
    if absent:
        raise ConfigError(f"the assignment names nodes {absent} that are not among the round's "
                          f"nodes {nodes}; wait for them (wait_for_nodes) or reassign.")
    out: dict[int, list[int]] = {}
    for c in ordered:
        out.setdefault(int(assignment[c]), []).append(c)
    return {n: tuple(out[n]) for n in sorted(out)}


@dataclass(frozen=True)
class CohortRoundResult:
    """What :func:`run_cohort_round` produced."""

    aggregate: np.ndarray | None
    """The weighted mean ``Σ sums / Σ weights`` (float64) over the trained clients; ``None``
    when no node answered or the total weight is 0."""
    total_weight: float
    trained: tuple[int, ...]
    """Clients whose update is in ``aggregate``, sorted."""
    dropped: Mapping[int, str]
    """Client → why it is not (its node's error reply, timeout or malformed reply)."""
    losses: Mapping[int, float]
    """Trained client → its mean local loss (NaN for a client without examples)."""
    assignment: Mapping[int, int]
    """Client → the node id it was sent to."""
    node_errors: Mapping[int, str] = field(default_factory=dict)
    """Node id → why its clients dropped."""
    node_seconds: Mapping[int, float] = field(default_factory=dict)
    """Node id → the seconds it reported for its cohort (loading and training)."""

    def apply(self, global_vector: np.ndarray, server_lr: float = 1.0) -> np.ndarray:
        """Return the FedAvg step ``global + server_lr · aggregate`` (unchanged without one).

        Without DP only; under user-level DP pass ``aggregate`` and ``total_weight``
        to :func:`fedpriv.dp.rounds.server_mean` instead.
        """
        if self.aggregate is None:
            return global_vector
        if self.aggregate.shape != global_vector.shape:
            raise ConfigError(
                f"the aggregate has {self.aggregate.size} entries, the global vector "
                f"{global_vector.size}: a user-level DP round's step is server_mean's.")
        step = server_lr * self.aggregate
        return global_vector + step.astype(global_vector.dtype)


@dataclass(frozen=True)
class CohortReply:
    """A node's cohort reply, checked (:func:`read_cohort_reply`)."""

    summed: np.ndarray
    weight: float
    losses: tuple[float, ...]
    seconds: float


def read_cohort_reply(content: RecordDict, *, round_index: int, clients: tuple[int, ...],
                      size: int, node: str) -> CohortReply:
    """Return a node's checked cohort reply; raise :class:`ProtocolError` if malformed.

    It must answer ``round_index`` for exactly ``clients`` (in that order), with a
    finite weight ``>= 0``, one loss per client and a finite float sum of ``size``.
    """
    what = f"the cohort reply of {node}"
    if COHORT_REPLY_RECORD not in content.config_records:
        raise ProtocolError(f"{what} has no {COHORT_REPLY_RECORD!r} ConfigRecord.")
    record = content.config_records[COHORT_REPLY_RECORD]
    answered = (_integer(record, "round", what), _client_ids(record, "clients", what))
    if answered != (round_index, clients) or _integer(record, "count", what) != len(clients):
        raise ProtocolError(f"{what} answers round {answered[0]} for other clients than it was "
                            "sent.")
    weight = record.get("weight")
    if (isinstance(weight, bool) or not isinstance(weight, numbers.Real)
            or not math.isfinite(weight) or weight < 0):
        raise ProtocolError(f"{what}: 'weight' must be a finite number >= 0; got {weight!r}.")
    losses = record.get("losses")
    if not isinstance(losses, list) or len(losses) != len(clients) or not all(
            isinstance(v, float) for v in losses):
        raise ProtocolError(f"{what}: 'losses' must hold one float per client.")
    seconds = record.get("seconds", 0.0)
    if isinstance(seconds, bool) or not isinstance(seconds, numbers.Real) or not (
            0.0 <= float(seconds) <= 86_400.0):
        raise ProtocolError(f"{what}: 'seconds' must be a number in [0, 86400].")
    summed = _vector(content.array_records, COHORT_SUM_RECORD, COHORT_SUM_ARRAY, size, what)
    return CohortReply(summed.astype(np.float64), float(weight),
                        tuple(float(v) for v in losses), float(seconds))


def run_cohort_round(
    grid: Grid,
    node_ids: Iterable[int],
    clients: Iterable[int],
    global_vector: np.ndarray,
    round_index: int,
    *,
    assignment: Mapping[int, int] | None = None,
    user_dp: UserLevelDP | None = None,
    application: RecordDict | None = None,
    timeout: float = DEFAULT_PHASE_TIMEOUT,
    poll_interval: float = DEFAULT_POLL_INTERVAL,
) -> CohortRoundResult:
    """Train ``clients`` from ``global_vector`` on the cohort nodes; return their FedAvg mean.

    A plain FedAvg round with **no secure aggregation**: each node replies with
    the weighted sum of its own clients' updates, which the server sees in the
    clear (see the module docstring).  The clients are split over ``node_ids``
    by :func:`split_clients` (``assignment``: client → node id, when nodes hold
    different clients' data); one :data:`COHORT_MESSAGE_TYPE` message per node
    with clients carries round ``round_index``, its client ids and the global
    vector (plus ``application``'s records, under names not starting with
    ``fedpriv.``).  Replies are collected for up to ``timeout`` seconds.  A node
    that sends Flower's error reply (its ClientApp raised, or it is
    unavailable), does not answer in time, or sends a malformed reply
    (:func:`read_cohort_reply`) has all its clients dropped; the mean is over
    the clients of the nodes that answered.

    With ``user_dp`` the message carries the round's clip bound, nodes must clip
    with :class:`UserDPTransform`, the sums have the protocol vector's length,
    and ``aggregate`` / ``total_weight`` go to
    :func:`fedpriv.dp.rounds.server_mean` for the noised step.  Without it use
    :meth:`CohortRoundResult.apply`.
    """
    for name, value in (("timeout", timeout), ("poll_interval", poll_interval)):
        if not value > 0:
            raise ConfigError(f"{name} must be > 0 seconds; got {value!r}.")
    if round_index < 0:
        raise ConfigError(f"round_index must be >= 0; got {round_index}.")
    global_vector = np.asarray(global_vector)
    if global_vector.ndim != 1 or not global_vector.size or global_vector.dtype.kind != "f":
        raise ConfigError("the global vector must be a non-empty 1-D float array.")
    chunks = split_clients(clients, node_ids, assignment=assignment)
    size = protocol_vector_size(global_vector.size, user_dp=user_dp)
    content = RecordDict()
    for name, record in (application.items() if application is not None else ()):
        if name.startswith("fedpriv."):
            raise ConfigError(f"application record {name!r} uses the reserved prefix "
                              "'fedpriv.'; rename it.")
        content[name] = record
    content.array_records[GLOBAL_RECORD] = ArrayRecord(
        {GLOBAL_ARRAY: Array(np.ascontiguousarray(global_vector))})
    if user_dp is not None:
        content.config_records[DP_RECORD] = dp_record(user_dp, None)
    outgoing: dict[int, Message] = {}
    for node, chunk in chunks.items():
        message_content = RecordDict(dict(content.items()))
        message_content.config_records[COHORT_RECORD] = ConfigRecord({
            "version": COHORT_WIRE_VERSION, "round": round_index, "clients": list(chunk),
            "vector-size": global_vector.size,
        })
        outgoing[node] = Message(message_content, node, COHORT_MESSAGE_TYPE, ttl=timeout,
                                 group_id=str(round_index))
    replies, failures = _exchange(grid, outgoing, timeout, poll_interval)
    summed = np.zeros(size, dtype=np.float64)
    total = 0.0
    trained: list[int] = []
    losses: dict[int, float] = {}
    dropped: dict[int, str] = {}
    node_errors: dict[int, str] = {}
    node_seconds: dict[int, float] = {}
    for node, chunk in chunks.items():
        reason = failures.get(node)
        reply = replies.get(node)
        if reply is not None and reply.has_error():
            reason = _short(f"node error {reply.error.code}: {reply.error.reason}")
        elif reply is not None:
            try:
                parsed = read_cohort_reply(reply.content, round_index=round_index, clients=chunk,
                                           size=size, node=f"node {node}")
            except ProtocolError as err:
                reason = _short(f"bad reply: {err}")
            except Exception as err:  # any failure on a node's reply is the node's
                reason = _short(f"bad reply: {type(err).__name__} reading it")
            else:
                summed += parsed.summed
                total += parsed.weight
                trained.extend(chunk)
                losses.update(zip(chunk, parsed.losses, strict=True))
                node_seconds[node] = parsed.seconds
        if reason is None and reply is None:  # pragma: no cover - _exchange reports it
            reason = "no reply"
        if reason is not None:
            node_errors[node] = reason
            dropped.update(dict.fromkeys(chunk, reason))
            logger.warning("round %d: node %d's %d clients dropped: %s", round_index, node,
                           len(chunk), reason)
    aggregate = summed / total if trained and total > 0 else None
    return CohortRoundResult(
        aggregate=aggregate, total_weight=total, trained=tuple(sorted(trained)),
        dropped=MappingProxyType(dropped), losses=MappingProxyType(losses),
        assignment=MappingProxyType({c: n for n, chunk in chunks.items() for c in chunk}),
        node_errors=MappingProxyType(node_errors), node_seconds=MappingProxyType(node_seconds),
    )


__all__ = [
    "COHORT_MESSAGE_TYPE",
    "COHORT_RECORD",
    "COHORT_REPLY_RECORD",
    "COHORT_STARTED_RECORD",
    "COHORT_SUM_ARRAY",
    "COHORT_SUM_RECORD",
    "COHORT_WIRE_VERSION",
    "CohortClient",
    "CohortNode",
    "CohortReply",
    "CohortRequest",
    "CohortRound",
    "CohortRoundResult",
    "CohortSource",
    "UpdateTransform",
    "UserDPTransform",
    "cohort_client_app",
    "read_cohort_reply",
    "read_cohort_request",
    "run_cohort_round",
    "split_clients",
]
