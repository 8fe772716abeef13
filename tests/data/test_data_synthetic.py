"""Tests of the synthetic private-records corpus (fedpriv.data.synthetic)."""

from __future__ import annotations

import collections
import hashlib
import itertools
import re
from importlib import resources

import numpy as np
import pytest

from fedpriv.data import _vocab
from fedpriv.data.records import PII_KINDS, Record
from fedpriv.data.synthetic import (
    DOCUMENT_KINDS,
    generate_client_records,
    generate_public_corpus,
)
from fedpriv.errors import DataError

NUM_CLIENTS = 6
PER_CLIENT = 150

# Exact shapes of every personal field the generator writes.
FIELD_SHAPES = {
    "name": re.compile(r"[A-Z][a-z]+( [A-Z][A-Za-z]+)?"),
    "date": re.compile(
        r"\d{1,2} [A-Z][a-z]+ \d{4}|\d{4}-\d{2}-\d{2}|\d{2}/\d{2}/\d{4}|[A-Z][a-z]+ \d{1,2}, \d{4}"
    ),
    "phone": re.compile(
        r"\(\d{3}\) \d{3}-\d{4}|\d{3}-\d{3}-\d{4}|\+1 \d{3} \d{3} \d{4}|\d{3}\.\d{3}\.\d{4}"
    ),
    "email": re.compile(r"[a-z0-9._]+@[a-z]+\.[a-z]+"),
    "account": re.compile(r"\d{4}-\d{4}-\d{4}|\d{4} \d{4} \d{4}|\d{12}|\d{2}-\d{6}-\d{4}"),
    "id": re.compile(r"[A-Z]+-?\d{5,7}"),
    "address": re.compile(r"\d{1,3} [A-Z][a-z]+ [A-Z][a-z]+, [A-Z][a-z]+( [A-Z][a-z]+)?"),
}

# Phrases of templates only the public corpus uses, and only the clients use.
PUBLIC_ONLY = (
    "Progress note.",
    "Discharge summary from",
    "Reminder from",
    "is coming up.",
    "New ticket",
    "Chat transcript summary",
    "would like someone to",
    "we are sorry to hear about",
    "security alert for",
    "Annual summary for",
    "joined the",
    "Exit interview with",
    "Notice of claim",
    "Claim payment advice.",
)
CLIENT_ONLY = (
    "Follow-up visit for",
    "Telephone consultation on",
    "is booked for",
    "you are due for your",
    "Customer called about",
    "Complaint logged by",
    "Thank you for contacting",
    "quick note from",
    "Monthly summary",
    "| salary +",
    "Meeting note.",
    "Absence and welfare record",
    "Claim review.",
    "First notification of loss",
)


@pytest.fixture(scope="module")
def clients() -> list[list[Record]]:
    return generate_client_records(NUM_CLIENTS, PER_CLIENT, seed=7)


@pytest.fixture(scope="module")
def public() -> list[str]:
    return generate_public_corpus(3000, seed=7)


def _masked(record: Record) -> str:
    """Return the record text with every personal field blanked out."""
    chars = list(record.text)
    for span in record.pii:
        chars[span.start : span.end] = ["#"] * (span.end - span.start)
    return "".join(chars)


def _words(text: str) -> set[str]:
    return set(re.findall(r"[A-Za-z]+", text))


def _sha256(texts: list[str]) -> str:
    digest = hashlib.sha256()
    for text in texts:
        digest.update(text.encode())
        digest.update(b"\0")
    return digest.hexdigest()


def test_output_is_byte_identical_to_the_recorded_corpus() -> None:
    """The corpus of the word lists as Python literals, before they moved to vocab.json."""
    records = [r for client in generate_client_records(8, 40, seed=0) for r in client]
    assert _sha256([r.text for r in records]) == (
        "34ae497cbb350c9eb4adb5e86ca92348c6a56970c316be1db7f43dac78bac404"
    )
    spans = [f"{r.key}|{r.label}|{[(s.start, s.end, s.kind) for s in r.pii]}" for r in records]
    assert _sha256(spans) == "5e07384da6ca9a0b5a0f8b4d2553e833d9cb54dd7864d7945e9076df05fd39a1"
    assert _sha256(generate_public_corpus(200, seed=0)) == (
        "c62de67d0dd6d7e10dc1f339d8b9fa6ffeb7244f27e379acfd686905bb42c329"
    )


