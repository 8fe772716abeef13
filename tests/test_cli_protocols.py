"""`fedpriv protocols`: threat models and the measured cost of each protocol per round."""

from __future__ import annotations

import importlib.util
import json
from importlib import resources
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from typer.testing import CliRunner

from fedpriv.cli import app
from fedpriv.protocols import available
from fedpriv.protocols import costs as costs_module
from fedpriv.protocols.costs import COSTS_FILE, MeasuredCost, measured_cost, measured_costs

runner = CliRunner()
EXPORT_SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "export_costs.py"


def _export_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("export_costs", EXPORT_SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_protocol_has_a_packaged_measured_cost() -> None:
    assert resources.files("fedpriv.protocols").joinpath(COSTS_FILE).is_file()
    costs = measured_costs()
    assert set(costs) == set(available())
    for name, cost in costs.items():
        assert cost.protocol == name
        assert (cost.clients, cost.vector_size) == (10, 1_000_000)
        assert cost.client_s > 0 and cost.server_s > 0
        assert cost.bytes_up_per_client >= 4 * cost.vector_size  # at least a float32 upload
        assert cost.source.startswith("benchmarks/results/") and len(cost.date) == 10
        headline = [p for p in cost.points
                    if (p.clients, p.vector_size) == (cost.clients, cost.vector_size)]
        assert len(headline) == 1 and headline[0].client_s == cost.client_s
        assert MeasuredCost.from_dict(cost.to_dict()) == cost
    assert costs["ckks"].bytes_up_per_client > 10 * costs["secagg+"].bytes_up_per_client
    assert measured_cost("telepathy") is None


def test_packaged_costs_match_the_benchmark_results() -> None:
    """The shipped file is what benchmarks/export_costs.py makes of results/*.json now."""
    def without_dates(text: str) -> dict[str, Any]:
        data = json.loads(text)
        for entry in data["protocols"].values():
            entry.pop("date")  # from git or the file's mtime: not stable across checkouts
        return data

    packaged = resources.files("fedpriv.protocols").joinpath(COSTS_FILE).read_text("utf-8")
    assert without_dates(_export_module().export()) == without_dates(packaged), (
        "stale measured_costs.json: run python benchmarks/export_costs.py")


def test_protocols_json_has_measured_cost_or_null(monkeypatch: pytest.MonkeyPatch) -> None:
    r = runner.invoke(app, ["protocols", "--json"])
    assert r.exit_code == 0, r.output
    entries = {e["name"]: e for e in json.loads(r.stdout)}
    assert set(entries) == set(available())
    plus = entries["secagg+"]
    assert plus["threat_model"] and plus["dropout_tolerance"]
    cost = plus["measured_cost"]
    assert cost["source"] == "benchmarks/results/secagg.json"
    assert {"client_s", "server_s", "bytes_up_per_client", "clients", "vector_size", "date",
            "conditions", "points"} <= set(cost)
    assert entries["ckks"]["measured_cost"]["source"] == "benchmarks/results/ckks.json"

    known = measured_costs()
    monkeypatch.setattr(costs_module, "_load", lambda: {k: v for k, v in known.items()
                                                        if k != "ckks"})
    r = runner.invoke(app, ["protocols", "--json"])
    entries = {e["name"]: e for e in json.loads(r.stdout)}
    assert entries["ckks"]["measured_cost"] is None
    assert entries["plain"]["measured_cost"] is not None


def test_protocols_table_shows_costs(monkeypatch: pytest.MonkeyPatch) -> None:
    r = runner.invoke(app, ["protocols"])
    assert r.exit_code == 0, r.output
    for text in ("threat model", "dropouts", "client s", "server s", "up / client",
                 "measured at", "secagg.json", "ckks.json", "n=10,", "L=1,000,000", "(10.98×)"):
        assert text in r.stdout, text
    monkeypatch.setattr(costs_module, "_load", dict)  # nothing measured
    r = runner.invoke(app, ["protocols"])
    assert r.exit_code == 0 and "secagg.json" not in r.stdout


def test_missing_costs_file_warns_and_gives_none(monkeypatch: pytest.MonkeyPatch,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(costs_module, "COSTS_FILE", "no_such_file.json")
    costs_module._load.cache_clear()
    try:
        assert measured_cost("plain") is None
        assert "export_costs.py" in caplog.text
    finally:
        monkeypatch.undo()
        costs_module._load.cache_clear()
    assert measured_cost("plain") is not None
