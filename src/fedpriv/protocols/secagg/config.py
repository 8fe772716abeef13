"""SecAgg / SecAgg+ configuration and the public parameters of a round.

Owns the frozen, validated configs (:class:`SecAggConfig`,
:class:`SecAggPlusConfig`), the :class:`RoundPlan` that clients and server derive
identically from a config and the round's participants, and the fixed-point
encoding of a client's FedAvg weight.  The graph degree and the threshold ``t``
come from :mod:`fedpriv.protocols.secagg_graph`.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass

from fedpriv.errors import ConfigError
from fedpriv.protocols.encoding import CLIP_MODES, FixedPointSpec, positive_real


@dataclass(frozen=True)
class SecAggConfig:
    """Parameters of ``secagg`` (and, with :attr:`SecAggPlusConfig.degree`, ``secagg+``).

    Every field is public: clients and server derive the same round parameters from
    it and the round's participants.
    """

    clip: float = 1.0
    """Clip bound of the weighted update ``w·Δ`` (per coordinate or L2, see ``clip_mode``)."""
    resolution: float = 2**-20
    """Fixed-point quantization step of the weighted update."""
    clip_mode: str = "coordinate"
    """``"coordinate"`` (clip each entry to ±clip) or ``"l2"`` (scale to L2 norm ≤ clip)."""
    threshold: float | None = None
    """Fraction of a neighbourhood (a client and its neighbours) needed to unmask, in (½, 1]:
    ``t = max(min_threshold, ceil(threshold · neighbourhood size))``.  ``None`` (default): the
    least ``t`` strictly above ½ of the neighbourhood, or above ⅔ when clients verify
    signatures (active-server mode), which also refuses a configured fraction ≤ ⅔."""
    min_threshold: int = 2
    """Lower bound on ``t``, ≥ 2 (t − 1 colluding clients learn nothing)."""
    min_participants: int = 2
    """Fewest clients a client accepts in a round: in the round, among the advertised keys,
    and among the announced survivors (the effective minimum is ``max(this, t)``).  ≥ 2.
    Raise it where a sum over few clients is too revealing: in a sum of two, each of the
    two reads the other's update off the aggregate."""
    max_weight: float = 1.0
    """Public upper bound on a client's FedAvg weight; weights are divided by it into (0, 1]."""

    def __post_init__(self) -> None:
        for name, hint in (
            ("clip", "e.g. 1.0, the bound on each client's weighted update"),
            ("resolution", "e.g. 2**-20, the fixed-point step"),
            ("max_weight", "Set it to an upper bound on every client's FedAvg weight "
             "(e.g. the largest client's number of examples)."),
        ):
            object.__setattr__(
                self, name, positive_real(getattr(self, name), f"secagg {name}", hint)
            )
        if self.clip_mode not in CLIP_MODES:
            raise ConfigError(
                f"secagg clip_mode must be one of {list(CLIP_MODES)}; got {self.clip_mode!r}."
            )
        if self.threshold is not None:
            if (
                isinstance(self.threshold, bool)
                or not isinstance(self.threshold, numbers.Real)
                or not 0.5 < float(self.threshold) <= 1.0
            ):
                raise ConfigError(
                    f"secagg threshold is the fraction of a neighbourhood needed to unmask, in "
                    f"(0.5, 1]; got {self.threshold!r}. At 1/2 or below, a server announcing "
                    "different survivors to two halves of a neighbourhood collects the shares "
                    "of one client's self-mask seed from one half and of its mask key from the "
                    "other, and unmasks its update (Bonawitz et al. 2017). Leave it unset for "
                    "the safe default, or use min_threshold for an absolute count."
                )
            object.__setattr__(self, "threshold", float(self.threshold))
        if (
            isinstance(self.min_threshold, bool)
            or not isinstance(self.min_threshold, numbers.Integral)
            or self.min_threshold < 2
        ):
            raise ConfigError(
                f"secagg min_threshold must be an integer >= 2 (with t = 1 any single client "
                f"could reveal another's mask secrets); got {self.min_threshold!r}."
            )
        object.__setattr__(self, "min_threshold", int(self.min_threshold))
        if (
            isinstance(self.min_participants, bool)
            or not isinstance(self.min_participants, numbers.Integral)
            or self.min_participants < 2
        ):
            raise ConfigError(
                f"secagg min_participants must be an integer >= 2 (the fewest clients a client "
                f"accepts in a round); got {self.min_participants!r}."
            )
        object.__setattr__(self, "min_participants", int(self.min_participants))
        self.fixed_point(2)  # clip and resolution must give a usable spec

    def fixed_point(self, num_participants: int) -> FixedPointSpec:
        """Return the fixed-point spec of a round with ``num_participants`` clients."""
        return FixedPointSpec(
            clip=self.clip,
            resolution=self.resolution,
            max_clients=num_participants,
            clip_mode=self.clip_mode,
        )


@dataclass(frozen=True)
class SecAggPlusConfig(SecAggConfig):
    """Parameters of ``secagg+``: those of :class:`SecAggConfig` and the graph degree."""

    degree: int | None = None
    """Neighbours per client ``k``: an even integer ≥ 2, capped at ``n − 1`` per round; ``None``
    → ``min(2·ceil(log2 n), n − 1)`` (Bell et al. 2020)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.degree is not None and (
            isinstance(self.degree, bool)
            or not isinstance(self.degree, numbers.Integral)
            or self.degree < 2
            or self.degree % 2
        ):
            raise ConfigError(
                f"secagg+ degree must be an even integer >= 2 (the Harary graph joins each "
                f"client to degree/2 ring neighbours on each side), or None for "
                f"2·ceil(log2 n); got {self.degree!r}."
            )


@dataclass(frozen=True)
class RoundPlan:
    """The public parameters of one round, which clients and server derive identically."""

    spec: FixedPointSpec
    """Fixed-point encoding of ``w·Δ`` (``max_clients`` = participants)."""
    degree: int
    """Neighbours per client (``n − 1`` for secagg)."""
    threshold: int
    """Shares needed to reconstruct a secret: ``t``."""
    min_participants: int
    """Fewest clients a client accepts in the round, among advertisers and survivors."""
    weight_bits: int
    """The weight ``w ∈ (0, 1]`` is encoded as ``max(1, round(w · 2^weight_bits))``."""
    max_weight: float

    @property
    def bits(self) -> int:
        """Word size of the masked vectors."""
        return self.spec.bits


def weight_fraction_bits(bits: int, num_participants: int) -> int:
    """Return ``f = bits − bit_length(n) − 1``: ``n`` weights ≤ ``2^f`` sum below ``2^(bits−1)``."""
    f = bits - num_participants.bit_length() - 1
    if f < 1:
        raise ConfigError(
            f"{bits}-bit words leave no room for the weight of {num_participants} clients; "
            "use a finer resolution (more bits)."
        )
    return f


def encode_weight(weight: float, fraction_bits: int) -> int:
    """Return the word of a normalised weight in (0, 1]: ``max(1, round(w · 2^f))``."""
    return max(1, round(weight * 2.0**fraction_bits))
