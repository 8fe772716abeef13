"""CKKS against an active server and hostile clients: the attacks of issue 15, played as tests.

The server here is the adversary: it forwards what it likes to a key holder, relabels,
duplicates, replays and combines uploads, or asks for more releases than a round
allows.  Each attack must meet a :class:`ProtocolError` with nothing released, and
the honest path must still work (spec: ``protocols/ckks.md``, "Threat model").
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tenseal as ts

from fedpriv.errors import ConfigError, ProtocolError
from fedpriv.protocols import ClientInput, RoundContext, run_round
from fedpriv.protocols.base import ClientId, ClientSession, Message
from fedpriv.protocols.ckks import (
    CKKSClient,
    CKKSConfig,
    CKKSProtocol,
    CKKSServerView,
    DecryptRequest,
    EncryptedUpdate,
    ReleasedSum,
    ReleaseLedger,
    UploadSigners,
)
from fedpriv.protocols.ckks.keys import load_public_context
from fedpriv.protocols.crypto import generate_ed25519

Inputs = dict[int, ClientInput]


def make_inputs(ids: tuple[int, ...], size: int, seed: int) -> Inputs:
    rng = np.random.default_rng(seed)
    return {c: ClientInput(rng.uniform(-1, 1, size), float(rng.uniform(0.2, 1.0))) for c in ids}


def phase0(
    proto: CKKSProtocol, ctx: RoundContext, inputs: Inputs,
) -> tuple[DecryptRequest, dict[int, CKKSClient]]:
    """Run phase 0 honestly; return the server's (honest) request and the client sessions."""
    sessions: dict[int, Any] = {c: proto.client(c, ctx, inputs[c]) for c in ctx.participants}
    uploads = {c: s.handle(0, None) for c, s in sessions.items()}
    (_, request), = proto.server(ctx).collect(0, uploads).items()
    assert isinstance(request, DecryptRequest)
    return request, sessions


def exact_sum(inputs: Inputs, ids: tuple[int, ...]) -> np.ndarray:
    return np.sum([np.append(inputs[c].weight * inputs[c].update, inputs[c].weight)
                   for c in ids], axis=0)


def server_made(proto: CKKSProtocol, chunks: tuple[bytes, ...], twice: bool) -> tuple[bytes, ...]:
    """Ciphertexts the server makes with its public context: c + c, or c + K (a plaintext)."""
    public = load_public_context(proto.public_context.context_bytes)
    out = []
    for data in chunks:
        vector = ts.ckks_vector_from(public, data)
        out.append((vector + vector if twice else vector + [1.0] * vector.size()).serialize())
    return tuple(out)


# ----------------------------------------------------------------- chosen ciphertexts


def test_key_holder_never_decrypts_a_ciphertext_the_server_chose() -> None:
    """Issue 15, item 1: the server asks key holder 0 to 'release' what it chose.

    Before the fix, any ciphertext with the right metadata was decrypted: a crafted
    ``(0, K)`` returned the canonical embedding of the secret key, and a target's
    individual upload sent as "the sum" returned that client's update.  Now the key
    holder only decrypts its own sum of uploads that their senders signed for this
    round, session and key set.
    """
    proto = CKKSProtocol(CKKSConfig(min_clients=2))
    ids = (0, 1, 2)
    inputs = make_inputs(ids, 40, seed=1)
    target = 2

    def attacks(request: DecryptRequest) -> dict[str, DecryptRequest]:
        own, bystander, victim = request.uploads
        relabelled = dataclasses.replace(victim, sender=own.sender)
        doubled = dataclasses.replace(victim, chunks=server_made(proto, victim.chunks, True))
        remade = dataclasses.replace(victim, chunks=server_made(proto, victim.chunks, False))
        return {
            # The old attack: the victim's individual ciphertext labelled as a sum.
            "victim's upload as the key holder's own": dataclasses.replace(
                request, uploads=(relabelled, bystander)),
            "victim's upload under a bystander's id": dataclasses.replace(
                request, uploads=(own, dataclasses.replace(victim, sender=bystander.sender))),
            # Server-made ciphertexts under the victim's valid signature.
            "2·c_victim as the victim's upload": dataclasses.replace(
                request, uploads=(own, doubled)),
            "c_victim + K": dataclasses.replace(request, uploads=(own, remade)),
            # Participant-set games: a "sum" of one other client, duplicated signers.
            "the victim alone": dataclasses.replace(request, uploads=(victim,)),
            "the holder alone (below min_clients)": dataclasses.replace(request, uploads=(own,)),
            "the victim twice": dataclasses.replace(request, uploads=(own, victim, victim)),
        }

    expected = {
        "victim's upload as the key holder's own": "not the one it sent",
        "victim's upload under a bystander's id": "signature on client 1's upload does not verify",
        "2·c_victim as the victim's upload": "signature on client 2's upload does not verify",
        "c_victim + K": "signature on client 2's upload does not verify",
        "the victim alone": "including this key holder",
        "the holder alone (below min_clients)": "refuses to decrypt a sum of 1 client",
        "the victim twice": "sorted, unique",
    }
    for index, name in enumerate(expected):
        ctx = RoundContext(round=index, participants=ids, vector_size=40)
        request, sessions = phase0(proto, ctx, inputs)
        assert request.contributors == ids and request.uploads[target].sender == target
        with pytest.raises(ProtocolError, match=expected[name]):
            sessions[0].handle(1, attacks(request)[name])
    assert proto.keys.ledger.releases == 0  # nothing was ever decrypted and released

    # The honest path still works, and releases the sum of exactly the signed uploads.
    ctx = RoundContext(round=len(expected), participants=ids, vector_size=40)
    request, sessions = phase0(proto, ctx, inputs)
    release = sessions[0].handle(1, request)
    assert isinstance(release, ReleasedSum) and proto.keys.ledger.releases == 1
    bound = proto.params.release_bound(3)
    assert np.abs(release.values() - exact_sum(inputs, ids)).max() <= bound


