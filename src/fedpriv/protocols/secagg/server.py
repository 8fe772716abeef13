"""The server's side of a SecAgg / SecAgg+ round, and what it observed.

Owns :class:`SecAggServer`, which checks and routes the clients' messages,
drops clients whose neighbourhood falls below ``t``, aborts a round whose
survivors are not connected in the masking graph, forwards the consistency
signatures, reconstructs the secrets it is entitled to (dropping a share
holder whose shares are bad when enough good ones remain) and removes the
masks; and :class:`SecAggServerView`, the server's observation (transcript
and reconstructed secrets) handed to attacks.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING

import numpy as np

from fedpriv.errors import ProtocolError
from fedpriv.protocols import crypto
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
from fedpriv.protocols.encoding import decode_sum, sum_words
from fedpriv.protocols.secagg.messages import (
    AdvertiseKeys,
    ConsistencyProof,
    ConsistencySignature,
    KeyDirectory,
    MaskedInput,
    RoutedShares,
    ShareKeys,
    SurvivorList,
    UnmaskShares,
    _verify_advertisement,
    _verify_consistency,
)
from fedpriv.protocols.secagg.stages import (
    KEY_NBYTES,
    MASK_INFO,
    NUM_PHASES,
    pairwise_sign,
    self_mask_commitment,
    x25519_public,
)
from fedpriv.protocols.secagg_graph import components
from fedpriv.protocols.shamir import reconstruct_verified

if TYPE_CHECKING:
    from fedpriv.protocols.secagg.protocol import SecAggFamily

logger = logging.getLogger(__name__)


@dataclass(frozen=True, eq=False)
class SecAggServerView(ServerView):
    """What a SecAgg / SecAgg+ server observed, including every secret it reconstructed."""

    threshold: int
    """``t``: shares needed per secret."""
    degree: int
    """Neighbours per client (``n − 1`` for secagg)."""
    bits: int
    """Word size of the masked vectors."""
    graph_seed: bytes | None
    """The SecAgg+ graph seed, the hash of the advertised keys (``None`` for secagg)."""
    neighbours: Mapping[ClientId, frozenset[ClientId]]
    """The public masking graph."""
    advertised: tuple[ClientId, ...]
    """Clients whose keys were accepted and distributed (U1)."""
    shared: tuple[ClientId, ...]
    """Clients whose shares were accepted and routed (U2)."""
    signed_by: tuple[ClientId, ...]
    """Survivors whose consistency check was accepted and forwarded (U4)."""
    unmasked_by: tuple[ClientId, ...]
    """Survivors whose unmasking response was used (U5)."""
    self_mask_seeds: Mapping[ClientId, bytes] = field(repr=False)
    """Reconstructed ``b_j`` of every survivor (the server legitimately learns them)."""
    mask_private_keys: Mapping[ClientId, bytes] = field(repr=False)
    """Reconstructed ``s_j^SK`` of every client that dropped after sharing its keys."""
    rejected: Mapping[ClientId, str]
    """Client → why the server discarded one of its messages (it then counts as dropped)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("neighbours", "self_mask_seeds", "mask_private_keys", "rejected"):
            object.__setattr__(self, name, MappingProxyType(dict(getattr(self, name))))

    @property
    def masked_inputs(self) -> dict[ClientId, np.ndarray]:
        """The masked vectors the server received, by sender (from the transcript)."""
        return {m.sender: m.masked for m in self.transcript if isinstance(m, MaskedInput)}

    @property
    def dropped_after_share_keys(self) -> tuple[ClientId, ...]:
        """Clients whose mask key the server reconstructed (shared keys, no masked input used)."""
        return tuple(sorted(self.mask_private_keys))



