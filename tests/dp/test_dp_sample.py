"""Sample-level DP-SGD through Opacus: per-example gradients, clipping, noise, sampling, training.

Per-example gradients are checked against a naive loop that runs each example
alone, unpadded, through the unwrapped model.  All comparisons run without
dropout (the models have dropout 0 and LoRA dropout 0): per-sample gradients
are still right under dropout, but a naive loop would draw other masks than the
batched pass, so the two could not be compared.
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from peft import PeftModel
from torch import nn
from transformers import GPT2Config, GPT2LMHeadModel

from fedpriv.dp.sample import (
    PrivateModel,
    SampleDPSettings,
    check_model_supported,
    local_dp_steps,
    local_sample_rate,
    per_example_loss,
    poisson_batches,
    train_local_dp,
)
from fedpriv.errors import ConfigError, DataError, ModelError
from fedpriv.lora import LoraSettings
from fedpriv.models import (
    BUILTIN_MODEL,
    attach_lora,
    get_adapter_vector,
    load_base_model,
    set_adapter_vector,
    trainable_parameters,
)
from fedpriv.train.batching import TokenIds, collate, encode_texts
from fedpriv.train.local import LocalTrainingSettings, evaluate, train_local

CPU = torch.device("cpu")
LENGTHS = (7, 19, 12, 3, 16)  # different lengths: the batch is right-padded to 19
OPACUS_PARAM_ATTRS = ("grad_sample", "_forward_counter", "_current_grad_sample", "_norm_sample",
                      "summed_grad")


class DPModel:
    """A peft model with a random (non-identity) adapter, and sequences to feed it."""

    def __init__(self, model: PeftModel, vocab: int, pad_id: int, seed: int) -> None:
        self.model = model
        self.pad_id = pad_id
        rng = np.random.default_rng(seed)
        size = get_adapter_vector(model).size
        # B starts at 0, which would make every gradient of A zero: randomise both.
        self.start = rng.normal(0.0, 0.2, size).astype(np.float32)
        self.sequences: list[TokenIds] = [
            [int(t) for t in rng.integers(3, vocab, size=n)] for n in LENGTHS
        ]

    def reset(self) -> list[nn.Parameter]:
        set_adapter_vector(self.model, self.start)
        for p in self.model.parameters():
            p.grad = None
        return trainable_parameters(self.model)


@pytest.fixture(scope="module")
def dp_llama() -> DPModel:
    base, tokenizer = load_base_model(BUILTIN_MODEL)
    peft = attach_lora(base, LoraSettings(rank=2, alpha=4.0, target_modules=("q_proj", "v_proj",
                                                                            "o_proj")), seed=0)
    return DPModel(peft, base.config.vocab_size, tokenizer.pad_token_id, seed=1)


@pytest.fixture(scope="module")
def dp_gpt2() -> DPModel:
    config = GPT2Config(n_layer=2, n_embd=64, n_head=2, vocab_size=100, n_positions=64,
                        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        base = GPT2LMHeadModel(config)
    base.eval().requires_grad_(False)
    peft = attach_lora(base, LoraSettings(rank=2, alpha=4.0, target_modules=("c_attn",)), seed=0)
    return DPModel(peft, config.vocab_size, pad_id=0, seed=2)


@pytest.fixture(params=["llama", "gpt2"])
def dp_arch(request: pytest.FixtureRequest) -> DPModel:
    return request.getfixturevalue(f"dp_{request.param}")


def naive_gradients(dp: DPModel) -> list[list[torch.Tensor]]:
    """Each example alone, unpadded, through the plain model: ∇ of its own loss."""
    params = dp.reset()
    dp.model.eval()
    out = []
    for seq in dp.sequences:
        ids = torch.tensor([seq])
        logits = dp.model(input_ids=ids).logits
        loss = per_example_loss(logits, ids)[0]
        out.append([g.detach().clone() for g in torch.autograd.grad(loss, params)])
    return out


def flat_norm(grads: list[torch.Tensor]) -> float:
    return math.sqrt(sum(float((g.double() ** 2).sum()) for g in grads))


def batch_losses(module: nn.Module, seqs: list[TokenIds], pad_id: int) -> torch.Tensor:
    batch = collate(seqs, pad_id, CPU)
    logits = module(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
    return per_example_loss(logits, batch.labels)


# ----------------------------------------------------------------------------- per-example loss


def test_per_example_loss_matches_hugging_face_loss_of_each_sequence(dp_llama: DPModel) -> None:
    dp_llama.reset()
    model, seqs = dp_llama.model, dp_llama.sequences
    with torch.no_grad():
        batch = collate(seqs, dp_llama.pad_id, CPU)
        logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
        losses = per_example_loss(logits, batch.labels)
        for i, seq in enumerate(seqs):
            ids = torch.tensor([seq])
            expected = model(input_ids=ids, labels=ids).loss
            assert float(losses[i]) == pytest.approx(float(expected), rel=1e-5)
    assert losses.shape == (len(seqs),)
    # explicit formula on random logits: mean over the labelled positions t+1 of -log p(y | t)
    gen = torch.Generator().manual_seed(0)
    raw = torch.randn(2, 5, 7, generator=gen)
    labels = torch.tensor([[1, 2, 3, -100, -100], [4, 5, 6, 0, 1]])
    logp = torch.log_softmax(raw, dim=-1)
    first = -(logp[0, 0, 2] + logp[0, 1, 3]) / 2
    second = -sum(logp[1, t, int(labels[1, t + 1])] for t in range(4)) / 4
    torch.testing.assert_close(per_example_loss(raw, labels), torch.stack([first, second]))
    with pytest.raises(DataError, match="do not match"):
        per_example_loss(raw, labels[:, :3])


# ----------------------------------------------------------------------------- gradients


@pytest.mark.parametrize("clipping", ["per_sample", "ghost"])
def test_opacus_per_example_gradients_and_clipped_sum_match_naive_loop(
    dp_arch: DPModel, clipping: str
) -> None:
    naive = naive_gradients(dp_arch)
    norms = [flat_norm(g) for g in naive]
    clip = float(np.median(norms))  # some examples clipped, some not
    expected_batch = 8  # ≠ the realised 5: the sum is divided by q·n, not by B
    params = dp_arch.reset()
    with PrivateModel(dp_arch.model, SampleDPSettings(1.0, clip, clipping=clipping)) as private:
        optimizer = private._dp_optimizer(
            params, lr=0.0, weight_decay=0.0, noise_multiplier=0.0, max_grad_norm=clip,
            expected_batch_size=expected_batch, noise_generator=None,
        )
        with private.training() as module:
            optimizer.zero_grad(set_to_none=True)
            losses = batch_losses(module, dp_arch.sequences, dp_arch.pad_id)
            private.backward(losses, optimizer)
            if clipping == "per_sample":
                for j, p in enumerate(params):
                    reference = torch.stack([g[j] for g in naive])
                    # fp32: padded and unpadded attention differ by rounding only
                    atol = 1e-5 * float(reference.abs().max())
                    torch.testing.assert_close(p.grad_sample, reference, rtol=1e-4, atol=atol)
            else:
                torch.testing.assert_close(
                    module.per_sample_gradient_norms.double(),
                    torch.tensor(norms, dtype=torch.float64), rtol=1e-4, atol=1e-6,
                )
            optimizer.pre_step()  # clip, sum, (no) noise, divide: p.grad is what AdamW gets
            factors = [min(1.0, clip / (n + 1e-6)) for n in norms]
            assert min(factors) < 1.0 and max(factors) == 1.0
            for j, p in enumerate(params):
                reference = sum(f * g[j] for f, g in zip(factors, naive, strict=True))
                atol = 1e-5 * float(reference.abs().max()) / expected_batch
                torch.testing.assert_close(p.grad, reference / expected_batch, rtol=1e-4,
                                           atol=atol)


@pytest.mark.parametrize(("clipping", "secure"),
                         [("per_sample", False), ("ghost", False), ("per_sample", True)])
def test_noise_has_std_sigma_c_over_expected_batch(
    dp_llama: DPModel, clipping: str, secure: bool
) -> None:
    sigma, clip, expected_batch = 0.7, 0.5, 4
    params = dp_llama.reset()

    def noised_gradient(noise: float, seed: int) -> torch.Tensor:
        gen = torch.Generator().manual_seed(seed)
        optimizer = private._dp_optimizer(
            params, lr=0.0, weight_decay=0.0, noise_multiplier=noise, max_grad_norm=clip,
            expected_batch_size=expected_batch, noise_generator=gen, secure_mode=secure,
        )
        optimizer.zero_grad(set_to_none=True)
        private.backward(batch_losses(module, dp_llama.sequences[:3], dp_llama.pad_id), optimizer)
        optimizer.pre_step()
        return torch.cat([p.grad.reshape(-1) for p in params]).double()

    with PrivateModel(dp_llama.model, SampleDPSettings(sigma, clip, clipping=clipping,
                                                       secure_mode=secure)) as private, \
            private.training() as module:
        clean = noised_gradient(0.0, 0)
        noise = torch.stack([noised_gradient(sigma, seed) - clean for seed in range(6)])
        again = noised_gradient(sigma, 3) - clean
    # 6 seeds x ~3k coordinates: the sample std is within ~0.6% of the truth
    assert float(noise.std()) == pytest.approx(sigma * clip / expected_batch, rel=0.03)
    assert abs(float(noise.mean())) < 0.03 * sigma * clip / expected_batch
    torch.testing.assert_close(again, noise[3])  # same generator seed, same noise
    assert not torch.allclose(noise[0], noise[1])


# ----------------------------------------------------------------------------- sampling


def test_poisson_batches_rate_emptiness_and_determinism() -> None:
    n, q, steps = 500, 0.03, 300
    batches = list(poisson_batches(n, q, steps, np.random.default_rng(0)))
    assert len(batches) == steps
    sizes = np.array([b.size for b in batches])
    assert sizes.sum() / (n * steps) == pytest.approx(q, rel=0.03)  # ~0.8% std error
    assert sizes.std() == pytest.approx(math.sqrt(n * q * (1 - q)), rel=0.15)  # not fixed-size
    counts = np.bincount(np.concatenate(batches), minlength=n)
    assert counts.min() > 0 and counts.max() < 25  # every example, independently
    for b in batches:
        assert np.all(np.diff(b) > 0) and (b.size == 0 or (b[0] >= 0 and b[-1] < n))
    again = list(poisson_batches(n, q, steps, np.random.default_rng(0)))
    assert all(np.array_equal(a, b) for a, b in zip(batches, again, strict=True))
    small = [b.size for b in poisson_batches(10, 0.02, 200, np.random.default_rng(1))]
    assert 0.7 < small.count(0) / 200 < 0.95  # P(empty) = 0.98^10 = 0.82
    assert [b.size for b in poisson_batches(7, 1.0, 3, np.random.default_rng(2))] == [7, 7, 7]
    with pytest.raises(ConfigError):
        next(poisson_batches(10, 0.0, 1, np.random.default_rng(0)))
    with pytest.raises(DataError):
        next(poisson_batches(0, 0.5, 1, np.random.default_rng(0)))


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 64), st.integers(1, 500), st.integers(1, 5))
def test_sample_rate_and_steps_follow_the_closed_form(batch: int, n: int, epochs: int) -> None:
    q = local_sample_rate(batch, n)
    assert q == min(1.0, batch / n)
    local = LocalTrainingSettings(batch_size=batch, lr=1e-3, epochs=epochs)
    expected = epochs if batch >= n else math.ceil(Fraction(epochs * n, batch))
    assert local_dp_steps(local, n) == expected
    assert local_dp_steps(LocalTrainingSettings(batch_size=batch, lr=1e-3, steps=3), n) == 3


def test_sample_rate_rejects_bad_sizes() -> None:
    with pytest.raises(DataError, match="at least one record"):
        local_sample_rate(4, 0)
    with pytest.raises(ConfigError):
        local_sample_rate(0, 10)


# ----------------------------------------------------------------------------- training


@pytest.fixture(scope="module")
def dp_train_examples() -> tuple[list[TokenIds], int]:
    _, tokenizer = load_base_model(BUILTIN_MODEL)
    texts = [
        "Patient Anna Berg was seen on Monday for a follow-up of her blood pressure.",
        "The invoice for order 4417 was paid in full on the third of March.",
        "Dr. Olsen reviewed the lab results and scheduled a scan for next week.",
        "Account 2291 was closed after the customer moved to another city.",
    ] * 4
    return encode_texts(tokenizer, texts, max_length=32), int(tokenizer.pad_token_id)


def run_dp(
    model: PeftModel, examples: list[TokenIds], pad_id: int, dp: SampleDPSettings,
    local: LocalTrainingSettings, seed: int, noise_seed: int,
) -> tuple[np.ndarray, int, float]:
    with PrivateModel(model, dp) as private:
        result = train_local_dp(
            private, trainable_parameters(model), examples, local, dp, pad_id=pad_id, device=CPU,
            rng=np.random.default_rng(seed),
            noise_generator=torch.Generator().manual_seed(noise_seed),
        )
    return get_adapter_vector(model), result.examples_seen, result.mean_loss


@pytest.mark.parametrize("clipping", ["per_sample", "ghost"])
def test_train_local_dp_lowers_loss_and_is_deterministic(
    dp_llama: DPModel, dp_train_examples: tuple[list[TokenIds], int], clipping: str
) -> None:
    examples, pad_id = dp_train_examples
    model = dp_llama.model
    dp_llama.reset()
    start = dp_llama.start  # a random adapter that hurts the base model: training must repair it
    before = evaluate(model, examples, pad_id=pad_id, device=CPU).loss
    dp = SampleDPSettings(noise_multiplier=0.05, max_grad_norm=1.0, clipping=clipping)
    local = LocalTrainingSettings(batch_size=8, lr=1e-2, steps=6)
    set_adapter_vector(model, start)
    first, seen, mean_loss = run_dp(model, examples, pad_id, dp, local, seed=0, noise_seed=0)
    after = evaluate(model, examples, pad_id=pad_id, device=CPU).loss
    assert after < before - 1.0  # a random adapter costs ~3 nats; DP-SGD repairs most of it
    assert seen == sum(b.size for b in poisson_batches(16, 0.5, 6, np.random.default_rng(0)))
    assert math.isfinite(mean_loss)
    set_adapter_vector(model, start)
    second, _, _ = run_dp(model, examples, pad_id, dp, local, seed=0, noise_seed=0)
    np.testing.assert_array_equal(first, second)
    set_adapter_vector(model, start)
    other_noise, _, _ = run_dp(model, examples, pad_id, dp, local, seed=0, noise_seed=1)
    assert not np.array_equal(first, other_noise)


@pytest.mark.parametrize("clipping", ["per_sample", "ghost"])
def test_empty_poisson_batches_take_noise_only_steps(
    dp_llama: DPModel, dp_train_examples: tuple[list[TokenIds], int], clipping: str
) -> None:
    examples, pad_id = dp_train_examples
    model = dp_llama.model
    dp = SampleDPSettings(noise_multiplier=1.0, max_grad_norm=1.0, clipping=clipping)
    local = LocalTrainingSettings(batch_size=1, lr=1e-3, steps=6)  # q = 1/16, q·n = 1
    sizes = [b.size for b in poisson_batches(16, 1 / 16, 6, np.random.default_rng(3))]
    assert 0 in sizes and sum(sizes) > 0
    dp_llama.reset()
    _, seen, mean_loss = run_dp(model, examples, pad_id, dp, local, seed=3, noise_seed=0)
    assert seen == sum(sizes) and math.isfinite(mean_loss)
    # a seed whose batches are all empty: every step is noise only, and still taken
    seed = next(s for s in range(200) if all(
        b.size == 0 for b in poisson_batches(16, 1 / 16, 2, np.random.default_rng(s))))
    dp_llama.reset()
    two = LocalTrainingSettings(batch_size=1, lr=1e-3, steps=2)
    vector, seen, mean_loss = run_dp(model, examples, pad_id, dp, two, seed=seed, noise_seed=0)
    assert seen == 0 and math.isnan(mean_loss)
    assert np.all(vector != dp_llama.start)  # the noise reached every coordinate


@pytest.mark.parametrize(("batch_size", "expected_batch"), [(4, 4), (32, 10)])
def test_train_local_dp_divides_by_expected_batch_and_uses_the_callers_generator(
    dp_llama: DPModel, dp_train_examples: tuple[list[TokenIds], int],
    monkeypatch: pytest.MonkeyPatch, batch_size: int, expected_batch: int,
) -> None:
    examples, pad_id = dp_train_examples
    params = dp_llama.reset()
    built: list[dict[str, object]] = []
    original = PrivateModel._dp_optimizer

    def spy(self: PrivateModel, *args: object, **kwargs: object) -> object:
        built.append(kwargs)
        return original(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(PrivateModel, "_dp_optimizer", spy)
    dp = SampleDPSettings(noise_multiplier=1.3, max_grad_norm=0.7, secure_mode=True)
    gen = torch.Generator().manual_seed(0)
    local = LocalTrainingSettings(batch_size=batch_size, lr=2e-3, steps=1, weight_decay=0.1,
                                  max_grad_norm=123.0)
    with PrivateModel(dp_llama.model, dp) as private:
        train_local_dp(private, params, examples[:10], local, dp, pad_id=pad_id, device=CPU,
                       rng=np.random.default_rng(0), noise_generator=gen)
    assert built == [{
        "lr": 2e-3, "weight_decay": 0.1, "optimizer": "adamw", "noise_multiplier": 1.3,
        "max_grad_norm": 0.7,
        "expected_batch_size": expected_batch,  # q·n = min(batch, n), never the realised size
        "noise_generator": gen, "secure_mode": True,
    }]


def _hook_count(model: nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks)
               + len(m._backward_pre_hooks) for m in model.modules())


def test_close_leaves_the_plain_model_and_it_still_trains(
    dp_llama: DPModel, dp_train_examples: tuple[list[TokenIds], int]
) -> None:
    examples, pad_id = dp_train_examples
    model = dp_llama.model
    params = dp_llama.reset()
    hooks = _hook_count(model)
    private = PrivateModel(model, SampleDPSettings(1.0, 1.0))
    assert _hook_count(model) > hooks
    train_local_dp(private, params, examples, LocalTrainingSettings(batch_size=4, lr=1e-3, steps=2),
                   private.settings, pad_id=pad_id, device=CPU, rng=np.random.default_rng(0),
                   noise_generator=torch.Generator().manual_seed(0))
    private.close()
    private.close()  # idempotent
    assert _hook_count(model) == hooks
    assert not hasattr(model, "autograd_grad_sample_hooks")
    for p in model.parameters():
        assert not [a for a in OPACUS_PARAM_ATTRS if hasattr(p, a)]
    for m in model.modules():
        assert not hasattr(m, "activations") and not hasattr(m, "max_batch_len")
    with pytest.raises(ModelError, match="closed"), private.training():
        pass
    before = get_adapter_vector(model)
    result = train_local(model, params, examples, LocalTrainingSettings(batch_size=4, lr=1e-2,
                                                                        steps=2),
                         pad_id=pad_id, device=CPU, rng=np.random.default_rng(0))
    assert result.steps == 2 and not np.array_equal(before, get_adapter_vector(model))
    assert all(not hasattr(p, "grad_sample") for p in params)
    # and it can be wrapped again
    PrivateModel(model, SampleDPSettings(1.0, 1.0, clipping="ghost")).close()


@pytest.mark.filterwarnings("ignore:Full backward hook is firing")
def test_hooks_are_off_outside_training(dp_llama: DPModel) -> None:
    params = dp_llama.reset()
    with PrivateModel(dp_llama.model, SampleDPSettings(1.0, 1.0)) as private:
        with private.training() as module:
            batch_losses(module, dp_llama.sequences, dp_llama.pad_id)  # forward, no backward
        assert not any(hasattr(m, "activations") for m in dp_llama.model.modules())
        dp_llama.model.train()
        loss = batch_losses(private.module, dp_llama.sequences, dp_llama.pad_id).sum()
        loss.backward()  # e.g. an attack computing gradients between clients
        assert all(p.grad_sample is None for p in params)
        dp_llama.model.eval()


def test_train_local_dp_rejects_mismatched_settings_and_parameters(
    dp_llama: DPModel, dp_train_examples: tuple[list[TokenIds], int]
) -> None:
    examples, pad_id = dp_train_examples
    params = dp_llama.reset()
    local = LocalTrainingSettings(batch_size=4, lr=1e-3, steps=1)
    with PrivateModel(dp_llama.model, SampleDPSettings(1.0, 1.0)) as private:
        kwargs = {"pad_id": pad_id, "device": CPU, "rng": np.random.default_rng(0),
                  "noise_generator": torch.Generator()}
        with pytest.raises(ConfigError, match="wrapped for 'per_sample'"):
            train_local_dp(private, params, examples, local,
                           SampleDPSettings(1.0, 1.0, clipping="ghost"), **kwargs)
        with pytest.raises(ModelError, match="exactly the model's trainable parameters"):
            train_local_dp(private, params[:-1], examples, local, private.settings, **kwargs)
        with pytest.raises(DataError, match="no training examples"):
            train_local_dp(private, params, [], local, private.settings, **kwargs)


# ----------------------------------------------------------------------------- model support


def test_unsupported_trainable_layer_is_named(dp_llama: DPModel) -> None:
    model = dp_llama.model
    norm = model.base_model.model.model.norm
    norm.requires_grad_(True)
    try:
        for clipping in ("per_sample", "ghost"):
            with pytest.raises(ModelError, match=r"layer 'base_model\.model\.model\.norm' "
                                                 r"\(LlamaRMSNorm\) holds trainable parameters"):
                check_model_supported(model, clipping)
        hooks = _hook_count(model)
        with pytest.raises(ModelError, match="LlamaRMSNorm"):
            PrivateModel(model, SampleDPSettings(1.0, 1.0))
        assert _hook_count(model) == hooks  # nothing was wrapped
    finally:
        norm.requires_grad_(False)
    check_model_supported(model)


class ToyAttention(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(8, 8)
        self.attn = nn.MultiheadAttention(8, 2, batch_first=True)


class ToyBatchNorm(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(8, 8)
        self.norm = nn.BatchNorm1d(8).requires_grad_(False)


def test_unsupported_toy_layers_are_named() -> None:
    with pytest.raises(ModelError, match=r"layer 'attn' \(MultiheadAttention\)"):
        check_model_supported(ToyAttention())
    toy = ToyAttention()
    toy.attn.requires_grad_(False)
    check_model_supported(toy)  # a frozen attention is shared, not trained: fine
    with pytest.raises(ModelError, match=r"layer 'norm' \(BatchNorm1d\) normalises over the batch"):
        check_model_supported(ToyBatchNorm())
    with pytest.raises(ModelError, match="no trainable parameters"):
        check_model_supported(nn.Linear(2, 2).requires_grad_(False))
    with pytest.raises(ConfigError, match="clipping"):
        check_model_supported(nn.Linear(2, 2), "fast")


@pytest.mark.filterwarnings("ignore:Model has `tie_word_embeddings=True`")
def test_lora_on_embeddings_is_rejected_with_the_layer_name() -> None:
    base, _ = load_base_model(BUILTIN_MODEL)
    peft = attach_lora(base, LoraSettings(rank=2, target_modules=("embed_tokens",)), seed=0)
    with pytest.raises(ModelError, match=r"layer '[\w.]*embed_tokens[\w.]*' \(\w+\)"):
        check_model_supported(peft)


# ----------------------------------------------------------------------------- settings


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"noise_multiplier": 0.0, "max_grad_norm": 1.0}, "no noise"),
    ({"noise_multiplier": -1.0, "max_grad_norm": 1.0}, "noise_multiplier"),
    ({"noise_multiplier": float("nan"), "max_grad_norm": 1.0}, "noise_multiplier"),
    ({"noise_multiplier": True, "max_grad_norm": 1.0}, "noise_multiplier"),
    ({"noise_multiplier": 1.0, "max_grad_norm": 0.0}, "max_grad_norm"),
    ({"noise_multiplier": 1.0, "max_grad_norm": float("inf")}, "max_grad_norm"),
    ({"noise_multiplier": 1.0, "max_grad_norm": 1.0, "clipping": "fast"}, "per_sample, ghost"),
    ({"noise_multiplier": 1.0, "max_grad_norm": 1.0, "secure_mode": "yes"}, "secure_mode"),
])
def test_settings_validation(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        SampleDPSettings(**kwargs)  # type: ignore[arg-type]


def test_settings_accept_valid_values() -> None:
    s = SampleDPSettings(noise_multiplier=1, max_grad_norm=0.5, clipping="ghost", secure_mode=True)
    assert (s.noise_multiplier, s.max_grad_norm, s.clipping, s.secure_mode) == (1, 0.5, "ghost",
                                                                                True)

