"""SecAgg / SecAgg+: the unmasked aggregate against a naive reference, dropouts, bad input, view."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedpriv.errors import ConfigError, ProtocolError
from fedpriv.protocols import (
    ClientInput,
    RoundContext,
    SecAggConfig,
    SecAggPlusConfig,
    SecAggPlusProtocol,
    SecAggProtocol,
    SecAggServerView,
    create,
    crypto,
    describe,
    run_round,
)
from fedpriv.protocols.base import (
    MESSAGE_HEADER_NBYTES,
    ClientId,
    ClientSession,
    Message,
    ServerSession,
)
from fedpriv.protocols.encoding import EncodeStats, encode, quantization_bound
from fedpriv.protocols.secagg import (
    AdvertiseKeys,
    ConsistencyProof,
    DerivedSecrets,
    KeyDirectory,
    MaskedInput,
    RoutedShares,
    SecAggFamily,
    SecAggServer,
    ShareKeys,
    SurvivorList,
    UnmaskShares,
)

MASTER = b"fedpriv secagg tests, not secret"

Inputs = dict[int, ClientInput]
Hook = Callable[[int, int, Message], Message]  # (client, phase, message) -> message
ServerHook = Callable[[int, dict[int, Message]], dict[int, Message]]


def make_inputs(n: int, size: int, seed: int = 0, ids: tuple[int, ...] | None = None) -> Inputs:
    rng = np.random.default_rng(seed)
    ids = ids if ids is not None else tuple(range(n))
    return {
        c: ClientInput(rng.uniform(-1.0, 1.0, size).astype(np.float32), rng.uniform(0.05, 1.0))
        for c in ids
    }


def reference(inputs: Inputs, survivors: tuple[int, ...], max_weight: float = 1.0) -> np.ndarray:
    updates = np.stack([inputs[c].update.astype(np.float64) for c in survivors])
    return np.average(updates, axis=0, weights=[inputs[c].weight / max_weight for c in survivors])


def check_aggregate(
    proto: SecAggFamily, ctx: RoundContext, inputs: Inputs, result: Any
) -> None:
    """Check the aggregate is within the fixed-point error bound of the plain weighted mean."""
    plan = proto.plan(ctx)
    survivors = result.survivors
    m = len(survivors)
    weights = np.array([inputs[c].weight / plan.max_weight for c in survivors])
    total = float(weights.sum())
    weighted_sum = np.abs(np.sum([w * inputs[c].update for w, c in zip(weights, survivors,
                                                                        strict=True)], axis=0))
    sum_error = quantization_bound(plan.spec, m)
    weight_error = m * 2.0 ** -(plan.weight_bits + 1)
    tolerance = (sum_error + weighted_sum * weight_error / total) / (total - weight_error) + 1e-12
    error = np.abs(result.aggregate - reference(inputs, survivors, plan.max_weight))
    assert np.all(error <= tolerance), (error.max(), tolerance)
    assert result.total_weight == pytest.approx(
        sum(inputs[c].weight for c in survivors), abs=plan.max_weight * weight_error
    )


def alive_through(ctx: RoundContext, dropouts: Mapping[int, int], phase: int) -> tuple[int, ...]:
    return tuple(c for c in ctx.participants if dropouts.get(c, 99) > phase)


def derived_graph(
    proto: SecAggFamily, ctx: RoundContext, advertisers: tuple[int, ...] | None = None
) -> dict[int, frozenset[int]]:
    """Return the masking graph of a round with DerivedSecrets when ``advertisers`` advertise."""
    source = proto.secret_source
    keys = [
        AdvertiseKeys(c, ctx.round, source.x25519(c, ctx.round, "c")[1],
                      source.x25519(c, ctx.round, "s")[1])
        for c in (ctx.participants if advertisers is None else advertisers)
    ]
    return proto.graph(ctx, proto.graph_seed(ctx, keys))


# ----------------------------------------------------------------- faulty parties, for injection


class HookedClient(ClientSession):
    def __init__(self, inner: ClientSession, client_id: int, hook: Hook) -> None:
        self.inner, self.client_id, self.hook = inner, client_id, hook

    def handle(self, phase: int, inbox: Message | None) -> Message | None:
        message = self.inner.handle(phase, inbox)
        return None if message is None else self.hook(self.client_id, phase, message)


class HookedServer(ServerSession):
    def __init__(self, inner: SecAggServer, hook: ServerHook) -> None:
        self.inner, self.hook = inner, hook
        self.num_phases = inner.num_phases

    def collect(self, phase: int, messages: Mapping[int, Message]) -> Mapping[int, Message]:
        return self.hook(phase, dict(self.inner.collect(phase, messages)))

    def finish(self) -> tuple[np.ndarray, float, tuple[int, ...]]:
        return self.inner.finish()

    def view(self) -> SecAggServerView:
        return self.inner.view()


def faulty(
    base: type[SecAggFamily],
    client_hook: Hook | None = None,
    server_hook: ServerHook | None = None,
    **kwargs: Any,
) -> SecAggFamily:
    """Return a protocol whose clients' messages / server's replies pass through hooks first."""

    class Faulty(base):
        def client(self, client_id: ClientId, ctx: RoundContext, data: ClientInput) -> Any:
            session = super().client(client_id, ctx, data)
            return session if client_hook is None else HookedClient(session, client_id,
                                                                    client_hook)

        def server(self, ctx: RoundContext) -> Any:
            session = super().server(ctx)
            return session if server_hook is None else HookedServer(session, server_hook)

    return Faulty(secret_source=DerivedSecrets(MASTER), **kwargs)


def replace(message: Message, **changes: Any) -> Message:
    return dataclasses.replace(message, **changes)


# ----------------------------------------------------------------- properties


@st.composite
def rounds(draw: st.DrawFn) -> tuple[SecAggFamily, RoundContext, Inputs, dict[int, int]]:
    plus = draw(st.booleans())
    n = draw(st.integers(3, 8))
    size = draw(st.integers(1, 6))
    threshold = draw(st.sampled_from([None, 0.6, 0.75]))
    if plus:
        degree = draw(st.sampled_from([None, 2, 4]))
        proto: SecAggFamily = SecAggPlusProtocol(
            SecAggPlusConfig(threshold=threshold, degree=degree)
        )
    else:
        proto = SecAggProtocol(SecAggConfig(threshold=threshold))
    ids = tuple(draw(st.lists(st.integers(0, 500), min_size=n, max_size=n, unique=True)))
    ctx = RoundContext(round=draw(st.integers(0, 50)), participants=ids, vector_size=size)
    inputs = make_inputs(n, size, draw(st.integers(0, 2**16)), ids)
    dropouts = draw(st.dictionaries(st.sampled_from(ids), st.integers(0, 4), max_size=n))
    return proto, ctx, inputs, dropouts


@settings(max_examples=120, deadline=None)
@given(rounds())
def test_aggregate_matches_weighted_mean_or_round_aborts(
    case: tuple[SecAggFamily, RoundContext, Inputs, dict[int, int]],
) -> None:
    proto, ctx, inputs, dropouts = case
    plan = proto.plan(ctx)
    t, k = plan.threshold, plan.degree
    complete_survivors = alive_through(ctx, dropouts, 4)  # alive to the end
    masked_senders = alive_through(ctx, dropouts, 2)
    try:
        result = run_round(proto, ctx, inputs, dropouts=dropouts)
    except ProtocolError as err:
        # Never an error while every neighbourhood keeps t clients to the end (the
        # k-connected graph then stays connected) and min_participants send inputs…
        assert (
            len(dropouts) > k + 1 - t or len(masked_senders) < plan.min_participants
        ), err
        # …and secagg aborts exactly when fewer than t clients stay to the end, or fewer
        # than min_participants send their masked input.
        if isinstance(proto, SecAggProtocol):
            assert len(complete_survivors) < t or len(masked_senders) < plan.min_participants
        return
    if isinstance(proto, SecAggProtocol) or len(dropouts) <= k + 1 - t:
        assert result.survivors == masked_senders
    assert set(result.survivors) <= set(masked_senders)
    assert len(result.survivors) >= t
    check_aggregate(proto, ctx, inputs, result)
    view = result.view
    assert isinstance(view, SecAggServerView)
    assert sorted(view.self_mask_seeds) == list(result.survivors)
    assert not set(view.mask_private_keys) & set(result.survivors)
    assert set(view.mask_private_keys) <= set(view.shared) - set(result.survivors)
    assert_never_both(view)


def assert_never_both(view: SecAggServerView) -> None:
    survivors = set(view.survivors)
    for message in view.transcript:
        if isinstance(message, UnmaskShares):
            seeds, keys = set(message.self_mask_shares), set(message.mask_key_shares)
            assert not seeds & keys
            assert seeds <= survivors
            assert not keys & survivors


@pytest.mark.parametrize("protocol", ["secagg", "secagg+"])
@pytest.mark.parametrize("phase", [0, 1, 2, 3, 4])
def test_every_dropout_phase_at_threshold(protocol: str, phase: int) -> None:
    """N = 8: t = 5 (secagg), t = 4 (secagg+, k = 6); k + 1 − t clients drop in the same phase."""
    proto = faulty(SecAggProtocol if protocol == "secagg" else SecAggPlusProtocol)
    ctx = RoundContext(round=7, participants=range(8), vector_size=5)
    inputs = make_inputs(8, 5, seed=phase)
    plan = proto.plan(ctx)
    assert plan.threshold == (5 if protocol == "secagg" else 4)
    dropped = dict.fromkeys(range(plan.degree + 1 - plan.threshold), phase)
    result = run_round(proto, ctx, inputs, dropouts=dropped)
    assert result.survivors == (alive_through(ctx, dropped, 2) if phase < 3 else ctx.participants)
    check_aggregate(proto, ctx, inputs, result)
    view = result.view
    assert isinstance(view, SecAggServerView)
    expected_keys = set(dropped) if phase == 2 else set()
    assert set(view.mask_private_keys) == expected_keys
    assert_never_both(view)


@settings(max_examples=40, deadline=None)
@given(n=st.integers(3, 8), seed=st.integers(0, 1000), data=st.data())
def test_secagg_below_threshold_aborts(n: int, seed: int, data: st.DataObject) -> None:
    proto = SecAggProtocol()
    ctx = RoundContext(round=0, participants=range(n), vector_size=3)
    t = proto.plan(ctx).threshold
    count = data.draw(st.integers(n - t + 1, n))
    phases = data.draw(st.lists(st.integers(0, 4), min_size=count, max_size=count))
    dropouts = dict(zip(range(count), phases, strict=True))
    minimum = proto.plan(ctx).min_participants
    with pytest.raises(ProtocolError, match=f"fewer than (the threshold )?t={t}|fewer than "
                       f"the {minimum} every client accepts"):
        run_round(proto, ctx, make_inputs(n, 3, seed), dropouts=dropouts)


def test_chi_square_masked_words_are_uniform_and_encodings_are_not() -> None:
    """Top 4 bits of a masked vector's words: χ² (15 dof) below the p = 1e-6 critical value."""
    critical = 56.49  # scipy.stats.chi2.isf(1e-6, 15)
    size = 8192
    proto = SecAggProtocol(secret_source=DerivedSecrets(MASTER))
    ctx = RoundContext(round=0, participants=range(3), vector_size=size)
    inputs = make_inputs(3, size)
    view = run_round(proto, ctx, inputs).view
    assert isinstance(view, SecAggServerView)
    bits = view.bits

    def chi_square(words: np.ndarray) -> float:
        counts = np.bincount((words.astype(np.uint64) >> np.uint64(bits - 4)).astype(np.int64),
                             minlength=16)
        expected = words.size / 16
        return float(np.sum((counts - expected) ** 2 / expected))

    for masked in view.masked_inputs.values():
        assert chi_square(masked) < critical
    plan = proto.plan(ctx)
    unmasked, _ = encode(inputs[0].update * inputs[0].weight, plan.spec, np.random.default_rng(0))
    assert chi_square(unmasked) > 100 * critical  # the same statistic sees the encoding


