"""Input checks of ClientInput and RoundContext, and CostRecord arithmetic."""

from __future__ import annotations

import numpy as np
import pytest

from fedpriv.errors import ProtocolError
from fedpriv.protocols import ClientInput, CostRecord, RoundContext
from fedpriv.protocols.base import readonly_array


@pytest.mark.parametrize(
    ("update", "weight", "match"),
    [
        (np.array([1.0, np.nan, np.inf]), 1.0, "2 non-finite value.*first at index 1"),
        (np.ones((2, 2)), 1.0, r"must be 1-D .* shape \(2, 2\)"),
        (np.ones(0), 1.0, "is empty"),
        (np.array(["a"]), 1.0, "real-valued numeric array; got dtype <U1"),
        (np.array([True]), 1.0, "real-valued numeric array; got dtype bool"),
        (np.ones(2), 0.0, r"weight must be finite and > 0; got 0\.0"),
        (np.ones(2), -3, r"weight must be finite and > 0; got -3\.0"),
        (np.ones(2), float("nan"), "weight must be finite and > 0"),
        (np.ones(2), True, "weight must be a positive real number"),
        (np.ones(2), "1", "weight must be a positive real number"),
    ],
)
def test_client_input_rejects(update: object, weight: object, match: str) -> None:
    with pytest.raises(ProtocolError, match=match):
        ClientInput(update, weight)  # type: ignore[arg-type]


def test_client_input_is_a_frozen_float_copy() -> None:
    data = ClientInput(np.arange(3), 2)
    assert data.update.dtype == np.float64 and data.weight == 2.0
    assert not data.update.flags.writeable
    assert ClientInput(np.ones(3, dtype=np.float32), 1.0).update.dtype == np.float32


def test_round_context_normalises_and_checks() -> None:
    ctx = RoundContext(round=np.int64(3), participants=[5, 1, 3], vector_size=8)  # type: ignore[arg-type]
    assert ctx.participants == (1, 3, 5) and ctx.round == 3
    with pytest.raises(ProtocolError, match="participants is empty"):
        RoundContext(round=0, participants=(), vector_size=1)
    with pytest.raises(ProtocolError, match=r"lists client\(s\) \[2\] more than once"):
        RoundContext(round=0, participants=(2, 1, 2), vector_size=1)
    with pytest.raises(ProtocolError, match="client ids must be >= 0"):
        RoundContext(round=0, participants=(-1, 0), vector_size=1)
    with pytest.raises(ProtocolError, match="vector_size must be >= 1"):
        RoundContext(round=0, participants=(0,), vector_size=0)
    with pytest.raises(ProtocolError, match="round must be >= 0"):
        RoundContext(round=-1, participants=(0,), vector_size=1)
    with pytest.raises(ProtocolError, match="must be an integer"):
        RoundContext(round=0, participants=(0.5,), vector_size=1)  # type: ignore[arg-type]


def test_cost_record_merges_rounds_with_different_clients() -> None:
    a = CostRecord(
        bytes_up={0: 10, 1: 20},
        bytes_down={0: 1, 1: 1},
        client_seconds={0: 0.5, 1: 0.25},
        server_seconds=1.0,
    )
    b = CostRecord(
        bytes_up={1: 30, 2: 40},
        bytes_down={1: 2, 2: 0},
        client_seconds={1: 0.25, 2: 1.0},
        server_seconds=2.0,
    )
    total = CostRecord.empty().merge(a).merge(b)
    assert total.bytes_up == {0: 10, 1: 50, 2: 40}
    assert total.bytes_down == {0: 1, 1: 3, 2: 0}
    assert total.client_seconds == {0: 0.5, 1: 0.5, 2: 1.0}
    assert total.to_dict() == {
        "bytes_up_per_client": 100 / 3,
        "bytes_down_per_client": 4 / 3,
        "client_s": 2.0,
        "server_s": 3.0,
        "protocol_s": 5.0,
    }
    assert a.bytes_up == {0: 10, 1: 20}  # merge does not mutate
    assert CostRecord.empty().to_dict()["bytes_up_per_client"] == 0.0


def test_readonly_array_copies_unless_already_frozen() -> None:
    buffer = np.ones(3)
    frozen = readonly_array(buffer)
    assert frozen is not buffer and not frozen.flags.writeable
    assert readonly_array(frozen) is frozen
    assert readonly_array(frozen[:2]) is not frozen  # a view may alias a writable buffer
    assert readonly_array(frozen, dtype=np.float32).dtype == np.float32
