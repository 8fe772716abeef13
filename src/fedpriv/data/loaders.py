r"""Loaders for real corpora: JSONL, CSV and text files, and Hugging Face datasets.

Every loader returns a list of :class:`~fedpriv.data.records.Record`; documents
whose text is empty (or only whitespace) are skipped. Malformed input raises
:class:`~fedpriv.errors.DataError` naming the file, the line or row, and what to
do about it.

Text files (``.txt``): if the file contains a blank line between two non-blank
lines, documents are *paragraphs* (runs of non-blank lines, separated by one
or more blank lines, joined with ``"\\n"``); otherwise every non-blank line is
one document.

Hugging Face ``datasets`` is an optional dependency (extra ``hf``), imported
only when :func:`load_hf_dataset` is called.
"""

from __future__ import annotations

import csv
import io
import json
import logging
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, Final

from fedpriv.data.records import Record
from fedpriv.errors import DataError, MissingDependencyError

__all__ = ["load_hf_dataset", "load_records"]

logger = logging.getLogger(__name__)

_SUFFIX_FORMATS: Final[dict[str, str]] = {
    ".jsonl": "jsonl",
    ".json-lines": "jsonl",
    ".ndjson": "jsonl",
    ".csv": "csv",
    ".txt": "text",
}
_FORMATS: Final = ("jsonl", "csv", "text")
_FORMAT_ALIASES: Final[dict[str, str]] = {
    "jsonl": "jsonl",
    "json-lines": "jsonl",
    "ndjson": "jsonl",
    "csv": "csv",
    "text": "text",
    "txt": "text",
}


def _infer_format(path: Path, fmt: str | None) -> str:
    if fmt is not None:
        canonical = _FORMAT_ALIASES.get(fmt.lower())
        if canonical is None:
            raise DataError(f"unknown format {fmt!r} for {path}; use one of {list(_FORMATS)}.")
        return canonical
    inferred = _SUFFIX_FORMATS.get(path.suffix.lower())
    if inferred is None:
        raise DataError(
            f"cannot tell the format of {path} from its suffix {path.suffix!r}; rename it to "
            f"one of {sorted(_SUFFIX_FORMATS)} or pass fmt= one of {list(_FORMATS)}."
        )
    return inferred


def _read_text(path: Path, *, newline: str | None = None) -> str:
    """Read a UTF-8 file; ``newline=""`` keeps line endings as they are (for CSV)."""
    if not path.exists():
        raise DataError(f"data file {path} does not exist; check the path.")
    if not path.is_file():
        raise DataError(f"data path {path} is not a file; pass the path of a single file.")
    try:
        with path.open(encoding="utf-8-sig", newline=newline) as handle:
            return handle.read()
    except UnicodeDecodeError as exc:
        raise DataError(
            f"{path} is not valid UTF-8 text ({exc.reason} at byte {exc.start}); "
            "re-encode it as UTF-8."
        ) from None


def _optional_str(value: object) -> str | None:
    """Key / label values: missing or null is unknown; numbers become their string form."""
    if value is None or value == "":
        return None
    return value if isinstance(value, str) else str(value)


def _rows_to_records(
    rows: Iterable[tuple[str, Mapping[str, Any]]],
    *,
    source: str,
    text_field: str,
    key_field: str | None,
    label_field: str | None,
) -> list[Record]:
    """Turn ``(where, row)`` pairs into records; ``where`` names the row in messages."""
    records: list[Record] = []
    for where, row in rows:
        for field in (text_field, key_field, label_field):
            if field is not None and field not in row:
                raise DataError(
                    f"{source}, {where}: no field {field!r}; the fields present are "
                    f"{sorted(row)}. Pass the right text_field / key_field / label_field."
                )
        text = row[text_field]
        if not isinstance(text, str):
            raise DataError(
                f"{source}, {where}: field {text_field!r} must be a string, got "
                f"{type(text).__name__} ({text!r:.60}); store the document text as a string."
            )
        if not text.strip():
            continue
        records.append(
            Record(
                text=text,
                key=_optional_str(row[key_field]) if key_field is not None else None,
                label=_optional_str(row[label_field]) if label_field is not None else None,
            )
        )
    if not records:
        raise DataError(
            f"{source} contains no documents (no rows, or every text is empty); check the data."
        )
    return records


