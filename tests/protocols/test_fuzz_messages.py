"""Fuzzing the server's network boundary: decode → validate → collect (issue 15, attack 4).

Properties, for every client message type of ``plain``, ``secagg``/``secagg+`` and
``ckks``:

- random bytes, and mutations of real encodings (flipped, cut or inserted bytes; a
  field's value replaced by a value of another type, an integer out of range, a map
  with other keys, an array of another dtype, 0–70 dimensions or huge/zero shapes),
  raise :class:`ProtocolError` and nothing else from ``decode_message`` and
  :func:`~fedpriv.protocols.boundary.admit` (and, for the server's messages that a
  node decodes, from ``decode_message``);
- a round in which one client sends such a message (in-process driver and the
  Flower path) either aborts with :class:`ProtocolError` or returns the weighted
  mean of its survivors' inputs — the plain sum of the honest clients, plus the
  hostile client's input only where its message reached the sum unchanged (or, for
  ``plain``, exactly as the server saw it).  The one case left unchecked is a
  mutation that the boundary accepts *and* that changes a value the hostile client
  may choose anyway (its masked input or ciphertexts, or a release it was asked
  for): no server can tell those from an honest input.

Example counts are small (seconds per test) and derandomized, so runs are repeatable.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest

pytest.importorskip("flwr")

from hypothesis import HealthCheck, event, given, note, settings
from hypothesis import strategies as st

from fedpriv.errors import ProtocolError
from fedpriv.integrations import codec
from fedpriv.integrations.flower import FedprivClient, LocalUpdate, LoopbackGrid
from fedpriv.integrations.flower import run_protocol_round as run_flower_round
from fedpriv.protocols import ClientInput, RoundContext, run_round
from fedpriv.protocols import Message as ProtocolMessage
from fedpriv.protocols.base import AggregationResult
from fedpriv.protocols.boundary import admit
from hostile import WithHostileClient, hostile_node, protocol_named, raw_array, raw_int, raw_str

CTX = RoundContext(round=5, participants=range(5), vector_size=24)
PHASES = {"plain": (0,), "secagg": (0, 1, 2, 3), "secagg+": (0, 1, 2, 3), "ckks": (0, 1)}
VALUE_PHASES = {("plain", 0), ("secagg", 2), ("secagg+", 2), ("ckks", 0), ("ckks", 1)}
"""Phases whose message carries a value the sender chooses freely (masked input,
ciphertexts, a requested release): a mutation the boundary accepts there is an input."""

FUZZ = settings(max_examples=150, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
ROUNDS = settings(FUZZ, max_examples=40)
FLOWER_ROUNDS = settings(FUZZ, max_examples=15)


def inputs_of(ctx: RoundContext) -> dict[int, ClientInput]:
    return {
        c: ClientInput((np.random.default_rng([11, c]).normal(size=ctx.vector_size) * 0.1)
                       .astype(np.float32), weight=(c + 1) / len(ctx.participants))
        for c in ctx.participants
    }


INPUTS = inputs_of(CTX)


def hostile_of(name: str, phase: int) -> int:
    return 0 if name == "ckks" and phase >= 1 else 2  # ckks: the key holder asked first


# ------------------------------------------------------------------ recorded messages


@dataclass(frozen=True)
class Sent:
    """One client message of an honest round, and what the server had sent that client."""

    phase: int
    client: int
    message: ProtocolMessage
    reply: ProtocolMessage | None


_RECORDED: dict[str, list[Sent]] = {}


def recorded(name: str) -> list[Sent]:
    """Return every client message of an honest in-process round of ``name`` (cached)."""
    if name not in _RECORDED:
        protocol = protocol_named(name)
        server = protocol.server(CTX)
        clients = {c: protocol.client(c, CTX, INPUTS[c]) for c in CTX.participants}
        inbox: dict[int, ProtocolMessage] = {}
        out: list[Sent] = []
        for phase in range(protocol.num_phases):
            sent = {}
            for c in CTX.participants:
                message = clients[c].handle(phase, inbox.get(c))
                if message is not None:
                    sent[c] = message
                    out.append(Sent(phase, c, message, inbox.get(c)))
            inbox = dict(server.collect(phase, sent))
        _RECORDED[name] = out
    return _RECORDED[name]


# ------------------------------------------------------------------------ mutations


def raw_bytes(data: bytes) -> bytes:
    return b"b" + struct.pack(">Q", len(data)) + data


def raw_float(value: float) -> bytes:
    return b"f" + struct.pack(">d", value)


def raw_items(tag: bytes, items: list[bytes]) -> bytes:
    return tag + struct.pack(">Q", len(items)) + b"".join(items)


DIMS = st.sampled_from([0, 1, 2, 3, 25, 2**28 + 1, 2**40, 2**62, 2**64 - 1])
DTYPES = st.sampled_from(["u8", "u4", "i8", "f8", "f4", "b1", "c16", "O", "U4", "V8", "zz"])
SPECIAL_INTS = {"int64 max + 1": 2**63, "int64 min - 1": -(2**63) - 1, "5000 digits": 10**4999,
                "-1": -1, "0": 0, "2^511": 2**511, "2^512": 2**512}
scalars = st.one_of(
    st.sampled_from(sorted(SPECIAL_INTS)).map(lambda k: raw_int(SPECIAL_INTS[k])),
    st.integers(-(2**70), 2**70).map(raw_int),
    st.text(max_size=8).map(raw_str),
    st.binary(max_size=40).map(raw_bytes),
    st.floats(allow_nan=True, allow_infinity=True).map(raw_float),
    st.sampled_from([b"N", b"T", b"F"]),
)
arrays = st.builds(
    lambda dtype, shape, data: raw_array(dtype, tuple(shape), data),
    DTYPES, st.lists(DIMS, max_size=70), st.binary(max_size=64),
) | st.builds(  # well-formed arrays of random dtype and shape (small)
    lambda array: codec.encode(array)[1:],
    st.sampled_from([np.uint64, np.uint32, np.int64, np.float64, np.bool_]).flatmap(
        lambda dtype: st.lists(st.integers(0, 3), max_size=3).map(
            lambda shape: np.zeros(tuple(shape), dtype=dtype))),
)
raw_values = st.recursive(
    scalars | arrays,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3).map(lambda items: raw_items(b"l", items)),
        st.lists(inner, max_size=3).map(lambda items: raw_items(b"t", items)),
        st.lists(st.tuples(scalars, inner), max_size=3).map(
            lambda pairs: raw_items(b"d", [k + v for k, v in pairs])),
    ),
    max_leaves=6,
)


@dataclass(frozen=True)
class Mutation:
    """One way to corrupt a message's encoding (drawn by hypothesis)."""

    kind: str
    args: tuple[Any, ...] = field(default=())

    def apply(self, message: ProtocolMessage) -> bytes:
        encoded = codec.encode_message(message)
        if self.kind == "flip":
            data = bytearray(encoded)
            for position, mask in self.args:
                data[position % len(data)] ^= mask
            return bytes(data)
        if self.kind == "cut":
            return encoded[: self.args[0] % len(encoded)]
        if self.kind == "insert":
            position, extra = self.args
            position %= len(encoded)
            return encoded[:position] + extra + encoded[position:]
        if self.kind == "field":
            index, raw = self.args
            names = [f for f in ("sender", *vars(message)) if hasattr(message, f)]
            name = names[index % len(names)]
            old = raw_str(name) + codec.encode(getattr(message, name))[1:]
            if encoded.count(old) != 1:
                return encoded
            return encoded.replace(old, raw_str(name) + raw)
        assert self.kind == "garbage"
        return self.args[0]


