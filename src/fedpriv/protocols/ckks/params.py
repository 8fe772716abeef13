"""CKKS parameter selection and error bounds: pure functions of the public configuration.

Owns :class:`CKKSParameters` (ring degree N, coefficient moduli, scale Δ, and the
error, flooding and grid of a release) and :func:`choose_parameters`, which
derives them from a :class:`~fedpriv.protocols.ckks.config.CKKSConfig`.  Nothing
here touches TenSEAL or a key; everything is a closed form that
``tests/protocols/test_ckks_params.py`` checks.  The derivation is spelled out in
``protocols/ckks.md`` ("Precision"); in short, for a sum of ``m`` fresh ciphertexts:

* decryption error of one slot: Gaussian (CLT over N coefficients) with standard
  deviation ``√m · σ_N / Δ``, ``σ_N = 1.25 · √(N/2 · (3.2² + 1/12))`` (SEAL's error
  σ = 3.2 plus the encoder's rounding, with a 25 % margin);
* ``error_bound(m) = τ · √m · σ_N / Δ``, where ``τ`` makes a Gaussian exceed it
  with probability ≤ 2⁻⁴⁰ over all ``L + 1`` slots of a release (union bound);
* flooding noise of standard deviation ``σ_f = 2^k · error_bound(m)``, rounding to
  the grid ``g = 2^⌊log2 σ_f⌋``, and a floating-point allowance ``V · N · 2⁻⁵²``;
* ``release_bound(m) = error_bound + τ·σ_f + g/2 + V·N·2⁻⁵² ≤ precision`` for every
  ``m ≤ max_clients``: this fixes the smallest Δ; the data modulus must then hold
  ``V · Δ`` (``V = max_clients · clip``) with a bit to spare, and N is the smallest
  ring degree whose 128-bit-security budget (SEAL's table) holds the moduli.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from fedpriv.errors import ConfigError

if TYPE_CHECKING:
    from fedpriv.protocols.ckks.config import CKKSConfig

SEAL_NOISE_STD = 3.2
"""Standard deviation of SEAL's (clipped) Gaussian encryption error."""
NOISE_MARGIN = 1.25
"""Safety factor on the predicted slot noise (measured within 2 % of the prediction)."""
FAILURE_BITS = 40
"""A release exceeds its error bound with probability at most 2^-FAILURE_BITS."""
MAX_COEFF_MODULUS_BITS = {1024: 27, 2048: 54, 4096: 109, 8192: 218, 16384: 438, 32768: 881}
"""SEAL's ``CoeffModulus::MaxBitCount`` for 128-bit classical security (HE standard)."""
MAX_PRIME_BITS = 60
"""SEAL's largest prime."""
DATA_PRIME_BITS = 56
"""Size of all but the last data prime when several are needed: 7 bytes after compression."""


def slot_noise_std(poly_modulus_degree: int) -> float:
    """Return σ_N: the std of one client's decryption error in a slot, in units of 1/Δ.

    The real part of a slot is Σ_i e_i·Re(ζ^i) over N coefficients; with error
    variance σ² = 3.2² and encoder rounding variance 1/12 per coefficient it has
    variance N/2 · (σ² + 1/12).  The result includes :data:`NOISE_MARGIN`.
    """
    return NOISE_MARGIN * math.sqrt(poly_modulus_degree / 2 * (SEAL_NOISE_STD**2 + 1 / 12))


def tail_factor(num_values: int, failure_bits: int = FAILURE_BITS) -> float:
    """Return τ with P(some of ``num_values`` N(0, 1) draws exceeds τ in size) ≤ 2^-failure_bits.

    From the Gaussian tail P(|X| > τ) ≤ 2·exp(−τ²/2) and a union bound:
    τ = √(2 · ln(2 · num_values · 2^failure_bits)).
    """
    return math.sqrt(2.0 * (math.log(2.0 * num_values) + failure_bits * math.log(2.0)))


def float_error(value_bound: float, poly_modulus_degree: int) -> float:
    """Return an allowance for double-precision rounding in encoding and decoding: V·N·2⁻⁵²."""
    return value_bound * poly_modulus_degree * 2.0**-52


def min_prime_bits(poly_modulus_degree: int) -> int:
    """Return the smallest prime size used: log2(2N) + 8 bits (enough primes ≡ 1 mod 2N)."""
    return (2 * poly_modulus_degree).bit_length() - 1 + 8


