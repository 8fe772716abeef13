"""The protocol registry: what exists, how it is built, and how it fails."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import pytest

from fedpriv.errors import ConfigError, ProtocolError
from fedpriv.protocols import (
    AggregationProtocol,
    ClientId,
    ClientInput,
    ClientSession,
    PlainConfig,
    PlainProtocol,
    RoundContext,
    ServerSession,
    available,
    create,
    describe,
    register,
    registry,
)


def test_plain_is_registered() -> None:
    assert "plain" in available()
    proto = create("plain")
    assert isinstance(proto, PlainProtocol) and proto.config == PlainConfig()
    info = describe("plain")
    assert info.name == "plain"
    assert info.reveals_individual_updates and info.dropout_tolerant
    assert "every client's individual update" in info.threat_model
    assert info.dropout_tolerance and info.parameters == ()


def test_unknown_name_lists_available_protocols() -> None:
    with pytest.raises(ProtocolError,
                       match=r"unknown aggregation protocol 'paillier'.*: ckks, plain, secagg, "
                             r"secagg\+"):
        create("paillier")
    with pytest.raises(ProtocolError, match=r"available protocols: ckks, plain, secagg, secagg\+"):
        describe("nope")


def test_unknown_parameter_lists_valid_ones() -> None:
    with pytest.raises(ConfigError, match=r"'plain' has no parameter\(s\) \['threshold'\]"):
        create("plain", threshold=3)


@dataclass(frozen=True)
class ThresholdConfig:
    threshold: int
    chunk: int = 2


class ThresholdProtocol(AggregationProtocol):
    name: ClassVar[str] = "threshold-test"
    reveals_individual_updates: ClassVar[bool] = True
    dropout_tolerant: ClassVar[bool] = True
    threat_model: ClassVar[str] = "test only"
    dropout_tolerance: ClassVar[str] = "test only"
    config_type: ClassVar[type] = ThresholdConfig

    def __init__(self, config: ThresholdConfig) -> None:
        self.config = config

    def client(self, client_id: ClientId, ctx: RoundContext, data: ClientInput) -> ClientSession:
        return PlainProtocol().client(client_id, ctx, data)

    def server(self, ctx: RoundContext) -> ServerSession:
        return PlainProtocol().server(ctx)


def test_register_builds_the_config_from_parameters(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))
    register("threshold-test", ThresholdProtocol)
    assert available() == ("ckks", "plain", "secagg", "secagg+", "threshold-test")
    proto = create("threshold-test", threshold=3)
    assert isinstance(proto, ThresholdProtocol) and proto.config == ThresholdConfig(3, 2)
    assert describe("threshold-test").parameters == ("threshold", "chunk")
    with pytest.raises(ConfigError, match=r"needs parameter\(s\) \['threshold'\]"):
        create("threshold-test", chunk=4)
    register("threshold-test", ThresholdProtocol)  # same class again: harmless
    with pytest.raises(ProtocolError, match=r"already registered .*force=True"):
        register("threshold-test", type("Impostor", (ThresholdProtocol,), {}))
    register("threshold-test", type("Replacement", (ThresholdProtocol,), {}), force=True)
    assert describe("threshold-test").name == "threshold-test"
    with pytest.raises(ProtocolError, match=r"name must equal PlainProtocol.name \('plain'\)"):
        register("other", PlainProtocol)
    with pytest.raises(ProtocolError, match="needs an AggregationProtocol subclass"):
        register("x", object)  # type: ignore[arg-type]
