"""The masking graph of SecAgg / SecAgg+ and the reconstruction threshold: pure functions.

SecAgg (Bonawitz et al. 2017) masks every pair of clients: its graph is complete.
SecAgg+ (Bell et al. 2020, §3 and §4.1) masks only the pairs joined in a sparse
random ``k``-regular graph, so each client's work and traffic are ``O(k·L)``
instead of ``O(n·L)``.  Following Bell et al. we use a *Harary graph*
``H_{k,n}`` on a random ring order of the participants: every client is joined
to its ``k/2`` nearest ring neighbours on each side, which makes the graph
``k``-regular and ``k``-connected by construction.

The ring order is a deterministic function of a public 32-byte ``graph_seed``.
The server does not draw it: it is the hash of every public key advertised in
the round (:func:`derive_graph_seed`), so a server that wanted a target's
neighbours to be its colluders could not retry seeds until one fits — the only
lever it keeps is leaving out advertisements, and each one it leaves out costs
a dropout.  Every client recomputes the seed from the key directory, then the
graph, and checks the neighbour set the server sends it:
client ``c`` sits at the rank of ``SHA-256(GRAPH_DOMAIN ‖ seed ‖ c as 8-byte
big-endian signed)`` among the participants (ties, which do not happen, broken
by id).  Another FL stack can rebuild the graph from this description alone
(``protocols/vectors/secagg_graph.json`` has fixed examples).

The threshold ``t`` is the number of shares, out of a client's neighbourhood
(its neighbours and itself), that reconstruct its secrets:
``t = max(min_threshold, ceil(threshold · neighbourhood size))`` for a configured
fraction, and by default the least ``t`` *strictly above* ½ of the neighbourhood
(above ⅔ when clients verify signatures, i.e. against an active server):
:func:`default_threshold`.  Before unmasking, the survivors must induce a
connected subgraph (:func:`components`), else the server could unmask the sum of
each component separately (Bell et al. 2020, §3.2).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Mapping
from fractions import Fraction

from fedpriv.errors import ProtocolError

__all__ = [
    "GRAPH_DOMAIN",
    "GRAPH_SEED_DOMAIN",
    "check_regular",
    "complete_graph",
    "components",
    "default_degree",
    "default_threshold",
    "derive_graph_seed",
    "effective_degree",
    "harary_graph",
    "reconstruction_threshold",
    "ring_order",
]

GRAPH_DOMAIN = b"fedpriv/secagg+/graph/v1"
"""Domain-separation prefix of the hash that orders the ring."""

GRAPH_SEED_DOMAIN = b"fedpriv/secagg+/graph-seed/v1"
"""Domain-separation prefix of the hash of the advertised keys that gives the graph seed."""

Graph = Mapping[int, frozenset[int]]
"""Client id → its neighbours (never itself); symmetric."""


def default_degree(num_participants: int) -> int:
    """Return SecAgg+'s default degree: ``min(2·ceil(log2 n), n − 1)`` (0 for ``n = 1``).

    Bell et al. 2020 (Thm. 3.6) need ``k = O(log n)`` neighbours for security and
    correctness with high probability; ``2·ceil(log2 n)`` is even, as the Harary
    construction wants, unless capped at ``n − 1`` (the complete graph).
    """
    if num_participants < 1:
        raise ProtocolError(f"a round needs at least one participant; got {num_participants}.")
    return min(2 * math.ceil(math.log2(num_participants)), num_participants - 1)


def effective_degree(num_participants: int, degree: int | None) -> int:
    """Return the degree actually used with ``num_participants``: ``degree`` capped at ``n − 1``.

    ``None`` means :func:`default_degree`.  A configured degree is even (the
    config checks it); at ``n − 1`` the graph is complete (SecAgg), whatever the parity.
    """
    if degree is None:
        return default_degree(num_participants)
    return min(degree, num_participants - 1)


def ring_order(participants: Iterable[int], seed: bytes) -> tuple[int, ...]:
    """Return the participants in the pseudo-random ring order that ``seed`` defines."""
    if not isinstance(seed, bytes) or len(seed) != 32:
        raise ProtocolError(
            "the SecAgg+ graph seed must be 32 bytes (drawn by the server with `secrets`); "
            f"got {type(seed).__name__} of length {len(seed) if isinstance(seed, bytes) else '?'}."
        )

    def rank(client: int) -> tuple[bytes, int]:
        digest = hashlib.sha256(GRAPH_DOMAIN + seed + client.to_bytes(8, "big", signed=True))
        return digest.digest(), client

    return tuple(sorted(participants, key=rank))


def derive_graph_seed(binding: bytes, advertised: Iterable[tuple[int, bytes, bytes]]) -> bytes:
    """Return the round's graph seed: a hash of every advertised key pair, by client id.

    ``SHA-256(GRAPH_SEED_DOMAIN ‖ binding ‖ Σ_{sorted by id} id (8-byte big-endian
    signed) ‖ c_pk ‖ s_pk)``, where ``binding`` is the round's session binding
    (:func:`fedpriv.protocols.secagg.stages.round_binding`).  The clients' keys are
    fresh and unpredictable, so the server cannot choose the seed; it can only omit
    advertisements (each omission a dropout), which bounds its tries by the subsets
    of clients it is willing to drop.
    """
    digest = hashlib.sha256(GRAPH_SEED_DOMAIN + binding)
    for client, c_pk, s_pk in sorted(advertised):
        digest.update(client.to_bytes(8, "big", signed=True) + c_pk + s_pk)
    return digest.digest()


def components(graph: Graph, members: Iterable[int]) -> list[frozenset[int]]:
    """Return the connected components of the subgraph of ``graph`` induced by ``members``.

    Sorted by their smallest id.  A round whose survivors form more than one
    component would let the server unmask each component's sum on its own.
    """
    remaining = set(members)
    parts: list[frozenset[int]] = []
    while remaining:
        start = min(remaining)
        seen, frontier = {start}, [start]
        while frontier:
            node = frontier.pop()
            for other in graph.get(node, frozenset()):
                if other in remaining and other not in seen:
                    seen.add(other)
                    frontier.append(other)
        remaining -= seen
        parts.append(frozenset(seen))
    return parts


def complete_graph(participants: Iterable[int]) -> dict[int, frozenset[int]]:
    """Return SecAgg's graph: every participant is every other one's neighbour."""
    ids = frozenset(participants)
    return {c: ids - {c} for c in sorted(ids)}


def harary_graph(
    participants: Iterable[int], degree: int, seed: bytes
) -> dict[int, frozenset[int]]:
    """Return the ``degree``-regular Harary graph on the ring order of ``participants`` by ``seed``.

    ``degree`` must be even and below ``n − 1``, or exactly ``n − 1`` (the
    complete graph); each client is joined to the ``degree / 2`` clients before
    and after it on the ring.
    """
    ring = ring_order(participants, seed)
    n = len(ring)
    if degree >= n - 1:
        if degree != n - 1:
            raise ProtocolError(f"a graph on {n} clients has degree at most {n - 1}; got {degree}.")
        return complete_graph(ring)
    if degree < 0 or degree % 2:
        raise ProtocolError(
            f"the Harary graph needs an even degree >= 0 below n - 1 = {n - 1}; got {degree}."
        )
    half = degree // 2
    graph: dict[int, frozenset[int]] = {}
    for position, client in enumerate(ring):
        graph[client] = frozenset(
            ring[(position + step) % n] for d in range(1, half + 1) for step in (d, -d)
        )
    return dict(sorted(graph.items()))


def check_regular(graph: Graph) -> int:
    """Return the common degree of ``graph``, or raise :class:`ProtocolError` if it is not regular.

    Also checks that the graph is symmetric and has no self-loop.
    """
    degrees = {len(neighbours) for neighbours in graph.values()}
    if len(degrees) > 1:
        raise ProtocolError(f"the masking graph is not regular: degrees {sorted(degrees)}.")
    for client, neighbours in graph.items():
        if client in neighbours:
            raise ProtocolError(f"the masking graph joins client {client} to itself.")
        for other in neighbours:
            if client not in graph.get(other, frozenset()):
                raise ProtocolError(f"the masking graph joins {client} to {other} but not back.")
    return degrees.pop() if degrees else 0


def default_threshold(neighbourhood_size: int, *, active: bool, minimum: int) -> int:
    """Return the default ``t``: the least integer above ½ (``active``: ⅔) of a neighbourhood.

    Strictly above ½: a server announcing different survivor lists to two halves
    of a neighbourhood cannot collect ``t`` shares of a client's self-mask seed from
    one half and ``t`` of its mask key from the other, because the halves would need
    ``2t`` > neighbourhood members (Bonawitz et al. 2017, §4 and Thm. 6.3).  Above ⅔
    when clients verify signatures (active server): with the ConsistencyCheck round
    the honest clients then agree on one survivor set while up to a third of a
    neighbourhood colludes, since ``2(t − n_C) + n_C`` exceeds it for ``n_C < n/3``
    (Bonawitz et al. 2017, §6.3).  Raises :class:`ProtocolError` when ``t`` exceeds the
    neighbourhood.
    """
    fraction = Fraction(2, 3) if active else Fraction(1, 2)
    t = max(minimum, math.floor(fraction * neighbourhood_size) + 1)
    if t > neighbourhood_size:
        raise ProtocolError(
            f"the reconstruction threshold t = max(min_threshold={minimum}, the least integer "
            f"above {fraction} × {neighbourhood_size}) = {t} exceeds the {neighbourhood_size} "
            "clients of a neighbourhood (the client and its neighbours), so no round could be "
            "unmasked; select more clients per round, or lower min_threshold."
        )
    return t


def reconstruction_threshold(neighbourhood_size: int, fraction: float, minimum: int) -> int:
    """Return ``t = max(minimum, ceil(fraction · neighbourhood_size))``.

    ``neighbourhood_size`` counts the client itself.  The product is taken in exact
    rational arithmetic of the decimal ``fraction`` (so ``0.3 · 10`` is 3, not 4).
    Raises :class:`ProtocolError` when ``t`` exceeds the neighbourhood: the round
    could never be unmasked.
    """
    exact = Fraction(str(fraction)) * neighbourhood_size
    t = max(minimum, math.ceil(exact))
    if t > neighbourhood_size:
        raise ProtocolError(
            f"the reconstruction threshold t = max(min_threshold={minimum}, "
            f"ceil(threshold={fraction} × {neighbourhood_size})) = {t} exceeds the "
            f"{neighbourhood_size} clients of a neighbourhood (the client and its neighbours), "
            "so no round could be unmasked; select more clients per round, or lower "
            "threshold / min_threshold."
        )
    return t
