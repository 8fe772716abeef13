"""The network boundary of a server: what a message received from a client must be.

Every byte a client sends is hostile until checked.  This module owns the checks
a server applies to one client's message *before* its protocol session sees it,
and the limits they enforce (spec: ``protocols/flower.md``, "The boundary"):

1. **Fields** (:func:`check_fields`, :func:`check_message_fields`): every field of a
   message dataclass against its annotation — integers are ``int`` (not ``bool``)
   within int64, bytes are ``bytes``, a ``Mapping[ClientId, bytes]`` has integer keys
   and bytes values, a ``tuple[ClientId, ...]`` holds integers, an ``np.ndarray`` is an
   array of an allow-listed dtype within :data:`MAX_NDIM` and :data:`MAX_ARRAY_ELEMENTS`
   (:func:`check_array_limits`).  The codec applies the same check when it rebuilds a
   dataclass from bytes, so a field that would crash later never gets built.
2. **The round** (:func:`admit`): the message comes from the client it claims, the
   client is a participant, the message's ``round`` is this round's, and in a phase
   ≥ 1 the client answers something the server sent it after the previous phase (an
   unsolicited message is refused).
3. **The protocol**: where the protocol's server would raise on it, the message is
   of a type the protocol expects as the answer to what the server last sent that
   client and its arrays have the round's shape; every client id is a participant,
   every key / ciphertext / share of a plausible length (``check_client_message`` of
   :mod:`fedpriv.protocols.secagg.messages` and :mod:`fedpriv.protocols.ckks.messages`;
   plain's check is here).
4. **The session**: :meth:`ServerSession.check_message`, for checks that need the
   server's state.

:func:`admit` raises :class:`~fedpriv.errors.ProtocolError` — and no other
exception, whatever the message holds — and the drivers turn that into *this
client dropped out at this phase*: the round goes on without it (or aborts, as for
any dropout, when the protocol's threshold is no longer met), never the process.
"""

from __future__ import annotations

import collections.abc
import dataclasses
import functools
import logging
import math
import numbers
import operator
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from fedpriv.errors import ProtocolError

if TYPE_CHECKING:
    from fedpriv.protocols.base import (
        AggregationProtocol,
        ClientId,
        Message,
        RoundContext,
        ServerSession,
    )

logger = logging.getLogger(__name__)

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1
"""Every integer field of a message lies in ``[INT64_MIN, INT64_MAX]``."""
MAX_NDIM = 8
"""Most dimensions an array in a message (or any codec value) may have."""
MAX_ARRAY_ELEMENTS = 2**28
"""Most elements an array may have (2²⁸ ≈ 2.7·10⁸: 2 GiB of float64).

Also a bound on every single dimension, and on the product of the non-zero
dimensions, so that a zero-size array with a huge other dimension (shape
``(0, 2⁶⁰)``) is refused like the huge array it pretends to be.
"""
MAX_REASON_CHARS = 300
"""A refusal's reason is cut to this many characters (it may quote hostile data)."""

ALLOWED_DTYPES = frozenset(
    np.dtype(d).str.lstrip("<>|=")
    for d in ("?", "i1", "i2", "i4", "i8", "u1", "u2", "u4", "u8", "f4", "f8")
)
"""Array dtypes that may travel: no object, string, structured or complex dtypes."""


# --------------------------------------------------------------------------- fields


