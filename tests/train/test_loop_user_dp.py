"""User-level DP-FedAvg in the federated loop: what the server sees and what it releases."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from fedpriv.audits.config import AuditConfig, from_mapping
from fedpriv.audits.runner import run_audit
from fedpriv.dp.config import make_dp_config, plan_dp
from fedpriv.dp.noise import gaussian, noise_seed
from fedpriv.dp.user import clip_update
from fedpriv.errors import ConfigError
from fedpriv.lora import LoraSettings
from fedpriv.models import BUILTIN_MODEL, attach_lora, get_adapter_vector, load_base_model
from fedpriv.protocols import create
from fedpriv.train import FederatedTrainer, FederationSettings
from fedpriv.train.batching import encode_texts
from fedpriv.train.checkpoint import load_checkpoint
from fedpriv.train.local import LocalTrainingSettings
from helpers import tiny_config_dict

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def tiny_setup():  # type: ignore[no-untyped-def]
    from fedpriv.data import generate_client_records

    model, tok = load_base_model(BUILTIN_MODEL, device=CPU)
    records = generate_client_records(6, 8, seed=0)
    examples = [encode_texts(tok, [r.text for r in client], 32) for client in records]
    return model, tok, examples


def _trainer(setup, *, per_round: int, noise: float, clip: float, protocol: str = "plain",
             adaptive: bool = False, ffa: bool = False,
             deterministic: bool = False, secret: bytes | None = None):  # type: ignore[no-untyped-def]
    model, tok, examples = setup
    params: dict[str, object] = {"noise_multiplier": noise, "clip": clip}
    if deterministic:
        params["deterministic"] = True
    if adaptive:
        params.update(adaptive_clip=True, count_stddev=10.0)
    dp = plan_dp(make_dp_config("user", params=params), client_sizes=[len(e) for e in examples],
                 rounds_per_client=[1] * len(examples), rounds=1, clients_per_round=per_round,
                 local_steps=[1] * len(examples), local_sample_rates=[1.0] * len(examples))
    peft = attach_lora(model, LoraSettings(rank=2, alpha=4.0, target_modules=("q_proj",),
                                           ffa=ffa), seed=0)
    settings = FederationSettings(rounds=2, clients_per_round=per_round,
                                  local=LocalTrainingSettings(batch_size=4, lr=1e-2, steps=2))
    return FederatedTrainer(peft, examples, examples[0], create(protocol), settings,
                            pad_id=tok.pad_token_id or 0, device=CPU, seed=3, dp=dp,
                            dp_secret=secret)


@pytest.mark.parametrize("deterministic", [False, True])
def test_server_sees_clipped_unit_weight_updates_and_releases_noised_fixed_mean(
    tiny_setup, deterministic
):
    secret = bytes(range(32))
    trainer = _trainer(tiny_setup, per_round=6, noise=0.5, clip=0.01,
                       deterministic=deterministic, secret=secret)
    try:
        g = get_adapter_vector(trainer.model)
        out = trainer.train_round(0, g)
        view = out.result.view  # plain: the server sees every (clipped) update
        updates = np.stack([view.individual_updates[c] for c in out.participants])
        assert np.all(np.linalg.norm(updates, axis=1) <= 0.01 * (1 + 1e-5))
        assert set(view.individual_weights.values()) == {1.0}
        # released step = (Σ clipped + N(0, (σC)²)) / (qN); the noise is keyed by the run's
        # secret, or by (seed, round) only in the deterministic debugging mode
        key = noise_seed(3, 0) if deterministic else noise_seed(None, 0, secret=secret)
        noise = gaussian(key, g.size, 0.5 * 0.01)
        expected = (updates.sum(axis=0, dtype=np.float64) + noise) / 6
        np.testing.assert_allclose(out.global_vector - g, expected, rtol=1e-4, atol=1e-7)
        assert out.dp_round is not None and out.dp_round.clip == 0.01
        # The attack of issue 14: regenerate the noise from the public seed and subtract it.
        residual = 6 * (out.global_vector - g) - gaussian(noise_seed(3, 0), g.size, 0.5 * 0.01)
        signal = updates.sum(axis=0, dtype=np.float64)
        if deterministic:  # denoised: only the clipped sum (norm ≤ nC) is left
            assert np.linalg.norm(residual - signal) < 1e-4
        else:  # two independent noises remain: ≈ √2 × the noise norm, far above nC
            noise_norm = 0.5 * 0.01 * np.sqrt(g.size)
            assert np.linalg.norm(residual - signal) > noise_norm
            assert np.linalg.norm(residual) > 3 * 6 * 0.01
    finally:
        trainer.model.unload()


def test_poisson_sampling_and_secure_aggregation(tiny_setup):
    trainer = _trainer(tiny_setup, per_round=3, noise=1e-6, clip=0.01, protocol="secagg+")
    try:
        g = get_adapter_vector(trainer.model)
        sizes = {len(trainer.sample_clients(r)) for r in range(30)}
        assert len(sizes) > 2  # Poisson: the number of clients varies around qN = 3
        r = next(r for r in range(30) if len(trainer.sample_clients(r)) >= 2)
        out = trainer.train_round(r, g)
        assert out.result.view.individual_updates is None
        # nearly no noise: the step is Σ clipped / qN, whose norm is at most |S|·C/3
        step = np.linalg.norm(out.global_vector - g)
        assert 0 < step <= len(out.participants) * 0.01 / 3 * 1.001
        empty = next((r for r in range(200) if not trainer.sample_clients(r)), None)
        if empty is not None:  # nobody sampled: the server still releases its noise
            assert trainer.train_round(empty, g).result is None
    finally:
        trainer.model.unload()


def test_adaptive_clip_survives_resume(tmp_path: Path):
    d = tiny_config_dict(rounds=4, clients=4)
    d["runs"] = [{"name": "udp", "dp": "user", "dp_params": {
        "noise_multiplier": 0.5, "clip": 1e-3, "adaptive_clip": True, "count_stddev": 0.5}}]
    cfg = from_mapping(AuditConfig, d)
    from fedpriv.dp.secret import SECRET_FILE, read_secret, write_secret
    from helpers import KillAfter, Killed

    with pytest.raises(Killed):
        run_audit(cfg, tmp_path / "cut", progress=KillAfter(2))
    # The uninterrupted reference is the same run: the same per-run DP secret.
    secret = read_secret(tmp_path / "cut" / "runs" / "udp" / SECRET_FILE)
    write_secret(tmp_path / "full" / "runs" / "udp" / SECRET_FILE, secret)
    full = run_audit(cfg, tmp_path / "full", resume=True)
    clips = [h["dp_clip"] for h in full["runs"][0]["history"]]
    assert clips[0] == 1e-3 and clips[-1] > clips[0]  # every update is clipped: C grows
    assert full["runs"][0]["privacy"]["accountant"] == "prv"
    assert full["runs"][0]["dp"]["adaptive_clip"] is True
    resumed = run_audit(cfg, tmp_path / "cut", resume=True)
    assert [h["dp_clip"] for h in resumed["runs"][0]["history"]] == clips
    a = load_checkpoint(tmp_path / "full" / "runs" / "udp" / "checkpoint.pt")
    b = load_checkpoint(tmp_path / "cut" / "runs" / "udp" / "checkpoint.pt")
    assert a is not None and b is not None
    np.testing.assert_array_equal(a.global_vector, b.global_vector)


def _dist_trainer(setup, *, noise: float, clip: float):  # type: ignore[no-untyped-def]
    model, tok, examples = setup
    peft = attach_lora(model, LoraSettings(rank=2, alpha=4.0, target_modules=("q_proj",)), seed=0)
    dim = get_adapter_vector(peft).size
    dp = plan_dp(make_dp_config("distributed", params={"noise_multiplier": noise, "clip": clip}),
                 client_sizes=[len(e) for e in examples], rounds_per_client=[1] * len(examples),
                 rounds=1, clients_per_round=len(examples), local_steps=[1] * len(examples),
                 local_sample_rates=[1.0] * len(examples), adapter_dim=dim)
    from fedpriv.dp.distributed import secagg_params

    settings = FederationSettings(rounds=1, clients_per_round=len(examples),
                                  local=LocalTrainingSettings(batch_size=4, lr=1e-2, steps=2))
    proto = create("secagg+", **secagg_params(20))
    return FederatedTrainer(peft, examples, examples[0], proto, settings,
                            pad_id=tok.pad_token_id or 0, device=CPU, seed=3, dp=dp), dp


@pytest.mark.parametrize("noise", [0.01, 1.0])
def test_distributed_dp_sum_carries_the_full_noise(tiny_setup, noise):
    trainer, plan = _dist_trainer(tiny_setup, noise=noise, clip=0.01)
    try:
        g = get_adapter_vector(trainer.model)
        n = len(trainer.client_examples)
        mech = trainer.dist_dp
        out = trainer.train_round(0, g)
        assert out.result is not None and out.result.view.individual_updates is None
        trainer.dist_dp = None  # the clients' clipped updates, for the reference only
        clipped = [clip_update(trainer.client_update(c, 0, g)[0].update, 0.01)[0]
                   for c in range(n)]
    finally:
        trainer.model.unload()
    clean_sum = np.sum(clipped, axis=0, dtype=np.float64)
    # what the unmasked secure sum decodes to: the clean sum plus every client's noise share
    seen = mech.server_decode(mech.residue_sum(out.result.aggregate, out.result.total_weight), 0)
    err = seen - clean_sum  # the Skellam noise (std σ·C) plus a far smaller rounding error
    assert err.std() == pytest.approx(noise * 0.01, rel=0.1)
    assert abs(err.mean()) < 4 * noise * 0.01 / np.sqrt(err.size)
    np.testing.assert_allclose(out.global_vector - g, (seen / n).astype(np.float32), rtol=1e-4,
                               atol=1e-7)
    assert plan is not None and plan.accountant == "skellam-rdp"
    assert plan.to_report()["wraparound_probability"] < 1e-6


def test_distributed_dp_needs_secure_aggregation(tmp_path: Path):
    d = tiny_config_dict(rounds=2, clients=3)
    d["runs"] = [{"name": "ddp", "protocol": "plain", "dp": "distributed", "epsilon": 3.0}]
    with pytest.raises(ConfigError, match="needs secure aggregation"):
        from_mapping(AuditConfig, d)
    d["runs"] = [{"name": "ddp", "protocol": "secagg", "dp": "distributed", "epsilon": 8.0,
                  "protocol_params": {"clip": 2.0}}]
    with pytest.raises(ConfigError, match="remove them from protocol_params"):
        from_mapping(AuditConfig, d)
    d["runs"] = [{"name": "ddp", "protocol": "secagg+", "dp": "distributed", "epsilon": 8.0}]
    report = run_audit(from_mapping(AuditConfig, d), tmp_path)
    run = report["runs"][0]
    assert run["status"] == "ok", run["error"]
    assert run["privacy"]["accountant"] == "skellam-rdp"
    assert 0 < run["privacy"]["epsilon"] <= 8.0 * 1.01
    assert run["dp"]["planned_epsilon"] == pytest.approx(run["privacy"]["epsilon"])


def test_ffa_lora_clips_and_noises_b_only(tiny_setup):
    trainer = _trainer(tiny_setup, per_round=6, noise=0.5, clip=0.01, ffa=True)
    try:
        names = [n for n, p in trainer.model.named_parameters() if p.requires_grad]
        assert names and all("lora_B" in n for n in names)  # A is frozen: not in the vector
        b_size = sum(p.numel() for p in trainer.params)
        a_before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()
                    if "lora_A" in n}
        g = get_adapter_vector(trainer.model)
        assert g.size == b_size
        out = trainer.train_round(0, g)
        updates = list(out.result.view.individual_updates.values())
        assert all(u.size == b_size and np.linalg.norm(u) <= 0.01 * (1 + 1e-5) for u in updates)
        for n, p in trainer.model.named_parameters():
            if "lora_A" in n:
                assert torch.equal(p, a_before[n])
    finally:
        trainer.model.unload()


def test_report_hides_who_was_sampled_and_audits_the_replace_one_relation(tmp_path: Path):
    d = tiny_config_dict(rounds=2, clients=4, clients_per_round=2)
    d["runs"] = [{"name": "udp", "dp": "user", "epsilon": 8.0, "dp_params": {"clip": 0.01}}]
    d["attacks"] = {"epsilon_canaries": 20, "inversion": False}
    report = run_audit(from_mapping(AuditConfig, d), tmp_path)
    (run,) = report["runs"]
    assert run["status"] == "ok", run["error"]
    privacy = run["privacy"]
    # q = 1/2: the accountant credits client sampling, so who took part stays secret
    assert run["dp"]["sample_rate"] == 0.5 and privacy["participants_listed"] is False
    assert all(h["participants"] is None and h["survivors"] is None for h in run["history"])
    assert [h["participants_count"] for h in run["history"]] and all(
        h["survivors_count"] <= h["participants_count"] for h in run["history"])
    import json

    # the update-level MIA names no client either (it would say who took part)
    mia_update = json.dumps(run["leakage"].get("mia_update"))
    assert "not named" in mia_update and not any(f"client {c}'s" in mia_update
                                                 for c in range(4))
    audit = run["leakage"]["epsilon_audit"]
    assert audit["relation"] == "replace-one client"
    assert audit["reference_epsilon"] == privacy["replace_one_epsilon"] > privacy["epsilon"]
    assert audit["violation"] is (audit["epsilon_lower_bound"] > audit["reference_epsilon"])
    assert set(privacy["epsilon_by_accountant"]) == {"rdp", "prv"}
    assert privacy["epsilon_by_accountant"]["prv"] <= privacy["epsilon_by_accountant"]["rdp"]
