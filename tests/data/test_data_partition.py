"""Tests of the partitioners (fedpriv.data.partition)."""

from __future__ import annotations

import collections
from collections.abc import Hashable, Sequence

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedpriv.data.partition import partition_by_key, partition_dirichlet, partition_iid
from fedpriv.errors import DataError

FAST = settings(max_examples=60, deadline=None)


def assert_disjoint_cover(parts: Sequence[np.ndarray], num_items: int) -> None:
    for part in parts:
        assert part.dtype == np.int64
        assert np.all(np.diff(part) > 0), "each part is sorted and duplicate-free"
    joined = np.concatenate(parts) if parts else np.array([], dtype=np.int64)
    assert len(joined) == num_items
    assert np.array_equal(np.sort(joined), np.arange(num_items))


@st.composite
def items_and_clients(draw: st.DrawFn) -> tuple[int, int]:
    num_items = draw(st.integers(1, 300))
    return num_items, draw(st.integers(1, num_items))


@st.composite
def labels_and_clients(draw: st.DrawFn) -> tuple[list[int], int]:
    labels = draw(st.lists(st.integers(0, 6), min_size=1, max_size=200))
    return labels, draw(st.integers(1, len(labels)))


# --- IID ---------------------------------------------------------------------------------


@FAST
@given(items_and_clients(), st.integers(0, 2**32 - 1))
def test_iid_is_a_balanced_disjoint_cover(shape: tuple[int, int], seed: int) -> None:
    num_items, num_clients = shape
    parts = partition_iid(num_items, num_clients, np.random.default_rng(seed))
    assert len(parts) == num_clients
    assert_disjoint_cover(parts, num_items)
    sizes = [len(part) for part in parts]
    assert max(sizes) - min(sizes) <= 1


def test_iid_is_random_but_seeded() -> None:
    first = partition_iid(100, 4, np.random.default_rng(1))
    again = partition_iid(100, 4, np.random.default_rng(1))
    other = partition_iid(100, 4, np.random.default_rng(2))
    assert all(np.array_equal(a, b) for a, b in zip(first, again, strict=True))
    assert not all(np.array_equal(a, b) for a, b in zip(first, other, strict=True))
    assert not np.array_equal(first[0], np.arange(25)), "not a contiguous block"


@pytest.mark.parametrize(("num_items", "num_clients"), [(5, 0), (5, 6), (0, 1), (5, -1)])
def test_iid_rejects_bad_sizes(num_items: int, num_clients: int) -> None:
    with pytest.raises(DataError, match=r"clients|num_items"):
        partition_iid(num_items, num_clients, np.random.default_rng(0))


# --- Dirichlet ---------------------------------------------------------------------------


@FAST
@given(labels_and_clients(), st.floats(0.05, 100.0), st.integers(0, 2**32 - 1))
def test_dirichlet_is_a_disjoint_cover(
    shape: tuple[list[int], int], alpha: float, seed: int
) -> None:
    labels, num_clients = shape
    parts = partition_dirichlet(labels, num_clients, alpha, np.random.default_rng(seed), min_size=0)
    assert len(parts) == num_clients
    assert_disjoint_cover(parts, len(labels))


@FAST
@given(labels_and_clients(), st.floats(0.05, 100.0), st.integers(0, 2**32 - 1))
def test_dirichlet_respects_min_size_or_says_why(
    shape: tuple[list[int], int], alpha: float, seed: int
) -> None:
    labels, num_clients = shape
    try:
        parts = partition_dirichlet(
            labels, num_clients, alpha, np.random.default_rng(seed), max_tries=5
        )
    except DataError as error:
        assert "larger alpha" in str(error)
        return
    assert_disjoint_cover(parts, len(labels))
    assert min(len(part) for part in parts) >= 1


def _mean_top_label_share(alpha: float, seed: int) -> float:
    labels = [label for label in range(10) for _ in range(100)]
    parts = partition_dirichlet(labels, 10, alpha, np.random.default_rng(seed), min_size=1)
    shares = []
    for part in parts:
        counts = collections.Counter(labels[int(i)] for i in part)
        shares.append(max(counts.values()) / len(part))
    return float(np.mean(shares))


def test_small_alpha_is_more_skewed_than_large_alpha() -> None:
    skewed = [_mean_top_label_share(0.1, seed) for seed in range(5)]
    balanced = [_mean_top_label_share(100.0, seed) for seed in range(5)]
    # IID would give ~0.1 (ten equally frequent labels); alpha=0.1 gives a few labels per client
    assert min(skewed) > 0.45
    assert max(balanced) < 0.25
    assert min(skewed) > max(balanced)


