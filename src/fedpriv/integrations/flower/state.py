"""Keeping a client session alive between phases in Flower's ``Context.state``.

Flower runs a ``ClientApp`` once per message, and in a deployment each run is a
fresh ``flwr-clientapp`` process: the only thing that survives between the
phases of a round is the node's ``Context.state`` (a ``RecordDict`` the SuperNode
keeps per run, and the simulation engine keeps per node).  So after each phase
the node's :class:`~fedpriv.protocols.ClientSession` is *suspended* into bytes
(:func:`suspend`) under the ConfigRecord :data:`SESSION_RECORD`, and the next
phase *resumes* it (:func:`resume`) with the node's own protocol object.

A suspended session is the session's attributes, encoded with the pickle-free
:mod:`fedpriv.integrations.codec` — except the attributes that point at the
protocol object (its config, keys and secret source), which :func:`resume`
re-attaches from the node's own protocol.  Which attributes those are is listed
per session class in :data:`SESSION_CLASSES`; a session class not listed cannot
be suspended.

The state holds the client's secrets of the round (its X25519 private keys and
self-mask seed until SecAgg's phase 2, the shares it holds) and its update, as
Flower's own SecAgg+ mod keeps its keys in ``Context.state``: it stays on the
node (SuperNode memory and the local Runtime API connection to the
``flwr-clientapp`` process) and is deleted after the round's last phase.
"""

from __future__ import annotations

from typing import Any

from flwr.app import ConfigRecord, Context

from fedpriv.errors import ProtocolError
from fedpriv.integrations.codec import decode, encode
from fedpriv.protocols.base import AggregationProtocol, ClientSession
from fedpriv.protocols.ckks.client import CKKSClient
from fedpriv.protocols.ckks.protocol import CKKSProtocol
from fedpriv.protocols.plain import PlainClient, PlainProtocol
from fedpriv.protocols.secagg.client import SecAggClient
from fedpriv.protocols.secagg.protocol import SecAggFamily

SESSION_RECORD = "fedpriv.session"
"""Name of the ConfigRecord in ``Context.state`` that holds the suspended session."""
STARTED_RECORD = "fedpriv.started"
"""Name of the ConfigRecord in ``Context.state`` that holds the highest round this node started.

Kept across rounds (never deleted): the node refuses phase 0 of any round not above
it, so a server cannot replay a round to get two sums of the same inputs.
"""

SESSION_CLASSES: dict[str, tuple[type[ClientSession], type[AggregationProtocol], tuple[str, ...]]]
SESSION_CLASSES = {
    "plain": (PlainClient, PlainProtocol, ()),
    "secagg": (SecAggClient, SecAggFamily, ("_protocol",)),
    "ckks": (CKKSClient, CKKSProtocol, ("_protocol",)),
}
"""Suspendable session classes by name: (session class, protocol class, protocol attributes)."""


def _entry(session: ClientSession) -> tuple[str, tuple[str, ...]]:
    for name, (cls, _, bound) in SESSION_CLASSES.items():
        if type(session) is cls:
            return name, bound
    raise ProtocolError(
        f"{type(session).__name__} sessions cannot be kept between Flower messages; add the "
        "class to fedpriv.integrations.flower.state.SESSION_CLASSES with the attributes that "
        "hold its protocol object."
    )


def suspend(session: ClientSession) -> bytes:
    """Return ``session``'s state as bytes (its protocol object left out)."""
    name, bound = _entry(session)
    attributes = {k: v for k, v in vars(session).items() if k not in bound}
    try:
        return encode({"class": name, "attributes": attributes})
    except ProtocolError as err:
        raise ProtocolError(
            f"the {name} client session cannot be suspended between Flower messages: {err}"
        ) from None


def resume(data: bytes, protocol: AggregationProtocol) -> ClientSession:
    """Return the session :func:`suspend` wrote, re-attached to the node's ``protocol``.

    Raises :class:`ProtocolError` when ``data`` is not a suspended session, or one of
    a protocol other than ``protocol``'s kind.
    """
    value: Any = decode(data, what="the suspended client session in Context.state")
    if not (isinstance(value, dict) and set(value) == {"class", "attributes"}
            and isinstance(value["attributes"], dict)
            and all(isinstance(k, str) for k in value["attributes"])):
        raise ProtocolError("the suspended client session in Context.state is malformed.")
    name = value["class"]
    if name not in SESSION_CLASSES:
        raise ProtocolError(f"the suspended client session is of unknown class {name!r}.")
    cls, protocol_cls, bound = SESSION_CLASSES[name]
    if not isinstance(protocol, protocol_cls):
        raise ProtocolError(
            f"the suspended {name} session cannot resume under the node's "
            f"'{protocol.name}' protocol; the node's protocol changed mid-round."
        )
    session = cls.__new__(cls)
    session.__dict__.update(value["attributes"])
    for attribute in bound:
        setattr(session, attribute, protocol)
    return session


def start_round(context: Context, record_name: str, round_index: int, refusal: str) -> None:
    """Refuse ``round_index`` unless it is above the highest round started; then record it.

    The highest round a node started is kept in ``Context.state`` under the
    ConfigRecord ``record_name`` (key ``highest-round``): a server replaying a
    round would get two results of the same inputs.  ``refusal`` is the error
    message, formatted with ``highest`` and ``round``.

    Raises:
        ProtocolError: The round is not above the highest started, or the record
            is malformed.
    """
    record = context.state.config_records.get(record_name)
    highest = None if record is None else record.get("highest-round")
    if highest is not None and (isinstance(highest, bool) or not isinstance(highest, int)):
        raise ProtocolError(f"the started-rounds record {record_name!r} in Context.state is "
                            "malformed.")
    if highest is not None and round_index <= highest:
        raise ProtocolError(refusal.format(highest=highest, round=round_index))
    context.state.config_records[record_name] = ConfigRecord({"highest-round": round_index})


__all__ = ["SESSION_CLASSES", "SESSION_RECORD", "STARTED_RECORD", "resume", "start_round",
           "suspend"]
