"""Secure aggregation in the federated loop: same adapter as plain within the quantization bound."""

from pathlib import Path

import numpy as np
import pytest

from fedpriv.audits.config import AuditConfig, from_mapping
from fedpriv.audits.runner import run_audit
from fedpriv.protocols import RoundContext, create
from fedpriv.protocols.encoding import quantization_bound
from fedpriv.train.checkpoint import load_checkpoint
from helpers import tiny_config_dict


def _vector(out: Path, run: str) -> np.ndarray:
    ck = load_checkpoint(out / "runs" / run / "checkpoint.pt")
    assert ck is not None
    return ck.global_vector


@pytest.mark.parametrize("protocol", ["secagg", "secagg+"])
def test_one_round_matches_plain_within_quantization_bound(protocol: str, tmp_path: Path) -> None:
    d = tiny_config_dict(rounds=1, clients=4, share_training=False)  # each trains alone
    d["runs"] = [{"name": "plain"}, {"name": "secure", "protocol": protocol}]
    report = run_audit(from_mapping(AuditConfig, d), tmp_path)
    plain, secure = _vector(tmp_path, "plain"), _vector(tmp_path, "secure")
    history = report["runs"][1]["history"][0]
    assert history["survivors"] == [0, 1, 2, 3]
    # The server decodes Σ(w/max_w)·Δ (each coordinate within n·resolution) and Σw (each
    # weight rounded to 2^-f), then divides.  Weights are relative to the largest client,
    # so Σw >= 1, and |mean Δ| <= ||mean Δ||₂ = update_norm.
    plan = create(protocol).plan(  # type: ignore[attr-defined]
        RoundContext(round=0, participants=(0, 1, 2, 3), vector_size=1))
    err_sum = quantization_bound(plan.spec, 4)
    err_weight = 4 * 2.0 ** -(plan.weight_bits + 1)
    bound = (err_sum + history["update_norm"] * err_weight) / (1 - err_weight)
    diff = float(np.abs(plain - secure).max())
    assert 0 < diff <= bound, (diff, bound)
    secure_run = report["runs"][1]
    assert secure_run["protocol"] == protocol
    assert secure_run["protocol_stats"]["clipped_values"] == 0
    assert secure_run["cost"]["bytes_up_per_client"] > report["runs"][0]["cost"][
        "bytes_up_per_client"]
    # Shared training compares the same round's two aggregates: within the same bound.
    d["federation"]["share_training"] = True  # type: ignore[index]
    shared = run_audit(from_mapping(AuditConfig, d), tmp_path / "shared")["runs"][1]
    assert shared["shared_training"]["trained_by"] == "plain"
    assert 0 < shared["shared_training"]["max_abs_deviation"] <= bound


def test_secagg_plus_with_dropout_trains_like_plain(tmp_path: Path) -> None:
    d = tiny_config_dict(rounds=3, clients=6, dropout=0.34)
    d["runs"] = [{"name": "plain"}, {"name": "sa", "protocol": "secagg+"}]
    report = run_audit(from_mapping(AuditConfig, d), tmp_path)
    plain, sa = report["runs"]
    assert sa["status"] == "ok", sa["error"]
    for hp, hs in zip(plain["history"], sa["history"], strict=True):
        assert hp["participants"] == hs["participants"]
        assert len(hp["survivors"]) == 4  # plain has one phase: 2 of 6 drop before it
        if hs["aborted"] is None:
            # a client that drops at the unmasking phase already sent its masked input
            assert 4 <= len(hs["survivors"]) <= 6
    assert sa["utility"]["eval_loss"] == pytest.approx(plain["utility"]["eval_loss"], rel=1e-3)