def check_int(value: Any, where: str, *, minimum: int = INT64_MIN,
              maximum: int = INT64_MAX) -> int:
    """Return ``value`` as an ``int`` if it is an integer (not a bool) in ``[minimum, maximum]``."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise ProtocolError(f"{where} must be an integer; got a {type(value).__name__}.")
    number = operator.index(value)
    if not minimum <= number <= maximum:
        size = "a huge integer" if number.bit_length() > 64 else str(number)
        raise ProtocolError(f"{where} must lie in [{minimum}, {maximum}]; got {size}.")
    return number


def check_array_limits(shape: tuple[int, ...], where: str) -> None:
    """Raise :class:`ProtocolError` unless ``shape`` is within :data:`MAX_NDIM` / elements."""
    if len(shape) > MAX_NDIM:
        raise ProtocolError(
            f"{where} has {len(shape)} dimensions; at most {MAX_NDIM} are accepted."
        )
    product = 1
    for dim in shape:
        if dim < 0 or dim > MAX_ARRAY_ELEMENTS:
            raise ProtocolError(
                f"{where} has a dimension of {dim}; each must lie in [0, {MAX_ARRAY_ELEMENTS}]."
            )
        product *= max(dim, 1)
        if product > MAX_ARRAY_ELEMENTS:
            raise ProtocolError(
                f"{where} has shape {shape}: more than {MAX_ARRAY_ELEMENTS} elements (zero "
                "dimensions not counted); split the value or raise "
                "fedpriv.protocols.boundary.MAX_ARRAY_ELEMENTS."
            )


def check_array(value: Any, where: str) -> np.ndarray:
    """Return ``value`` if it is a numeric array of an allowed dtype within the limits."""
    if not isinstance(value, np.ndarray):
        raise ProtocolError(f"{where} must be a numpy array; got a {type(value).__name__}.")
    if value.dtype.str.lstrip("<>|=") not in ALLOWED_DTYPES:
        raise ProtocolError(
            f"{where} has dtype {value.dtype}; allowed: bool, integers, float32, float64."
        )
    check_array_limits(tuple(int(d) for d in value.shape), where)
    return value


def _union_options(hint: Any) -> tuple[Any, ...] | None:
    origin = typing.get_origin(hint)
    if origin is typing.Union or origin is types.UnionType:
        return typing.get_args(hint)
    return None


def check_value(value: Any, hint: Any, where: str) -> None:
    """Raise :class:`ProtocolError` unless ``value`` fits the type annotation ``hint``.

    Understands what messages are made of: ``int`` (int64), ``float``, ``bool``,
    ``str``, ``bytes``, ``None``, ``np.ndarray`` (:func:`check_array`), unions,
    ``tuple[X, ...]`` / ``tuple[X, Y]``, ``list``/``Sequence``, ``Mapping``/``dict``,
    ``frozenset``/``set`` and classes (``isinstance``).  Other annotations pass.
    """
    if hint is Any or hint is object:
        return
    if hint is None or hint is type(None):
        if value is not None:
            raise ProtocolError(f"{where} must be None; got a {type(value).__name__}.")
        return
    options = _union_options(hint)
    if options is not None:
        errors = []
        for option in options:
            try:
                check_value(value, option, where)
            except ProtocolError as err:
                errors.append(str(err))
            else:
                return
        raise ProtocolError(errors[-1] if len(errors) == 1 else
                            f"{where} fits none of its types ({'; '.join(errors)}).")
    origin = typing.get_origin(hint) or hint
    args = typing.get_args(hint)
    if hint is int:
        check_int(value, where)
    elif hint is float:
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
            raise ProtocolError(f"{where} must be a real number; got a {type(value).__name__}.")
    elif hint is bool:
        if not isinstance(value, (bool, np.bool_)):
            raise ProtocolError(f"{where} must be a bool; got a {type(value).__name__}.")
    elif hint in (str, bytes):
        if not isinstance(value, hint):
            raise ProtocolError(f"{where} must be {hint.__name__}; got a {type(value).__name__}.")
    elif origin is np.ndarray:
        check_array(value, where)
    elif origin is tuple:
        if not isinstance(value, (tuple, list)):
            raise ProtocolError(f"{where} must be a tuple; got a {type(value).__name__}.")
        if len(args) == 2 and args[1] is Ellipsis:
            for index, item in enumerate(value):
                check_value(item, args[0], f"{where}[{index}]")
        elif args:
            if len(value) != len(args):
                raise ProtocolError(f"{where} must have {len(args)} items; got {len(value)}.")
            for index, (item, item_hint) in enumerate(zip(value, args, strict=True)):
                check_value(item, item_hint, f"{where}[{index}]")
    elif origin in (list, collections.abc.Sequence):
        if not isinstance(value, (tuple, list)):
            raise ProtocolError(f"{where} must be a sequence; got a {type(value).__name__}.")
        for index, item in enumerate(value):
            if args:
                check_value(item, args[0], f"{where}[{index}]")
    elif origin in (dict, collections.abc.Mapping, types.MappingProxyType):
        if not isinstance(value, collections.abc.Mapping):
            raise ProtocolError(f"{where} must be a mapping; got a {type(value).__name__}.")
        if len(args) == 2:
            for key, item in value.items():
                check_value(key, args[0], f"a key of {where}")
                check_value(item, args[1], f"{where}[{key!r:.40}]")
    elif origin in (frozenset, set, collections.abc.Set):
        if not isinstance(value, (frozenset, set)):
            raise ProtocolError(f"{where} must be a set; got a {type(value).__name__}.")
        for item in value:
            if args:
                check_value(item, args[0], f"an item of {where}")
    elif isinstance(origin, type) and not isinstance(value, origin):
        raise ProtocolError(
            f"{where} must be a {origin.__name__}; got a {type(value).__name__}."
        )


_HINTS: dict[type[Any], dict[str, Any] | None] = {}


def _field_hints(cls: type[Any]) -> dict[str, Any] | None:
    """Return the resolved annotations of ``cls``'s init fields (``None``: they do not resolve)."""
    if cls not in _HINTS:
        try:
            hints = typing.get_type_hints(cls)
        except Exception:  # an unresolvable annotation is left to the constructor
            logger.debug("annotations of %s do not resolve; its fields are not type-checked", cls)
            _HINTS[cls] = None
        else:
            _HINTS[cls] = {f.name: hints[f.name] for f in dataclasses.fields(cls)
                           if f.init and f.name in hints}
    return _HINTS[cls]


