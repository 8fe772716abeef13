"""``benchmarks/dp.py --quick`` runs and writes the documented keys; its utility grid is valid."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "dp.py"


def test_quick_step_cost_writes_the_ratios(tmp_path: Path) -> None:
    out = tmp_path / "dp.json"
    subprocess.run([sys.executable, str(SCRIPT), "--quick", "--skip-utility", "--out", str(out)],
                   check=True, capture_output=True, text=True, timeout=600)
    result = json.loads(out.read_text())
    for key in ("time_ratio", "mem_ratio", "ghost_time_ratio", "plain_step_s", "dp_step_s"):
        assert result[key] > 0, key
    assert result["utility"] == []


def test_utility_grid_covers_every_mode_and_epsilon() -> None:
    spec = importlib.util.spec_from_file_location("dp_bench", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    cfg = module.utility_config(quick=False)
    cells = {(r.dp, bool(r.ffa), r.epsilon) for r in cfg.runs}
    for eps in (1.0, 3.0, 8.0):
        for mode in ("sample", "user"):
            assert (mode, False, eps) in cells and (mode, True, eps) in cells
        assert ("distributed", False, eps) in cells
    assert ("none", False, None) in cells and ("none", True, None) in cells
