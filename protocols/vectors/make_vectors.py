"""Write the SecAgg / SecAgg+ test vectors (``protocols/vectors/secagg_*.json``).

Every secret here is derived from a fixed, public master seed
(:class:`fedpriv.protocols.secagg.DerivedSecrets`), so the vectors are
reproducible; they are for checking an implementation byte for byte, never
keys to use.  Shamir shares and AES-GCM ciphertexts involve fresh randomness
(polynomial coefficients, nonces): their vectors give one recorded output,
which a checker verifies by reconstructing / decrypting, not by recomputing.

    python protocols/vectors/make_vectors.py      # rewrites the JSON files beside it

``tests/protocols/test_secagg_vectors.py`` checks the files against the code.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

import numpy as np

from fedpriv.protocols import ClientInput, RoundContext, crypto, run_round
from fedpriv.protocols.encoding import FixedPointSpec, encode
from fedpriv.protocols.secagg import (
    ENCRYPTION_INFO,
    MASK_INFO,
    DerivedSecrets,
    MaskedInput,
    SecAggConfig,
    SecAggFamily,
    SecAggPlusConfig,
    SecAggPlusProtocol,
    SecAggProtocol,
    SecAggServerView,
    advertise_payload,
    consistency_payload,
    encode_weight,
    pack_shares,
    round_binding,
    self_mask_commitment,
)
from fedpriv.protocols.secagg_graph import derive_graph_seed, harary_graph, ring_order
from fedpriv.protocols.shamir import split_secret

HERE = Path(__file__).resolve().parent
MASTER = b"fedpriv/secagg test vectors v1 -- public, never use as keys"


def words_json(words: np.ndarray, bits: int) -> list[Any]:
    """Return words as JSON: integers up to 32 bits, 16-digit hex strings above."""
    if bits <= 32:
        return [int(w) for w in words]
    return [f"{int(w):016x}" for w in words]


def words_digest(words: np.ndarray) -> str:
    """Return the SHA-256 of the words as little-endian bytes of their dtype."""
    return hashlib.sha256(words.astype(words.dtype.newbyteorder("<")).tobytes()).hexdigest()


def primitives() -> dict[str, Any]:
    """Return key agreement, mask, Shamir, AES-GCM, fixed-point and commitment vectors."""
    source = DerivedSecrets(MASTER)
    a_sk, a_pk = source.x25519(0, 0, "c")
    b_sk, b_pk = source.x25519(1, 0, "c")
    key_agreement = {
        "a_private": a_sk.hex(), "a_public": a_pk.hex(),
        "b_private": b_sk.hex(), "b_public": b_pk.hex(),
        "derived": {
            info.decode(): crypto.derive_key(a_sk, b_pk, info=info).hex()
            for info in (ENCRYPTION_INFO, MASK_INFO)
        },
    }
    masks = []
    for bits in (25, 32, 64):
        seed = source.self_mask_seed(bits, 0)
        full = crypto.expand_mask(seed, 1000, bits=bits)
        masks.append({
            "seed": seed.hex(), "bits": bits, "length": 1000,
            "first_words": words_json(full[:8], bits), "sha256_le": words_digest(full),
        })
    secret = source.self_mask_seed(7, 0)
    shares = split_secret(secret, threshold=3, share_ids=[0, 3, 5, 9, 12])
    shamir = {
        "secret": secret.hex(), "threshold": 3,
        "shares": {str(i): s.hex() for i, s in shares.items()},
        "note": "share of id i is the polynomial at x = i + 1 over GF(2^521 - 1), 66 bytes "
                "big-endian; any 3 shares reconstruct the secret",
    }
    enc_key = crypto.derive_key(a_sk, b_pk, info=ENCRYPTION_INFO)
    plaintext = pack_shares(0, 1, bytes(range(66)), bytes(range(66, 132)))
    aad = crypto.share_aad(0, 1, 5)
    aes_gcm = {
        "key": enc_key.hex(), "aad": aad.hex(), "plaintext": plaintext.hex(),
        "ciphertext": crypto.encrypt(enc_key, plaintext, aad=aad).hex(),
        "note": "ciphertext = nonce (12) || AES-256-GCM ciphertext || tag (16); the aad is "
                "share_aad(sender=0, receiver=1, round=5); the plaintext is pack_shares(...)",
    }
    spec = FixedPointSpec(clip=1.0, resolution=2**-20, max_clients=10)
    values = np.array([0.0, 0.5, -0.5, 1.0, -1.0, 3 * 2**-20, -(2**-20), 2.5, -7.0])
    words, stats = encode(values, spec, np.random.default_rng(0))  # exact: no rounding
    fixed_point = {
        "clip": 1.0, "resolution": 2**-20, "max_clients": 10, "clip_mode": "coordinate",
        "bits": spec.bits, "values": values.tolist(), "words": words_json(words, spec.bits),
        "clipped": stats.clipped,
        "weight_fraction_bits": spec.bits - int.bit_length(10) - 1,
        "weights": [1.0, 0.5, 0.001, 1e-9],
        "weight_words": [encode_weight(w, spec.bits - int.bit_length(10) - 1)
                         for w in (1.0, 0.5, 0.001, 1e-9)],
    }
    c_pk, s_pk = source.x25519(4, 2, "c")[1], source.x25519(4, 2, "s")[1]
    seed = source.self_mask_seed(4, 2)
    formats = {
        "advertise_payload": {"session_id": b"run-7".hex(), "round": 2, "client": 4,
                              "c_pk": c_pk.hex(), "s_pk": s_pk.hex(),
                              "payload": advertise_payload(b"run-7", 2, 4, c_pk, s_pk).hex()},
        "consistency_payload": {"session_id": b"run-7".hex(), "round": 2, "client": 4,
                                "survivors": [1, 4, 9, 30],
                                "payload": consistency_payload(b"run-7", 2, 4,
                                                               (9, 1, 30, 4)).hex()},
        "self_mask_commitment": {"round": 2, "client": 4, "seed": seed.hex(),
                                 "commitment": self_mask_commitment(2, 4, seed).hex()},
        "pack_shares": {"sender": 0, "receiver": 1, "mask_key_share": bytes(range(66)).hex(),
                        "seed_share": bytes(range(66, 132)).hex(), "plaintext": plaintext.hex()},
    }
    return {
        "description": "SecAgg primitives as fedpriv uses them (see protocols/secagg.md).",
        "x25519_hkdf": key_agreement, "masks": masks, "shamir": shamir, "aes_gcm": aes_gcm,
        "fixed_point": fixed_point, "formats": formats,
    }


def graphs() -> dict[str, Any]:
    """Return SecAgg+ ring orders and Harary graphs for fixed seeds."""
    cases = []
    for n, degree, seed in ((10, 4, bytes(32)), (12, 6, bytes(range(32))), (7, 6, b"\x07" * 32)):
        ids = list(range(100, 100 + n))
        graph = harary_graph(ids, degree, seed)
        cases.append({
            "participants": ids, "degree": degree, "seed": seed.hex(),
            "ring_order": list(ring_order(ids, seed)),
            "neighbours": {str(c): sorted(graph[c]) for c in ids},
        })
    source = DerivedSecrets(MASTER)
    advertised = [(c, source.x25519(c, 5, "c")[1], source.x25519(c, 5, "s")[1])
                  for c in (3, 8, 21)]
    seeds = [{
        "session_id": session.hex(), "round": 5,
        "advertised": [{"client": c, "c_pk": cp.hex(), "s_pk": sp.hex()}
                       for c, cp, sp in advertised],
        "seed": derive_graph_seed(round_binding(session, 5), advertised).hex(),
    } for session in (b"", b"run-7")]
    return {
        "description": "rank of client c = SHA-256(b'fedpriv/secagg+/graph/v1' || seed || "
                       "c as 8-byte big-endian signed); each client is joined to the degree/2 "
                       "clients before and after it on that ring (complete graph when "
                       "degree = n - 1).",
        "cases": cases,
        "seed_description": "seed = SHA-256(b'fedpriv/secagg+/graph-seed/v1' || len(session_id) "
                            "(1 byte) || session_id || round (8-byte big-endian signed) || for "
                            "each advertised client in increasing id: id (8-byte big-endian "
                            "signed) || c_pk || s_pk)",
        "seeds": seeds,
    }


def round_vector(
    proto: SecAggFamily, n: int, size: int, dropouts: dict[int, int]
) -> dict[str, Any]:
    """Run one round with derived secrets and record everything that does not depend on chance.

    Updates are multiples of 2^-10 and weights multiples of 2^-4, so every ``w·Δ`` is
    a multiple of the resolution 2^-20 and the encoding uses no rounding randomness.
    """
    source = proto.secret_source
    if not isinstance(source, DerivedSecrets):
        raise TypeError("round vectors need DerivedSecrets")
    round_index = 3
    ids = tuple(range(10, 10 + n))
    ctx = RoundContext(round=round_index, participants=ids, vector_size=size)
    rng = np.random.default_rng(1)
    inputs = {
        c: ClientInput(rng.integers(-1000, 1000, size) * 2.0**-10,
                       weight=float(rng.integers(1, 16)) / 16)
        for c in ids
    }
    result = run_round(proto, ctx, inputs, dropouts=dropouts)
    view = result.view
    if not isinstance(view, SecAggServerView):
        raise TypeError("expected a SecAggServerView")
    plan = proto.plan(ctx)
    masked = view.masked_inputs
    clients = {}
    for c in ids:
        c_sk, c_pk = source.x25519(c, round_index, "c")
        s_sk, s_pk = source.x25519(c, round_index, "s")
        entry: dict[str, Any] = {
            "update": inputs[c].update.tolist(), "weight": inputs[c].weight,
            "c_private": c_sk.hex(), "c_public": c_pk.hex(),
            "s_private": s_sk.hex(), "s_public": s_pk.hex(),
            "self_mask_seed": source.self_mask_seed(c, round_index).hex(),
            "dropout_phase": dropouts.get(c),
        }
        if c in masked:
            encoded, _ = encode(np.multiply(inputs[c].update, inputs[c].weight), plan.spec,
                                np.random.default_rng(0))
            weight_word = encode_weight(inputs[c].weight, plan.weight_bits)
            entry["encoded"] = [*words_json(encoded, plan.bits), weight_word]
            entry["pairwise_seeds"] = {
                str(j): crypto.derive_key(s_sk, source.x25519(j, round_index, "s")[1],
                                          info=MASK_INFO).hex()
                for j in sorted(view.neighbours[c])
                if dropouts.get(j, 9) > 1  # j shared its keys with c
            }
            entry["masked"] = words_json(masked[c], plan.bits)
        clients[str(c)] = entry
    return {
        "protocol": proto.name,
        "config": {f: getattr(proto.config, f) for f in proto.config.__dataclass_fields__},
        "master": MASTER.hex(), "round": round_index, "participants": list(ids),
        "vector_size": size, "dropouts": {str(c): p for c, p in dropouts.items()},
        "bits": plan.bits, "threshold": plan.threshold, "degree": plan.degree,
        "weight_fraction_bits": plan.weight_bits,
        "graph_seed": None if view.graph_seed is None else view.graph_seed.hex(),
        "neighbours": {str(c): sorted(view.neighbours[c]) for c in ids},
        "clients": clients,
        "survivors": list(result.survivors),
        "reconstructed_self_mask_seeds": {str(c): s.hex() for c, s in
                                          view.self_mask_seeds.items()},
        "reconstructed_mask_private_keys": {str(c): s.hex() for c, s in
                                            view.mask_private_keys.items()},
        "aggregate": result.aggregate.tolist(),
        "total_weight": result.total_weight,
        "bytes_up": {str(c): v for c, v in result.cost.bytes_up.items()},
        "bytes_down": {str(c): v for c, v in result.cost.bytes_down.items()},
        "message_types": [type(m).__name__ for m in view.transcript],
        "masked_input_nbytes": sorted({m.nbytes() for m in view.transcript
                                       if isinstance(m, MaskedInput)}),
    }


def rounds() -> dict[str, Any]:
    """Return one secagg and one secagg+ round, each with a client dropping after ShareKeys."""
    secagg = SecAggProtocol(SecAggConfig(), secret_source=DerivedSecrets(MASTER))
    plus = SecAggPlusProtocol(SecAggPlusConfig(degree=4), secret_source=DerivedSecrets(MASTER))
    return {
        "description": "complete rounds with secrets from DerivedSecrets(master): keys, seeds, "
                       "encodings, pairwise mask seeds and masked inputs are deterministic; "
                       "shares and ciphertexts are not recorded (they use fresh randomness). "
                       "Five phases since the ConsistencyCheck round (regenerated then: "
                       "message_types, bytes and the secagg+ graph seed changed).",
        "rounds": [round_vector(secagg, 4, 5, {12: 2}),
                   round_vector(plus, 9, 3, {11: 2, 15: 3})],
    }


def dumps(content: Any) -> str:
    """Return indented JSON with every list of scalars on one line."""
    text = json.dumps(content, indent=1)
    return re.sub(r"\[\s*([^\[\]{}]*?)\s*\]",
                  lambda m: "[" + ", ".join(v.strip() for v in m.group(1).split(",")) + "]"
                  if m.group(1).strip() else "[]", text)


def main() -> None:
    """Rewrite the three vector files."""
    for name, content in (("secagg_primitives.json", primitives()),
                          ("secagg_graph.json", graphs()),
                          ("secagg_rounds.json", rounds())):
        text = dumps(content)
        if json.loads(text) != content:
            raise RuntimeError(f"{name}: compacting the JSON changed its content")
        (HERE / name).write_text(text + "\n")


if __name__ == "__main__":
    main()
