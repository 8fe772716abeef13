"""Gaussian noise drawn from a cryptographic PRG, for the DP mechanisms of fedpriv.

DP noise is secret in the same way a mask is: whoever knows it can subtract it.
So the noise of user-level DP comes from AES-256-CTR (the keystream of
:func:`fedpriv.protocols.crypto.expand_mask`), turned into standard normals with
the Box–Muller transform on 53-bit uniforms, never from ``numpy.random``.

Audits need reproducible runs, so :func:`noise_seed` derives the 32-byte key
from the run's public seed and the round; that noise is reproducible and
therefore *not* secret from someone who knows the seed.  A deployment passes
``seed=None`` and gets a fresh key from the OS.  Floating-point attacks on
textbook samplers (Mironov 2012; Jin et al. 2022) are out of scope here: the
noise is added to a float32 vector whose quantisation already dominates.
"""

from __future__ import annotations

import hashlib
import math

import numpy as np

from fedpriv.errors import ConfigError
from fedpriv.protocols.crypto import expand_mask, random_seed

_UNIFORM_SCALE = 2.0**-53


def noise_seed(seed: int | None, *context: int, purpose: str = "user-dp") -> bytes:
    """Return a 32-byte noise key from ``(seed, *context)``; a random one when ``seed`` is None.

    ``purpose`` separates the streams of different mechanisms that share a seed.
    """
    if seed is None:
        return random_seed()
    material = f"fedpriv-dp-noise|{purpose}|{seed}|" + "|".join(str(c) for c in context)
    return hashlib.sha256(material.encode()).digest()


def gaussian(key: bytes, size: int, std: float) -> np.ndarray:
    """Return ``size`` independent N(0, std²) float64 values from the AES-CTR stream of ``key``."""
    if not (math.isfinite(std) and std >= 0):
        raise ConfigError(f"noise standard deviation must be finite and >= 0, got {std}")
    if size == 0:
        return np.zeros(0)
    pairs = (size + 1) // 2
    words = expand_mask(key, 2 * pairs, bits=64)
    # 53-bit uniforms in (0, 1]: (k + 1) / 2^53 never hits 0, so log() is finite.
    uniforms = ((words >> np.uint64(11)).astype(np.float64) + 1.0) * _UNIFORM_SCALE
    radius = np.sqrt(-2.0 * np.log(uniforms[:pairs]))
    angle = 2.0 * math.pi * uniforms[pairs:]
    normals = np.concatenate([radius * np.cos(angle), radius * np.sin(angle)])[:size]
    return normals * std
