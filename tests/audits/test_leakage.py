"""Every finished run's report carries the attacks' leakage, naming what each observed."""

from pathlib import Path

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

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
    assert mia["auc_ci"][0] <= mia["auc"] <= mia["auc_ci"][1]
    assert mia["tpr_at_0_1pct_fpr"] is None and mia["tpr_at_0_1pct_fpr_ci"] is None  # < 1000
    assert canary["n_canaries"] == 1 and canary["observed"] == "final global model"
    assert 0 <= canary["exposure_mean"] <= canary["max_possible"]
    row = summary_rows(report)[0]
    assert row["mia_auc"] != "—" and row["exposure"] != "—"
    assert "MIA AUC" in (tmp_path / "report.md").read_text()


def test_inversion_and_update_mia_follow_the_protocol(tmp_path: Path) -> None:
    d = tiny_config_dict(rounds=1, clients=3)
    # Rank 16 on q/k/v/o: the first layer's stacked A updates have 48 rows, more than the
    # ~20 distinct tokens of a 24-token record (DAGER's condition).
    d["model"]["lora"] = {"rank": 16, "alpha": 32.0,  # type: ignore[index]
                          "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj"]}
    d["runs"] = [{"name": "plain", "protocol": "plain"}, {"name": "secagg", "protocol": "secagg"}]
    report = run_audit(from_mapping(AuditConfig, d), tmp_path)
    plain, secagg = report["runs"]
    inv_plain, inv_secagg = plain["leakage"]["inversion"], secagg["leakage"]["inversion"]
    assert inv_plain["setting"]["kind"] == "FedSGD probe round"
    # Plain: each client's single-record step is in the clear and DAGER reads it back.
    assert inv_plain["observed"].startswith("client ")
    assert len(inv_plain["observations"]) == 2
    assert inv_plain["rouge1"] >= 0.9 and inv_plain["token_f1"] >= 0.9
    example = inv_plain["observations"][0]["examples"][0]
    assert not any(ch.isdigit() for ch in example["original"] + example["recovered"])  # redacted
    # Secure aggregation: only the sum of 3 clients, whose tokens overlap the hidden size less.
    assert inv_secagg["observed"].startswith("aggregate of 3 clients")
    assert inv_secagg["rouge1"] < inv_plain["rouge1"]
    # The update-level MIA needs individual updates: plain only.
    assert plain["leakage"]["mia_update"]["observed"].startswith("client ")
    assert "mia_update" not in secagg["leakage"]


@settings(max_examples=40, deadline=None)
@given(sizes=st.lists(st.tuples(st.integers(0, 7), st.integers(0, 7)), min_size=1, max_size=6),
       limit=st.integers(1, 20), seed=st.integers(0, 2**16))
def test_paired_members_draws_both_classes_from_the_same_clients(
    sizes: list[tuple[int, int]], limit: int, seed: int,
) -> None:
    """Members and non-members come client by client in equal numbers (no client-mix AUC)."""
    from types import SimpleNamespace

    from fedpriv.audits.leakage import paired_members

    def records(client: int, kind: str, n: int) -> list[SimpleNamespace]:
        return [SimpleNamespace(text=f"{client}-{kind}-{i}") for i in range(n)]

    clients = [SimpleNamespace(member_records=records(c, "m", m),
                               nonmember_records=records(c, "n", n))
               for c, (m, n) in enumerate(sizes)]
    mem, non = paired_members(SimpleNamespace(clients=clients), np.random.default_rng(seed),
                              limit)  # type: ignore[arg-type]
    assert len(mem) == len(non) == min(limit, sum(min(m, n) for m, n in sizes))
    assert len(set(mem)) == len(mem) and len(set(non)) == len(non)
    assert all("-m-" in t for t in mem) and all("-n-" in t for t in non)
    for c in range(len(sizes)):  # the same clients, in the same numbers
        assert sum(t.startswith(f"{c}-") for t in mem) == sum(t.startswith(f"{c}-") for t in non)
