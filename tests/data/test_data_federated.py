"""Tests of member / non-member splits, canary planting and record partitioning."""

from __future__ import annotations

import collections

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedpriv.data.canaries import Canary, get_canary_format, make_canaries
from fedpriv.data.federated import (
    FederatedDataset,
    build_federated_dataset,
    partition_records,
    split_members,
)
from fedpriv.data.records import Record
from fedpriv.data.synthetic import generate_client_records
from fedpriv.errors import DataError


@pytest.fixture(scope="module")
def client_records() -> list[list[Record]]:
    return generate_client_records(4, 30, seed=3)


@pytest.fixture(scope="module")
def canaries() -> list[Canary]:
    rng = np.random.default_rng(11)
    account = make_canaries(get_canary_format("account"), [0, 2], 2, 3, rng)
    pin = make_canaries(get_canary_format("pin"), [1], 1, 5, rng)
    return account + pin


@pytest.fixture(scope="module")
def dataset(client_records: list[list[Record]], canaries: list[Canary]) -> FederatedDataset:
    return build_federated_dataset(
        client_records, holdout_fraction=0.25, rng=np.random.default_rng(5), canaries=canaries
    )


def test_nothing_lost_and_split_disjoint(
    dataset: FederatedDataset, client_records: list[list[Record]]
) -> None:
    assert [c.client for c in dataset.clients] == [0, 1, 2, 3]
    for client, records in zip(dataset.clients, client_records, strict=True):
        members, nonmembers = client.member_records, client.nonmember_records
        assert len(nonmembers) == round(0.25 * len(records))
        assert collections.Counter(members + nonmembers) == collections.Counter(records)
        assert not set(members) & set(nonmembers)
        assert not set(client.members) & set(client.nonmembers)
        # both parts keep the corpus order
        position = {id(record): i for i, record in enumerate(records)}
        for part in (members, nonmembers):
            assert [position[id(r)] for r in part] == sorted(position[id(r)] for r in part)
        assert client.nonmembers == tuple(r.text for r in nonmembers)


def test_each_canary_is_planted_exactly_repetitions_times_in_its_client(
    dataset: FederatedDataset, canaries: list[Canary]
) -> None:
    assert dataset.canaries == tuple(canaries)
    for canary in canaries:
        for client in dataset.clients:
            expected = canary.repetitions if client.client == canary.client else 0
            assert client.members.count(canary.text) == expected
            assert canary.text not in client.nonmembers
            assert all(canary.text != r.text for r in client.member_records)


def test_members_are_records_plus_canaries_in_order(
    dataset: FederatedDataset, canaries: list[Canary]
) -> None:
    canary_texts = {c.text for c in canaries}
    for client in dataset.clients:
        planted = sum(c.repetitions for c in canaries if c.client == client.client)
        assert len(client.members) == len(client.member_records) + planted
        without = tuple(text for text in client.members if text not in canary_texts)
        assert without == tuple(r.text for r in client.member_records)


def test_canaries_are_spread_through_the_members(dataset: FederatedDataset) -> None:
    client = dataset.clients[0]
    canary_texts = {c.text for c in dataset.canaries}
    positions = [i for i, text in enumerate(client.members) if text in canary_texts]
    assert len(positions) == 6
    assert positions != list(range(len(client.members) - 6, len(client.members)))  # not appended
    assert positions != list(range(6))  # not prepended


def test_all_members_and_nonmembers(dataset: FederatedDataset) -> None:
    assert dataset.all_members() == [t for c in dataset.clients for t in c.members]
    assert dataset.all_nonmembers() == [t for c in dataset.clients for t in c.nonmembers]
    assert not set(dataset.all_members()) & set(dataset.all_nonmembers())


def test_build_is_deterministic(
    client_records: list[list[Record]], canaries: list[Canary], dataset: FederatedDataset
) -> None:
    again = build_federated_dataset(
        client_records, holdout_fraction=0.25, rng=np.random.default_rng(5), canaries=canaries
    )
    other = build_federated_dataset(
        client_records, holdout_fraction=0.25, rng=np.random.default_rng(6), canaries=canaries
    )
    assert again == dataset
    assert other != dataset


def test_build_without_canaries(client_records: list[list[Record]]) -> None:
    plain = build_federated_dataset(
        client_records, holdout_fraction=0.5, rng=np.random.default_rng(0)
    )
    assert plain.canaries == ()
    for client in plain.clients:
        assert client.members == tuple(r.text for r in client.member_records)


