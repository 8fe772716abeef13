"""Distributed DP through secure aggregation: the distributed Skellam mechanism.

Agarwal, Kairouz & Liu, "The Skellam Mechanism for Differentially Private
Federated Learning", NeurIPS 2021 (https://arxiv.org/abs/2110.04995), with the
randomized rotation and conditional rounding of Kairouz, Liu & Steinke, "The
Distributed Discrete Gaussian Mechanism for Federated Learning with Secure
Aggregation", ICML 2021 (https://arxiv.org/abs/2102.06387).

Each client, in round ``r``:

1. clips its update to L2 norm ``C`` (user-level clipping, as :mod:`fedpriv.dp.user`);
2. pads it to ``d`` = the next power of two and rotates it, ``x ↦ H·D·x / √d``, with
   ``H`` the Sylvester–Hadamard matrix and ``D`` random signs drawn from a *public*
   seed of the round (the rotation flattens the vector so that every coordinate is
   small; it needs no secret, since the privacy analysis holds for any rotation);
3. divides by the scale ``γ`` and rounds each coordinate stochastically to an
   integer, retrying until the rounded vector's norm is at most
   ``Δ₂ = min(C/γ + √d, sqrt((C/γ)² + d/4 + sqrt(2 ln(1/β))·(C/γ + √d/2)))``
   (conditional randomized rounding, Kairouz et al. 2021 §4.1: each try passes with
   probability ≥ 1 − β);
4. adds its *share* of Skellam noise, ``Poisson(μ/2n) − Poisson(μ/2n)`` per coordinate,
   whose variance is ``μ/n`` (Skellam is closed under sums, so the ``n`` shares add
   up to Skellam noise of variance ``μ``);
5. reduces the integers mod ``m = 2^bits`` into ``[−m/2, m/2)`` and hands them to the
   secure sum as the floats ``z·r`` (``r`` a power of two: secagg sums them exactly).

The server reduces the unmasked sum mod ``m`` again (centred), multiplies by ``γ``,
rotates back and drops the padding: the noised *sum* of the clipped updates,
whose noise std per coordinate is ``γ·√μ = σ·C`` when all ``n`` clients' shares
arrive (σ is the noise multiplier, as for central DP).  The server only ever sees
the noised sum, so the noise protects against the server too (honest-but-curious,
not colluding with clients: a client that colludes can subtract its own share).

Privacy.  The unit is a client; neighbouring runs differ in one participant's update
being replaced by zero (zero-out: the server knows who takes part, so participation
is not hidden, and there is no amplification by sampling — every round is accounted
at q = 1).  In the integer domain the sum then changes by one rounded vector, of L2
norm ≤ Δ₂ and L1 norm ≤ Δ₁ = min(√d·Δ₂, Δ₂²) (integers: |z| ≤ z²).  The Skellam
mechanism of variance μ is then (α, ε(α))-RDP for every *integer* α > 1 with
(Agarwal et al. 2021, Theorem 3.5 with their Sk(μ', μ') of variance 2μ' = μ)::

    ε(α) ≤ α·Δ₂²/(2μ) + min(((2α − 1)·Δ₂² + 6·Δ₁)/(4μ²), 3·Δ₁/(2μ))

— the Gaussian's RDP plus a correction that vanishes as μ grows.  Rounds compose by
adding RDP (Mironov 2017) and convert to (ε, δ) as Opacus does (Balle et al. 2020).
A round in which only ``s`` of the ``n`` expected clients' noise reached the sum has
variance ``μ·s/n`` (:meth:`DistributedDP.round_variance`): dropouts cost privacy.
Modular wrap-around is post-processing of the noised sum in ``Z_m`` (each client
sends its residue), so it never costs privacy, only accuracy.

Wrap-around.  ``γ`` is chosen so that ``k_stddevs`` standard deviations of one
coordinate of the true integer sum, plus the worst-case rounding drift, fit in
``[−m/2, m/2)`` (:func:`choose_scale`, the heuristic of Kairouz et al. §4.4 with a
deterministic rounding term); :func:`wraparound_probability` bounds the chance that
*any* coordinate wraps (a Chernoff bound per coordinate, union over coordinates).

Randomness.  The noise and rounding of a client come from a numpy generator
(PCG64DXSM) seeded with a secret 256-bit key from :func:`fedpriv.dp.noise.noise_seed`.
numpy's generators and Poisson sampler are *not* cryptographic: the key is secret
but the stream is not a CSPRNG (its 128-bit state can in principle be recovered from
enough output), and the sampler's floating-point rejection steps are not
constant-time.  The rounding randomness need not be secret (the analysis holds for
any rounded vector within Δ₂); the noise must be.  The keys derive from the run's
DP secret (:mod:`fedpriv.dp.secret`: from the OS, kept beside the checkpoint, never
reported); only the explicit deterministic debugging mode derives them from the
public seed, which makes the noise known to anyone who knows the seed.  With
neither, every key is fresh from the OS.  In a real deployment each client holds
its own secret (the Flower integration never derives one from the server).
"""