def test_dirichlet_keeps_label_items_together_for_tiny_alpha() -> None:
    labels = ["a"] * 50 + ["b"] * 50
    parts = partition_dirichlet(labels, 2, 0.01, np.random.default_rng(3), min_size=0)
    purity = [
        max(collections.Counter(labels[int(i)] for i in p).values()) / len(p)
        for p in parts
        if len(p)
    ]
    assert min(purity) > 0.9


def test_dirichlet_is_seeded() -> None:
    labels = [i % 3 for i in range(60)]
    first = partition_dirichlet(labels, 4, 0.5, np.random.default_rng(9))
    again = partition_dirichlet(labels, 4, 0.5, np.random.default_rng(9))
    assert all(np.array_equal(a, b) for a, b in zip(first, again, strict=True))


@pytest.mark.parametrize("alpha", [0.0, -1.0, float("nan"), float("inf")])
def test_dirichlet_rejects_bad_alpha(alpha: float) -> None:
    with pytest.raises(DataError, match="alpha"):
        partition_dirichlet([0, 1, 2], 2, alpha, np.random.default_rng(0))


def test_dirichlet_rejects_bad_client_counts_and_min_size() -> None:
    rng = np.random.default_rng(0)
    with pytest.raises(DataError, match="num_clients"):
        partition_dirichlet([0, 1], 0, 1.0, rng)
    with pytest.raises(DataError, match="3 clients"):
        partition_dirichlet([0, 1], 3, 1.0, rng)
    with pytest.raises(DataError, match="min_size"):
        partition_dirichlet([0, 1, 2, 3], 2, 1.0, rng, min_size=3)
    with pytest.raises(DataError, match="max_tries"):
        partition_dirichlet([0, 1, 2, 3], 2, 1.0, rng, max_tries=0)


def test_dirichlet_gives_up_with_advice() -> None:
    labels = [0] * 20  # one label, tiny alpha: almost surely one client takes everything
    with pytest.raises(DataError, match=r"larger alpha.*fewer clients") as info:
        partition_dirichlet(labels, 10, 0.001, np.random.default_rng(0), min_size=2, max_tries=3)
    assert "3 tries" in str(info.value)


# --- natural (by key) --------------------------------------------------------------------


@FAST
@given(st.lists(st.sampled_from(["org-a", "org-b", "org-c", "org-d", "org-e"]), min_size=1))
def test_by_key_one_client_per_key(keys: list[str]) -> None:
    parts = partition_by_key(keys)
    distinct = sorted(set(keys))
    assert len(parts) == len(distinct)
    assert_disjoint_cover(parts, len(keys))
    for key, part in zip(distinct, parts, strict=True):  # sorted key order
        assert {keys[int(i)] for i in part} == {key}


@FAST
@given(st.lists(st.integers(0, 12), min_size=1), st.data())
def test_by_key_groups_keys_round_robin(keys: list[int], data: st.DataObject) -> None:
    distinct = sorted(set(keys))
    num_clients = data.draw(st.integers(1, len(distinct)))
    parts = partition_by_key(keys, num_clients)
    assert len(parts) == num_clients
    assert_disjoint_cover(parts, len(keys))
    for position, key in enumerate(distinct):
        holders = [c for c, part in enumerate(parts) if any(keys[int(i)] == key for i in part)]
        assert holders == [position % num_clients]


def test_by_key_order_does_not_depend_on_item_order() -> None:
    keys = ["b", "a", "c", "a", "b"]
    parts = partition_by_key(keys)
    assert [list(p) for p in parts] == [[1, 3], [0, 4], [2]]


def test_by_key_accepts_unorderable_mixed_keys() -> None:
    keys: list[Hashable] = ["x", 1, None, "x", 1]
    parts = partition_by_key(keys)
    assert len(parts) == 3
    assert_disjoint_cover(parts, len(keys))

    def owner(items: list[Hashable], found: list[np.ndarray]) -> dict[Hashable, int]:
        return {items[int(i)]: client for client, part in enumerate(found) for i in part}

    reversed_keys = list(reversed(keys))
    assert owner(keys, parts) == owner(reversed_keys, partition_by_key(reversed_keys))


def test_by_key_too_many_clients_says_how_many_keys() -> None:
    with pytest.raises(DataError, match="only 2") as info:
        partition_by_key(["a", "b", "a"], 3)
    assert "at most 2 clients" in str(info.value)


def test_by_key_rejects_empty_and_zero() -> None:
    with pytest.raises(DataError, match="empty"):
        partition_by_key([])
    with pytest.raises(DataError, match="at least 1"):
        partition_by_key(["a"], 0)
