"""Gaussian noise drawn from a cryptographic PRG, for the DP mechanisms of fedpriv.

DP noise is secret in the same way a mask is: whoever knows it can subtract it.
So the noise of user-level DP comes from AES-256-CTR (the keystream of
:func:`fedpriv.protocols.crypto.expand_mask`), turned into standard normals with
the Box–Muller transform on 53-bit uniforms, never from ``numpy.random``.

:func:`noise_seed` derives each 32-byte key from the run's secret
(:mod:`fedpriv.dp.secret`: 32 bytes from the OS, kept beside the checkpoint,
never in a report) with HMAC-SHA-256, so a resumed run redraws the same noise
and nobody without the secret can.  Only the explicit deterministic debugging
mode (``dp_params.deterministic``) derives keys from the public seed instead:
that noise is reproducible by anyone holding the report, and such a run says so
in its privacy block.  With neither, every key is fresh from the OS.  Floating-point attacks on
textbook samplers (Mironov 2012; Jin et al. 2022) are out of scope here: the
noise is added to a float32 vector whose quantisation already dominates.
"""

from __future__ import annotations

import hashlib
import hmac
import math

import numpy as np

from fedpriv.errors import ConfigError
from fedpriv.protocols.crypto import expand_mask, random_seed

_UNIFORM_SCALE = 2.0**-53


def noise_seed(
    seed: int | None, *context: int, purpose: str = "user-dp", secret: bytes | None = None,
) -> bytes:
    """Return a 32-byte key for ``(purpose, *context)``.

    With ``secret`` (the run's DP secret): ``HMAC-SHA-256(secret, purpose ‖ context)``,
    secret from anyone without it.  Without it: derived from the public ``seed``
    (deterministic debugging mode: known to anyone who knows the seed), or a fresh
    key from the OS when ``seed`` is None.  ``purpose`` separates the streams of
    different mechanisms and draws.
    """
    label = f"{purpose}|" + "|".join(str(c) for c in context)
    if secret is not None:
        return hmac.new(secret, b"fedpriv-dp-key|" + label.encode(), hashlib.sha256).digest()
    if seed is None:
        return random_seed()
    material = f"fedpriv-dp-noise|{purpose}|{seed}|" + "|".join(str(c) for c in context)
    return hashlib.sha256(material.encode()).digest()


def key_generator(key: bytes) -> np.random.Generator:
    """Return a numpy generator (PCG64DXSM) seeded with all 256 bits of ``key``.

    numpy's generators are not cryptographic; the key is secret, which is what DP
    needs of sampling (nobody can tell who was drawn without the key).
    """
    return np.random.Generator(np.random.PCG64DXSM(int.from_bytes(key, "big")))


def torch_seed(key: bytes) -> int:
    """Return a 63-bit seed for a ``torch.Generator`` from ``key``."""
    return int.from_bytes(key[:8], "big") >> 1


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
