"""Tests of the built-in populations (fedpriv.data.population), the users above all."""

from __future__ import annotations

import collections
import math
import re

import numpy as np
import pytest

from fedpriv.data import _vocab
from fedpriv.data.canaries import make_audit_canaries
from fedpriv.data.population import (
    MAX_USERS,
    POPULATIONS,
    generate_population,
    generate_user_records,
)
from fedpriv.data.records import Record
from fedpriv.data.synthetic import DOCUMENT_KINDS, generate_client_records
from fedpriv.errors import DataError

NUM_USERS = 400
PER_USER = 8


@pytest.fixture(scope="module")
def users() -> list[list[Record]]:
    return generate_user_records(NUM_USERS, PER_USER, seed=3)


def _values(records: list[Record], kind: str) -> list[str]:
    return [value for record in records for k, value in record.pii_values() if k == kind]


def _digits(value: str) -> str:
    return re.sub(r"\D", "", value)


def test_one_client_per_user_with_its_key(users: list[list[Record]]) -> None:
    assert len(users) == NUM_USERS
    for index, records in enumerate(users):
        assert len(records) == PER_USER
        assert {record.key for record in records} == {f"user-{index:06d}"}
        assert {record.label for record in records} <= set(DOCUMENT_KINDS)
        for record in records:
            for span in record.pii:
                assert record.text[span.start : span.end].strip() == record.text[
                    span.start : span.end
                ]
    kinds = collections.Counter(record.label for records in users for record in records)
    assert len(kinds) == len(DOCUMENT_KINDS)  # the services write every kind between them


def test_same_seed_same_users_and_another_seed_others(users: list[list[Record]]) -> None:
    assert generate_user_records(NUM_USERS, PER_USER, seed=3) == users
    other = generate_user_records(50, PER_USER, seed=4)
    assert not {r.text for u in users for r in u} & {r.text for u in other for r in u}


def test_user_depends_only_on_seed_and_index(users: list[list[Record]]) -> None:
    fewer = generate_user_records(30, 3, seed=3)
    assert fewer == [records[:3] for records in users[:30]]


def test_each_user_reuses_their_own_fields(users: list[list[Record]]) -> None:
    repeated = 0
    for records in users:
        emails = set(_values(records, "email"))
        phones = {_digits(value)[-10:] for value in _values(records, "phone")}
        accounts = {_digits(value) for value in _values(records, "account")}
        assert len(emails) <= 1 and len(phones) <= 1 and len(accounts) <= 1
        fields = collections.Counter(_values(records, "email") + _values(records, "address"))
        repeated += any(count > 1 for count in fields.values())
        # The user's first name is in every one of their documents.
        first = _values(records, "name")
        common = set.intersection(*({n.split()[0] for n in _values([r], "name")} for r in records))
        assert common, first
    assert repeated > NUM_USERS // 2  # most users' documents repeat their e-mail or address


def test_users_fields_are_unique_across_users() -> None:
    users = generate_user_records(3000, 6, seed=0)
    for kind, normalise in (("email", str), ("phone", lambda v: _digits(v)[-10:]),
                            ("account", _digits), ("address", str)):
        owners: dict[str, set[int]] = collections.defaultdict(set)
        for index, records in enumerate(users):
            for value in _values(records, kind):
                owners[normalise(value)].add(index)
        shared = [value for value, who in owners.items() if len(who) > 1]
        assert len(shared) <= (10 if kind == "address" else 0), (kind, shared[:5])
    # Customer / employee ids: the number behind a service's prefix is the user's own.
    ids: dict[str, set[int]] = collections.defaultdict(set)
    for index, records in enumerate(users):
        for value in _values(records, "id"):
            if len(_digits(value)) in (6, 7) and not value.startswith(("TKT", "CASE", "INC", "REQ",
                                                                          "CL")):
                ids[_digits(value)].add(index)
    assert all(len(who) == 1 for who in ids.values())


def test_full_names_are_unique_far_beyond_the_plain_names() -> None:
    from fedpriv.data.population import _name_capacity, _user_name

    capacity = _name_capacity(0)
    assert capacity > 250_000
    names = {_user_name(0, index) for index in range(0, capacity, 7)}
    assert len(names) == len(range(0, capacity, 7))
    assert _user_name(0, 0)[1] == "" and _user_name(0, capacity - 1)[1] == "Z"
    # Users past the plain names show their middle initial: "Ada J. Brennan".
    from fedpriv.data.population import _user_records

    first, initial, last = _user_name(0, 20_000)
    assert initial
    names = _values(_user_records(0, 20_000, 12), "name")
    assert f"{first} {initial}. {last}" in names


def test_user_ids_are_a_bijection_of_the_index() -> None:
    from fedpriv.data.population import _id_maps

    maps = _id_maps(11)
    for (a, _), modulus in ((maps.customer, 10**7), (maps.employee, 10**6)):
        assert math.gcd(a, modulus) == 1  # i -> a i + b is then a bijection mod m
    a, b = maps.employee
    hit = np.zeros(10**6, dtype=bool)
    hit[(a * np.arange(10**6, dtype=np.int64) + b) % 10**6] = True
    assert hit.all()


def test_users_names_are_private_names(users: list[list[Record]]) -> None:
    private_first = set(_vocab.FIRST_NAMES[0::2])
    private_last = set(_vocab.LAST_NAMES[0::2])
    for records in users:
        for name in _values(records, "name"):
            parts = name.split()
            assert parts[0] in private_first
            if len(parts) > 1:
                assert parts[-1] in private_last


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"num_users": 0, "records_per_user": 2, "seed": 0}, "num_users"),
        ({"num_users": MAX_USERS + 1, "records_per_user": 2, "seed": 0}, "at most"),
        ({"num_users": 2, "records_per_user": 0, "seed": 0}, "records_per_user"),
        ({"num_users": 2, "records_per_user": 2, "seed": -1}, "seed"),
    ],
)
def test_user_generator_rejects_bad_arguments(kwargs: dict[str, int], message: str) -> None:
    with pytest.raises(DataError, match=message):
        generate_user_records(**kwargs)


def test_generate_population_dispatches_by_name() -> None:
    assert set(POPULATIONS) == {"organisations", "users"}
    assert generate_population("organisations", 2, 5, seed=1) == generate_client_records(
        2, 5, seed=1
    )
    assert generate_population("users", 2, 5, seed=1) == generate_user_records(2, 5, seed=1)
    with pytest.raises(DataError, match=r"unknown population 'devices'.*organisations"):
        generate_population("devices", 2, 5, seed=1)


def test_audit_canaries_by_client_match_per_client() -> None:
    audit = make_audit_canaries(200, 30, np.random.default_rng(0),
                                [f"word{chr(97 + i)}" for i in range(26)],
                                repetitions=2)
    by_client = audit.planted_by_client()
    for client in range(30):
        assert by_client.get(client, []) == audit.planted(client)