mutations = st.one_of(
    st.lists(st.tuples(st.integers(0, 2**16), st.integers(1, 255)), min_size=1, max_size=4)
    .map(lambda flips: Mutation("flip", tuple(flips))),
    st.integers(0, 2**16).map(lambda cut: Mutation("cut", (cut,))),
    st.tuples(st.integers(0, 2**16), st.binary(min_size=1, max_size=12))
    .map(lambda a: Mutation("insert", a)),
    st.tuples(st.integers(0, 16), raw_values).map(lambda a: Mutation("field", a)),
    st.tuples(st.integers(0, 16), raw_values).map(lambda a: Mutation("field", a)),
    st.binary(max_size=200).map(lambda b: Mutation("garbage", (b,))),
)
structural = st.one_of(
    st.integers(0, 2**16).map(lambda cut: Mutation("cut", (cut,))),
    st.tuples(st.integers(0, 2**16), st.binary(min_size=1, max_size=12))
    .map(lambda a: Mutation("insert", a)),
    st.tuples(st.integers(0, 16), raw_values).map(lambda a: Mutation("field", a)),
    st.binary(max_size=200).map(lambda b: Mutation("garbage", (b,))),
)
"""Mutations that change structure, types or lengths, not the bits of a value in place."""


def decoded_or_error(data: bytes) -> ProtocolMessage | ProtocolError:
    """Return what ``decode_message`` makes of ``data``: a message or its ProtocolError."""
    try:
        return codec.decode_message(data)  # anything but ProtocolError fails the test
    except ProtocolError as err:
        return err


