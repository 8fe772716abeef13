"""The plain protocol against a naive weighted-mean reference, its view and its cost."""

from __future__ import annotations

import doctest

import hypothesis.extra.numpy as hnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import fedpriv.protocols
from fedpriv.errors import ConfigError, ProtocolError
from fedpriv.protocols import ClientInput, PlainProtocol, RoundContext, create, run_round
from fedpriv.protocols.base import MESSAGE_HEADER_NBYTES
from fedpriv.protocols.plain import PlainUpdate, weighted_mean

Case = tuple[RoundContext, dict[int, ClientInput], set[int]]


@st.composite
def plain_rounds(draw: st.DrawFn) -> Case:
    """Draw 1–12 clients with random ids, float32 updates and weights, and whom to drop."""
    n = draw(st.integers(1, 12))
    size = draw(st.integers(1, 50))
    ids = draw(st.lists(st.integers(0, 10_000), min_size=n, max_size=n, unique=True))
    elements = st.floats(-1e3, 1e3, width=32)
    inputs = {
        c: ClientInput(
            draw(hnp.arrays(np.float32, size, elements=elements)),
            weight=draw(st.floats(1e-3, 1e4)),
        )
        for c in ids
    }
    dropped = set(draw(st.lists(st.sampled_from(ids), max_size=n - 1, unique=True)))
    ctx = RoundContext(round=draw(st.integers(0, 99)), participants=tuple(ids), vector_size=size)
    return ctx, inputs, dropped


def reference_mean(inputs: dict[int, ClientInput], clients: list[int]) -> np.ndarray:
    updates = np.stack([inputs[c].update.astype(np.float64) for c in clients])
    return np.average(updates, axis=0, weights=[inputs[c].weight for c in clients])


@settings(max_examples=150, deadline=None)
@given(plain_rounds())
def test_aggregate_is_the_weighted_mean(case: Case) -> None:
    ctx, inputs, _ = case
    res = run_round(create("plain"), ctx, inputs)
    assert res.survivors == ctx.participants
    assert res.aggregate.dtype == np.float32
    np.testing.assert_allclose(
        res.aggregate, reference_mean(inputs, list(ctx.participants)), rtol=1e-6, atol=1e-9
    )
    assert res.total_weight == pytest.approx(sum(i.weight for i in inputs.values()))


@settings(max_examples=150, deadline=None)
@given(plain_rounds())
def test_dropped_clients_are_left_out(case: Case) -> None:
    ctx, inputs, dropped = case
    res = run_round(create("plain"), ctx, inputs, dropouts=dict.fromkeys(dropped, 0))
    survivors = [c for c in ctx.participants if c not in dropped]
    assert res.survivors == tuple(survivors)
    assert res.view.survivors == tuple(survivors)
    assert res.view.dropped == tuple(sorted(dropped))
    np.testing.assert_allclose(
        res.aggregate, reference_mean(inputs, survivors), rtol=1e-6, atol=1e-9
    )
    assert res.total_weight == pytest.approx(sum(inputs[c].weight for c in survivors))

    # Cost: one PlainUpdate up per survivor, nothing down, nothing from dropped clients.
    for c in ctx.participants:
        expected = 0 if c in dropped else MESSAGE_HEADER_NBYTES + inputs[c].update.nbytes + 8
        assert res.cost.bytes_up[c] == expected
        assert res.cost.bytes_down[c] == 0
        assert res.cost.client_seconds[c] >= 0.0
    assert res.cost.server_seconds >= 0.0
    assert res.cost.bytes_up_per_client() == pytest.approx(
        sum(res.cost.bytes_up.values()) / len(ctx.participants)
    )

    # View: every survivor's update and weight, exactly; one message per survivor.
    view = res.view
    assert view.protocol == "plain" and view.round == ctx.round
    assert view.observes_individual_updates
    assert view.individual_updates is not None and view.individual_weights is not None
    assert sorted(view.individual_updates) == survivors
    for c in survivors:
        np.testing.assert_array_equal(view.individual_updates[c], inputs[c].update)
        assert view.individual_weights[c] == inputs[c].weight
    assert [m.sender for m in view.transcript] == survivors
    assert all(isinstance(m, PlainUpdate) for m in view.transcript)
    np.testing.assert_array_equal(view.aggregate, res.aggregate)
    assert view.total_weight == res.total_weight


