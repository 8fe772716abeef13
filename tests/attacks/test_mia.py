"""Membership inference: score rules against closed forms, and a memorising tiny model."""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np
import pytest
import torch
from peft import PeftModel
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from fedpriv.attacks.metrics import roc_auc
from fedpriv.attacks.mia import (
    client_update,
    lira_offline_score,
    loss_score,
    mia_scores,
    min_k_score,
    reference_ratio_score,
    reference_score,
    rmia_score,
    run_mia,
    sequence_scores,
    update_loss_change,
    zlib_score,
)
from fedpriv.data import generate_client_records
from fedpriv.errors import DataError
from fedpriv.lora import LoraSettings
from fedpriv.models import (
    BUILTIN_MODEL,
    attach_lora,
    get_adapter_vector,
    load_base_model,
    trainable_parameters,
)
from fedpriv.protocols import ServerView
from fedpriv.train.batching import encode_texts
from fedpriv.train.local import LocalTrainingSettings, evaluate, train_local

CPU = torch.device("cpu")
MAX_LENGTH = 48


# ------------------------------------------------------------------ score rules


def test_score_rules_match_closed_forms() -> None:
    losses = np.array([1.0, 2.0, 0.5])
    assert np.array_equal(loss_score(losses), -losses)
    texts = ["aaaaaaaaaaaaaaaa", "the quick brown fox", "x"]
    sizes = np.array([len(zlib.compress(t.encode())) for t in texts])
    assert np.allclose(zlib_score(texts, losses), -losses / sizes)
    logprobs = [np.array([-1.0, -5.0, -2.0, -3.0, -0.5]), np.array([-4.0])]
    # k = 0.4 of 5 tokens: the two lowest (-5, -3); of 1 token: that token.
    assert np.allclose(min_k_score(logprobs, 0.4), [-4.0, -4.0])
    assert np.allclose(min_k_score(logprobs, 1.0), [-2.3, -4.0])
    assert np.allclose(reference_score([1.0, 2.0], [3.0, 2.5]), [2.0, 0.5])
    assert np.allclose(reference_ratio_score([1.0, 2.0], [3.0, 2.0]), [np.log(3.0), 0.0])


def test_lira_and_rmia_closed_forms() -> None:
    target = np.array([1.0, 3.0])
    shadows = np.array([[2.0, 3.0], [4.0, 5.0]])
    # Means (3, 4); pooled std over 2 shadows x 2 examples: sqrt((1+1+1+1) / 2).
    pooled = np.sqrt(2.0)
    assert np.allclose(lira_offline_score(target, shadows), [2.0 / pooled, 1.0 / pooled])
    per_example = lira_offline_score(target, shadows, per_example_variance=True)
    assert np.allclose(per_example, [2.0 / np.sqrt(2.0), 1.0 / np.sqrt(2.0)])
    expected = -target - np.log(np.exp(-shadows).mean(axis=0))
    assert np.allclose(rmia_score(target, shadows), expected)
    # One shadow: RMIA is the plain reference score.
    assert np.allclose(rmia_score(target, shadows[:1]), reference_score(target, shadows[0]))
    with pytest.raises(DataError, match="at least 2 shadow"):
        lira_offline_score(target, shadows[:1])
    with pytest.raises(DataError, match="shape"):
        rmia_score(target, shadows[:, :1])


def test_calibration_removes_example_difficulty_synthetic() -> None:
    """Examples of very different difficulty: calibrated scores see the memorisation drop."""
    rng = np.random.default_rng(0)
    n = 2000
    difficulty = rng.uniform(1.0, 6.0, n)
    member = rng.random(n) < 0.5
    shadows = difficulty + rng.normal(0.0, 0.1, (4, n))
    target = difficulty - 0.3 * member + rng.normal(0.0, 0.1, n)
    base = difficulty + 0.5 + rng.normal(0.0, 0.1, n)
    plain = roc_auc(loss_score(target), member)
    assert 0.45 < plain < 0.65
    for score in (
        lira_offline_score(target, shadows),
        rmia_score(target, shadows),
        reference_score(target, base),
    ):
        assert roc_auc(score, member) > 0.9


# ---------------------------------------------------------- a memorising model


@dataclass
class Memorised:
    model: PeftModel
    base: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    members: list[str]
    nonmembers: list[str]
    control: list[str]
    initial: np.ndarray


@pytest.fixture(scope="module")
def memorised() -> Memorised:
    """8 clients x 4 member records; a LoRA adapter trained 40 steps on the 32 members."""
    records = generate_client_records(8, 58, seed=1)
    members = [r.text for client in records for r in client[:4]]
    nonmembers = [r.text for client in records for r in client[4:8]]
    control = [r.text for client in records for r in client[8:]]  # 400 more non-members
    model, tokenizer = load_base_model(BUILTIN_MODEL)
    base, _ = load_base_model(BUILTIN_MODEL)
    peft_model = attach_lora(
        model, LoraSettings(rank=8, alpha=16.0, target_modules=("q_proj", "v_proj")), seed=0
    )
    initial = get_adapter_vector(peft_model)
    train_local(
        peft_model, trainable_parameters(peft_model),
        encode_texts(tokenizer, members, MAX_LENGTH),
        LocalTrainingSettings(batch_size=8, lr=5e-3, steps=40),
        pad_id=tokenizer.pad_token_id, device=CPU, rng=np.random.default_rng(0),
    )
    return Memorised(peft_model, base, tokenizer, members, nonmembers, control, initial)


