"""The server's side of a ``ckks`` round, and what it observed.

Owns :class:`CKKSServer` and :class:`CKKSServerView`.  The server holds only the
public context (:func:`~fedpriv.protocols.ckks.keys.load_public_context` refuses a
private one).  Phase 0: it checks every :class:`EncryptedUpdate` on its own
(round, key id, ciphertext count, every ciphertext, and the signature when it
knows the sender's verify key); a client whose upload fails drops out of the round
(recorded in the view's ``rejected``), the others go on.  It then forwards the
accepted signed uploads to the lowest-id contributor (or the configured
``key_holder``), which recomputes and releases their sum.  Phases 1–3: if the
asked key holder released, it checks the :class:`ReleasedSum`; if it did not
(it dropped, or its release was refused), the server asks the next contributor,
while phases remain.  ``finish`` divides the released weighted
sum by the released weight sum.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from fedpriv.errors import ProtocolError
from fedpriv.protocols.base import (
    SERVER_ID,
    ClientId,
    Message,
    RoundContext,
    ServerSession,
    ServerView,
    check_all_phases_run,
    readonly_array,
)
from fedpriv.protocols.ckks.client import NUM_PHASES, check_round_fits
from fedpriv.protocols.ckks.keys import CKKSPublicContext, load_public_context
from fedpriv.protocols.ckks.messages import DecryptRequest, EncryptedUpdate, ReleasedSum
from fedpriv.protocols.ckks.params import CKKSParameters
from fedpriv.protocols.ckks.signing import upload_digest, upload_statement
from fedpriv.protocols.ckks.stages import check_ciphertexts

if TYPE_CHECKING:
    from fedpriv.protocols.ckks.protocol import CKKSProtocol

logger = logging.getLogger(__name__)


@dataclass(frozen=True, eq=False)
class CKKSServerView(ServerView):
    """What the ``ckks`` server observed: ciphertexts, and the flooded, rounded weighted sum.

    ``individual_updates`` and ``individual_weights`` are ``None``; the transcript
    holds every :class:`EncryptedUpdate` (ciphertexts only) and the
    :class:`ReleasedSum`.
    """

    key_id: bytes = b""
    parameters: CKKSParameters | None = None
    """The public CKKS parameters (ring degree, moduli, scale, error budget)."""
    key_holders_asked: tuple[ClientId, ...] = ()
    """The contributors asked to decrypt, in order (later ones after earlier ones dropped)."""
    released_by: ClientId | None = None
    released_sum: np.ndarray | None = field(default=None, repr=False)
    """The released Σ w'·clip(Δ) (L entries) followed by Σ w'·clip, on the grid."""
    grid: float | None = None
    flood_std: float | None = None
    release_bound: float | None = None
    """Bound on |released − exact| per entry (w.p. ≥ 1 − 2⁻⁴⁰)."""
    rejected: tuple[tuple[ClientId, str], ...] = ()
    """Clients whose message the server refused (they dropped out), with the reason."""


class CKKSServer(ServerSession):
    """The server's side of one ``ckks`` round, holding only the public context."""

    num_phases = NUM_PHASES

    def __init__(
        self, protocol: CKKSProtocol, ctx: RoundContext, public: CKKSPublicContext
    ) -> None:
        self.ctx = ctx
        self.who = f"ckks server (round {ctx.round})"
        check_round_fits(protocol, ctx, self.who)
        if not isinstance(public, CKKSPublicContext):
            raise ProtocolError(
                f"{self.who} needs a CKKSPublicContext (CKKSKeys.public()); got "
                f"{type(public).__name__}."
            )
        self._context = load_public_context(public.context_bytes)
        self.key_id = public.key_id
        self.params = protocol.params
        self.min_clients = protocol.config.min_clients
        self.max_weight = protocol.config.max_weight
        self.key_holder = protocol.config.key_holder
        self.session_id = protocol.session_id
        self._signers = protocol.signers
        # Given explicit verify keys, the server refuses uploads of clients it has none for.
        self._verifies = bool(protocol.signers.verify_keys()) and not (
            protocol.signers.generate_missing)
        self.sizes = self.params.chunk_sizes(ctx.vector_size)
        self._phase = 0
        self._transcript: list[Message] = []
        self._contributors: tuple[ClientId, ...] = ()
        self._uploads: tuple[EncryptedUpdate, ...] = ()
        self._rejected: list[tuple[ClientId, str]] = []
        self._asked: list[ClientId] = []
        self._release: ReleasedSum | None = None
        self._result: tuple[np.ndarray, float, tuple[ClientId, ...]] | None = None

    def collect(
        self, phase: int, messages: Mapping[ClientId, Message]
    ) -> Mapping[ClientId, Message]:
        """Sum the uploads (phase 0), or take the key holder's release (phases 1–3)."""
        if phase != self._phase or phase >= NUM_PHASES:
            raise ProtocolError(
                f"{self.who} got collect(phase={phase}) but expects phase {self._phase}; phases "
                f"run once each, in order 0..{NUM_PHASES - 1}."
            )
        self._phase += 1
        for client_id in messages:
            if client_id not in self.ctx.participants:
                raise ProtocolError(
                    f"{self.who} got a message from client {client_id}, not a participant "
                    f"({list(self.ctx.participants)}); the transport delivered it wrongly."
                )
        if phase == 0:
            return self._collect_uploads(messages)
        return self._collect_release(phase, messages)

    @property
    def rejected(self) -> tuple[tuple[ClientId, str], ...]:
        """Clients whose message was refused so far (they dropped out), with the reason."""
        return tuple(self._rejected)

    # ------------------------------------------------------------ phase 0
    def _reject(self, client_id: ClientId, err: ProtocolError) -> None:
        """Record that ``client_id``'s message was refused: it drops out, the round goes on."""
        logger.warning("%s: client %s dropped: %s", self.who, client_id, err)
        self._rejected.append((client_id, str(err)))

    def _check_upload(self, client_id: ClientId, message: Message) -> EncryptedUpdate:
        if not isinstance(message, EncryptedUpdate) or message.sender != client_id:
            raise ProtocolError(
                f"{self.who} expected an EncryptedUpdate from client {client_id} in phase 0; got "
                f"{type(message).__name__} from sender {message.sender}."
            )
        if message.round != self.ctx.round:
            raise ProtocolError(
                f"{self.who}: client {client_id}'s EncryptedUpdate is of round {message.round}; "
                "a message replayed from another round is refused."
            )
        if message.key_id != self.key_id:
            raise ProtocolError(
                f"{self.who}: client {client_id} encrypted under another key set (key id "
                f"{message.key_id.hex()}, this federation's is {self.key_id.hex()}); its "
                "ciphertexts cannot be added. Give every client the federation's CKKSKeys."
            )
        if len(message.chunks) != len(self.sizes):
            raise ProtocolError(
                f"{self.who}: client {client_id} sent {len(message.chunks)} ciphertexts; an update "
                f"of {self.ctx.vector_size} entries (+ the weight slot) needs {len(self.sizes)} "
                f"of {self.params.slots} slots."
            )
        check_ciphertexts(self._context, message.chunks, self.sizes, self.params,
                          f"{self.who}: client {client_id}'s upload")
        if self._signers.knows(client_id) or self._verifies:
            statement = upload_statement(self.session_id, self.ctx.round, self.key_id, client_id,
                                         self.ctx.vector_size, len(message.chunks),
                                         upload_digest(message.chunks))
            self._signers.verify(client_id, statement, message.signature, self.who)
        return message

    def _collect_uploads(self, messages: Mapping[ClientId, Message]) -> dict[ClientId, Message]:
        self._transcript.extend(messages[c] for c in sorted(messages))
        accepted: list[EncryptedUpdate] = []
        for client_id in sorted(messages):
            try:
                accepted.append(self._check_upload(client_id, messages[client_id]))
            except ProtocolError as err:
                self._reject(client_id, err)
        self._uploads = tuple(accepted)
        self._contributors = tuple(u.sender for u in accepted)
        if not accepted:
            raise ProtocolError(
                f"{self.who}: no client's upload was accepted ({len(messages)} arrived, "
                f"{len(self._rejected)} refused, out of {len(self.ctx.participants)} "
                "participants); nothing to aggregate."
            )
        if len(accepted) < self.min_clients:
            raise ProtocolError(
                f"{self.who}: only {len(accepted)} client(s) uploaded valid ciphertexts, fewer "
                f"than min_clients={self.min_clients}; the round is aborted (no key holder "
                "decrypts so small a sum)."
            )
        return self._ask_next()

    def _ask_next(self) -> dict[ClientId, Message]:
        candidates = self._contributors if self.key_holder is None else tuple(
            c for c in self._contributors if c == self.key_holder)
        remaining = [c for c in candidates if c not in self._asked]
        if not remaining or self._phase >= NUM_PHASES:
            return {}
        holder = remaining[0]
        self._asked.append(holder)
        return {holder: DecryptRequest(SERVER_ID, self.ctx.round, self.key_id, self._uploads)}

    # ------------------------------------------------------------ phases 1-3
    def _collect_release(self, phase: int, messages: Mapping[ClientId, Message]) -> dict[
        ClientId, Message
    ]:
        holder = self._asked[-1] if self._asked and self._release is None else None
        self._transcript.extend(messages[c] for c in sorted(messages))
        for client_id in sorted(messages):
            message = messages[client_id]
            try:
                if client_id != holder or not isinstance(message, ReleasedSum):
                    raise ProtocolError(
                        f"{self.who}: unexpected {type(message).__name__} from client {client_id}"
                        f" in phase {phase} (key holder asked: {holder})."
                    )
                self._check_release(message)
            except ProtocolError as err:
                self._reject(client_id, err)
                continue
            self._release = message
        if self._release is not None or holder is None:
            return {}
        # The asked key holder dropped (or its release was refused): ask the next contributor.
        return self._ask_next()

    def _check_release(self, message: ReleasedSum) -> None:
        count = len(self._contributors)
        expected = self.params.grid_exponent(count)
        if message.round != self.ctx.round or message.key_id != self.key_id:
            raise ProtocolError(f"{self.who}: the ReleasedSum is of another round or key set.")
        if message.grid_exponent != expected or message.units.shape != (self.ctx.vector_size + 1,):
            raise ProtocolError(
                f"{self.who}: the ReleasedSum has grid 2^{message.grid_exponent} and "
                f"{message.units.shape[0]} values; expected grid 2^{expected} (for {count} "
                f"contributors) and {self.ctx.vector_size + 1} values."
            )

    # ------------------------------------------------------------ result
    def finish(self) -> tuple[np.ndarray, float, tuple[ClientId, ...]]:
        """Return (Σ w'Δ / Σ w', Σ w' · max_weight, contributors) from the released sum."""
        if self._result is not None:
            return self._result
        check_all_phases_run(self.who, self._phase, NUM_PHASES)
        if self._release is None:
            raise ProtocolError(
                f"{self.who}: no key holder released the sum: {self._asked} were asked in turn "
                f"and dropped before answering ({NUM_PHASES - 1} attempts); the round is aborted."
            )
        values = self._release.values()
        weight_slot = float(values[-1])
        count = len(self._contributors)
        if weight_slot <= self.params.release_bound(count):
            raise ProtocolError(
                f"{self.who}: the released weight sum {weight_slot:.3g} is not above its error "
                f"bound {self.params.release_bound(count):.3g}; the weights are too small for the "
                "precision (lower max_weight or raise precision)."
            )
        clip = self.params.clip
        aggregate = values[:-1] * (clip / weight_slot)
        total_weight = weight_slot / clip * self.max_weight
        self._result = (readonly_array(aggregate), total_weight, self._contributors)
        return self._result

    def view(self) -> CKKSServerView:
        """Return what the server observed (ciphertexts, the release, public parameters)."""
        aggregate, total_weight, survivors = self.finish()
        count = len(survivors)
        release = self._release
        return CKKSServerView(
            protocol="ckks",
            round=self.ctx.round,
            participants=self.ctx.participants,
            survivors=survivors,
            aggregate=aggregate,
            total_weight=total_weight,
            individual_updates=None,
            individual_weights=None,
            transcript=tuple(self._transcript),
            key_id=self.key_id,
            parameters=self.params,
            key_holders_asked=tuple(self._asked),
            released_by=None if release is None else release.sender,
            released_sum=None if release is None else readonly_array(release.values()),
            grid=self.params.grid(count),
            flood_std=self.params.flood_std(count),
            release_bound=self.params.release_bound(count),
            rejected=tuple(self._rejected),
        )
