"""Partitioners: split ``n`` items across clients as index arrays.

Three schemes, all returning ``num_clients`` int64 index arrays that together
cover ``range(n)`` exactly once, each sorted ascending:

* :func:`partition_iid` — uniform random split, sizes differ by at most one;
* :func:`partition_dirichlet` — label-skewed split (Hsu, Qi, Brown 2019,
  "Measuring the effects of non-identical data distribution"): the items of
  each label are divided across clients in Dirichlet(``alpha``) proportions,
  so a small ``alpha`` gives each client a few dominant labels;
* :func:`partition_by_key` — the natural partition, one client per distinct
  key (e.g. the organisation that owns a record).

Pure functions of their inputs and the ``numpy.random.Generator`` passed in.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Sequence

import numpy as np

from fedpriv.errors import DataError

__all__ = ["partition_by_key", "partition_dirichlet", "partition_iid"]


def _check_clients(num_clients: object, num_items: int) -> int:
    if isinstance(num_clients, bool) or not isinstance(num_clients, int | np.integer):
        raise DataError(f"num_clients must be an integer, got {num_clients!r}.")
    if num_clients < 1:
        raise DataError(f"num_clients must be at least 1, got {num_clients}.")
    if num_clients > num_items:
        raise DataError(
            f"cannot split {num_items} items across {num_clients} clients: every client needs "
            "at least one item; use fewer clients or more data."
        )
    return int(num_clients)


def partition_iid(num_items: int, num_clients: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Split ``range(num_items)`` uniformly at random into near-equal parts.

    Args:
        num_items: Number of items to split.
        num_clients: Number of parts, ``1 <= num_clients <= num_items``.
        rng: Source of randomness.

    Returns:
        ``num_clients`` sorted int64 index arrays whose sizes differ by at most one.

    Raises:
        DataError: If ``num_items`` or ``num_clients`` is out of range.
    """
    if isinstance(num_items, bool) or not isinstance(num_items, int | np.integer) or num_items < 0:
        raise DataError(f"num_items must be a non-negative integer, got {num_items!r}.")
    num_clients = _check_clients(num_clients, int(num_items))
    order = rng.permutation(int(num_items)).astype(np.int64)
    return [np.sort(part) for part in np.array_split(order, num_clients)]


def _label_groups(labels: Sequence[Hashable]) -> list[np.ndarray]:
    """Item indices of each distinct label, labels in order of first occurrence."""
    groups: dict[Hashable, list[int]] = {}
    for index, label in enumerate(labels):
        groups.setdefault(label, []).append(index)
    return [np.asarray(items, dtype=np.int64) for items in groups.values()]


