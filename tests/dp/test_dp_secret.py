"""DP randomness is secret: the attack of issue 14 (regenerate the noise from the report) fails.

The adversary holds report.json, report.md and the config — the seed included —
and, to be generous, every client's data.  If the run's noise and sampling
followed the seed, that adversary could replay the run and subtract the noise
(the released adapter would be a function of public information and the data).
Each test plays that adversary against a real audit, for every DP mode, and
checks the same attack *does* succeed in the explicit deterministic debugging
mode (so the test can fail).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from fedpriv.audits.config import AuditConfig, from_mapping
from fedpriv.audits.runner import run_audit
from fedpriv.dp.noise import gaussian, noise_seed
from fedpriv.dp.secret import SECRET_FILE, read_secret, run_secret, write_secret
from fedpriv.errors import CheckpointError
from fedpriv.train.checkpoint import load_checkpoint
from helpers import KillAfter, Killed, tiny_config_dict

MODES = {
    "sample": {"name": "sdp", "protocol": "plain", "dp": "sample",
               "dp_params": {"noise_multiplier": 1.0}},
    "user": {"name": "udp", "protocol": "plain", "dp": "user",
             "dp_params": {"noise_multiplier": 1.0, "clip": 0.01}},
    "distributed": {"name": "ddp", "protocol": "secagg", "dp": "distributed",
                    "dp_params": {"noise_multiplier": 1.0, "clip": 0.01}},
}


def _config(mode: str, *, deterministic: bool = False, rounds: int = 2,
            **federation: object) -> AuditConfig:
    data = tiny_config_dict(rounds=rounds, **federation)
    run = json.loads(json.dumps(MODES[mode]))
    if deterministic:
        run["dp_params"]["deterministic"] = True
    data["runs"] = [run]
    data["attacks"] = {"inversion": False}
    return from_mapping(AuditConfig, data)


def _final(out: Path, name: str) -> np.ndarray:
    ckpt = load_checkpoint(out / "runs" / name / "checkpoint.pt")
    assert ckpt is not None
    return ckpt.global_vector


@pytest.fixture(scope="module")
def tiny_setup():  # type: ignore[no-untyped-def]
    import torch

    from fedpriv.data import generate_client_records
    from fedpriv.models import BUILTIN_MODEL, load_base_model
    from fedpriv.train.batching import encode_texts

    model, tok = load_base_model(BUILTIN_MODEL, device=torch.device("cpu"))
    records = generate_client_records(3, 6, seed=0)
    return model, tok, [encode_texts(tok, [r.text for r in c], 24) for c in records]


def _replay(setup, mode: str, *, deterministic: bool) -> np.ndarray:  # type: ignore[no-untyped-def]
    """One round of ``mode`` from the same seed, config and data: the adversary's replay."""
    import torch

    from fedpriv.dp.config import make_dp_config, plan_dp
    from fedpriv.dp.distributed import secagg_params
    from fedpriv.lora import LoraSettings
    from fedpriv.models import adapter_size, attach_lora, get_adapter_vector
    from fedpriv.protocols import create
    from fedpriv.train import FederatedTrainer, FederationSettings
    from fedpriv.train.local import LocalTrainingSettings

    model, _, examples = setup
    params = dict(MODES[mode]["dp_params"], deterministic=deterministic)
    peft = attach_lora(model, LoraSettings(rank=2, alpha=4.0, target_modules=("q_proj",)), seed=0)
    try:
        n = len(examples)
        plan = plan_dp(make_dp_config(mode, params=params), client_sizes=[len(e) for e in examples],
                       rounds_per_client=[1] * n, rounds=1, clients_per_round=n,
                       local_steps=[2] * n, local_sample_rates=[0.5] * n,
                       adapter_dim=adapter_size(peft))
        protocol = (create("secagg", **secagg_params(20)) if mode == "distributed"
                    else create("plain"))
        settings = FederationSettings(rounds=1, clients_per_round=n,
                                      local=LocalTrainingSettings(batch_size=3, lr=1e-2, steps=2))
        trainer = FederatedTrainer(peft, examples, [], protocol, settings, pad_id=0,
                                   device=torch.device("cpu"), seed=7, dp=plan)
        g = get_adapter_vector(peft)
        return trainer.probe_round(g).global_vector - g
    finally:
        peft.unload()


@pytest.mark.parametrize("mode", sorted(MODES))
def test_replaying_the_run_from_the_report_does_not_remove_the_noise(
    tiny_setup, mode: str
) -> None:
    """Same seed, config and data: the released step is not reproducible, so not denoisable."""
    det = [_replay(tiny_setup, mode, deterministic=True) for _ in range(2)]
    secret = [_replay(tiny_setup, mode, deterministic=False) for _ in range(2)]
    # Deterministic mode: everything public replays the run exactly, noise included — the
    # attack works, as that run's privacy block says.
    np.testing.assert_array_equal(det[0], det[1])
    # Default: the two releases differ by about √2 × the noise each carries.
    gap = float(np.linalg.norm(secret[0] - secret[1]))
    spread = float(np.linalg.norm(det[0] - secret[0]))
    assert gap > 0.25 * spread > 0


