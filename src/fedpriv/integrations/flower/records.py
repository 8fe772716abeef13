"""How one fedpriv phase travels in a Flower ``Message``: record names, fields and checks.

Owns the wire layout of the integration (spec: ``protocols/flower.md``):

- server → node, message type :data:`MESSAGE_TYPE` (``train.fedpriv``):
  ConfigRecord :data:`ROUND_RECORD` (format version, protocol name and public
  config, round, phase, the node's protocol client id; in phase 0 also the
  participants and the vector size) and, when the server session replied to this
  client after the previous phase, ConfigRecord :data:`INBOX_RECORD` holding the
  encoded fedpriv message; phase 0 may carry the application's own records too
  (e.g. the global adapter as an ArrayRecord), under names not starting with
  ``fedpriv.``;
- node → server: ConfigRecord :data:`REPLY_RECORD` (round, phase, client id, the
  encoded fedpriv message if the session sent one, the client's protocol seconds),
  MetricRecord :data:`STATS_RECORD` (the session's ``stats()``) and, in phase 0,
  MetricRecord :data:`METRICS_RECORD` (the application's local-training metrics).

Every field read from a record is type- and range-checked here (integers within
int64, seconds finite in [0, :data:`MAX_REPORTED_SECONDS`], at most
:data:`MAX_METRICS` finite metrics); a malformed record raises
:class:`~fedpriv.errors.ProtocolError`.  The protocol message inside is decoded by
:mod:`fedpriv.integrations.codec` and then checked against the round by the
server (:func:`fedpriv.protocols.boundary.admit`).
"""

from __future__ import annotations

import dataclasses
import json
import math
import numbers
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from flwr.app import ConfigRecord, MetricRecord, RecordDict

from fedpriv.errors import ProtocolError
from fedpriv.integrations.codec import decode_message, encode_message
from fedpriv.protocols.base import SERVER_ID, AggregationProtocol, ClientId, Message, RoundContext
from fedpriv.protocols.boundary import check_int

WIRE_VERSION = 1
"""Version of this record layout; a node refuses a round announced with another."""
MESSAGE_TYPE = "train.fedpriv"
"""Flower message type of every phase; register the handler with ``app.train("fedpriv")``."""
ROUND_RECORD = "fedpriv.round"
INBOX_RECORD = "fedpriv.inbox"
REPLY_RECORD = "fedpriv.reply"
STATS_RECORD = "fedpriv.stats"
METRICS_RECORD = "fedpriv.metrics"
DP_RECORD = "fedpriv.dp"
"""Phase-0 ConfigRecord with the DP state clients need this round (clip, rotation salt)."""
GLOBAL_RECORD = "global"
"""Phase-0 ArrayRecord of :class:`~.server.FedprivWorkflow` holding the global vector."""
GLOBAL_ARRAY = "vector"
"""Name of the global vector's array inside :data:`GLOBAL_RECORD`."""
MAX_REPORTED_SECONDS = 86_400.0
"""A node's reported protocol seconds for one phase must lie in [0, one day]."""
MAX_METRICS = 256
"""Most entries a node's stats or metrics record may hold."""


def protocol_spec(protocol: AggregationProtocol) -> str:
    """Return the public description of ``protocol`` that server and nodes must agree on.

    JSON of the protocol's name, its config dataclass and, for ``ckks``, the public
    key id: a node compares it with its own protocol's and refuses a round the server
    announces under another protocol or parameters (no silent downgrade to ``plain``).
    """
    config = getattr(protocol, "config", None)
    fields = (
        {f.name: getattr(config, f.name) for f in dataclasses.fields(config) if f.init}
        if config is not None and dataclasses.is_dataclass(config) else {}
    )
    spec: dict[str, Any] = {"name": protocol.name, "config": fields}
    key_id = getattr(protocol, "key_id", None)  # ckks: public, also on a server-only object
    if isinstance(key_id, bytes):
        spec["key_id"] = key_id.hex()
    return json.dumps(spec, sort_keys=True, default=list)


@dataclass(frozen=True)
class PhaseHeader:
    """The :data:`ROUND_RECORD` of a server → node message, checked."""

    round: int
    phase: int
    client_id: ClientId
    protocol: str
    """:func:`protocol_spec` of the server's protocol."""
    participants: tuple[ClientId, ...] | None = None
    """Phase 0 only."""
    vector_size: int | None = None
    """Phase 0 only."""

    def context(self) -> RoundContext:
        """Return the round's :class:`RoundContext` (phase 0 only)."""
        if self.participants is None or self.vector_size is None:
            raise ProtocolError(
                f"the phase-{self.phase} message of round {self.round} carries no round "
                "context; only phase 0 does."
            )
        return RoundContext(round=self.round, participants=self.participants,
                            vector_size=self.vector_size)


def _integer(record: ConfigRecord, key: str, what: str) -> int:
    value = record.get(key)
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ProtocolError(
            f"{what}: field {key!r} must be an integer; got a {type(value).__name__}."
        )
    return check_int(value, f"{what}: field {key!r}")


def _record(content: RecordDict, name: str, what: str) -> ConfigRecord:
    if name not in content.config_records:
        raise ProtocolError(
            f"{what} has no {name!r} ConfigRecord; it was not sent by fedpriv's Flower "
            "integration (or by an incompatible version)."
        )
    return content.config_records[name]


