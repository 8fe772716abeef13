"""The canary audits end to end: canary clients (user/distributed DP), gradient canaries (sample).

A tiny federation (the built-in model, 3 clients, a few rounds) with
``attacks.client_canaries``: the report carries ``leakage.client_audit`` for
both observations, each naming what it observed, with the (ε, δ) and f-DP
bounds, Andrew et al.'s estimate and the idealized ceiling; with the real noise
nothing is flagged, with the noise removed (``noise_scale=0``, the mutation
test) the run is flagged in report.json, report.md and the CLI's warnings.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from fedpriv.audits.config import AuditConfig, from_mapping
from fedpriv.audits.runner import run_audit
from fedpriv.cli import guarantee_warnings
from helpers import tiny_config_dict

CANARIES = 400


def config(mode: str, epsilon: float = 1.0) -> AuditConfig:
    d = tiny_config_dict(rounds=4, clients=3)
    d["attacks"] = {"client_canaries": CANARIES, "inversion": False}
    protocol = "secagg" if mode == "distributed" else "plain"
    d["runs"] = [{"name": mode, "protocol": protocol, "dp": mode, "epsilon": epsilon}]
    return from_mapping(AuditConfig, d)


@pytest.mark.parametrize("mode", ["user", "distributed"])
def test_client_audit_reports_both_observations_and_flags_removed_noise(
        tmp_path: Path, mode: str) -> None:
    report = run_audit(config(mode), tmp_path / "real")
    (run,) = report["runs"]
    block = run["leakage"]["client_audit"]
    stated = run["privacy"]["epsilon"]
    assert block["relation"] == "add/remove one client"
    assert block["reference_epsilon"] == pytest.approx(stated)
    assert block["canaries"] == CANARIES and 0 < block["included"] < CANARIES
    assert set(block["observations"]) == {"all_rounds", "final_model"}
    for name, obs in block["observations"].items():
        assert obs["observed"], name
        assert 0 <= obs["epsilon_lower_bound"] <= stated
        assert 0 <= obs["f_dp"]["epsilon_lower_bound"] <= stated
        assert obs["epsilon_estimate"] is not None and obs["epsilon_estimate"] >= 0
        assert 0 < obs["idealized_lower_bound"] < stated
        assert not obs["violation"]
    assert not block["violation"] and run["privacy"]["mutation"] is None

    broken = run_audit(config(mode), tmp_path / "broken", noise_scale=0.0)
    (run,) = broken["runs"]
    assert run["privacy"]["mutation"] == "no-noise"
    assert run["privacy"]["epsilon"] == pytest.approx(stated)  # ε is still stated
    block = run["leakage"]["client_audit"]
    assert block["observations"]["all_rounds"]["epsilon_lower_bound"] > stated
    assert block["violation"]
    assert any("client" in line and "does not hold" in line
               for line in guarantee_warnings(broken))
    assert "does not hold" in (tmp_path / "broken" / "report.md").read_text()


def test_client_canaries_are_ignored_without_client_level_dp(tmp_path: Path) -> None:
    d = tiny_config_dict(rounds=1, clients=3)
    d["attacks"] = {"client_canaries": 10, "inversion": False}
    report = run_audit(from_mapping(AuditConfig, d), tmp_path)
    assert "client_audit" not in report["runs"][0]["leakage"]


def test_gradient_audit_of_sample_dp_flags_removed_noise_only(tmp_path: Path) -> None:
    d = tiny_config_dict(rounds=2, clients=3)
    d["attacks"] = {"gradient_canaries": CANARIES, "inversion": False}
    d["runs"] = [{"name": "sample", "protocol": "plain", "dp": "sample", "epsilon": 1.0}]
    cfg = from_mapping(AuditConfig, d)
    (run,) = run_audit(cfg, tmp_path / "real")["runs"]
    block = run["leakage"]["gradient_audit"]
    assert block["relation"] == "add/remove one record" and block["holder"] == 0
    assert block["reference_epsilon"] == pytest.approx(run["privacy"]["per_client_epsilon"][0])
    for obs in block["observations"].values():
        assert obs["epsilon_lower_bound"] <= block["reference_epsilon"]
        assert obs["epsilon_estimate"] is None and not obs["f_dp"]["valid"]
    assert not block["violation"]
    broken = run_audit(cfg, tmp_path / "broken", noise_scale=0.0)
    block = broken["runs"][0]["leakage"]["gradient_audit"]
    assert block["observations"]["all_rounds"]["epsilon_lower_bound"] > block["reference_epsilon"]
    assert block["violation"]


def test_too_few_canaries_on_a_side_give_no_estimate_but_still_a_bound() -> None:
    import numpy as np

    from fedpriv.audits.canary_audit import observation_block

    scores, included = np.array([3.0, 0.1, -0.2, 0.4]), np.array([True, False, False, False])
    block = observation_block(scores, included, observed="test", score="test", delta=1e-5,
                              confidence=0.95, reference=1.0)
    assert block["epsilon_estimate"] is None
    assert block["epsilon_lower_bound"] >= 0 and not block["violation"]
