"""Gradient inversion of LoRA updates: DAGER's span test, sequence growth, last tokens, TAG."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from peft import PeftModel
from transformers import PreTrainedTokenizerBase

from fedpriv.attacks.inversion import (
    DagerSettings,
    TagSettings,
    dager,
    last_tokens,
    span_basis,
    tag,
    token_set,
)
from fedpriv.attacks.metrics import redact, rouge_l, rouge_n, score_inversion
from fedpriv.data.synthetic import generate_client_records
from fedpriv.errors import DataError
from fedpriv.lora import LoraSettings
from fedpriv.models import (
    BUILTIN_MODEL,
    attach_lora,
    get_adapter_vector,
    load_base_model,
    set_adapter_vector,
    trainable_parameters,
)
from fedpriv.train.batching import TokenIds, encode_texts
from fedpriv.train.local import LocalTrainingSettings, train_local

CPU = torch.device("cpu")
LENGTH = 24


@dataclass
class Server:
    model: PeftModel
    tokenizer: PreTrainedTokenizerBase
    global_vector: np.ndarray
    texts: list[str]


@pytest.fixture(scope="module")
def server() -> Server:
    """Rank-64 LoRA on q/k/v/o, a few AdamW steps in (B != 0, as after a round)."""
    model, tokenizer = load_base_model(BUILTIN_MODEL)
    peft_model = attach_lora(model, LoraSettings(
        rank=64, alpha=16.0, target_modules=("q_proj", "k_proj", "v_proj", "o_proj")), seed=0)
    texts = [r.text for client in generate_client_records(4, 20, seed=1) for r in client]
    train_local(peft_model, trainable_parameters(peft_model),
                encode_texts(tokenizer, texts[40:], 64),
                LocalTrainingSettings(batch_size=8, lr=3e-3, steps=3),
                pad_id=0, device=CPU, rng=np.random.default_rng(0))
    return Server(peft_model, tokenizer, get_adapter_vector(peft_model), texts)


def sgd_update(server: Server, batch: list[TokenIds], steps: int = 1) -> np.ndarray:
    """Return the update of ``steps`` SGD steps on ``batch`` from the global adapter."""
    set_adapter_vector(server.model, server.global_vector)
    train_local(server.model, trainable_parameters(server.model), batch,
                LocalTrainingSettings(batch_size=len(batch), lr=0.1, steps=steps,
                                      optimizer="sgd", max_grad_norm=None),
                pad_id=0, device=CPU, rng=np.random.default_rng(0))
    update = get_adapter_vector(server.model) - server.global_vector
    set_adapter_vector(server.model, server.global_vector)
    return update


def invert(server: Server, batch: list[TokenIds], update: np.ndarray) -> tuple[float, float]:
    recovery = dager(server.model, update, global_vector=server.global_vector,
                     bos_token_id=server.tokenizer.bos_token_id, batch_size=len(batch),
                     settings=DagerSettings(max_length=LENGTH))
    decode = server.tokenizer.decode
    score = score_inversion(
        [decode(s, skip_special_tokens=True) for s in recovery.sequences],
        [decode(s, skip_special_tokens=True) for s in batch],
        recovered_tokens=recovery.token_ids, true_tokens=sorted({t for s in batch for t in s}))
    return score.rouge1, score.token_f1


# ------------------------------------------------------------------ span tests


@settings(max_examples=25, deadline=None)
@given(rows=st.integers(4, 40), cols=st.integers(8, 40), rank=st.integers(1, 12),
       seed=st.integers(0, 2**16))
def test_span_basis_finds_the_row_space_of_a_low_rank_matrix(rows: int, cols: int, rank: int,
                                                             seed: int) -> None:
    rng = np.random.default_rng(seed)
    basis_true = rng.normal(size=(rank, cols))
    matrix = rng.normal(size=(rows, rank)) @ basis_true
    noise = 1e-9
    found = span_basis(matrix + rng.normal(0, noise, matrix.shape), noise)
    if rank >= min(rows, cols):
        assert found is None  # the rows span all they can: no information
        return
    assert found is not None and found.shape[0] == rank
    inside = torch.tensor(rng.normal(size=rank) @ basis_true)
    outside = torch.tensor(rng.normal(size=cols))
    proj = lambda x: (x - (x @ found.T) @ found).norm() / x.norm()  # noqa: E731
    assert float(proj(inside)) < 1e-6
    assert float(proj(outside)) > 1e-3


def test_span_basis_refuses_noise_level_spans() -> None:
    rng = np.random.default_rng(0)
    assert span_basis(rng.normal(size=(10, 30)), 0.0) is None  # full rank
    # Rank 3 drowned in noise of the same size: nothing to separate.
    low = rng.normal(size=(10, 3)) @ rng.normal(size=(3, 30)) * 1e-3
    assert span_basis(low + rng.normal(0, 1e-3, low.shape), 1e-3) is None


# ------------------------------------------------------------------ DAGER acceptance


def test_dager_recovers_one_record_exactly(server: Server) -> None:
    batch = encode_texts(server.tokenizer, server.texts[:1], LENGTH)
    rouge1, token_f1 = invert(server, batch, sgd_update(server, batch))
    assert rouge1 >= 0.95 and token_f1 >= 0.9


def test_dager_recovers_a_batch_of_four(server: Server) -> None:
    batch = encode_texts(server.tokenizer, server.texts[:4], LENGTH)
    rouge1, token_f1 = invert(server, batch, sgd_update(server, batch))
    assert rouge1 >= 0.9 and token_f1 >= 0.9


def test_token_set_survives_multi_step_updates(server: Server) -> None:
    # The first layer's inputs do not move with training: five steps keep its span.
    batch = encode_texts(server.tokenizer, server.texts[:1], LENGTH)
    tokens, conditions = token_set(server.model, sgd_update(server, batch, steps=5),
                                   global_vector=server.global_vector)
    truth = {t for s in batch for t in s}
    assert conditions["token_test_usable"] and not conditions["position_dependent"]
    assert len(set(tokens) & truth) >= 0.85 * len(truth)
    assert set(tokens) <= truth


def test_noise_and_aggregation_defeat_the_span_test(server: Server) -> None:
    batch = encode_texts(server.tokenizer, server.texts[:1], LENGTH)
    update = sgd_update(server, batch)
    noised = update + np.random.default_rng(0).normal(0, 1e-3, update.shape)
    tokens, conditions = token_set(server.model, noised, global_vector=server.global_vector)
    assert tokens == [] and not conditions["token_test_usable"]
    # 16 records summed: their distinct tokens fill the 128-dimensional hidden space.
    many = encode_texts(server.tokenizer, server.texts[:16], LENGTH)
    aggregate = sum(sgd_update(server, [ex]) for ex in many)
    rouge1, _ = invert(server, many, aggregate)
    assert rouge1 < 0.5


def test_last_tokens_match_a_brute_force_search(server: Server) -> None:
    batch = encode_texts(server.tokenizer, server.texts[:1], LENGTH)
    update = sgd_update(server, batch)
    (guess,) = last_tokens(server.model, [batch[0][:-1]], update,
                           global_vector=server.global_vector)
    assert guess == batch[0]
    with pytest.raises(DataError, match="values but the adapter has"):
        last_tokens(server.model, [batch[0][:-1]], update[:10])
    assert np.array_equal(get_adapter_vector(server.model), server.global_vector)


def test_tag_moves_towards_the_update(server: Server) -> None:
    batch = encode_texts(server.tokenizer, server.texts[:1], 8)
    update = sgd_update(server, batch)
    truth = sorted({t for s in batch for t in s})
    short = tag(server.model, update, batch_size=1, length=8, candidate_tokens=truth,
                global_vector=server.global_vector, settings=TagSettings(iterations=1))
    longer = tag(server.model, update, batch_size=1, length=8, candidate_tokens=truth,
                 global_vector=server.global_vector, settings=TagSettings(iterations=40))
    assert longer.conditions["best_cosine_distance"] < short.conditions["best_cosine_distance"]
    assert len(longer.sequences) == 1 and len(longer.sequences[0]) == 8
    assert set(longer.token_ids) <= set(truth)
    assert np.array_equal(get_adapter_vector(server.model), server.global_vector)


# ------------------------------------------------------------------ metrics


def test_rouge_against_hand_computed_values() -> None:
    assert rouge_n("the cat sat", "the cat sat") == 1.0
    # 2 of 3 unigrams shared both ways: P = R = 2/3.
    assert rouge_n("the cat ran", "the cat sat") == pytest.approx(2 / 3)
    assert rouge_n("the cat ran", "the cat sat", 2) == pytest.approx(0.5)
    assert rouge_l("a b c d", "a c d e") == pytest.approx(0.75)
    assert rouge_n("", "x") == 0.0


def test_score_inversion_matches_and_redacts() -> None:
    truth = ["Call 555-1234 now", "mail me at a.b@x.org"]
    score = score_inversion(["mail me at a.b@x.org", "Call 555-1234 now", "noise"], truth,
                            recovered_tokens=[1, 2, 9], true_tokens=[1, 2, 3])
    assert score.rouge1 == 1.0 and score.exact_rate == 1.0
    assert score.token_precision == pytest.approx(2 / 3)
    assert score.token_recall == pytest.approx(2 / 3)
    assert score.examples[0] == ("Call ###-#### now", "Call ###-#### now")
    assert redact("mail me at a.b@x.org") == "mail me at [email]"
    missing = score_inversion(["Call 555-1234 now"], truth)
    assert missing.rouge1 == pytest.approx(0.5)  # the unrecovered text counts 0
