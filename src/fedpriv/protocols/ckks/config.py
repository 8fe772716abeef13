"""The ``ckks`` protocol's configuration: public bounds, the precision target, parameter overrides.

Owns :class:`CKKSConfig`, a frozen dataclass validated at construction.  Every
field is public; the CKKS parameters (ring degree, coefficient moduli, scale,
flooding noise) are derived from it by :func:`fedpriv.protocols.ckks.params.choose_parameters`,
which :meth:`CKKSConfig.__post_init__` runs once so that a configuration that
cannot hold its precision fails here, loudly, with :class:`ConfigError`.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass
from typing import Any

from fedpriv.errors import ConfigError
from fedpriv.protocols.encoding import positive_real

POLY_MODULUS_DEGREES = (2048, 4096, 8192, 16384, 32768)
"""Ring degrees N the parameter search considers (powers of two; N/2 slots per ciphertext)."""


def _integer(value: Any, what: str, lo: int, hi: int, hint: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or not (
        lo <= int(value) <= hi
    ):
        raise ConfigError(f"ckks {what} must be an integer in [{lo}, {hi}]; got {value!r}. {hint}")
    return int(value)


@dataclass(frozen=True)
class CKKSConfig:
    """Parameters of ``ckks``: public bounds on the inputs, the precision target, overrides.

    The defaults keep every released entry of the weighted sum within ``2**-30``
    of the exact sum for up to 100 clients with entries in [−1, 1], with
    ``2**20``× noise flooding, at ring degree 4096 and an 80-bit ciphertext
    modulus (spec: ``protocols/ckks.md``).
    """

    clip: float = 1.0
    """Public bound on ``|Δ_i[j]|``: the client clips entries beyond ±clip (and counts them)."""
    max_weight: float = 1.0
    """Public upper bound on a client's FedAvg weight; weights are divided by it into (0, 1]."""
    max_clients: int = 100
    """The most clients whose ciphertexts one round may sum (bounds the sum for the modulus)."""
    min_clients: int = 2
    """The fewest contributors whose sum a key holder agrees to decrypt (1 releases one update)."""
    precision: float = 2.0**-30
    """Bound on the absolute error of every released entry of Σ w'·clip(Δ) (w.p. ≥ 1 − 2⁻⁴⁰)."""
    max_releases: int = 1000
    """The most releases a key set makes (each is a decryption query; ledger in CKKSKeys)."""
    key_holder: int | None = None
    """The only client that releases sums (no failover); ``None``: contributors in id order."""
    flood_bits: int = 20
    """k: the flooding noise has standard deviation 2^k × the decryption-error bound."""
    max_vector_size: int = 2**26
    """Public bound on the update length L (enters the union bound of the error tail)."""
    poly_modulus_degree: int | None = None
    """Ring degree N; ``None`` → the smallest that holds the moduli at 128-bit security."""
    coeff_mod_bit_sizes: tuple[int, ...] | None = None
    """Bit sizes of the data primes followed by the special prime; ``None`` → derived."""
    scale_bits: int | None = None
    """log2 of the CKKS scale Δ; ``None`` → the smallest that meets ``precision``."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "clip", positive_real(
            self.clip, "ckks clip", "Set it to a public bound on every entry of an update."))
        object.__setattr__(self, "max_weight", positive_real(
            self.max_weight, "ckks max_weight",
            "Set it to an upper bound on every client's FedAvg weight."))
        object.__setattr__(self, "precision", positive_real(
            self.precision, "ckks precision", "E.g. 2**-30, the error bound of the released sum."))
        if self.precision >= self.clip:
            raise ConfigError(
                f"ckks precision ({self.precision!r}) must be below clip ({self.clip!r}): an error "
                "as large as every entry leaves nothing of the update; lower precision."
            )
        object.__setattr__(self, "max_clients", _integer(
            self.max_clients, "max_clients", 1, 2**20, "Bound the number of clients per round."))
        object.__setattr__(self, "min_clients", _integer(
            self.min_clients, "min_clients", 1, self.max_clients,
            "It is the fewest contributors a key holder decrypts, at most max_clients."))
        object.__setattr__(self, "max_releases", _integer(
            self.max_releases, "max_releases", 1, 2**20,
            "It bounds the decryptions released under one key set (protocols/ckks.md)."))
        if self.key_holder is not None:
            object.__setattr__(self, "key_holder", _integer(
                self.key_holder, "key_holder", 0, 2**62,
                "It is the client id of the one client that releases sums, or None."))
        object.__setattr__(self, "flood_bits", _integer(
            self.flood_bits, "flood_bits", 0, 60,
            "E.g. 20: flooding noise 2^20 × the decryption-error bound (protocols/ckks.md)."))
        object.__setattr__(self, "max_vector_size", _integer(
            self.max_vector_size, "max_vector_size", 1, 2**40,
            "Set it to a bound on the flat update length."))
        if self.poly_modulus_degree is not None and (
            isinstance(self.poly_modulus_degree, bool)
            or self.poly_modulus_degree not in POLY_MODULUS_DEGREES
        ):
            raise ConfigError(
                f"ckks poly_modulus_degree must be one of {list(POLY_MODULUS_DEGREES)} or None "
                f"(chosen automatically); got {self.poly_modulus_degree!r}."
            )
        if self.coeff_mod_bit_sizes is not None:
            sizes = self.coeff_mod_bit_sizes
            if isinstance(sizes, (str, bytes)) or not hasattr(sizes, "__iter__"):
                raise ConfigError(
                    f"ckks coeff_mod_bit_sizes must be a sequence of prime bit sizes (data primes, "
                    f"then the special prime), e.g. (56, 24, 29); got {sizes!r}."
                )
            checked = tuple(
                _integer(b, "coeff_mod_bit_sizes entry", 17, 60,
                         "SEAL primes have 17 to 60 bits.") for b in sizes
            )
            if len(checked) < 2:
                raise ConfigError(
                    f"ckks coeff_mod_bit_sizes needs at least two primes (data primes, then the "
                    f"special prime that TenSEAL's key generation needs); got {checked}."
                )
            object.__setattr__(self, "coeff_mod_bit_sizes", checked)
        if self.scale_bits is not None:
            object.__setattr__(self, "scale_bits", _integer(
                self.scale_bits, "scale_bits", 1, 800, "It is log2 of the CKKS scale."))
        # Fail now, not at key generation, when the parameters cannot hold the precision.
        from fedpriv.protocols.ckks.params import choose_parameters

        choose_parameters(self)
