"""``benchmarks/secagg.py --quick`` runs and writes the documented JSON (with or without flwr)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "secagg.py"
ROW_KEYS = {
    "protocol", "clients", "length", "client_s", "server_s", "bytes_up_per_client",
    "float32_bytes", "upload_over_float32", "prg_bound_s", "plain_sum_s", "flower_client_s",
    "flower_server_s", "client_over_prg_bound", "server_over_plain_sum",
    "consistency_client_s", "consistency_server_s", "consistency_bytes_up_per_client",
}


def run_quick(tmp_path: Path, env: dict[str, str], *flags: str) -> dict:
    out = tmp_path / "secagg.quick.json"
    subprocess.run([sys.executable, str(SCRIPT), "--quick", "--out", str(out), *flags],
                   check=True, env=env, capture_output=True, text=True, timeout=300)
    return json.loads(out.read_text())


@pytest.mark.parametrize("flower", ["as-installed", "blocked"])
def test_quick_run_writes_rows(tmp_path: Path, flower: str) -> None:
    env = dict(os.environ)
    if flower == "blocked":  # a shadow package whose import fails: as if flwr were absent
        shadow = tmp_path / "shadow" / "flwr"
        shadow.mkdir(parents=True)
        (shadow / "__init__.py").write_text("raise ImportError('flwr blocked for this test')\n")
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(shadow.parent),
                                                          env.get("PYTHONPATH")]))
    result = run_quick(tmp_path, env)
    assert result["benchmark"] == "secagg" and result["quick"] is True
    protocols = [row["protocol"] for row in result["rows"]]
    assert protocols == ["secagg+", "secagg"]
    for row in result["rows"]:
        assert set(row) >= ROW_KEYS
        assert (row["clients"], row["length"]) == (5, 1000)
        assert row["fedpriv_measured"] is True
        assert row["client_s"] > 0 and row["server_s"] > 0 and row["prg_bound_s"] > 0
        assert row["bytes_up_per_client"] > row["float32_bytes"] == 4000
        assert row["max_abs_err"] < 1e-4
        # The ConsistencyCheck round, timed apart: an unsigned acknowledgement upload.
        assert 0 < row["consistency_client_s"] < row["client_s"]
        assert 0 < row["consistency_server_s"] < row["server_s"]
        assert row["consistency_bytes_up_per_client"] == 16 + 8
    plus = result["rows"][0]
    if flower == "blocked" or result["flwr_version"] is None:
        assert result["flwr_version"] is None
        assert plus["flower_client_s"] is None and plus["flower_server_s"] is None
    else:
        assert plus["flower_client_s"] > 0 and plus["flower_server_s"] > 0
        assert plus["flower_max_abs_err"] < 1e-4
    # The targets are stated at n=100, L=10^6, which --quick does not run.
    assert result["targets"] == {}


def test_quick_run_with_signed_rows(tmp_path: Path) -> None:
    """``--signed`` adds the active-server mode: signed consistency checks, t above 2/3."""
    result = run_quick(tmp_path, dict(os.environ), "--signed", "--no-flower")
    rows = {row["protocol"]: row for row in result["rows"]}
    assert list(rows) == ["secagg+", "secagg", "secagg+signed"]
    signed = rows["secagg+signed"]
    assert (signed["neighbours"], signed["threshold"]) == (4, 4)  # t > 2/3 of 5
    assert rows["secagg+"]["threshold"] == 3  # t > 1/2 of 5
    assert signed["consistency_bytes_up_per_client"] == 16 + 8 + 64  # an Ed25519 signature
    assert signed["max_abs_err"] < 1e-4
