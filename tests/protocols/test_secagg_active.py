"""SecAgg / SecAgg+ against an active server: each attack of issue 15 played, and seen failing.

The server here is the adversary: it drives honest client sessions itself, with
whatever messages it likes (split survivor views, forged acknowledgements,
replayed rounds, a disconnected survivor set), and the tests check that it
collects too few shares to unmask anyone, or that the clients abort.
"""

from __future__ import annotations

from collections.abc import Mapping
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
    crypto,
    run_round,
)
from fedpriv.protocols.base import Message
from fedpriv.protocols.secagg import (
    AdvertiseKeys,
    ConsistencyProof,
    ConsistencySignature,
    DerivedSecrets,
    SecAggClient,
    SecAggFamily,
    SurvivorList,
    UnmaskShares,
)
from fedpriv.protocols.secagg_graph import components, ring_order
from fedpriv.protocols.shamir import reconstruct_secret

MASTER = b"fedpriv secagg active-server tests, not secret"
SESSION = b"run-42"


def make_inputs(ids: tuple[int, ...], size: int, seed: int = 0) -> dict[int, ClientInput]:
    rng = np.random.default_rng(seed)
    return {c: ClientInput(rng.uniform(-1.0, 1.0, size), rng.uniform(0.1, 1.0)) for c in ids}


def signed_protocol(n: int, **config: Any) -> SecAggProtocol:
    pairs = {c: crypto.generate_ed25519() for c in range(n)}
    return SecAggProtocol(
        SecAggConfig(**config),
        signing_keys={c: p[0] for c, p in pairs.items()},
        verify_keys={c: p[1] for c, p in pairs.items()},
        session_id=SESSION,
        secret_source=DerivedSecrets(MASTER),
    )


def honest_phases(
    proto: SecAggFamily, ctx: RoundContext, inputs: Mapping[int, ClientInput],
    masked_senders: set[int] | None = None,
) -> tuple[dict[int, SecAggClient], dict[int, Message]]:
    """Run phases 0–2 with the honest server; return the sessions and the phase-2 replies."""
    server = proto.server(ctx)
    clients = {c: proto.client(c, ctx, inputs[c]) for c in ctx.participants}
    replies: Mapping[int, Message] = {}
    for phase in range(2):
        replies = server.collect(phase, {c: s.handle(phase, replies.get(c))
                                         for c, s in clients.items()})
    senders = set(ctx.participants) if masked_senders is None else masked_senders
    phase2 = {c: clients[c].handle(2, replies.get(c)) for c in sorted(senders)}
    try:
        replies = server.collect(2, phase2)
    except ProtocolError:
        replies = {}
    return clients, dict(replies)


def split_view_attack(
    proto: SecAggFamily, ctx: RoundContext, target: int, group_a: set[int], *,
    forward: str, forge_acks: bool = False,
) -> tuple[dict[int, bytes], dict[int, bytes], dict[int, str]]:
    """Play the split-view server: ``group_a`` hears ``target`` survived, the others it dropped.

    Returns the shares of ``target``'s self-mask seed and of its mask key that the
    server collects, and why each refusing client refused.  ``forward``: "own" (each
    group gets its own group's signatures) or "all" (every signature collected).
    ``forge_acks``: instead, forward an acknowledgement from every announced survivor.
    """
    inputs = make_inputs(ctx.participants, ctx.vector_size)
    clients, _ = honest_phases(proto, ctx, inputs)
    everyone = tuple(ctx.participants)
    without = tuple(c for c in everyone if c != target)
    shown = {c: everyone if c in group_a else without for c in everyone}
    refused: dict[int, str] = {}
    signed: dict[int, ConsistencySignature] = {}
    for c in everyone:
        try:
            message = clients[c].handle(3, SurvivorList(-1, ctx.round, shown[c]))
        except ProtocolError as err:
            refused[c] = str(err)
            continue
        assert isinstance(message, ConsistencySignature)
        signed[c] = message
    seeds: dict[int, bytes] = {}
    keys: dict[int, bytes] = {}
    for c in sorted(signed):
        if forge_acks:
            proof = tuple((d, None) for d in shown[c])
        else:
            peers = [d for d in signed if forward == "all" or (d in group_a) == (c in group_a)]
            proof = tuple((d, signed[d].signature) for d in sorted(peers))
        try:
            response = clients[c].handle(4, ConsistencyProof(-1, ctx.round, proof))
        except ProtocolError as err:
            refused[c] = str(err)
            continue
        assert isinstance(response, UnmaskShares)
        if target in response.self_mask_shares:
            seeds[c] = response.self_mask_shares[target]
        if target in response.mask_key_shares:
            keys[c] = response.mask_key_shares[target]
    return seeds, keys, refused


