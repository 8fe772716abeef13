"""Attack 4 of issue 15: one hostile client must not stop the server.

Before the network boundary existed, a message that decoded but carried an
out-of-range or mistyped field (a round number with 5000 digits, a share map with
a string key, an array with 65 dimensions or a zero-size array with a huge other
dimension) raised ``ValueError`` / ``TypeError`` inside the server and killed the
Flower ServerApp.  Each case here sends one such message from one client, through
the in-process driver (hostile message *objects*) and through Flower (hostile
*bytes* in the node's reply), and checks that the client is dropped and counted,
and that the round completes with exactly what a dropout of that client at that
phase gives: the sum over the others.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import pytest

pytest.importorskip("flwr")

from flwr.app import Context, Message

from fedpriv.errors import ProtocolError
from fedpriv.integrations import codec
from fedpriv.integrations.flower import (
    FedprivClient,
    FedprivWorkflow,
    LocalUpdate,
    LoopbackGrid,
    run_protocol_round,
)
from fedpriv.protocols import ClientInput, RoundContext, run_round
from fedpriv.protocols import Message as ProtocolMessage
from fedpriv.protocols.base import AggregationResult
from hostile import (
    WithHostileClient,
    forge,
    hostile_node,
    protocol_named,
    raw_array,
    raw_int,
    replace_field,
)

HOSTILE = 2
"""The client that sends the hostile message (in the ckks release phases: :data:`HOLDER`)."""
HOLDER = 0
"""The ckks key holder the server asks first (the lowest-id contributor)."""
CTX = RoundContext(round=3, participants=range(5), vector_size=40)

HUGE = 10**4999 + 7
"""A round number with 5000 digits (str() of it raises ValueError in Python ≥ 3.11)."""


def _round_field(message: ProtocolMessage) -> str:
    return "round" if hasattr(message, "round") else "sender"


def _array_field(message: ProtocolMessage) -> str:
    for name in ("update", "masked", "units"):
        if hasattr(message, name):
            return name
    raise AssertionError(f"{type(message).__name__} has no array field")


def _map_field(message: ProtocolMessage) -> str:
    for name in ("ciphertexts", "self_mask_shares"):
        if hasattr(message, name):
            return name
    raise AssertionError(f"{type(message).__name__} has no share map")


def _string_keys(message: ProtocolMessage) -> dict[Any, Any]:
    shares = dict(getattr(message, _map_field(message)))
    first = min(shares)
    shares[str(first)] = shares.pop(first)
    return shares


# Each hostile kind: (the message object a hostile in-process client sends,
#                     the bytes a hostile Flower node sends).
Kind = tuple[Callable[[ProtocolMessage], ProtocolMessage], Callable[[ProtocolMessage], bytes]]
KINDS: dict[str, Kind] = {
    "round-5000-digits": (
        lambda m: forge(m, **{_round_field(m): HUGE}),
        lambda m: replace_field(m, _round_field(m), raw_int(HUGE)),
    ),
    "share-map-string-key": (
        lambda m: forge(m, **{_map_field(m): _string_keys(m)}),
        lambda m: codec.encode_message(forge(m, **{_map_field(m): _string_keys(m)})),
    ),
    "array-ndim-65": (  # numpy itself stops at 64 dimensions: the object gets 9 (> MAX_NDIM)
        lambda m: forge(m, **{_array_field(m): np.zeros((1,) * 9, dtype=np.uint64)}),
        lambda m: replace_field(m, _array_field(m), raw_array("u8", (1,) * 65, bytes(8))),
    ),
    "zero-size-huge-shape": (
        lambda m: forge(m, **{_array_field(m): np.empty((0, 2**40), dtype=np.uint64)}),
        lambda m: replace_field(m, _array_field(m), raw_array("u8", (0, 2**62, 2**62), b"")),
    ),
    "mistyped-field": (  # bytes where a key / ciphertext list / weight belongs, or vice versa
        lambda m: forge(m, **_mistyped(m)),
        lambda m: codec.encode_message(forge(m, **_mistyped(m))),
    ),
    "replayed-round": (
        lambda m: forge(m, round=m.round - 1),  # type: ignore[attr-defined]
        lambda m: codec.encode_message(forge(m, round=m.round - 1)),  # type: ignore[attr-defined]
    ),
    "wrong-length": (
        lambda m: forge(m, **{_array_field(m): getattr(m, _array_field(m))[:-1]}),
        lambda m: codec.encode_message(
            forge(m, **{_array_field(m): getattr(m, _array_field(m))[:-1]})),
    ),
    "garbage": (
        lambda m: forge(m, sender=f"{m.sender}"),
        lambda m: b"\x01D" + bytes(range(256)) * 3,
    ),
}


def _mistyped(message: ProtocolMessage) -> dict[str, Any]:
    for name, value in (("c_pk", "k" * 32), ("chunks", b"not a tuple"),
                        ("weight", "1.0"), ("self_mask_commitment", 7), ("masked", b"x" * 8),
                        ("units", [1, 2, 3]), ("self_mask_shares", [(0, b"s")])):
        if hasattr(message, name):
            return {name: value}
    raise AssertionError(f"no field to mistype in {type(message).__name__}")


# ------------------------------------------------------------------- the cases

CASES = [  # (protocol, phase of the hostile message, kind)
    *[("plain", 0, k) for k in ("round-5000-digits", "array-ndim-65", "zero-size-huge-shape",
                                "mistyped-field", "wrong-length", "garbage")],
    ("secagg", 0, "round-5000-digits"),
    ("secagg", 0, "mistyped-field"),
    ("secagg", 1, "share-map-string-key"),
    ("secagg", 1, "replayed-round"),
    ("secagg", 1, "garbage"),
    ("secagg", 2, "array-ndim-65"),
    ("secagg", 2, "zero-size-huge-shape"),
    ("secagg", 3, "round-5000-digits"),  # the ConsistencyCheck signature
    ("secagg", 3, "garbage"),
    ("secagg", 4, "share-map-string-key"),  # the unmasking shares
    ("secagg", 4, "round-5000-digits"),
    ("secagg", 4, "mistyped-field"),
    ("secagg+", 1, "share-map-string-key"),
    ("secagg+", 2, "array-ndim-65"),
    ("ckks", 0, "round-5000-digits"),
    ("ckks", 0, "mistyped-field"),
    ("ckks", 0, "garbage"),
    ("ckks", 1, "array-ndim-65"),
    ("ckks", 1, "zero-size-huge-shape"),
    ("ckks", 1, "wrong-length"),
    ("ckks", 1, "replayed-round"),
]
IDS = [f"{name}-phase{phase}-{kind}" for name, phase, kind in CASES]

def inputs_of(ctx: RoundContext) -> dict[int, ClientInput]:
    return {
        c: ClientInput((np.random.default_rng([7, c]).normal(size=ctx.vector_size) * 0.1)
                       .astype(np.float32), weight=(c + 1) / len(ctx.participants))
        for c in ctx.participants
    }


def honest_mean(inputs: Mapping[int, ClientInput], clients: tuple[int, ...]) -> np.ndarray:
    weights = np.array([inputs[c].weight for c in clients])
    updates = np.array([inputs[c].update.astype(np.float64) for c in clients])
    return (weights @ updates) / weights.sum()


def ckks_bound(protocol: Any, survivors: int, total_weight: float) -> float:
    """Return how far a released CKKS mean may be from the exact one (protocols/ckks.md)."""
    params = protocol.params
    release = params.release_bound(survivors)
    weight_slot = total_weight / protocol.config.max_weight * params.clip
    return float(2 * release * params.clip / (weight_slot - release))


def hostile_of(name: str, phase: int) -> int:
    """Who misbehaves: in ckks' release phases only the asked key holder sends anything."""
    return HOLDER if name == "ckks" and phase >= 1 else HOSTILE


