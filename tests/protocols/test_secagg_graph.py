"""The SecAgg+ masking graph and the reconstruction threshold."""

from __future__ import annotations

import math
from collections import deque

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedpriv.errors import ProtocolError
from fedpriv.protocols import (
    ClientInput,
    RoundContext,
    SecAggPlusConfig,
    SecAggPlusProtocol,
    run_round,
)
from fedpriv.protocols.secagg import (
    AdvertiseKeys,
    DerivedSecrets,
    KeyDirectory,
    ShareKeys,
    round_binding,
)
from fedpriv.protocols.secagg_graph import (
    check_regular,
    complete_graph,
    components,
    default_degree,
    default_threshold,
    derive_graph_seed,
    effective_degree,
    harary_graph,
    reconstruction_threshold,
    ring_order,
)


def vertex_connectivity_at_least(graph: dict[int, frozenset[int]], k: int) -> bool:
    """Check that removing any k − 1 vertices leaves the graph connected (small graphs only)."""
    from itertools import combinations

    nodes = sorted(graph)
    for removed in combinations(nodes, min(k - 1, len(nodes) - 1)):
        left = set(nodes) - set(removed)
        start = next(iter(left))
        seen, queue = {start}, deque([start])
        while queue:
            for other in graph[queue.popleft()] & left:
                if other not in seen:
                    seen.add(other)
                    queue.append(other)
        if seen != left:
            return False
    return True


@settings(max_examples=150, deadline=None)
@given(
    ids=st.lists(st.integers(0, 10_000), min_size=2, max_size=60, unique=True),
    half=st.integers(1, 10),
    seed=st.binary(min_size=32, max_size=32),
)
def test_harary_graph_is_regular_symmetric_and_deterministic(
    ids: list[int], half: int, seed: bytes
) -> None:
    n = len(ids)
    degree = min(2 * half, n - 1)
    graph = harary_graph(ids, degree, seed)
    assert sorted(graph) == sorted(ids)
    assert check_regular(graph) == degree
    assert graph == harary_graph(list(reversed(ids)), degree, seed)  # order of input irrelevant
    # Connected (BFS from any node reaches every node).
    start = ids[0]
    seen, queue = {start}, deque([start])
    while queue:
        for other in graph[queue.popleft()]:
            if other not in seen:
                seen.add(other)
                queue.append(other)
    assert seen == set(ids)


def test_harary_graph_is_k_connected() -> None:
    """H_{k,n} stays connected after removing any k − 1 clients (Bell et al. 2020, §4.1)."""
    seed = bytes(range(32))
    for n, k in ((9, 2), (10, 4), (11, 6)):
        graph = harary_graph(range(n), k, seed)
        assert vertex_connectivity_at_least(graph, k)


def test_ring_order_is_a_seeded_permutation() -> None:
    ids = list(range(50))
    a, b = ring_order(ids, bytes(32)), ring_order(ids, bytes([1]) * 32)
    assert sorted(a) == ids and sorted(b) == ids and a != b
    with pytest.raises(ProtocolError, match="graph seed must be 32 bytes"):
        ring_order(ids, b"short")


def test_degrees_and_complete_graph() -> None:
    assert [default_degree(n) for n in (1, 2, 3, 4, 5, 10, 100, 1000)] == [
        0, 1, 2, 3, 4, 8, 14, 20
    ]
    assert effective_degree(100, None) == 2 * math.ceil(math.log2(100))
    assert effective_degree(5, 8) == 4 and effective_degree(50, 8) == 8
    assert complete_graph([2, 0, 1]) == {0: {1, 2}, 1: {0, 2}, 2: {0, 1}}
    assert check_regular(harary_graph(range(5), 4, bytes(32))) == 4  # n − 1: complete
    with pytest.raises(ProtocolError, match="even degree"):
        harary_graph(range(10), 3, bytes(32))
    with pytest.raises(ProtocolError, match="degree at most 9"):
        harary_graph(range(10), 12, bytes(32))
    with pytest.raises(ProtocolError, match="not regular"):
        check_regular({0: frozenset({1}), 1: frozenset({0}), 2: frozenset()})
    with pytest.raises(ProtocolError, match="but not back"):
        check_regular({0: frozenset({1}), 1: frozenset({2}), 2: frozenset({0})})