# --------------------------------------------------- decode → validate, per message


@pytest.mark.parametrize("name", ["plain", "secagg", "secagg+", "ckks"])
@FUZZ
@given(data=st.data())
def test_mutated_messages_decode_and_validate_to_protocol_error_only(
    name: str, data: st.DataObject
) -> None:
    sent = data.draw(st.sampled_from(recorded(name)), label="message")
    mutation = data.draw(mutations, label="mutation")
    message = decoded_or_error(mutation.apply(sent.message))
    note(f"{type(sent.message).__name__} phase {sent.phase}: {message!r:.300}")
    if isinstance(message, ProtocolError):
        event("refused by the decoder")
        return
    try:
        admit(message, protocol=protocol_named(name), ctx=CTX, phase=sent.phase,
              client_id=sent.client, reply=sent.reply)
    except ProtocolError:
        event("refused by admit")
        return
    event("admitted")
    # Admitted: the message is well typed and fits the round.
    assert message.sender == sent.client
    assert getattr(message, "round", CTX.round) == CTX.round


@pytest.mark.parametrize("name", ["secagg", "secagg+", "ckks"])
@FUZZ
@given(data=st.data())
def test_mutated_server_messages_decode_to_protocol_error_only(
    name: str, data: st.DataObject
) -> None:
    """What a node decodes from the server (KeyDirectory, DecryptRequest ...) fails cleanly too."""
    replies = [s.reply for s in recorded(name) if s.reply is not None]
    reply = data.draw(st.sampled_from(replies), label="server message")
    message = decoded_or_error(data.draw(mutations, label="mutation").apply(reply))
    event("refused by the decoder" if isinstance(message, ProtocolError) else "decoded")


@FUZZ
@given(blob=st.binary(max_size=300), prefix=st.sampled_from(
    [b"", b"\x01", b"\x01D", b"\x01D" + struct.pack(">Q", 19) + b"secagg.MaskedInput",
     b"\x01D" + struct.pack(">Q", 17) + b"plain.PlainUpdate"]))
def test_random_bytes_decode_to_protocol_error_only(blob: bytes, prefix: bytes) -> None:
    message = decoded_or_error(prefix + blob)
    if not isinstance(message, ProtocolError):
        with pytest.raises(ProtocolError):  # random bytes never pass as client 0's answer
            admit(message, protocol=protocol_named("secagg"), ctx=CTX, phase=2,
                  client_id=0, reply=None)


