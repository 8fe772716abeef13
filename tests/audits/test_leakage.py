"""Every finished run's report carries the attacks' leakage, naming what each observed."""

from pathlib import Path

from fedpriv.audits.config import AuditConfig, from_mapping
from fedpriv.audits.report import summary_rows
from fedpriv.audits.runner import run_audit
from helpers import tiny_config_dict


def test_report_has_mia_and_canary_exposure(tmp_path: Path) -> None:
    d = tiny_config_dict(rounds=2, clients=3)
    d["data"]["canaries"] = {"format": "pin", "per_client": 1, "clients": [0], "repetitions": 3}
    report = run_audit(from_mapping(AuditConfig, d), tmp_path)
    (run,) = report["runs"]
    mia, canary = run["leakage"]["mia"], run["leakage"]["canary"]
    assert 0.0 <= mia["auc"] <= 1.0 and mia["observed"].startswith("final global model")
    names = {a["attack"] for a in mia["attacks"]}
    assert {"loss", "zlib", "reference[base]"} <= names
    assert mia["auc"] == max(a["auc"] for a in mia["attacks"])
    assert mia["n_members"] == mia["n_nonmembers"] > 0
    assert canary["n_canaries"] == 1 and canary["observed"] == "final global model"
    assert 0 <= canary["exposure_mean"] <= canary["max_possible"]
    row = summary_rows(report)[0]
    assert row["mia_auc"] != "—" and row["exposure"] != "—"
    assert "MIA AUC" in (tmp_path / "report.md").read_text()