from __future__ import annotations

import hashlib
import logging
import math
import numbers
import secrets
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import optimize

from fedpriv.dp.accounting import MAX_NOISE_MULTIPLIER, MIN_NOISE_MULTIPLIER, check_delta
from fedpriv.dp.noise import noise_seed
from fedpriv.errors import ConfigError, ProtocolError
from fedpriv.protocols.encoding import positive_real

__all__ = [
    "DEFAULT_BETA",
    "DEFAULT_BITS",
    "DEFAULT_K_STDDEVS",
    "MAX_BITS",
    "MIN_BITS",
    "SKELLAM_ORDERS",
    "DistributedDP",
    "DistributedDPSettings",
    "centred_mod",
    "choose_scale",
    "conditional_round",
    "hadamard_transform",
    "padded_dimension",
    "planned_epsilon",
    "rounded_l2_bound",
    "sensitivities",
    "skellam_epsilon",
    "skellam_rdp",
    "solve_noise_multiplier",
    "wraparound_probability",
]

logger = logging.getLogger(__name__)

DEFAULT_BITS = 20
"""Bits per coordinate of the secure sum (modulus 2^20).  Rounding inflates Δ₂² by about
d·k²·σ²/m²: at 20 bits the σ solved for a target ε is within ~1 % of central DP's up to
d ≈ 10⁶ (2–12 % at d = 10⁶–4·10⁶ and ε = 1: use more bits there; secagg words stay 32-bit
while bits + log2(clients) + 1 ≤ 32)."""
DEFAULT_K_STDDEVS = 8.0
"""Headroom of :func:`choose_scale`: 8 standard deviations make the union bound on any
coordinate wrapping ≈ 2·d·e^(−32) ≈ 2.5e-14·d (< 1e-6 up to d ≈ 4·10⁷), for a negligible cost
in ε at 16–20 bits.  The papers' k = 3–4 wraps ~d·6e-5 coordinates a round."""
DEFAULT_BETA = math.exp(-0.5)
"""Conditional-rounding parameter β of Kairouz et al. 2021 (their experiments' choice)."""
MIN_BITS = 4
MAX_BITS = 32
"""Above 32 bits the per-client Poisson rate can exceed what numpy's sampler accepts."""
MAX_ROUNDING_TRIES = 1000
"""Conditional rounding retries before giving up (each try fails with probability ≤ β)."""

SKELLAM_ORDERS: tuple[int, ...] = (
    *range(2, 128),
    128, 160, 192, 224, 256, 320, 384, 448, 512, 640, 768, 896, 1024,
)
"""Rényi orders α: integers only, as the Skellam bound holds for integer α > 1."""

_ROTATION_PURPOSE = "fedpriv-distributed-dp-rotation"
_NOISE_PURPOSE = "distributed-dp"
_RESIDUE_TOLERANCE = 1e-3
"""How far a decoded secagg sum may be from an integer before we call it corrupt."""


# --------------------------------------------------------------------------- validation


