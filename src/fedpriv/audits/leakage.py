"""A finished run's measured leakage: the attacks on the released model, scored against the truth.

The adversary here observes the final global model (what every federation
releases) and the public base model; it never sees which texts were trained
on. Membership inference scores an equal number of members (training records
of the clients) and non-members (their held-out records), both drawn with a
fixed seed, with every score of :func:`fedpriv.attacks.mia.mia_scores` (loss,
zlib, Min-K%, base-model reference); the labels only reach the metrics.
Canary exposure ranks each planted canary among its format's candidates.

What the *server* saw is attacked too:

* ``mia_update``: where the last round's view holds individual updates
  (``plain``), one client's members against its non-members by the loss change
  its update causes (:func:`fedpriv.attacks.mia.update_loss_change`).
* ``inversion``: a FedSGD probe round -- every client takes one SGD step on its
  first :data:`PROBE_BATCH` record(s), cut to :data:`PROBE_LENGTH` tokens, from
  the final global adapter, through the run's protocol and DP -- and DAGER on
  what the server observes: each client's update under ``plain``, the
  aggregate under secure aggregation (the noised one under distributed DP).
  The probe is a measurement, not a release: it is not trained on and not in
  the privacy accounting.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from peft import PeftModel
from transformers import PreTrainedTokenizerBase

from fedpriv.attacks.canary import canary_exposures, canary_report
from fedpriv.attacks.inversion import DagerSettings, dager
from fedpriv.attacks.metrics import evaluate_mia, mia_report, score_inversion
from fedpriv.attacks.mia import (
    SequenceScores,
    client_update,
    mia_scores,
    reference_score,
    sequence_scores,
    update_loss_change,
)
from fedpriv.audits.canary_audit import observation_block
from fedpriv.audits.epsilon import one_run_audit
from fedpriv.data import AuditCanaries, FederatedDataset
from fedpriv.dp.accounting import GaussianSteps, epsilon_group
from fedpriv.dp.config import DPPlan
from fedpriv.models import get_adapter_vector, set_adapter_vector
from fedpriv.protocols import ServerView
from fedpriv.train.batching import TokenIds, encode_texts
from fedpriv.train.loop import FederatedTrainer

logger = logging.getLogger(__name__)

OBSERVATION = "final global model (and the public base model as reference)"
MAX_MIA_EXAMPLES = 256
"""Members and non-members scored per run, each (a balanced, seeded subsample)."""


def paired_members(
    dataset: FederatedDataset, rng: np.random.Generator, limit: int,
) -> tuple[list[str], list[str]]:
    """Return equal numbers of member and non-member texts, drawn client by client.

    Each client contributes as many members as non-members (the smaller of its
    two counts, each drawn at random), and at most ``limit`` such pairs are
    kept, so both classes come from the same clients in the same numbers.
    Drawing the classes independently from the pooled records (as before)
    let the clients' own difficulty decide the AUC: with the untrained base
    model, 256 + 256 records of the cross-device population gave loss-attack
    AUCs from 0.42 to 0.54 across sampling seeds, where only chance (±0.03)
    should show.
    """
    pairs: list[tuple[str, str]] = []
    for client in dataset.clients:
        mem = [r.text for r in client.member_records]
        non = [r.text for r in client.nonmember_records]
        k = min(len(mem), len(non))
        if k:
            pick_m = rng.choice(len(mem), size=k, replace=False)
            pick_n = rng.choice(len(non), size=k, replace=False)
            pairs += [(mem[int(i)], non[int(j)]) for i, j in zip(pick_m, pick_n, strict=True)]
    if len(pairs) > limit:
        pairs = [pairs[int(i)] for i in sorted(rng.choice(len(pairs), size=limit, replace=False))]
    return [m for m, _ in pairs], [n for _, n in pairs]


def measure_leakage(
    model: PeftModel,
    tokenizer: PreTrainedTokenizerBase,
    dataset: FederatedDataset,
    *,
    max_length: int,
    device: torch.device,
    seed: int,
    batch_size: int = 32,
    shadows: Sequence[np.ndarray] = (),
) -> dict[str, Any]:
    """Return the run's ``leakage`` block: ``mia`` and, with canaries planted, ``canary``.

    ``model`` holds the run's final adapter; its base (adapter disabled) is the
    reference model.  ``shadows`` are adapter vectors of shadow models trained
    like the target on a public split (LiRA-offline, RMIA); the final adapter
    is put back afterwards.
    """
    rng = np.random.default_rng([seed, 0x1EA7])
    mem, non = paired_members(dataset, rng, MAX_MIA_EXAMPLES)
    leakage: dict[str, Any] = {}
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    if mem and non:
        texts = mem + non
        labels = np.array([True] * len(mem) + [False] * len(non))
        examples = encode_texts(tokenizer, texts, max_length)
        target = sequence_scores(model, examples, pad_id=pad_id, device=device,
                                 batch_size=batch_size)
        with model.disable_adapter():
            base = sequence_scores(model, examples, pad_id=pad_id, device=device,
                                   batch_size=batch_size)
        shadow_scores: list[SequenceScores] = []
        if shadows:
            final = get_adapter_vector(model)
            try:
                for vector in shadows:
                    set_adapter_vector(model, vector)
                    shadow_scores.append(sequence_scores(model, examples, pad_id=pad_id,
                                                         device=device, batch_size=batch_size))
            finally:
                set_adapter_vector(model, final)
        scores = mia_scores(target, texts, references={"base": base}, shadows=shadow_scores)
        results = [evaluate_mia(name, OBSERVATION, values, labels)
                   for name, values in scores.items()]
        leakage["mia"] = mia_report(results)
        best = max(results, key=lambda result: result.auc)
        leakage["mia"]["roc"] = {"fpr": [p[0] for p in best.roc], "tpr": [p[1] for p in best.roc]}
        leakage["mia"]["shadow_models"] = len(shadow_scores)
    if dataset.canaries:
        exposures = canary_exposures(model, tokenizer, dataset.canaries, device=device, rng=rng,
                                     max_length=max_length)
        leakage["canary"] = canary_report(exposures, observation="final global model")
    return leakage


AUDIT_RELATION_RECORD = "add/remove one record"
"""An audit canary trained on or not is one record added to or removed from a client."""
AUDIT_RELATION_CLIENT = "replace-one client"
"""Under client-level DP a canary inside an existing client changes that client's data: the
neighbouring datasets differ by one client's data replaced (the sum moves by up to 2C)."""