@pytest.mark.parametrize(
    ("size", "fraction", "minimum", "expected"),
    [(10, 0.3, 2, 3), (10, 0.5, 2, 5), (15, 0.5, 2, 8), (3, 0.1, 2, 2), (4, 1.0, 2, 4),
     (7, 0.5, 5, 5)],
)
def test_reconstruction_threshold(size: int, fraction: float, minimum: int, expected: int) -> None:
    assert reconstruction_threshold(size, fraction, minimum) == expected


def test_threshold_above_the_neighbourhood_is_refused() -> None:
    with pytest.raises(ProtocolError, match=r"= 4 exceeds the 3 clients of a neighbourhood"):
        reconstruction_threshold(3, 0.5, 4)


def test_each_client_sends_one_ciphertext_per_neighbour() -> None:
    n, degree = 16, 4
    proto = SecAggPlusProtocol(SecAggPlusConfig(degree=degree),
                               secret_source=DerivedSecrets(b"graph test master seed"))
    ctx = RoundContext(round=3, participants=range(n), vector_size=2)
    inputs = {c: ClientInput(np.full(2, 0.01 * c), 1.0) for c in range(n)}
    result = run_round(proto, ctx, inputs)
    view = result.view
    advertised = [m for m in view.transcript if isinstance(m, AdvertiseKeys)]
    seed = derive_graph_seed(round_binding(b"", 3),
                             [(m.sender, m.c_pk, m.s_pk) for m in advertised])
    assert view.graph_seed == seed == proto.graph_seed(ctx, advertised)
    graph = proto.graph(ctx, seed)
    assert view.neighbours == graph
    shares = [m for m in view.transcript if isinstance(m, ShareKeys)]
    assert len(shares) == n
    for message in shares:
        assert set(message.ciphertexts) == graph[message.sender]
        assert len(message.ciphertexts) == degree
    np.testing.assert_allclose(result.aggregate, np.full(2, 0.01 * (n - 1) / 2), atol=1e-5)
    # Uploads are O(k) per client; the directory holds all n advertisements (so each
    # client recomputes the graph seed), 136 bytes each without signatures.
    server = proto.server(ctx)
    keys = {c: proto.client(c, ctx, inputs[c]).handle(0, None) for c in range(n)}
    directories = server.collect(0, keys)
    for directory in directories.values():
        assert isinstance(directory, KeyDirectory) and len(directory.keys) == n


def test_graph_seed_is_a_hash_of_every_advertised_key() -> None:
    keys = [(c, bytes([c]) * 32, bytes([c + 100]) * 32) for c in range(6)]
    seed = derive_graph_seed(round_binding(b"run", 1), keys)
    assert seed == derive_graph_seed(round_binding(b"run", 1), reversed(keys))  # order-free
    assert len(seed) == 32
    changed = [*keys[:-1], (5, bytes([5]) * 32, bytes([7]) * 32)]
    for other in (derive_graph_seed(round_binding(b"run", 2), keys),
                  derive_graph_seed(round_binding(b"rum", 1), keys),
                  derive_graph_seed(round_binding(b"run", 1), keys[:-1]),
                  derive_graph_seed(round_binding(b"run", 1), changed)):
        assert other != seed


def test_components_of_the_survivors() -> None:
    ring = harary_graph(range(12), 2, bytes(32))
    order = ring_order(range(12), bytes(32))
    assert components(ring, range(12)) == [frozenset(range(12))]
    cut = set(range(12)) - {order[0], order[6]}  # two cuts in a cycle: two arcs
    parts = components(ring, cut)
    assert sorted(len(p) for p in parts) == [5, 5]
    assert frozenset().union(*parts) == cut
    assert components(ring, []) == []
    assert components(complete_graph(range(5)), {1, 3}) == [frozenset({1, 3})]


@pytest.mark.parametrize(("size", "passive", "active"), [
    (2, 2, 2), (3, 2, 3), (4, 3, 3), (5, 3, 4), (6, 4, 5), (10, 6, 7), (11, 6, 8), (12, 7, 9),
])
def test_default_threshold_is_strictly_above_a_half_and_two_thirds(
    size: int, passive: int, active: int
) -> None:
    assert default_threshold(size, active=False, minimum=2) == passive
    assert default_threshold(size, active=True, minimum=2) == active
    assert 2 * passive > size and (3 * active > 2 * size or active == size)


def test_default_threshold_above_the_neighbourhood_is_refused() -> None:
    with pytest.raises(ProtocolError, match=r"= 2 exceeds the 1 clients of a neighbourhood"):
        default_threshold(1, active=False, minimum=2)