# ----------------------------------------------------------------- attack 2: split view


def test_split_view_threshold_of_a_half_cannot_be_configured() -> None:
    """The measured attack used t = 5 of n = 10: no configuration gives that any more."""
    with pytest.raises(ConfigError, match=r"in \(0\.5, 1\]"):
        SecAggConfig(threshold=0.5)
    with pytest.raises(ConfigError, match="above 2/3 of a neighbourhood"):
        signed_protocol(10, threshold=0.6)
    assert signed_protocol(10).plan(RoundContext(0, range(10), 1)).threshold == 7
    assert SecAggProtocol().plan(RoundContext(0, range(10), 1)).threshold == 6


@pytest.mark.parametrize("forward", ["own", "all"])
def test_split_view_with_signatures_yields_no_share(forward: str) -> None:
    """N = 10, signatures on, zero colluders: every client refuses to unmask; nothing leaks."""
    proto = signed_protocol(10)
    ctx = RoundContext(round=0, participants=range(10), vector_size=4)
    seeds, keys, refused = split_view_attack(proto, ctx, 0, set(range(5)), forward=forward)
    assert seeds == {} and keys == {}
    assert set(refused) == set(range(10))
    if forward == "own":  # each half holds 5 matching signatures, t = 7
        assert all("fewer than t=7" in why for why in refused.values())
    else:  # the other half's signatures are over another set, or by a non-survivor
        assert all("does not verify over the announced" in refused[c] for c in range(5))
        assert all(r"client(s) [0], which are not survivors" in refused[c] for c in range(5, 10))


def test_split_view_harness_unmasks_when_the_server_does_not_split() -> None:
    """The same harness, one view for all: the server gets its t shares (the attack's yardstick)."""
    proto = signed_protocol(10)
    ctx = RoundContext(round=0, participants=range(10), vector_size=4)
    seeds, keys, refused = split_view_attack(proto, ctx, 0, set(range(10)), forward="all")
    assert refused == {} and keys == {} and len(seeds) == 10
    assert reconstruct_secret(seeds, threshold=7) == DerivedSecrets(MASTER).self_mask_seed(0, 0)


@pytest.mark.parametrize("size_a", range(1, 10))
def test_split_view_without_signatures_never_gives_both_secrets(size_a: int) -> None:
    """Honest-but-curious mode, forged acknowledgements: t = 6 > n/2 keeps one secret hidden.

    Without verify keys the consistency round authenticates nothing, so a split passes
    it; but each honest client reveals one kind of share per peer and 2t > n, so the
    server never holds t shares of both the self-mask seed and the mask key.
    """
    proto = SecAggProtocol(secret_source=DerivedSecrets(MASTER))
    ctx = RoundContext(round=0, participants=range(10), vector_size=4)
    seeds, keys, _ = split_view_attack(proto, ctx, 0, set(range(size_a)), forward="all",
                                       forge_acks=True)
    t = proto.plan(ctx).threshold
    assert t == 6 and len(seeds) + len(keys) <= 10
    assert len(seeds) < t or len(keys) < t
    for shares in (seeds, keys):
        if len(shares) < t:
            with pytest.raises(ProtocolError, match=f"need {t} shares"):
                reconstruct_secret(shares, threshold=t)


