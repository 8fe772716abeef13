"""Overflow-safe fixed-point encoding of float updates into words mod ``2^bits``.

Secure aggregation sums integers in a ring ``Z_{2^bits}`` (Bonawitz et al. 2017,
§3; Bell et al. 2020), so each client's float update is clipped, quantized to a
multiple of ``resolution`` and written as a two's-complement word.  This module
owns that encoding and its inverse for a *sum*:

- :class:`FixedPointSpec` picks the word size from the clip bound, the resolution
  and the most clients a sum may hold, and refuses a spec that would need more
  than 64 bits: the signed sum of ``max_clients`` encoded vectors never wraps
  around, *by construction* (an overflow would silently corrupt the aggregate,
  since the server only ever sees the sum mod ``2^bits``).
- :func:`encode` clips (:func:`clip_vector`), then rounds *stochastically* and
  unbiasedly (floor, plus one step with probability equal to the fractional part),
  so the decoded sum is an unbiased estimate of the clipped sum; its error per
  coordinate is below ``num_summands · resolution`` (:func:`quantization_bound`).
  The rounding randomness comes from a caller-passed ``numpy.random.Generator``;
  it is not secret (masks, which are, come from :mod:`fedpriv.protocols.crypto`).
- :func:`decode_sum` maps a sum of words back to floats; :func:`add_words` and
  :func:`sum_words` take sums in the ring.

Pure functions around a small frozen spec; nothing here holds state.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

import numpy as np

from fedpriv.errors import ConfigError, ProtocolError

__all__ = [
    "CLIP_MODES",
    "MAX_LEVEL_LIMIT",
    "EncodeStats",
    "FixedPointSpec",
    "add_words",
    "clip_vector",
    "decode_sum",
    "encode",
    "quantization_bound",
    "sum_words",
    "word_dtype",
]

CLIP_MODES = ("l2", "coordinate")
"""``"l2"``: scale the whole vector down to L2 norm ≤ clip; ``"coordinate"``: clip each entry."""

MAX_LEVEL_LIMIT = 2**52
"""Most quantization levels per coordinate: beyond it float64 cannot resolve one step."""


def word_dtype(bits: int) -> np.dtype:
    """Return the dtype of ``bits``-bit words: ``uint32`` if ``bits ≤ 32``, else ``uint64``."""
    if isinstance(bits, bool) or not isinstance(bits, numbers.Integral) or not 1 <= bits <= 64:
        raise ConfigError(
            f"bits must be an integer in [1, 64]; got {bits!r}. Use FixedPointSpec.bits."
        )
    return np.dtype(np.uint32) if bits <= 32 else np.dtype(np.uint64)


def positive_real(value: Any, what: str, hint: str) -> float:
    """Return ``value`` as a finite float > 0, or raise ConfigError naming ``what``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ConfigError(f"{what} must be a real number; got {value!r}. {hint}")
    number = float(value)
    if not math.isfinite(number) or number <= 0.0:
        raise ConfigError(f"{what} must be finite and > 0; got {number!r}. {hint}")
    return number


