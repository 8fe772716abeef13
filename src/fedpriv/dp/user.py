"""User-level DP-FedAvg (McMahan et al. 2018), with optional adaptive clipping (Andrew et al. 2021).

The unit of privacy is a client: its whole dataset may change.  Each round

1. clients are Poisson-sampled with rate ``q`` (every client, when all take part);
2. each sampled client clips its update to L2 norm ``C`` (:func:`clip_update`);
3. the protocol sums the clipped updates (in the clear or securely), every
   client with weight 1 — FedAvg weights by dataset size would give a large
   client more sensitivity than ``C``;
4. the server adds ``N(0, (σC)²)`` to the sum and divides by the *expected*
   number of clients ``qN`` (the fixed-denominator estimator of McMahan et al.,
   whose sensitivity is ``C / qN`` whoever was sampled or dropped).

So the noise is central: it protects against everyone who sees the released
model, not against the server, which sees the sum before noise (distributed DP
removes that trust).  Accounting composes ``rounds`` subsampled Gaussian
mechanisms of noise multiplier ``σ`` and rate ``q`` (:mod:`fedpriv.dp.accounting`).

Adaptive clipping (Andrew et al. 2021, "Differentially private learning with
adaptive clipping", https://arxiv.org/abs/1905.03871) tracks a quantile ``γ`` of
the update norms.  Each client also reports the *centred* bit
``b_i − ½ ∈ {−½, +½}`` with ``b_i = [‖Δ_i‖ ≤ C]`` (their Algorithm 1 and TFF's
adaptive-quantile aggregator send the centred value too), the server adds
``N(0, σ_b²)`` to the sum and estimates the unclipped share as
``b̄ = (Σ(b_i − ½) + noise) / (expected clients) + ½`` (the fixed-denominator
estimator again), then moves ``C ← C·exp(−η(b̄ − γ))``.  Centring is what makes the
count's sensitivity ½, not 1, under add/remove of a client: the release
``(Σ clipped + N(0, (σ_Δ C)²), Σ(b_i − ½) + N(0, σ_b²))`` is one Gaussian mechanism
whose sensitivity-to-noise ratio is ``sqrt(σ_Δ⁻² + (½/σ_b)²)``; with the update
noise ``σ_Δ = (σ⁻² − (2σ_b)⁻²)^(−1/2)`` (their Theorem 1) that is exactly ``1/σ``,
so the run is accounted as a Gaussian of noise multiplier ``σ``, and it needs
``σ < 2σ_b``.  (Sending 0/1 instead would make the ratio
``sqrt(σ⁻² + ¾σ_b⁻²)``: 20 clients a round of 200, 100 rounds, σ = 1 then spend
ε ≈ 12.4 (PLD) where 7.05 (PRV) is stated.)  The bit travels as one extra coordinate of the
update, so it goes through secure aggregation like the rest.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from fedpriv.dp.noise import gaussian, noise_seed
from fedpriv.errors import ConfigError
from fedpriv.protocols.encoding import positive_real

DEFAULT_TARGET_QUANTILE = 0.5
DEFAULT_CLIP_LR = 0.2
COUNT_STDDEV_FRACTION = 1 / 20
"""Andrew et al.'s default: σ_b = expected clients per round / 20."""
BIT_SENSITIVITY = 0.5
"""L2 sensitivity of the summed clipped-count coordinate: each client sends b_i − ½ = ±½."""


@dataclass(frozen=True)
class UserDPSettings:
    """Parameters of user-level DP-FedAvg (noise multiplier solved or given; clip bound)."""

    noise_multiplier: float
    """σ: the noise std on the sum is σ·C."""
    clip: float
    """C: L2 bound on each client's update (the initial bound under adaptive clipping)."""
    adaptive_clip: bool = False
    target_quantile: float = DEFAULT_TARGET_QUANTILE
    """γ: the share of updates adaptive clipping aims to leave unclipped."""
    clip_lr: float = DEFAULT_CLIP_LR
    """η: step size of the geometric clip update."""
    count_stddev: float | None = None
    """σ_b: noise on the count of unclipped updates (default: expected clients / 20)."""

    def __post_init__(self) -> None:
        if self.noise_multiplier == 0:
            raise ConfigError("user-level DP is on but the noise multiplier is 0, which gives no "
                              "privacy; set noise_multiplier > 0, give an epsilon, or use "
                              "dp='none'")
        positive_real(self.noise_multiplier, "user-level DP noise_multiplier",
                  "e.g. 1.0, or give epsilon to solve it")
        positive_real(self.clip, "user-level DP clip", "e.g. 0.5, an L2 bound on a client's update")
        if not 0 < self.target_quantile < 1:
            raise ConfigError(f"user-level DP target_quantile must be in (0, 1), got "
                              f"{self.target_quantile}; 0.5 tracks the median update norm")
        positive_real(self.clip_lr, "user-level DP clip_lr", "e.g. 0.2")
        if self.count_stddev is not None:
            positive_real(self.count_stddev, "user-level DP count_stddev",
                      "or leave it out for expected clients / 20")


