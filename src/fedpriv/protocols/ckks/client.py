"""The client's side of a ``ckks`` round: encrypt the weighted update, and release a sum if asked.

Owns :class:`CKKSClient`.  In phase 0 it clips its update to ±clip, weights it by
``w' = w / max_weight``, streams it into CKKS ciphertexts (the weight ``w'·clip``
rides in the slot after the last entry) and signs the upload (session, round, key
id, its id, L, SHA-256 of the ciphertexts) with Ed25519 — once per round, as its
key set's :class:`~fedpriv.protocols.ckks.ledger.ReleaseLedger` enforces.  Later,
if the server picks it as key holder, it checks the :class:`DecryptRequest`,
verifies every forwarded upload's signature, **recomputes the sum itself** from
them (it never decrypts a ciphertext the server made), decrypts, refuses
out-of-range results, floods and rounds, and returns a :class:`ReleasedSum` —
once per round and within the key set's release budget.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING

import numpy as np

from fedpriv.errors import ProtocolError
from fedpriv.protocols.base import (
    SERVER_ID,
    ClientId,
    ClientInput,
    ClientSession,
    Message,
    RoundContext,
    check_client_input,
    check_phase,
)
from fedpriv.protocols.ckks.messages import DecryptRequest, EncryptedUpdate, ReleasedSum
from fedpriv.protocols.ckks.signing import upload_digest, upload_statement
from fedpriv.protocols.ckks.stages import (
    check_decrypted,
    clipped_chunks,
    decrypt_sum,
    encrypt_chunks,
    flood_and_round,
)

if TYPE_CHECKING:
    from fedpriv.protocols.ckks.protocol import CKKSProtocol

NUM_PHASES = 4
"""Phase 0 uploads; phases 1–3 each give one key holder the chance to release the sum."""


def check_round_fits(protocol: CKKSProtocol, ctx: RoundContext, who: str) -> None:
    """Raise :class:`ProtocolError` if ``ctx`` exceeds the public bounds the keys were made for."""
    params = protocol.params
    if ctx.vector_size > params.max_vector_size:
        raise ProtocolError(
            f"{who}: the update has {ctx.vector_size} entries, more than the configured "
            f"max_vector_size={params.max_vector_size}; raise it (new keys) for this model."
        )
    if len(ctx.participants) > params.max_clients:
        raise ProtocolError(
            f"{who}: {len(ctx.participants)} participants exceed max_clients="
            f"{params.max_clients}, which the ciphertext modulus is sized for; sample fewer "
            "clients or raise max_clients (new keys)."
        )


class CKKSClient(ClientSession):
    """One client's side of a ``ckks`` round (it holds the federation's private context)."""

    def __init__(
        self, protocol: CKKSProtocol, client_id: ClientId, ctx: RoundContext, data: ClientInput
    ) -> None:
        check_client_input(client_id, ctx, data)
        self.client_id = client_id
        self.ctx = ctx
        self.who = f"ckks client {client_id} (round {ctx.round})"
        check_round_fits(protocol, ctx, self.who)
        config = protocol.config
        self._weight = data.weight / config.max_weight
        if self._weight > 1.0:
            raise ProtocolError(
                f"client {client_id}'s weight {data.weight!r} exceeds the configured public "
                f"max_weight={config.max_weight!r}; set max_weight to an upper bound on every "
                "client's FedAvg weight (e.g. the largest client's number of examples)."
            )
        self._protocol = protocol
        self._data = data
        self._next_phase = 0
        self._released = False
        self._own_digest: bytes | None = None
        self._stats = {"clipped_values": 0.0, "ciphertexts": 0.0, "encrypt_s": 0.0,
                       "sign_s": 0.0, "verify_s": 0.0, "decrypt_s": 0.0, "released": 0.0}

    def __repr__(self) -> str:
        return f"CKKSClient(client_id={self.client_id}, round={self.ctx.round})"

    def stats(self) -> Mapping[str, float]:
        """Clipped entries, ciphertexts, seconds (encrypt, sign, verify, decrypt), 1.0 if released.

        ``decrypt_s`` is the whole release (checks, signature verification, the
        recomputed sum, decryption, flooding); ``verify_s`` is its checking part.
        """
        return dict(self._stats)

    def handle(self, phase: int, inbox: Message | None) -> Message | None:
        """Phase 0: return the :class:`EncryptedUpdate`; later: release the sum if asked."""
        check_phase(self.who, phase, self._next_phase, NUM_PHASES)
        self._next_phase += 1
        if phase == 0:
            if inbox is not None:
                raise ProtocolError(f"{self.who} got a {type(inbox).__name__} before phase 0.")
            return self._encrypt()
        if inbox is None:
            return None
        if not isinstance(inbox, DecryptRequest) or inbox.sender != SERVER_ID:
            raise ProtocolError(
                f"{self.who} expected a DecryptRequest from the server or nothing; got "
                f"{type(inbox).__name__} from sender {inbox.sender}."
            )
        return self._release(inbox)

    # ------------------------------------------------------------ phase 0
    def _encrypt(self) -> EncryptedUpdate:
        start = time.perf_counter()
        protocol = self._protocol
        params = protocol.params
        keys = protocol.keys
        sizes = params.chunk_sizes(self.ctx.vector_size)
        # Refuse a re-run of a round before anything is encrypted or signed.
        keys.ledger.record_upload(protocol.session_id, self.ctx.round, self.client_id, self.who)

        def values() -> Iterator[np.ndarray]:
            for chunk, clipped in clipped_chunks(self._data.update, self._weight, params.clip,
                                                 sizes):
                self._stats["clipped_values"] += clipped
                yield chunk

        chunks = tuple(encrypt_chunks(keys.private_context, values(), params.scale))
        self._stats["ciphertexts"] = float(len(chunks))
        self._stats["encrypt_s"] = time.perf_counter() - start
        start = time.perf_counter()
        digest = upload_digest(chunks)
        statement = upload_statement(protocol.session_id, self.ctx.round, keys.key_id,
                                     self.client_id, self.ctx.vector_size, len(chunks), digest)
        signature = protocol.signers.sign(self.client_id, statement)
        self._own_digest = digest
        self._stats["sign_s"] = time.perf_counter() - start
        return EncryptedUpdate(self.client_id, self.ctx.round, keys.key_id, chunks, signature)

    # ------------------------------------------------------------ key holder
    def _check_request(self, request: DecryptRequest) -> tuple[int, ...]:
        """Check everything but the signatures; return the round's chunk sizes."""
        protocol = self._protocol
        config = protocol.config
        if request.round != self.ctx.round:
            raise ProtocolError(
                f"{self.who} got a DecryptRequest of round {request.round}: a request replayed "
                "from another round is refused."
            )
        if request.key_id != protocol.keys.key_id:
            raise ProtocolError(f"{self.who} got a DecryptRequest under another key set.")
        if config.key_holder is not None and config.key_holder != self.client_id:
            raise ProtocolError(
                f"{self.who} is not the federation's key holder (key_holder="
                f"{config.key_holder}) and refuses to release anything."
            )
        if self._released:
            raise ProtocolError(
                f"{self.who} was asked to decrypt twice in one round; a second, independently "
                "flooded release of the same sum would weaken the flooding. Refused."
            )
        contributors = request.contributors
        if (
            list(contributors) != sorted(set(contributors))
            or not set(contributors) <= set(self.ctx.participants)
            or self.client_id not in contributors
        ):
            raise ProtocolError(
                f"{self.who}: the DecryptRequest names contributors {list(contributors)}, which "
                "must be sorted, unique participants including this key holder."
            )
        if len(contributors) < config.min_clients:
            raise ProtocolError(
                f"{self.who} refuses to decrypt a sum of {len(contributors)} client(s), fewer "
                f"than min_clients={config.min_clients}: it would reveal their updates."
            )
        sizes = protocol.params.chunk_sizes(self.ctx.vector_size)
        for upload in request.uploads:
            if (upload.round, upload.key_id) != (self.ctx.round, protocol.keys.key_id):
                raise ProtocolError(
                    f"{self.who}: client {upload.sender}'s forwarded upload is of round "
                    f"{upload.round} or another key set; refused."
                )
            if len(upload.chunks) != len(sizes):
                raise ProtocolError(
                    f"{self.who}: client {upload.sender}'s forwarded upload has "
                    f"{len(upload.chunks)} ciphertexts; the round's update needs {len(sizes)}."
                )
        return sizes

    def _verify_uploads(self, request: DecryptRequest) -> None:
        """Raise unless every forwarded upload carries its sender's signature for this round."""
        protocol = self._protocol
        for upload in request.uploads:
            digest = upload_digest(upload.chunks)
            if upload.sender == self.client_id and digest != self._own_digest:
                raise ProtocolError(
                    f"{self.who}: the upload forwarded as this key holder's own is not the one it "
                    "sent; refused."
                )
            statement = upload_statement(protocol.session_id, self.ctx.round,
                                         protocol.keys.key_id, upload.sender,
                                         self.ctx.vector_size, len(upload.chunks), digest)
            protocol.signers.verify(upload.sender, statement, upload.signature, self.who)

    def _release(self, request: DecryptRequest) -> ReleasedSum:
        start = time.perf_counter()
        sizes = self._check_request(request)
        self._verify_uploads(request)
        protocol = self._protocol
        # Counted before decrypting: a release that then fails still spends the budget.
        protocol.keys.ledger.record_release(protocol.session_id, self.ctx.round,
                                            protocol.config.max_releases, self.who)
        self._released = True
        self._stats["verify_s"] = time.perf_counter() - start
        params = protocol.params
        contributors = len(request.contributors)
        uploads = [(u.sender, u.chunks) for u in request.uploads]
        raw = np.concatenate(list(decrypt_sum(
            protocol.keys.private_context, uploads, sizes, params, self.who)))
        check_decrypted(raw, params, contributors, self.who)
        exponent = params.grid_exponent(contributors)
        units = flood_and_round(raw, params.flood_std(contributors), exponent)
        del raw
        self._stats["decrypt_s"] = time.perf_counter() - start
        self._stats["released"] = 1.0
        return ReleasedSum(self.client_id, self.ctx.round, request.key_id, exponent, units)
