"""Cohort nodes over Flower: many simulated clients per node, trained batched, FedAvg-summed.

Every round runs through :class:`~fedpriv.integrations.flower.LoopbackGrid`, so
messages and node contexts pass Flower's protobuf serialization.  The reference
is the in-process computation: each client trained alone with
:func:`~fedpriv.train.local.train_local` from the same global adapter and the
same batch generator (``default_rng([seed, round, 3, client])``, as
``FederatedTrainer`` keys it), then the FedAvg mean weighted by example count.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
import torch

pytest.importorskip("flwr")

from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, RecordDict

from fedpriv.data import generate_client_records
from fedpriv.dp.rounds import protocol_vector, server_mean
from fedpriv.dp.user import UserDPSettings, UserLevelDP
from fedpriv.errors import ConfigError, ProtocolError
from fedpriv.integrations.flower import (
    COHORT_MESSAGE_TYPE,
    CohortClient,
    CohortNode,
    LoopbackGrid,
    UserDPTransform,
    run_cohort_round,
    split_clients,
)
from fedpriv.integrations.flower.cohort import (
    COHORT_REPLY_RECORD,
    COHORT_SUM_ARRAY,
    COHORT_SUM_RECORD,
    read_cohort_reply,
)
from fedpriv.lora import LoraSettings
from fedpriv.models import (
    BUILTIN_MODEL,
    attach_lora,
    get_adapter_vector,
    load_base_model,
    set_adapter_vector,
    trainable_parameters,
)
from fedpriv.train.batched import BatchedClientTrainer
from fedpriv.train.batching import TokenIds, encode_texts
from fedpriv.train.local import LocalTrainingSettings, train_local

SEED = 11
ROUND = 0
SIZES = (3, 9, 5, 12, 4, 7, 6, 10)  # eight clients of different sizes: the weights matter
SETTINGS = LocalTrainingSettings(batch_size=4, lr=3e-3, steps=2)
TOL = 2e-5


@dataclass
class Federation:
    trainer: BatchedClientTrainer
    clients: dict[int, list[TokenIds]]
    start: np.ndarray
    deltas: dict[int, np.ndarray]
    """Client → its in-process update (train_local) from ``start`` in round ``ROUND``."""
    losses: dict[int, float]

    def mean(self, clients: Sequence[int], weights: Mapping[int, float] | None = None,
             ) -> np.ndarray:
        w = {c: float(len(self.clients[c])) for c in clients} if weights is None else weights
        total = sum(w[c] for c in clients)
        return sum(w[c] * self.deltas[c] for c in clients) / total  # type: ignore[return-value]

    def load(self, hosts: Mapping[int, Sequence[int]] | None = None,
             **node: object) -> Callable[[Context], CohortNode]:
        """Return a loader; ``hosts``: node id → the clients whose data it holds (default: all)."""

        def load(context: Context) -> CohortNode:
            held = self.clients if hosts is None else {
                c: self.clients[c] for c in hosts[context.node_id]}
            return CohortNode(self.trainer, held, SETTINGS, seed=SEED, **node)

        return load


@pytest.fixture(scope="module")
def fed() -> Federation:
    torch.manual_seed(0)
    base, tok = load_base_model(BUILTIN_MODEL)
    model = attach_lora(base, LoraSettings(rank=2, alpha=4.0, target_modules=("q_proj", "v_proj")),
                        seed=0)
    records = generate_client_records(len(SIZES), max(SIZES), seed=3)
    clients = {c: encode_texts(tok, [r.text for r in recs[:n]], 32)
               for c, (recs, n) in enumerate(zip(records, SIZES, strict=True))}
    start = get_adapter_vector(model)
    start = (start + np.random.default_rng(5).normal(0, 0.02, start.size)).astype(np.float32)
    params = trainable_parameters(model)
    deltas, losses = {}, {}
    for c, examples in clients.items():
        set_adapter_vector(model, start)
        result = train_local(model, params, examples, SETTINGS, pad_id=tok.pad_token_id,
                             device=torch.device("cpu"),
                             rng=np.random.default_rng([SEED, ROUND, 3, c]))
        deltas[c] = get_adapter_vector(model).astype(np.float64) - start
        losses[c] = result.mean_loss
    set_adapter_vector(model, start)
    trainer = BatchedClientTrainer(model, pad_id=tok.pad_token_id, device=torch.device("cpu"))
    return Federation(trainer, clients, start, deltas, losses)


def test_cohort_round_equals_in_process_fedavg(fed: Federation) -> None:
    """3 nodes host 8 clients; the round's mean is the in-process FedAvg mean."""
    grid = LoopbackGrid(CohortClient(fed.load()), [1, 2, 3])
    result = run_cohort_round(grid, grid.get_node_ids(), range(8), fed.start, ROUND)
    assert result.trained == tuple(range(8)) and not result.dropped and not result.node_errors
    assert dict(result.assignment) == {0: 1, 1: 1, 2: 1, 3: 2, 4: 2, 5: 2, 6: 3, 7: 3}
    expected = fed.mean(range(8))
    assert result.aggregate is not None and result.aggregate.dtype == np.float64
    assert np.max(np.abs(result.aggregate - expected)) < TOL
    assert result.total_weight == pytest.approx(sum(SIZES))
    for c in range(8):
        assert result.losses[c] == pytest.approx(fed.losses[c], rel=1e-4)
    # The comparison discriminates: real training, and the weights change the mean.
    assert np.max(np.abs(expected)) > 1e-3
    unweighted = fed.mean(range(8), dict.fromkeys(range(8), 1.0))
    assert np.max(np.abs(unweighted - expected)) > 100 * TOL
    new = result.apply(fed.start, server_lr=0.5)
    np.testing.assert_allclose(new, fed.start + 0.5 * result.aggregate, atol=1e-7)
    # Replaying the round is refused by every node (their Context.state remembers it).
    again = run_cohort_round(grid, grid.get_node_ids(), range(8), fed.start, ROUND)
    assert again.aggregate is None and set(again.dropped) == set(range(8))
    assert all("replayed" in reason for reason in again.dropped.values())