def split_data_bits(bits: int, poly_modulus_degree: int) -> tuple[int, ...]:
    """Return data-prime sizes whose sum is at least ``bits``, cheap to serialize.

    One prime up to 60 bits; otherwise 56-bit primes and a last one rounded up to
    a whole number of bytes (TenSEAL compresses each residue to about its byte
    length: 56 + 24 bits cost 11.0 bytes per coefficient, 40 + 40 or 60 + 20 cost 11.5).
    """
    low = min_prime_bits(poly_modulus_degree)
    if bits <= MAX_PRIME_BITS:
        return (max(bits, low),)
    count = math.ceil(bits / DATA_PRIME_BITS)
    rest = bits - DATA_PRIME_BITS * (count - 1)
    last = min(DATA_PRIME_BITS, 8 * math.ceil(max(low, rest) / 8))
    return (DATA_PRIME_BITS,) * (count - 1) + (last,)


@dataclass(frozen=True)
class CKKSParameters:
    """The public CKKS parameters of a federation and the error budget of a release."""

    poly_modulus_degree: int
    """Ring degree N: a ciphertext holds N/2 slots."""
    coeff_mod_bit_sizes: tuple[int, ...]
    """Data primes, then the special prime (used only by key generation)."""
    scale_bits: int
    """log2 Δ: values are encoded as round(Δ · x)."""
    clip: float
    """Public bound on every encrypted value (weighted entries and the weight slot)."""
    max_clients: int
    flood_bits: int
    """k: σ_f = 2^k · error_bound(m)."""
    tail: float
    """τ of :func:`tail_factor` for ``max_vector_size + 1`` values."""
    precision: float
    """The target that :meth:`release_bound` meets for every m ≤ max_clients."""
    max_vector_size: int

    @property
    def slots(self) -> int:
        """Values per ciphertext: N/2."""
        return self.poly_modulus_degree // 2

    @property
    def data_primes(self) -> tuple[int, ...]:
        """Bit sizes of the primes a ciphertext is stored under (all but the special prime)."""
        return self.coeff_mod_bit_sizes[:-1]

    @property
    def data_bits(self) -> int:
        """Bits of the ciphertext modulus (sum of the data primes)."""
        return sum(self.data_primes)

    @property
    def scale(self) -> float:
        """Δ = 2^scale_bits."""
        return 2.0**self.scale_bits

    @property
    def value_bound(self) -> float:
        """V = max_clients · clip: no slot of a sum exceeds it in size."""
        return self.max_clients * self.clip

    @property
    def noise_std(self) -> float:
        """One client's decryption-error std in a slot, in value units: σ_N / Δ."""
        return slot_noise_std(self.poly_modulus_degree) / self.scale

    def error_bound(self, contributors: int) -> float:
        """Return E(m) = τ·√m·σ_N/Δ: bounds every slot's decryption error w.p. ≥ 1 − 2⁻⁴⁰."""
        return self.tail * math.sqrt(contributors) * self.noise_std

    def flood_std(self, contributors: int) -> float:
        """Return σ_f = 2^k · E(m): the std of the noise added before a release."""
        return 2.0**self.flood_bits * self.error_bound(contributors)

    def grid_exponent(self, contributors: int) -> int:
        """Return e with g = 2^e = 2^⌊log2 σ_f⌋ ∈ (σ_f/2, σ_f]: the public release grid."""
        return math.floor(math.log2(self.flood_std(contributors)))

    def grid(self, contributors: int) -> float:
        """Return the release grid g = 2^grid_exponent(m)."""
        return 2.0 ** self.grid_exponent(contributors)

    def release_bound(self, contributors: int) -> float:
        """Return the bound on |released − exact| of every slot of a sum of m ciphertexts."""
        flood = self.flood_std(contributors)
        return (
            self.error_bound(contributors)
            + self.tail * flood
            + self.grid(contributors) / 2
            + float_error(self.value_bound, self.poly_modulus_degree)
        )

    def chunk_sizes(self, vector_size: int) -> tuple[int, ...]:
        """Return the slot counts of the ciphertexts of an update of ``vector_size`` (+ weight)."""
        values = vector_size + 1
        full, rest = divmod(values, self.slots)
        return (self.slots,) * full + ((rest,) if rest else ())

    def describe(self) -> str:
        """Return a one-line summary, e.g. for logs and reports."""
        return (
            f"N={self.poly_modulus_degree} ({self.slots} slots), coeff moduli "
            f"{list(self.coeff_mod_bit_sizes)} bits ({self.data_bits}-bit ciphertexts), "
            f"scale 2^{self.scale_bits}, flooding 2^{self.flood_bits} × error bound, "
            f"release bound {self.release_bound(self.max_clients):.3g} at "
            f"{self.max_clients} clients"
        )


