"""Canary exposure and greedy extraction on a tiny model trained on a repeated canary."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pytest
import torch
from peft import PeftModel
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from fedpriv.attacks.canary import (
    canary_exposures,
    canary_report,
    extraction_hits,
    greedy_extract,
    random_exposure_baseline,
    sentence_logprobs,
)
from fedpriv.attacks.metrics import exposure_exact
from fedpriv.data import generate_client_records
from fedpriv.data.canaries import Canary, CanaryFormat, make_canaries
from fedpriv.errors import DataError
from fedpriv.lora import LoraSettings
from fedpriv.models import BUILTIN_MODEL, attach_lora, load_base_model, trainable_parameters
from fedpriv.train.batching import encode_texts
from fedpriv.train.local import LocalTrainingSettings, train_local

CPU = torch.device("cpu")
PIN3 = CanaryFormat("pin3", "my pin is {secret}", "ddd")  # 1,000 candidates: exact is cheap


@dataclass
class Planted:
    model: PeftModel
    base: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    canary: Canary


@pytest.fixture(scope="module")
def planted() -> Planted:
    """One canary inserted 20 times among 12 records; LoRA trained 40 steps."""
    canary = make_canaries(PIN3, [0], per_client=1, repetitions=20,
                           rng=np.random.default_rng(11))[0]
    records = [r.text for r in generate_client_records(1, 12, seed=2)[0]]
    texts = records + [canary.text] * canary.repetitions
    model, tokenizer = load_base_model(BUILTIN_MODEL)
    base, _ = load_base_model(BUILTIN_MODEL)
    peft_model = attach_lora(
        model, LoraSettings(rank=8, alpha=16.0, target_modules=("q_proj", "v_proj")), seed=0
    )
    train_local(
        peft_model, trainable_parameters(peft_model), encode_texts(tokenizer, texts, 48),
        LocalTrainingSettings(batch_size=8, lr=1e-2, steps=40),
        pad_id=tokenizer.pad_token_id, device=CPU, rng=np.random.default_rng(0),
    )
    return Planted(peft_model, base, tokenizer, canary)


def test_random_baseline_closed_form() -> None:
    for size in (1, 2, 10, 1000):
        brute = np.mean([math.log2(size) - math.log2(rank) for rank in range(1, size + 1)])
        assert random_exposure_baseline(size) == pytest.approx(brute)
    assert random_exposure_baseline(10**12) == pytest.approx(1 / math.log(2), abs=1e-6)


def test_repeated_canary_is_exposed_and_extracted(planted: Planted) -> None:
    canary, tokenizer = planted.canary, planted.tokenizer
    rng = np.random.default_rng(0)
    trained = canary_exposures(planted.model, tokenizer, [canary], device=CPU, rng=rng)[0]
    untrained = canary_exposures(planted.base, tokenizer, [canary], device=CPU, rng=rng)[0]
    assert trained.estimate.method == untrained.estimate.method == "exact"
    assert trained.estimate.space_size == 1000
    # Memorised: at or next to the top of 1,000 candidates; the base model: near chance.
    assert trained.exposure > math.log2(1000) - 1.5
    assert untrained.exposure < 6.0
    assert trained.exposure > untrained.exposure + 4.0
    assert greedy_extract(planted.model, tokenizer, PIN3, device=CPU) == canary.secret
    assert extraction_hits(planted.model, tokenizer, [canary], device=CPU) == [True]
    guess = greedy_extract(planted.base, tokenizer, PIN3, device=CPU)
    assert PIN3.matches(guess)

    block = canary_report([trained], [True])
    assert block["attack"] == "exposure+greedy-extraction"
    assert block["observed"] == "final global model"
    assert block["exposure_mean"] == pytest.approx(trained.exposure)
    assert block["extraction_rate"] == 1.0
    assert block["max_possible"] == pytest.approx(math.log2(1000))
    assert block["random_baseline"] == pytest.approx(random_exposure_baseline(1000))
    assert block["canaries"][0]["extracted"] is True


def test_exact_exposure_matches_a_direct_ranking(planted: Planted) -> None:
    """The exposure is the rank of the canary's sentence among all 1,000 sentences."""
    candidates = list(PIN3.enumerate_candidates(1000))
    logprobs = sentence_logprobs(planted.model, planted.tokenizer,
                                 [PIN3.render(c) for c in candidates], device=CPU)
    index = candidates.index(planted.canary.secret)
    own = sentence_logprobs(planted.model, planted.tokenizer, [planted.canary.text],
                            device=CPU)[0]
    assert own == pytest.approx(logprobs[index], abs=1e-4)  # batching does not change scores
    rank = 1 + int((logprobs > logprobs[index]).sum())
    result = canary_exposures(planted.model, planted.tokenizer, [planted.canary], device=CPU,
                              rng=np.random.default_rng(0))[0]
    assert result.exposure == pytest.approx(math.log2(1000) - math.log2(rank))
    assert result.exposure == pytest.approx(exposure_exact(logprobs, index))


@pytest.mark.parametrize("which", ["model", "base"])
def test_sampled_exposure_agrees_with_exact_on_a_real_model(planted: Planted, which: str) -> None:
    model = planted.model if which == "model" else planted.base
    exact = canary_exposures(model, planted.tokenizer, [planted.canary], device=CPU,
                             rng=np.random.default_rng(0))[0]
    sampled = canary_exposures(model, planted.tokenizer, [planted.canary], device=CPU,
                               rng=np.random.default_rng(1), exact_limit=100,
                               sample_size=400, bootstrap=20)[0]
    assert sampled.estimate.method in {"sampled-rank", "extrapolated"}
    assert sampled.estimate.samples == 400
    error = abs(sampled.exposure - exact.exposure)
    assert error <= 3 * sampled.estimate.stderr + 0.25, (sampled.estimate, exact.exposure)


def test_canary_inputs_are_checked(planted: Planted) -> None:
    with pytest.raises(DataError, match="sample_size"):
        canary_exposures(planted.model, planted.tokenizer, [planted.canary], device=CPU,
                         rng=np.random.default_rng(0), sample_size=0)
    with pytest.raises(DataError, match="longer than max_length"):
        sentence_logprobs(planted.model, planted.tokenizer, [planted.canary.text],
                          device=CPU, max_length=4)
    with pytest.raises(DataError, match="no canary exposures"):
        canary_report([])
