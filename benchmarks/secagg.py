"""Benchmark: SecAgg / SecAgg+ cost per client and for the server, beside its bounds and Flower.

For every setting (n clients × L float32 coordinates drawn from N(0, 10⁻³) with a
fixed seed; 10 % of the clients, at least one, dropping *after sharing keys*, i.e.
at the start of the masked-input phase: the expensive case for the server, which
must then rebuild the dropped clients' pairwise masks) this runs, alternately in
one process (this machine is shared and noisy, so only numbers measured side by
side mean anything) and on the same vectors and dropout pattern:

* **fedpriv** ``run_round(create("secagg+"), …)`` with its default parameters (and
  ``"secagg"``, the complete graph, at n ≤ 50): ``client_s`` = mean of
  ``cost.client_seconds`` over the *surviving* clients (one client's key
  agreement, sharing, encoding, masking and unmasking reply; dropped clients stop
  early and would flatter the mean), ``server_s`` = ``cost.server_seconds``
  (routing, summing the masked inputs, reconstruction and unmasking),
  ``bytes_up_per_client`` = mean of ``cost.bytes_up`` over the survivors, beside
  ``float32_bytes`` = 4·L (a plain float32 upload);
* **client PRG bound** ``prg_bound_s``: the time to generate one surviving client's
  masks and nothing else — (1 + its number of neighbours k) ×
  ``crypto.expand_mask(seed, L, bits=…, out=buf)`` (AES-256-CTR keystream into one
  preallocated buffer);
* **server PRG bound** ``server_prg_bound_s``: the same for the masks the server
  had to regenerate in that round (``server_masks``: every survivor's self mask,
  plus each dropped client's pairwise mask with each surviving neighbour, counted
  from the round's ``ServerView``);
* **plain sum** ``plain_sum_s``: the plaintext numpy sum of the same n float32
  vectors (all n, as the target states; ``plain_sum_survivors_s`` sums only the
  survivors), the faster of ``np.sum(np.stack(v), axis=0)`` and an in-place
  ``acc += v`` loop (both recorded; the loop wins on this machine because it does
  not first copy all vectors into one fresh n × L array);
* **Flower** (``flwr``, the optional ``flower`` extra), its own SecAgg+ beside
  fedpriv's ``secagg+`` rows, on the same vectors and dropout pattern, with the
  same neighbourhood (``num_shares`` = k + 1: a client and its k neighbours, on the
  workflow's shuffled ring) and threshold; quantization: the workflow's default
  2²² levels and 2³² modulus, ``clipping_range`` 0.01 (10 σ), unit weights:

  - ``flower_client_s``: mean over the surviving clients of the summed wall time
    of the client mod's four stage functions, called directly on real inputs with
    a ``SecAggPlusState`` (from ``flwr.client.mod.secure_aggregation.secaggplus_mod``):
    ``_setup`` (two SECP384R1 key pairs), ``_share_keys`` (pycryptodome Shamir
    shares of the mask seed and key, ECDH + HKDF + Fernet per neighbour),
    ``_collect_masked_vectors`` (decrypt the shares, ``parameters_to_ndarrays``,
    weight, ``quantize``, ``pseudo_rand_gen`` masks after ECDH per neighbour,
    add/subtract, ``parameters_mod``, ``ndarray_to_bytes``) and ``_unmask``.
    Excluded: the ``secaggplus_mod`` wrapper around them (stage and config checks,
    ``ConfigRecord``/``Message`` building, state (de)serialisation), the
    ClientApp's own ``ndarrays_to_parameters`` of its update, and transport.
  - ``flower_server_s``: the server-side computation of ``SecAggPlusWorkflow``
    (``flwr.server.workflow.secure_aggregation.secaggplus_workflow``), re-run as
    exactly the same sequence of flwr primitive calls, because the workflow's stage
    methods need a ``Grid`` and a ``LegacyContext`` with a Strategy: forwarding the
    encrypted shares (the loop of ``share_keys_stage``), summing the masked vectors
    (``bytes_to_ndarray``, ``parameters_addition``, ``parameters_mod`` as in
    ``collect_masked_vectors_stage``) and unmasking as in ``unmask_stage``
    (``combine_shares`` per client, ``pseudo_rand_gen`` of every survivor's private
    mask and of every dropped client's pairwise masks after
    ``generate_shared_key``, ``parameters_subtraction``/``parameters_addition``,
    ``parameters_mod``, ``factor_extract``, ``dequantize``, offset and scale).
    Excluded: messages, the Grid/driver, the setup stage's neighbour graph,
    ``Strategy.aggregate_fit`` and history.  ``flower_server_unmask_s`` is the
    unmask part alone.
  - ``flower_bytes_up_per_client``: payload bytes a survivor produced (public keys,
    ciphertexts, ``np.save``-serialised int64 masked vector, shares), no framing.

  Flower's ``pseudo_rand_gen`` stretches a seed folded to 32 bits with
  ``numpy.random.RandomState`` (Mersenne Twister), which is not a cryptographic
  PRG; fedpriv's masks are AES-256-CTR.  Both aggregates are checked against the
  float64 mean of the survivors (``max_abs_err``, ``flower_max_abs_err``).

The ConsistencyCheck round (phase 3: a client checks the announced survivor set
and signs it; the server forwards each neighbourhood's signatures) is timed on its
own: ``consistency_client_s`` (mean over the survivors of their phase-3 call) and
``consistency_server_s`` (the server's phase-3 collect), by wrapping the sessions
(``PhaseTimer``); ``consistency_bytes_up_per_client`` is its upload.  With
``--signed``, a ``secagg+signed`` row runs the active-server mode as well (Ed25519
signing and verify keys, session id: signed advertisements and consistency checks,
t > ⅔ of a neighbourhood), without dropouts: that threshold tolerates only m − t of
them per neighbourhood of m = k + 1, which 10 % random dropouts exceed.

Targets at n=100, L=10⁶ (secagg+): client ≤ 3× PRG bound, server ≤ 3× plain sum,
both faster than Flower's, upload ≤ 1.05× float32 (ratios of medians).  Results
go to ``benchmarks/results/secagg.json`` (a row per protocol and setting, the
per-repeat samples in ``samples``).

    python benchmarks/secagg.py            # n ∈ {10, 50, 100}, L ∈ {1e5, 1e6}; ~3 min here
    python benchmarks/secagg.py --quick    # n=5, L=1000, for CI (Flower only if installed)
"""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import json
import math
import os
import random
import statistics
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

