"""The DP steps around one aggregation round, shared by every engine that drives rounds.

Owns the three places where user-level and distributed DP touch a round, as pure
functions over :class:`~fedpriv.dp.user.UserLevelDP` /
:class:`~fedpriv.dp.distributed.DistributedDP` objects, so that the in-process
loop (:mod:`fedpriv.train.loop`) and the Flower integration
(:mod:`fedpriv.integrations.flower`) produce the same numbers for the same seed
and data:

- :func:`protocol_vector` — client side, before the protocol: clip the update
  (user-level DP, with the adaptive-clipping bit) or clip, rotate, round, noise
  and reduce it (distributed DP);
- :func:`protocol_vector_size` — the length the protocol then carries;
- :func:`server_mean` — server side, after the protocol: the noised mean update
  (user-level DP adds the central noise here; distributed DP decodes the residues).

Under either mode every client's FedAvg weight is 1 (:data:`DP_CLIENT_WEIGHT`).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np

from fedpriv.errors import ConfigError

if TYPE_CHECKING:  # only their methods are called here; scipy loads with distributed
    from fedpriv.dp.distributed import DistributedDP
    from fedpriv.dp.user import UserDPRound, UserLevelDP

DP_CLIENT_WEIGHT = 1.0
"""DP-FedAvg bounds each client's contribution by the clip bound: every client weighs 1."""


def protocol_vector(
    delta: np.ndarray, *, round_index: int, client: int,
    user_dp: UserLevelDP | None = None, dist_dp: DistributedDP | None = None,
) -> np.ndarray:
    """Return what ``client`` hands to the protocol for its update ``delta``.

    ``delta`` unchanged without DP; clipped (plus the clipped bit under adaptive
    clipping) under user-level DP; the residues ``z·r`` under distributed DP.
    """
    if user_dp is not None and dist_dp is not None:
        raise ConfigError("user-level and distributed DP cannot both be on; pick one mode")
    if user_dp is not None:
        vector, _ = user_dp.client_vector(delta)
        return vector
    if dist_dp is not None:  # clipped, rotated, rounded, noised, reduced mod m
        vector, _ = dist_dp.client_encode(delta, round_index, client)
        return vector
    return delta


def rounding_l2_bound(protocol: Any, dim: int) -> float:
    """Return how much ``protocol``'s per-client fixed-point rounding can lengthen a vector.

    ``secagg``/``secagg+`` round each of the ``dim`` coordinates of a client's
    weighted input ``(w / max_weight)·Δ`` stochastically to a multiple of their
    ``resolution`` r, after any DP clipping: with the DP weight ``w = 1`` the
    error is below ``r·max_weight`` per coordinate of Δ, so below
    ``r·max_weight·√dim`` in L2.
    Other protocols round nothing per client (``plain`` sends floats; ``ckks``'s
    approximation and flooding noise is added to the sum, independent of any
    one client's data).
    """
    if getattr(protocol, "name", None) not in ("secagg", "secagg+"):
        return 0.0
    config = protocol.config
    per_coordinate = float(config.resolution) * float(config.max_weight) / DP_CLIENT_WEIGHT
    return per_coordinate * math.sqrt(dim)


def protocol_vector_size(
    update_size: int, *, user_dp: UserLevelDP | None = None,
    dist_dp: DistributedDP | None = None,
) -> int:
    """Return the length of :func:`protocol_vector`'s output for updates of ``update_size``."""
    if user_dp is not None:
        return update_size + user_dp.extra_coordinates
    if dist_dp is not None:
        return dist_dp.padded_dim
    return update_size


def server_mean(
    aggregate: np.ndarray | None, total_weight: float, *, update_size: int, round_index: int,
    user_dp: UserLevelDP | None = None, dist_dp: DistributedDP | None = None,
    extra_sum: np.ndarray | None = None,
) -> tuple[np.ndarray, UserDPRound | None]:
    """Return (the mean update to apply, what user-level DP's server step did).

    ``aggregate`` and ``total_weight`` are the protocol's weighted mean and total
    weight (``aggregate`` is ``None`` only under user-level DP when nobody took
    part: the server then releases noise alone).  Without DP the mean is the
    aggregate; user-level DP: the sum of the clipped updates (every weight is 1,
    so mean × total weight) plus the server's noise, over the expected number of
    clients; distributed DP: the decoded noised sum over the expected clients.
    ``update_size`` is the length of the model update (without DP's extra
    coordinates or padding).  ``extra_sum`` (length ``update_size``, DP only) is
    added to the clients' sum before the noise: the audit's canary clients
    (:mod:`fedpriv.attacks.client_canaries`), whose already-clipped vectors the
    secure sum would carry unchanged.
    """
    if extra_sum is not None and user_dp is None and dist_dp is None:
        raise ConfigError("canary clients audit user-level or distributed DP runs only")
    if user_dp is not None:
        summed = None
        if aggregate is not None:
            summed = np.asarray(aggregate).astype(np.float64) * total_weight
        if extra_sum is not None:
            if summed is None:
                summed = np.zeros(update_size + user_dp.extra_coordinates)
            summed[:update_size] += extra_sum
        mean, dp_round = user_dp.server_step(summed, update_size, round_index)
        return mean, dp_round
    if aggregate is None:
        raise ConfigError("a round without participants needs user-level DP")
    if dist_dp is not None:
        summed = dist_dp.server_decode(dist_dp.residue_sum(aggregate, total_weight), round_index)
        if extra_sum is not None:  # Skellam noise is added by the clients: adding after the
            summed = summed + extra_sum  # decode is adding before the noise (the sum is linear)
        return summed / dist_dp.expected_clients, None
    return np.asarray(aggregate), None


__all__ = ["DP_CLIENT_WEIGHT", "protocol_vector", "protocol_vector_size", "rounding_l2_bound",
           "server_mean"]
