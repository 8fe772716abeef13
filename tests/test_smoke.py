"""CI smoke tests: the `quick` preset through the CLI, and the benchmark's --quick mode."""

import json
import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from fedpriv.cli import app

ROOT = Path(__file__).resolve().parents[1]


def test_quick_preset_end_to_end(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["audit", "--preset", "quick", "--out", str(tmp_path),
                                      "--device", "cpu"])
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "report.json").read_text())
    (run,) = report["runs"]
    assert run["status"] == "ok" and run["cost"]["rounds"] == 3
    assert run["utility"]["perplexity"] < run["utility"]["base_perplexity"]
    assert "plain" in result.stdout  # the summary table


def test_train_round_benchmark_quick(tmp_path: Path) -> None:
    out = tmp_path / "train_round.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "train_round.py"), "--quick", "--out", str(out)],
        capture_output=True, text=True, timeout=300, check=False,
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(out.read_text())
    assert result["fed_over_plain_ratio"] > 0
    assert len(result["fed_round_s"]) == len(result["plain_s"]) == result["repeats"]
    assert "fed_over_plain_ratio" in proc.stdout