def test_recorded_messages_pass_the_boundary_unchanged() -> None:
    """The honest messages themselves are admitted (so the properties above can fail)."""
    for name in PHASES:
        for sent in recorded(name):
            message = codec.decode_message(codec.encode_message(sent.message))
            admit(message, protocol=protocol_named(name), ctx=CTX, phase=sent.phase,
                  client_id=sent.client, reply=sent.reply)


# --------------------------------------------------- decode → validate → collect


@dataclass
class Tamper:
    """What the hostile client did: the bytes it sent and whether they decoded to a change."""

    honest: bytes = b""
    changed: bool = False

    def wire(self, mutation: Mutation) -> Callable[[ProtocolMessage], bytes]:
        def make(message: ProtocolMessage) -> bytes:
            self.honest = codec.encode_message(message)
            data = mutation.apply(message)
            decoded = decoded_or_error(data)
            self.changed = (not isinstance(decoded, ProtocolError)
                            and codec.encode_message(decoded) != self.honest)
            return data
        return make

    def objects(self, mutation: Mutation) -> Callable[[ProtocolMessage], Any]:
        wire = self.wire(mutation)

        def make(message: ProtocolMessage) -> Any:
            decoded = decoded_or_error(wire(message))
            return decoded  # a ProtocolError object is "not a message": the boundary drops it
        return make


def weighted_mean(clients: tuple[int, ...]) -> np.ndarray:
    weights = np.array([INPUTS[c].weight for c in clients])
    updates = np.array([INPUTS[c].update.astype(np.float64) for c in clients])
    return (weights @ updates) / weights.sum()


def check_sum(name: str, phase: int, result: AggregationResult, tamper: Tamper) -> None:
    """No round returns a wrong sum (see the module docstring for what 'right' means)."""
    hostile = hostile_of(name, phase)
    survivors = result.survivors
    assert set(survivors) <= set(CTX.participants) and survivors
    if hostile in result.rejected_clients:
        assert f"phase {phase}" in result.rejected_clients[hostile]
    accepted_change = tamper.changed and hostile not in result.rejected_clients
    if accepted_change and name == "plain" and hostile in survivors:
        view = result.view
        assert view.individual_updates is not None and view.individual_weights is not None
        weights = np.array([view.individual_weights[c] for c in survivors])
        updates = np.array([view.individual_updates[c].astype(np.float64) for c in survivors])
        for c in survivors:
            if c != hostile:
                np.testing.assert_array_equal(view.individual_updates[c], INPUTS[c].update)
        np.testing.assert_allclose(result.aggregate, (weights @ updates) / weights.sum(),
                                   rtol=1e-6, atol=1e-7)
        return
    if accepted_change and (name, phase) in VALUE_PHASES:
        event("changed value accepted (unchecked)")
        note("the boundary accepted a changed value the hostile client may choose anyway")
        return
    exact = weighted_mean(survivors)
    if name == "ckks":
        params = protocol_named(name).params  # type: ignore[attr-defined]
        release = params.release_bound(len(survivors))
        weight_slot = result.total_weight / protocol_named(name).config.max_weight * params.clip
        bound = 2 * release * params.clip / (weight_slot - release)
        assert np.max(np.abs(result.aggregate - exact)) <= bound
    else:
        np.testing.assert_allclose(result.aggregate, exact, atol=1e-5)


def check_abort(err: ProtocolError) -> None:
    """Check that an abort is the protocol's verdict (threshold, a failed check), not a crash."""
    event("round aborted")
    note(f"aborted: {err}")
    assert "bug in the protocol" not in str(err)


def draw_case(data: st.DataObject, name: str) -> tuple[int, Mutation]:
    phase = data.draw(st.sampled_from(PHASES[name]), label="phase")
    # In-place bit flips of values the hostile client chooses anyway are only checked
    # where the server reveals them (plain); elsewhere they are structural mutations.
    pool = mutations if (name, phase) not in VALUE_PHASES or name == "plain" else structural
    return phase, data.draw(pool, label="mutation")


