"""A finished run's measured leakage: the attacks on the released model, scored against the truth.

The adversary here observes the final global model (what every federation
releases) and the public base model; it never sees which texts were trained
on. Membership inference scores an equal number of members (training records
of the clients) and non-members (their held-out records), both drawn with a
fixed seed, with every score of :func:`fedpriv.attacks.mia.mia_scores` (loss,
zlib, Min-K%, base-model reference); the labels only reach the metrics.
Canary exposure ranks each planted canary among its format's candidates.
Attacks on what the *server* saw (inversion of the ServerView) come with the
inversion attacks.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch
from peft import PeftModel
from transformers import PreTrainedTokenizerBase

from fedpriv.attacks.canary import canary_exposures, canary_report
from fedpriv.attacks.metrics import evaluate_mia, mia_report
from fedpriv.attacks.mia import mia_scores, sequence_scores
from fedpriv.data import FederatedDataset
from fedpriv.train.batching import encode_texts

logger = logging.getLogger(__name__)

OBSERVATION = "final global model (and the public base model as reference)"
MAX_MIA_EXAMPLES = 256
"""Members and non-members scored per run, each (a balanced, seeded subsample)."""


def _balanced(members: list[str], nonmembers: list[str], rng: np.random.Generator,
              limit: int) -> tuple[list[str], list[str]]:
    n = min(len(members), len(nonmembers), limit)
    pick_m = rng.choice(len(members), size=n, replace=False)
    pick_n = rng.choice(len(nonmembers), size=n, replace=False)
    return [members[i] for i in sorted(pick_m)], [nonmembers[i] for i in sorted(pick_n)]


def measure_leakage(
    model: PeftModel,
    tokenizer: PreTrainedTokenizerBase,
    dataset: FederatedDataset,
    *,
    max_length: int,
    device: torch.device,
    seed: int,
    batch_size: int = 32,
) -> dict[str, Any]:
    """Return the run's ``leakage`` block: ``mia`` and, with canaries planted, ``canary``.

    ``model`` holds the run's final adapter; its base (adapter disabled) is the
    reference model.
    """
    rng = np.random.default_rng([seed, 0x1EA7])
    members = [r.text for c in dataset.clients for r in c.member_records]
    nonmembers = [r.text for c in dataset.clients for r in c.nonmember_records]
    leakage: dict[str, Any] = {}
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    if members and nonmembers:
        mem, non = _balanced(members, nonmembers, rng, MAX_MIA_EXAMPLES)
        texts = mem + non
        labels = np.array([True] * len(mem) + [False] * len(non))
        examples = encode_texts(tokenizer, texts, max_length)
        target = sequence_scores(model, examples, pad_id=pad_id, device=device,
                                 batch_size=batch_size)
        with model.disable_adapter():
            base = sequence_scores(model, examples, pad_id=pad_id, device=device,
                                   batch_size=batch_size)
        scores = mia_scores(target, texts, references={"base": base})
        leakage["mia"] = mia_report([
            evaluate_mia(name, OBSERVATION, values, labels) for name, values in scores.items()
        ])
    if dataset.canaries:
        exposures = canary_exposures(model, tokenizer, dataset.canaries, device=device, rng=rng,
                                     max_length=max_length)
        leakage["canary"] = canary_report(exposures, observation="final global model")
    return leakage