def phase_content(
    protocol: AggregationProtocol, ctx: RoundContext, phase: int, client_id: ClientId,
    inbox: Message | None, application: RecordDict | None = None,
) -> RecordDict:
    """Return the content of the server's phase-``phase`` message to ``client_id``."""
    header: dict[str, Any] = {
        "version": WIRE_VERSION, "protocol": protocol_spec(protocol), "round": ctx.round,
        "phase": phase, "client-id": client_id,
    }
    if phase == 0:
        header["participants"] = list(ctx.participants)
        header["vector-size"] = ctx.vector_size
    content = RecordDict()
    if application is not None:
        for name, record in application.items():
            if name in (ROUND_RECORD, INBOX_RECORD):
                raise ProtocolError(
                    f"application record {name!r} would overwrite the integration's own record; "
                    "rename it."
                )
            content[name] = record
    content.config_records[ROUND_RECORD] = ConfigRecord(header)
    if inbox is not None:
        content.config_records[INBOX_RECORD] = ConfigRecord({"message": encode_message(inbox)})
    return content


def read_header(content: RecordDict) -> PhaseHeader:
    """Return the checked :class:`PhaseHeader` of a server → node message."""
    what = "the fedpriv phase message"
    record = _record(content, ROUND_RECORD, what)
    version = _integer(record, "version", what)
    if version != WIRE_VERSION:
        raise ProtocolError(
            f"{what} uses wire version {version}; this node speaks {WIRE_VERSION}. Install the "
            "same fedpriv version on the server and every node."
        )
    spec = record.get("protocol")
    if not isinstance(spec, str):
        raise ProtocolError(f"{what}: field 'protocol' must be a string; got {spec!r}.")
    phase = _integer(record, "phase", what)
    participants: tuple[int, ...] | None = None
    vector_size: int | None = None
    if phase == 0:
        raw = record.get("participants")
        if not isinstance(raw, list) or not all(
            isinstance(c, int) and not isinstance(c, bool) for c in raw
        ):
            raise ProtocolError(f"{what}: 'participants' must be a list of client ids.")
        participants = tuple(int(c) for c in raw)
        vector_size = _integer(record, "vector-size", what)
    return PhaseHeader(
        round=_integer(record, "round", what), phase=phase,
        client_id=_integer(record, "client-id", what), protocol=spec,
        participants=participants, vector_size=vector_size,
    )


def read_inbox(content: RecordDict) -> Message | None:
    """Return the server's fedpriv message in a phase message, or ``None``."""
    if INBOX_RECORD not in content.config_records:
        return None
    data = content.config_records[INBOX_RECORD].get("message")
    if not isinstance(data, bytes):
        raise ProtocolError("the fedpriv inbox record must hold the message as bytes.")
    message = decode_message(data, what="the server's protocol message")
    if message.sender != SERVER_ID:
        raise ProtocolError(
            f"the inbox message claims sender {message.sender}, not the server ({SERVER_ID})."
        )
    return message


@dataclass(frozen=True)
class PhaseReply:
    """What a node answered to one phase, checked."""

    round: int
    phase: int
    client_id: ClientId
    message: Message | None
    seconds: float
    stats: Mapping[str, float]
    metrics: Mapping[str, float]


def reply_content(
    header: PhaseHeader, message: Message | None, seconds: float,
    stats: Mapping[str, float], metrics: Mapping[str, float] | None = None,
) -> RecordDict:
    """Return the content of a node's reply to the phase ``header`` announced."""
    fields: dict[str, Any] = {
        "round": header.round, "phase": header.phase, "client-id": header.client_id,
        "seconds": float(seconds),
    }
    if message is not None:
        fields["message"] = encode_message(message)
    content = RecordDict()
    content.config_records[REPLY_RECORD] = ConfigRecord(fields)
    content.metric_records[STATS_RECORD] = MetricRecord({k: float(v) for k, v in stats.items()})
    if metrics:
        content.metric_records[METRICS_RECORD] = MetricRecord(
            {k: float(v) for k, v in metrics.items()})
    return content


def read_reply(content: RecordDict, *, node: str) -> PhaseReply:
    """Return the checked :class:`PhaseReply` in a node's reply (``node`` names it in errors)."""
    what = f"the reply of {node}"
    record = _record(content, REPLY_RECORD, what)
    data = record.get("message")
    message = None
    if data is not None:
        if not isinstance(data, bytes):
            raise ProtocolError(f"{what}: the protocol message must be bytes.")
        message = decode_message(data, what=f"the protocol message of {node}")
    seconds = record.get("seconds", 0.0)
    if (isinstance(seconds, bool) or not isinstance(seconds, numbers.Real)
            or not 0.0 <= float(seconds) <= MAX_REPORTED_SECONDS):
        raise ProtocolError(
            f"{what}: 'seconds' must be a number in [0, {MAX_REPORTED_SECONDS:g}]."
        )

    def metrics(name: str) -> dict[str, float]:
        if name not in content.metric_records:
            return {}
        values = content.metric_records[name]
        if len(values) > MAX_METRICS:
            raise ProtocolError(f"{what}: more than {MAX_METRICS} metrics in {name!r}.")
        return {k: float(v) for k, v in values.items()
                if isinstance(k, str) and isinstance(v, (int, float)) and not isinstance(v, bool)
                and math.isfinite(v)}

    return PhaseReply(
        round=_integer(record, "round", what), phase=_integer(record, "phase", what),
        client_id=_integer(record, "client-id", what), message=message,
        seconds=float(seconds), stats=metrics(STATS_RECORD), metrics=metrics(METRICS_RECORD),
    )


__all__ = [
    "DP_RECORD",
    "GLOBAL_ARRAY",
    "GLOBAL_RECORD",
    "INBOX_RECORD",
    "MESSAGE_TYPE",
    "METRICS_RECORD",
    "REPLY_RECORD",
    "ROUND_RECORD",
    "STATS_RECORD",
    "WIRE_VERSION",
    "PhaseHeader",
    "PhaseReply",
    "phase_content",
    "protocol_spec",
    "read_header",
    "read_inbox",
    "read_reply",
    "reply_content",
]