def test_nodes_hold_different_clients(fed: Federation) -> None:
    """Clients go to the node with their data; without an assignment the nodes refuse."""
    hosts = {1: [0, 2, 4, 6], 2: [1, 3, 5, 7]}
    grid = LoopbackGrid(CohortClient(fed.load(hosts)), hosts)
    chunked = run_cohort_round(grid, [1, 2], range(8), fed.start, ROUND)
    assert chunked.aggregate is None and chunked.trained == ()
    assert set(chunked.node_errors) == {1, 2}
    assert all("hosts no data for clients" in r for r in chunked.node_errors.values())
    assignment = {c: n for n, held in hosts.items() for c in held}
    result = run_cohort_round(grid, [1, 2], range(8), fed.start, ROUND, assignment=assignment)
    assert result.trained == tuple(range(8)) and dict(result.assignment) == assignment
    assert result.aggregate is not None
    assert np.max(np.abs(result.aggregate - fed.mean(range(8)))) < TOL


def test_failing_nodes_drop_their_clients(fed: Federation) -> None:
    """An offline node and a node whose loader raises: the mean is over the others' clients."""
    inner = fed.load()

    def load(context: Context) -> CohortNode:
        if context.node_id == 3:
            raise OSError("shard file missing")
        return inner(context)

    grid = LoopbackGrid(CohortClient(load), [1, 2, 3])
    grid.drop(2, round_index=ROUND, phase=0)
    result = run_cohort_round(grid, [1, 2, 3], range(8), fed.start, ROUND, timeout=5.0)
    assert result.trained == (0, 1, 2)
    assert set(result.dropped) == {3, 4, 5, 6, 7} and set(result.node_errors) == {2, 3}
    assert "offline" in result.dropped[4] and "shard file missing" in result.dropped[6]
    assert result.aggregate is not None
    assert np.max(np.abs(result.aggregate - fed.mean([0, 1, 2]))) < TOL
    assert result.total_weight == pytest.approx(sum(SIZES[:3]))


