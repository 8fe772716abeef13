"""CKKS in the federated loop: the same adapter as plain within the release bound."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fedpriv.audits.config import AuditConfig, from_mapping
from fedpriv.audits.runner import run_audit
from fedpriv.protocols.ckks import CKKSConfig, choose_parameters
from fedpriv.train.checkpoint import load_checkpoint
from helpers import tiny_config_dict


def _vector(out: Path, run: str) -> np.ndarray:
    ck = load_checkpoint(out / "runs" / run / "checkpoint.pt")
    assert ck is not None
    return ck.global_vector


def test_one_round_matches_plain_within_the_release_bound(tmp_path: Path) -> None:
    d = tiny_config_dict(rounds=1, clients=4, share_training=False)  # each trains alone
    d["runs"] = [{"name": "plain"}, {"name": "he", "protocol": "ckks"}]
    report = run_audit(from_mapping(AuditConfig, d), tmp_path)
    plain_run, he_run = report["runs"]
    assert he_run["status"] == "ok", he_run.get("error")
    assert he_run["protocol"] == "ckks"
    assert he_run["history"][0]["survivors"] == [0, 1, 2, 3]
    # Weights are relative to the largest client, so W = Σ w' >= 1; the mean is within
    # 2B / (W − B) of the exact one (protocols/ckks.md, "Precision"); server_lr = 1, and the
    # float32 global vector adds up to one rounding step (ulp) per side.
    bound = choose_parameters(CKKSConfig()).release_bound(4)
    plain, he = _vector(tmp_path, "plain"), _vector(tmp_path, "he")
    assert plain.dtype == he.dtype == np.float32
    ulp = float(np.spacing(np.abs(plain).max()))
    diff = float(np.abs(plain.astype(np.float64) - he).max())
    assert 0 < diff <= 2 * bound / (1 - bound) + 2 * ulp, (diff, bound, ulp)
    assert he_run["protocol_stats"]["clipped_values"] == 0
    assert he_run["cost"]["bytes_up_per_client"] > 9 * plain_run["cost"]["bytes_up_per_client"]
