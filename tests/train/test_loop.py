"""The federated loop end to end on the built-in model (tiny settings)."""

from pathlib import Path

import numpy as np
import pytest

from fedpriv.audits.config import AuditConfig, apply_overrides
from fedpriv.audits.runner import run_audit
from fedpriv.errors import CheckpointError
from fedpriv.train.checkpoint import load_checkpoint
from helpers import KillAfter, Killed


def _final_vector(out: Path, run: str = "plain") -> np.ndarray:
    ck = load_checkpoint(out / "runs" / run / "checkpoint.pt")
    assert ck is not None and ck.finished
    return ck.global_vector


def test_training_lowers_heldout_loss_and_is_deterministic(
    tiny_config: AuditConfig, tmp_path: Path
) -> None:
    cfg = apply_overrides(tiny_config, federation__rounds=4, federation__local_steps=4)
    rep1 = run_audit(cfg, tmp_path / "a")
    rep2 = run_audit(cfg, tmp_path / "b")
    util = rep1["runs"][0]["utility"]
    assert util["eval_loss"] < util["base_eval_loss"]
    np.testing.assert_array_equal(_final_vector(tmp_path / "a"), _final_vector(tmp_path / "b"))
    assert rep1["runs"][0]["utility"] == rep2["runs"][0]["utility"]
    assert [h["round"] for h in rep1["runs"][0]["history"]] == [0, 1, 2, 3]


def test_resume_after_crash_matches_uninterrupted_run(
    tiny_config: AuditConfig, tmp_path: Path
) -> None:
    cfg = apply_overrides(tiny_config, federation__rounds=5)
    run_audit(cfg, tmp_path / "full")
    with pytest.raises(Killed):
        run_audit(cfg, tmp_path / "cut", progress=KillAfter(2))
    ck = load_checkpoint(tmp_path / "cut" / "runs" / "plain" / "checkpoint.pt")
    assert ck is not None and ck.completed_rounds == 2 and not ck.finished
    report = run_audit(cfg, tmp_path / "cut", resume=True)
    assert report["runs"][0]["resumed_from_round"] == 2
    assert len(report["runs"][0]["history"]) == 5
    np.testing.assert_array_equal(_final_vector(tmp_path / "full"), _final_vector(tmp_path / "cut"))


def test_resume_refuses_another_configuration(tiny_config: AuditConfig, tmp_path: Path) -> None:
    with pytest.raises(Killed):
        run_audit(tiny_config, tmp_path, progress=KillAfter(1))
    other = apply_overrides(tiny_config, federation__lr=1e-2)
    with pytest.raises(CheckpointError, match="different configuration"):
        run_audit(other, tmp_path, resume=True)


def test_client_sampling_and_ffa(tiny_config: AuditConfig, tmp_path: Path) -> None:
    cfg = apply_overrides(
        tiny_config, federation__clients_per_round=2,
        runs=[{"name": "lora", "protocol": "plain"},
              {"name": "ffa", "protocol": "plain", "ffa": True}],
    )
    report = run_audit(cfg, tmp_path)
    lora, ffa = report["runs"]
    for run in (lora, ffa):
        assert run["status"] == "ok"
        assert all(len(h["participants"]) == 2 for h in run["history"])
    # FFA-LoRA sends only B: half the adapter of the same rank.
    assert ffa["lora"]["adapter_size"] * 2 == lora["lora"]["adapter_size"]
    assert ffa["cost"]["bytes_up_per_client"] < lora["cost"]["bytes_up_per_client"]
    assert (tmp_path / "runs" / "ffa" / "adapter").is_dir()


def test_unfinished_run_is_never_silently_overwritten(
    tiny_config: AuditConfig, tmp_path: Path
) -> None:
    with pytest.raises(Killed):
        run_audit(tiny_config, tmp_path, progress=KillAfter(1))
    with pytest.raises(CheckpointError, match="--resume to continue"):
        run_audit(tiny_config, tmp_path)
    report = run_audit(tiny_config, tmp_path, overwrite=True)
    assert report["runs"][0]["resumed_from_round"] is None
    # A finished run may be re-run into the same directory.
    again = run_audit(tiny_config, tmp_path)
    assert again["runs"][0]["utility"] == report["runs"][0]["utility"]


def test_dropout_removes_that_share_of_each_round(tiny_config: AuditConfig, tmp_path: Path) -> None:
    cfg = apply_overrides(tiny_config, federation__clients=6, federation__dropout=0.5)
    report = run_audit(cfg, tmp_path)
    for h in report["runs"][0]["history"]:
        assert len(h["participants"]) == 6 and len(h["survivors"]) == 3
        assert set(h["survivors"]) < set(h["participants"])
    dropped = {tuple(h["survivors"]) for h in report["runs"][0]["history"]}
    assert len(dropped) > 1  # different clients drop in different rounds