def test_the_server_s_own_sum_is_never_what_gets_decrypted() -> None:
    """A request carries uploads, not a sum: the holder's release matches its recomputation."""
    proto = CKKSProtocol(CKKSConfig(min_clients=2))
    ids = (4, 7)
    inputs = make_inputs(ids, 10, seed=2)
    ctx = RoundContext(round=0, participants=ids, vector_size=10)
    request, sessions = phase0(proto, ctx, inputs)
    assert "chunks" not in {f.name for f in dataclasses.fields(DecryptRequest)}
    release = sessions[4].handle(1, request)
    assert isinstance(release, ReleasedSum)
    assert np.abs(release.values() - exact_sum(inputs, ids)).max() <= proto.params.release_bound(2)


# ----------------------------------------------------------------- signatures


def test_forged_duplicated_and_replayed_signatures_are_refused() -> None:
    proto = CKKSProtocol(CKKSConfig(min_clients=2))
    ids = (0, 1, 2)
    inputs = make_inputs(ids, 12, seed=3)
    old_request, _ = phase0(proto, RoundContext(round=0, participants=ids, vector_size=12),
                            inputs)
    cases: list[tuple[Any, str]] = [
        # Client 1's statement signed by client 2's key (a server-side swap of signatures).
        (lambda r: (r.uploads[0], dataclasses.replace(r.uploads[1],
                                                      signature=r.uploads[2].signature)),
         "signature on client 1's upload does not verify"),
        (lambda r: (r.uploads[0], dataclasses.replace(r.uploads[1], signature=bytes(64))),
         "signature on client 1's upload does not verify"),
        (lambda r: (r.uploads[0], r.uploads[1], r.uploads[1]), "sorted, unique"),
        # Round 0's upload of client 1, replayed as is and relabelled with this round.
        (lambda r: (r.uploads[0], old_request.uploads[1]), "forwarded upload is of round 0"),
        (lambda r: (r.uploads[0], dataclasses.replace(old_request.uploads[1], round=r.round)),
         "signature on client 1's upload does not verify"),
    ]
    for index, (edit, match) in enumerate(cases):
        ctx = RoundContext(round=1 + index, participants=ids, vector_size=12)
        request, sessions = phase0(proto, ctx, inputs)
        with pytest.raises(ProtocolError, match=match):
            sessions[0].handle(1, dataclasses.replace(request, uploads=edit(request)))
    # Another run (session) under the same key set and signing keys: its round-10 uploads
    # are refused in this session's round 10.
    other_run = CKKSProtocol(proto.config, keys=proto.keys, session_id=b"s" * 16)
    other_run.signers = proto.signers
    ctx = RoundContext(round=10, participants=ids, vector_size=12)
    foreign, _ = phase0(other_run, ctx, inputs)
    request, sessions = phase0(proto, ctx, inputs)
    spliced = dataclasses.replace(request, uploads=(request.uploads[0], *foreign.uploads[1:]))
    with pytest.raises(ProtocolError, match="signature on client 1's upload does not verify"):
        sessions[0].handle(1, spliced)


