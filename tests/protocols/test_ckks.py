"""CKKS aggregation: the released sum against the exact one, dropouts, bad input, streaming."""

from __future__ import annotations

import dataclasses
import math
import re
import weakref
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import tenseal as ts
from hypothesis import given, settings
from hypothesis import strategies as st

from fedpriv.errors import ConfigError, ProtocolError
from fedpriv.protocols import ClientInput, RoundContext, create, describe, run_round
from fedpriv.protocols.base import MESSAGE_HEADER_NBYTES, SERVER_ID
from fedpriv.protocols.ckks import (
    NUM_PHASES,
    CKKSConfig,
    CKKSKeys,
    CKKSProtocol,
    CKKSPublicContext,
    CKKSServer,
    CKKSServerView,
    DecryptRequest,
    EncryptedUpdate,
    ReleasedSum,
    ReleaseLedger,
    load_public_context,
    stages,
)
from fedpriv.protocols.ckks.params import float_error
from fedpriv.protocols.ckks.signing import upload_digest, upload_statement

Inputs = dict[int, ClientInput]
SLOTS = 2048  # N = 4096 with the defaults


# Fresh keys per test: a key set's ledger refuses a second upload or release for a round
# (protocols/ckks.md, "Release budget"), so rounds are not replayed across tests.
@pytest.fixture
def proto() -> CKKSProtocol:
    return CKKSProtocol(CKKSConfig(min_clients=1))


@pytest.fixture
def other() -> CKKSProtocol:
    """Another federation: same parameters, another secret key."""
    return CKKSProtocol(CKKSConfig(min_clients=1))


def make_inputs(ids: tuple[int, ...], size: int, seed: int, scale: float = 1.0) -> Inputs:
    rng = np.random.default_rng(seed)
    return {
        c: ClientInput(rng.uniform(-scale, scale, size).astype(np.float32), rng.uniform(0.01, 1.0))
        for c in ids
    }


def exact_sums(inputs: Inputs, survivors: tuple[int, ...], clip: float = 1.0) -> np.ndarray:
    """Return Σ w·clip(Δ) followed by Σ w·clip, in float64 (max_weight = 1)."""
    rows = [np.append(inputs[c].weight * np.clip(inputs[c].update.astype(np.float64), -clip, clip),
                      inputs[c].weight * clip) for c in survivors]
    return np.sum(rows, axis=0)


def check_released(proto: CKKSProtocol, inputs: Inputs, result: Any) -> None:
    """Check the released sum is within the documented bound, the mean within 2B / (W − B/c)."""
    view = result.view
    assert isinstance(view, CKKSServerView)
    m = len(result.survivors)
    bound = proto.params.release_bound(m)
    assert bound <= proto.config.precision
    exact = exact_sums(inputs, result.survivors)
    assert view.released_sum is not None
    error = np.abs(view.released_sum - exact)
    assert error.max() <= bound, (error.max(), bound)
    weights = np.array([inputs[c].weight for c in result.survivors])
    updates = np.stack([np.clip(inputs[c].update.astype(np.float64), -1, 1)
                        for c in result.survivors])
    mean = weights @ updates / weights.sum()
    mean_bound = 2 * bound / (weights.sum() - bound)
    assert np.abs(result.aggregate - mean).max() <= mean_bound
    assert result.total_weight == pytest.approx(weights.sum(), abs=bound)


# ----------------------------------------------------------------- the sum and its bound


@st.composite
def rounds(draw: st.DrawFn) -> tuple[RoundContext, Inputs, dict[int, int]]:
    n = draw(st.integers(1, 12))
    size = draw(st.one_of(st.integers(1, 40), st.integers(SLOTS - 2, SLOTS + 1),
                          st.integers(2 * SLOTS + 3, 5000)))
    ids = tuple(draw(st.lists(st.integers(0, 300), min_size=n, max_size=n, unique=True)))
    ctx = RoundContext(round=draw(st.integers(0, 9)), participants=ids, vector_size=size)
    inputs = make_inputs(ids, size, draw(st.integers(0, 2**16)), scale=draw(st.sampled_from(
        [1e-3, 0.5, 1.5])))
    dropouts = draw(st.dictionaries(st.sampled_from(ids), st.integers(0, NUM_PHASES - 1),
                                    max_size=n))
    return ctx, inputs, dropouts