def test_a_node_sending_a_malformed_reply_is_dropped(fed: Federation) -> None:
    """A node whose sum has the wrong length loses its clients, never the round."""
    honest = CohortClient(fed.load())

    def app(message: Message, context: Context) -> Message:
        if context.node_id != 2:
            return honest(message, context)
        content = RecordDict()
        content.array_records[COHORT_SUM_RECORD] = ArrayRecord(
            {COHORT_SUM_ARRAY: Array(np.zeros(fed.start.size + 1))})
        content.config_records[COHORT_REPLY_RECORD] = ConfigRecord({
            "round": ROUND, "clients": [1], "weight": 1e9, "count": 1, "losses": [0.0],
            "seconds": 0.1})
        return Message(content, reply_to=message)

    grid = LoopbackGrid(app, [1, 2])
    result = run_cohort_round(grid, [1, 2], [0, 1], fed.start, ROUND)
    assert result.trained == (0,) and "bad reply" in result.dropped[1]
    assert result.aggregate is not None
    assert np.max(np.abs(result.aggregate - fed.deltas[0])) < TOL


def _reply(**fields: object) -> RecordDict:
    record = {"round": 4, "clients": [2, 5], "weight": 3.0, "count": 2, "losses": [1.0, 2.0],
              "seconds": 0.5}
    record.update(fields)
    content = RecordDict()
    content.config_records[COHORT_REPLY_RECORD] = ConfigRecord(record)  # type: ignore[arg-type]
    content.array_records[COHORT_SUM_RECORD] = ArrayRecord({COHORT_SUM_ARRAY: Array(np.ones(6))})
    return content


@pytest.mark.parametrize(("fields", "match"), [
    ({"round": 3}, "other clients"),
    ({"clients": [2, 6]}, "other clients"),
    ({"clients": [5, 2]}, "other clients"),
    ({"count": 3}, "other clients"),
    ({"weight": -1.0}, "weight"),
    ({"weight": float("inf")}, "weight"),
    ({"losses": [1.0]}, "losses"),
    ({"seconds": 1e9}, "seconds"),
])
def test_malformed_replies_are_refused(fields: dict[str, object], match: str) -> None:
    parsed = read_cohort_reply(_reply(), round_index=4, clients=(2, 5), size=6, node="n")
    assert parsed.weight == 3.0 and parsed.losses == (1.0, 2.0)
    with pytest.raises(ProtocolError, match=match):
        read_cohort_reply(_reply(**fields), round_index=4, clients=(2, 5), size=6, node="n")
    with pytest.raises(ProtocolError, match="1-D float vector of 7"):
        read_cohort_reply(_reply(), round_index=4, clients=(2, 5), size=7, node="n")


def _request(fed: Federation, *, round_index: Any = 2, clients: Sequence[int] = (0, 1),
             size: int | None = None, vector: np.ndarray | None = None,
             dp: str | None = None) -> RecordDict:
    vector = fed.start if vector is None else vector
    content = RecordDict()
    content.config_records["fedpriv.cohort"] = ConfigRecord({
        "version": 1, "round": round_index, "clients": list(clients),
        "vector-size": vector.size if size is None else size})
    content.array_records["global"] = ArrayRecord({"vector": Array(vector)})
    if dp is not None:
        content.config_records["fedpriv.dp"] = ConfigRecord({"mode": dp, "clip": 1.0})
    return content