def check_round(name: str, phase: int, result: AggregationResult,
                inputs: Mapping[int, ClientInput]) -> None:
    """Check that the hostile client was dropped at ``phase`` and the rest aggregated."""
    protocol = protocol_named(name)
    hostile = hostile_of(name, phase)
    assert set(result.rejected_clients) == {hostile}
    assert f"phase {phase}" in result.rejected_clients[hostile]
    reference = run_round(protocol, CTX, inputs, dropouts={hostile: phase})
    assert result.survivors == reference.survivors
    # Its input was already in the sum when it misbehaved:
    contributed = (name in ("secagg", "secagg+") and phase >= 3) or (name == "ckks" and phase >= 1)
    assert (hostile in result.survivors) == contributed
    exact = honest_mean(inputs, result.survivors)
    if name == "ckks":
        bound = ckks_bound(protocol, len(result.survivors), result.total_weight)
        assert np.max(np.abs(result.aggregate - exact)) <= bound
    else:
        np.testing.assert_array_equal(result.aggregate, reference.aggregate)
        np.testing.assert_allclose(result.aggregate, exact, atol=1e-5)


# ------------------------------------------------------------ in-process driver


@pytest.mark.parametrize(("name", "phase", "kind"), CASES, ids=IDS)
def test_in_process_driver_drops_the_hostile_client(name: str, phase: int, kind: str) -> None:
    inputs = inputs_of(CTX)
    hostile = WithHostileClient(protocol_named(name), hostile_of(name, phase), phase,
                                KINDS[kind][0])
    if releases_twice(name, phase):
        with pytest.raises(ProtocolError, match="second release"):
            run_round(hostile, CTX, inputs)
        return
    result = run_round(hostile, CTX, inputs)
    check_round(name, phase, result, inputs)