def test_build_rejects_bad_canaries(
    client_records: list[list[Record]], canaries: list[Canary]
) -> None:
    rng = np.random.default_rng(0)
    stray = make_canaries(get_canary_format("ssn"), [4], 1, 1, rng)
    with pytest.raises(DataError, match=r"client 4.*only 4 clients"):
        build_federated_dataset(client_records, holdout_fraction=0.2, rng=rng, canaries=stray)
    with pytest.raises(DataError, match="unique"):
        build_federated_dataset(
            client_records, holdout_fraction=0.2, rng=rng, canaries=[canaries[0], canaries[0]]
        )
    clash = Canary("clash", 0, canaries[0].format, "x", client_records[1][0].text, 1)
    with pytest.raises(DataError, match="same text as a corpus record"):
        build_federated_dataset(client_records, holdout_fraction=0.2, rng=rng, canaries=[clash])
    with pytest.raises(DataError, match="without clients"):
        build_federated_dataset([], holdout_fraction=0.2, rng=rng)
    with pytest.raises(DataError, match="at least 2 records"):
        build_federated_dataset(
            [client_records[0], client_records[1][:1]], holdout_fraction=0.2, rng=rng
        )


@settings(max_examples=60, deadline=None)
@given(st.integers(2, 60), st.floats(0.01, 0.99), st.integers(0, 2**32 - 1))
def test_split_members_properties(count: int, fraction: float, seed: int) -> None:
    records = [Record(text=f"doc {i}") for i in range(count)]
    members, nonmembers = split_members(records, fraction, np.random.default_rng(seed))
    assert members and nonmembers
    assert len(nonmembers) == min(max(round(fraction * count), 1), count - 1)
    assert sorted(members + nonmembers, key=records.index) == records
    assert members == sorted(members, key=records.index)
    assert not set(members) & set(nonmembers)


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.2, 1.5])
def test_split_members_rejects_bad_fraction(fraction: float) -> None:
    records = [Record(text="a"), Record(text="b")]
    with pytest.raises(DataError, match="holdout_fraction"):
        split_members(records, fraction, np.random.default_rng(0))


def test_split_members_needs_two_records() -> None:
    with pytest.raises(DataError, match=r"at least 2 records.*got 1"):
        split_members([Record(text="only")], 0.5, np.random.default_rng(0))


# --- partition_records -------------------------------------------------------------------


def _pooled(client_records: list[list[Record]]) -> list[Record]:
    return [record for records in client_records for record in records]


@pytest.mark.parametrize(
    ("scheme", "by"), [("iid", "label"), ("dirichlet", "label"), ("natural", "key")]
)
def test_partition_records_is_a_cover(
    client_records: list[list[Record]], scheme: str, by: str
) -> None:
    pooled = _pooled(client_records)
    parts = partition_records(
        pooled, num_clients=3, scheme=scheme, rng=np.random.default_rng(2), alpha=0.5, by=by
    )
    assert len(parts) == 3
    assert collections.Counter(r for part in parts for r in part) == collections.Counter(pooled)
    for part in parts:  # corpus order kept
        assert [pooled.index(r) for r in part] == sorted(pooled.index(r) for r in part)


def test_natural_partition_recovers_the_clients(client_records: list[list[Record]]) -> None:
    pooled = _pooled(client_records)[::-1]  # order of the pool does not matter
    parts = partition_records(
        pooled, num_clients=4, scheme="natural", rng=np.random.default_rng(0), by="key"
    )
    for index, part in enumerate(parts):
        assert {r.key for r in part} == {f"client-{index:03d}"}
        assert len(part) == len(client_records[index])


def test_partition_records_needs_the_field(client_records: list[list[Record]]) -> None:
    pooled = [*_pooled(client_records), Record(text="no label or key")]
    for scheme in ("dirichlet", "natural"):
        for by in ("label", "key"):
            with pytest.raises(DataError, match=f"'{by}'.*--partition iid"):
                partition_records(
                    pooled, num_clients=2, scheme=scheme, rng=np.random.default_rng(0), by=by
                )
    parts = partition_records(pooled, num_clients=2, scheme="iid", rng=np.random.default_rng(0))
    assert sum(len(p) for p in parts) == len(pooled)


def test_partition_records_rejects_unknown_scheme_and_field(
    client_records: list[list[Record]],
) -> None:
    pooled = _pooled(client_records)
    with pytest.raises(DataError, match=r"unknown partition scheme 'shards'.*'iid'"):
        partition_records(pooled, num_clients=2, scheme="shards", rng=np.random.default_rng(0))
    with pytest.raises(DataError, match="cannot partition by 'text'"):
        partition_records(
            pooled, num_clients=2, scheme="natural", rng=np.random.default_rng(0), by="text"
        )