def test_bad_messages_get_error_replies(fed: Federation) -> None:
    """The node answers a malformed or unserviceable message with an error that says why."""
    grid = LoopbackGrid(CohortClient(fed.load({1: [0, 1]})), [1])

    def send(content: RecordDict) -> Message:
        [reply] = grid.send_and_receive([Message(content, 1, COHORT_MESSAGE_TYPE)])
        return reply

    no_record = RecordDict()
    no_record.array_records["global"] = ArrayRecord({"vector": Array(fed.start)})
    nan = fed.start.copy()
    nan[3] = np.nan
    bad = {
        "has no 'fedpriv.cohort' ConfigRecord": no_record,
        "field 'round' must be an integer": _request(fed, round_index=True),
        "must be >= 0": _request(fed, round_index=-1),
        "distinct": _request(fed, clients=(0, 0)),
        "non-empty list of client ids": _request(fed, clients=()),
        "hosts no data for clients \\[7\\]": _request(fed, clients=(0, 7)),
        "1-D float vector": _request(fed, size=fed.start.size + 1),
        "adapter has": _request(fed, vector=np.zeros(fed.start.size + 1, np.float32)),
        "non-finite": _request(fed, vector=nan),
        "DP mode 'user'": _request(fed, dp="user"),
    }
    for match, content in bad.items():
        reply = send(content)
        assert reply.has_error(), match
        assert re.search(match, reply.error.reason or ""), reply.error.reason
    ok = send(_request(fed, round_index=2))
    assert not ok.has_error()
    parsed = read_cohort_reply(ok.content, round_index=2, clients=(0, 1),
                               size=fed.start.size, node="1")
    assert parsed.weight == pytest.approx(SIZES[0] + SIZES[1])
    replay = send(_request(fed, round_index=2))
    assert replay.has_error() and "replayed" in (replay.error.reason or "")


def test_user_level_dp_cohort_round_matches_the_loop_step(fed: Federation) -> None:
    """Nodes clip each client (adaptive bit included), weight 1; the server noises the sum."""
    settings = UserDPSettings(noise_multiplier=0.5, clip=0.02, adaptive_clip=True)

    def user_dp() -> UserLevelDP:
        return UserLevelDP(settings, num_clients=8, clients_per_round=8, seed=None)

    server_dp = user_dp()
    server_dp.restore(0.015)  # the bound moved: the nodes must clip to the server's
    grid = LoopbackGrid(CohortClient(fed.load(transform=UserDPTransform(user_dp()))), [1, 2])
    result = run_cohort_round(grid, [1, 2], range(8), fed.start, ROUND, user_dp=server_dp)
    reference = user_dp()
    reference.restore(0.015)
    vectors = [protocol_vector(fed.deltas[c], round_index=ROUND, client=c, user_dp=reference)
               for c in range(8)]
    assert result.aggregate is not None and result.aggregate.size == fed.start.size + 1
    assert result.total_weight == 8.0
    assert np.max(np.abs(result.aggregate - np.mean(vectors, axis=0))) < TOL
    assert any(np.linalg.norm(fed.deltas[c]) > 0.015 for c in range(8))  # clipping acted
    mean, dp_round = server_mean(result.aggregate, result.total_weight,
                                 update_size=fed.start.size, round_index=ROUND, user_dp=server_dp)
    assert mean.shape == fed.start.shape and dp_round is not None
    with pytest.raises(ConfigError, match="server_mean"):
        result.apply(fed.start)
    # A server without user-level DP: the clipping nodes refuse the round.
    plain = run_cohort_round(grid, [1, 2], range(8), fed.start, ROUND + 1)
    assert plain.aggregate is None and "DP mode 'none'" in plain.node_errors[1]


def test_split_clients() -> None:
    assert split_clients(range(8), [30, 10, 20]) == {10: (0, 1, 2), 20: (3, 4, 5), 30: (6, 7)}
    assert split_clients([5, 1], [1, 2, 3]) == {1: (1,), 2: (5,)}
    assert split_clients([4, 1, 2], [7, 8], assignment={1: 8, 2: 7, 4: 8}) == {
        7: (2,), 8: (1, 4)}
    with pytest.raises(ConfigError, match="no node in the assignment"):
        split_clients([1, 2], [7], assignment={1: 7})
    with pytest.raises(ConfigError, match="not among the round's nodes"):
        split_clients([1], [7], assignment={1: 9})
    with pytest.raises(ConfigError, match="at least one node"):
        split_clients([1], [])