def _flood_factor(flood_bits: int, tail: float) -> float:
    """Return the release bound over E(m), less the float allowance: 1 + 2^k (τ + ½)."""
    return 1.0 + 2.0**flood_bits * (tail + 0.5)


def _required_data_bits(scale_bits: int, value_bound: float) -> int:
    """Return the ciphertext-modulus bits that hold V·Δ in (−q/2, q/2) with a bit to spare."""
    return math.ceil(scale_bits + max(math.log2(value_bound), 0.0) + 2.0)


def choose_parameters(config: CKKSConfig) -> CKKSParameters:
    """Return the smallest CKKS parameters that meet ``config.precision`` at 128-bit security.

    Raises :class:`ConfigError` when no ring degree (or the one configured) can
    hold the precision: the scale it needs times the value bound must fit the
    ciphertext modulus, which SEAL's security table caps per degree.
    """
    tail = tail_factor(config.max_vector_size + 1)
    value_bound = config.max_clients * config.clip
    factor = _flood_factor(config.flood_bits, tail)
    degrees = (
        (config.poly_modulus_degree,) if config.poly_modulus_degree is not None
        else tuple(MAX_COEFF_MODULUS_BITS)[1:]
    )
    needs: list[str] = []
    for degree in degrees:
        budget = config.precision - float_error(value_bound, degree)
        if budget <= 0:
            raise ConfigError(
                f"ckks precision {config.precision:.3g} is below the double-precision floor "
                f"{float_error(value_bound, degree):.3g} of encoding {value_bound:g} at "
                f"N={degree}; raise precision or lower max_clients · clip."
            )
        noise = math.sqrt(config.max_clients) * slot_noise_std(degree)
        min_scale_bits = math.log2(tail * noise * factor / budget)
        scale_bits = math.ceil(min_scale_bits)
        if config.scale_bits is not None:
            if config.scale_bits < min_scale_bits:
                raise ConfigError(
                    f"ckks scale 2^{config.scale_bits} cannot reach precision "
                    f"{config.precision:.3g} with {config.flood_bits} flood bits and "
                    f"{config.max_clients} clients at N={degree}: it needs a scale of at least "
                    f"2^{min_scale_bits:.2f}; raise scale_bits or leave it None."
                )
            scale_bits = config.scale_bits
        needed = _required_data_bits(scale_bits, value_bound)
        if config.coeff_mod_bit_sizes is not None:
            sizes = config.coeff_mod_bit_sizes
            if sum(sizes[:-1]) < needed:
                raise ConfigError(
                    f"ckks coeff_mod_bit_sizes {list(sizes)} give a {sum(sizes[:-1])}-bit "
                    f"ciphertext modulus, which cannot hold values up to max_clients · clip = "
                    f"{value_bound:g} at scale 2^{scale_bits}: it needs {needed} bits of data "
                    "primes (all but the last); add data primes or lower the precision."
                )
        else:
            data = split_data_bits(needed, degree)
            room = MAX_COEFF_MODULUS_BITS[degree] - sum(data)
            sizes = (*data, max(min_prime_bits(degree), min(MAX_PRIME_BITS, room)))
        total = sum(sizes)
        if total > MAX_COEFF_MODULUS_BITS[degree]:
            needs.append(f"N={degree} allows {MAX_COEFF_MODULUS_BITS[degree]} bits, "
                         f"{list(sizes)} need {total}")
            continue
        return CKKSParameters(
            poly_modulus_degree=degree,
            coeff_mod_bit_sizes=tuple(sizes),
            scale_bits=scale_bits,
            clip=config.clip,
            max_clients=config.max_clients,
            flood_bits=config.flood_bits,
            tail=tail,
            precision=config.precision,
            max_vector_size=config.max_vector_size,
        )
    raise ConfigError(
        f"no CKKS ring degree holds precision {config.precision:.3g} for {config.max_clients} "
        f"clients with clip {config.clip:g} and {config.flood_bits} flood bits at 128-bit "
        f"security ({'; '.join(needs)}); lower the precision, clip, max_clients or flood_bits, "
        "or leave poly_modulus_degree / coeff_mod_bit_sizes to be chosen."
    )


__all__ = [
    "CKKSParameters",
    "choose_parameters",
    "float_error",
    "slot_noise_std",
    "split_data_bits",
    "tail_factor",
]