# ----------------------------------------------------------------- view, cost, secrets


def test_view_cost_and_reconstructed_secrets() -> None:
    source = DerivedSecrets(MASTER)
    proto = SecAggProtocol(secret_source=source)
    ctx = RoundContext(round=2, participants=(3, 5, 9, 11), vector_size=10)
    inputs = make_inputs(4, 10, ids=ctx.participants)
    result = run_round(proto, ctx, inputs, dropouts={11: 2})
    view = result.view
    assert isinstance(view, SecAggServerView)
    assert view.protocol == "secagg" and not view.observes_individual_updates
    assert view.individual_weights is None
    assert view.survivors == (3, 5, 9) and view.dropped == (11,)
    assert view.total_weight == result.total_weight
    # The server legitimately reconstructs b_j of survivors and s_j^SK of the dropped client.
    assert view.self_mask_seeds == {c: source.self_mask_seed(c, 2) for c in (3, 5, 9)}
    assert view.mask_private_keys == {11: source.x25519(11, 2, "s")[0]}
    text = repr(view) + str(view)
    for secret in (*view.self_mask_seeds.values(), *view.mask_private_keys.values()):
        assert repr(secret) not in text and secret.hex() not in text
    for message in view.transcript:
        assert "self_mask_shares" not in repr(message) and "ciphertexts=" not in repr(message)
    kinds = [type(m).__name__ for m in view.transcript]
    assert kinds == ["AdvertiseKeys"] * 4 + ["ShareKeys"] * 4 + ["MaskedInput"] * 3 + [
        "ConsistencySignature"
    ] * 3 + ["UnmaskShares"] * 3
    assert view.signed_by == view.unmasked_by == (3, 5, 9)
    # Cost: every byte a client sent is the nbytes of its messages; the masked vector is
    # 4 bytes per word (25-bit words in uint32) plus the weight word, header and round.
    for client in ctx.participants:
        sent = sum(m.nbytes() for m in view.transcript if m.sender == client)
        assert result.cost.bytes_up[client] == sent
    masked = view.masked_inputs[3]
    assert masked.dtype == np.uint32 and masked.shape == (11,)
    assert MaskedInput(3, 2, masked).nbytes() == MESSAGE_HEADER_NBYTES + 8 + 4 * 11
    assert result.cost.bytes_down[11] > 0 and result.cost.bytes_down[3] > result.cost.bytes_down[11]