def releases_twice(name: str, phase: int) -> bool:
    """Whether replacing the hostile's message would need a second release of the round.

    A ckks key holder whose release is refused has already released (and recorded it);
    the next holder, sharing its ledger here, refuses a second release of the same
    round — by design, since two releases can expose a difference of sums
    (``protocols/ckks.md``).  So a garbled release aborts the round, and no key
    material or individual update leaves.
    """
    return name == "ckks" and phase >= 1


# ------------------------------------------------------------------ Flower path


def flower_grid(name: str, phase: int, make: Callable[[ProtocolMessage], bytes],
                inputs: Mapping[int, ClientInput]) -> tuple[LoopbackGrid, dict[int, int]]:
    def make_input(_m: Any, _c: Any, client_id: int, _ctx: RoundContext) -> LocalUpdate:
        return LocalUpdate(inputs[client_id])

    node_ids = {c: c + 1 for c in CTX.participants}
    app = hostile_node(FedprivClient(protocol_named(name), make_input),
                       node_ids[hostile_of(name, phase)], phase, make)
    return LoopbackGrid(app, node_ids.values()), node_ids


@pytest.mark.parametrize(("name", "phase", "kind"), CASES, ids=IDS)
def test_flower_server_drops_the_hostile_node(name: str, phase: int, kind: str) -> None:
    inputs = inputs_of(CTX)
    grid, node_ids = flower_grid(name, phase, KINDS[kind][1], inputs)
    if releases_twice(name, phase):
        with pytest.raises(ProtocolError):
            run_protocol_round(grid, protocol_named(name), CTX, node_ids)
        return
    flower = run_protocol_round(grid, protocol_named(name), CTX, node_ids)
    check_round(name, phase, flower.result, inputs)
    hostile = hostile_of(name, phase)
    assert flower.dropouts == {hostile: phase}
    assert flower.errors[hostile].startswith("bad reply")


@pytest.mark.parametrize("transport", ["in-process", "flower"])
def test_secagg_server_discards_a_masked_input_of_the_wrong_length(transport: str) -> None:
    """Checks that need the round's plan are the SecAgg server's: it drops the client too."""
    inputs = inputs_of(CTX)
    make_object, make_bytes = KINDS["wrong-length"]
    if transport == "in-process":
        result = run_round(WithHostileClient(protocol_named("secagg"), HOSTILE, 2, make_object),
                           CTX, inputs)
    else:
        grid, node_ids = flower_grid("secagg", 2, make_bytes, inputs)
        result = run_protocol_round(grid, protocol_named("secagg"), CTX, node_ids).result
    assert HOSTILE in result.view.rejected  # type: ignore[attr-defined]
    assert HOSTILE not in result.survivors and not result.rejected_clients
    np.testing.assert_allclose(result.aggregate, honest_mean(inputs, result.survivors), atol=1e-5)


def test_hostile_bytes_raise_protocol_error_only() -> None:
    """Every forged encoding above fails to decode with ProtocolError, nothing else."""
    inputs = inputs_of(CTX)
    message = protocol_named("secagg").client(0, CTX, inputs[0]).handle(0, None)
    assert message is not None
    for kind in ("round-5000-digits", "mistyped-field", "garbage"):
        with pytest.raises(ProtocolError):
            codec.decode_message(KINDS[kind][1](message))


