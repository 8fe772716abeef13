"""Helpers to play a hostile client against fedpriv's servers (issue 15, attack 4).

Raw pieces of the codec's documented layout (to write what the encoder refuses
to), :func:`forge` (a message with fields its constructor would refuse), a
protocol wrapper whose one client replaces one phase's message
(:class:`WithHostileClient`, in-process) and a ClientApp wrapper whose one node
replaces one phase's reply bytes (:func:`hostile_node`, Flower).
"""

from __future__ import annotations

import copy
import struct
from collections.abc import Callable
from typing import Any, ClassVar

from flwr.app import Context, Message

from fedpriv.integrations import codec
from fedpriv.integrations.flower.records import REPLY_RECORD, ROUND_RECORD
from fedpriv.protocols import (
    AggregationProtocol,
    ClientInput,
    ClientSession,
    RoundContext,
    ServerSession,
    create,
)
from fedpriv.protocols import Message as ProtocolMessage
from fedpriv.protocols.base import ClientId
from fedpriv.protocols.ckks.ledger import ReleaseLedger
from fedpriv.protocols.secagg import DerivedSecrets

MASTER = b"fedpriv hostile-client tests...."

# ----------------------------------------------------------- the codec's layout, by hand
# (fedpriv.integrations.codec's docstring: tag byte, u64 big-endian lengths)


def raw_str(text: str) -> bytes:
    data = text.encode()
    return b"s" + struct.pack(">Q", len(data)) + data


def raw_int(value: int) -> bytes:
    size = (value.bit_length() + 8) // 8
    return b"i" + struct.pack(">Q", size) + value.to_bytes(size, "big", signed=True)


def raw_array(dtype: str, shape: tuple[int, ...], data: bytes) -> bytes:
    dims = b"".join(struct.pack(">Q", d) for d in shape)
    return (b"a" + bytes([len(dtype)]) + dtype.encode() + bytes([len(shape)]) + dims
            + struct.pack(">Q", len(data)) + data)


def replace_field(message: ProtocolMessage, name: str, raw_value: bytes) -> bytes:
    """Return the encoding of ``message`` with field ``name``'s value replaced by raw bytes."""
    encoded = codec.encode_message(message)
    old = raw_str(name) + codec.encode(getattr(message, name))[1:]
    assert encoded.count(old) == 1
    return encoded.replace(old, raw_str(name) + raw_value)


def forge(message: ProtocolMessage, **fields: Any) -> ProtocolMessage:
    """Return a copy of ``message`` with ``fields`` set, bypassing its constructor's checks."""
    forged = copy.copy(message)
    for name, value in fields.items():
        object.__setattr__(forged, name, value)
    return forged


_PROTOCOLS: dict[str, AggregationProtocol] = {}


def protocol_named(name: str) -> AggregationProtocol:
    """Return the cached protocol ``name`` (ckks: with a fresh release ledger).

    These tests replay one round number many times under one ckks key set, which a
    real key holder's ledger refuses by design (``tests/protocols/test_ckks_active.py``
    checks that); each call here starts the ledger afresh, so call it before each round.
    """
    if name not in _PROTOCOLS:
        protocol = create(name)
        if name.startswith("secagg"):
            protocol.secret_source = DerivedSecrets(MASTER)  # type: ignore[attr-defined]
        _PROTOCOLS[name] = protocol
    protocol = _PROTOCOLS[name]
    if name == "ckks":
        keys = protocol.keys  # type: ignore[attr-defined]
        keys.ledger = ReleaseLedger(keys.key_id)
    return protocol


class HostileClient(ClientSession):
    """An honest session whose message of one phase is replaced by a forged object."""

    def __init__(self, inner: ClientSession, phase: int,
                 make: Callable[[ProtocolMessage], ProtocolMessage]) -> None:
        self.inner, self.phase, self.make = inner, phase, make

    def handle(self, phase: int, inbox: ProtocolMessage | None) -> ProtocolMessage | None:
        message = self.inner.handle(phase, inbox)
        if phase == self.phase and message is not None:
            return self.make(message)
        return message


class WithHostileClient(AggregationProtocol):
    """``inner`` with client ``hostile`` replaced by a :class:`HostileClient`."""

    num_phases: ClassVar[int] = 1

    def __init__(self, inner: AggregationProtocol, hostile: ClientId, phase: int,
                 make: Callable[[ProtocolMessage], ProtocolMessage]) -> None:
        self.inner, self.hostile, self.phase, self.make = inner, hostile, phase, make
        self.name = inner.name  # type: ignore[misc]
        self.num_phases = inner.num_phases  # type: ignore[misc]

    def __getattr__(self, attribute: str) -> Any:  # key_id, params, config ...
        return getattr(self.inner, attribute)

    def client(self, client_id: ClientId, ctx: RoundContext, data: ClientInput) -> ClientSession:
        session = self.inner.client(client_id, ctx, data)
        if client_id == self.hostile:
            return HostileClient(session, self.phase, self.make)
        return session

    def server(self, ctx: RoundContext) -> ServerSession:
        return self.inner.server(ctx)


def hostile_node(inner: Callable[[Message, Context], Message], node_id: int, phase: int,
                 make: Callable[[ProtocolMessage], bytes]) -> Callable[[Message, Context], Message]:
    """Return ``inner`` as a ClientApp function whose ``node_id`` forges its ``phase`` reply."""

    def app(message: Message, context: Context) -> Message:
        reply = inner(message, context)
        header = message.content.config_records[ROUND_RECORD]
        if context.node_id == node_id and header["phase"] == phase and not reply.has_error():
            record = reply.content.config_records[REPLY_RECORD]
            honest = codec.decode_message(record["message"])  # type: ignore[arg-type]
            record["message"] = make(honest)
        return reply

    return app