def test_verify_keys_must_be_known_and_match() -> None:
    private, public = generate_ed25519()
    _, stranger = generate_ed25519()
    with pytest.raises(ConfigError, match="is not the public key of signing_keys"):
        UploadSigners({0: private}, {0: stranger})
    signers = UploadSigners({0: private}, {0: public})
    with pytest.raises(ConfigError, match="holds no Ed25519 signing key"):
        signers.sign(1, b"statement")
    with pytest.raises(ProtocolError, match="no verify key is known for client 1"):
        signers.verify(1, b"statement", bytes(64), "test")
    signers.verify(0, b"statement", signers.sign(0, b"statement"), "test")


def test_provisioned_keys_and_a_public_only_server_run_a_round() -> None:
    """Deployment shape: each client signs with its own key; the server drops unknown ones."""
    ids = (0, 1, 2)
    pairs = {c: generate_ed25519() for c in ids}
    verify = {c: pub for c, (_, pub) in pairs.items()}
    nodes = CKKSProtocol(CKKSConfig(), signing_keys={c: k for c, (k, _) in pairs.items()},
                         verify_keys={c: verify[c] for c in (0, 1)})  # 2's key unknown
    server = CKKSProtocol(nodes.config, public=nodes.keys.public(),
                          verify_keys={c: verify[c] for c in (0, 1)})
    with pytest.raises(ConfigError, match="signs nothing"):
        CKKSProtocol(nodes.config, public=nodes.keys.public(), signing_keys={0: pairs[0][0]})
    inputs = make_inputs(ids, 8, seed=4)
    ctx = RoundContext(round=0, participants=ids, vector_size=8)
    sessions = {c: nodes.client(c, ctx, inputs[c]) for c in ids}
    uploads = {c: s.handle(0, None) for c, s in sessions.items()}
    server_session = server.server(ctx)
    (holder, request), = server_session.collect(0, uploads).items()
    assert request.contributors == (0, 1)
    assert server_session.rejected[0][0] == 2 and "no verify key" in server_session.rejected[0][1]
    release = sessions[holder].handle(1, request)
    assert isinstance(release, ReleasedSum)
    server_session.collect(1, {holder: release})
    server_session.collect(2, {})
    server_session.collect(3, {})
    aggregate, _, survivors = server_session.finish()
    assert survivors == (0, 1)
    mean = (inputs[0].weight * inputs[0].update + inputs[1].weight * inputs[1].update) / (
        inputs[0].weight + inputs[1].weight)
    assert np.abs(aggregate - mean).max() < 1e-8


# ----------------------------------------------------------------- budgets


def test_release_budget_is_counted_and_enforced() -> None:
    proto = CKKSProtocol(CKKSConfig(min_clients=2, max_releases=2))
    ids = (0, 1)
    inputs = make_inputs(ids, 5, seed=5)
    for round_index in (0, 1):
        ctx = RoundContext(round=round_index, participants=ids, vector_size=5)
        assert run_round(proto, ctx, inputs).survivors == ids
    assert proto.keys.ledger.releases == 2
    with pytest.raises(ProtocolError, match=r"made its 2 releases, max_releases=2"):
        run_round(proto, RoundContext(round=2, participants=ids, vector_size=5), inputs)
    assert proto.keys.ledger.releases == 2


def test_a_round_is_signed_and_released_once() -> None:
    """A server re-running a round (other survivors) gets no second upload or release."""
    proto = CKKSProtocol(CKKSConfig(min_clients=2))
    ids = (0, 1, 2)
    inputs = make_inputs(ids, 5, seed=6)
    ctx = RoundContext(round=3, participants=ids, vector_size=5)
    run_round(proto, ctx, inputs)
    with pytest.raises(ProtocolError, match=r"already signed an upload for round 3"):
        run_round(proto, ctx, inputs, dropouts={2: 0})
    with pytest.raises(ProtocolError, match=r"already signed an upload for round 3"):
        run_round(proto, dataclasses.replace(ctx, round=2), inputs)
    # A key holder that signed nothing this round still refuses a second release of it.
    with pytest.raises(ProtocolError, match=r"refuses a second release for round 3"):
        proto.keys.ledger.record_release(proto.session_id, 3, 10, "key holder 5")
    assert proto.keys.ledger.releases == 1