def expected_holders(ctx: RoundContext, dropouts: dict[int, int]) -> tuple[list[int], int | None]:
    """Contributors are asked in id order at phases 1, 2, 3; one alive at its phase releases."""
    contributors = [c for c in ctx.participants if dropouts.get(c, NUM_PHASES) > 0]
    asked: list[int] = []
    for phase, holder in zip(range(1, NUM_PHASES), contributors, strict=False):
        asked.append(holder)
        if dropouts.get(holder, NUM_PHASES) > phase:
            return asked, holder
    return asked, None


@settings(max_examples=40, deadline=None)
@given(rounds())
def test_released_sum_is_within_the_bound_for_any_dropouts(
    case: tuple[RoundContext, Inputs, dict[int, int]],
) -> None:
    ctx, inputs, dropouts = case
    proto = CKKSProtocol(CKKSConfig(min_clients=1))  # hypothesis takes no fixtures
    asked, holder = expected_holders(ctx, dropouts)
    if holder is None:
        with pytest.raises(ProtocolError, match=r"no client's upload|no key holder released"):
            run_round(proto, ctx, inputs, dropouts=dropouts)
        return
    result = run_round(proto, ctx, inputs, dropouts=dropouts)
    view = result.view
    assert isinstance(view, CKKSServerView)
    assert result.survivors == tuple(c for c in ctx.participants if dropouts.get(c, 9) > 0)
    assert view.key_holders_asked == tuple(asked) and view.released_by == holder
    check_released(proto, inputs, result)
    clipped = sum(int(np.count_nonzero(np.abs(inputs[c].update) > 1.0)) for c in result.survivors)
    assert sum(result.client_stats[c]["clipped_values"] for c in result.survivors) == clipped
    assert [result.client_stats[c]["released"] for c in ctx.participants] == [
        float(c == holder) for c in ctx.participants]


def test_typical_lora_update_keeps_relative_error_below_1e_5(proto: CKKSProtocol) -> None:
    ids = tuple(range(10))
    rng = np.random.default_rng(3)
    common = rng.normal(0, 1e-3, 20_000)  # correlated clients, as in fine-tuning
    inputs = {c: ClientInput((common + rng.normal(0, 5e-4, common.size)).astype(np.float32),
                             weight=float(rng.integers(50, 200)) / 200) for c in ids}
    ctx = RoundContext(round=0, participants=ids, vector_size=common.size)
    result = run_round(proto, ctx, inputs)
    check_released(proto, inputs, result)
    mean = np.average(np.stack([inputs[c].update.astype(np.float64) for c in ids]), axis=0,
                      weights=[inputs[c].weight for c in ids])
    relative = np.abs(result.aggregate - mean).max() / np.abs(mean).max()
    assert relative <= 1e-5
    assert result.aggregate.dtype == np.float64


def test_max_weight_scales_weights_and_total(proto: CKKSProtocol) -> None:
    scaled = CKKSProtocol(CKKSConfig(min_clients=1, max_weight=500.0))
    ctx = RoundContext(round=0, participants=(0, 1), vector_size=3)
    inputs = {0: ClientInput(np.array([0.1, 0.2, 0.3]), 100.0),
              1: ClientInput(np.array([0.3, 0.2, 0.1]), 300.0)}
    result = run_round(scaled, ctx, inputs)
    np.testing.assert_allclose(result.aggregate, [0.25, 0.2, 0.15], atol=1e-8)
    assert result.total_weight == pytest.approx(400.0, abs=1e-5)
    with pytest.raises(ProtocolError, match=r"exceeds the configured public max_weight=1.0"):
        proto.client(0, ctx, ClientInput(np.ones(3), 2.0))


# ----------------------------------------------------------------- dropouts