def test_encode_stats_reach_the_caller_not_the_server() -> None:
    seen: dict[int, EncodeStats] = {}
    proto = SecAggProtocol(
        SecAggConfig(clip=0.5), on_encode=lambda c, r, stats: seen.setdefault(c, stats)
    )
    ctx = RoundContext(round=0, participants=range(3), vector_size=4)
    inputs = {c: ClientInput(np.array([0.1, -0.2, 0.3, 0.4]), 1.0) for c in range(3)}
    inputs[1] = ClientInput(np.array([2.0, -3.0, 0.1, 0.0]), 1.0)
    result = run_round(proto, ctx, inputs)
    assert {c: s.clipped for c, s in seen.items()} == {0: 0, 1: 2, 2: 0}
    np.testing.assert_allclose(result.aggregate, [0.7 / 3, -0.9 / 3, 0.7 / 3, 0.8 / 3], atol=1e-5)
    client = proto.client(1, ctx, inputs[1])
    assert client.encode_stats is None  # filled in phase 2


def test_weights_are_scaled_by_max_weight() -> None:
    proto = create("secagg", max_weight=1000.0)
    ctx = RoundContext(round=0, participants=range(3), vector_size=2)
    inputs = {c: ClientInput(np.full(2, c / 4), weight=100.0 * (c + 1)) for c in range(3)}
    result = run_round(proto, ctx, inputs)
    np.testing.assert_allclose(result.aggregate, [(0 + 0.5 + 1.5) / 6 * 1.0] * 2, atol=1e-5)
    assert result.total_weight == pytest.approx(600.0, rel=1e-5)
    with pytest.raises(ProtocolError, match=r"weight 2000\.0 exceeds .* max_weight=1000\.0"):
        proto.client(0, ctx, ClientInput(np.zeros(2), 2000.0))