def clip_update(update: np.ndarray, clip: float) -> tuple[np.ndarray, float]:
    """Return (``update`` scaled to L2 norm ≤ ``clip``, its norm before clipping)."""
    norm = float(np.linalg.norm(update.astype(np.float64, copy=False)))
    if norm <= clip:
        return update, norm
    return (update * (clip / norm)).astype(update.dtype, copy=False), norm


def update_noise_multiplier(noise_multiplier: float, count_stddev: float) -> float:
    """σ_Δ such that the update and the clipped-count queries together cost noise multiplier σ.

    Andrew et al. 2021, Theorem 1: ``σ_Δ = (σ⁻² − (2σ_b)⁻²)^(−1/2)``; needs ``σ < 2σ_b``.
    Valid only for the *centred* bits ``b − ½`` (sensitivity :data:`BIT_SENSITIVITY`) that
    :meth:`UserLevelDP.client_vector` sends: then ``σ_Δ⁻² + (½/σ_b)² = σ⁻²``
    (:func:`effective_noise_multiplier`).
    """
    limit = 2 * count_stddev
    if noise_multiplier >= limit:
        raise ConfigError(
            f"adaptive clipping cannot reach noise multiplier {noise_multiplier:.3g} with "
            f"count noise σ_b={count_stddev:.3g}: it needs σ < 2σ_b = {limit:.3g}. Sample more "
            "clients per round (σ_b grows with them), raise count_stddev, ask for a larger "
            "epsilon, or turn adaptive_clip off"
        )
    return float((noise_multiplier**-2 - limit**-2) ** -0.5)


def effective_noise_multiplier(update_noise: float, count_stddev: float,
                               bit_sensitivity: float = BIT_SENSITIVITY) -> float:
    """Return the noise multiplier of the update and the count released together.

    The pair (update sum with noise std ``σ_Δ·C``, count with noise std ``σ_b``) is one
    Gaussian mechanism once each coordinate is divided by its noise std: its L2
    sensitivity-to-noise ratio is ``sqrt(σ_Δ⁻² + (s_b/σ_b)²)`` for a count of sensitivity
    ``s_b``, i.e. noise multiplier ``(σ_Δ⁻² + (s_b/σ_b)²)^(−1/2)``.  With
    ``σ_Δ = update_noise_multiplier(σ, σ_b)`` and ``s_b = ½`` this is σ.
    """
    positive_real(update_noise, "update noise multiplier", "e.g. update_noise_multiplier()")
    positive_real(count_stddev, "count_stddev", "e.g. expected clients / 20")
    if not (math.isfinite(bit_sensitivity) and bit_sensitivity >= 0):
        raise ConfigError(f"bit_sensitivity must be a finite number >= 0, got "
                          f"{bit_sensitivity!r}; the centred bits have sensitivity 0.5")
    return float((update_noise**-2 + (bit_sensitivity / count_stddev) ** 2) ** -0.5)


def next_clip(
    clip: float, unclipped_fraction: float, target_quantile: float, clip_lr: float
) -> float:
    """Geometric update of the clip bound: ``C·exp(−η(b̄ − γ))`` (Andrew et al. 2021, eq. 3)."""
    return float(clip * math.exp(-clip_lr * (unclipped_fraction - target_quantile)))


@dataclass(frozen=True)
class UserDPRound:
    """What the server's DP step did in one round (for the report's history)."""

    clip: float
    """The clip bound clients used this round."""
    next_clip: float
    """The bound for the next round (equal to ``clip`` without adaptive clipping)."""
    noisy_unclipped_fraction: float | None
    """b̄ with its noise (adaptive clipping only)."""