def test_key_holder_dropouts_pass_the_request_on(proto: CKKSProtocol) -> None:
    ctx = RoundContext(round=1, participants=(3, 5, 8, 9), vector_size=10)
    inputs = make_inputs(ctx.participants, 10, seed=1)
    result = run_round(proto, ctx, inputs, dropouts={3: 1, 5: 2, 9: 0})
    assert result.survivors == (3, 5, 8)  # 3 and 5 uploaded before vanishing
    view = result.view
    assert isinstance(view, CKKSServerView)
    assert view.key_holders_asked == (3, 5, 8) and view.released_by == 8
    check_released(proto, inputs, result)
    # Bytes: the request reached 8 only; 3 and 5 vanished before it was delivered.
    request = result.cost.bytes_down
    assert request[3] == request[5] == request[9] == 0 < request[8]
    ctx = dataclasses.replace(ctx, round=2)  # a round is uploaded and released once per key
    with pytest.raises(ProtocolError, match=r"no key holder released the sum: \[3, 5, 8\]"):
        run_round(proto, ctx, inputs, dropouts={3: 1, 5: 2, 8: 3})


def test_dropping_after_the_release_changes_nothing(proto: CKKSProtocol) -> None:
    ctx = RoundContext(round=0, participants=(0, 1, 2), vector_size=5)
    inputs = make_inputs(ctx.participants, 5, seed=2)
    result = run_round(proto, ctx, inputs, dropouts={0: 2, 1: 3})
    assert result.survivors == (0, 1, 2)
    assert isinstance(result.view, CKKSServerView) and result.view.released_by == 0
    check_released(proto, inputs, result)


def test_too_few_uploads_abort_before_any_decryption() -> None:
    strict = create("ckks")  # min_clients = 2
    ctx = RoundContext(round=0, participants=(0, 1, 2), vector_size=4)
    inputs = make_inputs(ctx.participants, 4, seed=0)
    with pytest.raises(ProtocolError, match=r"only 1 client.* fewer than min_clients=2"):
        run_round(strict, ctx, inputs, dropouts={0: 0, 1: 0})
    ctx = dataclasses.replace(ctx, round=1)
    with pytest.raises(ProtocolError, match=r"no client's upload was accepted"):
        run_round(strict, ctx, inputs, dropouts=dict.fromkeys(ctx.participants, 0))
    ctx = dataclasses.replace(ctx, round=2)
    assert run_round(strict, ctx, inputs, dropouts={0: 0}).survivors == (1, 2)


# ----------------------------------------------------------------- the release


def signed_round(
    proto: CKKSProtocol, ctx: RoundContext, inputs: Inputs,
) -> tuple[DecryptRequest, dict[int, Any]]:
    """Run phase 0; return the server's request and the client sessions (after phase 0)."""
    server = proto.server(ctx)
    sessions = {c: proto.client(c, ctx, inputs[c]) for c in ctx.participants}
    uploads = {c: session.handle(0, None) for c, session in sessions.items()}
    (holder, request), = server.collect(0, uploads).items()
    assert holder == min(ctx.participants) and isinstance(request, DecryptRequest)
    return request, sessions


def summed_request(proto: CKKSProtocol, ctx: RoundContext, inputs: Inputs) -> DecryptRequest:
    return signed_round(proto, ctx, inputs)[0]