class SecAggServer(ServerSession):
    """The server's side of a SecAgg / SecAgg+ round (honest-but-curious: it follows the protocol).

    A message that fails the server's checks is discarded, the reason kept in
    ``view().rejected``, and its sender counts as dropped from that phase on; the
    round goes on if enough clients remain, else raises :class:`ProtocolError`.
    An unmasking share that does not reconstruct the committed secret is dropped
    with every share its holder sent, when ``t`` good ones remain.
    """

    num_phases = NUM_PHASES

    def __init__(self, protocol: SecAggFamily, ctx: RoundContext) -> None:
        self.ctx = ctx
        self.plan = protocol.plan(ctx)
        self._protocol = protocol
        # SecAgg+: the graph seed is the hash of the advertised keys, known after phase 0.
        self.graph_seed: bytes | None = None
        self.graph: dict[ClientId, frozenset[ClientId]] = {}
        self._phase = 0
        self._transcript: list[Message] = []
        self._rejected: dict[ClientId, str] = {}
        self._advertised: dict[ClientId, AdvertiseKeys] = {}  # U1
        self._directory: dict[ClientId, frozenset[ClientId]] = {}  # i → ids in its directory
        self._shared: dict[ClientId, ShareKeys] = {}  # U2
        self._routed: dict[ClientId, frozenset[ClientId]] = {}  # i → senders routed to i
        self._masked: dict[ClientId, MaskedInput] = {}  # U3
        self._masked_sum: np.ndarray | None = None  # Σ of U3's masked inputs, mod 2^bits
        self._announced: dict[ClientId, frozenset[ClientId]] = {}
        self._signed: dict[ClientId, ConsistencySignature] = {}  # U4
        self._proved: set[ClientId] = set()  # clients sent t matching signatures
        self._unmasked: dict[ClientId, UnmaskShares] = {}  # U5
        self._self_mask_seeds: dict[ClientId, bytes] = {}
        self._mask_keys: dict[ClientId, bytes] = {}
        self._result: tuple[np.ndarray, float, tuple[ClientId, ...]] | None = None

    def __repr__(self) -> str:
        return f"SecAggServer(round={self.ctx.round}, phase={self._phase})"

    @property
    def who(self) -> str:
        """``"<protocol> server (round r)"``, for error messages."""
        return f"{self._protocol.name} server (round {self.ctx.round})"

    @property
    def rejected(self) -> Mapping[ClientId, str]:
        """Client → why the server discarded one of its messages so far."""
        return MappingProxyType(self._rejected)

    def _reject(self, client_id: ClientId, reason: str) -> None:
        self._rejected.setdefault(client_id, reason)
        logger.warning("%s discards client %s: %s", self.who, client_id, reason)

    def _accept(
        self, phase: int, client_id: ClientId, message: Message, expected: type[Message]
    ) -> bool:
        if client_id not in self.ctx.participants or message.sender != client_id:
            self._reject(client_id, f"phase {phase}: message from a non-participant or a "
                         f"sender ({message.sender}) other than the client")
            return False
        if not isinstance(message, expected):
            self._reject(client_id, f"phase {phase}: expected {expected.__name__}, got "
                         f"{type(message).__name__}")
            return False
        message_round = getattr(message, "round", None)
        if message_round != self.ctx.round:
            self._reject(client_id, f"phase {phase}: {expected.__name__} of round "
                         f"{message_round} replayed in round {self.ctx.round}")
            return False
        return True

    def collect(
        self, phase: int, messages: Mapping[ClientId, Message]
    ) -> Mapping[ClientId, Message]:
        """Check and store the clients' phase-``phase`` messages; return the replies."""
        if phase != self._phase:
            raise ProtocolError(
                f"{self.who} got collect(phase={phase}) but expects phase {self._phase}; "
                f"phases run once each, in order 0..{NUM_PHASES - 1}."
            )
        self._phase += 1
        self._transcript.extend(messages.values())
        handler = (self._collect_keys, self._collect_shares, self._collect_masked,
                   self._collect_consistency, self._collect_unmask)[phase]
        return handler(messages)

    def _thin(
        self, members: set[ClientId], circle: Callable[[ClientId], frozenset[ClientId]]
    ) -> None:
        """Drop from ``members``, to a fixpoint, clients with < t members in their ``circle``."""
        t = self.plan.threshold
        while True:
            thin = {c for c in members if len(circle(c) & members) < t}
            if not thin:
                return
            for c in sorted(thin):
                self._reject(c, f"fewer than t={t} clients of its neighbourhood remain")
            members -= thin

    # ------------------------------------------------------------ phase 0
    def _collect_keys(self, messages: Mapping[ClientId, Message]) -> dict[ClientId, Message]:
        candidates: dict[ClientId, AdvertiseKeys] = {}
        verify_keys = self._protocol.verify_keys
        for client_id, message in messages.items():
            if not self._accept(0, client_id, message, AdvertiseKeys):
                continue
            keys: AdvertiseKeys = message  # type: ignore[assignment]
            if not (isinstance(keys.c_pk, bytes) and isinstance(keys.s_pk, bytes)) or (
                len(keys.c_pk) != KEY_NBYTES or len(keys.s_pk) != KEY_NBYTES
            ):
                self._reject(client_id, "phase 0: public keys are not 32 bytes each")
                continue
            if keys.c_pk == keys.s_pk:
                self._reject(client_id, "phase 0: the same public key for both purposes")
                continue
            if verify_keys is not None:
                try:
                    _verify_advertisement(keys, verify_keys, self._protocol.session_id, self.who)
                except ProtocolError as err:
                    self._reject(client_id, f"phase 0: {err}")
                    continue
            candidates[client_id] = keys
        owners: dict[bytes, list[ClientId]] = {}
        for client_id, keys in candidates.items():
            for public_key in {keys.c_pk, keys.s_pk}:
                owners.setdefault(public_key, []).append(client_id)
        for clients in owners.values():
            if len(clients) > 1:
                for c in clients:
                    self._reject(c, f"phase 0: advertised a public key also advertised by "
                                 f"client(s) {sorted(set(clients) - {c})}")
                    candidates.pop(c, None)
        members = set(candidates)
        t = self.plan.threshold
        if len(members) < t:
            raise ProtocolError(
                f"{self.who}: only {len(members)} of {len(self.ctx.participants)} clients "
                f"advertised valid keys, fewer than the threshold t={t}; the round is aborted. "
                "Select more clients, or lower threshold / min_threshold."
            )
        self._check_minimum(len(members), "advertised valid keys")
        roster = tuple(candidates[c] for c in sorted(candidates))
        self.graph_seed = self._protocol.graph_seed(self.ctx, roster)
        self.graph = self._protocol.graph(self.ctx, self.graph_seed)
        self._thin(members, self._closed_neighbourhood)
        if len(members) < t:
            raise ProtocolError(
                f"{self.who}: after phase 0 no neighbourhood keeps t={t} clients with keys; "
                "the round is aborted (too many dropouts)."
            )
        self._advertised = {c: candidates[c] for c in sorted(members)}
        # Every client gets every accepted advertisement (it recomputes the graph seed
        # from them), and shares with its neighbours among them; clients thinned out
        # above get no directory, so they never share and count as dropped.
        replies: dict[ClientId, Message] = {}
        for client_id in self._advertised:
            self._directory[client_id] = self._closed_neighbourhood(client_id) & frozenset(
                candidates
            )
            replies[client_id] = KeyDirectory(SERVER_ID, self.ctx.round, roster, self.graph_seed)
        return replies

    def _check_minimum(self, count: int, what: str) -> None:
        minimum = self.plan.min_participants
        if count < minimum:
            raise ProtocolError(
                f"{self.who}: only {count} client(s) {what}, fewer than the {minimum} every "
                "client accepts (min_participants, or t); the round is aborted."
            )

    def _closed_neighbourhood(self, client_id: ClientId) -> frozenset[ClientId]:
        return self.graph[client_id] | {client_id}

    # ------------------------------------------------------------ phase 1
    def _collect_shares(self, messages: Mapping[ClientId, Message]) -> dict[ClientId, Message]:
        accepted: dict[ClientId, ShareKeys] = {}
        for client_id, message in messages.items():
            if not self._accept(1, client_id, message, ShareKeys):
                continue
            shares: ShareKeys = message  # type: ignore[assignment]
            if client_id not in self._directory:
                self._reject(client_id, "phase 1: sent shares without having been sent keys")
                continue
            expected = self._directory[client_id] - {client_id}
            recipients = set(shares.ciphertexts)
            if recipients != expected:
                self._reject(
                    client_id,
                    f"phase 1: shares addressed to {sorted(recipients)} instead of its "
                    f"neighbours with keys {sorted(expected)} (outside the graph or missing)",
                )
                continue
            if not all(isinstance(ct, bytes) for ct in shares.ciphertexts.values()) or not (
                isinstance(shares.self_mask_commitment, bytes)
                and len(shares.self_mask_commitment) == 32
            ):
                self._reject(client_id, "phase 1: malformed ciphertexts or commitment")
                continue
            accepted[client_id] = shares
        members = set(accepted)
        t = self.plan.threshold
        if len(members) >= t:
            self._thin(members, lambda c: self._directory[c])
        if len(members) < t:
            raise ProtocolError(
                f"{self.who}: only {len(members)} client(s) shared their keys (of "
                f"{len(self._advertised)} with keys), fewer than the threshold t={t}; "
                "the round is aborted."
            )
        self._shared = {c: accepted[c] for c in sorted(members)}
        replies: dict[ClientId, Message] = {}
        for recipient in self._shared:
            routed = tuple(
                (sender, self._shared[sender].ciphertexts[recipient])
                for sender in sorted(self._directory[recipient] & members)
                if sender != recipient
            )
            self._routed[recipient] = frozenset(sender for sender, _ in routed)
            replies[recipient] = RoutedShares(SERVER_ID, self.ctx.round, routed)
        return replies

    # ------------------------------------------------------------ phase 2
    def _collect_masked(self, messages: Mapping[ClientId, Message]) -> dict[ClientId, Message]:
        spec = self.plan.spec
        length = self.ctx.vector_size + 1
        for client_id, message in messages.items():
            if not self._accept(2, client_id, message, MaskedInput):
                continue
            masked = message.masked  # type: ignore[attr-defined]
            if client_id not in self._shared:
                self._reject(client_id, "phase 2: sent a masked input without sharing keys")
            elif masked.dtype != spec.word_dtype or masked.shape != (length,):
                self._reject(
                    client_id,
                    f"phase 2: masked input is {masked.dtype} of shape {masked.shape}; expected "
                    f"{spec.word_dtype} of shape ({length},) (vector_size + 1 weight word)",
                )
            else:
                self._masked[client_id] = message  # type: ignore[assignment]
        if self._masked:
            # Sum while checking that every word lies in Z_{2^bits}; an input that does
            # not is left out of the sum and its sender rejected.
            candidates = list(self._masked)
            self._masked_sum, left_out = sum_words(
                [self._masked[c].masked for c in candidates], bits=spec.bits
            )
            for index in left_out:
                client_id = candidates[index]
                del self._masked[client_id]
                self._reject(client_id, f"phase 2: masked input has words >= 2^{spec.bits}")
        survivors = set(self._masked)
        t = self.plan.threshold
        if len(survivors) < t:
            raise ProtocolError(
                f"{self.who}: only {len(survivors)} client(s) sent a masked input, fewer than "
                f"the threshold t={t}; the round is aborted (too few survivors)."
            )
        for client_id in self._shared:
            holders = self._holders(client_id) & survivors
            if client_id not in survivors and not holders:
                continue  # no survivor masked with it: nothing of it to remove
            if len(holders) < t:
                what = "survivor" if client_id in survivors else "dropped client"
                raise ProtocolError(
                    f"{self.who}: only {len(holders)} survivor(s) hold shares of {what} "
                    f"{client_id}, fewer than t={t}, so its masks could never be removed; "
                    "the round is aborted (too many dropouts in one neighbourhood)."
                )
        self._check_minimum(len(survivors), "sent a masked input")
        parts = components(self.graph, survivors)
        if len(parts) > 1:
            raise ProtocolError(
                f"{self.who}: the survivors split into {len(parts)} unconnected parts of the "
                f"masking graph (sizes {sorted(len(p) for p in parts)}): unmasking would reveal "
                "the sum of each part on its own (Bell et al. 2020), so the round is aborted "
                "(too many dropouts; a larger degree keeps the graph connected)."
            )
        announced = tuple(sorted(survivors))
        replies: dict[ClientId, Message] = {}
        for client_id in announced:
            self._announced[client_id] = (self._routed[client_id] | {client_id}) & survivors
            replies[client_id] = SurvivorList(SERVER_ID, self.ctx.round, announced)
        return replies

    def _holders(self, client_id: ClientId) -> frozenset[ClientId]:
        """Clients that hold shares of ``client_id``'s secrets (itself included)."""
        return frozenset(c for c, senders in self._routed.items() if client_id in senders) | {
            client_id
        }

    # ------------------------------------------------------------ phase 3
    def _collect_consistency(
        self, messages: Mapping[ClientId, Message]
    ) -> dict[ClientId, Message]:
        """Check the signatures over U3; forward each neighbourhood's (Bonawitz et al., round 3)."""
        survivors = tuple(sorted(self._masked))
        verify_keys = self._protocol.verify_keys
        for client_id, message in messages.items():
            if not self._accept(3, client_id, message, ConsistencySignature):
                continue
            signed: ConsistencySignature = message  # type: ignore[assignment]
            if client_id not in self._announced:
                self._reject(client_id, "phase 3: consistency check from a non-survivor")
                continue
            if verify_keys is not None:
                try:
                    _verify_consistency(
                        client_id, signed.signature, survivors, self.ctx.round, verify_keys,
                        self._protocol.session_id, self.who,
                    )
                except ProtocolError as err:
                    self._reject(client_id, f"phase 3: {err}")
                    continue
            elif signed.signature is not None:
                self._reject(client_id, "phase 3: a signature where no verify keys are configured")
                continue
            self._signed[client_id] = signed
        t = self.plan.threshold
        if len(self._signed) < t:
            raise ProtocolError(
                f"{self.who}: only {len(self._signed)} survivor(s) signed the survivor set, "
                f"fewer than the threshold t={t}; the round is aborted."
            )
        replies: dict[ClientId, Message] = {}
        signers = frozenset(self._signed)
        for client_id in sorted(signers):
            circle = sorted(self._closed_neighbourhood(client_id) & signers)
            if len(circle) < t:
                # The client would refuse to unmask: it is left out of phase 4.
                self._reject(client_id, f"phase 3: fewer than t={t} of its neighbourhood signed")
                continue
            self._proved.add(client_id)
            replies[client_id] = ConsistencyProof(
                SERVER_ID,
                self.ctx.round,
                tuple((c, self._signed[c].signature) for c in circle),
            )
        return replies

    # ------------------------------------------------------------ phase 4
    def _collect_unmask(self, messages: Mapping[ClientId, Message]) -> dict[ClientId, Message]:
        for client_id, message in messages.items():
            if not self._accept(4, client_id, message, UnmaskShares):
                continue
            response: UnmaskShares = message  # type: ignore[assignment]
            if client_id not in self._proved:
                self._reject(client_id, "phase 4: unmasking response from a client that was "
                             "not sent a consistency proof")
                continue
            held = self._routed[client_id] | {client_id}
            want_seeds = self._announced[client_id]
            want_keys = held - set(self._masked)
            seeds, keys = set(response.self_mask_shares), set(response.mask_key_shares)
            if seeds & keys:
                self._reject(
                    client_id,
                    f"phase 4: revealed both shares for client(s) {sorted(seeds & keys)}",
                )
            elif seeds != want_seeds or keys != want_keys:
                self._reject(
                    client_id,
                    f"phase 4: revealed self-mask shares for {sorted(seeds)} and mask-key shares "
                    f"for {sorted(keys)}; expected {sorted(want_seeds)} and {sorted(want_keys)}",
                )
            else:
                self._unmasked[client_id] = response
        return {}

    # ------------------------------------------------------------ result
    def _shares_of(self, client_id: ClientId, kind: str) -> dict[ClientId, bytes]:
        attribute = "self_mask_shares" if kind == "b" else "mask_key_shares"
        return {
            holder: getattr(response, attribute)[client_id]
            for holder, response in self._unmasked.items()
            if client_id in getattr(response, attribute)
        }

    def _reconstruct(
        self, client_id: ClientId, kind: str
    ) -> tuple[bytes, frozenset[ClientId]]:
        """Return ``client_id``'s secret of ``kind`` and the holders whose shares are bad.

        The secret is checked against what it must match — the commitment to ``b_j``,
        the advertised ``s_j^PK`` — so with more than ``t`` shares a bad one is found and
        its holder named, instead of the round aborting (or a wrong sum coming out).
        """
        what = "self-mask seed" if kind == "b" else "mask private key"
        shares = self._shares_of(client_id, kind)
        t = self.plan.threshold
        if len(shares) < t:
            raise ProtocolError(
                f"{self.who}: only {len(shares)} share(s) of client {client_id}'s {what} "
                f"arrived, fewer than t={t}; the round is aborted (too many dropouts in phase 4)."
            )
        if kind == "b":
            expected = self._shared[client_id].self_mask_commitment

            def check(secret: bytes) -> bool:
                commitment = self_mask_commitment(self.ctx.round, client_id, secret)
                return hmac.compare_digest(commitment, expected)
        else:
            public = self._advertised[client_id].s_pk

            def check(secret: bytes) -> bool:
                return hmac.compare_digest(x25519_public(secret), public)

        try:
            return reconstruct_verified(shares, threshold=t, check=check, secret_len=32)
        except ProtocolError as err:
            raise ProtocolError(
                f"{self.who}: cannot reconstruct client {client_id}'s {what}: {err} The round "
                "is aborted rather than returning a wrong sum."
            ) from None

    def _gather_masks(
        self, survivors: tuple[ClientId, ...]
    ) -> tuple[list[tuple[bytes, int]], frozenset[ClientId]]:
        """Return the masks to remove, or (``[]``, the holders of bad shares found)."""
        masks: list[tuple[bytes, int]] = []
        self._self_mask_seeds, self._mask_keys = {}, {}
        for client_id in survivors:
            seed, bad = self._reconstruct(client_id, "b")
            if bad:
                return [], bad
            self._self_mask_seeds[client_id] = seed
            masks.append((seed, -1))
        for dropped in sorted(set(self._shared) - set(self._masked)):
            partners = sorted(c for c in survivors if dropped in self._routed[c])
            if not partners:
                continue
            private, bad = self._reconstruct(dropped, "s")
            if bad:
                return [], bad
            self._mask_keys[dropped] = private
            for survivor in partners:
                seed = crypto.derive_key(private, self._advertised[survivor].s_pk, info=MASK_INFO)
                masks.append((seed, -pairwise_sign(survivor, dropped)))
        return masks, frozenset()

    def finish(self) -> tuple[np.ndarray, float, tuple[ClientId, ...]]:
        """Unmask and decode: return (Σ w·Δ / Σ w, Σ w · max_weight, survivors)."""
        if self._result is not None:
            return self._result
        check_all_phases_run(self.who, self._phase, NUM_PHASES)
        t = self.plan.threshold
        if len(self._unmasked) < t:
            raise ProtocolError(
                f"{self.who}: only {len(self._unmasked)} survivor(s) answered the unmasking "
                f"phase, fewer than the threshold t={t}; the round is aborted."
            )
        plan, spec = self.plan, self.plan.spec
        survivors = tuple(sorted(self._masked))
        if self._masked_sum is None:
            raise ProtocolError(f"{self.who}: finish() without any masked input.")
        # Every mask to remove is gathered (and checked) first, then removed in one pass.
        # A holder caught sending a bad share loses all its shares, and the gathering
        # starts over without them (at most once per holder).
        while True:
            masks, bad = self._gather_masks(survivors)
            if not bad:
                break
            for holder in sorted(bad):
                self._reject(holder, "phase 4: sent an unmasking share off the committed "
                             "secret's polynomial (corrupted or forged); all its shares dropped")
                self._unmasked.pop(holder, None)
        total = self._masked_sum.copy()  # kept intact, so that a failed finish() can be rerun
        crypto.add_masks(total, masks, bits=plan.bits)
        weight_word = int(total[-1])
        if not len(survivors) <= weight_word <= len(survivors) << plan.weight_bits:
            raise ProtocolError(
                f"{self.who}: the unmasked weight sum is out of range for {len(survivors)} "
                "survivors: some client sent an inconsistent masked input. The round is aborted."
            )
        weight_sum = weight_word / 2.0**plan.weight_bits
        aggregate = decode_sum(total[:-1], spec) / weight_sum
        self._result = (readonly_array(aggregate), weight_sum * plan.max_weight, survivors)
        return self._result

    def view(self) -> SecAggServerView:
        """Return what the server observed, with the secrets it reconstructed."""
        aggregate, total_weight, survivors = self.finish()
        return SecAggServerView(
            protocol=self._protocol.name,
            round=self.ctx.round,
            participants=self.ctx.participants,
            survivors=survivors,
            aggregate=aggregate,
            total_weight=total_weight,
            individual_updates=None,
            individual_weights=None,
            transcript=tuple(self._transcript),
            threshold=self.plan.threshold,
            degree=self.plan.degree,
            bits=self.plan.bits,
            graph_seed=self.graph_seed,
            neighbours=self.graph,
            advertised=tuple(self._advertised),
            shared=tuple(self._shared),
            signed_by=tuple(sorted(self._signed)),
            unmasked_by=tuple(sorted(self._unmasked)),
            self_mask_seeds=self._self_mask_seeds,
            mask_private_keys=self._mask_keys,
            rejected=self._rejected,
        )