def audit_relation(mode: str, repetitions: int = 1) -> str:
    """Return the relation the one-run audit's canaries realise under DP ``mode``.

    A canary repeated ``repetitions`` times is that many records of one client:
    a group under sample-level DP, still one client's data otherwise.
    """
    if mode in ("user", "distributed"):
        return AUDIT_RELATION_CLIENT
    if repetitions > 1:
        return f"add/remove a group of {repetitions} copies of one record"
    return AUDIT_RELATION_RECORD


def audit_reference(plan: DPPlan | None, repetitions: int = 1) -> float | None:
    """Return the stated ε of the relation :func:`audit_relation` names (None without DP).

    Client-level DP: the replace-one ε (a canary inside an existing client
    replaces that client's data, however many copies it holds).  Sample-level
    DP: the run's ε, or for canaries repeated ``k`` times the group ε of ``k``
    records (:func:`fedpriv.dp.accounting.epsilon_group`, for the worst-off
    client's rate and steps).
    """
    if plan is None:
        return None
    if plan.mode in ("user", "distributed"):
        return plan.replace_one_epsilon if plan.replace_one_epsilon is not None else plan.epsilon
    if repetitions == 1:
        return plan.epsilon
    return epsilon_group([GaussianSteps(plan.noise_multiplier, plan.sample_rate, plan.steps)],
                         plan.config.delta, repetitions, plan.config.accountant)