def test_release_is_flooded_and_on_the_grid_never_the_raw_decryption(
    proto: CKKSProtocol, monkeypatch: pytest.MonkeyPatch,
) -> None:
    def forbidden(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("flooding noise must not come from numpy.random")

    ctx = RoundContext(round=0, participants=(0, 1, 2), vector_size=6000)
    inputs = make_inputs(ctx.participants, 6000, seed=5, scale=1e-2)
    monkeypatch.setattr(np.random, "default_rng", forbidden)
    monkeypatch.setattr(np.random, "normal", forbidden)
    request, sessions = signed_round(proto, ctx, inputs)
    sizes = proto.params.chunk_sizes(ctx.vector_size)
    uploads = [(u.sender, u.chunks) for u in request.uploads]
    raw = np.concatenate(list(stages.decrypt_sum(
        proto.keys.private_context, uploads, sizes, proto.params, "test")))
    # Two key holders release the same uploads' sum.  Each keeps its own ledger in a
    # deployment; here they share the key set, so the second one gets a fresh ledger.
    releases: list[ReleasedSum] = []
    for c in (0, 1):
        proto.keys.ledger = ReleaseLedger(proto.key_id)
        release = sessions[c].handle(1, request)
        assert isinstance(release, ReleasedSum)
        releases.append(release)
    m, params = 3, proto.params
    grid, flood = params.grid(m), params.flood_std(m)
    assert flood == 2.0**params.flood_bits * params.error_bound(m) and flood / 2 < grid <= flood
    exact = exact_sums(inputs, ctx.participants)
    floor = float_error(params.value_bound, params.poly_modulus_degree)  # double rounding
    assert np.abs(raw - exact).max() <= params.error_bound(m) + floor  # far below the flood
    raw_units = raw / grid
    assert np.count_nonzero(raw_units == np.round(raw_units)) == 0  # raw is not on the grid
    deltas = []
    for release in releases:
        assert release.grid_exponent == math.log2(grid)
        values = release.values()
        np.testing.assert_array_equal(values / grid, release.units)  # exactly on the grid
        delta = values - raw
        assert np.abs(delta).max() <= params.tail * flood + grid / 2
        assert np.abs(values - exact).max() <= params.release_bound(m)
        # The difference is the flooding noise: its spread is σ_f (and rounding), not e.
        assert np.std(delta) == pytest.approx(math.sqrt(flood**2 + grid**2 / 12), rel=0.06)
        assert abs(np.mean(delta)) < 5 * flood / math.sqrt(delta.size)
        deltas.append(delta)
    assert np.count_nonzero(releases[0].units == releases[1].units) < 0.2 * raw.size
    assert abs(np.corrcoef(deltas[0], deltas[1])[0, 1]) < 0.05  # independent draws


def test_key_holder_checks_the_request(proto: CKKSProtocol) -> None:
    inputs = make_inputs((0, 1), 3, seed=0)

    def fresh(round_index: int) -> tuple[DecryptRequest, Any]:
        ctx = RoundContext(round=round_index, participants=(0, 1), vector_size=3)
        request, sessions = signed_round(proto, ctx, inputs)
        return request, sessions[0]

    request, holder = fresh(2)
    assert isinstance(holder.handle(1, request), ReleasedSum)
    with pytest.raises(ProtocolError, match=r"asked to decrypt twice"):
        holder.handle(2, request)
    old_uploads = request.uploads
    Edit = Callable[[DecryptRequest], dict[str, Any]]
    cases: list[tuple[Edit, str]] = [
        (lambda r: {"round": r.round + 1}, "replayed from another round"),
        (lambda r: {"key_id": bytes(16)}, "another key set"),
        (lambda r: {"uploads": r.uploads[1:]}, "including this key holder"),
        (lambda r: {"uploads": r.uploads[::-1]}, "sorted, unique"),
        (lambda r: {"uploads": (*r.uploads, r.uploads[1])}, "sorted, unique"),
        (lambda r: {"uploads": (r.uploads[0], dataclasses.replace(
            r.uploads[1], chunks=r.uploads[1].chunks * 2))},
         "has 2 ciphertexts; the round's update needs 1"),
        (lambda r: {"uploads": (r.uploads[0], old_uploads[1])},  # replayed from round 2
         "forwarded upload is of round 2"),
        (lambda r: {"uploads": (r.uploads[0], dataclasses.replace(old_uploads[1], round=r.round))},
         "signature on client 1's upload does not verify"),
    ]
    for index, (edit, match) in enumerate(cases):
        request, holder = fresh(10 + index)
        with pytest.raises(ProtocolError, match=match):
            holder.handle(1, dataclasses.replace(request, **edit(request)))
    strict = CKKSProtocol(CKKSConfig(min_clients=2), keys=proto.keys)
    ctx = RoundContext(round=30, participants=(0, 1), vector_size=3)
    request, sessions = signed_round(strict, ctx, inputs)
    with pytest.raises(ProtocolError, match=r"refuses to decrypt a sum of 1 client"):
        sessions[0].handle(1, dataclasses.replace(request, uploads=request.uploads[:1]))
    client = proto.client(1, dataclasses.replace(ctx, round=31), inputs[1])
    with pytest.raises(ProtocolError, match=r"expects phase 0"):
        client.handle(1, None)
    client.handle(0, None)
    with pytest.raises(ProtocolError, match=r"expected a DecryptRequest"):
        client.handle(1, ReleasedSum(SERVER_ID, 31, proto.keys.key_id, 0, np.zeros(4, np.int64)))


def test_sum_under_another_key_is_never_released(proto: CKKSProtocol, other: CKKSProtocol) -> None:
    """A ciphertext of another key set that claims this key id decrypts out of range."""
    ctx = RoundContext(round=0, participants=(0, 1), vector_size=50)
    inputs = make_inputs(ctx.participants, 50, seed=4)
    foreign = upload(other, ctx, 1, inputs).chunks
    # A hostile member of the federation signs ciphertexts made under another key set.
    statement = upload_statement(proto.session_id, 0, proto.key_id, 1, 50, len(foreign),
                                 upload_digest(foreign))
    forged = EncryptedUpdate(1, 0, proto.key_id, foreign, proto.signers.sign(1, statement))
    server = proto.server(ctx)
    honest = proto.client(0, ctx, inputs[0])
    own = honest.handle(0, None)
    assert own is not None
    (_, request), = server.collect(0, {0: own, 1: forged}).items()
    with pytest.raises(ProtocolError, match=r"another key set .* Nothing is released"):
        honest.handle(1, request)


# ----------------------------------------------------------------- the server's bad input


def test_server_refuses_a_private_context(proto: CKKSProtocol) -> None:
    private = proto.keys.private_context_bytes()
    with pytest.raises(ProtocolError, match=r"holds the secret key"):
        load_public_context(private)
    with pytest.raises(ProtocolError, match=r"holds the secret key"):
        load_public_context(proto.keys.private_context)
    ctx = RoundContext(round=0, participants=(0,), vector_size=2)
    with pytest.raises(ProtocolError, match=r"holds the secret key"):
        CKKSServer(proto, ctx, CKKSPublicContext(private, proto.keys.key_id))
    with pytest.raises(ProtocolError, match=r"does not parse"):
        load_public_context(b"not a context")
    public = load_public_context(proto.keys.public().context_bytes)
    assert not public.is_private() and not public.has_secret_key()
    server = proto.server(ctx)
    assert isinstance(server, CKKSServer)
    assert not server._context.is_private()  # the session never holds the secret key
    with pytest.raises(ProtocolError, match=r"private TenSEAL context"):
        CKKSKeys(proto.params, public, proto.keys.key_id)


def upload(proto: CKKSProtocol, ctx: RoundContext, client: int, inputs: Inputs) -> EncryptedUpdate:
    message = proto.client(client, ctx, inputs[client]).handle(0, None)
    assert isinstance(message, EncryptedUpdate)
    return message


def test_server_drops_a_client_with_a_foreign_malformed_or_replayed_upload(
    proto: CKKSProtocol, other: CKKSProtocol,
) -> None:
    ctx = RoundContext(round=4, participants=(0, 1), vector_size=SLOTS + 10)  # two chunks
    inputs = make_inputs(ctx.participants, ctx.vector_size, seed=9)
    honest = upload(proto, ctx, 0, inputs)
    good = upload(proto, ctx, 1, inputs)
    foreign = upload(other, ctx, 1, inputs)
    bigger = CKKSProtocol(CKKSConfig(min_clients=1, poly_modulus_degree=8192))
    big_ctx = RoundContext(round=4, participants=(0, 1), vector_size=ctx.vector_size)
    other_params = upload(bigger, big_ctx, 1, inputs)
    context = proto.keys.private_context
    short = ts.ckks_vector(context, np.zeros(5), scale=proto.params.scale).serialize()
    rescaled = ts.ckks_vector(context, np.zeros(10 + 1), scale=2.0**40).serialize()
    cases: list[tuple[Any, str]] = [
        (foreign, "client 1 encrypted under another key set"),
        (dataclasses.replace(good, chunks=good.chunks[:1]), "sent 1 ciphertexts; .* needs 2"),
        (dataclasses.replace(good, round=3), "of round 3; a message replayed"),
        (dataclasses.replace(good, chunks=(good.chunks[0], short)),
         "ciphertext 1 holds 5 values in 1 ciphertext.*expected 11"),
        (dataclasses.replace(good, chunks=(good.chunks[0], rescaled)),
         "ciphertext 1 is not a fresh ciphertext"),
        (dataclasses.replace(good, chunks=(good.chunks[0], b"\x00garbage")),
         "not a CKKS ciphertext under this federation's parameters"),
        (dataclasses.replace(good, key_id=proto.keys.key_id,
                             chunks=other_params.chunks * 2),
         "client 1's upload: ciphertext 0 is not a CKKS ciphertext under this federation"),
        (dataclasses.replace(good, signature=bytes(64)), "signature on client 1's upload"),
        (dataclasses.replace(good, chunks=(honest.chunks[0], good.chunks[1])),  # valid, altered
         "signature on client 1's upload"),
        (ReleasedSum(1, 4, proto.keys.key_id, 0, np.zeros(3, np.int64)),
         "expected an EncryptedUpdate"),
    ]
    for message, match in cases:
        server = proto.server(ctx)
        (holder, request), = server.collect(0, {0: honest, 1: message}).items()
        # Client 1 drops out; the round goes on with client 0 (min_clients = 1).
        assert holder == 0 and isinstance(request, DecryptRequest)
        assert request.contributors == (0,)
        (rejected, reason), = server.rejected
        assert rejected == 1 and re.search(match, reason), (match, reason)


def test_server_checks_phases_and_drops_a_bad_release(proto: CKKSProtocol) -> None:
    inputs = make_inputs((0, 1), 4, seed=0)
    ctx = RoundContext(round=0, participants=(0, 1), vector_size=4)
    server = proto.server(ctx)
    with pytest.raises(ProtocolError, match=r"expects phase 0"):
        server.collect(1, {})
    server.collect(0, {c: upload(proto, ctx, c, inputs) for c in ctx.participants})
    wrong_grid = ReleasedSum(0, 0, proto.keys.key_id, 3, np.zeros(5, np.int64))
    # The key holder's malformed release drops it; the next contributor is asked.
    (asked, request), = server.collect(1, {0: wrong_grid}).items()
    assert asked == 1 and isinstance(request, DecryptRequest)
    assert server.rejected[0][0] == 0 and "grid 2^3 and 5 values" in server.rejected[0][1]
    ctx = dataclasses.replace(ctx, round=1)
    server = proto.server(ctx)
    server.collect(0, {c: upload(proto, ctx, c, inputs) for c in ctx.participants})
    stray = ReleasedSum(1, 1, proto.keys.key_id, 3, np.zeros(5, np.int64))
    assert set(server.collect(1, {1: stray})) == {1}  # holder 0 sent nothing: 1 is asked
    assert "unexpected ReleasedSum from client 1" in server.rejected[0][1]
    with pytest.raises(ProtocolError, match=r"finish\(\) after"):
        proto.server(ctx).finish()
    too_many = RoundContext(round=0, participants=tuple(range(101)), vector_size=4)
    with pytest.raises(ProtocolError, match=r"101 participants exceed max_clients=100"):
        proto.server(too_many)


# ----------------------------------------------------------------- view, messages, cost


def test_view_holds_ciphertexts_and_the_release_only(proto: CKKSProtocol) -> None:
    ctx = RoundContext(round=7, participants=(2, 4, 6), vector_size=2 * SLOTS - 1)  # 2 full
    inputs = make_inputs(ctx.participants, ctx.vector_size, seed=8)
    result = run_round(proto, ctx, inputs, dropouts={6: 0})
    view = result.view
    assert isinstance(view, CKKSServerView)
    assert view.protocol == "ckks" and describe("ckks").reveals_individual_updates is False
    assert not view.observes_individual_updates and view.individual_weights is None
    assert [type(m).__name__ for m in view.transcript] == [
        "EncryptedUpdate", "EncryptedUpdate", "ReleasedSum"]
    assert view.key_id == proto.keys.key_id and view.parameters == proto.params
    assert view.total_weight == result.total_weight
    for message in view.transcript:  # no plaintext update anywhere in what the server saw
        assert not any(isinstance(v, np.ndarray) and v.dtype.kind == "f"
                       for v in vars(message).values())
    # Cost: an upload is its true serialized size; the request goes to the key holder only.
    sizes = {c: result.cost.bytes_up[c] for c in ctx.participants}
    ups = {m.sender: m for m in view.transcript if isinstance(m, EncryptedUpdate)}
    release = view.transcript[-1]
    assert sizes[6] == 0 and sizes[4] == ups[4].nbytes()
    assert sizes[2] == ups[2].nbytes() + release.nbytes()
    assert result.cost.bytes_down[2] > 0 == result.cost.bytes_down[4] == result.cost.bytes_down[6]
    expansion = ups[4].nbytes() / (4 * ctx.vector_size)
    assert 9.0 < expansion < 12.0  # measured 11.0x for 56 + 24-bit primes at N = 4096


@pytest.mark.parametrize("kind", ["upload", "request", "release"])
def test_message_nbytes_is_the_serialized_length(proto: CKKSProtocol, kind: str) -> None:
    ctx = RoundContext(round=3, participants=(0, 1), vector_size=SLOTS + 1)
    inputs = make_inputs(ctx.participants, ctx.vector_size, seed=0)
    message: Any
    if kind == "upload":
        message = upload(proto, ctx, 1, inputs)
        parse: Callable[..., Any] = EncryptedUpdate.from_payload
    elif kind == "request":
        message = summed_request(proto, ctx, inputs)
        parse = DecryptRequest.from_payload
    else:
        message = ReleasedSum(0, 3, proto.keys.key_id, -37,
                              np.array([-(2**62), -1, 0, 5, 2**62], dtype=np.int64))
        parse = ReleasedSum.from_payload
    payload = message.payload()
    assert message.nbytes() == MESSAGE_HEADER_NBYTES + len(payload)
    back = parse(message.sender, payload)
    assert back.payload() == payload and back.nbytes() == message.nbytes()
    with pytest.raises(ProtocolError, match=r"truncated or malformed|extra bytes"):
        parse(message.sender, payload[:-1])
    with pytest.raises(ProtocolError, match=r"extra bytes"):
        parse(message.sender, payload + b"\x00")


def test_messages_reject_malformed_fields(proto: CKKSProtocol) -> None:
    key = proto.keys.key_id
    signature = bytes(64)
    with pytest.raises(ProtocolError, match=r"key_id must be 16 bytes"):
        EncryptedUpdate(0, 0, b"short", (b"x",), signature)
    with pytest.raises(ProtocolError, match=r"at least one non-empty"):
        EncryptedUpdate(0, 0, key, (), signature)
    with pytest.raises(ProtocolError, match=r"not one bytes"):
        EncryptedUpdate(0, 0, key, b"abc", signature)  # type: ignore[arg-type]
    with pytest.raises(ProtocolError, match=r"signature must be 64 bytes"):
        EncryptedUpdate(0, 0, key, (b"x",), b"short")
    with pytest.raises(ProtocolError, match=r"at least one EncryptedUpdate"):
        DecryptRequest(SERVER_ID, 0, key, ())
    with pytest.raises(ProtocolError, match=r"1-D int64 array"):
        ReleasedSum(0, 0, key, 0, np.zeros(3))


# ----------------------------------------------------------------- streaming memory


class LiveCounter:
    """Wrap a TenSEAL constructor; count the vectors it made that are still alive."""

    def __init__(self, make: Callable[..., Any]) -> None:
        self.make, self.live, self.peak, self.made = make, 0, 0, 0

    def _gone(self) -> None:
        self.live -= 1

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        vector = self.make(*args, **kwargs)
        self.made += 1
        self.live += 1
        self.peak = max(self.peak, self.live)
        weakref.finalize(vector, self._gone)
        return vector


def test_encryption_streams_one_ciphertext_at_a_time(
    proto: CKKSProtocol, monkeypatch: pytest.MonkeyPatch,
) -> None:
    encrypted = LiveCounter(ts.ckks_vector)
    loaded = LiveCounter(ts.ckks_vector_from)
    monkeypatch.setattr(ts, "ckks_vector", encrypted)
    monkeypatch.setattr(ts, "ckks_vector_from", loaded)
    size = 5 * SLOTS + 17  # 6 ciphertexts with the weight slot
    ctx = RoundContext(round=0, participants=(0, 1, 2), vector_size=size)
    inputs = make_inputs(ctx.participants, size, seed=1)
    chunks_seen: list[int] = []
    original = stages.clipped_chunks

    def spy(*args: Any) -> Any:
        for values, clipped in original(*args):
            chunks_seen.append(values.size)
            yield values, clipped

    monkeypatch.setattr("fedpriv.protocols.ckks.client.clipped_chunks", spy)
    client = proto.client(0, ctx, inputs[0])
    message = client.handle(0, None)
    assert isinstance(message, EncryptedUpdate) and len(message.chunks) == 6
    assert encrypted.made == 6 and encrypted.peak == 1 and encrypted.live == 0
    assert chunks_seen == [SLOTS] * 5 + [18]  # the weighted vector is built chunk by chunk
    uploads = {0: message, **{c: upload(proto, ctx, c, inputs) for c in (1, 2)}}
    server = proto.server(ctx)
    (_, request), = server.collect(0, uploads).items()
    assert loaded.made == 18 and loaded.peak == 1  # each ciphertext checked on its own
    loaded.made = loaded.peak = 0
    client.handle(1, request)
    assert loaded.made == 18 and loaded.peak <= 2  # the holder's sum: total + one ciphertext


def test_registry_builds_ckks_from_keyword_parameters() -> None:
    built = create("ckks", clip=0.5, max_clients=20, precision=1e-8,
                   coeff_mod_bit_sizes=[56, 24, 29], min_clients=1)
    assert isinstance(built, CKKSProtocol)
    assert built.config.coeff_mod_bit_sizes == (56, 24, 29)
    assert built.params.coeff_mod_bit_sizes == (56, 24, 29)
    assert built.num_phases == NUM_PHASES == 4
    ctx = RoundContext(round=0, participants=(0,), vector_size=3)
    result = run_round(built, ctx, {0: ClientInput(np.array([0.25, -0.75, 0.0]), 1.0)})
    np.testing.assert_allclose(result.aggregate, [0.25, -0.5, 0.0], atol=1e-7)
    assert result.client_stats[0]["clipped_values"] == 1.0


def test_public_only_protocol_serves_the_server_and_refuses_clients(proto: CKKSProtocol) -> None:
    server_only = CKKSProtocol(proto.config, public=proto.keys.public())
    assert not server_only.has_secret_key and proto.has_secret_key
    assert server_only.key_id == proto.key_id
    assert "public only" in repr(server_only) and "public only" not in repr(proto)
    ctx = RoundContext(round=0, participants=(0, 1), vector_size=4)
    assert isinstance(server_only.server(ctx), CKKSServer)
    with pytest.raises(ConfigError, match="holds only the public context"):
        server_only.client(0, ctx, ClientInput(np.zeros(4, np.float32), 1.0))
    with pytest.raises(ConfigError, match="holds only the public context"):
        _ = server_only.keys


def test_public_only_protocol_refuses_secret_material(proto: CKKSProtocol) -> None:
    with pytest.raises(ConfigError, match="not both"):
        CKKSProtocol(proto.config, keys=proto.keys, public=proto.keys.public())
    with pytest.raises(ConfigError, match="CKKSPublicContext"):
        CKKSProtocol(proto.config, public=proto.keys)  # type: ignore[arg-type]
    leaked = CKKSPublicContext(proto.keys.private_context_bytes(), proto.key_id)
    with pytest.raises(ProtocolError):
        CKKSProtocol(proto.config, public=leaked)
