"""Shared training: runs that differ only by an exact protocol train one trajectory.

The claim (``federation.share_training``): the companion protocols aggregate the
very same client inputs every round and their aggregate matches the training
run's, so the companion's released model is the training run's, while what its
server saw (views, cost, inversion) is its own.  The attack on that claim is a
companion protocol whose aggregate does *not* match (here: ``secagg+`` clipping
every entry away); it must not ride on the other run's trajectory.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fedpriv.audits.config import AuditConfig, RunConfig, from_mapping, load_preset
from fedpriv.audits.progress import AuditProgress
from fedpriv.audits.runner import run_audit, run_fingerprint, shared_training_groups
from fedpriv.protocols import AggregationResult, CostRecord, ServerView
from fedpriv.train.loop import SHARE_TOLERANCE, CompanionRound
from helpers import tiny_config_dict


def _config(runs: list[dict[str, Any]], **federation: Any) -> AuditConfig:
    data = tiny_config_dict(**{"rounds": 2, **federation})
    data["runs"] = runs
    data["attacks"] = {"epsilon_canaries": 20}
    return from_mapping(AuditConfig, data)


PLAIN = {"name": "plain", "protocol": "plain"}
SECAGG = {"name": "secagg+", "protocol": "secagg+"}


def test_default_preset_trains_plain_for_secagg_and_ckks() -> None:
    config = load_preset("default")
    assert {k: [r.name for r in v] for k, v in shared_training_groups(config).items()} == {
        "plain": ["secagg+", "ckks"]}


def test_groups_exclude_dp_dropouts_ffa_and_opt_out() -> None:
    runs = [PLAIN, SECAGG, {"name": "user", "protocol": "secagg+", "dp": "user", "epsilon": 8.0},
            {"name": "ffa", "protocol": "plain", "ffa": True},
            {"name": "ffa-ckks", "protocol": "ckks", "ffa": True}]
    groups = shared_training_groups(_config(runs))
    assert {k: [r.name for r in v] for k, v in groups.items()} == {
        "plain": ["secagg+"], "ffa": ["ffa-ckks"]}
    assert shared_training_groups(_config(runs, share_training=False)) == {}
    assert shared_training_groups(_config(runs, dropout=0.2)) == {}


def test_fingerprint_covers_the_companions() -> None:
    config = _config([PLAIN, SECAGG])
    plain, secagg = config.runs
    assert run_fingerprint(config, plain) != run_fingerprint(config, plain, (secagg,))


def _result(aggregate: list[float], survivors: tuple[int, ...] = (0, 1)) -> AggregationResult:
    vector = np.asarray(aggregate)
    view = ServerView(protocol="plain", round=0, participants=(0, 1), survivors=survivors,
                      aggregate=vector, total_weight=2.0, individual_updates=None,
                      individual_weights=None, transcript=())
    return AggregationResult(vector, 2.0, survivors, view, CostRecord.empty())


def test_companion_round_compare() -> None:
    own = _result([0.5, -1.0])
    assert CompanionRound.compare(_result([0.5, -1.0 + 1e-6]), own).error is None
    off = CompanionRound.compare(_result([0.5, -1.0 + 10 * SHARE_TOLERANCE]), own)
    assert off.error is not None and off.max_abs_deviation == pytest.approx(10 * SHARE_TOLERANCE)
    other = CompanionRound.compare(_result([0.5, -1.0], survivors=(0,)), own)
    assert other.error is not None and other.max_abs_deviation == float("inf")


class _Recorder(AuditProgress):
    def __init__(self) -> None:
        self.shared: list[tuple[str, str, int]] = []

    def run_shared(self, run: RunConfig, trained_by: str, total_rounds: int) -> None:
        self.shared.append((run.name, trained_by, total_rounds))


def test_shared_audit_matches_separate_training(tmp_path: Path) -> None:
    config = _config([PLAIN, SECAGG])
    progress = _Recorder()
    shared = run_audit(config, tmp_path / "shared", progress=progress)
    assert progress.shared == [("secagg+", "plain", 2)]  # the CLI's bar says so
    alone = run_audit(replace(config, federation=replace(config.federation,
                                                         share_training=False)),
                      tmp_path / "alone")
    s_plain, s_secagg = shared["runs"]
    a_plain, a_secagg = alone["runs"]
    assert s_plain["shared_training"] == {"companions": ["secagg+"]}
    assert s_secagg["shared_training"]["trained_by"] == "plain"
    deviation = s_secagg["shared_training"]["max_abs_deviation"]
    assert 0 < deviation < 1e-5  # secagg+'s fixed-point rounding, nothing more
    assert "shared_training" not in a_plain and "shared_training" not in a_secagg
    # The training run is exactly the run trained alone ...
    assert s_plain["utility"] == a_plain["utility"]
    assert s_plain["leakage"]["mia"] == a_plain["leakage"]["mia"]
    # ... and the companion is the separately trained secagg+ run within its rounding.
    assert s_secagg["utility"]["perplexity"] == pytest.approx(
        a_secagg["utility"]["perplexity"], rel=1e-4)
    # Its own protocol's cost and view: bytes and rounds of secagg+, not plain's.
    assert s_secagg["cost"]["bytes_up_per_client"] == a_secagg["cost"]["bytes_up_per_client"]
    assert s_secagg["cost"]["bytes_down_per_client"] > 0 == s_plain["cost"]["bytes_down_per_client"]
    assert s_secagg["cost"]["protocol_s"] > 0
    assert "mia_update" in s_plain["leakage"] and "mia_update" not in s_secagg["leakage"]
    assert (tmp_path / "shared" / "runs" / "secagg+" / "adapter").is_dir()
    assert "`secagg+`: trained by `plain`" in (tmp_path / "shared" / "report.md").read_text()


def test_a_companion_that_does_not_match_trains_alone(
    tmp_path: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    # secagg+ clipping every entry to ±1e-9: its aggregate is not plain's.
    clipped = {**SECAGG, "protocol_params": {"clip": 1e-9}}
    with caplog.at_level(logging.WARNING, logger="fedpriv"):
        report = run_audit(_config([PLAIN, clipped], rounds=1), tmp_path)
    plain, secagg = report["runs"]
    assert "shared_training" not in secagg and secagg["status"] == "ok"
    assert "trains on its own" in caplog.text
    assert secagg["protocol_stats"]["clipped_values"] > 0
    assert secagg["utility"]["perplexity"] != plain["utility"]["perplexity"]


def test_resumed_shared_training_matches_the_uninterrupted_one(tmp_path: Path) -> None:
    from helpers import KillAfter, Killed

    config = _config([PLAIN, SECAGG])
    whole = run_audit(config, tmp_path / "whole")
    with pytest.raises(Killed):
        run_audit(config, tmp_path / "cut", progress=KillAfter(1))
    resumed = run_audit(config, tmp_path / "cut", resume=True)
    for a, b in zip(whole["runs"], resumed["runs"], strict=True):
        assert a["utility"] == b["utility"]
        # (secagg+'s rounding draws fresh randomness: its deviation differs, never its bound)
        assert a.get("shared_training", {}).keys() == b.get("shared_training", {}).keys()
        assert [h["survivors"] for h in a["history"]] == [h["survivors"] for h in b["history"]]
    assert resumed["runs"][0]["resumed_from_round"] == 1