def test_ledger_file_keeps_the_budget_across_loads(tmp_path: Path) -> None:
    key_id = bytes(range(16))
    path = tmp_path / "ledger.json"
    ledger = ReleaseLedger(key_id, path)
    ledger.record_upload(b"s" * 16, 4, 1, "test")
    ledger.record_release(b"s" * 16, 4, 2, "test")
    reloaded = ReleaseLedger(key_id, path)
    assert reloaded.releases == 1
    with pytest.raises(ProtocolError, match="second release for round 4"):
        reloaded.record_release(b"s" * 16, 4, 2, "test")
    with pytest.raises(ProtocolError, match="already signed an upload for round 4"):
        reloaded.record_upload(b"s" * 16, 4, 1, "test")
    reloaded.record_release(b"s" * 16, 5, 2, "test")
    with pytest.raises(ProtocolError, match="max_releases=2"):
        ReleaseLedger(key_id, path).record_release(b"s" * 16, 6, 2, "test")
    with pytest.raises(ConfigError, match="belongs to key set"):
        ReleaseLedger(bytes(16), path)
    path.write_text(json.dumps({"key_id": key_id.hex()}))
    with pytest.raises(ConfigError, match="cannot be read"):
        ReleaseLedger(key_id, path)


# ----------------------------------------------------------------- hostile clients


class HostileProtocol(CKKSProtocol):
    """Client ``hostile`` tampers with its upload after signing (or signs garbage)."""

    def __init__(self, config: CKKSConfig, hostile: ClientId, how: str) -> None:
        super().__init__(config)
        self.hostile, self.how = hostile, how

    def client(self, client_id: ClientId, ctx: RoundContext, data: ClientInput) -> ClientSession:
        session = super().client(client_id, ctx, data)
        if client_id != self.hostile:
            return session
        return _Tamper(session, self.how)


class _Tamper(ClientSession):
    def __init__(self, inner: ClientSession, how: str) -> None:
        self.inner, self.how = inner, how

    def stats(self) -> dict[str, float]:
        return dict(self.inner.stats())

    def handle(self, phase: int, inbox: Message | None) -> Message | None:
        message = self.inner.handle(phase, inbox)
        if phase != 0 or not isinstance(message, EncryptedUpdate):
            return message
        if self.how == "garbage":
            return dataclasses.replace(message, chunks=(b"\x00not a ciphertext",))
        return dataclasses.replace(message, signature=bytes(64))


@pytest.mark.parametrize("how", ["garbage", "bad signature"])
def test_one_hostile_upload_drops_that_client_not_the_round(how: str) -> None:
    proto = HostileProtocol(CKKSConfig(min_clients=2), hostile=1, how=how)
    ids = (0, 1, 2, 3)
    inputs = make_inputs(ids, 30, seed=7)
    result = run_round(proto, RoundContext(round=0, participants=ids, vector_size=30), inputs)
    assert result.survivors == (0, 2, 3)
    view = result.view
    assert isinstance(view, CKKSServerView)
    assert view.dropped == (1,) and [c for c, _ in view.rejected] == [1]
    honest = (0, 2, 3)
    weights = np.array([inputs[c].weight for c in honest])
    mean = weights @ np.stack([inputs[c].update for c in honest]) / weights.sum()
    assert np.abs(result.aggregate - mean).max() < 1e-8


def test_a_fixed_key_holder_is_the_only_one_asked_and_the_only_one_that_releases() -> None:
    proto = CKKSProtocol(CKKSConfig(min_clients=2, key_holder=2))
    ids = (0, 1, 2)
    inputs = make_inputs(ids, 6, seed=8)
    result = run_round(proto, RoundContext(round=0, participants=ids, vector_size=6), inputs)
    view = result.view
    assert isinstance(view, CKKSServerView)
    assert view.key_holders_asked == (2,) and view.released_by == 2
    # Without failover, the key holder's dropout aborts the round.
    with pytest.raises(ProtocolError, match=r"no key holder released the sum: \[2\]"):
        run_round(proto, RoundContext(round=1, participants=ids, vector_size=6), inputs,
                  dropouts={2: 1})
    request, sessions = phase0(proto, RoundContext(round=2, participants=ids, vector_size=6),
                               inputs)
    with pytest.raises(ProtocolError, match=r"not the federation's key holder \(key_holder=2\)"):
        sessions[0].handle(1, request)