def _jsonl_rows(path: Path, content: str) -> Iterator[tuple[str, Mapping[str, Any]]]:
    for number, line in enumerate(content.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(
                f"{path}, line {number}: not valid JSON ({exc.msg}); each line of a JSONL file "
                "must be one JSON object."
            ) from None
        if not isinstance(row, dict):
            raise DataError(
                f"{path}, line {number}: expected a JSON object, got {type(row).__name__}; "
                "each line of a JSONL file must be one JSON object."
            )
        yield f"line {number}", row


def _csv_rows(path: Path, content: str) -> Iterator[tuple[str, Mapping[str, Any]]]:
    reader = csv.DictReader(io.StringIO(content, newline=""))
    if reader.fieldnames is None:
        return
    for number, row in enumerate(reader, start=1):
        if None in row:
            raise DataError(
                f"{path}, row {number} (line {reader.line_num}): more values than the "
                f"{len(reader.fieldnames)} header columns; quote values that contain commas."
            )
        missing = [name for name, value in row.items() if value is None]
        if missing:
            raise DataError(
                f"{path}, row {number} (line {reader.line_num}): no value for columns "
                f"{missing}; every row needs as many values as the header."
            )
        yield f"row {number} (line {reader.line_num})", row


def _text_documents(content: str) -> list[str]:
    lines = content.splitlines()
    stripped = [line.strip() for line in lines]
    non_blank = [index for index, line in enumerate(stripped) if line]
    paragraph_mode = bool(non_blank) and any(
        not stripped[index] for index in range(non_blank[0], non_blank[-1])
    )
    if not paragraph_mode:
        return [line for line, clean in zip(lines, stripped, strict=True) if clean]
    documents: list[str] = []
    current: list[str] = []
    for line, clean in zip(lines, stripped, strict=True):
        if clean:
            current.append(line)
        elif current:
            documents.append("\n".join(current))
            current = []
    if current:
        documents.append("\n".join(current))
    return documents


def load_records(
    path: str | Path,
    *,
    text_field: str = "text",
    key_field: str | None = None,
    label_field: str | None = None,
    fmt: str | None = None,
) -> list[Record]:
    """Load a corpus from a JSONL, CSV or text file.

    Args:
        path: The file.
        text_field: JSONL field / CSV column holding the document text.
        key_field: Field holding the natural-partition key (e.g. the owner), or
            ``None``. Numbers are converted to strings; null or empty is ``None``.
        label_field: Field holding the document kind / class, or ``None``.
        fmt: ``"jsonl"``, ``"csv"`` or ``"text"`` (aliases ``"json-lines"``,
            ``"ndjson"``, ``"txt"``); ``None`` infers it from the
            suffix (``.jsonl``, ``.json-lines``, ``.ndjson``, ``.csv``, ``.txt``).
            Text files have no fields: one document per non-blank line, or one
            per paragraph when blank lines separate paragraphs (see the module
            docstring).

    Returns:
        One record per non-empty document, in file order.

    Raises:
        DataError: If the file is missing or not UTF-8, the format is unknown,
            a row is malformed or lacks a field, a text is not a string, or the
            file holds no documents.
    """
    path = Path(path)
    fmt = _infer_format(path, fmt)
    if fmt == "text" and (key_field is not None or label_field is not None):
        raise DataError(
            f"{path} is a text file, which has no key or label fields; use a JSONL or CSV file "
            "to give records keys or labels."
        )
    content = _read_text(path, newline="" if fmt == "csv" else None)
    if fmt == "text":
        documents = _text_documents(content)
        if not documents:
            raise DataError(f"{path} contains no documents (the file is empty); check the file.")
        records = [Record(text=document) for document in documents]
    else:
        rows = _jsonl_rows(path, content) if fmt == "jsonl" else _csv_rows(path, content)
        records = _rows_to_records(
            rows,
            source=str(path),
            text_field=text_field,
            key_field=key_field,
            label_field=label_field,
        )
    logger.info("loaded %d records from %s (%s)", len(records), path, fmt)
    return records


def _hf_column(dataset: Any, field: str) -> list[Any]:
    values = list(dataset[field])
    feature = dataset.features.get(field)
    int2str = getattr(feature, "int2str", None)  # ClassLabel: store the class name
    if callable(int2str):
        return [None if value is None or value < 0 else int2str(value) for value in values]
    return values


def load_hf_dataset(
    name_or_dir: str,
    *,
    split: str = "train",
    text_field: str = "text",
    key_field: str | None = None,
    label_field: str | None = None,
) -> list[Record]:
    """Load a Hugging Face dataset (hub name or a directory from ``save_to_disk``).

    Args:
        name_or_dir: A local directory written by ``Dataset.save_to_disk`` /
            ``DatasetDict.save_to_disk`` (loaded with ``load_from_disk``), or
            anything ``datasets.load_dataset`` accepts.
        split: The split to use (for a saved ``DatasetDict`` or a hub dataset).
        text_field: Column holding the document text.
        key_field: Column holding the natural-partition key, or ``None``.
        label_field: Column holding the document kind / class, or ``None``;
            ``ClassLabel`` columns are converted to their class names.

    Returns:
        One record per non-empty document, in dataset order.

    Raises:
        MissingDependencyError: If ``datasets`` is not installed.
        DataError: If the dataset or split cannot be loaded, a column is
            missing, a text is not a string, or there are no documents.
    """
    try:
        import datasets
    except ImportError:
        raise MissingDependencyError("datasets", "hf", "Loading Hugging Face datasets") from None

    source = f"Hugging Face dataset {name_or_dir!r} (split {split!r})"
    local = Path(name_or_dir)
    if local.is_dir():
        try:
            loaded = datasets.load_from_disk(str(local))
        except FileNotFoundError as exc:
            raise DataError(
                f"{local} is not a dataset saved with save_to_disk ({exc}); pass such a "
                "directory or a dataset name from the Hugging Face hub."
            ) from None
        if isinstance(loaded, datasets.DatasetDict):
            if split not in loaded:
                raise DataError(
                    f"{source}: no split {split!r}; the saved splits are {sorted(loaded)}."
                )
            dataset = loaded[split]
        else:
            dataset = loaded
    else:
        try:
            dataset = datasets.load_dataset(name_or_dir, split=split)
        except Exception as exc:  # datasets raises many unrelated types (hub, network, split)
            raise DataError(
                f"could not load {source}: {type(exc).__name__}: {exc}. Check the name and "
                "split, or pass a local directory saved with Dataset.save_to_disk."
            ) from exc
    columns = list(dataset.column_names)
    for field in (text_field, key_field, label_field):
        if field is not None and field not in columns:
            raise DataError(
                f"{source}: no column {field!r}; the columns are {columns}. Pass the right "
                "text_field / key_field / label_field."
            )
    fields = [field for field in (text_field, key_field, label_field) if field is not None]
    values = {field: _hf_column(dataset, field) for field in dict.fromkeys(fields)}
    rows = (
        (f"row {index}", {field: values[field][index] for field in values})
        for index in range(len(dataset))
    )
    return _rows_to_records(
        rows, source=source, text_field=text_field, key_field=key_field, label_field=label_field
    )