def check_fields(cls: type[Any], values: Mapping[str, Any], where: str) -> None:
    """Raise :class:`ProtocolError` unless every value in ``values`` fits ``cls``'s field type.

    ``cls`` is a dataclass; ``values`` maps some of its init fields to candidate
    values (the codec calls this before the constructor runs).
    """
    hints = _field_hints(cls)
    if hints is None:
        return
    for name, value in values.items():
        if name in hints:
            check_value(value, hints[name], f"{where}.{name}")


def check_message_fields(message: Any, where: str) -> None:
    """Raise :class:`ProtocolError` unless every init field of a dataclass fits its type."""
    if not dataclasses.is_dataclass(message) or isinstance(message, type):
        raise ProtocolError(f"{where} must be a protocol message; got a {type(message).__name__}.")
    fields = {f.name: getattr(message, f.name) for f in dataclasses.fields(message) if f.init}
    check_fields(type(message), fields, where)


# --------------------------------------------------------------------------- the round


@dataclass(frozen=True)
class Received:
    """What the server knows when one client's message arrives (the protocol checks read it)."""

    protocol: AggregationProtocol
    ctx: RoundContext
    phase: int
    client_id: ClientId
    reply: Message | None
    """What the server sent this client after the previous phase (``None`` in phase 0)."""


def check_client_ids(ids: Any, received: Received, what: str, *,
                     allow_self: bool = True) -> None:
    """Raise :class:`ProtocolError` unless every id in ``ids`` is a participant of the round."""
    participants = set(received.ctx.participants)
    for client in ids:
        if isinstance(client, bool) or not isinstance(client, int) or client not in participants:
            raise ProtocolError(
                f"{what} names client {client!r:.40}, not a participant of round "
                f"{received.ctx.round}."
            )
        if not allow_self and client == received.client_id:
            raise ProtocolError(f"{what} names the sending client {client} itself.")


def check_bytes(value: Any, what: str, *, exact: int | None = None,
                maximum: int | None = None) -> None:
    """Raise :class:`ProtocolError` unless ``value`` is non-empty bytes of a plausible length."""
    if not isinstance(value, bytes) or not value:
        raise ProtocolError(f"{what} must be non-empty bytes.")
    if exact is not None and len(value) != exact:
        raise ProtocolError(f"{what} must be {exact} bytes; got {len(value)}.")
    if maximum is not None and len(value) > maximum:
        raise ProtocolError(f"{what} must be at most {maximum} bytes; got {len(value)}.")


def check_answer(message: Message, received: Received,
                 answers: Mapping[type[Any] | None, tuple[type[Any], ...]]) -> None:
    """Raise unless ``message`` is an expected answer to the server's last message to its sender.

    ``answers`` maps the type of that last message (``None`` in phase 0) to the
    client message types that answer it.  A server message type not in ``answers``
    (a phase this check does not know) admits any type: the protocol's server
    decides, so a protocol may add phases without touching this check.
    """
    reply_type = None if received.reply is None else type(received.reply)
    expected = answers.get(reply_type)
    if expected is not None and not isinstance(message, expected):
        names = ", ".join(t.__name__ for t in expected)
        after = "in phase 0" if reply_type is None else f"after a {reply_type.__name__}"
        raise ProtocolError(
            f"sent a {type(message).__name__} {after}; the {received.protocol.name} protocol "
            f"expects {names} there."
        )