RESULTS = Path(__file__).parent / "results" / "secagg.json"
QUICK_RESULTS = Path(__file__).parent / "results" / "secagg.quick.json"  # not committed

DROPOUT_FRACTION = 0.1
UPDATE_STD = 1e-3  # LoRA-sized update entries
TARGET_SETTING = (100, 1_000_000)
TARGETS = {  # ratio of medians → most allowed; and both stacks' seconds < Flower's
    "client_over_prg_bound": 3.0,
    "server_over_plain_sum": 3.0,
    "upload_over_float32": 1.05,
}
# Flower's quantization: the workflow's default levels and modulus, a clip range above
# every entry of the vectors (10 σ), and unit weights (max_weight = num_examples = 1) so
# that the weighting factor does not eat quantization levels.
FLOWER_QUANTIZATION_RANGE = 2**22
FLOWER_MODULUS_RANGE = 2**32
FLOWER_CLIPPING_RANGE = 10 * UPDATE_STD
FLOWER_MAX_WEIGHT = 1.0


@dataclass(frozen=True)
class Setting:
    """One benchmark setting: n clients, vectors of L coordinates, how many repeats."""

    clients: int
    length: int
    repeats: int


def median_or_none(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def make_vectors(n: int, length: int, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.normal(0.0, UPDATE_STD, size=length).astype(np.float32) for _ in range(n)]


def dropout_pattern(n: int, seed: int) -> list[int]:
    """Return who drops after sharing keys: 10 % of n (at least one), for every stack alike."""
    rng = np.random.default_rng(seed)
    count = max(1, round(DROPOUT_FRACTION * n))
    return sorted(int(c) for c in rng.choice(n, size=count, replace=False))


def timed(call: Callable[[], Any]) -> tuple[Any, float]:
    start = time.perf_counter()
    value = call()
    return value, time.perf_counter() - start


# ---------------------------------------------------------------------------
# Baselines: plaintext sum and the PRG bound
# ---------------------------------------------------------------------------


def plain_sum_stack(vectors: list[np.ndarray]) -> np.ndarray:
    return np.sum(np.stack(vectors), axis=0)


def plain_sum_loop(vectors: list[np.ndarray]) -> np.ndarray:
    acc = vectors[0].copy()
    for vector in vectors[1:]:
        acc += vector
    return acc


def prg_bound(length: int, num_masks: int, bits: int) -> float:
    """Return the seconds to expand ``num_masks`` masks of ``length`` words, and nothing else."""
    from fedpriv.protocols.crypto import expand_mask
    from fedpriv.protocols.encoding import word_dtype

    seeds = [os.urandom(32) for _ in range(num_masks)]
    out = np.empty(length, dtype=word_dtype(bits))
    start = time.perf_counter()
    for seed in seeds:
        expand_mask(seed, length, bits=bits, out=out)
    return time.perf_counter() - start


# ---------------------------------------------------------------------------
# fedpriv
# ---------------------------------------------------------------------------


def fedpriv_available(name: str) -> str | None:
    """Return why ``create(name)`` fails, or None when the protocol is there."""
    try:
        from fedpriv.protocols import create

        create(name)
    except Exception as err:  # any failure means "not measured"
        return f"{type(err).__name__}: {err}"
    return None


CONSISTENCY_PHASE = 3
"""fedpriv's SecAgg(+) phase 3: the ConsistencyCheck round."""


class PhaseTimer:
    """Wraps a client or server session and adds up the seconds of each phase's call."""

    def __init__(self, inner: Any, seconds: dict[int, float]) -> None:
        self.inner, self.seconds = inner, seconds
        self.num_phases = getattr(inner, "num_phases", None)

    def _timed(self, phase: int, call: Any, *args: Any) -> Any:
        start = time.perf_counter()
        value = call(phase, *args)
        self.seconds[phase] = self.seconds.get(phase, 0.0) + time.perf_counter() - start
        return value

    def handle(self, phase: int, inbox: Any) -> Any:
        """Run the client session's phase, timed."""
        return self._timed(phase, self.inner.handle, inbox)

    def collect(self, phase: int, messages: Any) -> Any:
        """Run the server session's phase, timed."""
        return self._timed(phase, self.inner.collect, messages)

    def check_message(self, phase: int, client_id: int, message: Any) -> None:
        """Run the server session's boundary check of one client's message."""
        self.inner.check_message(phase, client_id, message)

    def stats(self) -> Any:
        """Return the client session's stats."""
        return self.inner.stats()

    def finish(self) -> Any:
        """Return the server session's result."""
        return self.inner.finish()

    def view(self) -> Any:
        """Return the server session's view."""
        return self.inner.view()


def signed_protocol(n: int) -> Any:
    """Return ``secagg+`` in active-server mode: Ed25519 keys for ``n`` clients, a session id."""
    from fedpriv.protocols import SecAggPlusProtocol, crypto

    pairs = {c: crypto.generate_ed25519() for c in range(n)}
    return SecAggPlusProtocol(signing_keys={c: p[0] for c, p in pairs.items()},
                              verify_keys={c: p[1] for c, p in pairs.items()},
                              session_id=b"benchmark-run")


class FedprivRunner:
    """One fedpriv protocol on one setting's inputs (inputs built once, outside the timing)."""

    def __init__(self, name: str, vectors: list[np.ndarray], dropped: list[int]) -> None:
        from fedpriv.protocols import ClientInput, RoundContext, create

        self.name = name
        n = len(vectors)
        # Defaults: clip 1.0, resolution 2^-20, t the least integer above 1/2 (2/3 signed)
        # of a neighbourhood.
        self.protocol = signed_protocol(n) if name == "secagg+signed" else create(name)
        if name == "secagg+signed":
            # t > 2/3 of a neighbourhood tolerates only m − t dropouts in each (4 of 15 at
            # n = 100), which 10 % random dropouts exceed: the signed rows drop no one.
            dropped = []
        self.round_index = 0
        self.ctx = RoundContext(round=0, participants=range(n), vector_size=vectors[0].shape[0])
        self.inputs = {c: ClientInput(v, weight=1.0) for c, v in enumerate(vectors)}
        self.dropouts = dict.fromkeys(dropped, MASKED_INPUT_PHASE)
        self.survivors = [c for c in range(n) if c not in self.dropouts]
        plan = self.protocol.plan(self.ctx)  # type: ignore[attr-defined]
        self.neighbours: int = plan.degree
        self.threshold: int = plan.threshold
        self.bits: int = plan.bits
        self.expected = np.mean(np.stack([vectors[c] for c in self.survivors]), axis=0,
                                dtype=np.float64)

    def run(self) -> dict[str, float]:
        """Run one round; return its costs (seconds, bytes) and the aggregate's error."""
        import dataclasses

        from fedpriv.protocols import run_round

        # Signing clients refuse a round they already started: number the repeats.
        ctx = dataclasses.replace(self.ctx, round=self.round_index)
        self.round_index += 1
        client_phases: dict[int, dict[int, float]] = {}
        server_phases: dict[int, float] = {}
        protocol = self.protocol
        make_client, make_server = type(protocol).client, type(protocol).server
        protocol.client = lambda c, x, d: PhaseTimer(  # type: ignore[method-assign]
            make_client(protocol, c, x, d), client_phases.setdefault(c, {}))
        protocol.server = lambda x: PhaseTimer(  # type: ignore[method-assign]
            make_server(protocol, x), server_phases)
        try:
            result = run_round(protocol, ctx, self.inputs, dropouts=self.dropouts)
        finally:
            del protocol.client, protocol.server
        cost = result.cost
        if tuple(result.survivors) != tuple(self.survivors):
            raise RuntimeError(f"{self.name}: survivors {result.survivors} != {self.survivors}")
        return {
            "server_masks": float(server_mask_count(result.view)),
            "client_s": statistics.fmean(cost.client_seconds[c] for c in self.survivors),
            "client_s_max": max(cost.client_seconds[c] for c in self.survivors),
            "server_s": cost.server_seconds,
            "bytes_up_per_client": statistics.fmean(cost.bytes_up[c] for c in self.survivors),
            "bytes_down_per_client": statistics.fmean(
                cost.bytes_down[c] for c in self.survivors),
            "consistency_client_s": statistics.fmean(
                client_phases[c].get(CONSISTENCY_PHASE, 0.0) for c in self.survivors),
            "consistency_server_s": server_phases.get(CONSISTENCY_PHASE, 0.0),
            "consistency_bytes_up_per_client": statistics.fmean(
                m.nbytes() for m in result.view.transcript
                if type(m).__name__ == "ConsistencySignature"),
            "max_abs_err": float(np.max(np.abs(np.asarray(result.aggregate, np.float64)
                                               - self.expected))),
        }


def server_mask_count(view: Any) -> int:
    """Return how many masks the server regenerated in the round that ``view`` records.

    Each survivor's self mask, and each dropped client's pairwise mask with every
    surviving neighbour (the neighbours that added it).
    """
    survivors = set(view.survivors)
    pairwise = sum(len(view.neighbours[d] & survivors) for d in view.mask_private_keys)
    return len(survivors) + pairwise


# Phase 2 of fedpriv's SecAgg(+) is MaskedInput (0 advertise keys, 1 share keys, 3
# consistency check, 4 unmask):
# a client that vanishes at its start has shared its keys but sends no masked input.
MASKED_INPUT_PHASE = 2


# ---------------------------------------------------------------------------
# Flower's SecAgg+
# ---------------------------------------------------------------------------


def flower_version() -> str | None:
    try:
        import flwr.client.mod.secure_aggregation.secaggplus_mod  # noqa: F401
    except ImportError:
        return None
    return importlib.metadata.version("flwr")


class FlowerRunner:
    """Flower's SecAgg+ on one setting: the client mod's stage functions and the server's steps.

    ``num_shares`` and ``threshold`` are the workflow's parameters (shares include the
    client's own, so ``num_shares`` = neighbours + 1); the neighbour graph is built as
    in ``SecAggPlusWorkflow.setup_stage`` (a shuffled ring), with a seeded shuffle.
    """

    def __init__(self, vectors: list[np.ndarray], dropped: list[int], *, num_shares: int,
                 threshold: int, seed: int) -> None:
        from flwr.common import ndarrays_to_parameters

        n = len(vectors)
        self.nids = list(range(n))
        if num_shares < n and num_shares % 2 == 0:
            num_shares += 1  # what setup_stage does with an even number of shares
        self.num_shares = min(num_shares, n)
        self.threshold = threshold
        self.dropped = set(dropped)
        self.survivors = [c for c in self.nids if c not in self.dropped]
        # The ClientApp's own serialisation of its update (not timed: not SecAgg+ work).
        self.parameters = {c: ndarrays_to_parameters([v]) for c, v in enumerate(vectors)}
        shuffled = list(self.nids)
        random.Random(seed).shuffle(shuffled)
        half = self.num_shares >> 1
        self.neighbours = {
            nid: {shuffled[(i + off) % n] for off in range(-half, half + 1)}
            for i, nid in enumerate(shuffled)
        }
        self.expected = np.mean(np.stack([vectors[c] for c in self.survivors]), axis=0,
                                dtype=np.float64)

    def run(self) -> dict[str, float]:
        """Run one round; return the per-client and server seconds, bytes and error."""
        # The package re-exports a function of the same name; the module holds the stages.
        mod = importlib.import_module("flwr.client.mod.secure_aggregation.secaggplus_mod")
        from flwr.common.secure_aggregation.secaggplus_constants import Key

        client_s = dict.fromkeys(self.nids, 0.0)

        def client_stage(nid: int, call: Callable[[], Any]) -> Any:
            value, seconds = timed(call)
            client_s[nid] += seconds
            return value

        # Stage 0, setup: every sampled client makes its key pairs.
        states = {}
        public_keys = {}
        for nid in self.nids:
            state = mod.SecAggPlusState()
            state.nid = nid
            configs = {
                Key.SAMPLE_NUMBER: len(self.nids),
                Key.SHARE_NUMBER: self.num_shares,
                Key.THRESHOLD: self.threshold,
                Key.CLIPPING_RANGE: FLOWER_CLIPPING_RANGE,
                Key.TARGET_RANGE: FLOWER_QUANTIZATION_RANGE,
                Key.MOD_RANGE: FLOWER_MODULUS_RANGE,
                Key.MAX_WEIGHT: FLOWER_MAX_WEIGHT,
            }
            reply = client_stage(nid, lambda s=state, c=configs: mod._setup(s, c))
            states[nid] = state
            public_keys[nid] = [reply[Key.PUBLIC_KEY_1], reply[Key.PUBLIC_KEY_2]]

        # Stage 1, share keys: each client gets its neighbours' public keys.
        share_replies = {}
        for nid in self.nids:
            configs = {str(m): public_keys[m] for m in self.neighbours[nid]}
            share_replies[nid] = client_stage(
                nid, lambda s=states[nid], c=configs: mod._share_keys(s, c))

        # The dropped clients vanish here, after sharing keys.
        active = set(self.survivors)
        forward, server_forward_s = timed(lambda: flower_forward(share_replies, self.nids))

        # Stage 2, collect masked vectors.
        masked = {}
        for nid in self.survivors:
            srcs, ciphertexts = forward[nid]
            configs = {Key.CIPHERTEXT_LIST: ciphertexts, Key.SOURCE_LIST: srcs}
            reply = client_stage(nid, lambda s=states[nid], c=configs, p=self.parameters[nid]:
                                 mod._collect_masked_vectors(s, c, 1, p))
            masked[nid] = reply[Key.MASKED_PARAMETERS]
        masked_sum, server_sum_s = timed(lambda: flower_sum(masked))

        # Stage 3, unmask: survivors send the shares the server asks for.
        dead = set(self.nids) - active
        unmask_replies = {}
        for nid in self.survivors:
            configs = {
                Key.ACTIVE_NODE_ID_LIST: list(self.neighbours[nid] & active),
                Key.DEAD_NODE_ID_LIST: list(self.neighbours[nid] & dead),
            }
            unmask_replies[nid] = client_stage(
                nid, lambda s=states[nid], c=configs: mod._unmask(s, c))
        aggregate, server_unmask_s = timed(lambda: flower_unmask(
            masked_sum, unmask_replies, self.nids, active, self.neighbours, public_keys,
            self.threshold))

        upload = {
            nid: sum(len(b) for b in public_keys[nid])
            + sum(len(b) for b in share_replies[nid][Key.CIPHERTEXT_LIST])
            + sum(len(b) for b in masked[nid])
            + sum(len(b) for b in unmask_replies[nid][Key.SHARE_LIST])
            for nid in self.survivors
        }
        return {
            "flower_client_s": statistics.fmean(client_s[c] for c in self.survivors),
            "flower_server_s": server_forward_s + server_sum_s + server_unmask_s,
            "flower_server_unmask_s": server_unmask_s,
            "flower_bytes_up_per_client": statistics.fmean(upload.values()),
            "flower_max_abs_err": float(np.max(np.abs(aggregate - self.expected))),
        }


def flower_forward(share_replies: Mapping[int, Any], nids: list[int]
                   ) -> dict[int, tuple[list[int], list[bytes]]]:
    """Route the encrypted shares as the loop of ``SecAggPlusWorkflow.share_keys_stage`` does."""
    from flwr.common.secure_aggregation.secaggplus_constants import Key

    srcs: list[int] = []
    dsts: list[int] = []
    ciphertexts: list[bytes] = []
    fwd_ciphertexts: dict[int, list[bytes]] = {nid: [] for nid in nids}
    fwd_srcs: dict[int, list[int]] = {nid: [] for nid in nids}
    for node_id, res_dict in share_replies.items():
        dst_lst = res_dict[Key.DESTINATION_LIST]
        srcs += [node_id] * len(dst_lst)
        dsts += dst_lst
        ciphertexts += res_dict[Key.CIPHERTEXT_LIST]
    for src, dst, ciphertext in zip(srcs, dsts, ciphertexts, strict=True):
        if dst in fwd_ciphertexts:
            fwd_ciphertexts[dst].append(ciphertext)
            fwd_srcs[dst].append(src)
    return {nid: (fwd_srcs[nid], fwd_ciphertexts[nid]) for nid in nids}


def flower_sum(masked: Mapping[int, list[bytes]]) -> list[np.ndarray]:
    """Sum the masked vectors as ``SecAggPlusWorkflow.collect_masked_vectors_stage`` does."""
    from flwr.common import bytes_to_ndarray
    from flwr.common.secure_aggregation.ndarrays_arithmetic import (
        parameters_addition,
        parameters_mod,
    )

    masked_vector = None
    for bytes_list in masked.values():
        client_masked_vec = [bytes_to_ndarray(b) for b in bytes_list]
        if masked_vector is None:
            masked_vector = client_masked_vec
        else:
            masked_vector = parameters_addition(masked_vector, client_masked_vec)
    assert masked_vector is not None
    return parameters_mod(masked_vector, FLOWER_MODULUS_RANGE)


def flower_unmask(masked_vector: list[np.ndarray], unmask_replies: Mapping[int, Any],
                  sampled: list[int], active: set[int], nid_to_neighbours: Mapping[int, set[int]],
                  public_keys: Mapping[int, list[bytes]], threshold: int) -> np.ndarray:
    """Unmask and dequantize as ``SecAggPlusWorkflow.unmask_stage`` does, call for call."""
    from flwr.common.secure_aggregation.crypto.shamir import combine_shares
    from flwr.common.secure_aggregation.crypto.symmetric_encryption import generate_shared_key
    from flwr.common.secure_aggregation.ndarrays_arithmetic import (
        factor_extract,
        get_parameters_shape,
        parameters_addition,
        parameters_mod,
        parameters_subtraction,
    )
    from flwr.common.secure_aggregation.quantization import dequantize
    from flwr.common.secure_aggregation.secaggplus_constants import Key
    from flwr.common.secure_aggregation.secaggplus_utils import pseudo_rand_gen
    from flwr.supercore.primitives.asymmetric import bytes_to_private_key, bytes_to_public_key

    collected_shares_dict: dict[int, list[bytes]] = {nid: [] for nid in sampled}
    for res_dict in unmask_replies.values():
        for owner_nid, share in zip(res_dict[Key.NODE_ID_LIST], res_dict[Key.SHARE_LIST],
                                    strict=True):
            collected_shares_dict[owner_nid].append(share)
    for nid, share_list in collected_shares_dict.items():
        if len(share_list) < threshold:
            raise RuntimeError(f"Flower unmask: {len(share_list)} shares for node {nid}")
        secret = combine_shares(share_list)
        if nid in active:
            private_mask = pseudo_rand_gen(
                secret, FLOWER_MODULUS_RANGE, get_parameters_shape(masked_vector))
            masked_vector = parameters_subtraction(masked_vector, private_mask)
        else:
            neighbours = set(nid_to_neighbours[nid])  # the workflow mutates its own copy
            neighbours.remove(nid)
            for neighbor_nid in neighbours:
                shared_key = generate_shared_key(
                    bytes_to_private_key(secret),
                    bytes_to_public_key(public_keys[neighbor_nid][0]),
                )
                pairwise_mask = pseudo_rand_gen(
                    shared_key, FLOWER_MODULUS_RANGE, get_parameters_shape(masked_vector))
                if nid > neighbor_nid:
                    masked_vector = parameters_addition(masked_vector, pairwise_mask)
                else:
                    masked_vector = parameters_subtraction(masked_vector, pairwise_mask)
    recon_parameters = parameters_mod(masked_vector, FLOWER_MODULUS_RANGE)
    q_total_ratio, recon_parameters = factor_extract(recon_parameters)
    inv_dq_total_ratio = FLOWER_QUANTIZATION_RANGE / q_total_ratio
    aggregated_vector = dequantize(
        recon_parameters, FLOWER_CLIPPING_RANGE, FLOWER_QUANTIZATION_RANGE)
    offset = -(len(active) - 1) * FLOWER_CLIPPING_RANGE
    for vec in aggregated_vector:
        vec += offset
        vec *= inv_dq_total_ratio
    return aggregated_vector[0]


# ---------------------------------------------------------------------------
# The run
# ---------------------------------------------------------------------------

FEDPRIV_KEYS = ("client_s", "client_s_max", "server_s", "server_masks", "server_prg_bound_s",
                "bytes_up_per_client", "bytes_down_per_client", "consistency_client_s",
                "consistency_server_s", "consistency_bytes_up_per_client", "max_abs_err")
FLOWER_KEYS = ("flower_client_s", "flower_server_s", "flower_server_unmask_s",
               "flower_bytes_up_per_client", "flower_max_abs_err")


def measure_setting(setting: Setting, protocols: list[str], flower: bool, seed: int
                    ) -> list[dict[str, Any]]:
    """Measure every protocol of ``protocols`` on one setting, alternating; a row per protocol."""
    n, length = setting.clients, setting.length
    vectors = make_vectors(n, length, seed)
    dropped = dropout_pattern(n, seed + 1)
    runners = {name: FedprivRunner(name, vectors, dropped) for name in protocols}
    flowers: dict[str, FlowerRunner] = {}
    samples: dict[str, dict[str, list[float]]] = {name: {} for name in protocols}

    def record(name: str, values: Mapping[str, float]) -> None:
        for key, value in values.items():
            samples[name].setdefault(key, []).append(value)

    if flower and "secagg+" in runners:  # Flower's SecAgg+ beside fedpriv's secagg+ only
        for name, runner in [("secagg+", runners["secagg+"])]:
            flowers[name] = FlowerRunner(vectors, dropped, num_shares=runner.neighbours + 1,
                                         threshold=runner.threshold, seed=seed)
    plain: dict[str, list[float]] = {"plain_sum_stack_s": [], "plain_sum_loop_s": [],
                                     "plain_sum_survivors_s": []}
    survivors = [vectors[c] for c in range(n) if c not in set(dropped)]
    for _ in range(setting.repeats):
        for name, runner in runners.items():
            values = runner.run()
            record(name, values)
            record(name, {
                "prg_bound_s": prg_bound(length, 1 + runner.neighbours, runner.bits),
                "server_prg_bound_s": prg_bound(length, int(values["server_masks"]), runner.bits),
            })
        plain["plain_sum_stack_s"].append(timed(lambda: plain_sum_stack(vectors))[1])
        plain["plain_sum_loop_s"].append(timed(lambda: plain_sum_loop(vectors))[1])
        plain["plain_sum_survivors_s"].append(timed(lambda: plain_sum_loop(survivors))[1])
        for name, flower_runner in flowers.items():
            record(name, flower_runner.run())

    plain_medians = {key: statistics.median(values) for key, values in plain.items()}
    method = min(("stack", "loop"), key=lambda m: plain_medians[f"plain_sum_{m}_s"])
    rows = []
    for name, runner in runners.items():
        medians = {key: median_or_none(values) for key, values in samples[name].items()}
        row: dict[str, Any] = {
            "protocol": name,
            "clients": n,
            "length": length,
            "repeats": setting.repeats,
            "dropped": len(runner.dropouts),
            "dropout_phase": next(iter(runner.dropouts.values()), None),
            "neighbours": runner.neighbours,
            "threshold": runner.threshold,
            "bits": runner.bits,
            "fedpriv_measured": True,
        }
        row.update({key: medians.get(key) for key in FEDPRIV_KEYS})
        row["float32_bytes"] = 4 * length
        row["upload_over_float32"] = ratio(row["bytes_up_per_client"], row["float32_bytes"])
        row["prg_bound_s"] = medians["prg_bound_s"]
        row["plain_sum_s"] = plain_medians[f"plain_sum_{method}_s"]
        row["plain_sum_method"] = method
        row.update(plain_medians)
        if name in flowers:
            row["flower_num_shares"] = flowers[name].num_shares
        row.update({key: medians.get(key) for key in FLOWER_KEYS})
        row.update(derived_ratios(row))
        row["samples"] = samples[name] | {k: v for k, v in plain.items()}
        rows.append(row)
    return rows


def derived_ratios(row: Mapping[str, Any]) -> dict[str, float | None]:
    return {
        "client_over_prg_bound": ratio(row["client_s"], row["prg_bound_s"]),
        "server_over_plain_sum": ratio(row["server_s"], row["plain_sum_s"]),
        "server_over_server_prg_bound": ratio(row["server_s"], row["server_prg_bound_s"]),
        "client_over_flower": ratio(row["client_s"], row["flower_client_s"]),
        "server_over_flower": ratio(row["server_s"], row["flower_server_s"]),
    }


def unmeasured_setting(setting: Setting, protocols: list[str], flower: bool, seed: int,
                       reason: str) -> list[dict[str, Any]]:
    """Rows for a setting whose fedpriv protocol is missing: baselines and Flower only."""
    n, length = setting.clients, setting.length
    vectors = make_vectors(n, length, seed)
    dropped = dropout_pattern(n, seed + 1)
    rows = []
    for name in protocols:
        neighbours = n - 1 if name == "secagg" else min(2 * math.ceil(math.log2(n)), n - 1)
        threshold = max(2, math.ceil((neighbours + 1) / 2))
        flower_samples: dict[str, list[float]] = {}
        prg: list[float] = []
        stack: list[float] = []
        loop: list[float] = []
        runner = (FlowerRunner(vectors, dropped, num_shares=neighbours + 1, threshold=threshold,
                               seed=seed) if flower else None)
        for _ in range(setting.repeats):
            prg.append(prg_bound(length, 1 + neighbours, 32))
            stack.append(timed(lambda: plain_sum_stack(vectors))[1])
            loop.append(timed(lambda: plain_sum_loop(vectors))[1])
            if runner is not None:
                for key, value in runner.run().items():
                    flower_samples.setdefault(key, []).append(value)
        plain_s = min(statistics.median(stack), statistics.median(loop))
        row: dict[str, Any] = {
            "protocol": name, "clients": n, "length": length, "repeats": setting.repeats,
            "dropped": len(dropped), "dropout_phase": None, "neighbours": neighbours,
            "threshold": threshold, "bits": 32, "fedpriv_measured": False,
            "not_measured_reason": reason,
        }
        row.update(dict.fromkeys(FEDPRIV_KEYS))
        row.update({"float32_bytes": 4 * length, "upload_over_float32": None,
                    "prg_bound_s": statistics.median(prg), "plain_sum_s": plain_s,
                    "plain_sum_stack_s": statistics.median(stack),
                    "plain_sum_loop_s": statistics.median(loop)})
        row.update({key: median_or_none(flower_samples.get(key, [])) for key in FLOWER_KEYS})
        row.update(derived_ratios(row))
        rows.append(row)
    return rows


def check_targets(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Return the four targets at n=100, L=10⁶ for secagg+ (None where a number is missing)."""
    n, length = TARGET_SETTING
    row = next((r for r in rows if r["protocol"] == "secagg+" and r["clients"] == n
                and r["length"] == length), None)
    if row is None:
        return {}

    def verdict(value: float | None, limit: float) -> str:
        return "NOT MEASURED" if value is None else ("PASS" if value <= limit else "FAIL")

    faster = None
    if None not in (row["client_over_flower"], row["server_over_flower"]):
        faster = max(row["client_over_flower"], row["server_over_flower"])
    targets: dict[str, Any] = {
        key: {"value": row[key], "limit": limit, "verdict": verdict(row[key], limit)}
        for key, limit in TARGETS.items()
    }
    targets["faster_than_flower"] = {
        "value": faster, "limit": 1.0,
        "client_over_flower": row["client_over_flower"],
        "server_over_flower": row["server_over_flower"],
        "verdict": "NOT MEASURED" if faster is None else ("PASS" if faster < 1.0 else "FAIL"),
    }
    return targets


def fmt(value: float | None, spec: str) -> str:
    return "—" if value is None else format(value, spec)


def markdown_table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| protocol | n | L | k | client s | PRG bound s | client / PRG | server s | plain sum s "
        "| server / plain | server PRG bound s | bytes up / 4L | Flower client s | Flower server s "
        "| client / Flower | server / Flower |",
        "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['protocol']} | {r['clients']} | {r['length']:.0e} | {r['neighbours']} "
            f"| {fmt(r['client_s'], '.3g')} | {fmt(r['prg_bound_s'], '.3g')} "
            f"| {fmt(r['client_over_prg_bound'], '.2f')} | {fmt(r['server_s'], '.3g')} "
            f"| {fmt(r['plain_sum_s'], '.3g')} | {fmt(r['server_over_plain_sum'], '.2f')} "
            f"| {fmt(r['server_prg_bound_s'], '.3g')} "
            f"| {fmt(r['upload_over_float32'], '.3f')} | {fmt(r['flower_client_s'], '.3g')} "
            f"| {fmt(r['flower_server_s'], '.3g')} | {fmt(r['client_over_flower'], '.2f')} "
            f"| {fmt(r['server_over_flower'], '.2f')} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, nargs="+", default=[10, 50, 100])
    parser.add_argument("--lengths", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--repeats", type=int, default=5, help="repeats of the small settings")
    parser.add_argument("--big-repeats", type=int, default=3,
                        help="repeats of settings with n·L ≥ 10⁷ (each takes tens of seconds)")
    parser.add_argument("--secagg-max-clients", type=int, default=50,
                        help="also run plain SecAgg (complete graph) up to this many clients")
    parser.add_argument("--no-flower", action="store_true", help="skip Flower's SecAgg+")
    parser.add_argument("--signed", action="store_true",
                        help="also run secagg+ in active-server mode (secagg+signed rows)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="tiny sizes, for CI")
    parser.add_argument("--out", type=Path, default=None,
                        help=f"result file (default {RESULTS.name}; "
                             f"{QUICK_RESULTS.name} with --quick)")
    args = parser.parse_args()
    if args.quick:
        args.clients, args.lengths, args.repeats, args.big_repeats = [5], [1000], 1, 1
    if args.out is None:
        args.out = QUICK_RESULTS if args.quick else RESULTS

    flwr_version = None if args.no_flower else flower_version()
    if flwr_version is None and not args.no_flower:
        print("flwr is not installed (pip install 'fedpriv[flower]'): Flower columns skipped")
    missing = {name: fedpriv_available(name) for name in ("secagg+", "secagg")}
    missing["secagg+signed"] = missing["secagg+"]
    for name, reason in missing.items():
        if reason is not None:
            print(f"fedpriv protocol {name!r} is not available, its columns are not measured: "
                  f"{reason}")

    rows: list[dict[str, Any]] = []
    started = time.perf_counter()
    for length in args.lengths:
        for n in args.clients:
            big = n * length >= 10_000_000
            setting = Setting(n, length, args.big_repeats if big else args.repeats)
            protocols = ["secagg+"] + (["secagg"] if n <= args.secagg_max_clients else []) + (
                ["secagg+signed"] if args.signed else [])
            measured = [p for p in protocols if missing[p] is None]
            unmeasured = [p for p in protocols if missing[p] is not None]
            t0 = time.perf_counter()
            if measured:
                rows += measure_setting(setting, measured, flwr_version is not None, args.seed)
            if unmeasured:
                rows += unmeasured_setting(setting, unmeasured, flwr_version is not None,
                                           args.seed, "; ".join(
                                               f"{p}: {missing[p]}" for p in unmeasured))
            print(f"n={n:>4} L={length:>8}: {setting.repeats} repeats in "
                  f"{time.perf_counter() - t0:.1f} s", flush=True)

    targets = check_targets(rows)
    result = {
        "benchmark": "secagg",
        "quick": args.quick,
        "dropout_fraction": DROPOUT_FRACTION,
        "dropout_when": "after sharing keys, before the masked-input phase",
        "update_std": UPDATE_STD,
        "seed": args.seed,
        "flwr_version": flwr_version,
        "flower_params": None if flwr_version is None else {
            "clipping_range": FLOWER_CLIPPING_RANGE,
            "quantization_range": FLOWER_QUANTIZATION_RANGE,
            "modulus_range": FLOWER_MODULUS_RANGE,
            "max_weight": FLOWER_MAX_WEIGHT,
        },
        "numpy_version": np.__version__,
        "cpu_count": os.cpu_count(),
        "wall_s": time.perf_counter() - started,
        "rows": rows,
        "targets": targets,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(markdown_table(rows))
    for key, target in targets.items():
        if key == "faster_than_flower":
            print(f"{key}: client / Flower = {fmt(target['client_over_flower'], '.3f')}, "
                  f"server / Flower = {fmt(target['server_over_flower'], '.3f')}  "
                  f"(target both < 1)  -> {target['verdict']}")
        else:
            print(f"{key} = {fmt(target['value'], '.3f')}  (target <= {target['limit']})"
                  f"  -> {target['verdict']}")
    print(f"-> {args.out}")


if __name__ == "__main__":
    main()
