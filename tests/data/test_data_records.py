"""Tests of the record types (fedpriv.data.records)."""

from __future__ import annotations

import pytest

from fedpriv.data.records import PII_KINDS, PiiSpan, Record
from fedpriv.errors import DataError


def test_record_defaults_and_values() -> None:
    record = Record(text="Call Ada on 555-0100.", pii=(PiiSpan(5, 8, "name"),))
    assert record.key is None and record.label is None
    assert record.pii_values() == [("name", "Ada")]
    assert {"name", "date", "phone", "email", "account", "id", "address"} == PII_KINDS


def test_records_are_frozen_and_hashable() -> None:
    record = Record(text="x", key="k")
    with pytest.raises(AttributeError):
        record.text = "y"  # type: ignore[misc]
    assert {record, Record(text="x", key="k")} == {record}


@pytest.mark.parametrize(
    ("start", "end", "kind", "message"),
    [(0, 3, "ssn", "not known"), (3, 3, "name", "start < end"), (-1, 2, "name", "start < end")],
)
def test_invalid_spans(start: int, end: int, kind: str, message: str) -> None:
    with pytest.raises(DataError, match=message):
        PiiSpan(start, end, kind)


def test_span_past_the_end_of_the_text() -> None:
    with pytest.raises(DataError, match="length 3"):
        Record(text="abc", pii=(PiiSpan(1, 4, "id"),))


def test_text_must_be_a_string() -> None:
    with pytest.raises(DataError, match="got bytes"):
        Record(text=b"bytes")  # type: ignore[arg-type]