def test_user_dp_noise_regenerated_from_the_seed_leaves_the_noise(tmp_path: Path) -> None:
    """The exact attack of the issue: subtract noise keyed by (report seed, round) from the release.

    What is left is Σ rounds Σ clipped updates (norm ≤ T·n·C) when the noise followed the
    seed; with the run's secret it is the noise itself (norm ≈ √2·σC·√d per round).
    """
    import torch

    from fedpriv.audits.runner import lora_settings
    from fedpriv.models import BUILTIN_MODEL, attach_lora, get_adapter_vector, load_base_model

    rounds, clients, clip, sigma = 2, 3, 0.01, 1.0
    residuals = {}
    for label, det in (("secret", False), ("det", True)):
        cfg = _config("user", deterministic=det, rounds=rounds, clients=clients,
                      clients_per_round=clients)
        report = run_audit(cfg, tmp_path / label)
        run = report["runs"][0]
        assert run["status"] == "ok", run["error"]
        # Everything the adversary uses comes from the report: seed, σ, C, rounds, clients.
        seed = report["config"]["seed"]
        sigma_r, clip_r = run["dp"]["noise_multiplier"], run["dp"]["clip"]
        assert (sigma_r, clip_r) == (sigma, clip)
        model, _ = load_base_model(BUILTIN_MODEL, device=torch.device("cpu"))
        initial = get_adapter_vector(attach_lora(model, lora_settings(cfg, cfg.runs[0]),
                                                 seed=seed))
        released = _final(tmp_path / label, "udp")
        total = clients * (released.astype(np.float64) - initial)
        for r in range(rounds):
            total -= gaussian(noise_seed(seed, r), initial.size, sigma_r * clip_r)
        residuals[label] = float(np.linalg.norm(total))
    bound = rounds * clients * clip
    noise_norm = sigma * clip * np.sqrt(initial.size)
    assert residuals["det"] <= bound * 1.01  # denoised: the attack works in debugging mode
    assert residuals["secret"] > noise_norm > 10 * bound  # the noise stays


def test_secret_file_is_private_and_checked(tmp_path: Path) -> None:
    run_dir = tmp_path / "runs" / "r"
    secret = run_secret(run_dir, resume=False)
    path = run_dir / SECRET_FILE
    assert len(secret) == 32 and path.read_bytes() == secret
    assert (path.stat().st_mode & 0o777) == 0o600
    assert run_secret(run_dir, resume=True) == secret
    assert run_secret(tmp_path / "runs" / "other", resume=False) != secret
    os.chmod(path, 0o644)
    with pytest.raises(CheckpointError, match="readable by others"):
        read_secret(path)
    os.chmod(path, 0o600)
    path.write_bytes(b"short")
    os.chmod(path, 0o600)
    with pytest.raises(CheckpointError, match="corrupt"):
        read_secret(path)
    path.unlink()
    with pytest.raises(CheckpointError, match="missing"):
        read_secret(path)
    write_secret(path, secret)
    assert read_secret(path) == secret


def test_noise_keys_follow_the_secret_not_the_seed() -> None:
    a, b = bytes(32), bytes([1]) + bytes(31)
    assert noise_seed(0, 1, secret=a) == noise_seed(99, 1, secret=a)  # the seed plays no part
    assert noise_seed(0, 1, secret=a) != noise_seed(0, 1, secret=b)
    assert noise_seed(0, 1, secret=a) != noise_seed(0, 2, secret=a)
    assert noise_seed(0, 1, secret=a, purpose="x") != noise_seed(0, 1, secret=a, purpose="y")
    assert noise_seed(0, 1) == noise_seed(0, 1)  # deterministic mode: the seed alone
    assert noise_seed(None, 1) != noise_seed(None, 1)  # neither: fresh from the OS
    x = gaussian(noise_seed(0, 1, secret=a), 10_000, 1.0)
    assert abs(x.mean()) < 0.05 and abs(x.std() - 1) < 0.05


@pytest.mark.slow
def test_dp_resume_matches_uninterrupted_and_refuses_a_bad_secret(tmp_path: Path) -> None:
    cfg = _config("sample", rounds=3)
    cut, full = tmp_path / "cut", tmp_path / "full"
    with pytest.raises(Killed):
        run_audit(cfg, cut, progress=KillAfter(1))
    secret_path = cut / "runs" / "sdp" / SECRET_FILE
    secret = read_secret(secret_path)
    # The uninterrupted reference: the same run (same secret), never killed.
    write_secret(full / "runs" / "sdp" / SECRET_FILE, secret)
    run_audit(cfg, full, resume=True)
    # A resume with the secret missing, shared or replaced is refused before any round.
    secret_path.unlink()
    with pytest.raises(CheckpointError, match="missing"):
        run_audit(cfg, cut, resume=True)
    write_secret(secret_path, secret)
    os.chmod(secret_path, 0o640)
    with pytest.raises(CheckpointError, match="readable by others"):
        run_audit(cfg, cut, resume=True)
    os.chmod(secret_path, 0o600)
    report = run_audit(cfg, cut, resume=True)
    assert report["runs"][0]["resumed_from_round"] == 1
    np.testing.assert_array_equal(_final(cut, "sdp"), _final(full, "sdp"))
    # The secret never reaches the report, report.md or the checkpoint's metadata.
    for path in (cut / "report.json", cut / "report.md"):
        text = path.read_text()
        assert secret.hex() not in text and str(list(secret)) not in text