def partition_dirichlet(
    labels: Sequence[Hashable],
    num_clients: int,
    alpha: float,
    rng: np.random.Generator,
    *,
    min_size: int = 1,
    max_tries: int = 100,
) -> list[np.ndarray]:
    """Split items across clients with Dirichlet(``alpha``) label skew.

    For every distinct label, its items are shuffled and cut into
    ``num_clients`` consecutive runs whose lengths follow proportions drawn from
    Dirichlet(``alpha``, ..., ``alpha``). The draw is repeated (up to
    ``max_tries`` times) until every client holds at least ``min_size`` items.

    Args:
        labels: One label per item.
        num_clients: Number of clients, ``1 <= num_clients <= len(labels)``.
        alpha: Dirichlet concentration, > 0. Small (0.1) is very skewed, large
            (100) is close to IID.
        rng: Source of randomness.
        min_size: Fewest items any client may get (>= 0).
        max_tries: Number of draws before giving up (>= 1).

    Returns:
        ``num_clients`` sorted int64 index arrays covering every item exactly once.

    Raises:
        DataError: If an argument is out of range, or no draw in ``max_tries``
            gave every client ``min_size`` items.
    """
    num_items = len(labels)
    num_clients = _check_clients(num_clients, num_items)
    if isinstance(alpha, bool) or not isinstance(alpha, int | float | np.floating | np.integer):
        raise DataError(f"alpha must be a number, got {alpha!r}.")
    if not math.isfinite(alpha) or alpha <= 0:
        raise DataError(
            f"alpha must be a finite number > 0, got {alpha}; "
            "use e.g. 0.1 for strong label skew or 100 for nearly IID clients."
        )
    if isinstance(min_size, bool) or not isinstance(min_size, int) or min_size < 0:
        raise DataError(f"min_size must be a non-negative integer, got {min_size!r}.")
    if isinstance(max_tries, bool) or not isinstance(max_tries, int) or max_tries < 1:
        raise DataError(f"max_tries must be a positive integer, got {max_tries!r}.")
    if min_size * num_clients > num_items:
        raise DataError(
            f"{num_clients} clients with at least {min_size} items each need "
            f"{min_size * num_clients} items, but there are only {num_items}; "
            "lower min_size or use fewer clients."
        )

    groups = _label_groups(labels)
    concentration = np.full(num_clients, float(alpha))
    smallest = 0
    for _ in range(max_tries):
        parts: list[list[np.ndarray]] = [[] for _ in range(num_clients)]
        for items in groups:
            proportions = rng.dirichlet(concentration)
            shuffled = rng.permutation(items)
            cuts = np.floor(np.cumsum(proportions)[:-1] * len(items)).astype(np.int64)
            for client, chunk in enumerate(np.split(shuffled, cuts)):
                parts[client].append(chunk)
        result = [np.sort(np.concatenate(chunks)).astype(np.int64) for chunks in parts]
        smallest = min(len(part) for part in result)
        if smallest >= min_size:
            return result
    raise DataError(
        f"no Dirichlet(alpha={alpha}) split of {num_items} items over {len(groups)} labels gave "
        f"all {num_clients} clients at least {min_size} items in {max_tries} tries (the last "
        f"smallest client had {smallest}); use a larger alpha, fewer clients, a smaller "
        "min_size or more max_tries."
    )


def _sorted_keys(keys: set[Hashable]) -> list[Hashable]:
    try:
        return sorted(keys)  # type: ignore[type-var]
    except TypeError:  # keys of mixed, mutually unorderable types
        return sorted(keys, key=lambda key: (type(key).__name__, repr(key)))


def partition_by_key(keys: Sequence[Hashable], num_clients: int | None = None) -> list[np.ndarray]:
    """Natural partition: the items that share a key go to the same client.

    Distinct keys are sorted (deterministic, independent of item order). With
    ``num_clients=None`` every key is one client. With fewer clients than keys,
    the sorted keys are dealt round-robin: key ``j`` goes to client
    ``j % num_clients``.

    Args:
        keys: One key per item.
        num_clients: Number of clients, at most the number of distinct keys;
            ``None`` for one client per key.

    Returns:
        One sorted int64 index array per client, covering every item exactly once.

    Raises:
        DataError: If ``keys`` is empty or ``num_clients`` is out of range.
    """
    if len(keys) == 0:
        raise DataError("cannot partition an empty list of keys; the corpus has no records.")
    groups: dict[Hashable, list[int]] = {}
    for index, key in enumerate(keys):
        groups.setdefault(key, []).append(index)
    ordered = _sorted_keys(set(groups))
    if num_clients is None:
        num_clients = len(ordered)
    if isinstance(num_clients, bool) or not isinstance(num_clients, int | np.integer):
        raise DataError(f"num_clients must be an integer or None, got {num_clients!r}.")
    if num_clients < 1:
        raise DataError(f"num_clients must be at least 1, got {num_clients}.")
    if num_clients > len(ordered):
        raise DataError(
            f"a natural partition into {num_clients} clients needs at least {num_clients} "
            f"distinct keys, but the data has only {len(ordered)}; use at most {len(ordered)} "
            "clients, or partition iid / dirichlet instead."
        )
    parts: list[list[int]] = [[] for _ in range(int(num_clients))]
    for position, key in enumerate(ordered):
        parts[position % int(num_clients)].extend(groups[key])
    return [np.sort(np.asarray(part, dtype=np.int64)) for part in parts]
