"""The federated loop trains a round's clients batched, with the sequential loop's result.

``federation.trainer`` picks how :class:`~fedpriv.train.FederatedTrainer` trains
the sampled clients: one by one, or together with
:class:`~fedpriv.train.batched.BatchedClientTrainer`.  A round must come out the
same either way (float tolerance): the same clients, the same batch order and
DP-SGD noise (keyed by the run's secret), the same protocol inputs.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fedpriv.audits.config import AuditConfig, FederationConfig, from_mapping
from fedpriv.audits.runner import federation_settings
from fedpriv.data import generate_client_records
from fedpriv.dp.config import make_dp_config, plan_dp
from fedpriv.errors import ConfigError
from fedpriv.lora import LoraSettings
from fedpriv.models import BUILTIN_MODEL, attach_lora, get_adapter_vector, load_base_model
from fedpriv.protocols import create
from fedpriv.train import FederatedTrainer, FederationSettings
from fedpriv.train.batching import encode_texts
from fedpriv.train.local import LocalTrainingSettings
from helpers import tiny_config_dict

CPU = torch.device("cpu")
SECRET = bytes(range(32))
SIZES = (3, 9, 6, 12, 4, 7)


@pytest.fixture(scope="module")
def setup():  # type: ignore[no-untyped-def]
    model, tok = load_base_model(BUILTIN_MODEL, device=CPU)
    records = generate_client_records(len(SIZES), max(SIZES), seed=2)
    examples = [encode_texts(tok, [r.text for r in recs[:n]], 36)
                for recs, n in zip(records, SIZES, strict=True)]
    return model, tok, examples


def _trainer(setup, trainer: str, *, dp: str | None = None, ffa: bool = False,
             dropout: float = 0.0, optimizer: str = "adamw",
             secret: bytes = SECRET):  # type: ignore[no-untyped-def]
    model, tok, examples = setup
    plan = None
    if dp is not None:
        plan = plan_dp(make_dp_config(dp, params={"noise_multiplier": 0.8, "clip": 0.05}),
                       client_sizes=[len(e) for e in examples],
                       rounds_per_client=[1] * len(examples), rounds=1, clients_per_round=4,
                       local_steps=[3] * len(examples),
                       local_sample_rates=[min(1.0, 4 / len(e)) for e in examples])
    peft = attach_lora(model, LoraSettings(rank=2, alpha=4.0, ffa=ffa, dropout=dropout,
                                           target_modules=("q_proj", "v_proj")), seed=0)
    settings = FederationSettings(
        rounds=2, clients_per_round=4, trainer=trainer,
        local=LocalTrainingSettings(batch_size=4, lr=5e-3, steps=3, optimizer=optimizer))
    return FederatedTrainer(peft, examples, examples[0], create("plain"), settings,
                            pad_id=tok.pad_token_id or 0, device=CPU, seed=3, dp=plan,
                            dp_secret=secret)


def _rounds(trainer: FederatedTrainer, rounds: int = 2):  # type: ignore[no-untyped-def]
    g = get_adapter_vector(trainer.model)
    outs = []
    for r in range(rounds):
        out = trainer.probe_round(g, r)
        outs.append(out)
        g = out.global_vector
    trainer.model.unload()
    return outs


def _assert_rounds_match(seq, bat, tol: float = 2e-5) -> None:  # type: ignore[no-untyped-def]
    for a, b in zip(seq, bat, strict=True):
        assert a.participants == b.participants
        view_a, view_b = a.result.view.individual_updates, b.result.view.individual_updates
        for c in a.participants:  # plain: the server sees every client's update
            assert np.max(np.abs(view_a[c] - view_b[c])) < tol
        assert np.max(np.abs(a.global_vector - b.global_vector)) < tol
        np.testing.assert_allclose(a.losses, b.losses, rtol=1e-4)


@pytest.mark.parametrize(("ffa", "optimizer"), [(False, "adamw"), (True, "adamw"),
                                                (False, "sgd")])
def test_batched_round_equals_sequential_round(setup, ffa: bool, optimizer: str) -> None:  # type: ignore[no-untyped-def]
    seq = _rounds(_trainer(setup, "sequential", ffa=ffa, optimizer=optimizer))
    batched = _trainer(setup, "batched", ffa=ffa, optimizer=optimizer)
    assert batched.batched_trainer() is not None
    start = get_adapter_vector(batched.model)
    bat = _rounds(batched)
    _assert_rounds_match(seq, bat)
    assert np.max(np.abs(bat[-1].global_vector - start)) > 25 * 2e-5  # the rounds did train


def test_batched_round_equals_sequential_under_sample_dp(setup) -> None:  # type: ignore[no-untyped-def]
    """Per-example clipping per client and the noise keyed by the run's secret, both ways."""
    seq = _rounds(_trainer(setup, "sequential", dp="sample"))
    bat = _rounds(_trainer(setup, "batched", dp="sample"))
    _assert_rounds_match(seq, bat)
    # The match is not trivial: another secret draws other noise (and batches), far apart.
    other = _rounds(_trainer(setup, "batched", dp="sample", secret=bytes(32)))
    assert np.max(np.abs(other[0].global_vector - bat[0].global_vector)) > 100 * 2e-5


