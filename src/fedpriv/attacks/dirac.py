"""Dirac canaries: the signed basis vectors both canary audits plant, and what they share.

A Dirac canary ``j`` is the direction ``s_j·e_{i_j}``: its own coordinate
``i_j`` of a flat parameter vector (distinct across canaries, so canaries are
exactly orthogonal to each other) and a random sign ``s_j`` (so whatever else
moves that coordinate is a zero-mean nuisance), included in the run with
probability ½ (Steinke, Nasr & Jagielski 2023's one-run audit).  Planting and
reading ``m`` of them costs ``O(m)``, whatever the vector's size.

:class:`~fedpriv.attacks.gradient_canaries.GradientCanaries` (records of
sample-level DP-SGD) and :class:`~fedpriv.attacks.client_canaries.CanaryClients`
(clients of user-level and distributed DP) are both :class:`DiracCanaries`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fedpriv.errors import ConfigError, DataError

__all__ = ["DiracCanaries", "draw_dirac"]


def draw_dirac(count: int, dim: int,
               rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return (coordinates, signs, inclusion flags) of ``count`` canaries of a ``dim``-vector.

    Coordinates are uniform without replacement (sorted, int64), signs uniform
    ±1 and each canary is included independently with probability ½.  The
    caller checks ``0 < count <= dim`` with its own message.
    """
    coordinates = np.sort(rng.choice(dim, size=count, replace=False)).astype(np.int64)
    signs = rng.choice(np.array([-1.0, 1.0]), size=count)
    included = rng.random(count) < 0.5
    return coordinates, signs, included


@dataclass(frozen=True)
class DiracCanaries:
    """``m`` Dirac canaries: coordinate, sign and (secret) inclusion of each."""

    coordinates: np.ndarray
    """``i_j``: distinct int64 indices into the flat vector."""
    signs: np.ndarray
    """``s_j`` in {−1, +1}: the canary's direction is ``s_j·e_{i_j}``."""
    included: np.ndarray
    """Whether canary ``j`` is in the run (ground truth, never in the model)."""

    def __post_init__(self) -> None:
        """Check shapes, distinct coordinates, ±1 signs and boolean flags."""
        coordinates = np.asarray(self.coordinates)
        m = coordinates.size
        if coordinates.ndim != 1 or m == 0 or coordinates.dtype != np.int64:
            raise ConfigError(f"canary coordinates must be a non-empty 1-D int64 array, got "
                              f"shape {coordinates.shape} dtype {coordinates.dtype}; build them "
                              f"with {type(self).__name__}.draw")
        if np.asarray(self.signs).shape != (m,) or np.asarray(self.included).shape != (m,):
            raise ConfigError(f"need one sign and one inclusion flag per canary ({m}), got "
                              f"{np.shape(self.signs)} and {np.shape(self.included)}")
        if coordinates.min() < 0 or np.unique(coordinates).size != m:
            raise ConfigError("canary coordinates must be distinct and >= 0: two canaries on one "
                              "coordinate would be indistinguishable")
        if not np.all(np.abs(np.asarray(self.signs, dtype=np.float64)) == 1):
            raise ConfigError("canary signs must be -1 or +1")
        if np.asarray(self.included).dtype != np.bool_:
            raise ConfigError(f"canary inclusion flags must be booleans, got dtype "
                              f"{np.asarray(self.included).dtype}")

    @property
    def count(self) -> int:
        """Return the number of canaries (included or not)."""
        return int(self.coordinates.size)

    def taking_part(self, rate: float, rng: np.random.Generator) -> np.ndarray:
        """Return which canaries take part in one draw: included and Poisson-drawn w.p. ``rate``.

        ``rng`` draws one uniform per canary, included or not, so how much of the
        generator a draw consumes does not depend on the inclusion flags.
        """
        if not 0 < rate <= 1:
            raise ConfigError(f"the Poisson sample rate must be in (0, 1], got {rate}")
        return self.included & (rng.random(self.count) < rate)

    def project(self, vector: np.ndarray) -> np.ndarray:
        """Return ``s_j·vector[i_j]`` for every canary.

        Raises:
            DataError: If ``vector`` is not 1-D or too short for the coordinates.
        """
        values = np.asarray(vector, dtype=np.float64)
        if values.ndim != 1 or values.size <= int(self.coordinates.max()):
            raise DataError(f"a vector of shape {values.shape} does not hold canary coordinate "
                            f"{int(self.coordinates.max())}; pass the flat adapter vector "
                            "(get_adapter_vector) the canaries were drawn for")
        return self.signs * values[self.coordinates]
