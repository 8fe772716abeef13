"""A typed, pickle-free binary encoding of fedpriv messages, views and session state.

Other FL stacks move fedpriv's protocol messages as bytes; this module turns the
values those messages are made of into bytes and back, and nothing else:

- scalars: ``None``, ``bool``, ``int`` (any size), ``float`` (binary64), ``str``, ``bytes``;
- numeric ``numpy`` arrays of an allow-listed dtype (bool, signed/unsigned integers,
  float32/float64), stored little-endian with their shape;
- ``tuple``, ``list``, ``frozenset`` and ``dict`` (``MappingProxyType`` encodes as a dict);
- instances of an *explicitly registered* dataclass (:data:`REGISTERED_TYPES`: every
  message of every protocol, :class:`~fedpriv.protocols.RoundContext`,
  :class:`~fedpriv.protocols.ClientInput`, the server views ...), stored as their
  registry name and init fields, and rebuilt through their constructor, so every
  decoded message passes the same validation as a freshly built one.

Decoding never executes code chosen by the bytes (unlike ``pickle``), and it raises
:class:`~fedpriv.errors.ProtocolError` — never another exception — for anything
else: an unknown tag, dtype or type name, a truncated buffer, a count larger than
the bytes left, nesting deeper than :data:`MAX_DEPTH`, an integer longer than
:data:`MAX_INT_BYTES`, an array beyond :data:`~fedpriv.protocols.boundary.MAX_NDIM`
dimensions or :data:`~fedpriv.protocols.boundary.MAX_ARRAY_ELEMENTS` elements (a
zero-size array with a huge dimension included), and a dataclass field that does
not fit its annotation (:func:`fedpriv.protocols.boundary.check_fields`: an
integer field outside int64, a string key in a map of client ids ...) or that its
constructor refuses.  Encoding refuses what decoding would.

Layout: one tag byte, then the value.  Lengths and counts are unsigned 64-bit
big-endian.  The first byte of :func:`encode` output is the format version
(:data:`FORMAT_VERSION`).
"""

from __future__ import annotations

import dataclasses
import math
import struct
from collections.abc import Iterable
from types import MappingProxyType
from typing import Any

import numpy as np

from fedpriv.errors import ProtocolError
from fedpriv.protocols.boundary import (
    ALLOWED_DTYPES,
    MAX_ARRAY_ELEMENTS,
    MAX_NDIM,
    MAX_REASON_CHARS,
    check_array_limits,
    check_fields,
)

FORMAT_VERSION = 1
"""First byte of every encoding; bumped when the layout changes."""
MAX_DEPTH = 32
"""Deepest nesting of containers and dataclasses a decoder accepts."""
MAX_INT_BYTES = 64
"""Longest integer encoding (bytes, sign included) either side accepts: |value| < 2⁵¹¹.

Message fields are further limited to int64 (:mod:`fedpriv.protocols.boundary`);
this bound keeps any decoded integer cheap to print and compare.
"""

_U64 = struct.Struct(">Q")
_F64 = struct.Struct(">d")

_ALLOWED_DTYPES = ALLOWED_DTYPES

_TAG_NONE, _TAG_TRUE, _TAG_FALSE = b"N", b"T", b"F"
_TAG_INT, _TAG_FLOAT, _TAG_STR, _TAG_BYTES = b"i", b"f", b"s", b"b"
_TAG_ARRAY, _TAG_TUPLE, _TAG_LIST, _TAG_SET, _TAG_DICT = b"a", b"t", b"l", b"z", b"d"
_TAG_DATACLASS = b"D"


# --------------------------------------------------------------------------- registry

_BY_NAME: dict[str, type[Any]] = {}
_BY_TYPE: dict[type[Any], str] = {}


def register_type(name: str, cls: type[Any]) -> None:
    """Allow instances of the dataclass ``cls`` to be encoded, under the stable ``name``.

    Registering the same class under the same name twice is harmless; another class
    under a taken name (or the class under another name) raises :class:`ProtocolError`.
    """
    if not (isinstance(cls, type) and dataclasses.is_dataclass(cls)):
        raise ProtocolError(f"register_type({name!r}, ...) needs a dataclass type; got {cls!r}.")
    if _BY_NAME.get(name, cls) is not cls or _BY_TYPE.get(cls, name) != name:
        raise ProtocolError(
            f"codec type name {name!r} or class {cls.__name__} is already registered "
            "differently; pick another name."
        )
    _BY_NAME[name] = cls
    _BY_TYPE[cls] = name


def registered_types() -> dict[str, type[Any]]:
    """Return the registered dataclasses by name (a copy)."""
    _register_builtin_types()
    return dict(_BY_NAME)


_builtins_registered = False