def check_update_length(array: np.ndarray, length: int, what: str) -> None:
    """Raise unless ``array`` is 1-D of ``length`` entries."""
    if array.shape != (length,):
        raise ProtocolError(f"{what} has shape {array.shape}; the round expects ({length},).")


def _check_plain(message: Message, received: Received) -> None:
    from fedpriv.protocols.plain import PlainUpdate

    check_answer(message, received, {None: (PlainUpdate,)})
    update: np.ndarray = message.update  # type: ignore[attr-defined]
    check_update_length(update, received.ctx.vector_size, "the update")
    weight = float(message.weight)  # type: ignore[attr-defined]
    if not (math.isfinite(weight) and weight > 0):
        raise ProtocolError(f"the weight must be finite and > 0; got {weight!r}.")


ProtocolCheck = Callable[["Message", Received], None]


@functools.cache
def protocol_checks() -> Mapping[str, ProtocolCheck]:
    """Return protocol name → the check of a client message of that protocol (explicit list)."""
    from fedpriv.protocols.ckks import messages as ckks_messages
    from fedpriv.protocols.secagg import messages as secagg_messages

    return types.MappingProxyType({
        "plain": _check_plain,
        "secagg": secagg_messages.check_client_message,
        "secagg+": secagg_messages.check_client_message,
        "ckks": ckks_messages.check_client_message,
    })


def _reason(err: BaseException) -> str:
    try:
        text = str(err) if isinstance(err, ProtocolError) else f"{type(err).__name__}: {err}"
    except Exception:  # e.g. an int too long to print
        text = type(err).__name__
    return text if len(text) <= MAX_REASON_CHARS else text[: MAX_REASON_CHARS - 1] + "…"


def admit(
    message: object,
    *,
    protocol: AggregationProtocol,
    ctx: RoundContext,
    phase: int,
    client_id: ClientId,
    reply: Message | None,
    server: ServerSession | None = None,
) -> Message:
    """Return ``message`` if the server may give it to its session; else raise ProtocolError.

    ``message`` is what client ``client_id`` sent in ``phase``; ``reply`` what the
    server sent it after the previous phase.  Runs the four checks of the module
    docstring; whatever goes wrong inside them (a ``TypeError`` from a mistyped
    field, a numpy error, an ``OverflowError``) comes out as :class:`ProtocolError`
    with the reason, cut to :data:`MAX_REASON_CHARS`.
    """
    from fedpriv.protocols.base import Message

    try:
        if not isinstance(message, Message):
            raise ProtocolError(f"sent a {type(message).__name__}, not a protocol message")
        check_message_fields(message, type(message).__name__)
        if message.sender != client_id or client_id not in ctx.participants:
            raise ProtocolError(
                f"its message claims sender {message.sender}; it is client {client_id}, and "
                "only participants may send"
            )
        if phase > 0 and reply is None:
            raise ProtocolError(
                f"sent a {type(message).__name__} in phase {phase} although the server sent it "
                f"nothing after phase {phase - 1} (unsolicited message)"
            )
        message_round = getattr(message, "round", ctx.round)
        if message_round != ctx.round:
            raise ProtocolError(
                f"its {type(message).__name__} is of round {message_round}, not {ctx.round} "
                "(replayed or misrouted)"
            )
        received = Received(protocol, ctx, phase, client_id, reply)
        check = protocol_checks().get(protocol.name)
        if check is not None:
            check(message, received)
        if server is not None:
            server.check_message(phase, client_id, message)
    except Exception as err:  # any failure on hostile input is the client's
        raise ProtocolError(
            f"round {ctx.round}, phase {phase}: client {client_id}'s message is refused: "
            f"{_reason(err)}"
        ) from None
    return message


__all__ = [
    "ALLOWED_DTYPES",
    "INT64_MAX",
    "INT64_MIN",
    "MAX_ARRAY_ELEMENTS",
    "MAX_NDIM",
    "MAX_REASON_CHARS",
    "Received",
    "admit",
    "check_answer",
    "check_array",
    "check_array_limits",
    "check_bytes",
    "check_client_ids",
    "check_fields",
    "check_int",
    "check_message_fields",
    "check_update_length",
    "check_value",
    "protocol_checks",
]
