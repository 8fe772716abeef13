"""The `fedpriv` command: exit codes, messages, reports, --resume after SIGKILL."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import jsonschema
import numpy as np
import pytest
from typer.testing import CliRunner

from fedpriv.audits.config import AuditConfig, from_mapping
from fedpriv.audits.report import report_schema
from fedpriv.audits.runner import run_audit
from fedpriv.cli import app
from fedpriv.train.checkpoint import load_checkpoint
from helpers import tiny_config_dict, write_toml

runner = CliRunner()


def _one_line_error(result) -> str:  # type: ignore[no-untyped-def]
    assert result.exit_code == 2, result.output
    text = result.stderr.strip()
    assert text.startswith("error:"), text
    assert "Traceback" not in result.output
    return text


def test_negative_rounds_exit_2(tmp_path: Path) -> None:
    r = runner.invoke(app, ["audit", "--preset", "quick", "--rounds", "-3", "--out",
                            str(tmp_path)])
    assert "federation.rounds must be >= 1" in _one_line_error(r)


def test_unknown_toml_key_exit_2(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text("[federation]\nrounds = 2\nlocal_stepz = 3\n")
    r = runner.invoke(app, ["audit", str(cfg), "--out", str(tmp_path / "o")])
    assert "unknown config key 'federation.local_stepz'" in _one_line_error(r)


def test_missing_data_file_exit_2(tmp_path: Path) -> None:
    r = runner.invoke(app, ["audit", "--preset", "quick", "--data", str(tmp_path / "none.jsonl"),
                            "--out", str(tmp_path)])
    assert "none.jsonl' does not exist" in _one_line_error(r)


def test_unknown_protocol_and_preset_exit_2(tmp_path: Path) -> None:
    r = runner.invoke(app, ["audit", "--preset", "quick", "--protocol", "telepathy"])
    assert "unknown protocol 'telepathy'" in _one_line_error(r)
    r = runner.invoke(app, ["audit", "--preset", "nope"])
    assert "unknown preset 'nope'" in _one_line_error(r)


def test_audit_on_user_jsonl_writes_valid_report(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    names = ["Ada", "Bo", "Cy", "Di"]
    rows = [{"body": f"Ticket {i}: {names[i % 4]} called about invoice {rng.integers(1e5)}."}
            for i in range(40)]
    data = tmp_path / "tickets.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    cfg = write_toml(tmp_path / "tiny.toml", tiny_config_dict())
    out = tmp_path / "out"
    r = runner.invoke(app, ["audit", str(cfg), "--data", str(data), "--text-field", "body",
                            "--clients", "4", "--rounds", "2", "--out", str(out), "--json"])
    assert r.exit_code == 0, r.output
    printed = json.loads(r.stdout)
    written = json.loads((out / "report.json").read_text())
    assert printed == written
    jsonschema.validate(written, report_schema())
    assert written["config"]["data"]["partition"] == "iid"
    assert written["config"]["federation"]["clients"] == 4
    assert (out / "report.md").read_text().startswith("# fedpriv audit")


def test_report_schema_rejects_broken_reports(tiny_config: AuditConfig, tmp_path: Path) -> None:
    report = run_audit(tiny_config, tmp_path)
    jsonschema.validate(report, report_schema())
    broken = json.loads(json.dumps(report))
    del broken["runs"][0]["utility"]
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, report_schema())
    broken = json.loads(json.dumps(report))
    broken["runs"][0]["privacy"] = {"epsilon": 3.0, "delta": None, "accountant": "none"}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, report_schema())


def test_protocols_and_presets_commands() -> None:
    r = runner.invoke(app, ["protocols", "--json"])
    assert r.exit_code == 0
    assert "plain" in [p["name"] for p in json.loads(r.stdout)]
    r = runner.invoke(app, ["presets"])
    assert r.exit_code == 0 and "default" in r.stdout.split()


@pytest.mark.slow
def test_sigkill_then_resume_matches_uninterrupted(tmp_path: Path) -> None:
    rounds = 40
    cfg_dict = tiny_config_dict(clients=2, rounds=rounds, local_steps=1, batch_size=2)
    cfg_path = write_toml(tmp_path / "c.toml", cfg_dict)
    out = tmp_path / "killed"
    ckpt = out / "runs" / "plain" / "checkpoint.pt"
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen(
        [sys.executable, "-m", "fedpriv.cli", "audit", str(cfg_path), "--out", str(out),
         "--quiet"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        ck = load_checkpoint(ckpt) if ckpt.exists() else None
        if ck is not None and ck.completed_rounds >= 2:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    ck = load_checkpoint(ckpt)
    assert ck is not None, "the killed audit wrote no checkpoint"
    assert 2 <= ck.completed_rounds < rounds, "killed too late to test resuming"
    r = runner.invoke(app, ["audit", str(cfg_path), "--out", str(out), "--resume", "--quiet"])
    assert r.exit_code == 0, r.output
    report = json.loads((out / "report.json").read_text())
    assert report["runs"][0]["resumed_from_round"] == ck.completed_rounds
    resumed = load_checkpoint(ckpt)
    full = tmp_path / "full"
    run_audit(from_mapping(AuditConfig, cfg_dict), full)
    uninterrupted = load_checkpoint(full / "runs" / "plain" / "checkpoint.pt")
    assert resumed is not None and uninterrupted is not None
    np.testing.assert_array_equal(resumed.global_vector, uninterrupted.global_vector)


def test_resume_and_overwrite_conflict() -> None:
    r = runner.invoke(app, ["audit", "--preset", "quick", "--resume", "--overwrite"])
    assert "contradict" in _one_line_error(r)


def test_audit_on_local_hf_dataset(tmp_path: Path) -> None:
    datasets = pytest.importorskip("datasets")
    texts = [f"Order {i} for customer {['Ada', 'Bo', 'Cy'][i % 3]} shipped to Leeds." for i in
             range(30)]
    datasets.Dataset.from_dict({"body": texts}).save_to_disk(str(tmp_path / "ds"))
    cfg = write_toml(tmp_path / "tiny.toml", tiny_config_dict(rounds=1))
    r = runner.invoke(app, ["audit", str(cfg), "--data", f"hf:{tmp_path / 'ds'}", "--text-field",
                            "body", "--out", str(tmp_path / "out"), "--quiet"])
    assert r.exit_code == 0, r.output
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["runs"][0]["status"] == "ok"
    assert report["config"]["data"]["source"].startswith("hf:")


def test_bad_protocol_params_exit_2(tmp_path: Path) -> None:
    cfg = tiny_config_dict()
    cfg["runs"] = [{"name": "p", "protocol": "plain", "protocol_params": {"bogus": 1}}]
    path = write_toml(tmp_path / "c.toml", cfg)
    r = runner.invoke(app, ["audit", str(path), "--out", str(tmp_path / "o")])
    assert "run 'p'" in _one_line_error(r)
    assert "bogus" in r.stderr


def test_dropout_flag_is_validated(tmp_path: Path) -> None:
    r = runner.invoke(app, ["audit", "--preset", "quick", "--dropout", "1.5"])
    assert "federation.dropout" in _one_line_error(r)


@pytest.mark.parametrize("protocol", ["secagg", "secagg+", "ckks"])
def test_audit_protocol_and_dropout_flags(protocol: str, tmp_path: Path) -> None:
    cfg = write_toml(tmp_path / "tiny.toml", tiny_config_dict(rounds=2, clients=5))
    r = runner.invoke(app, ["audit", str(cfg), "--protocol", protocol, "--dropout", "0.2",
                            "--out", str(tmp_path / "o"), "--json"])
    assert r.exit_code == 0, r.output
    report = json.loads(r.stdout)
    (run,) = report["runs"]
    assert run["name"] == protocol and run["protocol"] == protocol and run["status"] == "ok"
    assert report["config"]["federation"]["dropout"] == 0.2
    assert all(len(h["participants"]) == 5 for h in run["history"])


@pytest.mark.parametrize(("dp", "protocol"), [("sample", "plain"), ("user", "secagg+"),
                                              ("distributed", "secagg")])
def test_dp_and_epsilon_flags(dp: str, protocol: str, tmp_path: Path) -> None:
    cfg = write_toml(tmp_path / "tiny.toml", tiny_config_dict(rounds=2, clients=4))
    r = runner.invoke(app, ["audit", str(cfg), "--protocol", protocol, "--dp", dp,
                            "--epsilon", "8", "--out", str(tmp_path / "o"), "--json"])
    assert r.exit_code == 0, r.output
    (run,) = json.loads(r.stdout)["runs"]
    assert run["name"] == f"{protocol}-{dp}-dp" and run["status"] == "ok"
    assert run["dp"]["mode"] == dp and run["dp"]["target_epsilon"] == 8.0
    assert 0 < run["privacy"]["epsilon"] <= 8.0 * 1.01 and run["privacy"]["delta"] == 1e-5
    assert run["privacy"]["accountant"] in ("prv", "skellam-rdp")
    assert run["dp"]["noise_multiplier"] > 0
    privacy = run["privacy"]
    # who the ε protects against, for which relation, and where its randomness comes from
    assert privacy["relation"] == ("add/remove one record" if dp == "sample"
                                   else "add/remove one client")
    assert privacy["threat_model"] and privacy["noise_added_by"]
    assert privacy["randomness"].startswith("secret") and privacy["participation_secret"]
    if dp == "user":
        assert any("server" in who for who in privacy["not_against"])
        assert privacy["replace_one_epsilon"] > privacy["epsilon"]
    if dp == "sample":
        assert "the server" in privacy["protects_against"]
    md = (tmp_path / "o" / "report.md").read_text()
    assert "Who each ε protects against" in md and privacy["threat_model"] in md
    assert (tmp_path / "o" / "runs" / run["name"] / "dp-secret.key").stat().st_mode & 0o077 == 0


def test_dp_flag_renames_runs_and_deterministic_mode_is_flagged(tmp_path: Path) -> None:
    cfg = write_toml(tmp_path / "tiny.toml", tiny_config_dict(rounds=1, clients=3))
    out = tmp_path / "o"
    r = runner.invoke(app, ["audit", str(cfg), "--dp", "user", "--epsilon", "8",
                            "--dp-deterministic", "--out", str(out)])
    assert r.exit_code == 0, r.output
    (run,) = json.loads((out / "report.json").read_text())["runs"]
    assert run["name"] == "plain-user-dp"  # not "plain": the flag changed its mode
    assert run["privacy"]["randomness"].startswith("deterministic")
    assert "does not know the seed" in run["privacy"]["threat_model"]
    assert "holds only against someone who does not know the seed" in " ".join(
        r.stderr.split())
    assert not (out / "runs" / run["name"] / "dp-secret.key").exists()
    r = runner.invoke(app, ["audit", "--preset", "quick", "--dp-deterministic",
                            "--out", str(out)])
    assert "--dp-deterministic needs a DP run" in _one_line_error(r)


def test_resume_of_a_dp_run_without_its_secret_exits_2(tmp_path: Path) -> None:
    cfg = write_toml(tmp_path / "tiny.toml", tiny_config_dict(rounds=1, clients=3))
    out = tmp_path / "o"
    args = ["audit", str(cfg), "--dp", "sample", "--epsilon", "8", "--out", str(out),
            "--quiet"]
    assert runner.invoke(app, args).exit_code == 0
    secret = out / "runs" / "plain-sample-dp" / "dp-secret.key"
    secret.chmod(0o644)
    assert "readable by others" in _one_line_error(runner.invoke(app, [*args, "--resume"]))
    secret.unlink()
    error = _one_line_error(runner.invoke(app, [*args, "--resume"]))
    assert "dp-secret.key" in error and "missing" in error and "--overwrite" in error


def test_dp_bad_input_exit_2(tmp_path: Path) -> None:
    out = str(tmp_path / "o")
    r = runner.invoke(app, ["audit", "--preset", "quick", "--protocol", "plain", "--dp", "user",
                            "--epsilon", "1e-7", "--out", out])
    assert "smallest reachable" in _one_line_error(r) or "reach" in r.stderr
    r = runner.invoke(app, ["audit", "--preset", "quick", "--epsilon", "3", "--out", out])
    assert "--epsilon needs a DP run" in _one_line_error(r)
    r = runner.invoke(app, ["audit", "--preset", "quick", "--protocol", "plain",
                            "--dp", "distributed", "--epsilon", "3", "--out", out])
    assert "needs secure aggregation" in _one_line_error(r)
    r = runner.invoke(app, ["audit", "--preset", "quick", "--dp", "laplace", "--out", out])
    assert "valid modes" in _one_line_error(r)