def _register_builtin_types() -> None:
    """Register fedpriv's own messages, views and state types (once, explicitly)."""
    global _builtins_registered
    if _builtins_registered:
        return
    from fedpriv.protocols import base, plain
    from fedpriv.protocols.ckks import messages as ckks_messages
    from fedpriv.protocols.ckks import params as ckks_params
    from fedpriv.protocols.ckks import server as ckks_server
    from fedpriv.protocols.encoding import EncodeStats, FixedPointSpec
    from fedpriv.protocols.secagg import config as secagg_config
    from fedpriv.protocols.secagg import messages as secagg_messages
    from fedpriv.protocols.secagg import server as secagg_server

    for name, cls in (
        ("RoundContext", base.RoundContext),
        ("ClientInput", base.ClientInput),
        ("ServerView", base.ServerView),
        ("FixedPointSpec", FixedPointSpec),
        ("EncodeStats", EncodeStats),
        ("plain.PlainUpdate", plain.PlainUpdate),
        ("secagg.AdvertiseKeys", secagg_messages.AdvertiseKeys),
        ("secagg.KeyDirectory", secagg_messages.KeyDirectory),
        ("secagg.ShareKeys", secagg_messages.ShareKeys),
        ("secagg.RoutedShares", secagg_messages.RoutedShares),
        ("secagg.MaskedInput", secagg_messages.MaskedInput),
        ("secagg.SurvivorList", secagg_messages.SurvivorList),
        ("secagg.ConsistencySignature", secagg_messages.ConsistencySignature),
        ("secagg.ConsistencyProof", secagg_messages.ConsistencyProof),
        ("secagg.UnmaskShares", secagg_messages.UnmaskShares),
        ("secagg.RoundPlan", secagg_config.RoundPlan),
        ("secagg.ServerView", secagg_server.SecAggServerView),
        ("ckks.EncryptedUpdate", ckks_messages.EncryptedUpdate),
        ("ckks.DecryptRequest", ckks_messages.DecryptRequest),
        ("ckks.ReleasedSum", ckks_messages.ReleasedSum),
        ("ckks.Parameters", ckks_params.CKKSParameters),
        ("ckks.ServerView", ckks_server.CKKSServerView),
    ):
        register_type(name, cls)
    _builtins_registered = True


# --------------------------------------------------------------------------- encoding


def _length(value: int) -> bytes:
    return _U64.pack(value)


def _encode_int(value: int, where: str) -> bytes:
    size = (value.bit_length() + 8) // 8  # room for the sign bit
    if size > MAX_INT_BYTES:
        raise ProtocolError(
            f"{where}: an integer of {value.bit_length()} bits cannot be encoded (at most "
            f"{8 * MAX_INT_BYTES - 1}); send it as bytes."
        )
    return _TAG_INT + _length(size) + value.to_bytes(size, "big", signed=True)


def _encode_array(array: np.ndarray, where: str) -> bytes:
    dtype = array.dtype
    key = dtype.str.lstrip("<>|=")
    if key not in _ALLOWED_DTYPES:
        raise ProtocolError(
            f"{where}: arrays of dtype {dtype} cannot be encoded; use a bool, integer or "
            "float32/float64 array."
        )
    check_array_limits(tuple(int(n) for n in array.shape), where)
    data = np.ascontiguousarray(array, dtype=dtype.newbyteorder("<")).tobytes()
    shape = b"".join(_length(int(n)) for n in array.shape)
    name = key.encode()
    return (_TAG_ARRAY + bytes([len(name)]) + name + bytes([array.ndim]) + shape
            + _length(len(data)) + data)


def _encode_items(tag: bytes, items: Iterable[Any], where: str, out: list[bytes]) -> None:
    values = list(items)
    out.append(tag + _length(len(values)))
    for index, item in enumerate(values):
        _encode_into(item, f"{where}[{index}]", out)