def measure_epsilon(
    model: PeftModel,
    tokenizer: PreTrainedTokenizerBase,
    canaries: AuditCanaries,
    *,
    max_length: int,
    device: torch.device,
    delta: float,
    confidence: float,
    theoretical: float | None,
    batch_size: int = 32,
    relation: str = AUDIT_RELATION_RECORD,
    reference: float | None = None,
) -> dict[str, Any]:
    """Return ``empirical_epsilon`` and its ``epsilon_audit`` block (one-run audit).

    Every audit canary is scored by the loss drop from the base model to the
    final model (the adversary's observation); the inclusion flags only reach
    :func:`~fedpriv.audits.epsilon.one_run_audit`.  ``relation`` is the
    neighbouring relation the canaries realise and ``reference`` the ε the run
    states for that relation (``theoretical`` when None): the lower bound must
    stay at or below it, and ``violation`` says when it does not.
    """
    started = time.perf_counter()
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    examples = encode_texts(tokenizer, list(canaries.texts), max_length)
    target = sequence_scores(model, examples, pad_id=pad_id, device=device,
                             batch_size=batch_size)
    with model.disable_adapter():
        base = sequence_scores(model, examples, pad_id=pad_id, device=device,
                               batch_size=batch_size)
    scores = reference_score(target.losses, base.losses)
    audit = one_run_audit(scores, canaries.included, delta=delta, confidence=confidence)
    block = audit.to_report(theoretical=theoretical)
    reference = theoretical if reference is None else reference
    beside = observation_block(scores, np.asarray(canaries.included, dtype=bool),
                               observed=OBSERVATION, score=block["score"], delta=delta,
                               confidence=confidence, reference=reference, estimate=False,
                               audit=audit)
    for key in ("f_dp", "idealized_lower_bound", "idealized_lower_bound_f_dp"):
        block[key] = beside[key]
    block["relation"] = relation
    block["reference_epsilon"] = reference
    block["violation"] = reference is not None and audit.epsilon > reference
    block["seconds"] = time.perf_counter() - started
    return {"empirical_epsilon": audit.epsilon, "epsilon_audit": block}


PROBE_BATCH = 1
"""Records per client in the inversion probe's FedSGD step."""
PROBE_LENGTH = 24
"""Tokens per probe record (the first ones)."""
PROBE_LR = 0.1
"""The probe step's SGD learning rate."""
MAX_ATTACKED_CLIENTS = 2
"""Individual updates attacked per run (each costs a DAGER run)."""


def measure_update_mia(
    model: PeftModel, tokenizer: PreTrainedTokenizerBase, dataset: FederatedDataset,
    view: ServerView, global_vector: np.ndarray, *, max_length: int, device: torch.device,
    hide_client: bool = False,
) -> dict[str, Any] | None:
    """Membership of one client's records from its update in ``view``; ``None`` if hidden.

    The first surviving client with both members and non-members is attacked:
    its training records against its held-out ones, scored by the loss drop
    from the round's global adapter to global + its update.  ``hide_client``
    leaves the client's id out of the observation (its participation is secret).
    """
    if view.individual_updates is None:
        return None
    size = global_vector.size
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    for client in view.survivors:
        data = dataset.clients[client]
        members = [r.text for r in data.member_records]  # canaries aside
        nonmembers = [r.text for r in data.nonmember_records]
        n = min(len(members), len(nonmembers), MAX_MIA_EXAMPLES)
        if n == 0:
            continue
        texts = members[:n] + nonmembers[:n]
        labels = np.array([True] * n + [False] * n)
        update = client_update(view, client)[:size]  # user-level DP appends a clip bit
        scores = update_loss_change(model, global_vector, update,
                                    encode_texts(tokenizer, texts, max_length),
                                    pad_id=pad_id, device=device)
        observation = (  # under secret client sampling, the report must not say who took part
            f"one sampled client's update in the last round ({view.protocol}; which client is "
            "not named: client sampling is secret)" if hide_client else
            f"client {client}'s update in round {view.round} ({view.protocol})")
        return mia_report([evaluate_mia("loss_change", observation, scores, labels)])
    return None