def test_sequence_scores_agree_with_evaluate(memorised: Memorised) -> None:
    # Mixed lengths, long first: batching by length reorders them internally.
    texts = [memorised.members[0], "my pin is 123", memorised.nonmembers[0], "hello",
             memorised.members[1][:60], "a b c d e f g h i", memorised.nonmembers[1][:30]]
    examples = encode_texts(memorised.tokenizer, texts, MAX_LENGTH)
    lengths = [len(e) for e in examples]
    assert lengths != sorted(lengths) and len(set(lengths)) >= 5
    pad = memorised.tokenizer.pad_token_id
    scores = sequence_scores(memorised.model, examples, pad_id=pad, device=CPU, batch_size=4)
    for index, example in enumerate(examples):
        alone = evaluate(memorised.model, [example], pad_id=pad, device=CPU)
        assert scores.losses[index] == pytest.approx(alone.loss, rel=1e-4)
        assert scores.token_logprobs[index].shape == (len(example) - 1,)
    assert np.allclose(scores.total_logprobs, [lp.sum() for lp in scores.token_logprobs])


def test_memorised_members_are_detected(memorised: Memorised) -> None:
    results = {
        r.attack: r
        for r in run_mia(
            memorised.model, memorised.tokenizer, memorised.members, memorised.nonmembers,
            reference_models={"base": memorised.base}, max_length=MAX_LENGTH, device=CPU,
        )
    }
    assert set(results) == {
        "loss", "zlib", "min_k[0.2]", "reference[base]", "reference_ratio[base]"
    }
    loss = results["loss"]
    assert loss.observation == "final global model"
    assert (loss.n_members, loss.n_nonmembers) == (32, 32)
    assert loss.auc > 0.65
    assert results["min_k[0.2]"].auc > 0.65
    # Calibrating by the base model is at least as good as the raw loss.
    assert results["reference_ratio[base]"].auc >= loss.auc
    assert results["reference_ratio[base]"].auc > 0.8
    assert results["reference[base]"].auc > 0.65


def test_control_nonmembers_against_nonmembers(memorised: Memorised) -> None:
    """Held-out records split at random into "members" and "non-members": chance level."""
    order = np.random.default_rng(0).permutation(len(memorised.control))
    half = len(order) // 2
    fake_members = [memorised.control[i] for i in order[:half]]
    nonmembers = [memorised.control[i] for i in order[half:]]
    results = run_mia(
        memorised.model, memorised.tokenizer, fake_members, nonmembers,
        reference_models={"base": memorised.base}, max_length=MAX_LENGTH, device=CPU,
    )
    assert results[0].n_members == half == 200
    for result in results:
        assert abs(result.auc - 0.5) < 0.08, result.attack
    assert abs(np.mean([r.auc for r in results]) - 0.5) < 0.05


def test_update_loss_change_on_a_client_update(memorised: Memorised) -> None:
    model, tokenizer = memorised.model, memorised.tokenizer
    final = get_adapter_vector(model)
    update = final - memorised.initial
    view = ServerView(
        protocol="plain", round=0, participants=(0, 1), survivors=(0, 1),
        aggregate=update / 2, total_weight=2.0,
        individual_updates={0: update, 1: np.zeros_like(update)},
        individual_weights={0: 1.0, 1: 1.0}, transcript=(),
    )
    texts = memorised.members + memorised.nonmembers
    examples = encode_texts(tokenizer, texts, MAX_LENGTH)
    scores = update_loss_change(
        model, memorised.initial, client_update(view, 0), examples,
        pad_id=tokenizer.pad_token_id, device=CPU,
    )
    assert np.array_equal(get_adapter_vector(model), final)  # the adapter is restored
    labels = np.r_[np.ones(32, bool), np.zeros(32, bool)]
    assert roc_auc(scores, labels) > 0.65
    # The starting adapter is the identity (B = 0), so the drop is the base-reference score.
    pad = tokenizer.pad_token_id
    target = sequence_scores(model, examples, pad_id=pad, device=CPU).losses
    base = sequence_scores(memorised.base, examples, pad_id=pad, device=CPU).losses
    assert np.allclose(scores, reference_score(target, base), atol=1e-4)
    hidden = ServerView(
        protocol="secagg", round=3, participants=(0, 1), survivors=(0, 1),
        aggregate=update / 2, total_weight=None, individual_updates=None,
        individual_weights=None, transcript=(),
    )
    with pytest.raises(DataError, match="hides individual updates"):
        client_update(hidden, 0)
    with pytest.raises(DataError, match="client 5"):
        client_update(view, 5)


def test_shadow_models_give_lira_and_rmia(memorised: Memorised) -> None:
    texts = memorised.members + memorised.nonmembers
    examples = encode_texts(memorised.tokenizer, texts, MAX_LENGTH)
    pad = memorised.tokenizer.pad_token_id
    target = sequence_scores(memorised.model, examples, pad_id=pad, device=CPU)
    base = sequence_scores(memorised.base, examples, pad_id=pad, device=CPU)
    # Stand-ins for shadows that never saw the candidates: the base, slightly perturbed.
    rng = np.random.default_rng(0)
    shadows = [
        type(base)(base.losses + rng.normal(0, 0.05, base.losses.size), base.token_logprobs)
        for _ in range(3)
    ]
    scores = mia_scores(target, texts, shadows=shadows)
    labels = np.r_[np.ones(32, bool), np.zeros(32, bool)]
    assert {"lira_offline", "rmia"} <= set(scores)
    assert roc_auc(scores["lira_offline"], labels) > 0.65
    assert roc_auc(scores["rmia"], labels) > 0.65
    with pytest.raises(DataError, match="same texts"):
        mia_scores(target, texts[:-1])
    with pytest.raises(DataError, match="members and non-members"):
        run_mia(memorised.model, memorised.tokenizer, memorised.members, [],
                max_length=MAX_LENGTH, device=CPU)