def _encode_into(value: Any, where: str, out: list[bytes]) -> None:
    if value is None:
        out.append(_TAG_NONE)
    elif value is True or (isinstance(value, np.bool_) and bool(value)):
        out.append(_TAG_TRUE)
    elif value is False or isinstance(value, np.bool_):
        out.append(_TAG_FALSE)
    elif isinstance(value, (int, np.integer)):
        out.append(_encode_int(int(value), where))
    elif isinstance(value, (float, np.floating)):
        out.append(_TAG_FLOAT + _F64.pack(float(value)))
    elif isinstance(value, str):
        data = value.encode("utf-8")
        out.append(_TAG_STR + _length(len(data)) + data)
    elif isinstance(value, (bytes, bytearray, memoryview)):
        data = bytes(value)
        out.append(_TAG_BYTES + _length(len(data)) + data)
    elif isinstance(value, np.ndarray):
        out.append(_encode_array(value, where))
    elif isinstance(value, tuple) and not dataclasses.is_dataclass(value):
        _encode_items(_TAG_TUPLE, value, where, out)
    elif isinstance(value, list):
        _encode_items(_TAG_LIST, value, where, out)
    elif isinstance(value, frozenset):
        _encode_items(_TAG_SET, sorted(value, key=repr), where, out)
    elif isinstance(value, (dict, MappingProxyType)):
        out.append(_TAG_DICT + _length(len(value)))
        for key, item in value.items():
            _encode_into(key, f"{where} key", out)
            _encode_into(item, f"{where}[{key!r}]", out)
    elif dataclasses.is_dataclass(value) and not isinstance(value, type):
        _register_builtin_types()
        name = _BY_TYPE.get(type(value))
        if name is None:
            raise ProtocolError(
                f"{where}: {type(value).__name__} is not a registered codec type; register it "
                "with fedpriv.integrations.codec.register_type(name, cls) first."
            )
        fields = [f for f in dataclasses.fields(value) if f.init]
        encoded_name = name.encode()
        out.append(_TAG_DATACLASS + _length(len(encoded_name)) + encoded_name
                   + _length(len(fields)))
        for f in fields:
            _encode_into(f.name, where, out)
            _encode_into(getattr(value, f.name), f"{where}.{f.name}", out)
    else:
        raise ProtocolError(
            f"{where}: values of type {type(value).__name__} cannot be encoded (allowed: None, "
            "bool, int, float, str, bytes, numeric arrays, tuple, list, frozenset, dict and "
            "registered dataclasses)."
        )


def encode(value: Any) -> bytes:
    """Return the bytes of ``value`` (see the module docstring for what may be encoded).

    Raises :class:`ProtocolError` naming the first value that cannot be encoded.
    """
    out = [bytes([FORMAT_VERSION])]
    _encode_into(value, "value", out)
    return b"".join(out)


# --------------------------------------------------------------------------- decoding


class _Reader:
    def __init__(self, data: bytes, what: str) -> None:
        self.data = memoryview(data)
        self.pos = 0
        self.what = what

    def error(self, reason: str) -> ProtocolError:
        if len(reason) > MAX_REASON_CHARS:  # it may quote the (hostile) data
            reason = reason[: MAX_REASON_CHARS - 1] + "…"
        return ProtocolError(
            f"{self.what} does not decode: {reason} (at byte {self.pos} of {len(self.data)}); "
            "it was truncated, corrupted or written by an incompatible fedpriv version."
        )

    def take(self, size: int) -> bytes:
        if size < 0 or self.pos + size > len(self.data):
            raise self.error(f"needs {size} more bytes, {len(self.data) - self.pos} left")
        chunk = bytes(self.data[self.pos : self.pos + size])
        self.pos += size
        return chunk

    def length(self) -> int:
        (value,) = _U64.unpack(self.take(_U64.size))
        return int(value)

    def count(self, minimum_item_bytes: int = 1) -> int:
        value = self.length()
        if value * minimum_item_bytes > len(self.data) - self.pos:
            raise self.error(f"announces {value} items but only {len(self.data) - self.pos} "
                             "bytes are left")
        return value


def _decode_array(reader: _Reader) -> np.ndarray:
    name = reader.take(reader.take(1)[0]).decode("ascii", errors="replace")
    if name not in _ALLOWED_DTYPES:
        raise reader.error(f"array dtype {name!r} is not allowed")
    ndim = reader.take(1)[0]
    if ndim > MAX_NDIM:
        raise reader.error(f"an array has {ndim} dimensions, more than {MAX_NDIM}")
    shape = tuple(reader.length() for _ in range(ndim))
    try:
        check_array_limits(shape, "an array")
    except ProtocolError as err:
        raise reader.error(str(err)) from None
    dtype = np.dtype("<" + name) if name not in ("b1", "i1", "u1") else np.dtype(name)
    size = reader.length()
    expected = math.prod(shape) * dtype.itemsize
    if size != expected:
        raise reader.error(f"array of shape {shape} and dtype {name} needs {expected} bytes, "
                           f"the encoding holds {size}")
    data = reader.take(size)
    try:
        return np.frombuffer(data, dtype=dtype).reshape(shape).astype(dtype.newbyteorder("="))
    except (ValueError, TypeError, MemoryError) as err:
        raise reader.error(f"numpy cannot build the array ({type(err).__name__})") from None


