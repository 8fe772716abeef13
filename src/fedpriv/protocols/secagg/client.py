"""The client's side of a SecAgg / SecAgg+ round.

Owns :class:`SecAggClient`, which runs the five phases over explicit state —
advertise keys, share ``s_i^SK`` and ``b_i``, send the masked input, sign the
announced survivor set (ConsistencyCheck), reveal one share per neighbour —
checking every server reply and forgetting its secrets as soon as they are no
longer needed.  It never sees the network.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import numpy as np

from fedpriv.errors import ProtocolError
from fedpriv.protocols import crypto
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
from fedpriv.protocols.encoding import EncodeStats, encode
from fedpriv.protocols.secagg.config import encode_weight
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
    ENCRYPTION_INFO,
    KEY_NBYTES,
    MASK_INFO,
    NUM_PHASES,
    advertise_payload,
    apply_masks,
    consistency_payload,
    pack_shares,
    self_mask_commitment,
    unpack_shares,
)
from fedpriv.protocols.secagg_graph import components
from fedpriv.protocols.shamir import split_secret

if TYPE_CHECKING:
    from fedpriv.protocols.secagg.protocol import SecAggFamily


def _repeated(items: list[Any]) -> list[Any]:
    """Return the items that occur more than once, sorted."""
    return sorted(item for item, count in Counter(items).items() if count > 1)


def _round_error(who: str, message: Message, round_index: int) -> ProtocolError:
    return ProtocolError(
        f"{who} got a {type(message).__name__} of round {getattr(message, 'round', None)} "
        f"in round {round_index}: a message replayed from another round is refused."
    )


class SecAggClient(ClientSession):
    """One client's side of a SecAgg / SecAgg+ round.

    After phase 2, :attr:`encode_stats` says what clipping did to this client's
    weighted update (the server never sees it).
    """

    def __init__(
        self, protocol: SecAggFamily, client_id: ClientId, ctx: RoundContext, data: ClientInput
    ) -> None:
        check_client_input(client_id, ctx, data)
        self.client_id = client_id
        self.ctx = ctx
        self.plan = protocol.plan(ctx)
        self._protocol = protocol
        self._data = data
        self._weight = data.weight / self.plan.max_weight
        if self._weight > 1.0:
            raise ProtocolError(
                f"client {client_id}'s weight {data.weight!r} exceeds the configured public "
                f"max_weight={self.plan.max_weight!r}; set max_weight to an upper bound on every "
                "client's FedAvg weight (e.g. the largest client's number of examples)."
            )
        self._signing_key: bytes | None = None
        if protocol.signing_keys is not None or protocol.active:
            if protocol.signing_keys is None or client_id not in protocol.signing_keys:
                raise ProtocolError(
                    f"signing keys are configured (or verify keys, which make every client "
                    f"check signatures) but none is given for client {client_id}; pass one "
                    "Ed25519 private key per participant in signing_keys."
                )
            self._signing_key = protocol.signing_keys[client_id]
        self._next_phase = 0
        self._excluded = False
        self.encode_stats: EncodeStats | None = None
        """What clipping did to ``w·Δ`` (after phase 2)."""
        self._keys: AdvertiseKeys | None = None
        self._c_sk: bytes | None = None
        # Pairwise share-encryption keys, derived once in phase 1 and reused to decrypt
        # the shares in phase 2; forgotten with the private keys.
        self._enc_keys: dict[ClientId, bytes] = {}
        self._s_sk: bytes | None = None
        self._peers: dict[ClientId, AdvertiseKeys] = {}  # neighbours with keys
        self._roster: tuple[ClientId, ...] = ()  # every client whose keys were distributed
        self._graph_seed: bytes | None = None
        self._survivors: tuple[ClientId, ...] | None = None  # the set this client signed
        self._self_mask_seed: bytes | None = None
        self._held: dict[ClientId, tuple[bytes, bytes]] = {}  # j → (s_j^SK share, b_j share)
        self._revealed: dict[ClientId, str] = {}

    def __repr__(self) -> str:
        return f"SecAggClient(client_id={self.client_id}, round={self.ctx.round})"

    def stats(self) -> Mapping[str, float]:
        """Clipping counters of this client's encoding (empty before phase 2)."""
        if self.encode_stats is None:
            return {}
        return {
            "clipped_values": float(self.encode_stats.clipped),
            "norm_scaled": float(self.encode_stats.scaled_norm),
        }

    @property
    def who(self) -> str:
        """``"client <id> (round <r>)"``, for error messages."""
        return f"{self._protocol.name} client {self.client_id} (round {self.ctx.round})"

    @property
    def revealed(self) -> Mapping[ClientId, str]:
        """Peer → which share this client revealed for it in phase 3: ``"b"`` or ``"s"``."""
        return MappingProxyType(self._revealed)

    def handle(self, phase: int, inbox: Message | None) -> Message | None:
        """Run ``phase`` on the server's previous reply; return the message for the server."""
        check_phase(self.who, phase, self._next_phase, NUM_PHASES)
        self._next_phase += 1
        if phase == 0:
            if inbox is not None:
                raise ProtocolError(f"{self.who} got a {type(inbox).__name__} before phase 0.")
            return self._advertise()
        if self._excluded or inbox is None:
            # The server sent nothing: it left this client out (dropped or rejected).
            if inbox is not None:
                raise ProtocolError(
                    f"{self.who} was left out of the round in an earlier phase but got a "
                    f"{type(inbox).__name__} in phase {phase}."
                )
            self._excluded = True
            self._forget_secrets()
            return None
        expected = {1: KeyDirectory, 2: RoutedShares, 3: SurvivorList, 4: ConsistencyProof}[
            phase
        ]
        if not isinstance(inbox, expected) or inbox.sender != SERVER_ID:
            raise ProtocolError(
                f"{self.who} expected a {expected.__name__} from the server in phase {phase}; "
                f"got {type(inbox).__name__} from sender {inbox.sender}."
            )
        if inbox.round != self.ctx.round:
            raise _round_error(self.who, inbox, self.ctx.round)
        if isinstance(inbox, KeyDirectory):
            return self._share_keys(inbox)
        if isinstance(inbox, RoutedShares):
            return self._masked_input(inbox)
        if isinstance(inbox, SurvivorList):
            return self._consistency(inbox)
        if isinstance(inbox, ConsistencyProof):
            return self._unmask(inbox)
        raise ProtocolError(f"{self.who}: unexpected {type(inbox).__name__}.")  # unreachable

    def _forget_secrets(self) -> None:
        self._c_sk = self._s_sk = None
        self._enc_keys = {}

    # ------------------------------------------------------------ phase 0
    def _advertise(self) -> AdvertiseKeys:
        source = self._protocol.secret_source
        if self._signing_key is not None:
            # Its long-term key signs fresh keys at most once per round, and rounds only
            # go up: a replayed phase 0 is refused (the Flower client also keeps this
            # record across messages, in Context.state).
            self._protocol.start_round(self.client_id, self.ctx.round)
        self._c_sk, c_pk = source.x25519(self.client_id, self.ctx.round, "c")
        self._s_sk, s_pk = source.x25519(self.client_id, self.ctx.round, "s")
        signature = None
        if self._signing_key is not None:
            payload = advertise_payload(
                self._protocol.session_id, self.ctx.round, self.client_id, c_pk, s_pk
            )
            signature = crypto.sign(self._signing_key, payload)
        self._keys = AdvertiseKeys(self.client_id, self.ctx.round, c_pk, s_pk, signature)
        return self._keys

    # ------------------------------------------------------------ phase 1
    def _check_directory(self, directory: KeyDirectory) -> frozenset[ClientId]:
        """Check the key directory; return this client's neighbours with keys in it."""
        for entry in directory.keys:
            if not isinstance(entry, AdvertiseKeys) or entry.round != self.ctx.round:
                raise ProtocolError(
                    f"{self.who}: a key directory entry is not an AdvertiseKeys of round "
                    f"{self.ctx.round} (replayed from another round?). Aborting."
                )
            if len(entry.c_pk) != KEY_NBYTES or len(entry.s_pk) != KEY_NBYTES:
                raise ProtocolError(
                    f"{self.who}: client {entry.sender}'s advertised keys are not 32 bytes each."
                )
        ids = [entry.sender for entry in directory.keys]
        duplicates = _repeated(ids)
        if duplicates:
            raise ProtocolError(
                f"{self.who}: the key directory lists client(s) {duplicates} more than once; "
                "a directory must name each client once. Aborting."
            )
        outside = sorted(set(ids) - set(self.ctx.participants))
        if outside:
            raise ProtocolError(
                f"{self.who}: the key directory lists client(s) {outside}, which are not "
                "participants of the round; the server is faulty. Aborting."
            )
        if self._keys is None or self.client_id not in ids:
            raise ProtocolError(f"{self.who}: the key directory does not list this client.")
        own = directory.keys[ids.index(self.client_id)]
        if (own.c_pk, own.s_pk) != (self._keys.c_pk, self._keys.s_pk):
            raise ProtocolError(f"{self.who}: the key directory alters this client's own keys.")
        if _repeated([k for e in directory.keys for k in (e.c_pk, e.s_pk)]):
            raise ProtocolError(
                f"{self.who}: two entries of the key directory share a public key (a replayed "
                "or copied key); every client's keys must be distinct. Aborting."
            )
        verify_keys = self._protocol.verify_keys
        if verify_keys is not None:
            for entry in directory.keys:
                _verify_advertisement(entry, verify_keys, self._protocol.session_id, self.who)
        if len(ids) < self.plan.min_participants:
            raise ProtocolError(
                f"{self.who}: only {len(ids)} client(s) advertised keys, fewer than the "
                f"{self.plan.min_participants} it accepts (min_participants, or t); aborting."
            )
        # The graph seed is the hash of every advertised key (Bell et al. 2020 assume a
        # random graph): recomputed here, so a server cannot pick one that suits it.
        seed = self._protocol.graph_seed(self.ctx, directory.keys)
        if directory.graph_seed != seed:
            raise ProtocolError(
                f"{self.who}: the key directory's graph seed is not the hash of the advertised "
                "keys; the server chose its own masking graph. Aborting."
            )
        self._graph_seed = seed
        self._roster = tuple(sorted(ids))
        neighbours = self._protocol.neighbourhood(self.ctx, self.client_id, seed) & set(ids)
        if len(neighbours) + 1 < self.plan.threshold:
            raise ProtocolError(
                f"{self.who}: only {len(neighbours) + 1} client(s) of its neighbourhood "
                f"advertised keys, fewer than the threshold t={self.plan.threshold}; aborting "
                "the round."
            )
        return neighbours

    def _share_keys(self, directory: KeyDirectory) -> ShareKeys:
        neighbours = self._check_directory(directory)
        if self._c_sk is None or self._s_sk is None:
            raise ProtocolError(f"{self.who} has no keys; phase 0 did not run.")
        self._peers = {e.sender: e for e in directory.keys if e.sender in neighbours}
        holders = sorted([self.client_id, *self._peers])
        t = self.plan.threshold
        seed = self._protocol.secret_source.self_mask_seed(self.client_id, self.ctx.round)
        self._self_mask_seed = seed
        key_shares = split_secret(self._s_sk, threshold=t, share_ids=holders)
        seed_shares = split_secret(seed, threshold=t, share_ids=holders)
        self._held = {self.client_id: (key_shares[self.client_id], seed_shares[self.client_id])}
        ciphertexts = {}
        for peer, entry in self._peers.items():
            key = self._pairwise_key(entry.c_pk, peer, ENCRYPTION_INFO, self._c_sk)
            self._enc_keys[peer] = key
            plaintext = pack_shares(self.client_id, peer, key_shares[peer], seed_shares[peer])
            aad = crypto.share_aad(self.client_id, peer, self.ctx.round)
            ciphertexts[peer] = crypto.encrypt(key, plaintext, aad=aad)
        commitment = self_mask_commitment(self.ctx.round, self.client_id, seed)
        return ShareKeys(self.client_id, self.ctx.round, ciphertexts, commitment)

    def _pairwise_key(self, peer_pk: bytes, peer: ClientId, info: bytes, own_sk: bytes) -> bytes:
        try:
            return crypto.derive_key(own_sk, peer_pk, info=info)
        except ProtocolError as err:
            raise ProtocolError(
                f"{self.who}: key agreement with client {peer} failed ({err}); aborting."
            ) from None

    # ------------------------------------------------------------ phase 2
    def _masked_input(self, routed: RoutedShares) -> MaskedInput:
        senders = [sender for sender, _ in routed.ciphertexts]
        duplicates = _repeated(senders)
        if duplicates:
            raise ProtocolError(
                f"{self.who}: the server routed several shares from client(s) {duplicates}; "
                "each neighbour sends one. Aborting."
            )
        strangers = sorted(set(senders) - set(self._peers))
        if strangers:
            raise ProtocolError(
                f"{self.who} got shares from client(s) {strangers}, which are not its neighbours "
                "with keys in the round's masking graph. Aborting."
            )
        if len(senders) + 1 < self.plan.threshold:
            raise ProtocolError(
                f"{self.who}: only {len(senders)} neighbour(s) sent shares, so fewer than "
                f"t={self.plan.threshold} clients hold shares; aborting the round."
            )
        if self._c_sk is None or self._s_sk is None or self._self_mask_seed is None:
            raise ProtocolError(f"{self.who} has no keys; phases 0-1 did not run.")
        for sender, ciphertext in routed.ciphertexts:
            key = self._enc_keys[sender]  # derived in phase 1 for every peer in _peers
            aad = crypto.share_aad(sender, self.client_id, self.ctx.round)
            try:
                origin, target, key_share, seed_share = unpack_shares(
                    crypto.decrypt(key, ciphertext, aad=aad)
                )
            except ProtocolError:
                raise ProtocolError(
                    f"{self.who}: the share ciphertext from client {sender} failed authentication "
                    "or is malformed (tampered, forged or replayed). The client treats "
                    f"{sender} as faulty and aborts the round."
                ) from None
            if (origin, target) != (sender, self.client_id):
                raise ProtocolError(
                    f"{self.who}: the share from client {sender} names sender {origin} and "
                    f"receiver {target}; aborting."
                )
            self._held[sender] = (key_share, seed_share)
        plan = self.plan
        rng = self._protocol.secret_source.rounding_rng(self.client_id, self.ctx.round)
        weighted = np.multiply(self._data.update, self._weight, dtype=np.float64)
        # The weight word goes last; encode writes the update's words in front of it.
        vector = np.empty(weighted.size + 1, dtype=plan.spec.word_dtype)
        try:
            _, stats = encode(weighted, plan.spec, rng, out=vector[:-1])
        except ProtocolError as err:
            raise ProtocolError(f"{self.who} cannot encode its update: {err}") from None
        self.encode_stats = stats
        if self._protocol.on_encode is not None:
            self._protocol.on_encode(self.client_id, self.ctx.round, stats)
        vector[-1] = encode_weight(self._weight, plan.weight_bits)
        pairwise = {
            peer: self._pairwise_key(self._peers[peer].s_pk, peer, MASK_INFO, self._s_sk)
            for peer in senders
        }
        apply_masks(
            vector,
            client_id=self.client_id,
            self_mask_seed=self._self_mask_seed,
            pairwise_seeds=pairwise,
            bits=plan.bits,
        )
        self._self_mask_seed = None
        self._forget_secrets()
        vector.setflags(write=False)
        return MaskedInput(self.client_id, self.ctx.round, vector)

    # ------------------------------------------------------------ phase 3
    def _consistency(self, announced: SurvivorList) -> ConsistencySignature:
        """Check the announced survivor set U3 and sign it (Bonawitz et al. 2017, round 3)."""
        survivors = list(announced.survivors)
        duplicates = _repeated(survivors)
        if duplicates:
            raise ProtocolError(f"{self.who}: the survivor list repeats client(s) {duplicates}.")
        if self.client_id not in survivors:
            raise ProtocolError(
                f"{self.who}: the survivor list omits this client, which sent its masked input; "
                "the server is faulty. Refusing to unmask."
            )
        strangers = sorted(set(survivors) - set(self._roster))
        if strangers:
            raise ProtocolError(
                f"{self.who}: the survivor list names client(s) {strangers}, whose keys were "
                "never distributed this round. Refusing to unmask."
            )
        unknown = sorted((set(survivors) & set(self._peers)) - set(self._held))
        if unknown:
            raise ProtocolError(
                f"{self.who}: the survivor list names client(s) {unknown} of its neighbourhood, "
                "which never sent it shares. Refusing to unmask."
            )
        alive = set(survivors)
        local = len(alive & (set(self._peers) | {self.client_id}))
        if local < self.plan.threshold:
            raise ProtocolError(
                f"{self.who}: only {local} survivor(s) announced in its neighbourhood, fewer "
                f"than t={self.plan.threshold}; refusing to unmask (the sum would expose too "
                "few clients' inputs)."
            )
        if len(alive) < self.plan.min_participants:
            raise ProtocolError(
                f"{self.who}: only {len(alive)} survivor(s) announced, fewer than the "
                f"{self.plan.min_participants} it accepts (min_participants, or t); refusing "
                "to unmask."
            )
        graph = self._protocol.graph(self.ctx, self._graph_seed)
        parts = components(graph, alive)
        if len(parts) > 1:
            raise ProtocolError(
                f"{self.who}: the announced survivors split into {len(parts)} unconnected parts "
                f"of the masking graph (sizes {sorted(len(p) for p in parts)}); unmasking would "
                "reveal the sum of each part separately (Bell et al. 2020). Refusing to unmask."
            )
        self._survivors = tuple(sorted(alive))
        signature = None
        if self._signing_key is not None:
            payload = consistency_payload(
                self._protocol.session_id, self.ctx.round, self.client_id, self._survivors
            )
            signature = crypto.sign(self._signing_key, payload)
        return ConsistencySignature(self.client_id, self.ctx.round, signature)

    # ------------------------------------------------------------ phase 4
    def _check_proof(self, proof: ConsistencyProof) -> None:
        """Require ``t`` matching consistency signatures of its neighbourhood (Bonawitz, r. 4)."""
        if self._survivors is None:
            raise ProtocolError(f"{self.who} signed no survivor set; phase 3 did not run.")
        signers = [signer for signer, _ in proof.signatures]
        duplicates = _repeated(signers)
        if duplicates:
            raise ProtocolError(
                f"{self.who}: the consistency proof repeats signer(s) {duplicates}. Aborting."
            )
        circle = (set(self._peers) | {self.client_id}) & set(self._survivors)
        outside = sorted(set(signers) - circle)
        if outside:
            raise ProtocolError(
                f"{self.who}: the consistency proof has signatures of client(s) {outside}, which "
                "are not survivors of its neighbourhood. Aborting."
            )
        verify_keys = self._protocol.verify_keys
        if verify_keys is not None:
            for signer, signature in proof.signatures:
                _verify_consistency(
                    signer, signature, self._survivors, self.ctx.round, verify_keys,
                    self._protocol.session_id, self.who,
                )
        if len(signers) < self.plan.threshold:
            kind = "valid signatures" if verify_keys is not None else "acknowledgements"
            raise ProtocolError(
                f"{self.who}: only {len(signers)} {kind} of the survivor set it signed came "
                f"from its neighbourhood, fewer than t={self.plan.threshold}: the server may "
                "have shown other clients another set. Refusing to unmask."
            )

    def _unmask(self, proof: ConsistencyProof) -> UnmaskShares:
        self._check_proof(proof)
        alive = set(self._survivors or ())
        kinds = {peer: "b" if peer in alive else "s" for peer in sorted(self._held)}
        conflicts = sorted(p for p, kind in kinds.items() if self._revealed.get(p, kind) != kind)
        if conflicts:
            raise ProtocolError(
                f"{self.who}: asked for shares of client(s) {conflicts} of the other kind than "
                "it already revealed; revealing both a self-mask seed and a mask key share of "
                "one client would expose its input. Refusing."
            )
        self._revealed.update(kinds)
        seed_shares = {p: self._held[p][1] for p, kind in kinds.items() if kind == "b"}
        key_shares = {p: self._held[p][0] for p, kind in kinds.items() if kind == "s"}
        # Keep only what was revealed: the other share of each peer can never be sent.
        self._held = {
            peer: (b"", seed_share) if kinds[peer] == "b" else (key_share, b"")
            for peer, (key_share, seed_share) in self._held.items()
        }
        return UnmaskShares(self.client_id, self.ctx.round, seed_shares, key_shares)
