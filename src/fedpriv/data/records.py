"""The record type every fedpriv corpus is made of.

A :class:`Record` is one document (the unit a client trains on, and the unit a
membership-inference attack scores), with optional metadata used to partition
the corpus across clients (``key``, ``label``) and the character spans of the
personal fields it contains (``pii``), which the leakage metrics use as ground
truth. Records are immutable and validated on construction.
"""

from __future__ import annotations

from dataclasses import dataclass

from fedpriv.errors import DataError

__all__ = ["PII_KINDS", "PiiSpan", "Record"]

#: The kinds of personal field a :class:`PiiSpan` can mark.
PII_KINDS: frozenset[str] = frozenset(
    {"name", "date", "phone", "email", "account", "id", "address"}
)


@dataclass(frozen=True)
class PiiSpan:
    """Character span ``text[start:end]`` of one personal field in a record.

    Attributes:
        start: Offset of the first character of the field.
        end: Offset one past the last character of the field.
        kind: What the field is; one of :data:`PII_KINDS`.
    """

    start: int
    end: int
    kind: str

    def __post_init__(self) -> None:
        if self.kind not in PII_KINDS:
            raise DataError(
                f"PiiSpan kind {self.kind!r} is not known; use one of {sorted(PII_KINDS)}."
            )
        if not 0 <= self.start < self.end:
            raise DataError(
                f"PiiSpan needs 0 <= start < end, got start={self.start}, end={self.end}; "
                "a span must cover at least one character."
            )


@dataclass(frozen=True)
class Record:
    """One document of a corpus.

    Attributes:
        text: The document text.
        key: Natural-partition key (for example the owning organisation), or
            ``None`` when unknown.
        label: Document kind (for example ``"clinical_note"``), or ``None``
            when unknown.
        pii: Character spans of the personal fields in ``text``.
    """

    text: str
    key: str | None = None
    label: str | None = None
    pii: tuple[PiiSpan, ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.text, str):
            raise DataError(
                f"Record text must be a str, got {type(self.text).__name__}; "
                "convert the document to text before building a Record."
            )
        for span in self.pii:
            if span.end > len(self.text):
                raise DataError(
                    f"PiiSpan {span} ends after the end of the record text "
                    f"(length {len(self.text)}); spans must lie inside the text."
                )

    def pii_values(self) -> list[tuple[str, str]]:
        """Return ``(kind, value)`` for every personal field, in span order.

        Returns:
            One ``(span.kind, text[span.start:span.end])`` pair per span.
        """
        return [(span.kind, self.text[span.start : span.end]) for span in self.pii]