@dataclass(frozen=True)
class FixedPointSpec:
    """How float updates become ``bits``-bit words, sized so that a sum never wraps.

    Derived at construction (and validated, raising :class:`ConfigError`):
    ``value_bound = clip`` (every coordinate satisfies ``|x_i| ≤ clip`` after
    clipping, in both modes), ``max_level = ceil(clip / resolution) + 1``
    (stochastic rounding may round up one step), ``bits`` = the smallest ``k`` with
    ``2^(k−1) > max_clients · max_level`` (so the signed two's-complement sum of
    ``max_clients`` words never wraps) and ``modulus = 2^bits``.
    """

    clip: float
    """The bound, > 0: on the L2 norm (mode ``"l2"``) or on ``|coordinate|`` (``"coordinate"``)."""
    resolution: float
    """The quantization step, e.g. ``2**-20``; > 0."""
    max_clients: int
    """The most summands the ring must hold without wrapping; ≥ 1."""
    clip_mode: str = "coordinate"
    """One of :data:`CLIP_MODES`."""
    value_bound: float = field(init=False)
    """Bound on ``|coordinate|`` after clipping (= ``clip`` in both modes)."""
    max_level: int = field(init=False)
    """Bound on ``|encoded integer|`` of one coordinate of one client."""
    bits: int = field(init=False)
    """Word size in bits, 3 ≤ bits ≤ 64."""
    modulus: int = field(init=False)
    """``2**bits``: sums are taken mod this."""

    def __post_init__(self) -> None:
        fix = "Choose a larger resolution, a smaller clip, or fewer clients per sum."
        clip = positive_real(
            self.clip, "FixedPointSpec.clip", "Pass the clip bound of the update, e.g. 1.0."
        )
        resolution = positive_real(
            self.resolution, "FixedPointSpec.resolution",
            "Pass the quantization step, e.g. 2**-20.",
        )
        if isinstance(self.max_clients, bool) or not isinstance(self.max_clients, numbers.Integral):
            raise ConfigError(
                f"FixedPointSpec.max_clients must be an integer; got {self.max_clients!r}. "
                "Pass the number of clients in a round."
            )
        max_clients = int(self.max_clients)
        if max_clients < 1:
            raise ConfigError(
                f"FixedPointSpec.max_clients must be >= 1; got {max_clients}. "
                "Pass the number of clients in a round."
            )
        if self.clip_mode not in CLIP_MODES:
            raise ConfigError(
                f"FixedPointSpec.clip_mode must be one of {list(CLIP_MODES)}; "
                f"got {self.clip_mode!r}."
            )
        # Exact rational arithmetic: a float quotient could round ceil() down by one.
        max_level = math.ceil(Fraction(clip) / Fraction(resolution)) + 1
        bits = (max_clients * max_level).bit_length() + 1
        if bits > 64:
            raise ConfigError(
                f"FixedPointSpec needs {bits}-bit words, more than 64: the sum of "
                f"max_clients={max_clients} values of up to max_level={max_level} quantization "
                f"steps (ceil(clip={clip!r} / resolution={resolution!r}) + 1) plus a sign bit "
                f"needs {bits} bits. {fix}"
            )
        if max_level > MAX_LEVEL_LIMIT:
            raise ConfigError(
                f"FixedPointSpec: clip={clip!r} / resolution={resolution!r} gives "
                f"max_level={max_level} > 2^52 quantization steps, finer than float64 can "
                f"represent; use resolution >= clip / 2^52 ({clip / 2**52:.3g})."
            )
        object.__setattr__(self, "clip", clip)
        object.__setattr__(self, "resolution", resolution)
        object.__setattr__(self, "max_clients", max_clients)
        object.__setattr__(self, "value_bound", clip)
        object.__setattr__(self, "max_level", max_level)
        object.__setattr__(self, "bits", bits)
        object.__setattr__(self, "modulus", 1 << bits)

    @property
    def word_dtype(self) -> np.dtype:
        """``uint32`` if ``bits ≤ 32``, else ``uint64``."""
        return word_dtype(self.bits)

    def explain(self) -> str:
        """Return one line saying how :attr:`bits` was derived from the spec."""
        total = self.max_clients * self.max_level
        return (
            f"bits={self.bits}: max_level = ceil(clip {self.clip!r} / resolution "
            f"{self.resolution!r}) + 1 = {self.max_level}; max_clients {self.max_clients} × "
            f"max_level = {total} < 2^{self.bits - 1}, plus a sign bit → {self.bits}-bit words "
            f"in {self.word_dtype} (modulus 2^{self.bits})."
        )


@dataclass(frozen=True)
class EncodeStats:
    """What clipping did to one vector (never silent)."""

    clipped: int
    """Coordinate mode: how many coordinates were clipped; l2 mode: the vector's size if
    its norm was scaled down, else 0."""
    scaled_norm: bool
    """l2 mode: whether the vector was scaled down; always ``False`` in coordinate mode."""
    original_norm: float
    """The L2 norm of the input before clipping."""


def _as_floats(x: Any, what: str) -> np.ndarray:
    """Return ``x`` as a float64 array (no copy if it already is one); refuse non-numbers."""
    array = np.asarray(x)
    if array.dtype == np.bool_ or not (
        np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer)
    ):
        raise ProtocolError(
            f"{what} must be a real-valued numeric array; got dtype {array.dtype}. "
            "Pass the flat update as a float array."
        )
    return array.astype(np.float64, copy=False)


