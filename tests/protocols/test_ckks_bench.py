"""``benchmarks/ckks.py --quick`` runs in seconds and writes the documented JSON rows."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "ckks.py"
ROW_KEYS = {
    "kind", "protocol", "clients", "length", "round_s", "encrypt_s", "aggregate_s", "decrypt_s",
    "bytes_up_per_client", "expansion_vs_float32", "max_rel_error", "round_over_plain_round",
    "round_over_secagg_plus", "bytes_over_secagg_plus",
}


def test_quick_run_writes_rows(tmp_path: Path) -> None:
    out = tmp_path / "ckks.quick.json"
    done = subprocess.run([sys.executable, str(SCRIPT), "--quick", "--out", str(out)],
                          check=True, capture_output=True, text=True, timeout=120)
    result = json.loads(out.read_text())
    assert result["benchmark"] == "ckks" and result["quick"] is True
    assert [(r["kind"], r["protocol"]) for r in result["rows"]] == [
        ("reference", "tenseal_usual"), ("aggregation", "ckks"), ("aggregation", "secagg+"),
        ("aggregation", "plain")]
    rows = {r["protocol"]: r for r in result["rows"]}
    for name in ("ckks", "secagg+", "plain"):
        assert set(rows[name]) >= ROW_KEYS
        assert (rows[name]["clients"], rows[name]["length"]) == (3, 3000)
        assert rows[name]["round_s"] > 0
    ckks = rows["ckks"]
    assert ckks["encrypt_s"] > 0 and ckks["aggregate_s"] > 0 and ckks["decrypt_s"] > 0
    assert ckks["max_rel_error"] < 1e-5
    assert ckks["max_abs_error"] <= 2 * ckks["release_bound"] / 3  # mean of 3 unit weights
    # 3001 values fill 2 ciphertexts of 2048 slots: about 11x float32 per filled slot.
    assert 9 < ckks["expansion_vs_float32"] * 3000 / 4096 < 12
    assert ckks["parameters"]["coeff_mod_bit_sizes"] == [56, 24, 29]
    assert rows["tenseal_usual"]["expansion_vs_float32"] > ckks["expansion_vs_float32"]
    assert abs(rows["plain"]["expansion_vs_float32"] - 1.0) < 0.01
    memory = result["client_memory"]
    assert memory is None or memory["default_malloc"]["ciphertexts"] == 2
    assert result["targets"] == {}  # stated at n = 10, L = 10^6, which --quick does not run
    assert "| ckks | 3 |" in done.stdout
