"""The JSON test vectors in ``protocols/vectors/secagg_*.json`` match the code, byte for byte."""

from __future__ import annotations

import hashlib
import itertools
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fedpriv.protocols import (
    ClientInput,
    RoundContext,
    SecAggPlusConfig,
    SecAggPlusProtocol,
    SecAggProtocol,
    SecAggServerView,
    crypto,
    run_round,
)
from fedpriv.protocols.encoding import FixedPointSpec, decode_sum, encode, word_dtype
from fedpriv.protocols.secagg import (
    ENCRYPTION_INFO,
    MASK_INFO,
    DerivedSecrets,
    SecAggConfig,
    SecAggFamily,
    advertise_payload,
    consistency_payload,
    encode_weight,
    mask_input,
    pack_shares,
    pairwise_sign,
    round_binding,
    self_mask_commitment,
    unpack_shares,
    x25519_public,
)
from fedpriv.protocols.secagg_graph import derive_graph_seed, harary_graph, ring_order
from fedpriv.protocols.shamir import reconstruct_secret

VECTORS = Path(__file__).resolve().parents[2] / "protocols" / "vectors"


def load(name: str) -> dict[str, Any]:
    return json.loads((VECTORS / name).read_text())


def words(values: list[Any], bits: int) -> np.ndarray:
    dtype = word_dtype(bits)
    if bits <= 32:
        return np.array(values, dtype=dtype)
    return np.array([int(v, 16) for v in values], dtype=dtype)


def test_key_agreement_vectors() -> None:
    v = load("secagg_primitives.json")["x25519_hkdf"]
    a_sk, b_sk = bytes.fromhex(v["a_private"]), bytes.fromhex(v["b_private"])
    assert x25519_public(a_sk).hex() == v["a_public"]
    assert x25519_public(b_sk).hex() == v["b_public"]
    for info in (ENCRYPTION_INFO, MASK_INFO):
        expected = v["derived"][info.decode()]
        assert crypto.derive_key(a_sk, bytes.fromhex(v["b_public"]), info=info).hex() == expected
        assert crypto.derive_key(b_sk, bytes.fromhex(v["a_public"]), info=info).hex() == expected


def test_mask_vectors() -> None:
    for v in load("secagg_primitives.json")["masks"]:
        mask = crypto.expand_mask(bytes.fromhex(v["seed"]), v["length"], bits=v["bits"])
        np.testing.assert_array_equal(mask[:8], words(v["first_words"], v["bits"]))
        assert hashlib.sha256(mask.astype(mask.dtype.newbyteorder("<")).tobytes()).hexdigest() \
            == v["sha256_le"]


def test_shamir_vectors_reconstruct_from_every_threshold_subset() -> None:
    v = load("secagg_primitives.json")["shamir"]
    shares = {int(i): bytes.fromhex(s) for i, s in v["shares"].items()}
    for subset in itertools.combinations(shares, v["threshold"]):
        picked = {i: shares[i] for i in subset}
        assert reconstruct_secret(picked, threshold=v["threshold"]).hex() == v["secret"]
    assert reconstruct_secret(shares, threshold=v["threshold"]).hex() == v["secret"]


def test_aes_gcm_and_format_vectors() -> None:
    primitives = load("secagg_primitives.json")
    v = primitives["aes_gcm"]
    plaintext = crypto.decrypt(bytes.fromhex(v["key"]), bytes.fromhex(v["ciphertext"]),
                               aad=bytes.fromhex(v["aad"]))
    assert plaintext.hex() == v["plaintext"]
    assert crypto.share_aad(0, 1, 5).hex() == v["aad"]
    f = primitives["formats"]
    p = f["pack_shares"]
    key_share, seed_share = bytes.fromhex(p["mask_key_share"]), bytes.fromhex(p["seed_share"])
    assert pack_shares(p["sender"], p["receiver"], key_share, seed_share).hex() == p["plaintext"]
    assert unpack_shares(bytes.fromhex(p["plaintext"])) == (0, 1, key_share, seed_share)
    a = f["advertise_payload"]
    payload = advertise_payload(bytes.fromhex(a["session_id"]), a["round"], a["client"],
                                bytes.fromhex(a["c_pk"]), bytes.fromhex(a["s_pk"]))
    assert payload.hex() == a["payload"]
    c = f["consistency_payload"]
    payload = consistency_payload(bytes.fromhex(c["session_id"]), c["round"], c["client"],
                                  tuple(c["survivors"]))
    assert payload.hex() == c["payload"]
    c = f["self_mask_commitment"]
    commitment = self_mask_commitment(c["round"], c["client"], bytes.fromhex(c["seed"]))
    assert commitment.hex() == c["commitment"]


def test_fixed_point_vectors() -> None:
    v = load("secagg_primitives.json")["fixed_point"]
    spec = FixedPointSpec(clip=v["clip"], resolution=v["resolution"],
                          max_clients=v["max_clients"], clip_mode=v["clip_mode"])
    assert spec.bits == v["bits"]
    encoded, stats = encode(np.array(v["values"]), spec, np.random.default_rng(12345))
    np.testing.assert_array_equal(encoded, words(v["words"], spec.bits))
    assert stats.clipped == v["clipped"]
    assert [encode_weight(w, v["weight_fraction_bits"]) for w in v["weights"]] == \
        v["weight_words"]


