"""Which aggregation protocols exist, and how to build one by name.

A plain dict filled explicitly by ``fedpriv/protocols/__init__.py`` (never by
import side effects of protocol modules), as in Opacus'
``accountants/registry.py``.  :func:`create` turns keyword parameters into the
protocol's frozen config dataclass, so a misspelt parameter fails here, by name.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from fedpriv.errors import ConfigError, ProtocolError
from fedpriv.protocols.base import AggregationProtocol


@dataclass(frozen=True)
class ProtocolInfo:
    """What a registered protocol protects against, for listings and reports."""

    name: str
    threat_model: str
    """One line: who is trusted and what the server learns."""
    reveals_individual_updates: bool
    dropout_tolerant: bool
    dropout_tolerance: str
    """One line: how many clients may drop, and at which phases."""
    parameters: tuple[str, ...]
    """Names of the keyword parameters :func:`create` accepts for this protocol."""


_REGISTRY: dict[str, type[AggregationProtocol]] = {}

_REQUIRED_ATTRIBUTES = (
    "name",
    "threat_model",
    "reveals_individual_updates",
    "dropout_tolerant",
    "dropout_tolerance",
    "config_type",
)


def register(name: str, factory: type[AggregationProtocol], *, force: bool = False) -> None:
    """Register the protocol class ``factory`` under ``name`` (which must equal ``factory.name``).

    ``factory`` must set the class attributes of :class:`AggregationProtocol`
    (including a dataclass ``config_type``) and accept a ``config_type`` instance
    as its only constructor argument.  Registering another class under a taken
    name raises :class:`ProtocolError` unless ``force`` is true.
    """
    if not (isinstance(factory, type) and issubclass(factory, AggregationProtocol)):
        raise ProtocolError(
            f"register({name!r}, ...) needs an AggregationProtocol subclass; got {factory!r}."
        )
    missing = [a for a in _REQUIRED_ATTRIBUTES if not hasattr(factory, a)]
    if missing:
        raise ProtocolError(
            f"register({name!r}, {factory.__name__}): the class lacks {missing}; set them as "
            "class attributes (see AggregationProtocol)."
        )
    if name != factory.name:
        raise ProtocolError(
            f"register({name!r}, {factory.__name__}): the name must equal "
            f"{factory.__name__}.name ({factory.name!r}), which views and reports record."
        )
    config_type = factory.config_type
    if not (isinstance(config_type, type) and dataclasses.is_dataclass(config_type)):
        raise ProtocolError(
            f"register({name!r}, {factory.__name__}): config_type must be a dataclass type; "
            f"got {config_type!r}."
        )
    if _REGISTRY.get(name) is factory:
        return  # registering the same class twice (e.g. on module reload) is harmless
    if name in _REGISTRY and not force:
        raise ProtocolError(
            f"protocol {name!r} is already registered (as {_REGISTRY[name].__name__}); "
            "pick another name or pass force=True to replace it."
        )
    _REGISTRY[name] = factory


def available() -> tuple[str, ...]:
    """Return the registered protocol names, sorted."""
    return tuple(sorted(_REGISTRY))


def _lookup(name: str) -> type[AggregationProtocol]:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ProtocolError(
            f"unknown aggregation protocol {name!r}; available protocols: "
            f"{', '.join(available()) or '(none)'}."
        ) from None


def _parameters(factory: type[AggregationProtocol]) -> tuple[str, ...]:
    return tuple(f.name for f in dataclasses.fields(factory.config_type) if f.init)


def create(name: str, **params: Any) -> AggregationProtocol:
    """Build the protocol registered as ``name`` with config parameters ``params``.

    Raises :class:`ProtocolError` for an unknown name (listing the available
    ones) and :class:`ConfigError` for an unknown or missing parameter; the
    config dataclass validates the values.
    """
    factory = _lookup(name)
    valid = _parameters(factory)
    unknown = sorted(set(params) - set(valid))
    if unknown:
        raise ConfigError(
            f"protocol {name!r} has no parameter(s) {unknown}; valid parameters: "
            f"{', '.join(valid) or '(none)'}."
        )
    required = [
        f.name
        for f in dataclasses.fields(factory.config_type)
        if f.init and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    ]
    absent = [p for p in required if p not in params]
    if absent:
        raise ConfigError(
            f"protocol {name!r} needs parameter(s) {absent}; pass them to create({name!r}, ...)."
        )
    return factory(factory.config_type(**params))  # type: ignore[call-arg]


def describe(name: str) -> ProtocolInfo:
    """Return what the protocol registered as ``name`` protects against and tolerates."""
    factory = _lookup(name)
    return ProtocolInfo(
        name=name,
        threat_model=factory.threat_model,
        reveals_individual_updates=factory.reveals_individual_updates,
        dropout_tolerant=factory.dropout_tolerant,
        dropout_tolerance=factory.dropout_tolerance,
        parameters=_parameters(factory),
    )
