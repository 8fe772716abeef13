"""CKKS key material: the clients' shared private context and the server's public one.

Owns the key-setup step of ``ckks`` (spec: ``protocols/ckks.md``, "Key
management").  :meth:`CKKSKeys.generate` makes one TenSEAL CKKS context with a
fresh secret key (SEAL's CSPRNG, seeded by the OS; no seed reaches it) and symmetric
(secret-key) encryption; every client gets that private context, out of band.
The server gets only :meth:`CKKSKeys.public`: the context serialized without any
key (TenSEAL's ``serialize(save_secret_key=False, ...)``), which is all it needs
to add ciphertexts, and a random public key id.  :func:`load_public_context` is
the server's only way in, and it refuses a context that holds a secret key
(``context.is_private()``).
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass, field

import tenseal as ts

from fedpriv.errors import ConfigError, ProtocolError
from fedpriv.protocols.ckks.ledger import ReleaseLedger
from fedpriv.protocols.ckks.params import CKKSParameters

KEY_ID_NBYTES = 16
"""Size of the public key id that every message carries."""


@dataclass(frozen=True)
class CKKSPublicContext:
    """What the server holds: the serialized public CKKS context and the key set's id."""

    context_bytes: bytes = field(repr=False)
    """A TenSEAL context serialized without secret, public, relinearization or Galois keys."""
    key_id: bytes
    """Random public label of the key set; messages under another key set are refused."""

    def __post_init__(self) -> None:
        if not isinstance(self.context_bytes, bytes) or not self.context_bytes:
            raise ProtocolError("CKKSPublicContext.context_bytes must be non-empty bytes.")
        check_key_id(self.key_id, "CKKSPublicContext.key_id")


def check_key_id(key_id: object, what: str) -> bytes:
    """Return ``key_id`` if it is :data:`KEY_ID_NBYTES` bytes; else raise :class:`ProtocolError`."""
    if not isinstance(key_id, bytes) or len(key_id) != KEY_ID_NBYTES:
        raise ProtocolError(
            f"{what} must be {KEY_ID_NBYTES} bytes (the key set's id); got {key_id!r}."
        )
    return key_id


def new_context(params: CKKSParameters) -> ts.Context:
    """Return a fresh private TenSEAL CKKS context for ``params`` (symmetric encryption).

    Raises :class:`ConfigError` when SEAL rejects the parameters (e.g. not enough
    primes of the requested sizes, or moduli beyond 128-bit security).
    """
    try:
        context = ts.context(
            ts.SCHEME_TYPE.CKKS,
            params.poly_modulus_degree,
            coeff_mod_bit_sizes=list(params.coeff_mod_bit_sizes),
            encryption_type=ts.ENCRYPTION_TYPE.SYMMETRIC,
        )
    except (ValueError, RuntimeError) as err:
        raise ConfigError(
            f"TenSEAL cannot build a CKKS context with N={params.poly_modulus_degree} and "
            f"coefficient moduli {list(params.coeff_mod_bit_sizes)}: {err}. Leave "
            "poly_modulus_degree and coeff_mod_bit_sizes to be chosen, or change them."
        ) from None
    context.global_scale = params.scale
    return context


def _public_bytes(context: ts.Context) -> bytes:
    return context.serialize(
        save_public_key=False, save_secret_key=False,
        save_galois_keys=False, save_relin_keys=False,
    )


def load_public_context(source: bytes | ts.Context) -> ts.Context:
    """Return the server's context from public bytes; refuse any context with a secret key.

    Raises :class:`ProtocolError` for bytes that are no TenSEAL context and, above
    all, for a context that holds the secret key: the server must never be able
    to decrypt an individual update.
    """
    if isinstance(source, ts.Context):
        context = source
    elif isinstance(source, bytes):
        try:
            context = ts.context_from(source)
        except (ValueError, RuntimeError, TypeError) as err:
            raise ProtocolError(
                f"the server's CKKS context does not parse ({err}); pass the bytes of "
                "CKKSKeys.public().context_bytes."
            ) from None
    else:
        raise ProtocolError(
            f"the server's CKKS context must be bytes or a tenseal.Context; got "
            f"{type(source).__name__}."
        )
    if context.is_private() or context.has_secret_key():
        raise ProtocolError(
            "the server was handed a CKKS context that holds the secret key: with it the server "
            "could decrypt every client's update. Give the server CKKSKeys.public() only "
            "(serialized with save_secret_key=False)."
        )
    return context


class CKKSKeys:
    """A federation's CKKS key set: every client's private context and the server's public part.

    Build it with :meth:`generate` (fresh keys) or :meth:`from_private_bytes`
    (the context a key holder distributed).  The secret key never appears in
    ``repr`` and is serialized only by :meth:`private_context_bytes`, for the
    out-of-band distribution to clients.
    """

    def __init__(
        self, params: CKKSParameters, context: ts.Context, key_id: bytes,
        *, ledger_path: str | os.PathLike[str] | None = None,
    ) -> None:
        if not isinstance(context, ts.Context) or not context.is_private():
            raise ProtocolError(
                "CKKSKeys needs a private TenSEAL context (with the secret key); for the server "
                "use CKKSKeys.public() and load_public_context()."
            )
        self.params = params
        self.key_id = check_key_id(key_id, "CKKSKeys key_id")
        self._context = context
        context.global_scale = params.scale
        self._public = CKKSPublicContext(_public_bytes(context), self.key_id)
        self.ledger = ReleaseLedger(self.key_id, ledger_path)
        """The budgets this holder of the secret key enforces (signed uploads, releases)."""

    def __repr__(self) -> str:
        return f"CKKSKeys(key_id={self.key_id.hex()}, {self.params.describe()})"

    @classmethod
    def generate(cls, params: CKKSParameters) -> CKKSKeys:
        """Return a fresh key set for ``params``: SEAL's random secret key, a random key id."""
        return cls(params, new_context(params), secrets.token_bytes(KEY_ID_NBYTES))

    @classmethod
    def from_private_bytes(
        cls, params: CKKSParameters, data: bytes, key_id: bytes,
        *, ledger_path: str | os.PathLike[str] | None = None,
    ) -> CKKSKeys:
        """Return the key set a client got out of band (bytes of :meth:`private_context_bytes`).

        ``ledger_path`` keeps the :class:`~fedpriv.protocols.ckks.ledger.ReleaseLedger`
        in a file: needed wherever the key set is loaded anew per message (a Flower
        ClientApp process), or the release budget would restart with each load.
        """
        try:
            context = ts.context_from(data)
        except (ValueError, RuntimeError, TypeError) as err:
            raise ProtocolError(f"the private CKKS context does not parse ({err}).") from None
        return cls(params, context, key_id, ledger_path=ledger_path)

    @property
    def private_context(self) -> ts.Context:
        """The context with the secret key: for clients (encrypt, and decrypt as key holder)."""
        return self._context

    def private_context_bytes(self) -> bytes:
        """Return the private context serialized WITH the secret key (for clients only)."""
        return self._context.serialize(
            save_public_key=False, save_secret_key=True,
            save_galois_keys=False, save_relin_keys=False,
        )

    def public(self) -> CKKSPublicContext:
        """Return what the server gets: the keyless context bytes and the key id."""
        return self._public


__all__ = ["KEY_ID_NBYTES", "CKKSKeys", "CKKSPublicContext", "load_public_context", "new_context"]