def _observations(view: ServerView, trainer: FederatedTrainer,
                  clients: dict[int, list[TokenIds]]) -> list[tuple[str, np.ndarray,
                                                               list[TokenIds]]]:
    """Return what the server saw of the probe round: (description, update, true batch)."""
    if view.individual_updates is not None:
        picked = [c for c in view.survivors if clients.get(c)][:MAX_ATTACKED_CLIENTS]
        return [(f"client {c}'s update ({view.protocol}: the server sees each update)",
                 np.asarray(view.individual_updates[c], dtype=np.float64), clients[c])
                for c in picked]
    aggregate = np.asarray(view.aggregate, dtype=np.float64)
    if trainer.dist_dp is not None and view.total_weight is not None:
        mech = trainer.dist_dp
        aggregate = mech.server_decode(mech.residue_sum(view.aggregate, view.total_weight),
                                       view.round)
    truth = [ex for c in view.survivors for ex in clients.get(c, [])]
    return [(f"aggregate of {len(view.survivors)} clients ({view.protocol}: only the sum is "
             "revealed)", aggregate, truth)]


def _text(tokenizer: PreTrainedTokenizerBase, ids: Sequence[int]) -> str:
    return str(tokenizer.decode(list(ids), skip_special_tokens=True))


def measure_inversion(
    trainer: FederatedTrainer, tokenizer: PreTrainedTokenizerBase, dataset: FederatedDataset,
    global_vector: np.ndarray, *, seed: int,
) -> dict[str, Any]:
    """Run the FedSGD inversion probe through ``trainer``'s protocol and DP; DAGER on its view.

    ``trainer`` is a :class:`FederatedTrainer` built on the probe's client batches
    with one SGD step as local training (:func:`probe_trainer` in the runner).
    """
    outcome = trainer.probe_round(global_vector)
    setting = {"kind": "FedSGD probe round", "records_per_client": PROBE_BATCH,
               "tokens_per_record": PROBE_LENGTH, "lr": PROBE_LR, "attack": "dager"}
    if outcome.result is None:
        return {"attack": "dager", "setting": setting, "observed": "nothing (round aborted)",
                "error": outcome.aborted or "no client took part"}
    clients = {c: list(trainer.client_examples[c]) for c in range(len(dataset.clients))}
    results = []
    for description, update, batch in _observations(outcome.result.view, trainer, clients):
        recovery = dager(
            trainer.model, update, global_vector=global_vector, observation=description,
            bos_token_id=tokenizer.bos_token_id, batch_size=len(batch),
            settings=DagerSettings(max_length=PROBE_LENGTH, time_limit_s=60.0),
        )
        score = score_inversion(
            [_text(tokenizer, s) for s in recovery.sequences],
            [_text(tokenizer, s) for s in batch],
            recovered_tokens=recovery.token_ids,
            true_tokens=sorted({t for s in batch for t in s}),
        )
        entry = {"observed": description, **score.to_report(),
                 "seconds": round(recovery.seconds, 3),
                 "span_usable": bool(recovery.conditions.get("token_test_usable")),
                 "sequence_groups": len(recovery.conditions.get("sequence_groups", []))}
        results.append(entry)
    block: dict[str, Any] = {"attack": "dager", "setting": setting, "observations": results}
    for key in ("rouge1", "rouge2", "rougeL", "token_f1", "exact_rate"):
        block[key] = float(np.mean([r[key] for r in results])) if results else 0.0
    block["exact"] = block["exact_rate"]
    block["observed"] = results[0]["observed"] if results else "nothing"
    return block