def test_batched_round_equals_sequential_under_user_dp(setup) -> None:  # type: ignore[no-untyped-def]
    """User-level DP clips the batched updates exactly as the sequential ones."""
    seq = _rounds(_trainer(setup, "sequential", dp="user"))
    bat = _rounds(_trainer(setup, "batched", dp="user"))
    for a, b in zip(seq, bat, strict=True):
        assert a.participants == b.participants
        if a.result is not None:
            assert np.max(np.abs(a.global_vector - b.global_vector)) < 2e-5


def test_gradient_canary_holder_trains_sequentially_beside_the_batch(setup) -> None:  # type: ignore[no-untyped-def]
    scores = []
    for kind in ("sequential", "batched"):
        t = _trainer(setup, kind, dp="sample")
        t.plant_gradient_canaries(8, np.random.default_rng(0), client=1)
        assert t._trains_sequentially(1) and not t._trains_sequentially(0)
        g = get_adapter_vector(t.model)
        for r in range(3):
            t.probe_round(g, r)
        scores.append(np.concatenate([c.projections for c in t.canary_rounds]))
        t.model.unload()
    assert scores[0].size > 0
    np.testing.assert_allclose(scores[0], scores[1], rtol=1e-3, atol=1e-6)


def test_auto_falls_back_and_batched_refuses_adapter_dropout(setup) -> None:  # type: ignore[no-untyped-def]
    auto = _trainer(setup, "auto", dropout=0.1)
    try:
        assert auto.batched_trainer() is None
        out = auto.probe_round(get_adapter_vector(auto.model), 0)
        assert len(out.participants) == 4
    finally:
        auto.model.unload()
    forced = _trainer(setup, "batched", dropout=0.1)
    try:
        with pytest.raises(ConfigError, match=r"dropout.*'auto' or 'sequential'"):
            forced.probe_round(get_adapter_vector(forced.model), 0)
    finally:
        forced.model.unload()
    assert _trainer_kind(setup, "auto") is not None


def _trainer_kind(setup, kind: str):  # type: ignore[no-untyped-def]
    t = _trainer(setup, kind)
    try:
        return t.batched_trainer()
    finally:
        t.model.unload()


def test_trainer_config_is_validated_and_reaches_the_loop() -> None:
    with pytest.raises(ConfigError, match=r"federation\.trainer must be one of"):
        FederationConfig(trainer="fast")
    for bad in (0, -5, True, "lots"):
        with pytest.raises(ConfigError, match="memory_budget_mb"):
            FederationConfig(memory_budget_mb=bad)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="trainer must be one of"):
        FederationSettings(rounds=1, clients_per_round=1, trainer="x",
                           local=LocalTrainingSettings(batch_size=1, lr=1.0, steps=1))
    cfg = from_mapping(AuditConfig, tiny_config_dict(trainer="sequential", memory_budget_mb=64))
    settings = federation_settings(cfg)
    assert settings.trainer == "sequential" and settings.memory_budget_mb == 64
    assert federation_settings(from_mapping(AuditConfig, tiny_config_dict())).trainer == "auto"