def test_graph_vectors() -> None:
    for case in load("secagg_graph.json")["cases"]:
        seed = bytes.fromhex(case["seed"])
        assert list(ring_order(case["participants"], seed)) == case["ring_order"]
        graph = harary_graph(case["participants"], case["degree"], seed)
        assert {str(c): sorted(n) for c, n in graph.items()} == case["neighbours"]
    for case in load("secagg_graph.json")["seeds"]:
        binding = round_binding(bytes.fromhex(case["session_id"]), case["round"])
        advertised = [(a["client"], bytes.fromhex(a["c_pk"]), bytes.fromhex(a["s_pk"]))
                      for a in case["advertised"]]
        assert derive_graph_seed(binding, advertised).hex() == case["seed"]


def protocol_for(v: dict[str, Any]) -> SecAggFamily:
    source = DerivedSecrets(bytes.fromhex(v["master"]))
    if v["protocol"] == "secagg":
        return SecAggProtocol(SecAggConfig(**v["config"]), secret_source=source)
    return SecAggPlusProtocol(SecAggPlusConfig(**v["config"]), secret_source=source)


@pytest.mark.parametrize("index", [0, 1])
def test_round_vectors_rerun(index: int) -> None:
    v = load("secagg_rounds.json")["rounds"][index]
    proto = protocol_for(v)
    ctx = RoundContext(round=v["round"], participants=v["participants"],
                       vector_size=v["vector_size"])
    inputs = {int(c): ClientInput(np.array(e["update"]), e["weight"])
              for c, e in v["clients"].items()}
    dropouts = {int(c): p for c, p in v["dropouts"].items()}
    result = run_round(proto, ctx, inputs, dropouts=dropouts)
    view = result.view
    assert isinstance(view, SecAggServerView)
    plan = proto.plan(ctx)
    assert (plan.bits, plan.threshold, plan.degree, plan.weight_bits) == (
        v["bits"], v["threshold"], v["degree"], v["weight_fraction_bits"])
    assert (view.graph_seed.hex() if view.graph_seed else None) == v["graph_seed"]
    assert {str(c): sorted(n) for c, n in view.neighbours.items()} == v["neighbours"]
    assert list(result.survivors) == v["survivors"]
    for c, e in v["clients"].items():
        if "masked" in e:
            np.testing.assert_array_equal(view.masked_inputs[int(c)], words(e["masked"], v["bits"]))
    np.testing.assert_array_equal(result.aggregate, np.array(v["aggregate"]))
    assert result.total_weight == v["total_weight"]
    assert {str(c): s.hex() for c, s in view.self_mask_seeds.items()} == \
        v["reconstructed_self_mask_seeds"]
    assert {str(c): s.hex() for c, s in view.mask_private_keys.items()} == \
        v["reconstructed_mask_private_keys"]
    assert {str(c): b for c, b in result.cost.bytes_up.items()} == v["bytes_up"]
    assert {str(c): b for c, b in result.cost.bytes_down.items()} == v["bytes_down"]
    assert [type(m).__name__ for m in view.transcript] == v["message_types"]


@pytest.mark.parametrize("index", [0, 1])
def test_round_vectors_recompute_from_primitives(index: int) -> None:
    """Rebuild each masked input and the aggregate from the vector's own fields, no server code."""
    v = load("secagg_rounds.json")["rounds"][index]
    bits, spec_bits = v["bits"], v["bits"]
    clients = {int(c): e for c, e in v["clients"].items()}
    for c, e in clients.items():
        assert x25519_public(bytes.fromhex(e["s_private"])).hex() == e["s_public"]
        if "masked" not in e:
            continue
        for j, seed in e["pairwise_seeds"].items():
            derived = crypto.derive_key(bytes.fromhex(e["s_private"]),
                                        bytes.fromhex(clients[int(j)]["s_public"]), info=MASK_INFO)
            assert derived.hex() == seed
        masked = mask_input(
            words(e["encoded"], bits), client_id=c,
            self_mask_seed=bytes.fromhex(e["self_mask_seed"]),
            pairwise_seeds={int(j): bytes.fromhex(s) for j, s in e["pairwise_seeds"].items()},
            bits=bits,
        )
        np.testing.assert_array_equal(masked, words(e["masked"], bits))
    survivors = v["survivors"]
    total = np.zeros(v["vector_size"] + 1, dtype=word_dtype(bits))
    for c in survivors:
        total += words(clients[c]["masked"], bits)
        total -= crypto.expand_mask(bytes.fromhex(clients[c]["self_mask_seed"]), total.size,
                                    bits=bits)
        for j, seed in clients[c]["pairwise_seeds"].items():
            if int(j) not in survivors:  # j's pair mask does not cancel: remove it
                mask = crypto.expand_mask(bytes.fromhex(seed), total.size, bits=bits)
                total -= mask if pairwise_sign(c, int(j)) == 1 else -mask
    total &= word_dtype(bits).type((1 << bits) - 1)
    spec = FixedPointSpec(clip=v["config"]["clip"], resolution=v["config"]["resolution"],
                          max_clients=len(v["participants"]))
    assert spec.bits == spec_bits
    weight_sum = int(total[-1]) / 2 ** v["weight_fraction_bits"]
    np.testing.assert_array_equal(decode_sum(total[:-1], spec) / weight_sum, v["aggregate"])
    # Every input is a multiple of the resolution, so the aggregate is exact here.
    expected = sum(np.array(clients[c]["update"]) * clients[c]["weight"] for c in survivors)
    np.testing.assert_allclose(v["aggregate"], expected / weight_sum, rtol=0, atol=1e-12)
