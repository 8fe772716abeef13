"""Tests of the corpus loaders (fedpriv.data.loaders)."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path
from typing import Any

import pytest

from fedpriv.data.loaders import load_hf_dataset, load_records
from fedpriv.data.records import Record
from fedpriv.errors import DataError, MissingDependencyError

ROWS: list[dict[str, Any]] = [
    {"text": "Patient Ada Novak, DOB 1 May 1970.", "org": "clinic-a", "kind": "note"},
    {"text": 'She said "call me", then left,\nsecond line.', "org": "clinic-b", "kind": "email"},
    {"text": "Account 1234-5678-9012 was blocked.", "org": "bank-c", "kind": "notice"},
]
EXPECTED = [Record(text=r["text"], key=r["org"], label=r["kind"]) for r in ROWS]


def _write_jsonl(path: Path, rows: list[Any]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def _write_csv(path: Path, rows: list[dict[str, Any]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


# --- round trips -------------------------------------------------------------------------


@pytest.mark.parametrize(("suffix", "writer"), [(".jsonl", _write_jsonl), (".csv", _write_csv)])
def test_round_trip_with_fields(tmp_path: Path, suffix: str, writer: Any) -> None:
    path = writer(tmp_path / f"corpus{suffix}", ROWS)
    loaded = load_records(path, key_field="org", label_field="kind")
    assert loaded == EXPECTED


@pytest.mark.parametrize(("suffix", "writer"), [(".jsonl", _write_jsonl), (".csv", _write_csv)])
def test_round_trip_text_only(tmp_path: Path, suffix: str, writer: Any) -> None:
    path = writer(tmp_path / f"corpus{suffix}", ROWS)
    assert load_records(str(path)) == [Record(text=r["text"]) for r in ROWS]


def test_custom_text_field_and_format_override(tmp_path: Path) -> None:
    rows = [{"body": "first document"}, {"body": "second document"}]
    path = _write_jsonl(tmp_path / "corpus.data", rows)
    loaded = load_records(path, text_field="body", fmt="jsonl")
    assert [r.text for r in loaded] == ["first document", "second document"]
    assert load_records(path, text_field="body", fmt="ndjson") == loaded


def test_jsonl_skips_empty_texts_and_blank_lines(tmp_path: Path) -> None:
    path = tmp_path / "corpus.jsonl"
    path.write_text(
        '{"text": "kept one"}\n\n{"text": ""}\n{"text": "   "}\n{"text": "kept two"}\n',
        encoding="utf-8",
    )
    assert [r.text for r in load_records(path)] == ["kept one", "kept two"]


def test_key_and_label_values_are_normalised(tmp_path: Path) -> None:
    path = _write_jsonl(
        tmp_path / "corpus.jsonl",
        [{"text": "a", "k": 3, "l": None}, {"text": "b", "k": "x", "l": "y"}],
    )
    loaded = load_records(path, key_field="k", label_field="l")
    assert [(r.key, r.label) for r in loaded] == [("3", None), ("x", "y")]


def test_json_lines_suffix(tmp_path: Path) -> None:
    path = _write_jsonl(tmp_path / "corpus.json-lines", [{"text": "hello"}])
    assert load_records(path) == [Record(text="hello")]


def test_text_file_one_document_per_line(tmp_path: Path) -> None:
    path = tmp_path / "corpus.txt"
    path.write_text("first line\nsecond line\n  \n\n", encoding="utf-8")  # trailing blanks only
    assert [r.text for r in load_records(path)] == ["first line", "second line"]


def test_text_file_paragraphs_when_blank_lines_separate(tmp_path: Path) -> None:
    path = tmp_path / "corpus.txt"
    path.write_text("\npara one\nstill one\n\n\npara two\n\n", encoding="utf-8")
    assert [r.text for r in load_records(path)] == ["para one\nstill one", "para two"]


def test_byte_order_mark_is_ignored(tmp_path: Path) -> None:
    path = tmp_path / "corpus.csv"
    path.write_text("text\nhello\n", encoding="utf-8-sig")
    assert load_records(path) == [Record(text="hello")]


# --- errors ------------------------------------------------------------------------------


def test_missing_file_names_the_path(tmp_path: Path) -> None:
    path = tmp_path / "nowhere" / "corpus.jsonl"
    with pytest.raises(DataError, match="does not exist") as info:
        load_records(path)
    assert str(path) in str(info.value)


def test_directory_is_not_a_file(tmp_path: Path) -> None:
    folder = tmp_path / "folder.jsonl"
    folder.mkdir()
    with pytest.raises(DataError, match="not a file"):
        load_records(folder)


def test_unknown_suffix_and_unknown_format(tmp_path: Path) -> None:
    path = tmp_path / "corpus.parquet"
    path.write_text("x", encoding="utf-8")
    with pytest.raises(DataError, match=r"'\.parquet'"):
        load_records(path)
    with pytest.raises(DataError, match="unknown format 'xml'"):
        load_records(path, fmt="xml")


def test_jsonl_missing_text_field_names_line_and_fields(tmp_path: Path) -> None:
    path = _write_jsonl(tmp_path / "c.jsonl", [{"text": "ok"}, {"body": "x", "id": 2}])
    with pytest.raises(DataError, match="line 2") as info:
        load_records(path)
    message = str(info.value)
    assert "'text'" in message and "'body'" in message and "'id'" in message


def test_jsonl_missing_key_field(tmp_path: Path) -> None:
    path = _write_jsonl(tmp_path / "c.jsonl", [{"text": "ok", "org": "a"}, {"text": "no org"}])
    with pytest.raises(DataError, match=r"line 2.*'org'"):
        load_records(path, key_field="org")


def test_csv_missing_column_names_row_and_columns(tmp_path: Path) -> None:
    path = _write_csv(tmp_path / "c.csv", [{"body": "x", "org": "a"}])
    with pytest.raises(DataError, match="row 1") as info:
        load_records(path)
    assert "'body'" in str(info.value) and "'org'" in str(info.value)


def test_csv_ragged_rows(tmp_path: Path) -> None:
    too_many = tmp_path / "many.csv"
    too_many.write_text("text,org\nfine,a\nx,b,extra\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"row 2 \(line 3\).*more values"):
        load_records(too_many)
    too_few = tmp_path / "few.csv"
    too_few.write_text("text,org\nfine\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"row 1.*\['org'\]"):
        load_records(too_few)


def test_invalid_json_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "c.jsonl"
    path.write_text('{"text": "ok"}\n{"text": oops}\n', encoding="utf-8")
    with pytest.raises(DataError, match="line 2: not valid JSON"):
        load_records(path)


def test_json_line_that_is_not_an_object(tmp_path: Path) -> None:
    path = _write_jsonl(tmp_path / "c.jsonl", [{"text": "ok"}, ["text", "list"]])
    with pytest.raises(DataError, match="line 2: expected a JSON object, got list"):
        load_records(path)


@pytest.mark.parametrize("value", [42, None, ["a"], {"t": 1}])
def test_non_string_text(tmp_path: Path, value: Any) -> None:
    path = _write_jsonl(tmp_path / "c.jsonl", [{"text": "fine"}, {"text": value}])
    with pytest.raises(DataError, match=f"line 2.*must be a string, got {type(value).__name__}"):
        load_records(path)


@pytest.mark.parametrize("name", ["c.jsonl", "c.csv", "c.txt"])
def test_empty_file(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    path.write_text("", encoding="utf-8")
    with pytest.raises(DataError, match="no documents") as info:
        load_records(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("c.jsonl", '{"text": ""}\n{"text": "  "}\n'),
        ("c.csv", "text,org\n,a\n   ,b\n"),
        ("c.txt", "\n   \n\n"),
    ],
)
def test_file_with_only_empty_texts(tmp_path: Path, name: str, content: str) -> None:
    path = tmp_path / name
    path.write_text(content, encoding="utf-8")
    with pytest.raises(DataError, match="no documents"):
        load_records(path)


def test_text_file_has_no_fields(tmp_path: Path) -> None:
    path = tmp_path / "c.txt"
    path.write_text("doc\n", encoding="utf-8")
    with pytest.raises(DataError, match="text file"):
        load_records(path, key_field="org")


def test_non_utf8_file(tmp_path: Path) -> None:
    path = tmp_path / "c.txt"
    path.write_bytes("café\n".encode("latin-1"))
    with pytest.raises(DataError, match="not valid UTF-8"):
        load_records(path)


# --- Hugging Face datasets ---------------------------------------------------------------


def test_hf_dataset_saved_to_disk(tmp_path: Path) -> None:
    datasets = pytest.importorskip("datasets")
    table = {
        "text": [r["text"] for r in ROWS] + [""],
        "org": [r["org"] for r in ROWS] + ["x"],
        "kind": [r["kind"] for r in ROWS] + ["y"],
    }
    datasets.Dataset.from_dict(table).save_to_disk(str(tmp_path / "ds"))
    loaded = load_hf_dataset(str(tmp_path / "ds"), key_field="org", label_field="kind")
    assert loaded == EXPECTED  # the empty text is skipped


def test_hf_dataset_dict_splits_and_class_labels(tmp_path: Path) -> None:
    datasets = pytest.importorskip("datasets")
    features = datasets.Features(
        {"text": datasets.Value("string"), "label": datasets.ClassLabel(names=["neg", "pos"])}
    )
    train = datasets.Dataset.from_dict({"text": ["good", "bad"], "label": [1, 0]}, features)
    test = datasets.Dataset.from_dict({"text": ["fine"], "label": [1]}, features)
    datasets.DatasetDict({"train": train, "test": test}).save_to_disk(str(tmp_path / "dd"))
    loaded = load_hf_dataset(str(tmp_path / "dd"), split="test", label_field="label")
    assert loaded == [Record(text="fine", label="pos")]
    assert [r.label for r in load_hf_dataset(str(tmp_path / "dd"), label_field="label")] == [
        "pos",
        "neg",
    ]
    with pytest.raises(DataError, match=r"no split 'validation'.*\['test', 'train'\]"):
        load_hf_dataset(str(tmp_path / "dd"), split="validation")


def test_hf_missing_column_and_bad_text(tmp_path: Path) -> None:
    datasets = pytest.importorskip("datasets")
    datasets.Dataset.from_dict({"body": ["a"], "n": [1]}).save_to_disk(str(tmp_path / "a"))
    with pytest.raises(DataError, match=r"no column 'text'.*\['body', 'n'\]"):
        load_hf_dataset(str(tmp_path / "a"))
    with pytest.raises(DataError, match=r"row 0.*must be a string, got int"):
        load_hf_dataset(str(tmp_path / "a"), text_field="n")


def test_hf_hub_errors_become_data_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    datasets = pytest.importorskip("datasets")
    calls: list[tuple[str, str]] = []

    def fail(name: str, split: str) -> None:
        calls.append((name, split))
        raise FileNotFoundError("no such dataset on the hub")

    monkeypatch.setattr(datasets, "load_dataset", fail)
    with pytest.raises(DataError, match=r"could not load.*'someone/nothing'.*no such dataset"):
        load_hf_dataset("someone/nothing", split="validation")
    assert calls == [("someone/nothing", "validation")]


def test_hf_without_datasets_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "datasets", None)  # makes `import datasets` fail
    with pytest.raises(MissingDependencyError, match=r"fedpriv\[hf\]") as info:
        load_hf_dataset("anything")
    assert info.value.package == "datasets"