def test_docstring_example_runs() -> None:
    assert doctest.testmod(fedpriv.protocols, raise_on_error=False).failed == 0


def test_float64_updates_give_a_float64_mean() -> None:
    ctx = RoundContext(round=0, participants=(0, 1), vector_size=3)
    inputs = {0: ClientInput(np.zeros(3), 1.0), 1: ClientInput(np.full(3, 3.0), 2.0)}
    res = run_round(PlainProtocol(), ctx, inputs)
    assert res.aggregate.dtype == np.float64
    np.testing.assert_array_equal(res.aggregate, [2.0, 2.0, 2.0])
    assert res.total_weight == 3.0


def test_all_clients_dropped_is_an_error() -> None:
    ctx = RoundContext(round=4, participants=(0, 1, 2), vector_size=2)
    inputs = {c: ClientInput(np.ones(2), 1.0) for c in ctx.participants}
    match = r"round 4: no client's update reached the plain server \(all 3 participants dropped"
    with pytest.raises(ProtocolError, match=match):
        run_round(create("plain"), ctx, inputs, dropouts=dict.fromkeys(ctx.participants, 0))


def test_view_cannot_be_changed_by_the_caller() -> None:
    buffer = np.ones(3, dtype=np.float32)
    ctx = RoundContext(round=0, participants=(0,), vector_size=3)
    res = run_round(create("plain"), ctx, {0: ClientInput(buffer, 1.0)})
    buffer[:] = 7.0  # the training loop reuses its buffer
    assert res.view.individual_updates is not None
    np.testing.assert_array_equal(res.view.individual_updates[0], np.ones(3))
    with pytest.raises(ValueError, match="read-only"):
        res.view.aggregate[0] = 5.0
    with pytest.raises(TypeError):
        res.view.individual_updates[1] = buffer  # type: ignore[index]


def test_weighted_mean_needs_one_weight_per_update() -> None:
    with pytest.raises(ProtocolError, match=r"1 update.* 2 weight"):
        weighted_mean([np.ones(2)], [1.0, 2.0])
    with pytest.raises(ProtocolError, match="at least one update"):
        weighted_mean([], [])


def test_plain_server_rejects_malformed_messages() -> None:
    ctx = RoundContext(round=0, participants=(0, 1), vector_size=2)
    server = PlainProtocol().server(ctx)
    with pytest.raises(ProtocolError, match="expected a PlainUpdate from client 1"):
        server.collect(0, {1: PlainUpdate(sender=0, update=np.ones(2), weight=1.0)})
    server = PlainProtocol().server(ctx)
    with pytest.raises(ProtocolError, match="has 3 entries but round 0 expects vector_size=2"):
        server.collect(0, {1: PlainUpdate(sender=1, update=np.ones(3), weight=1.0)})
    with pytest.raises(ProtocolError, match="PlainUpdate from client 1: weight must be"):
        PlainUpdate(sender=1, update=np.ones(2), weight=-1.0)
    server = PlainProtocol().server(ctx)
    server.collect(0, {})
    with pytest.raises(ProtocolError, match="single phase 0, collected once"):
        server.collect(0, {})


def test_plain_client_has_one_phase() -> None:
    ctx = RoundContext(round=0, participants=(0,), vector_size=1)
    client = PlainProtocol().client(0, ctx, ClientInput(np.ones(1), 1.0))
    with pytest.raises(ProtocolError, match="single phase 0"):
        client.handle(1, None)


def test_plain_protocol_takes_only_a_plain_config() -> None:
    with pytest.raises(ConfigError, match="takes a PlainConfig"):
        PlainProtocol(config=object())  # type: ignore[arg-type]