def test_workflow_survives_a_hostile_node_and_aggregates_the_others() -> None:
    """A FedprivWorkflow round (what a ServerApp runs) completes without the hostile node."""
    name = "secagg+"
    size = CTX.vector_size
    deltas = {c: (np.random.default_rng(c).normal(size=size) * 0.05).astype(np.float32)
              for c in CTX.participants}

    def make_input(message: Any, _c: Any, client_id: int, ctx: RoundContext) -> LocalUpdate:
        return LocalUpdate(ClientInput(deltas[client_id], weight=1.0))

    node_ids = {c: c + 1 for c in CTX.participants}
    app = hostile_node(FedprivClient(protocol_named(name), make_input), node_ids[HOSTILE], 2,
                       KINDS["array-ndim-65"][1])
    grid = LoopbackGrid(app, node_ids.values())
    workflow = FedprivWorkflow(protocol_named(name))
    start = np.zeros(size, dtype=np.float32)
    first = workflow.round(grid, CTX.round, start, node_ids)
    assert first.aborted is None and first.flower is not None
    assert set(first.flower.result.rejected_clients) == {HOSTILE}
    others = [c for c in CTX.participants if c != HOSTILE]
    np.testing.assert_allclose(first.global_vector, np.mean([deltas[c] for c in others], axis=0),
                               atol=1e-5)
    # The next round runs as usual (the hostile node misbehaves again, and is dropped again).
    second = workflow.round(grid, CTX.round + 1, first.global_vector, node_ids)
    assert second.aborted is None


def test_too_many_hostile_clients_abort_the_round_not_the_workflow() -> None:
    """Below the threshold after the drops, the round aborts as for dropouts; nothing raises."""
    name = "secagg"
    ctx = RoundContext(round=0, participants=range(3), vector_size=8)
    inputs = inputs_of(ctx)

    def make_input(_m: Any, _c: Any, client_id: int, _ctx: RoundContext) -> LocalUpdate:
        return LocalUpdate(inputs[client_id])

    app: Callable[[Message, Context], Message] = FedprivClient(protocol_named(name), make_input)
    for node in (1, 2):  # two of three nodes send a 65-dimensional masked input
        app = hostile_node(app, node, 2, KINDS["array-ndim-65"][1])
    grid = LoopbackGrid(app, [1, 2, 3])
    workflow = FedprivWorkflow(protocol_named(name))
    start = np.zeros(ctx.vector_size, dtype=np.float32)
    outcome = workflow.round(grid, ctx.round, start, {0: 1, 1: 2, 2: 3})
    assert outcome.aborted is not None and "threshold" in outcome.aborted
    np.testing.assert_array_equal(outcome.global_vector, start)  # unchanged
    with pytest.raises(ProtocolError, match="threshold"):
        run_protocol_round(LoopbackGrid(app, [1, 2, 3]), protocol_named(name), ctx,
                           {0: 1, 1: 2, 2: 3})


@pytest.mark.slow
def test_audit_report_counts_the_rejected_clients(tiny_config: Any, tmp_path: Any) -> None:
    """report.json records, per round and per run, how many clients the boundary dropped."""
    import jsonschema

    from fedpriv.audits.config import apply_overrides
    from fedpriv.audits.report import report_schema
    from fedpriv.audits.runner import run_audit
    from fedpriv.train.loop import use_round_runner

    def runner(protocol: Any, ctx: RoundContext, inputs: Mapping[int, ClientInput], *,
               dropouts: Mapping[int, int] | None = None) -> AggregationResult:
        hostile = WithHostileClient(protocol, 1, 0, KINDS["array-ndim-65"][0])
        return run_round(hostile, ctx, inputs, dropouts=dropouts)

    config = apply_overrides(tiny_config, federation__rounds=2, attacks__inversion=False)
    with use_round_runner(runner):
        report = run_audit(config, tmp_path)
    jsonschema.validate(report, report_schema())
    (run,) = report["runs"]
    assert [h["rejected_clients"] for h in run["history"]] == [1] * len(run["history"])
    assert all(1 not in h["survivors"] for h in run["history"])
    assert run["protocol_stats"]["rejected_clients"] == len(run["history"]) == 2