def _decode(reader: _Reader, depth: int) -> Any:
    if depth > MAX_DEPTH:
        raise reader.error(f"nesting deeper than {MAX_DEPTH}")
    tag = reader.take(1)
    if tag == _TAG_NONE:
        return None
    if tag == _TAG_TRUE:
        return True
    if tag == _TAG_FALSE:
        return False
    if tag == _TAG_INT:
        size = reader.length()
        if size > MAX_INT_BYTES:
            raise reader.error(f"an integer of {size} bytes (at most {MAX_INT_BYTES})")
        return int.from_bytes(reader.take(size), "big", signed=True)
    if tag == _TAG_FLOAT:
        return _F64.unpack(reader.take(_F64.size))[0]
    if tag == _TAG_STR:
        try:
            return reader.take(reader.length()).decode("utf-8")
        except UnicodeDecodeError:
            raise reader.error("a string is not valid UTF-8") from None
    if tag == _TAG_BYTES:
        return reader.take(reader.length())
    if tag == _TAG_ARRAY:
        return _decode_array(reader)
    if tag in (_TAG_TUPLE, _TAG_LIST, _TAG_SET):
        items = [_decode(reader, depth + 1) for _ in range(reader.count())]
        if tag == _TAG_TUPLE:
            return tuple(items)
        if tag == _TAG_LIST:
            return items
        try:
            return frozenset(items)
        except TypeError:
            raise reader.error("a frozenset holds unhashable items") from None
    if tag == _TAG_DICT:
        result: dict[Any, Any] = {}
        for _ in range(reader.count(2)):
            key = _decode(reader, depth + 1)
            try:
                result[key] = _decode(reader, depth + 1)
            except TypeError:
                raise reader.error("a dict key is unhashable") from None
        return result
    if tag == _TAG_DATACLASS:
        return _decode_dataclass(reader, depth)
    raise reader.error(f"unknown tag {tag!r}")


def _decode_dataclass(reader: _Reader, depth: int) -> Any:
    _register_builtin_types()
    name = reader.take(reader.length()).decode("utf-8", errors="replace")
    cls = _BY_NAME.get(name)
    if cls is None:
        raise reader.error(f"type {name!r} is not registered")
    allowed = {f.name for f in dataclasses.fields(cls) if f.init}
    values: dict[str, Any] = {}
    for _ in range(reader.count(2)):
        key = _decode(reader, depth + 1)
        if not isinstance(key, str) or key not in allowed or key in values:
            raise reader.error(f"{name} has no (or a repeated) field {key!r}")
        values[key] = _decode(reader, depth + 1)
    try:
        check_fields(cls, values, name)
        return cls(**values)
    except Exception as err:  # a constructor refusing hostile fields, however
        raise reader.error(f"{name} rejects its fields: {_short(err)}") from None


def _short(err: BaseException, limit: int = 300) -> str:
    try:
        text = str(err) if isinstance(err, ProtocolError) else f"{type(err).__name__}: {err}"
    except Exception:  # e.g. an integer too long to print
        text = type(err).__name__
    return text if len(text) <= limit else text[: limit - 1] + "…"


def decode(data: bytes, *, what: str = "the encoded value") -> Any:
    """Return the value :func:`encode` turned into ``data``.

    ``what`` names the data in errors.  Raises :class:`ProtocolError` for anything
    that is not a complete, valid encoding of this format version.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise ProtocolError(f"{what} must be bytes; got {type(data).__name__}.")
    reader = _Reader(bytes(data), what)
    try:
        version = reader.take(1)[0]
        if version != FORMAT_VERSION:
            raise reader.error(f"format version {version}, this fedpriv reads {FORMAT_VERSION}")
        value = _decode(reader, 0)
        if reader.pos != len(reader.data):
            raise reader.error(f"{len(reader.data) - reader.pos} trailing bytes")
    except ProtocolError:
        raise
    except Exception as err:  # whatever the bytes cause, it is a decoding error
        raise reader.error(f"decoding failed with {_short(err)}") from None
    return value


def encode_message(message: Any) -> bytes:
    """Return the bytes of a protocol :class:`~fedpriv.protocols.Message`."""
    from fedpriv.protocols.base import Message

    if not isinstance(message, Message):
        raise ProtocolError(
            f"encode_message needs a protocol Message; got {type(message).__name__}."
        )
    return encode(message)


def decode_message(data: bytes, *, what: str = "the protocol message") -> Any:
    """Return the protocol :class:`~fedpriv.protocols.Message` encoded in ``data``.

    Raises :class:`ProtocolError` when ``data`` does not decode or holds no message.
    """
    from fedpriv.protocols.base import Message

    value = decode(data, what=what)
    if not isinstance(value, Message):
        raise ProtocolError(f"{what} holds a {type(value).__name__}, not a protocol message.")
    return value


__all__ = [
    "FORMAT_VERSION",
    "MAX_ARRAY_ELEMENTS",
    "MAX_DEPTH",
    "MAX_INT_BYTES",
    "MAX_NDIM",
    "decode",
    "decode_message",
    "encode",
    "encode_message",
    "register_type",
    "registered_types",
]