def test_word_lists_come_from_the_packaged_data_file() -> None:
    assert resources.files("fedpriv.data").joinpath("vocab.json").is_file()
    assert isinstance(_vocab.FIRST_NAMES, tuple) and len(_vocab.FIRST_NAMES) > 200
    assert all(isinstance(words, tuple) for words in _vocab.SHARED_VOCAB.values())
    for profile in _vocab.PROFILES:
        assert isinstance(profile["orgs"], tuple) and isinstance(profile["kinds"], dict)


def test_shape_keys_and_labels(clients: list[list[Record]]) -> None:
    assert len(clients) == NUM_CLIENTS
    for index, records in enumerate(clients):
        assert len(records) == PER_CLIENT
        assert {record.key for record in records} == {f"client-{index:03d}"}
        assert {record.label for record in records} <= set(DOCUMENT_KINDS)


def test_same_seed_same_output(clients: list[list[Record]], public: list[str]) -> None:
    assert generate_client_records(NUM_CLIENTS, PER_CLIENT, seed=7) == clients
    assert generate_public_corpus(3000, seed=7) == public


def test_different_seed_different_output(clients: list[list[Record]], public: list[str]) -> None:
    other = generate_client_records(NUM_CLIENTS, PER_CLIENT, seed=8)
    for mine, theirs in zip(clients, other, strict=True):
        shared = {r.text for r in mine} & {r.text for r in theirs}
        assert len(shared) == 0
    other_public = generate_public_corpus(3000, seed=8)
    assert len(set(public) & set(other_public)) < 10


def test_client_depends_only_on_seed_and_index(clients: list[list[Record]]) -> None:
    fewer = generate_client_records(3, 40, seed=7)
    for index in range(3):
        assert fewer[index] == clients[index][:40]


def test_pii_spans_are_exact(clients: list[list[Record]]) -> None:
    seen_kinds: set[str] = set()
    for record in itertools.chain.from_iterable(clients):
        previous_end = 0
        assert record.pii, "every document carries personal fields"
        for span in record.pii:
            assert span.start >= previous_end, "spans are sorted and do not overlap"
            previous_end = span.end
            value = record.text[span.start : span.end]
            assert FIELD_SHAPES[span.kind].fullmatch(value), (span.kind, value, record.text)
            # a field is never cut out of a longer word or number
            before = record.text[span.start - 1] if span.start else " "
            after = record.text[span.end] if span.end < len(record.text) else " "
            assert not before.isalnum() and not after.isalnum(), (value, record.text)
            seen_kinds.add(span.kind)
    assert seen_kinds == PII_KINDS


def test_every_personal_field_is_recorded(clients: list[list[Record]]) -> None:
    """Blank out the spans: no e-mail, phone, account number, id or client name is left."""
    leftover_patterns = [FIELD_SHAPES[kind] for kind in ("email", "phone", "account", "id")]
    for records in clients:
        names = {
            part
            for record in records
            for kind, value in record.pii_values()
            if kind == "name"
            for part in value.split()
        }
        for record in records:
            masked = _masked(record)
            assert "@" not in masked
            for pattern in leftover_patterns:
                assert not pattern.search(masked), (pattern.pattern, masked)
            assert not (_words(masked) & names), masked


def test_documents_are_short(clients: list[list[Record]], public: list[str]) -> None:
    client_lengths = [len(r.text.split()) for r in itertools.chain.from_iterable(clients)]
    public_lengths = [len(text.split()) for text in public]
    for lengths in (client_lengths, public_lengths):
        assert min(lengths) >= 25 and max(lengths) <= 72
        assert 35 <= float(np.mean(lengths)) <= 60


def test_clients_have_different_kind_mixes(clients: list[list[Record]]) -> None:
    def mix(records: list[Record]) -> np.ndarray:
        counts = collections.Counter(record.label for record in records)
        return np.array([counts[kind] for kind in DOCUMENT_KINDS]) / len(records)

    mixes = [mix(records) for records in clients]
    top_two = [np.sort(distribution)[-2:].sum() for distribution in mixes]
    assert min(top_two) >= 0.5 and float(np.mean(top_two)) >= 0.75  # one or two kinds dominate
    distances = [0.5 * np.abs(a - b).sum() for a, b in itertools.combinations(mixes, 2)]
    assert float(np.mean(distances)) > 0.4