def test_consistency_proof_needs_matching_valid_signatures_of_the_neighbourhood() -> None:
    proto = signed_protocol(6)
    ctx = RoundContext(round=0, participants=range(6), vector_size=2)
    inputs = make_inputs(ctx.participants, 2)
    clients, replies = honest_phases(proto, ctx, inputs)
    signed = {c: clients[c].handle(3, replies[c]) for c in ctx.participants}
    good = tuple((c, m.signature) for c, m in signed.items())  # type: ignore[attr-defined]
    forged = ((0, good[1][1]), *good[1:])  # client 1's signature passed off as client 0's
    cases = [
        (forged, "client 0's consistency signature does not verify"),
        (((9, good[0][1]), *good), r"client\(s\) \[9\], which are not survivors"),
        ((*good, good[0]), r"repeats signer\(s\) \[0\]"),
        (good[:4], "only 4 valid signatures .* fewer than t=5"),
        (tuple((c, None) for c, _ in good), "consistency check is not signed"),
    ]
    for index, (proof, match) in enumerate(cases, start=1):
        with pytest.raises(ProtocolError, match=match):
            clients[index % 6].handle(4, ConsistencyProof(-1, 0, proof))


def test_signed_messages_carry_the_session_id() -> None:
    """An advertisement signed in another run (another session id) does not verify."""
    with pytest.raises(ConfigError, match="needs a session_id"):
        SecAggProtocol(verify_keys={0: bytes(32)})
    with pytest.raises(ConfigError, match="session_id must be 1 to 255 bytes"):
        SecAggProtocol(verify_keys={0: bytes(32)}, signing_keys={}, session_id=b"")
    proto = signed_protocol(4)
    ctx = RoundContext(round=3, participants=range(4), vector_size=2)
    inputs = make_inputs(ctx.participants, 2)
    old = {c: proto.client(c, ctx, inputs[c]).handle(0, None) for c in range(4)}
    other_run = SecAggProtocol(signing_keys=proto.signing_keys, verify_keys=proto.verify_keys,
                               session_id=b"run-43", secret_source=DerivedSecrets(MASTER))
    server = other_run.server(ctx)
    with pytest.raises(ProtocolError, match="only 0 of 4 clients advertised valid keys"):
        server.collect(0, old)
    assert "signed for another session or round" in server.rejected[0]


# ----------------------------------------------------------------- attack 3: disconnected


def plus_24() -> tuple[SecAggPlusProtocol, RoundContext, tuple[int, ...]]:
    proto = SecAggPlusProtocol(SecAggPlusConfig(degree=10), secret_source=DerivedSecrets(MASTER))
    ctx = RoundContext(round=0, participants=range(24), vector_size=3)
    source = proto.secret_source
    assert isinstance(source, DerivedSecrets)
    keys = [AdvertiseKeys(c, 0, source.x25519(c, 0, "c")[1], source.x25519(c, 0, "s")[1])
            for c in ctx.participants]
    seed = proto.graph_seed(ctx, keys)
    assert seed is not None
    return proto, ctx, ring_order(ctx.participants, seed)


def test_disconnected_survivors_abort_at_the_server() -> None:
    """N = 24, k = 10: two runs of 5 dropouts split the ring into 6 and 8; no sum comes out."""
    proto, ctx, ring = plus_24()
    plan = proto.plan(ctx)
    assert (plan.degree, plan.threshold) == (10, 6)
    dropouts = dict.fromkeys([*ring[0:5], *ring[11:16]], 2)
    with pytest.raises(ProtocolError, match=r"split into 2 unconnected parts .*sizes \[6, 8\]"):
        run_round(proto, ctx, make_inputs(ctx.participants, 3), dropouts=dropouts)