def _count(value: object, what: str, minimum: int, hint: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or int(value) < minimum:
        raise ConfigError(f"{what} must be a whole number >= {minimum}, got {value!r}; {hint}")
    return int(value)


def _check_noise_multiplier(value: object) -> float:
    if not isinstance(value, bool) and isinstance(value, numbers.Real) and value == 0:
        raise ConfigError(
            "distributed DP is on but the noise multiplier is 0: with no noise there is no "
            "privacy (ε = ∞). Give a noise multiplier > 0 (e.g. 1.0) or a target epsilon instead")
    return positive_real(value, "distributed DP noise_multiplier",
                     "typical values are 0.5–5, or give epsilon to solve it")


def _check_bits(value: object) -> int:
    if (isinstance(value, bool) or not isinstance(value, numbers.Integral)
            or not MIN_BITS <= int(value) <= MAX_BITS):
        raise ConfigError(
            f"distributed DP bits must be a whole number in [{MIN_BITS}, {MAX_BITS}], got "
            f"{value!r}; it is log2 of the secure sum's modulus per coordinate (20 is usual; "
            "fewer bits cost accuracy and, below ~12, privacy)")
    return int(value)


def _check_beta(value: object) -> float:
    if (isinstance(value, bool) or not isinstance(value, numbers.Real)
            or not 0 <= float(value) < 1):
        raise ConfigError(
            f"distributed DP beta must be in [0, 1), got {value!r}; it trades rounding retries "
            "(each fails with probability ≤ β) for a tighter norm bound; exp(-0.5) is usual")
    return float(value)


@dataclass(frozen=True)
class DistributedDPSettings:
    """Parameters of the distributed Skellam mechanism (validated at construction)."""

    noise_multiplier: float
    """σ relative to the clip: the aggregate's noise std per coordinate (update units) is
    σ·clip when all expected clients' shares arrive; > 0."""
    clip: float
    """L2 bound on each client's update, > 0."""
    bits: int = DEFAULT_BITS
    """Per-coordinate modulus ``m = 2^bits`` of the secure sum."""
    k_stddevs: float = DEFAULT_K_STDDEVS
    """Headroom used to pick the scale γ: standard deviations of the sum kept inside ±m/2."""
    beta: float = DEFAULT_BETA
    """Conditional-rounding parameter β in [0, 1) (0: plain stochastic rounding)."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "noise_multiplier",
                           _check_noise_multiplier(self.noise_multiplier))
        object.__setattr__(self, "clip", positive_real(
            self.clip, "distributed DP clip", "e.g. 1.0, an L2 bound on a client's update"))
        object.__setattr__(self, "bits", _check_bits(self.bits))
        object.__setattr__(self, "k_stddevs", positive_real(
            self.k_stddevs, "distributed DP k_stddevs",
            f"e.g. {DEFAULT_K_STDDEVS:g}; more headroom makes wrap-around rarer"))
        object.__setattr__(self, "beta", _check_beta(self.beta))

    @property
    def modulus(self) -> int:
        """``m = 2^bits``."""
        return 1 << self.bits


# --------------------------------------------------------------------------- pure helpers


def padded_dimension(dim: int) -> int:
    """Return the smallest power of two ≥ ``dim`` (the rotation's size)."""
    size = _count(dim, "the update's dimension", 1, "pass the length of the flat update")
    return 1 << (size - 1).bit_length()


def hadamard_transform(values: np.ndarray) -> np.ndarray:
    """Return ``H·values / √d`` (float64) for the d×d Sylvester–Hadamard matrix ``H``.

    ``d = len(values)`` must be a power of two.  ``H/√d`` is orthogonal and symmetric,
    so the transform is its own inverse.  Fast Walsh–Hadamard: log2(d) butterfly stages.
    """
    out = np.array(values, dtype=np.float64, copy=True)
    if out.ndim != 1 or out.size == 0 or out.size & (out.size - 1):
        raise ConfigError(f"hadamard_transform needs a 1-D vector whose length is a power of "
                          f"two, got shape {out.shape}; pad it with padded_dimension()")
    size, half = out.size, 1
    while half < size:
        blocks = out.reshape(-1, 2, half)
        top = blocks[:, 0, :].copy()
        blocks[:, 0, :] += blocks[:, 1, :]
        blocks[:, 1, :] = top - blocks[:, 1, :]
        half *= 2
    out /= math.sqrt(size)
    return out


def centred_mod(values: np.ndarray, modulus: int) -> np.ndarray:
    """Return the integers ``values`` reduced mod ``modulus`` into ``[−modulus/2, modulus/2)``."""
    half = modulus // 2
    array = np.asarray(values, dtype=np.int64)
    return np.mod(array + half, modulus) - half


def rounded_l2_bound(norm: float, beta: float, dim: int) -> float:
    """Return the norm bound Δ₂ that conditional rounding enforces on a vector of norm ``norm``.

    Kairouz, Liu & Steinke 2021, Proposition 22 / Theorem 23: stochastically rounding a
    ``dim``-dimensional vector of L2 norm ≤ c gives norm² ≤ c² + d/4 + sqrt(2 ln(1/β))·(c + √d/2)
    with probability ≥ 1 − β; and always ≤ c + √d (each coordinate moves by < 1).
    """
    c = float(norm)
    always = c + math.sqrt(dim)
    if beta == 0:
        return always
    squared = c * c + dim / 4 + math.sqrt(2 * math.log(1 / beta)) * (c + math.sqrt(dim) / 2)
    return min(always, math.sqrt(squared))


def conditional_round(
    values: np.ndarray, bound: float, rng: np.random.Generator,
    max_tries: int = MAX_ROUNDING_TRIES,
) -> tuple[np.ndarray, int]:
    """Return (an int64 stochastic rounding of ``values`` with L2 norm ≤ ``bound``, tries used).

    Each coordinate becomes ``floor(v)`` or ``floor(v) + 1``, the latter with probability
    ``frac(v)`` (unbiased); the whole vector is redrawn until its norm is within ``bound``
    (Kairouz et al. 2021 §4.1).  The norm check is slightly conservative (a relative margin
    of 1e-9 covers float summation error), so the bound always holds exactly.  Raises
    :class:`ProtocolError` after ``max_tries`` failures (the bound is then too tight).
    """
    floor = np.floor(values)
    frac = values - floor
    limit = float(bound) ** 2 * (1 - 1e-9)
    for tries in range(1, max_tries + 1):
        rounded = floor + (rng.random(floor.shape) < frac)
        if float(np.dot(rounded, rounded)) <= limit:
            return rounded.astype(np.int64), tries
    raise ProtocolError(
        f"conditional rounding failed {max_tries} times to meet the norm bound {bound:.6g}; "
        "the bound is too tight for this vector: check that the update was clipped and the "
        "bound computed with rounded_l2_bound(clip / scale, beta, padded_dim)")


def choose_scale(settings: DistributedDPSettings, dim: int, expected_clients: int) -> float:
    """Return the scale γ (update units per integer step) for ``settings``.

    One coordinate of the true integer sum is (rotated signal)/γ + (rounding drift) +
    (noise).  The rotated signal of ``n`` clipped updates is sub-Gaussian with variance
    proxy ``(n·C/γ)²/d`` (random signs, ``‖Σx‖ ≤ n·C``), the noise has variance
    ``(σ·C/γ)²`` and the rounding drift is below ``n``.  γ is the smallest scale with
    ``k·(C/γ)·sqrt(n²/d + σ²) + n = m/2`` (Kairouz et al. 2021 §4.4, with the rounding
    term bounded deterministically):
    ``γ = k·C·sqrt(n²/d + σ²) / (m/2 − n)``.
    """
    n = _count(expected_clients, "expected_clients", 1, "the clients summed per round")
    d = padded_dimension(dim)
    room = settings.modulus // 2 - n
    if room <= 0:
        raise ConfigError(
            f"{settings.bits} bits (modulus {settings.modulus}) leave no room for the sum of "
            f"{n} clients' rounding; raise bits (at least {max(MIN_BITS, n.bit_length() + 1)}, "
            f"{DEFAULT_BITS} is usual)")
    sigma, clip = settings.noise_multiplier, settings.clip
    return settings.k_stddevs * clip * math.sqrt(n * n / d + sigma * sigma) / room


def sensitivities(settings: DistributedDPSettings, dim: int, scale: float) -> tuple[float, float]:
    """Return (Δ₁, Δ₂): L1 and L2 sensitivities of the integer sum after conditional rounding.

    ``Δ₂ = rounded_l2_bound(C/γ, β, d)`` with ``d`` the padded dimension, and
    ``Δ₁ = min(√d·Δ₂, Δ₂²)`` (an integer vector has ‖z‖₁ ≤ ‖z‖₂², and ‖z‖₁ ≤ √d‖z‖₂).
    """
    gamma = positive_real(scale, "scale", "use choose_scale()")
    d = padded_dimension(dim)
    l2 = rounded_l2_bound(settings.clip / gamma, settings.beta, d)
    return min(math.sqrt(d) * l2, l2 * l2), l2


def _check_orders(orders: Sequence[float] | np.ndarray) -> np.ndarray:
    array = np.atleast_1d(np.asarray(orders, dtype=np.float64))
    if array.size == 0 or not np.all(np.isfinite(array)) or np.any(array < 2) or np.any(
            array != np.floor(array)):
        raise ConfigError(f"the Skellam RDP bound holds for integer orders α ≥ 2, got {orders!r}; "
                          "use SKELLAM_ORDERS")
    return array


def skellam_rdp(orders: Sequence[float] | np.ndarray, l1: float, l2: float,
                mu: float) -> np.ndarray:
    """Return the RDP ε(α) at each integer order of one Skellam mechanism of variance ``mu``.

    ``ε(α) = α·Δ₂²/(2μ) + min(((2α − 1)·Δ₂² + 6·Δ₁)/(4μ²), 3·Δ₁/(2μ))`` for integer
    α > 1 (Agarwal, Kairouz & Liu 2021, Theorem 3.5, written for noise of variance μ
    per coordinate).  ``l1``/``l2`` are the integer-domain sensitivities Δ₁/Δ₂.
    """
    alpha = _check_orders(orders)
    for value in (l1, l2):
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or not (
                math.isfinite(value) and value >= 0):
            raise ConfigError(f"sensitivities must be finite numbers >= 0, got l1={l1!r}, "
                              f"l2={l2!r}; use sensitivities()")
    var = positive_real(mu, "Skellam variance μ",
                    "a round's sum without noise shares is released in the clear; leave out "
                    "rounds where no client's input reached the sum")
    gaussian = alpha * l2 * l2 / (2 * var)
    correction = np.minimum(((2 * alpha - 1) * l2 * l2 + 6 * l1) / (4 * var * var),
                            3 * l1 / (2 * var))
    return gaussian + correction


def _rdp_to_epsilon(rdp: np.ndarray, delta: float) -> float:
    from opacus.accountants.analysis.rdp import get_privacy_spent

    with warnings.catch_warnings(), np.errstate(divide="ignore", invalid="ignore"):
        warnings.filterwarnings("ignore", message="Optimal order is the", category=UserWarning)
        eps, _ = get_privacy_spent(orders=list(SKELLAM_ORDERS), rdp=rdp, delta=delta)
    value = float(eps)
    return value if not math.isnan(value) else math.inf


def skellam_epsilon(rounds: Sequence[float], l1: float, l2: float, delta: float) -> float:
    """Return the ε at ``delta`` of one Skellam mechanism per round, of variance ``rounds[r]``.

    ``rounds`` holds each round's aggregate Skellam variance μ_r in the integer domain
    (``μ·s/n`` when ``s`` of ``n`` expected clients' shares arrived: see
    :meth:`DistributedDP.round_variance`); leave out rounds where no client's input reached
    the sum.  RDP adds over rounds; the conversion is Opacus's (Balle et al. 2020).  No
    rounds spend 0.
    """
    delta = check_delta(delta)
    variances = list(rounds)
    if not variances:
        return 0.0
    total = np.zeros(len(SKELLAM_ORDERS))
    for mu in variances:
        total = total + skellam_rdp(SKELLAM_ORDERS, l1, l2, mu)
    return _rdp_to_epsilon(total, delta)


def _central_variance(settings: DistributedDPSettings, scale: float) -> float:
    return (settings.noise_multiplier * settings.clip / scale) ** 2


def planned_epsilon(
    settings: DistributedDPSettings, *, dim: int, expected_clients: int, rounds: int,
    delta: float, min_survivors: int | None = None, replace_one: bool = False,
) -> float:
    """Return the ε planned before training: ``rounds`` rounds with ``min_survivors`` shares each.

    ``min_survivors`` (default: all ``expected_clients``) is the worst-case number of clients
    whose noise reaches each round's sum; a round with fewer survivors spends more.
    ``replace_one``: the ε when one client's data is replaced rather than added or removed
    (two rounded vectors of norm ≤ Δ differ by ≤ 2Δ, in L1 and L2).
    """
    n = _count(expected_clients, "expected_clients", 1, "the clients summed per round")
    count = _count(rounds, "rounds", 0, "the number of rounds")
    survivors = n if min_survivors is None else _count(
        min_survivors, "min_survivors", 1, "the fewest clients whose noise reaches a sum")
    if survivors > n:
        raise ConfigError(f"min_survivors={survivors} exceeds expected_clients={n}; it is the "
                          "worst-case number of clients whose noise reaches a round's sum")
    scale = choose_scale(settings, dim, n)
    l1, l2 = sensitivities(settings, dim, scale)
    factor = 2.0 if replace_one else 1.0
    mu = _central_variance(settings, scale) * survivors / n
    return skellam_epsilon([mu] * count, factor * l1, factor * l2, delta)


def _format_up(value: float) -> str:
    if value <= 0 or not math.isfinite(value):
        return f"{value:g}"
    step = 10 ** (math.floor(math.log10(value)) - 1)
    return f"{math.ceil(value / step * (1 - 1e-12)) * step:.10g}"


def solve_noise_multiplier(
    target_epsilon: float, rounds: int, delta: float, *, dim: int, expected_clients: int,
    bits: int = DEFAULT_BITS, k_stddevs: float = DEFAULT_K_STDDEVS, beta: float = DEFAULT_BETA,
    min_survivors: int | None = None, tolerance: float = 0.01,
) -> float:
    """Return the smallest σ (to relative ``tolerance``) whose planned ε is <= ``target_epsilon``.

    The planned ε is :func:`planned_epsilon` (each round at ``min_survivors`` shares).  It
    does not depend on the clip (γ scales with it).  The answer σ meets the target, and,
    unless it is :data:`~fedpriv.dp.accounting.MIN_NOISE_MULTIPLIER`, σ·(1 − tolerance) does
    not.  Raises :class:`ConfigError` naming the smallest reachable ε when even
    :data:`~fedpriv.dp.accounting.MAX_NOISE_MULTIPLIER` misses the target (few bits cap the
    noise the modulus can hold, so ε has a floor).
    """
    target = positive_real(target_epsilon, "target epsilon", "ε between 1 and 10 is usual")
    count = _count(rounds, "rounds", 1, "train at least one round, or turn DP off")
    delta = check_delta(delta)
    tol = positive_real(tolerance, "tolerance", "0.01 (1 %) is usual")
    if tol >= 0.5:
        raise ConfigError(f"tolerance must be in (0, 0.5), got {tolerance!r}; 0.01 is usual")

    def eps_at(sigma: float) -> float:
        settings = DistributedDPSettings(sigma, 1.0, bits=bits, k_stddevs=k_stddevs, beta=beta)
        return planned_epsilon(settings, dim=dim, expected_clients=expected_clients,
                               rounds=count, delta=delta, min_survivors=min_survivors)

    high = MAX_NOISE_MULTIPLIER
    floor = eps_at(high)
    if floor > target:
        reachable = _format_up(floor)
        raise ConfigError(
            f"ε={target:g} cannot be reached with δ={delta:g} over {count} rounds of distributed "
            f"DP at {bits} bits (noise multiplier ≤ {MAX_NOISE_MULTIPLIER:g} reaches ε ≥ "
            f"{reachable}); ask for ε ≥ {reachable}, raise bits, or train fewer rounds")
    low = MIN_NOISE_MULTIPLIER
    if eps_at(low) <= target:
        return low
    while high > low * (1 + tol):  # invariant: eps_at(low) > target >= eps_at(high)
        middle = math.sqrt(low * high)
        if eps_at(middle) <= target:
            high = middle
        else:
            low = middle
    return high


def wraparound_probability(
    settings: DistributedDPSettings, dim: int, expected_clients: int,
    scale: float | None = None, *, clients: int | None = None,
) -> float:
    """Return an upper bound on the probability that any coordinate of the true sum wraps.

    The true integer sum of ``s = clients`` (default ``expected_clients``) clients is, per
    coordinate, ``R + E + N``: ``R`` the rotated clipped sum over γ, sub-Gaussian with
    variance proxy ``v = (s·C/γ)²/d`` over the random signs (Hoeffding; ``‖Σx‖ ≤ s·C``),
    ``|E| < s`` the rounding drift, ``N`` Skellam of variance ``μ_s = μ·s/n`` with
    ``E e^{tN} = exp(μ_s(cosh t − 1))``.  It wraps only if ``|R + N| ≥ a = m/2 − s``, so
    (Chernoff) ``P ≤ 2·min_t exp(t²v/2 + μ_s(cosh t − 1) − t·a)``; the union over the ``d``
    padded coordinates multiplies by ``d``.  ``scale`` defaults to :func:`choose_scale`.
    """
    n = _count(expected_clients, "expected_clients", 1, "the clients summed per round")
    s = n if clients is None else _count(clients, "clients", 0, "the clients in the sum")
    gamma = choose_scale(settings, dim, n) if scale is None else positive_real(
        scale, "scale", "use choose_scale()")
    d = padded_dimension(dim)
    a = settings.modulus / 2 - s
    if a <= 0:
        return 1.0
    v = (s * settings.clip / gamma) ** 2 / d
    mu = _central_variance(settings, gamma) * s / n
    if v == 0 and mu == 0:
        return 0.0

    def exponent(t: float) -> float:
        return t * t * v / 2 + mu * (math.cosh(t) - 1) - t * a

    def slope(t: float) -> float:
        return t * v + mu * math.sinh(t) - a

    highs = [a / v] if v > 0 else []
    if mu > 0:
        highs.append(math.asinh(a / mu))
    t_high = min(highs)  # slope(t_high) >= 0 and slope(0) = -a < 0
    t_best = t_high if slope(t_high) <= 0 else float(optimize.brentq(slope, 0.0, t_high))
    log_bound = math.log(2 * d) + exponent(t_best)
    return 1.0 if log_bound >= 0 else math.exp(log_bound)


# --------------------------------------------------------------------------- the mechanism


def secagg_params(bits: int) -> dict[str, Any]:
    """Return secagg's settings for residues mod ``2^bits`` (see DistributedDP.secagg_params)."""
    resolution = 2.0 ** (1 - _check_bits(bits))
    return {"clip": (1 << (bits - 1)) * resolution, "resolution": resolution,
            "clip_mode": "coordinate"}


class DistributedDP:
    """Both sides of the distributed Skellam mechanism for one run.

    Clients call :meth:`client_encode` and hand the result to ``secagg``/``secagg+``
    configured with :meth:`secagg_params` (every client with weight 1); the server turns
    the secure sum into integers (:meth:`residue_sum`) and calls :meth:`server_decode`,
    then divides by ``expected_clients`` (the fixed denominator of :mod:`fedpriv.dp.user`).
    Accounting: :meth:`round_variance` per round, :meth:`epsilon` over the rounds.
    """

    def __init__(self, settings: DistributedDPSettings, *, dim: int, expected_clients: int,
                 seed: int | None, secret: bytes | None = None) -> None:
        if not isinstance(settings, DistributedDPSettings):
            raise ConfigError(f"settings must be DistributedDPSettings, got "
                              f"{type(settings).__name__}")
        self.settings = settings
        self.dim = _count(dim, "the update's dimension", 1, "pass the length of the flat update")
        self.expected_clients = _count(expected_clients, "expected_clients", 1,
                                       "the number of clients summed per round")
        self.seed = seed
        self.secret = secret
        """The run's DP secret: noise and rounding keys derive from it (None: from ``seed``,
        the deterministic debugging mode, or fresh from the OS when that is None too)."""
        self.padded_dim = padded_dimension(self.dim)
        self.modulus = settings.modulus
        self.resolution = 2.0 ** (1 - settings.bits)
        """Secagg's fixed-point step r = 2/m: residues z ∈ [−m/2, m/2) travel as z·r ∈ [−1, 1)."""
        self.scale = choose_scale(settings, self.dim, self.expected_clients)
        self.l1_sensitivity, self.l2_sensitivity = sensitivities(settings, self.dim, self.scale)
        self.variance = _central_variance(settings, self.scale)
        """μ: the aggregate's Skellam variance per coordinate when every expected share arrives."""
        self.noise_scale = 1.0
        """Mutation testing of the audit only: scales the noise's standard deviation really
        added (see :attr:`fedpriv.dp.config.DPPlan.noise_scale`); accounting ignores it."""
        # The rotation is public (it need not be secret, only fixed before the updates are
        # known): from the secret when there is one (so a resumed run rotates alike), else
        # from the seed, else random; the server sends it to its clients.
        if secret is not None:
            self._rotation_salt = noise_seed(None, purpose=_ROTATION_PURPOSE,
                                             secret=secret)[:16].hex()
        else:
            self._rotation_salt = str(seed) if seed is not None else secrets.token_hex(16)
        self._signs_cache: tuple[int, np.ndarray] | None = None

    # ----------------------------------------------------------------- public parameters

    def secagg_params(self) -> dict[str, Any]:
        """Return the secagg settings under which the secure sum is exact and never clips.

        ``clip = (m/2)·r = 1.0`` per coordinate and ``resolution = r = 2^(1 − bits)``: every
        value ``z·r`` is a multiple of ``r`` (exact in float64), so stochastic rounding is the
        identity and the secure sum is the exact integer sum of the residues.
        """
        return secagg_params(self.settings.bits)

    def round_variance(self, survivors: int) -> float:
        """Return the aggregate's Skellam variance in a round where ``survivors`` shares arrived."""
        count = _count(survivors, "survivors", 0, "the clients whose input reached the sum")
        return self.variance * count / self.expected_clients

    def epsilon(self, round_variances: Sequence[float], delta: float, *,
                replace_one: bool = False) -> float:
        """Return the ε at ``delta`` over rounds of these variances (leave out empty rounds).

        ``replace_one``: for one client's data replaced (sensitivities doubled), the
        relation audit canaries inside existing clients realise.
        """
        factor = 2.0 if replace_one else 1.0
        return skellam_epsilon(round_variances, factor * self.l1_sensitivity,
                               factor * self.l2_sensitivity, delta)

    def wraparound_probability(self, clients: int | None = None) -> float:
        """Return the bound of :func:`wraparound_probability` for one round of this run."""
        return wraparound_probability(self.settings, self.dim, self.expected_clients,
                                      self.scale, clients=clients)

    # ----------------------------------------------------------------- rotation

    @property
    def rotation_salt(self) -> str:
        """The public salt of the rounds' rotations; clients and server must use the same one."""
        return self._rotation_salt

    def use_rotation_salt(self, salt: str) -> None:
        """Rotate with ``salt`` (the server's :attr:`rotation_salt`), e.g. on a remote client."""
        if not isinstance(salt, str) or not salt:
            raise ConfigError(f"the rotation salt must be a non-empty string; got {salt!r}")
        self._rotation_salt = salt
        self._signs_cache = None

    def _signs(self, round_index: int) -> np.ndarray:
        if self._signs_cache is not None and self._signs_cache[0] == round_index:
            return self._signs_cache[1]
        material = f"{_ROTATION_PURPOSE}|{self._rotation_salt}|{round_index}".encode()
        rng = np.random.default_rng(int.from_bytes(hashlib.sha256(material).digest(), "big"))
        signs = rng.integers(0, 2, size=self.padded_dim).astype(np.float64) * 2 - 1
        self._signs_cache = (round_index, signs)
        return signs

    def rotate(self, vector: np.ndarray, round_index: int) -> np.ndarray:
        """Return the round's rotation ``H·D·x/√d`` of a padded vector (length padded_dim)."""
        padded = self._padded(vector, self.padded_dim, "the vector to rotate")
        return hadamard_transform(self._signs(round_index) * padded)

    def unrotate(self, vector: np.ndarray, round_index: int) -> np.ndarray:
        """Return the inverse of :meth:`rotate`: ``D·H·y/√d``."""
        padded = self._padded(vector, self.padded_dim, "the vector to unrotate")
        return self._signs(round_index) * hadamard_transform(padded)

    @staticmethod
    def _padded(vector: np.ndarray, size: int, what: str) -> np.ndarray:
        array = np.asarray(vector)
        if array.shape != (size,) or not (np.issubdtype(array.dtype, np.floating)
                                          or np.issubdtype(array.dtype, np.integer)):
            raise ProtocolError(f"{what} must be a real 1-D vector of length {size}, got "
                                f"{array.dtype} of shape {array.shape}")
        return array.astype(np.float64, copy=False)

    # ----------------------------------------------------------------- client

    def _generators(self, round_index: int, client: int) -> tuple[np.random.Generator, ...]:
        key = noise_seed(self.seed, round_index, client, purpose=_NOISE_PURPOSE,
                         secret=self.secret)
        root = np.random.SeedSequence(int.from_bytes(key, "big"))
        rounding, noise = root.spawn(2)
        return (np.random.Generator(np.random.PCG64DXSM(rounding)),
                np.random.Generator(np.random.PCG64DXSM(noise)))

    def client_integers(self, update: np.ndarray, round_index: int,
                        client: int) -> tuple[np.ndarray, dict[str, float]]:
        """Return (the client's unreduced integers z + noise, int64 of padded_dim; stats).

        Clip to L2 ≤ clip, pad, rotate, divide by γ, round conditionally (norm ≤ Δ₂), add
        this client's Skellam share of variance μ/n.  Stats: ``update_norm`` (before
        clipping), ``clipped`` (1.0 if scaled down), ``rounding_tries``, ``rounded_norm``.
        """
        array = np.asarray(update)
        if array.ndim != 1 or array.shape[0] != self.dim or not (
                np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer)):
            raise ProtocolError(f"the update must be a real 1-D vector of length {self.dim}, got "
                                f"{array.dtype} of shape {array.shape}")
        values = np.zeros(self.padded_dim)
        values[: self.dim] = array
        norm = float(np.linalg.norm(values))
        if not math.isfinite(norm):
            raise ProtocolError("the update has non-finite values (NaN or ±inf); fix the local "
                                "training step or leave the client out of the round")
        clip = self.settings.clip
        if norm > clip:
            values *= clip / norm
        scaled = self.rotate(values, round_index) / self.scale
        rounding_rng, noise_rng = self._generators(round_index, client)
        integers, tries = conditional_round(scaled, self.l2_sensitivity, rounding_rng)
        rounded_norm = float(np.linalg.norm(integers.astype(np.float64)))
        rate = self.variance * self.noise_scale**2 / (2 * self.expected_clients)
        noise = (noise_rng.poisson(rate, self.padded_dim)
                 - noise_rng.poisson(rate, self.padded_dim))
        stats = {"update_norm": norm, "clipped": 1.0 if norm > clip else 0.0,
                 "rounding_tries": float(tries), "rounded_norm": rounded_norm}
        return integers + noise.astype(np.int64), stats

    def client_encode(self, update: np.ndarray, round_index: int,
                      client: int) -> tuple[np.ndarray, dict[str, float]]:
        """Return (what the client hands to secagg: float64 ``z·r``, length padded_dim; stats).

        :meth:`client_integers` reduced mod ``m`` into ``[−m/2, m/2)`` and multiplied by the
        resolution ``r`` (exact).  Noise key: ``noise_seed(seed, round, client,
        purpose="distributed-dp", secret=secret)`` — from the run's secret (from the
        public seed only in the deterministic debugging mode); numpy's
        Poisson sampler on it is not a CSPRNG (see the module docstring).
        """
        integers, stats = self.client_integers(update, round_index, client)
        residues = centred_mod(integers, self.modulus)
        return residues.astype(np.float64) * self.resolution, stats

    # ----------------------------------------------------------------- server

    def residue_sum(self, aggregate: np.ndarray, total_weight: float) -> np.ndarray:
        """Return the integer sum S' of the residues from secagg's mean ``aggregate``.

        Secagg returns ``Σ(z·r) / total_weight``; with weight 1 per client,
        ``S' = round(aggregate · total_weight / r)``.  Raises :class:`ProtocolError` when the
        values are not (near) integers: secagg was not run with :meth:`secagg_params` or the
        weights were not 1.
        """
        weight = positive_real(total_weight, "total_weight", "the secagg result's total weight")
        array = np.asarray(aggregate, dtype=np.float64)
        if array.shape != (self.padded_dim,) or not np.all(np.isfinite(array)):
            raise ProtocolError(f"the secagg aggregate must be {self.padded_dim} finite values, "
                                f"got shape {array.shape}")
        values = array * weight / self.resolution
        integers = np.rint(values)
        if np.any(np.abs(values - integers) > _RESIDUE_TOLERANCE):
            raise ProtocolError(
                "the secure sum is not a sum of integer residues: run secagg with "
                "DistributedDP.secagg_params() and every client's weight 1 (max_weight 1)")
        return integers.astype(np.int64)

    def server_decode(self, residue_sum: np.ndarray, round_index: int) -> np.ndarray:
        """Return the noised SUM of the clipped updates (float64, length dim) from S'.

        ``residue_sum`` is the integer sum of the clients' residues (int64, or float64
        holding integers), of length padded_dim.  Reduce mod m (centred), multiply by γ,
        rotate back, drop the padding.  Exact up to rounding when the true integer sum lies
        in ``[−m/2, m/2)`` (see :func:`wraparound_probability`).
        """
        array = np.asarray(residue_sum)
        if array.shape != (self.padded_dim,):
            raise ProtocolError(f"the residue sum must have {self.padded_dim} values, got shape "
                                f"{array.shape}")
        if np.issubdtype(array.dtype, np.floating):
            if not np.all(np.isfinite(array)) or np.any(array != np.rint(array)):
                raise ProtocolError("the residue sum must hold integers; convert secagg's mean "
                                    "with DistributedDP.residue_sum()")
        elif not np.issubdtype(array.dtype, np.integer):
            raise ProtocolError(f"the residue sum must be integers, got dtype {array.dtype}")
        reduced = centred_mod(array.astype(np.int64), self.modulus)
        decoded = self.unrotate(reduced.astype(np.float64) * self.scale, round_index)
        return decoded[: self.dim]