@pytest.mark.parametrize("name", ["plain", "secagg", "secagg+", "ckks"])
@ROUNDS
@given(data=st.data())
def test_in_process_round_with_a_fuzzed_client_is_right_or_aborts(
    name: str, data: st.DataObject
) -> None:
    phase, mutation = draw_case(data, name)
    tamper = Tamper()
    protocol = WithHostileClient(protocol_named(name), hostile_of(name, phase), phase,
                                 tamper.objects(mutation))
    try:
        result = run_round(protocol, CTX, INPUTS)
    except ProtocolError as err:
        check_abort(err)
        return
    event("hostile refused" if result.rejected_clients else "hostile admitted")
    check_sum(name, phase, result, tamper)


@pytest.mark.parametrize("name", ["plain", "secagg", "ckks"])
@FLOWER_ROUNDS
@given(data=st.data())
def test_flower_round_with_a_fuzzed_node_is_right_or_aborts(
    name: str, data: st.DataObject
) -> None:
    phase, mutation = draw_case(data, name)
    tamper = Tamper()

    def make_input(_m: Any, _c: Any, client_id: int, _ctx: RoundContext) -> LocalUpdate:
        return LocalUpdate(INPUTS[client_id])

    node_ids = {c: c + 1 for c in CTX.participants}
    app = hostile_node(FedprivClient(protocol_named(name), make_input),
                       node_ids[hostile_of(name, phase)], phase, tamper.wire(mutation))
    try:
        flower = run_flower_round(LoopbackGrid(app, node_ids.values()), protocol_named(name),
                                  CTX, node_ids)
    except ProtocolError as err:
        check_abort(err)
        return
    event("hostile refused" if flower.result.rejected_clients else "hostile admitted")
    check_sum(name, phase, flower.result, tamper)


# ------------------------------------------------------------------ the limits, exactly


def test_codec_limits_are_exact() -> None:
    """ndim, elements, integer size and int64 fields: the last value accepted, the first refused."""
    from fedpriv.protocols.boundary import INT64_MAX, MAX_ARRAY_ELEMENTS, MAX_NDIM
    from fedpriv.protocols.secagg import AdvertiseKeys

    def decodes(data: bytes) -> bool:
        return not isinstance(decoded_or_error(data), ProtocolError)

    def array(shape: tuple[int, ...]) -> bytes:
        size = int(np.prod(shape)) if shape else 1
        return b"\x01" + raw_array("u1", shape, bytes(size))

    def value(data: bytes) -> bool:
        try:
            codec.decode(data)
        except ProtocolError:
            return False
        return True

    assert value(array((1,) * MAX_NDIM)) and not value(array((1,) * (MAX_NDIM + 1)))
    assert not value(array((1,) * 65))
    assert value(array((0, MAX_ARRAY_ELEMENTS))) and not value(array((0, MAX_ARRAY_ELEMENTS + 1)))
    assert not value(array((0, 2**14, 2**14 + 1)))  # zero size, 2^28 + 2^14 "elements"
    assert value(b"\x01" + raw_int(2**511 - 1)) and not value(b"\x01" + raw_int(2**511))
    keys = AdvertiseKeys(0, 0, bytes(32), bytes(range(32)))
    assert decodes(codec.encode_message(keys))
    for round_, ok in ((INT64_MAX, True), (INT64_MAX + 1, False), (-(2**63), True),
                       (-(2**63) - 1, False), (10**4999, False)):
        data = codec.encode_message(keys).replace(raw_str("round") + raw_int(0),
                                                  raw_str("round") + raw_int(round_))
        assert decodes(data) is ok, round_
    with pytest.raises(ProtocolError, match="9 dimensions; at most 8"):
        codec.encode(np.zeros((1,) * (MAX_NDIM + 1)))
    with pytest.raises(ProtocolError, match="cannot be encoded"):
        codec.encode(2**600)