def test_clients_have_their_own_vocabulary(clients: list[list[Record]]) -> None:
    vocab = [set().union(*(_words(_masked(r).lower()) for r in recs)) for recs in clients]
    across = [len(a & b) / len(a | b) for a, b in itertools.combinations(vocab, 2)]
    halves = []
    for records in clients:
        first = set().union(*(_words(_masked(r).lower()) for r in records[::2]))
        second = set().union(*(_words(_masked(r).lower()) for r in records[1::2]))
        halves.append(len(first & second) / len(first | second))
    assert float(np.mean(across)) < 0.5 < 0.8 < float(np.mean(halves))


def _full_names(records: list[Record]) -> collections.Counter[str]:
    return collections.Counter(
        value
        for record in records
        for kind, value in record.pii_values()
        if " " in value
        if kind == "name"
    )


def test_name_pools_are_disjoint_and_reused(clients: list[list[Record]]) -> None:
    pools = [_full_names(records) for records in clients]
    for a, b in itertools.combinations(pools, 2):
        assert not set(a) & set(b)
    for pool, records in zip(pools, clients, strict=True):
        assert 20 <= len(pool) <= 36  # a small, client-specific set of people...
        assert pool.most_common(1)[0][1] >= 5  # ...who appear in many documents
        addresses = {v for r in records for kind, v in r.pii_values() if kind == "address"}
        phones = {v for r in records for kind, v in r.pii_values() if kind == "phone"}
        assert len(addresses) <= 36 and len(phones) <= 36  # fixed per person


def test_public_names_never_appear_in_client_text(
    clients: list[list[Record]], public: list[str]
) -> None:
    public_first = set(_vocab.FIRST_NAMES[1::2])
    public_last = set(_vocab.LAST_NAMES[1::2])
    public_cities = set(_vocab.CITIES[1::2])
    client_text = "\n".join(r.text for r in itertools.chain.from_iterable(clients))
    client_words = _words(client_text)
    assert not client_words & (public_first | public_last)
    assert not any(city in client_text for city in public_cities)
    # and the other way round: no client person ever appears in the public corpus
    public_words = _words("\n".join(public))
    client_first = set(_vocab.FIRST_NAMES[0::2])
    client_last = set(_vocab.LAST_NAMES[0::2])
    assert not public_words & (client_first | client_last)
    assert public_words & public_first and public_words & public_last


def test_public_and_client_templates_differ(clients: list[list[Record]], public: list[str]) -> None:
    client_texts = [r.text for r in itertools.chain.from_iterable(clients)]
    assert not any(marker in text for marker in PUBLIC_ONLY for text in client_texts)
    assert not any(marker in text for marker in CLIENT_ONLY for text in public)
    assert sum(any(m in text for m in PUBLIC_ONLY) for text in public) > len(public) // 4
    assert sum(any(m in text for m in CLIENT_ONLY) for text in client_texts) > 100


def test_public_corpus_covers_every_kind(public: list[str]) -> None:
    starts = {
        "clinical_note": ("Clinical note,", "Progress note.", "Discharge summary from"),
        "bank_statement": ("security alert for", "Annual summary for", "statement for"),
        "insurance_claim": ("Notice of claim", "Claim payment advice.", "we received your claim"),
    }
    for kind, markers in starts.items():
        assert any(m in text for m in markers for text in public), kind


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"num_clients": 0, "records_per_client": 5, "seed": 0}, "num_clients"),
        ({"num_clients": True, "records_per_client": 5, "seed": 0}, "num_clients"),
        ({"num_clients": 2, "records_per_client": 0, "seed": 0}, "records_per_client"),
        ({"num_clients": 2, "records_per_client": 5, "seed": -1}, "seed"),
    ],
)
def test_client_generator_rejects_bad_arguments(kwargs: dict[str, int], message: str) -> None:
    with pytest.raises(DataError, match=message):
        generate_client_records(**kwargs)


def test_public_generator_rejects_bad_arguments() -> None:
    with pytest.raises(DataError, match="num_records"):
        generate_public_corpus(0, seed=1)
    with pytest.raises(DataError, match="seed"):
        generate_public_corpus(10, seed=-3)
