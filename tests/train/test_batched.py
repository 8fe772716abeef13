"""The batched multi-client trainer equals the sequential loop, client by client.

Same federation, same global adapter, same batch generators (and, under DP-SGD,
the same noise generators): every client's local adapter from
:class:`~fedpriv.train.batched.BatchedClientTrainer` must match what
:func:`~fedpriv.train.local.train_local` (or Opacus' DP-SGD in
:func:`~fedpriv.dp.sample.train_local_dp`) produces, within float tolerance.
Clients differ in size on purpose: batches of different sizes and lengths,
a client smaller than a batch, and (under DP) empty Poisson batches.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fedpriv.data import generate_client_records
from fedpriv.dp.sample import PrivateModel, SampleDPSettings, train_local_dp
from fedpriv.errors import ConfigError
from fedpriv.lora import LoraSettings
from fedpriv.models import (
    BUILTIN_MODEL,
    attach_lora,
    get_adapter_vector,
    load_base_model,
    set_adapter_vector,
    trainable_parameters,
)
from fedpriv.train.batched import (
    BatchedClientTrainer,
    ClientJob,
    DPJobSettings,
    batched_unsupported,
)
from fedpriv.train.batching import encode_texts
from fedpriv.train.local import LocalTrainingSettings, train_local

SIZES = (3, 7, 12, 5)  # one client below the batch size, uneven last batches


def _federation(ffa: bool = False, rank: int = 4):  # type: ignore[no-untyped-def]
    base, tok = load_base_model(BUILTIN_MODEL)
    model = attach_lora(base, LoraSettings(rank=rank, alpha=2.0 * rank, ffa=ffa,
                                           target_modules=("q_proj", "v_proj", "down_proj")),
                        seed=0)
    records = generate_client_records(len(SIZES), max(SIZES), seed=1)
    clients = [encode_texts(tok, [r.text for r in recs[:n]], 40)
               for recs, n in zip(records, SIZES, strict=True)]
    # A non-zero global adapter, so A and B both get gradients from the first step.
    rng = np.random.default_rng(5)
    start = get_adapter_vector(model)
    start = (start + rng.normal(0, 0.02, start.size)).astype(np.float32)
    return model, tok.pad_token_id, clients, start


def _sequential(model, pad, clients, start, settings):  # type: ignore[no-untyped-def]
    params = trainable_parameters(model)
    out = []
    for c, examples in enumerate(clients):
        set_adapter_vector(model, start)
        result = train_local(model, params, examples, settings, pad_id=pad,
                             device=torch.device("cpu"), rng=np.random.default_rng([7, c]))
        out.append((get_adapter_vector(model), result))
    set_adapter_vector(model, start)
    return out


def _batched(model, pad, clients, start, settings, dp=None, budget=2048.0):  # type: ignore[no-untyped-def]
    trainer = BatchedClientTrainer(model, pad_id=pad, device=torch.device("cpu"),
                                   memory_budget_mb=budget)
    jobs = []
    for c, examples in enumerate(clients):
        noise = None
        if dp is not None:
            noise = torch.Generator()
            noise.manual_seed(100 + c)
        jobs.append(ClientJob(c, examples, np.random.default_rng([7, c]), noise))
    return trainer.train(jobs, start, settings, dp=dp)


def _assert_same(seq, bat, tol=2e-5):  # type: ignore[no-untyped-def]
    assert len(seq) == len(bat)
    for (v_seq, r_seq), (v_bat, r_bat) in zip(seq, bat, strict=True):
        assert r_seq.steps == r_bat.steps and r_seq.examples_seen == r_bat.examples_seen
        assert np.max(np.abs(v_seq - v_bat)) < tol
        assert r_bat.mean_loss == pytest.approx(r_seq.mean_loss, rel=1e-4, nan_ok=True)


@pytest.mark.parametrize("optimizer", ["adamw", "sgd"])
def test_batched_equals_sequential(optimizer: str) -> None:
    model, pad, clients, start = _federation()
    settings = LocalTrainingSettings(batch_size=4, lr=3e-3 if optimizer == "adamw" else 0.5,
                                     steps=3, weight_decay=0.01, optimizer=optimizer)
    seq = _sequential(model, pad, clients, start, settings)
    bat = _batched(model, pad, clients, start, settings)
    _assert_same(seq, bat)
    moved = max(float(np.max(np.abs(v - start))) for v, _ in seq)
    assert moved > 1e-3  # the comparison is of real training, not of untouched adapters
    np.testing.assert_array_equal(get_adapter_vector(model), start)  # model left as it was


def test_batched_equals_sequential_epochs_and_chunks() -> None:
    """Epochs give clients different step counts; a tiny budget forces one client per chunk."""
    model, pad, clients, start = _federation()
    settings = LocalTrainingSettings(batch_size=4, lr=3e-3, epochs=1)
    seq = _sequential(model, pad, clients, start, settings)
    assert len({r.steps for _, r in seq}) > 1
    _assert_same(seq, _batched(model, pad, clients, start, settings))
    _assert_same(seq, _batched(model, pad, clients, start, settings, budget=0.01))


def test_batched_equals_sequential_ffa_lora() -> None:
    model, pad, clients, start = _federation(ffa=True)
    settings = LocalTrainingSettings(batch_size=4, lr=3e-3, steps=3)
    _assert_same(_sequential(model, pad, clients, start, settings),
                 _batched(model, pad, clients, start, settings))


@pytest.mark.parametrize("ffa", [False, True])
def test_batched_dp_sgd_equals_opacus(ffa: bool) -> None:
    """Per-example clipping within each client, Opacus' noise draws, division by q·n."""
    model, pad, clients, start = _federation(ffa=ffa)
    settings = LocalTrainingSettings(batch_size=4, lr=3e-3, steps=4, optimizer="adamw")
    dp = SampleDPSettings(noise_multiplier=0.7, max_grad_norm=0.05)
    params = trainable_parameters(model)
    seq = []
    with PrivateModel(model, dp) as private:
        for c, examples in enumerate(clients):
            set_adapter_vector(model, start)
            noise = torch.Generator()
            noise.manual_seed(100 + c)
            result = train_local_dp(private, params, examples, settings, dp, pad_id=pad,
                                    device=torch.device("cpu"), rng=np.random.default_rng([7, c]),
                                    noise_generator=noise)
            seq.append((get_adapter_vector(model), result))
    set_adapter_vector(model, start)
    bat = _batched(model, pad, clients, start, settings,
                   dp=DPJobSettings(noise_multiplier=0.7, max_grad_norm=0.05))
    _assert_same(seq, bat)
    # Without noise the clipping alone must match too (noise would hide a clipping error).
    seq0 = []
    with PrivateModel(model, dp) as private:
        for c, examples in enumerate(clients):
            set_adapter_vector(model, start)
            result = train_local_dp(private, params, examples, settings, dp, pad_id=pad,
                                    device=torch.device("cpu"), rng=np.random.default_rng([7, c]),
                                    noise_generator=torch.Generator(), noise_scale=0.0)
            seq0.append((get_adapter_vector(model), result))
    set_adapter_vector(model, start)
    _assert_same(seq0, _batched(model, pad, clients, start, settings,
                                dp=DPJobSettings(noise_multiplier=0.0, max_grad_norm=0.05)))


def test_batched_refuses_what_it_cannot_reproduce() -> None:
    base, _ = load_base_model(BUILTIN_MODEL)
    model = attach_lora(base, LoraSettings(rank=2, alpha=4.0, dropout=0.1), seed=0)
    assert "dropout" in (batched_unsupported(model) or "")
    assert batched_unsupported(model, dropout=0.1) is not None
    with pytest.raises(ConfigError, match="memory_budget_mb"):
        BatchedClientTrainer(model, pad_id=0,
                             device=torch.device("cpu"), memory_budget_mb=0)