def _finite_norm(values: np.ndarray, what: str) -> float:
    """Return ``‖values‖₂`` (as ``np.linalg.norm`` computes it); raise if any entry is not finite.

    The squared norm doubles as the finiteness check: a sum of squares is finite only
    if every entry is, so the per-entry scan runs only when it is not (a NaN or ±inf
    entry, or finite entries whose squares overflow).
    """
    flat = values.ravel()
    sqnorm = float(flat.dot(flat)) if flat.size else 0.0
    if not math.isfinite(sqnorm):
        finite = np.isfinite(flat)
        if not finite.all():
            count = int(flat.size - np.count_nonzero(finite))
            raise ProtocolError(
                f"{what} contains {count} non-finite value(s) (NaN or ±inf) out of {flat.size}; "
                "fix or clip the local training step before encoding, or leave the client out."
            )
    return math.sqrt(sqnorm)


def clip_vector(x: np.ndarray, spec: FixedPointSpec) -> tuple[np.ndarray, EncodeStats]:
    """Return a float64 copy of ``x`` clipped as ``spec`` says, and what clipping did.

    Mode ``"coordinate"`` clips each entry to ``[-clip, clip]``; mode ``"l2"`` scales
    the vector by ``clip / ‖x‖₂`` when its norm exceeds ``clip``.  Either way every
    returned coordinate satisfies ``|x_i| ≤ spec.value_bound``.  Non-finite input
    raises :class:`ProtocolError`.
    """
    values = _as_floats(x, "the vector to clip")
    norm = _finite_norm(values, "the vector to clip")
    bound = spec.value_bound
    if spec.clip_mode == "coordinate":
        clipped = int(np.count_nonzero(np.abs(values) > bound))
        return np.clip(values, -bound, bound), EncodeStats(clipped, False, norm)
    if norm > spec.clip:
        scaled = values * (spec.clip / norm)
        # A no-op in exact arithmetic; guards |x_i| ≤ clip against float rounding.
        np.clip(scaled, -bound, bound, out=scaled)
        return scaled, EncodeStats(int(values.size), True, norm)
    return values.copy(), EncodeStats(0, False, norm)


# encode works block by block so that its float64 temporaries (4 × 256 KiB) stay in
# L2 instead of streaming a dozen full-length arrays through memory.
_ENCODE_BLOCK = 1 << 15