class UserLevelDP:
    """Both sides of DP-FedAvg for one run: client clipping, and the server's noise and step.

    Holds the current clip bound (it changes only under adaptive clipping); the
    loop checkpoints it through :attr:`clip` and restores it with :meth:`restore`.
    """

    def __init__(
        self, settings: UserDPSettings, *, num_clients: int, clients_per_round: int,
        seed: int | None, secret: bytes | None = None,
    ) -> None:
        if not 1 <= clients_per_round <= num_clients:
            raise ConfigError(f"clients_per_round must be in [1, {num_clients}], got "
                              f"{clients_per_round}")
        self.settings = settings
        self.num_clients = num_clients
        self.sample_rate = clients_per_round / num_clients
        self.expected_clients = float(clients_per_round)
        self.seed = seed
        self.secret = secret
        """The run's DP secret: noise keys derive from it (None: from ``seed``, the
        deterministic debugging mode, or fresh from the OS when that is None too)."""
        self.clip = settings.clip
        self.noise_scale = 1.0
        """Mutation testing of the audit only: scales the noise really added (see
        :attr:`fedpriv.dp.config.DPPlan.noise_scale`)."""
        self.rounding_margin = 0.0
        """Subtracted from the clip bound on the client (see :meth:`set_rounding_margin`)."""
        self.count_stddev = (
            settings.count_stddev if settings.count_stddev is not None
            else COUNT_STDDEV_FRACTION * self.expected_clients
        )
        self.update_noise = (
            update_noise_multiplier(settings.noise_multiplier, self.count_stddev)
            if settings.adaptive_clip else settings.noise_multiplier
        )

    def set_rounding_margin(self, margin: float) -> None:
        """Clip to ``C − margin`` so that rounding after clipping keeps the norm within ``C``.

        Secure aggregation rounds each coordinate stochastically to its fixed-point
        grid after the client clipped: the rounded update, which is what the sum
        holds, can be ``r·√d`` longer than the clipped one, and the accountant
        assumes ``C``.  ``margin`` is that ``r·√d`` (0 without such rounding).
        """
        if not (math.isfinite(margin) and margin >= 0):
            raise ConfigError(f"the rounding margin must be finite and >= 0, got {margin}")
        if margin >= self.clip:
            raise ConfigError(
                f"the protocol's fixed-point rounding can add {margin:.3g} to a clipped "
                f"update's norm, not less than the user-level DP clip {self.clip:.3g}; use a "
                "finer secure-aggregation resolution (protocol_params.resolution) or a larger "
                "dp_params.clip")
        self.rounding_margin = margin

    @property
    def client_clip(self) -> float:
        """The bound clients clip to: ``C`` less the protocol's rounding margin."""
        bound = self.clip - self.rounding_margin
        if bound <= 0:
            raise ConfigError(
                f"adaptive clipping moved the bound to {self.clip:.3g}, below the protocol's "
                f"rounding margin {self.rounding_margin:.3g}; use a finer secure-aggregation "
                "resolution or raise dp_params.target_quantile")
        return bound

    @property
    def extra_coordinates(self) -> int:
        """Coordinates a client appends to its update (the clipped bit under adaptive clipping)."""
        return 1 if self.settings.adaptive_clip else 0

    def restore(self, clip: float) -> None:
        """Continue from a checkpoint whose last round left the bound at ``clip``."""
        self.clip = positive_real(clip, "checkpointed user-DP clip", "the checkpoint is corrupt")

    def sample(self, rng: np.random.Generator) -> tuple[int, ...]:
        """Poisson-sample the round's clients (each with probability q); all of them when q = 1.

        The accountant's subsampling amplification assumes exactly this sampling.
        """
        if self.sample_rate >= 1:
            return tuple(range(self.num_clients))
        chosen = np.flatnonzero(rng.random(self.num_clients) < self.sample_rate)
        return tuple(int(c) for c in chosen)

    def client_vector(self, update: np.ndarray) -> tuple[np.ndarray, float]:
        """Return (what the client hands to the protocol, its update norm before clipping)."""
        clipped, norm = clip_update(update, self.client_clip)
        if not self.settings.adaptive_clip:
            return clipped, norm
        # Centred (b − ½ = ±½): the count's sensitivity is ½, as update_noise_multiplier assumes.
        unclipped = 1.0 if norm <= self.clip else 0.0
        bit = np.array([unclipped - BIT_SENSITIVITY], dtype=clipped.dtype)
        return np.concatenate([clipped, bit]), norm

    def server_step(
        self, summed: np.ndarray | None, vector_size: int, round_index: int,
    ) -> tuple[np.ndarray, UserDPRound]:
        """Turn the sum of the clients' vectors into the noised mean update.

        ``summed`` is Σ of what :meth:`client_vector` returned over the clients
        whose input reached the aggregate (``None`` when no client took part: the
        server still releases pure noise, as the accountant assumes).
        ``vector_size`` is the adapter's length, without the extra coordinates.
        """
        extra = self.extra_coordinates
        if summed is None:
            summed = np.zeros(vector_size + extra)
        if summed.shape != (vector_size + extra,):
            raise ConfigError(f"the aggregate has {summed.shape[0]} values, expected "
                              f"{vector_size + extra}")
        key = noise_seed(self.seed, round_index, secret=self.secret)
        noise = gaussian(key, vector_size + extra, 1.0) * self.noise_scale
        total = summed[:vector_size].astype(np.float64) + noise[:vector_size] * (
            self.update_noise * self.clip)
        mean = total / self.expected_clients
        used = self.clip
        fraction: float | None = None
        if self.settings.adaptive_clip:
            centred = float(summed[vector_size]) + float(noise[vector_size]) * self.count_stddev
            fraction = centred / self.expected_clients + BIT_SENSITIVITY
            self.clip = next_clip(self.clip, fraction, self.settings.target_quantile,
                                  self.settings.clip_lr)
        return mean, UserDPRound(clip=used, next_clip=self.clip, noisy_unclipped_fraction=fraction)
