"""`fedpriv sweep`: grid parsing and validation, the ledger, and Ctrl-C then re-run."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from fedpriv.audits import ledger, sweep
from fedpriv.audits.config import AuditConfig, from_mapping
from fedpriv.audits.sweep import (
    append_ledger,
    cell_id,
    drop_torn_tail,
    parse_axis,
    parse_grid,
    plan_cells,
    prepare_sweep,
    read_ledger,
    run_sweep,
    write_frontier,
)
from fedpriv.cli import app
from fedpriv.errors import ConfigError
from helpers import tiny_config_dict, write_toml


def _config(**changes: Any) -> AuditConfig:
    data = tiny_config_dict()
    data.update(changes)
    return from_mapping(AuditConfig, data)


# ----------------------------------------------------------------- parsing the grid


def test_values_take_the_type_of_their_field() -> None:
    assert parse_axis("federation.lr=1e-3,3e-3").values == (0.001, 0.003)
    assert parse_axis("model.lora.rank=4,8").values == (4, 8)
    assert parse_axis("seed=0,1").values == (0, 1)
    assert parse_axis("model.lora.ffa=true,false").values == (True, False)
    assert parse_axis("federation.clients_per_round=none,2").values == (None, 2)
    assert parse_axis("runs.dp=none,sample").values == ("none", "sample")  # a str, not None
    assert parse_axis("runs.epsilon=1,3,8").values == (1.0, 3.0, 8.0)
    assert parse_axis("runs.protocol=plain,secagg+").values == ("plain", "secagg+")
    assert parse_axis("runs.protocol_params.threshold=3,none").values == (3, None)


@pytest.mark.parametrize(("option", "message"), [
    ("federation.lrr=1", "unknown grid key 'federation.lrr'; valid keys under federation: "),
    ("fedration.lr=1", "valid keys: name, seed"),
    ("runs.epsilonn=1", "valid keys under runs: runs.protocol"),
    ("runs=1", "valid keys under runs"),
    ("model.lora=4", "is a table; sweep one of its keys: model.lora.rank"),
    ("model.lora.target_modules=q_proj", "is a list and cannot be swept"),
    ("runs.name=a,b", "runs.name' cannot be swept"),
    ("seed.x=1", "seed is a single setting"),
    ("federation..lr=1", "not a dotted config path"),
    ("federation.lr", "must look like KEY=v1,v2"),
])
def test_bad_keys_name_the_valid_ones(option: str, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_axis(option)
    assert message in str(err.value)


def test_bad_key_lists_the_right_level() -> None:
    with pytest.raises(ConfigError) as err:
        parse_axis("federation.lrr=1")
    assert "federation.lr" in str(err.value) and "model.lora.rank" not in str(err.value)


@pytest.mark.parametrize(("option", "message"), [
    ("federation.lr=1e-3,fast", "grid key 'federation.lr' expects a number, got 'fast'"),
    ("model.lora.rank=4,4.5", "expects an integer, got '4.5'"),
    ("federation.clients_per_round=some", "expects an integer or none"),
    ("model.lora.ffa=maybe", "expects true or false"),
    ("federation.lr=inf", "expects a finite number"),
    ("seed=0,,1", "has an empty value"),
    ("seed=0,1,0", "repeats the value(s) 0"),
    ("federation.lr=1e-3,0.001", "repeats the value(s) 0.001"),
])
def test_bad_values_name_the_expected_type(option: str, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_axis(option)
    assert message in str(err.value)


def test_grid_needs_axes_and_each_key_once() -> None:
    with pytest.raises(ConfigError, match="at least one --grid"):
        parse_grid([])
    with pytest.raises(ConfigError, match="given twice"):
        parse_grid(["seed=0", "seed=1"])


# ------------------------------------------------------------------------ the cells


def test_cartesian_product_size_labels_and_distinct_ids() -> None:
    axes = parse_grid(["federation.lr=1e-3,3e-3,1e-2", "seed=0,1", "model.lora.rank=2,4"])
    cells = plan_cells(_config(), axes)
    assert len(cells) == 3 * 2 * 2
    assert len({c.id for c in cells}) == len({c.label for c in cells}) == 12
    first = cells[0]
    assert first.label == "federation.lr=0.001,model.lora.rank=2,seed=0"
    assert first.config.federation.lr == 0.001 and first.config.model.lora.rank == 2
    assert {(c.config.seed, c.config.model.lora.rank) for c in cells} == {
        (s, r) for s in (0, 1) for r in (2, 4)}


def test_ids_are_stable_across_order_and_spelling() -> None:
    a = plan_cells(_config(), parse_grid(["seed=0,1", "federation.lr=1e-3"]))
    b = plan_cells(_config(), parse_grid(["federation.lr=0.001", "seed=1,0"]))
    assert {c.id for c in a} == {c.id for c in b}
    assert {c.label for c in a} == {c.label for c in b}
    assert cell_id({"seed": 0}) == "072cc391d59d"  # pinned: a re-run must find old cells
    assert cell_id({"runs.epsilon": 3.0}) == cell_id({"runs.epsilon": 3.0})


def test_runs_keys_apply_to_every_run() -> None:
    base = _config(runs=[{"name": "a", "protocol": "plain"},
                         {"name": "b", "protocol": "plain", "dp": "sample", "epsilon": 8.0}])
    cells = plan_cells(base, parse_grid(["runs.protocol=secagg+", "runs.epsilon=1,3"]))
    assert [c.label for c in cells] == ["runs.epsilon=1,runs.protocol=secagg+",
                                        "runs.epsilon=3,runs.protocol=secagg+"]
    for cell, eps in zip(cells, (1.0, 3.0), strict=True):
        a, b = cell.config.runs
        assert a.protocol == b.protocol == "secagg+"
        assert (a.dp, a.epsilon) == ("none", None)  # ε sets the DP runs only, like --epsilon
        assert (b.dp, b.epsilon) == ("sample", eps)
    cells = plan_cells(base, parse_grid(["runs.dp=none,user", "runs.epsilon=2"]))
    assert [[(r.dp, r.epsilon) for r in c.config.runs] for c in cells] == [
        [("none", None), ("none", None)], [("user", 2.0), ("user", 2.0)]]


def test_runs_epsilon_without_a_dp_run_is_rejected() -> None:
    with pytest.raises(ConfigError, match=r"runs\.epsilon needs a DP run"):
        plan_cells(_config(), parse_grid(["runs.epsilon=1,3"]))


def test_every_cell_is_validated_before_anything_runs(tmp_path: Path) -> None:
    out = tmp_path / "out"
    with pytest.raises(ConfigError) as err:
        prepare_sweep(_config(), parse_grid(["seed=0,1", "federation.clients=3,0"]), out)
    assert "grid cell federation.clients=0,seed=0: federation.clients must be >= 1" in str(
        err.value)
    with pytest.raises(ConfigError) as err:
        prepare_sweep(_config(), parse_grid(["runs.dp=none,user"]), out, preflight=False)
    assert "grid cell runs.dp=user: run 'plain': dp 'user' needs" in str(err.value)
    with pytest.raises(ConfigError) as err:  # found by the runner's preflight of each cell
        prepare_sweep(_config(), parse_grid(["runs.protocol=plain,telepathy"]), out)
    assert "grid cell runs.protocol=telepathy: " in str(err.value)
    assert "unknown protocol 'telepathy'" in str(err.value)
    assert not out.exists()


# ----------------------------------------------------------------------- the ledger


def test_reader_ignores_a_torn_last_line(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    ledger = tmp_path / "sweep.jsonl"
    append_ledger(ledger, {"id": "a", "status": "ok"})
    append_ledger(ledger, {"id": "b", "status": "failed"})
    with ledger.open("ab") as f:
        f.write(b'{"id": "c", "stat')  # a write cut short
    with caplog.at_level(logging.WARNING):
        assert [r["id"] for r in read_ledger(ledger)] == ["a", "b"]
    assert "torn last line" in caplog.text
    assert drop_torn_tail(ledger) == len(b'{"id": "c", "stat')
    append_ledger(ledger, {"id": "c", "status": "ok"})  # starts its own line
    assert [r["id"] for r in read_ledger(ledger)] == ["a", "b", "c"]
    assert read_ledger(tmp_path / "none.jsonl") == []


def test_reader_skips_lines_that_are_not_records(tmp_path: Path) -> None:
    ledger = tmp_path / "sweep.jsonl"
    ledger.write_bytes(b'{"id": "a"}\n\nnot json\n[1, 2]\n{"no_id": 1}\n{"id": "b"}\n')
    assert [r["id"] for r in read_ledger(ledger)] == ["a", "b"]


def test_a_record_is_one_write(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    real_write = os.write

    def counting_write(fd: int, data: bytes) -> int:
        calls.append(len(data))
        return real_write(fd, data)

    monkeypatch.setattr(ledger.os, "write", counting_write)
    append_ledger(tmp_path / "sweep.jsonl", {"id": "a", "runs": [{"x": 1.5}] * 100})
    monkeypatch.undo()
    data = (tmp_path / "sweep.jsonl").read_bytes()
    assert calls == [len(data)] and data.count(b"\n") == 1 and data.endswith(b"\n")


def test_finished_cells_are_skipped_and_other_configs_refused(tmp_path: Path) -> None:
    config = _config()
    axes = parse_grid(["seed=0,1,2"])
    cells = plan_cells(config, axes)
    ledger = tmp_path / "sweep.jsonl"
    base_hash = sweep.config_hash(config)
    append_ledger(ledger, {"id": cells[0].id, "status": "ok", "config_hash": base_hash})
    append_ledger(ledger, {"id": cells[1].id, "status": "failed", "config_hash": base_hash})
    plan = prepare_sweep(config, axes, tmp_path, preflight=False)
    assert [c.id for c in plan.pending] == [cells[2].id]
    plan = prepare_sweep(config, axes, tmp_path, preflight=False, retry_failed=True)
    assert [c.id for c in plan.pending] == [cells[1].id, cells[2].id]
    other = _config(seed=5)
    with pytest.raises(ConfigError, match="holds cells of another base config"):
        prepare_sweep(other, axes, tmp_path, preflight=False)


def _fake_report(config: AuditConfig, status: str = "ok") -> dict[str, Any]:
    return {"runs": [{"name": r.name, "protocol": r.protocol, "status": status,
                      "error": None if status == "ok" else "RuntimeError: boom",
                      "dp": {"mode": r.dp}, "utility": {}, "leakage": {}, "cost": {},
                      "privacy": {"epsilon": None}} for r in config.runs]}


def test_failed_cells_are_recorded_and_the_sweep_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    from fedpriv.audits import runner

    def fake_run_audit(config: AuditConfig, out_dir: Path, **kwargs: Any) -> dict[str, Any]:
        assert kwargs["overwrite"] is True  # leftovers of an interrupted cell never block it
        if config.seed == 1:
            raise ConfigError("no such thing")
        return _fake_report(config, "failed" if config.seed == 2 else "ok")

    monkeypatch.setattr(runner, "run_audit", fake_run_audit)
    monkeypatch.setattr(sweep, "write_frontier", lambda *args, **kwargs: None)
    plan = prepare_sweep(_config(), parse_grid(["seed=0,1,2"]), tmp_path, preflight=False)
    summary = run_sweep(plan)
    records = read_ledger(tmp_path / "sweep.jsonl")
    assert [(r["label"], r["status"]) for r in records] == [
        ("seed=0", "ok"), ("seed=1", "failed"), ("seed=2", "failed")]
    assert records[1]["error"] == "ConfigError: no such thing" and records[1]["runs"] == []
    assert records[2]["error"] == "run(s) failed: plain" and len(records[2]["runs"]) == 1
    assert records[0]["overrides"] == {"seed": 0}
    assert records[0]["out"] == f"cells/{records[0]['id']}"
    written = json.loads((tmp_path / "sweep.json").read_text())
    assert written == summary and written["grid"] == {"seed": [0, 1, 2]}
    assert [c["id"] for c in written["cells"]] == [r["id"] for r in records]


def test_frontier_is_optional(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                              caplog: pytest.LogCaptureFixture) -> None:
    records = [{"label": "seed=0", "runs": [{"name": "plain"}]}]
    assert sweep.frontier_runs(records)[0]["name"] == "seed=0/plain"
    records = [{"label": "runs.dp=sample,seed=0", "overrides": {"runs.dp": "sample", "seed": 0},
                "runs": [{"name": "plain"}]}]
    assert sweep.frontier_runs(records, ["seed"])[0]["name"] == "seed=0/plain"
    assert sweep.frontier_runs(records, [])[0]["name"] == "runs.dp=sample,seed=0/plain"
    monkeypatch.setitem(sys.modules, "fedpriv.audits.plots", None)  # not written yet
    with caplog.at_level(logging.WARNING):
        assert write_frontier(records, tmp_path / "f.png", title="t") is None
    assert "no frontier plot" in caplog.text
    assert write_frontier([{"label": "x", "runs": []}], tmp_path / "f.png", title="t") is None


# -------------------------------------------------------------------------- the CLI


def test_cli_bad_grid_exits_2_with_one_line(tmp_path: Path) -> None:
    cfg = write_toml(tmp_path / "c.toml", tiny_config_dict())
    runner = CliRunner()
    for args, message in [
        (["--grid", "federation.lrr=1"], "unknown grid key 'federation.lrr'"),
        (["--grid", "seed=a"], "grid key 'seed' expects an integer, got 'a'"),
        ([], "a sweep needs at least one --grid"),
        (["--grid", "seed=0", "--engine", "grpc"], "engine must be one of inprocess, flower"),
    ]:
        r = runner.invoke(app, ["sweep", str(cfg), "--out", str(tmp_path / "o"), *args])
        assert r.exit_code == 2, r.output
        assert r.stderr.strip().startswith("error:") and message in r.stderr
        assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.output
    assert not (tmp_path / "o").exists()


def test_sweep_runs_each_cell_on_the_chosen_engine(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    from fedpriv.audits import runner as audit_runner

    engines: list[str] = []

    def fake_engine(engine: str) -> Any:
        engines.append(engine)

        def run(config: AuditConfig, out: Path, **kwargs: Any) -> dict[str, Any]:
            raise ConfigError(f"stopped by the test on {engine}")
        return run

    monkeypatch.setattr(audit_runner, "audit_engine", fake_engine)
    cfg = from_mapping(AuditConfig, tiny_config_dict())
    plan = prepare_sweep(cfg, parse_grid(["seed=0,1"]), tmp_path / "o")
    summary = run_sweep(plan, engine="flower")
    assert engines == ["flower", "flower"]
    assert all("stopped by the test on flower" in c["error"] for c in summary["cells"])


def _tiny_sweep_config(tmp_path: Path) -> Path:
    data = tiny_config_dict(clients=2, rounds=1, local_steps=1, batch_size=4)
    data["model"]["max_length"] = 32  # type: ignore[index]
    data["data"] = {"records_per_client": 8, "holdout_fraction": 0.25}
    return write_toml(tmp_path / "tiny.toml", data)


def _ledger_lines(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines(keepends=True) if path.exists() else []


@pytest.mark.slow
def test_sigint_then_rerun_finishes_the_grid_without_redoing_cells(tmp_path: Path) -> None:
    cfg = _tiny_sweep_config(tmp_path)
    out = tmp_path / "sweep"
    ledger = out / "sweep.jsonl"
    command = [sys.executable, "-m", "fedpriv.cli", "sweep", str(cfg), "--grid", "seed=0,1,2",
               "--out", str(out)]
    # one thread each: two torch thread pools on 2 shared cores slow each other down ~30x
    env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")
    # a child inherits an ignored SIGINT (e.g. pytest started in the background), and
    # Python then raises no KeyboardInterrupt; with a handler here the child gets SIG_DFL
    previous = signal.getsignal(signal.SIGINT)
    if previous == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    with (tmp_path / "first.err").open("wb") as err:
        proc = subprocess.Popen([*command, "--quiet"], env=env, stdout=subprocess.DEVNULL,
                                stderr=err)
    signal.signal(signal.SIGINT, previous)
    try:
        deadline = time.monotonic() + 150
        while time.monotonic() < deadline and proc.poll() is None and not _ledger_lines(ledger):
            time.sleep(0.05)
        assert proc.poll() is None, "the sweep ended before a cell was recorded: " + (
            tmp_path / "first.err").read_text()
        assert _ledger_lines(ledger), "no cell finished in time"
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=60) == 130
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
    first_err = (tmp_path / "first.err").read_text()
    assert "re-run the same command" in first_err and "Traceback" not in first_err
    before = _ledger_lines(ledger)
    assert 1 <= len(before) < 3, "interrupted too late to test re-running"
    assert all(line.endswith(b"\n") and json.loads(line)["status"] == "ok" for line in before)
    finished = [json.loads(line)["id"] for line in before]
    reports = {i: (out / "cells" / i / "report.json").stat().st_mtime_ns for i in finished}

    second = subprocess.run([*command, "--json"], env=env, capture_output=True, text=True,
                            timeout=240)
    assert second.returncode == 0, second.stderr
    n = len(before)
    assert f"skipping {n} finished cell{'' if n == 1 else 's'}" in second.stderr
    after = _ledger_lines(ledger)
    assert len(after) == 3 and after[:n] == before  # finished lines untouched, appear once
    records = [json.loads(line) for line in after]
    ids = [r["id"] for r in records]
    assert len(set(ids)) == 3 and sorted(r["label"] for r in records) == [
        "seed=0", "seed=1", "seed=2"]
    assert all(r["status"] == "ok" and r["runs"][0]["status"] == "ok" for r in records)
    # the cells that finished before the interrupt were not run again
    assert {i: (out / "cells" / i / "report.json").stat().st_mtime_ns for i in finished} == reports
    summary = json.loads(second.stdout)
    assert summary == json.loads((out / "sweep.json").read_text())
    assert [c["label"] for c in summary["cells"]] == ["seed=0", "seed=1", "seed=2"]
    if summary["frontier"] is not None:
        assert (out / summary["frontier"]).stat().st_size > 0