def _check_out(out: Any, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    if not isinstance(out, np.ndarray) or out.dtype != dtype or out.shape != shape:
        raise ConfigError(
            f"out must be a {dtype} array of shape {shape} (the input's shape, "
            f"FixedPointSpec.word_dtype); got {getattr(out, 'dtype', type(out).__name__)} "
            f"of shape {getattr(out, 'shape', None)}."
        )
    if not (out.flags.c_contiguous and out.flags.writeable):
        raise ConfigError("out must be C-contiguous and writeable (e.g. a slice of np.empty).")
    return out


def encode(
    x: np.ndarray,
    spec: FixedPointSpec,
    rng: np.random.Generator,
    *,
    out: np.ndarray | None = None,
) -> tuple[np.ndarray, EncodeStats]:
    """Clip, quantize and encode ``x`` as words mod ``2^spec.bits``; return them and the clip stats.

    Each clipped coordinate ``v`` becomes ``floor(v / resolution) + B`` with
    ``B ~ Bernoulli(frac(v / resolution))`` drawn from ``rng`` (unbiased stochastic
    rounding; this randomness is not secret), then its two's complement mod
    ``2^bits`` in ``spec.word_dtype``.  The output has the shape of ``x``; ``out``,
    if given, is a C-contiguous writeable array of that shape and dtype that
    receives the words (and is returned).  Non-finite entries raise
    :class:`ProtocolError` naming how many there are.

    The words equal those of the textbook whole-array computation
    (``clip_vector``, divide, ``floor``, ``rng.random(x.shape) < frac``, two's
    complement) bit for bit, for the same ``rng`` state: the same float64
    operations run on blocks of the vector, and the rounding draws are taken in
    order, one float64 per coordinate.
    """
    if not isinstance(spec, FixedPointSpec):
        raise ConfigError(f"spec must be a FixedPointSpec; got {type(spec).__name__}.")
    if not isinstance(rng, np.random.Generator):
        raise ConfigError(
            f"rng must be a numpy.random.Generator (e.g. np.random.default_rng(seed)); "
            f"got {type(rng).__name__}."
        )
    values = _as_floats(x, "the vector to clip")
    dtype = spec.word_dtype
    words = (
        np.empty(values.shape, dtype=dtype) if out is None else _check_out(out, values.shape, dtype)
    )
    flat = values.ravel()
    norm = _finite_norm(flat, "the vector to clip")
    bound, resolution = spec.value_bound, spec.resolution
    coordinate = spec.clip_mode == "coordinate"
    l2_factor = spec.clip / norm if not coordinate and norm > spec.clip else None
    clipped = flat.size if l2_factor is not None else 0
    # Signed view of the output: a level's int32/int64 representation is its two's
    # complement mod 2^32/2^64, and the AND below reduces it mod 2^bits.
    unsigned = words.reshape(-1)
    signed = unsigned.view(np.int32 if dtype.itemsize == 4 else np.int64)
    low_bits = dtype.type(spec.modulus - 1) if spec.bits < dtype.itemsize * 8 else None
    block = max(1, min(flat.size, _ENCODE_BLOCK))
    scaled_buf, levels_buf, draws_buf = (np.empty(block) for _ in range(3))
    up_buf = np.empty(block, dtype=np.bool_)
    for start in range(0, flat.size, block):
        stop = min(start + block, flat.size)
        source, scaled = flat[start:stop], scaled_buf[: stop - start]
        levels, draws = levels_buf[: stop - start], draws_buf[: stop - start]
        up = up_buf[: stop - start]
        if l2_factor is not None:
            np.multiply(source, l2_factor, out=scaled)
            # A no-op in exact arithmetic; guards |x_i| ≤ clip against float rounding.
            np.clip(scaled, -bound, bound, out=scaled)
            source = scaled
        elif coordinate and (source.min() < -bound or source.max() > bound):
            clipped += int(np.count_nonzero(np.abs(source) > bound))
            np.clip(source, -bound, bound, out=scaled)
            source = scaled
        np.divide(source, resolution, out=scaled)
        np.floor(scaled, out=levels)
        frac = np.subtract(scaled, levels, out=scaled)
        rng.random(out=draws)
        np.less(draws, frac, out=up)
        np.add(levels, up, out=levels)
        # No-op by construction (|v| ≤ clip ⇒ |level| ≤ max_level); keeps the no-wrap
        # invariant independent of float corner cases.
        np.clip(levels, -spec.max_level, spec.max_level, out=levels)
        np.copyto(signed[start:stop], levels, casting="unsafe")
        if low_bits is not None:
            target = unsigned[start:stop]
            np.bitwise_and(target, low_bits, out=target)
    return words, EncodeStats(clipped, l2_factor is not None, norm)


def add_words(acc: np.ndarray, words: np.ndarray, *, bits: int) -> None:
    """Add ``words`` to ``acc`` in place, mod ``2^bits`` (both of ``word_dtype(bits)``)."""
    dtype = word_dtype(bits)
    if not isinstance(acc, np.ndarray) or acc.dtype != dtype or not acc.flags.writeable:
        raise ConfigError(f"acc must be a writeable {dtype} array (word_dtype({bits})).")
    if not isinstance(words, np.ndarray) or words.dtype != dtype or words.shape != acc.shape:
        raise ProtocolError(
            f"words must be a {dtype} array of shape {acc.shape}; got "
            f"{getattr(words, 'dtype', type(words).__name__)} of shape "
            f"{getattr(words, 'shape', None)}. Every client must encode with the same spec."
        )
    np.add(acc, words, out=acc)
    if bits < dtype.itemsize * 8:
        np.bitwise_and(acc, dtype.type((1 << bits) - 1), out=acc)


# sum_words adds every vector's block into one accumulator block that stays in cache,
# so each input is read from memory once and the accumulator is written once.
_SUM_BLOCK = 1 << 16


def sum_words(
    vectors: Sequence[np.ndarray], *, bits: int
) -> tuple[np.ndarray, tuple[int, ...]]:
    """Return the sum mod ``2^bits`` of the ``vectors`` whose words all lie in ``Z_{2^bits}``.

    ``vectors`` are 1-D arrays of ``word_dtype(bits)``, all of one length.  A vector
    with a word ``≥ 2^bits`` (when ``bits`` is below the word size) is left out of
    the sum, and its index is returned with the others left out, in order: the
    caller decides what to do with the sender.  The returned sum is a fresh array,
    reduced mod ``2^bits``.

    Wrapping ``uint`` additions with one ``AND`` at the end equal adding mod
    ``2^bits`` at every step, because ``2^bits`` divides the word modulus; the range
    check is an OR of each block, taken while the block is in cache for the sum.
    """
    dtype = word_dtype(bits)
    if not vectors:
        raise ConfigError("sum_words needs at least one vector.")
    for index, words in enumerate(vectors):
        if not isinstance(words, np.ndarray) or words.dtype != dtype or words.ndim != 1:
            raise ProtocolError(
                f"sum_words: vector {index} must be a 1-D {dtype} array (word_dtype({bits})); "
                f"got {getattr(words, 'dtype', type(words).__name__)} of shape "
                f"{getattr(words, 'shape', None)}."
            )
    length = vectors[0].shape[0]
    for index, words in enumerate(vectors):
        if words.shape[0] != length:
            raise ProtocolError(
                f"sum_words: vector {index} has {words.shape[0]} words, vector 0 has {length}; "
                "every client must encode with the same spec."
            )
    total = np.zeros(length, dtype=dtype)
    checked = bits < dtype.itemsize * 8
    high = [0] * len(vectors)  # OR of every word of each vector
    for start in range(0, length, _SUM_BLOCK):
        block = total[start : start + _SUM_BLOCK]
        for index, words in enumerate(vectors):
            part = words[start : start + _SUM_BLOCK]
            np.add(block, part, out=block)
            if checked:
                high[index] |= int(np.bitwise_or.reduce(part))
    left_out = tuple(index for index, bits_set in enumerate(high) if bits_set >> bits)
    for index in left_out:  # exact: wrapping arithmetic is a group
        np.subtract(total, vectors[index], out=total)
    if checked:
        np.bitwise_and(total, dtype.type((1 << bits) - 1), out=total)
    return total, left_out


def decode_sum(words: np.ndarray, spec: FixedPointSpec) -> np.ndarray:
    """Return the float64 value of a sum of encoded vectors (taken mod ``2^spec.bits``).

    Each word, reduced mod ``2^bits``, is read as a signed two's-complement integer
    and multiplied by ``resolution``.  Exact as long as at most ``spec.max_clients``
    vectors were summed (up to float64 rounding of the product).
    """
    if not isinstance(spec, FixedPointSpec):
        raise ConfigError(f"spec must be a FixedPointSpec; got {type(spec).__name__}.")
    array = np.asarray(words)
    if not np.issubdtype(array.dtype, np.unsignedinteger):
        raise ProtocolError(
            f"decode_sum needs unsigned integer words (the ring sum); got dtype {array.dtype}. "
            f"Sum the encode() outputs as {spec.word_dtype} arrays mod 2^{spec.bits}."
        )
    unsigned = array.astype(np.uint64)
    if spec.bits < 64:
        # Two's complement in bits bits: v ↦ ((v + 2^(bits−1)) mod 2^bits) − 2^(bits−1),
        # so words ≥ 2^(bits−1) become negative (everything fits int64 as bits ≤ 63).
        half = np.uint64(1 << (spec.bits - 1))
        np.add(unsigned, half, out=unsigned)
        np.bitwise_and(unsigned, np.uint64(spec.modulus - 1), out=unsigned)
        signed = unsigned.view(np.int64)
        np.subtract(signed, np.int64(half), out=signed)
    else:
        signed = unsigned.view(np.int64)
    return signed.astype(np.float64) * spec.resolution


def quantization_bound(spec: FixedPointSpec, num_summands: int) -> float:
    """Return the most ``|decoded sum − true clipped sum|`` per coordinate: ``n · resolution``.

    Stochastic rounding moves each summand by less than one step, so ``n`` summands
    are off by less than ``n`` steps (up to float64 rounding).  ``num_summands``
    must be in ``[0, spec.max_clients]``: beyond it the sum may wrap.
    """
    if isinstance(num_summands, bool) or not isinstance(num_summands, numbers.Integral):
        raise ConfigError(f"num_summands must be an integer; got {num_summands!r}.")
    if not 0 <= num_summands <= spec.max_clients:
        raise ConfigError(
            f"num_summands must be in [0, max_clients={spec.max_clients}]; got {num_summands}. "
            "A sum of more vectors may wrap around; build the spec with a larger max_clients."
        )
    return int(num_summands) * spec.resolution