def test_disconnected_survivors_are_refused_by_every_client() -> None:
    """A server that skips its own check and announces them anyway: each survivor refuses."""
    proto, ctx, ring = plus_24()
    dropped = {*ring[0:5], *ring[11:16]}
    survivors = tuple(sorted(set(ctx.participants) - dropped))
    clients, _ = honest_phases(proto, ctx, make_inputs(ctx.participants, 3), set(survivors))
    for c in survivors:
        with pytest.raises(ProtocolError, match=r"split into 2 unconnected .*\(sizes \[6, 8\]\)"):
            clients[c].handle(3, SurvivorList(-1, 0, survivors))


@settings(max_examples=40, deadline=None)
@given(n=st.integers(8, 16), degree=st.sampled_from([2, 4]), data=st.data())
def test_unmasked_sum_is_the_plain_sum_exactly_when_survivors_connect(
    n: int, degree: int, data: st.DataObject
) -> None:
    """Any dropout set after sharing: the sum is right iff survivors are connected and ≥ t."""
    proto = SecAggPlusProtocol(SecAggPlusConfig(degree=degree),
                               secret_source=DerivedSecrets(MASTER))
    ctx = RoundContext(round=1, participants=range(n), vector_size=3)
    dropped = set(data.draw(st.lists(st.sampled_from(range(n)), max_size=n // 2, unique=True)))
    survivors = set(range(n)) - dropped
    source = proto.secret_source
    assert isinstance(source, DerivedSecrets)
    keys = [AdvertiseKeys(c, 1, source.x25519(c, 1, "c")[1], source.x25519(c, 1, "s")[1])
            for c in ctx.participants]
    graph = proto.graph(ctx, proto.graph_seed(ctx, keys))
    plan = proto.plan(ctx)
    t = plan.threshold
    feasible = (
        len(survivors) >= plan.min_participants
        and all(len((graph[c] | {c}) & survivors) >= t for c in survivors)
        and all(len(graph[d] & survivors) in (0,) or len(graph[d] & survivors) >= t
                for d in dropped)
        and len(components(graph, survivors)) == 1
    )
    inputs = make_inputs(ctx.participants, 3, seed=n)
    try:
        result = run_round(proto, ctx, inputs, dropouts=dict.fromkeys(dropped, 2))
    except ProtocolError:
        assert not feasible
        return
    assert feasible
    assert set(result.survivors) == survivors
    weights = np.array([inputs[c].weight for c in result.survivors])
    expected = np.average([inputs[c].update for c in result.survivors], axis=0, weights=weights)
    np.testing.assert_allclose(result.aggregate, expected, atol=1e-5)


# ----------------------------------------------------------------- replay, minimum, dropouts


def test_phase_zero_of_a_started_round_is_refused() -> None:
    proto = signed_protocol(4)
    inputs = make_inputs(tuple(range(4)), 2)
    for round_index in (3, 5):
        ctx = RoundContext(round=round_index, participants=range(4), vector_size=2)
        assert run_round(proto, ctx, inputs).survivors == (0, 1, 2, 3)
    for replayed in (5, 4, 0):
        ctx = RoundContext(round=replayed, participants=range(4), vector_size=2)
        with pytest.raises(ProtocolError, match=f"already started round 5; phase 0 of round "
                           f"{replayed} is refused"):
            run_round(proto, ctx, inputs)


def test_flower_node_refuses_phase_zero_of_a_started_round() -> None:
    flower = pytest.importorskip("fedpriv.integrations.flower")
    proto = SecAggProtocol(secret_source=DerivedSecrets(MASTER))
    ctx = RoundContext(round=2, participants=range(3), vector_size=4)
    inputs = make_inputs(ctx.participants, 4)
    trained: list[tuple[int, int]] = []

    def make_input(_m: Any, _c: Any, client_id: int, round_ctx: RoundContext) -> Any:
        trained.append((round_ctx.round, client_id))
        return flower.LocalUpdate(inputs[client_id])

    grid = flower.LoopbackGrid(flower.FedprivClient(proto, make_input), [1, 2, 3])
    ids = {0: 1, 1: 2, 2: 3}
    first = flower.run_protocol_round(grid, proto, ctx, ids)
    assert first.result.survivors == (0, 1, 2)
    with pytest.raises(ProtocolError):
        flower.run_protocol_round(grid, proto, ctx, ids)  # every node refuses phase 0
    assert sorted(trained) == [(2, 0), (2, 1), (2, 2)]  # no second training on the replay
    state = grid.context(1).state.config_records["fedpriv.started"]
    assert state["highest-round"] == 2
    later = RoundContext(round=3, participants=range(3), vector_size=4)
    assert flower.run_protocol_round(grid, proto, later, ids).result.survivors == (0, 1, 2)


def test_clients_refuse_rounds_below_their_minimum_of_participants() -> None:
    proto = SecAggProtocol(SecAggConfig(min_participants=5))
    small = RoundContext(round=0, participants=range(4), vector_size=2)
    inputs = make_inputs(small.participants, 2)
    with pytest.raises(ProtocolError, match=r"4 participant\(s\), fewer than the 5 a client "
                       "accepts"):
        proto.client(0, small, inputs[0])
    ctx = RoundContext(round=0, participants=range(6), vector_size=2)
    inputs = make_inputs(ctx.participants, 2)
    with pytest.raises(ProtocolError, match=r"only 4 client\(s\) sent a masked input, fewer than "
                       "the 5 every client accepts"):
        run_round(proto, ctx, inputs, dropouts={0: 2, 1: 2})
    # A server announcing fewer survivors than that: the client refuses to sign them.
    clients, _ = honest_phases(proto, ctx, inputs)
    with pytest.raises(ProtocolError, match=r"only 4 survivor\(s\) announced, fewer than the 5"):
        clients[2].handle(3, SurvivorList(-1, 0, (2, 3, 4, 5)))


def test_dropouts_in_the_consistency_round() -> None:
    """Clients vanishing before they sign: their inputs stay in the sum (they are in U3)."""
    proto = signed_protocol(8)
    ctx = RoundContext(round=0, participants=range(8), vector_size=3)
    inputs = make_inputs(ctx.participants, 3)
    result = run_round(proto, ctx, inputs, dropouts={6: 3})
    view = result.view
    assert isinstance(view, SecAggServerView)
    assert result.survivors == tuple(range(8))
    assert view.signed_by == view.unmasked_by == (0, 1, 2, 3, 4, 5, 7)
    weights = np.array([inputs[c].weight for c in range(8)])
    expected = np.average([inputs[c].update for c in range(8)], axis=0, weights=weights)
    np.testing.assert_allclose(result.aggregate, expected, atol=1e-5)
    # Two more (t = 6 of 8): too few sign, the round aborts before any share is revealed.
    with pytest.raises(ProtocolError, match=r"only 5 survivor\(s\) signed the survivor set"):
        run_round(signed_protocol(8), ctx, inputs, dropouts={5: 3, 6: 3, 7: 3})


@settings(max_examples=30, deadline=None)
@given(n=st.integers(5, 10), signed=st.booleans(), forward=st.sampled_from(["own", "all"]),
       data=st.data())
def test_split_view_never_yields_both_secrets_of_a_target(
    n: int, signed: bool, forward: str, data: st.DataObject
) -> None:
    """Any target, any split of the other clients, either mode: never t shares of both secrets."""
    proto = signed_protocol(n) if signed else SecAggProtocol(secret_source=DerivedSecrets(MASTER))
    ctx = RoundContext(round=0, participants=range(n), vector_size=2)
    target = data.draw(st.integers(0, n - 1))
    others = data.draw(st.lists(st.sampled_from(range(n)), unique=True))
    group_a = {target, *others}
    seeds, keys, _ = split_view_attack(proto, ctx, target, group_a, forward=forward,
                                       forge_acks=not signed)
    t = proto.plan(ctx).threshold
    assert len(seeds) < t or len(keys) < t
    if signed and group_a != set(range(n)):  # a real split: one side at most unmasks
        assert not (seeds and keys)