# ----------------------------------------------------------------- config and registry


@pytest.mark.parametrize(
    ("params", "match"),
    [
        ({"threshold": 0.0}, r"threshold is the fraction .* in \(0\.5, 1\]"),
        ({"threshold": 0.5}, r"At 1/2 or below, a server announcing different survivors"),
        ({"threshold": 1.5}, r"threshold is the fraction"),
        ({"threshold": 3}, r"threshold is the fraction"),
        ({"min_threshold": 1}, "min_threshold must be an integer >= 2"),
        ({"min_participants": 1}, "min_participants must be an integer >= 2"),
        ({"min_participants": 2.5}, "min_participants must be an integer >= 2"),
        ({"max_weight": 0.0}, "max_weight must be finite and > 0"),
        ({"clip": -1.0}, "clip must be finite and > 0"),
        ({"clip_mode": "linf"}, "clip_mode must be one of"),
        ({"resolution": 1e-30}, "more than 64"),
    ],
)
def test_config_rejects(params: dict[str, Any], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        create("secagg", **params)


def test_secagg_plus_config_and_registry() -> None:
    with pytest.raises(ConfigError, match="degree must be an even integer >= 2"):
        create("secagg+", degree=3)
    with pytest.raises(ConfigError, match=r"'secagg' has no parameter\(s\) \['degree'\]"):
        create("secagg", degree=4)
    with pytest.raises(ConfigError, match="takes a SecAggConfig; got SecAggPlusConfig"):
        SecAggProtocol(SecAggPlusConfig())
    proto = create("secagg+", degree=4, threshold=0.6)
    assert isinstance(proto, SecAggPlusProtocol) and proto.num_phases == 5
    assert describe("secagg+").parameters[-1] == "degree"
    assert not describe("secagg").reveals_individual_updates
    plan = proto.plan(RoundContext(round=0, participants=range(20), vector_size=1))
    assert (plan.degree, plan.threshold, plan.bits) == (4, 3, 26)
    plan = proto.plan(RoundContext(round=0, participants=range(4), vector_size=1))
    assert (plan.degree, plan.threshold) == (3, 3)  # capped at n − 1: the complete graph


def test_single_client_round_cannot_hide_anything() -> None:
    ctx = RoundContext(round=0, participants=(0,), vector_size=1)
    with pytest.raises(ProtocolError, match=r"t = .* = 2 exceeds the 1 clients"):
        SecAggProtocol().server(ctx)


def test_sessions_refuse_phases_out_of_order() -> None:
    proto = SecAggProtocol()
    ctx = RoundContext(round=0, participants=range(3), vector_size=2)
    client = proto.client(0, ctx, make_inputs(3, 2)[0])
    with pytest.raises(ProtocolError, match="driven with phase 1 but expects phase 0"):
        client.handle(1, None)
    server = proto.server(ctx)
    with pytest.raises(ProtocolError, match=r"collect\(phase=2\) but expects phase 0"):
        server.collect(2, {})
    with pytest.raises(ProtocolError, match="finish\\(\\) after 0 of 5 phases"):
        server.finish()


# ----------------------------------------------------------------- bad input, one by one


def test_wrong_length_input_is_refused_by_the_client() -> None:
    ctx = RoundContext(round=0, participants=range(3), vector_size=4)
    with pytest.raises(ProtocolError, match=r"client 1's update has 5 entries .* vector_size=4"):
        SecAggProtocol().client(1, ctx, ClientInput(np.ones(5), 1.0))


def test_wrong_length_masked_input_is_dropped_and_the_round_completes() -> None:
    def truncate(client: int, phase: int, message: Message) -> Message:
        if client == 1 and isinstance(message, MaskedInput):
            return replace(message, masked=message.masked[:-2])
        return message

    proto = faulty(SecAggProtocol, client_hook=truncate)
    ctx = RoundContext(round=0, participants=range(5), vector_size=6)
    inputs = make_inputs(5, 6)
    result = run_round(proto, ctx, inputs)
    assert result.survivors == (0, 2, 3, 4)
    check_aggregate(proto, ctx, inputs, result)
    view = result.view
    assert isinstance(view, SecAggServerView)
    assert "masked input is uint32 of shape (5,); expected uint32 of shape (7,)" in view.rejected[1]
    assert set(view.mask_private_keys) == {1}  # treated as dropped: its pair masks are removed


def test_masked_input_outside_the_ring_is_dropped_and_the_round_completes() -> None:
    def overflow(client: int, phase: int, message: Message) -> Message:
        if client == 2 and isinstance(message, MaskedInput):
            masked = message.masked.copy()
            masked[3] |= np.uint32(1 << 31)  # a word >= 2^bits (bits < 32 here)
            return replace(message, masked=masked)
        return message

    proto = faulty(SecAggProtocol, client_hook=overflow)
    ctx = RoundContext(round=0, participants=range(5), vector_size=6)
    inputs = make_inputs(5, 6)
    result = run_round(proto, ctx, inputs)
    assert result.survivors == (0, 1, 3, 4)
    check_aggregate(proto, ctx, inputs, result)
    view = result.view
    assert isinstance(view, SecAggServerView)
    assert "masked input has words >= 2^" in view.rejected[2]
    assert set(view.mask_private_keys) == {2}


def test_non_finite_update_fails_on_the_client_before_sending() -> None:
    with pytest.raises(ProtocolError, match="non-finite"):
        ClientInput(np.array([1.0, np.nan]), 1.0)
    proto = SecAggProtocol()
    ctx = RoundContext(round=0, participants=range(3), vector_size=2)
    inputs = make_inputs(3, 2)
    object.__setattr__(inputs[2], "update", np.array([np.inf, 0.0]))  # corrupted after checks
    with pytest.raises(ProtocolError, match=r"client 2 \(round 0\) cannot encode .* non-finite"):
        run_round(proto, ctx, inputs)


def test_tampered_share_ciphertext_aborts_naming_the_sender() -> None:
    def tamper(phase: int, replies: dict[int, Message]) -> dict[int, Message]:
        if phase == 1:
            routed = replies[2]
            assert isinstance(routed, RoutedShares)
            forged = tuple(
                (s, ct[:-1] + bytes([ct[-1] ^ 1]) if s == 1 else ct) for s, ct in routed.ciphertexts
            )
            replies[2] = replace(routed, ciphertexts=forged)
        return replies

    proto = faulty(SecAggProtocol, server_hook=tamper)
    ctx = RoundContext(round=0, participants=range(4), vector_size=2)
    with pytest.raises(
        ProtocolError, match=r"client 2 .* ciphertext from client 1 failed authentication.* aborts"
    ):
        run_round(proto, ctx, make_inputs(4, 2))


def test_duplicate_client_ids_in_the_key_directory_abort() -> None:
    def duplicate(phase: int, replies: dict[int, Message]) -> dict[int, Message]:
        if phase == 0:
            directory = replies[0]
            assert isinstance(directory, KeyDirectory)
            replies[0] = replace(directory, keys=(*directory.keys, directory.keys[1]))
        return replies

    ctx = RoundContext(round=0, participants=range(3), vector_size=2)
    with pytest.raises(ProtocolError, match=r"lists client\(s\) \[1\] more than once"):
        run_round(faulty(SecAggProtocol, server_hook=duplicate), ctx, make_inputs(3, 2))


def test_copied_public_keys_are_rejected_by_server_and_clients() -> None:
    copied: dict[str, bytes] = {}

    def copy_keys(client: int, phase: int, message: Message) -> Message:
        if isinstance(message, AdvertiseKeys) and client == 0:
            copied.update(c=message.c_pk, s=message.s_pk)
        if isinstance(message, AdvertiseKeys) and client == 3:
            return replace(message, c_pk=copied["c"], s_pk=copied["s"])
        return message

    proto = faulty(SecAggProtocol, client_hook=copy_keys)
    ctx = RoundContext(round=0, participants=range(6), vector_size=3)
    inputs = make_inputs(6, 3)
    result = run_round(proto, ctx, inputs)
    assert result.survivors == (1, 2, 4, 5)  # the copier and its victim both left out
    check_aggregate(proto, ctx, inputs, result)
    view = result.view
    assert isinstance(view, SecAggServerView)
    assert "also advertised by client(s) [3]" in view.rejected[0]

    # A server that distributes copied keys: the client refuses.
    client = SecAggProtocol().client(0, ctx, inputs[0])
    own = client.handle(0, None)
    assert isinstance(own, AdvertiseKeys)
    twin = replace(own, sender=1)
    with pytest.raises(ProtocolError, match="share a public key"):
        client.handle(1, KeyDirectory(-1, 0, (own, twin)))


def test_shares_addressed_outside_the_graph_are_rejected_by_the_server() -> None:
    config = SecAggPlusConfig(degree=4)
    ctx = RoundContext(round=0, participants=range(12), vector_size=3)
    plus = SecAggPlusProtocol(config, secret_source=DerivedSecrets(MASTER))
    graph = derived_graph(plus, ctx)
    outsider = min(set(ctx.participants) - graph[0] - {0})

    def stray(client: int, phase: int, message: Message) -> Message:
        if client == 0 and isinstance(message, ShareKeys):
            ciphertexts = dict(message.ciphertexts)
            ciphertexts[outsider] = next(iter(ciphertexts.values()))
            return replace(message, ciphertexts=ciphertexts)
        return message

    proto = faulty(SecAggPlusProtocol, client_hook=stray, config=config)
    inputs = make_inputs(12, 3)
    result = run_round(proto, ctx, inputs)
    assert 0 not in result.survivors
    check_aggregate(proto, ctx, inputs, result)
    view = result.view
    assert isinstance(view, SecAggServerView)
    assert "outside the graph or missing" in view.rejected[0]


def test_shares_from_outside_the_graph_are_refused_by_the_client() -> None:
    def inject(phase: int, replies: dict[int, Message]) -> dict[int, Message]:
        if phase == 1:
            routed = replies[0]
            assert isinstance(routed, RoutedShares)
            replies[0] = replace(routed, ciphertexts=(*routed.ciphertexts, (outsider, b"x" * 60)))
        return replies

    proto = faulty(SecAggPlusProtocol, server_hook=inject, config=SecAggPlusConfig(degree=2))
    ctx = RoundContext(round=0, participants=range(8), vector_size=2)
    graph = derived_graph(proto, ctx)
    outsider = min(set(ctx.participants) - graph[0] - {0})
    with pytest.raises(ProtocolError, match=rf"shares from client\(s\) \[{outsider}\], which are "
                       "not its neighbours"):
        run_round(proto, ctx, make_inputs(8, 2))


def test_key_directory_must_carry_the_hash_of_the_advertised_keys_as_graph_seed() -> None:
    """The server cannot choose the SecAgg+ graph: clients recompute its seed from the keys."""
    proto = SecAggPlusProtocol(SecAggPlusConfig(degree=2), secret_source=DerivedSecrets(MASTER))
    ctx = RoundContext(round=0, participants=range(8), vector_size=2)
    inputs = make_inputs(8, 2)
    clients = {c: proto.client(c, ctx, inputs[c]) for c in ctx.participants}
    keys = {c: s.handle(0, None) for c, s in clients.items()}
    entries = tuple(keys[c] for c in ctx.participants)
    seed = proto.graph_seed(ctx, entries)
    assert seed is not None
    for forged in (bytes(32), seed[:-1] + bytes([seed[-1] ^ 1]), None):
        with pytest.raises(ProtocolError, match="graph seed is not the hash of the advertised"):
            proto.client(0, ctx, inputs[0]).handle(0, None)
            fresh = proto.client(0, ctx, inputs[0])
            fresh.handle(0, None)
            fresh.handle(1, KeyDirectory(-1, 0, entries, forged))
    # Leaving one advertisement out changes the seed: the only lever left costs a dropout.
    assert proto.graph_seed(ctx, entries[1:]) != seed
    # A directory naming a non-participant is refused.
    stranger = replace(entries[1], sender=99)
    with pytest.raises(ProtocolError, match=r"lists client\(s\) \[99\], which are not partic"):
        clients[0].handle(1, KeyDirectory(-1, 0, (*entries, stranger), seed))


def test_messages_replayed_from_an_earlier_round_are_refused() -> None:
    proto = SecAggProtocol(secret_source=DerivedSecrets(MASTER))
    inputs = make_inputs(4, 2)
    old_ctx = RoundContext(round=4, participants=range(4), vector_size=2)
    old = proto.server(old_ctx)
    old_keys = {c: proto.client(c, old_ctx, inputs[c]).handle(0, None) for c in range(4)}
    old_directory = old.collect(0, old_keys)[0]

    ctx = RoundContext(round=5, participants=range(4), vector_size=2)
    # Client side: a directory of round 4 in round 5.
    client = proto.client(0, ctx, inputs[0])
    client.handle(0, None)
    with pytest.raises(ProtocolError, match="KeyDirectory of round 4 in round 5: a message "
                       "replayed from another round is refused"):
        client.handle(1, old_directory)
    # Server side: an advertisement of round 4 is discarded (its sender counts as dropped).
    server = proto.server(ctx)
    fresh = {c: proto.client(c, ctx, inputs[c]).handle(0, None) for c in range(4)}
    fresh[2] = old_keys[2]
    replies = server.collect(0, fresh)
    assert set(replies) == {0, 1, 3}
    assert server.rejected == {2: "phase 0: AdvertiseKeys of round 4 replayed in round 5"}


def test_share_ciphertext_replayed_from_an_earlier_round_fails_authentication() -> None:
    captured: dict[int, RoutedShares] = {}

    def capture(phase: int, replies: dict[int, Message]) -> dict[int, Message]:
        if phase == 1:
            captured.update(replies)
        return replies

    ctx4 = RoundContext(round=4, participants=range(3), vector_size=2)
    inputs = make_inputs(3, 2)
    run_round(faulty(SecAggProtocol, server_hook=capture), ctx4, inputs)

    def replay(phase: int, replies: dict[int, Message]) -> dict[int, Message]:
        if phase == 1:
            replies[0] = replace(captured[0], round=5)
        return replies

    ctx5 = RoundContext(round=5, participants=range(3), vector_size=2)
    with pytest.raises(ProtocolError, match="from client 1 failed authentication"):
        run_round(faulty(SecAggProtocol, server_hook=replay), ctx5, inputs)


def test_too_few_survivors_aborts_server_and_client() -> None:
    proto = SecAggProtocol(SecAggConfig(threshold=0.75))
    ctx = RoundContext(round=0, participants=range(4), vector_size=2)
    with pytest.raises(ProtocolError, match=r"only 2 client\(s\) sent a masked input, fewer than "
                       r"the threshold t=3; the round is aborted \(too few survivors\)"):
        run_round(proto, ctx, make_inputs(4, 2), dropouts={0: 2, 1: 2})

    def shrink(phase: int, replies: dict[int, Message]) -> dict[int, Message]:
        if phase == 2:
            replies[3] = SurvivorList(-1, 0, (2, 3))
        return replies

    with pytest.raises(ProtocolError, match=r"client 3 .* only 2 survivor\(s\) announced .* "
                       "refusing to unmask"):
        run_round(faulty(SecAggProtocol, server_hook=shrink, config=SecAggConfig(threshold=0.75)),
                  ctx, make_inputs(4, 2))


def test_survivor_list_must_name_the_client_and_only_its_neighbours() -> None:
    for survivors, match in (((0, 1, 2), "omits this client"),
                             ((0, 1, 2, 3, 9), r"names client\(s\) \[9\]")):
        def lie(phase: int, replies: dict[int, Message], s: tuple[int, ...] = survivors
                ) -> dict[int, Message]:
            if phase == 2:
                replies[3] = SurvivorList(-1, 0, s)
            return replies

        ctx = RoundContext(round=0, participants=range(4), vector_size=2)
        with pytest.raises(ProtocolError, match=match):
            run_round(faulty(SecAggProtocol, server_hook=lie), ctx, make_inputs(4, 2))


# ----------------------------------------------------------------- the never-both rule


def test_a_client_reveals_one_share_per_peer_and_never_the_other() -> None:
    proto = SecAggProtocol(secret_source=DerivedSecrets(MASTER))
    ctx = RoundContext(round=0, participants=range(4), vector_size=2)
    inputs = make_inputs(4, 2)
    server = proto.server(ctx)
    clients = {c: proto.client(c, ctx, inputs[c]) for c in ctx.participants}
    replies: Mapping[int, Message] = {}
    for phase in range(4):
        sent = {c: s.handle(phase, replies.get(c)) for c, s in clients.items()
                if phase < 2 or c != 3}  # client 3 drops before its masked input
        replies = server.collect(phase, sent)
    response = clients[0].handle(4, replies[0])
    assert isinstance(response, UnmaskShares)
    assert set(response.self_mask_shares) == {0, 1, 2}
    assert set(response.mask_key_shares) == {3}
    assert dict(clients[0].revealed) == {0: "b", 1: "b", 2: "b", 3: "s"}
    # A server asking again, now claiming 3 survived and 1 dropped, gets nothing.
    acks = ConsistencyProof(-1, 0, ((0, None), (2, None), (3, None)))
    with pytest.raises(ProtocolError, match="driven with phase 4 but expects phase 5"):
        clients[0].handle(4, acks)
    # Even a forced second consistency check and unmasking refuses the other kind of share.
    client = clients[0]
    client._next_phase = 3  # simulate a replayed phase 3
    client.handle(3, SurvivorList(-1, 0, (0, 2, 3)))
    with pytest.raises(ProtocolError, match="of the other kind than it already revealed"):
        client.handle(4, acks)


def test_server_discards_a_response_revealing_both_shares_of_a_peer() -> None:
    def both(client: int, phase: int, message: Message) -> Message:
        if client == 0 and isinstance(message, UnmaskShares):
            seeds = dict(message.self_mask_shares)
            seeds[3] = next(iter(message.mask_key_shares.values()))
            return replace(message, self_mask_shares=seeds)
        return message

    proto = faulty(SecAggProtocol, client_hook=both)
    ctx = RoundContext(round=0, participants=range(5), vector_size=3)
    inputs = make_inputs(5, 3)
    result = run_round(proto, ctx, inputs, dropouts={3: 2})
    view = result.view
    assert isinstance(view, SecAggServerView)
    assert "revealed both shares for client(s) [3]" in view.rejected[0]
    assert view.unmasked_by == (1, 2, 4)
    check_aggregate(proto, ctx, inputs, result)


def corrupt_share(holder: int, owner: int, kind: str = "b") -> Hook:
    """Return a client hook: ``holder`` flips a bit of its unmasking share of ``owner``'s secret."""
    attribute = "self_mask_shares" if kind == "b" else "mask_key_shares"

    def corrupt(client: int, phase: int, message: Message) -> Message:
        if client == holder and isinstance(message, UnmaskShares):
            shares = dict(getattr(message, attribute))
            shares[owner] = (int.from_bytes(shares[owner], "big") ^ 1).to_bytes(
                len(shares[owner]), "big")
            return replace(message, **{attribute: shares})
        return message

    return corrupt


@pytest.mark.parametrize("kind", ["b", "s"])
def test_a_bad_unmasking_share_drops_its_holder_when_enough_good_shares_remain(kind: str) -> None:
    """N = 6, t = 4, 5 holders: the bad share is found, its holder's shares dropped, sum right."""
    owner = 0 if kind == "b" else 5  # a survivor's self-mask seed, or a dropped client's key
    proto = faulty(SecAggProtocol, client_hook=corrupt_share(2, owner, kind))
    ctx = RoundContext(round=0, participants=range(6), vector_size=3)
    inputs = make_inputs(6, 3)
    result = run_round(proto, ctx, inputs, dropouts={5: 2})
    check_aggregate(proto, ctx, inputs, result)
    view = result.view
    assert isinstance(view, SecAggServerView)
    assert result.survivors == (0, 1, 2, 3, 4)  # its input stays: it is in the signed set
    assert "unmasking share off the committed secret's polynomial" in view.rejected[2]
    assert 2 not in view.unmasked_by and set(view.rejected) == {2}
    assert set(view.mask_private_keys) == {5}


def test_bad_shares_abort_when_too_few_good_ones_remain() -> None:
    """Exactly t shares (threshold 1.0): a bad one cannot be told apart, so the round aborts."""
    proto = faulty(SecAggProtocol, client_hook=corrupt_share(1, 0),
                   config=SecAggConfig(threshold=1.0))
    ctx = RoundContext(round=0, participants=range(4), vector_size=3)
    with pytest.raises(ProtocolError, match=r"cannot reconstruct client 0's self-mask seed: .* "
                       "passes its check .* rather than returning a wrong sum"):
        run_round(proto, ctx, make_inputs(4, 3))


# ----------------------------------------------------------------- signed keys


def test_signed_advertisements() -> None:
    pairs = {c: crypto.generate_ed25519() for c in range(4)}
    signing = {c: p[0] for c, p in pairs.items()}
    verify = {c: p[1] for c, p in pairs.items()}
    ctx = RoundContext(round=1, participants=range(4), vector_size=3)
    inputs = make_inputs(4, 3)
    result = run_round(SecAggProtocol(signing_keys=signing, verify_keys=verify,
                                      session_id=b"run-1"), ctx, inputs)
    assert result.survivors == (0, 1, 2, 3)
    advertised = [m for m in result.view.transcript if isinstance(m, AdvertiseKeys)]
    assert all(m.signature is not None and m.nbytes() == 16 + 8 + 64 + 64 for m in advertised)

    # A client signing with the wrong key is left out by the server; the round goes on.
    forged = dict(signing)
    forged[2] = crypto.generate_ed25519()[0]
    proto = SecAggProtocol(signing_keys=forged, verify_keys=verify, session_id=b"run-1")
    result = run_round(proto, ctx, inputs)
    assert result.survivors == (0, 1, 3)
    view = result.view
    assert isinstance(view, SecAggServerView)
    assert "signature on client 2's advertised keys does not verify" in view.rejected[2]

    # A server that substitutes a client's keys is caught by every client.
    def substitute(phase: int, replies: dict[int, Message]) -> dict[int, Message]:
        if phase == 0:
            for c, directory in replies.items():
                assert isinstance(directory, KeyDirectory)
                keys = tuple(replace(k, s_pk=crypto.generate_x25519()[1]) if k.sender == 2
                             and c != 2 else k for k in directory.keys)
                replies[c] = replace(directory, keys=keys)
        return replies

    proto = faulty(SecAggProtocol, server_hook=substitute, signing_keys=signing,
                   verify_keys=verify, session_id=b"run-1")
    with pytest.raises(ProtocolError, match="signature on client 2's advertised keys"):
        run_round(proto, ctx, inputs)
    with pytest.raises(ProtocolError, match="none is given for client 3"):
        SecAggProtocol(signing_keys={0: signing[0]}, session_id=b"s").client(3, ctx, inputs[3])
    with pytest.raises(ProtocolError, match="none is given for client 3"):
        SecAggProtocol(verify_keys=verify, session_id=b"s").client(3, ctx, inputs[3])


@pytest.mark.parametrize("phase", [0, 1, 2, 3, 4])
def test_secagg_plus_neighbourhood_below_threshold(phase: int) -> None:
    """With k = 4, t = 3, three of client 0's neighbours drop: 2 of its neighbourhood remain.

    Before any mask exists (phases 0–1) the server leaves client 0 out and the round
    completes; afterwards (phases 2–4) client 0's masks can no longer be removed: abort.
    """
    proto = faulty(SecAggPlusProtocol, config=SecAggPlusConfig(degree=4))
    ctx = RoundContext(round=0, participants=range(12), vector_size=2)
    plan = proto.plan(ctx)
    assert (plan.degree, plan.threshold) == (4, 3)
    if phase == 0:  # the graph hangs on who advertised: find 3 that are then 0's neighbours
        rng = np.random.default_rng(0)
        while True:
            chosen = tuple(int(c) for c in rng.choice(range(1, 12), size=3, replace=False))
            advertisers = tuple(c for c in ctx.participants if c not in chosen)
            if set(chosen) <= derived_graph(proto, ctx, advertisers)[0]:
                break
    else:
        chosen = tuple(sorted(derived_graph(proto, ctx)[0])[:3])
    dropouts = dict.fromkeys(chosen, phase)
    inputs = make_inputs(12, 2)
    if phase >= 2:
        with pytest.raises(ProtocolError, match="fewer than t=3"):
            run_round(proto, ctx, inputs, dropouts=dropouts)
        return
    result = run_round(proto, ctx, inputs, dropouts=dropouts)
    assert 0 not in result.survivors
    view = result.view
    assert isinstance(view, SecAggServerView)
    assert "fewer than t=3 clients of its neighbourhood remain" in view.rejected[0]
    check_aggregate(proto, ctx, inputs, result)


def test_one_key_for_both_purposes_is_rejected() -> None:
    def same_key(client: int, phase: int, message: Message) -> Message:
        if client == 1 and isinstance(message, AdvertiseKeys):
            return replace(message, s_pk=message.c_pk)
        return message

    ctx = RoundContext(round=0, participants=range(4), vector_size=2)
    inputs = make_inputs(4, 2)
    result = run_round(faulty(SecAggProtocol, client_hook=same_key), ctx, inputs)
    assert result.survivors == (0, 2, 3)
    view = result.view
    assert isinstance(view, SecAggServerView)
    assert "same public key for both purposes" in view.rejected[1]
