"""Figures and report.md of an audit, and `fedpriv report`, on hand-built report.json data."""

from __future__ import annotations

import copy
import json
import logging
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import matplotlib.image
import numpy as np
import pytest
from typer.testing import CliRunner

from fedpriv.attacks.metrics import roc_points
from fedpriv.audits import plots
from fedpriv.audits.plots import (
    inversion_rows,
    plot_frontier,
    plot_inversion,
    plot_roc,
    write_plots,
)
from fedpriv.audits.plots.common import _label_box, _overlap
from fedpriv.audits.plots.roc import _roc_arrays
from fedpriv.audits.report import COLUMNS, render_markdown, summary_rows, validate_report
from fedpriv.cli import _summary_table, app

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
SECRET = "Mail ada.lovelace@example.org, account 4412 9087"


def _roc(seed: int, shift: float) -> dict[str, list[float]]:
    rng = np.random.default_rng(seed)
    scores = np.r_[rng.normal(shift, 1.0, 200), rng.normal(0.0, 1.0, 200)]
    labels = np.r_[np.ones(200, bool), np.zeros(200, bool)]
    points = roc_points(scores, labels)
    return {"fpr": [f for f, _ in points], "tpr": [t for _, t in points]}


def _run(name: str, *, epsilon: float | None, ppl: float | None, auc: float,
         rouge1: float | None, emp_eps: float | None = None, roc: Any = None,
         status: str = "ok", examples: list[dict[str, str]] | None = None) -> dict[str, Any]:
    dp = "none" if epsilon is None else "sample"
    leakage: dict[str, Any] = {"mia": {"attack": "loss", "observed": "final global model",
                                       "auc": auc, "tpr_at_1pct_fpr": 0.02}}
    if roc is not None:
        leakage["mia"]["roc"] = roc
    if rouge1 is not None:
        observed = "client 0's update (plain: the server sees each update)"
        leakage["inversion"] = {
            "attack": "dager", "observed": observed, "rouge1": rouge1, "rouge2": rouge1 / 2,
            "token_f1": rouge1, "exact": 0.0,
            "observations": [{"observed": observed, "rouge1": rouge1,
                              "examples": examples or []}],
        }
    if emp_eps is not None:
        leakage["empirical_epsilon"] = emp_eps
    return {
        "name": name, "protocol": "plain", "status": status,
        "error": None if status == "ok" else "RuntimeError: out of memory",
        "dp": {"mode": dp},
        "privacy": ({"epsilon": None, "delta": None, "accountant": "none"} if epsilon is None
                    else {"epsilon": epsilon, "delta": 1e-5, "accountant": "rdp",
                          "unit": "example"}),
        "utility": {} if ppl is None else {"perplexity": ppl, "base_perplexity": 93.7,
                                           "perplexity_reduction": 1 - ppl / 93.7},
        "leakage": leakage if status == "ok" else {},
        "cost": {"wall_s": 12.5, "bytes_up_per_client": 40960.0, "rounds": 3},
    }


def make_report(runs: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """Return a schema-valid report.json: a no-DP run, two DP runs and a failed one."""
    if runs is None:
        runs = [
            _run("plain", epsilon=None, ppl=56.2, auc=0.71, rouge1=0.92, roc=_roc(0, 1.2),
                 examples=[{"original": SECRET, "recovered": "Mail ada.lovelace@example.org, "
                                                          "account 4412"},
                           {"original": "x " * 200, "recovered": "x " * 150}]),
            _run("dp-eps8", epsilon=8.0, ppl=61.0, auc=0.58, rouge1=0.31, emp_eps=0.9,
                 roc=[[f, t] for f, t in zip(*_roc(1, 0.4).values(), strict=True)]),
            _run("dp-eps1", epsilon=1.0, ppl=74.3, auc=0.51, rouge1=None, emp_eps=0.1),
            _run("broken", epsilon=2.0, ppl=None, auc=0.5, rouge1=None, status="failed"),
        ]
    report = {
        "schema": 1, "fedpriv_version": "0.1.0", "created": "2025-01-01T00:00:00Z",
        "config": {"name": "unit", "seed": 0, "model": {"name": "builtin:tiny-llama"},
                   "data": {"source": "builtin"},
                   "federation": {"clients": 4, "rounds": 3}, "runs": []},
        "environment": {"device": "cpu", "python": "3.11", "torch": "2"},
        "wall_s": 50.0,
        "runs": runs,
    }
    validate_report(report)
    return report


def assert_png(path: Path) -> None:
    assert path.read_bytes()[:8] == PNG_MAGIC
    image = matplotlib.image.imread(path)
    assert image.shape[0] > 100 and image.shape[1] > 100


def test_write_plots_writes_three_pngs(tmp_path: Path) -> None:
    paths = write_plots(make_report(), tmp_path)
    assert [p.name for p in paths] == ["frontier.png", "roc.png", "inversion.png"]
    for path in paths:
        assert_png(path)


def test_plots_are_deterministic(tmp_path: Path) -> None:
    report = make_report()
    a = plot_frontier(report["runs"], tmp_path / "a.png", title="t")
    b = plot_frontier(report["runs"], tmp_path / "b.png", title="t")
    assert a.read_bytes() == b.read_bytes()


def test_frontier_no_dp_dp_and_failed_runs(tmp_path: Path) -> None:
    assert_png(plot_frontier(make_report()["runs"], tmp_path / "f.png", title="frontier"))


@pytest.mark.parametrize("case", ["only_no_dp", "only_failed", "empty", "no_leakage"])
def test_frontier_degenerate_inputs(case: str, tmp_path: Path) -> None:
    runs = {
        "only_no_dp": [_run("plain", epsilon=None, ppl=50.0, auc=0.6, rouge1=0.2)],
        "only_failed": [_run("x", epsilon=1.0, ppl=None, auc=0.5, rouge1=None, status="failed")],
        "empty": [],
        "no_leakage": [{**_run("plain", epsilon=3.0, ppl=50.0, auc=0.6, rouge1=None),
                        "leakage": {}}],
    }[case]
    assert_png(plot_frontier(runs, tmp_path / "f.png", title=case))


def test_frontier_with_many_runs(tmp_path: Path) -> None:
    runs = [_run(f"cell-{i:02d}", epsilon=None if i % 6 == 0 else 0.5 * 2 ** (i % 6),
                 ppl=50.0 + i, auc=0.5 + 0.01 * (i % 20), rouge1=0.03 * (i % 30),
                 emp_eps=0.1 * (i % 5)) for i in range(36)]
    assert_png(plot_frontier(runs, tmp_path / "f.png", title="sweep"))


def test_roc_with_and_without_points(tmp_path: Path) -> None:
    assert_png(plot_roc(make_report()["runs"], tmp_path / "roc.png", title="roc"))
    bare = [_run("plain", epsilon=None, ppl=50.0, auc=0.6, rouge1=None)]
    assert_png(plot_roc(bare, tmp_path / "none.png", title="roc"))


def test_roc_accepts_both_point_layouts() -> None:
    as_dict = _roc_arrays({"fpr": [0.0, 0.5, 1.0], "tpr": [0.0, 0.8, 1.0]})
    as_pairs = _roc_arrays([[0.0, 0.0], [0.5, 0.8], [1.0, 1.0]])
    assert as_dict == as_pairs == ([0.0, 0.5, 1.0], [0.0, 0.8, 1.0])
    assert _roc_arrays({"fpr": [0.1], "tpr": []}) is None
    assert _roc_arrays("nonsense") is None


def test_inversion_rows_redact_masks_email_and_digits() -> None:
    runs = make_report()["runs"]
    redacted = inversion_rows(runs, redact=True)
    shown = inversion_rows(runs, redact=False)
    assert len(redacted) == len(shown) == 3  # plain: 2 examples, dp-eps8: none recovered
    run_cell, original, recovered = redacted[0]
    assert run_cell.startswith("plain · client 0's update") and "ROUGE-1 0.92" in run_cell
    assert original == "Mail [email], account #### ####"
    assert recovered == "Mail [email], account ####"
    assert "ada.lovelace@example.org" in shown[0][1] and "4412" in shown[0][1]
    assert redacted[2] == (redacted[2][0], "—", "(nothing recovered)")
    assert all(len(text) <= plots.MAX_TEXT_CHARS for row in redacted for text in row[1:])
    assert redacted[1][1].endswith("…")
    assert inversion_rows(runs, redact=True) == redacted  # redacting twice changes nothing


def test_inversion_rows_skip_failed_and_report_errors() -> None:
    run = _run("aborted", epsilon=None, ppl=50.0, auc=0.5, rouge1=None)
    run["leakage"]["inversion"] = {"attack": "dager", "observed": "nothing (round aborted)",
                                   "error": "2 survivors < threshold 3"}
    rows = inversion_rows([run], redact=True)
    assert rows == [("aborted · nothing (round aborted)", "—", "(2 survivors < threshold 3)")]
    failed = _run("x", epsilon=1.0, ppl=None, auc=0.5, rouge1=None, status="failed")
    assert inversion_rows([failed], redact=True) == []


def test_plot_inversion_with_and_without_rows(tmp_path: Path) -> None:
    assert_png(plot_inversion(make_report()["runs"], tmp_path / "i.png", title="inv",
                              redact=True))
    assert_png(plot_inversion([], tmp_path / "empty.png", title="inv", redact=False))


def test_write_plots_survives_one_failing_plot(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def boom(*args: Any, **kwargs: Any) -> Path:
        raise ValueError("bad axis")

    monkeypatch.setattr(plots, "plot_roc", boom)
    with caplog.at_level(logging.WARNING, logger="fedpriv.audits.plots"):
        paths = write_plots(make_report(), tmp_path)
    assert [p.name for p in paths] == ["frontier.png", "inversion.png"]
    assert "roc.png" in caplog.text and "bad axis" in caplog.text


def test_plots_leave_no_open_pyplot_figures(tmp_path: Path) -> None:
    import matplotlib.pyplot as plt

    before = plt.get_fignums()
    write_plots(make_report(), tmp_path)
    assert plt.get_fignums() == before


def test_markdown_has_new_columns_and_plots_not_stale_line() -> None:
    text = render_markdown(make_report())
    assert "not part of this fedpriv version" not in text
    header = next(line for line in text.splitlines() if line.startswith("| run"))
    assert "inv. ROUGE-1" in header and "emp. ε" in header
    plain_row = next(line for line in text.splitlines() if line.startswith("| plain"))
    assert "0.92" in plain_row
    for name in ("frontier.png", "roc.png", "inversion.png"):
        assert f"]({name})" in text
    rows = {r["run"]: r for r in summary_rows(make_report())}
    assert rows["dp-eps8"]["empirical_epsilon"] == "0.90"
    assert rows["plain"]["empirical_epsilon"] == "—"
    assert rows["dp-eps1"]["inversion_rouge1"] == "—"


def test_cli_summary_table_renders_every_column() -> None:
    from rich.console import Console

    console = Console(width=250, record=True)
    console.print(_summary_table(make_report()))
    text = console.export_text()
    for _, title, _ in COLUMNS:
        if title != "status":
            assert title in text


runner = CliRunner()


def test_report_command_rerenders(tmp_path: Path) -> None:
    (tmp_path / "report.json").write_text(json.dumps(make_report()))
    r = runner.invoke(app, ["report", str(tmp_path)])
    assert r.exit_code == 0, r.output
    for name in ("report.md", "frontier.png", "roc.png", "inversion.png"):
        assert str(tmp_path / name) in r.stdout
        assert (tmp_path / name).is_file()
    assert "not part of this fedpriv version" not in (tmp_path / "report.md").read_text()
    r = runner.invoke(app, ["report", str(tmp_path), "--no-redact", "--json"])
    assert r.exit_code == 0, r.output
    assert sorted(Path(p).name for p in json.loads(r.stdout)) == [
        "frontier.png", "inversion.png", "report.md", "roc.png"]


@pytest.mark.parametrize("case", ["missing_dir", "missing_json", "not_json", "invalid"])
def test_report_command_bad_input_exit_2(case: str, tmp_path: Path) -> None:
    out = tmp_path / "out"
    if case != "missing_dir":
        out.mkdir()
    if case == "not_json":
        (out / "report.json").write_text("{nope")
    if case == "invalid":
        broken = copy.deepcopy(make_report())
        broken["runs"][0]["privacy"]["epsilon"] = -1.0
        (out / "report.json").write_text(json.dumps(broken))
    r = runner.invoke(app, ["report", str(out)])
    assert r.exit_code == 2, r.output
    message = r.stderr.strip()
    assert message.startswith("error:") and "\n" not in message, message
    assert "Traceback" not in r.output
    assert not (out / "report.md").exists()


def test_label_offsets_avoid_each_other_and_obstacles() -> None:
    anchors = [(100.0 + 3 * i, 100.0) for i in range(12)]  # crowded points
    sizes = [(40.0, 10.0)] * 12
    obstacles = [(a[0] - 4, a[1] - 4, a[0] + 4, a[1] + 4) for a in anchors]
    bounds = (0.0, 0.0, 400.0, 400.0)
    offsets = plots.choose_label_offsets(anchors, sizes, obstacles, bounds)
    boxes = [_label_box(a, s, o) for a, s, o in zip(anchors, sizes, offsets, strict=True)]
    for i, box in enumerate(boxes):
        assert bounds[0] <= box[0] and box[2] <= bounds[2]
        assert bounds[1] <= box[1] and box[3] <= bounds[3]
        assert all(_overlap(box, ob) == 0 for ob in obstacles)
        assert all(_overlap(box, other) == 0 for other in boxes[:i])
    assert plots.choose_label_offsets(anchors, sizes, obstacles, bounds) == offsets


def test_inversion_rows_one_row_per_empty_observation() -> None:
    run = _run("plain", epsilon=None, ppl=50.0, auc=0.6, rouge1=0.0)
    first = run["leakage"]["inversion"]["observations"][0]
    run["leakage"]["inversion"]["observations"].append(
        {**first, "observed": "client 1's update (plain: the server sees each update)"})
    rows = inversion_rows([run], redact=True)
    assert [r[0].split(" · ")[1][:8] for r in rows] == ["client 0", "client 1"]
    assert all(r[2] == "(nothing recovered)" for r in rows)


def _measured_mia(nonmembers: int, seed: int) -> dict[str, Any]:
    """Return a ``leakage.mia`` block as the runner writes it (mia_report of evaluations)."""
    from fedpriv.attacks.metrics import evaluate_mia, mia_report

    rng = np.random.default_rng(seed)
    labels = np.r_[np.ones(nonmembers, bool), np.zeros(nonmembers, bool)]
    results = [evaluate_mia(name, "final global model",
                            np.r_[rng.normal(mu, 1.0, nonmembers), rng.normal(0, 1, nonmembers)],
                            labels, resamples=50)
               for name, mu in (("loss", 0.8), ("zlib", 0.3))]
    block = mia_report(results)
    best = results[0]
    block["roc"] = {"fpr": [p[0] for p in best.roc], "tpr": [p[1] for p in best.roc]}
    return block


def test_report_shows_intervals_and_unresolvable_tpr(tmp_path: Path) -> None:
    """80 non-members: TPR at 1% is null ("n/a"); 200: it has an interval; AUC always does."""
    small = _run("small", epsilon=None, ppl=50.0, auc=0.5, rouge1=None)
    large = _run("large", epsilon=2.0, ppl=55.0, auc=0.5, rouge1=None)
    small["leakage"] = {"mia": _measured_mia(80, 0), "mia_update": _measured_mia(80, 1)}
    large["leakage"] = {"mia": _measured_mia(200, 2)}
    report = json.loads(json.dumps(make_report([small, large]), allow_nan=False))
    validate_report(report)
    mia = report["runs"][0]["leakage"]["mia"]
    assert mia["tpr_at_1pct_fpr"] is None and mia["tpr_at_1pct_fpr_ci"] is None
    low, high = mia["auc_ci"]
    rows = {r["run"]: r for r in summary_rows(report)}
    assert rows["small"]["mia_auc"] == f"{mia['auc']:.3f} [{low:.3f}, {high:.3f}]"
    assert rows["small"]["mia_tpr"] == "n/a"
    assert rows["large"]["mia_tpr"].count("[") == 1
    text = render_markdown(report)
    small_line = next(line for line in text.splitlines() if line.startswith("| small"))
    assert f"[{low:.3f}, {high:.3f}]" in small_line and "| n/a |" in small_line
    assert "TPR@1%FPR" in text and "fewer than 100 non-members" in text
    assert [p.name for p in write_plots(report, tmp_path)] == [
        "frontier.png", "roc.png", "inversion.png"]
    # Reports written before intervals existed still render: the value alone.
    old = _run("old", epsilon=None, ppl=50.0, auc=0.61, rouge1=None)
    assert summary_rows(make_report([old]))[0]["mia_auc"] == "0.610"
    bad = copy.deepcopy(report)
    bad["runs"][0]["leakage"]["mia"]["auc_ci"] = [0.2]
    with pytest.raises(jsonschema.ValidationError):
        validate_report(bad)


def test_importing_the_report_leaves_matplotlib_unloaded() -> None:
    # A fresh interpreter: this one already imported matplotlib for the figures.
    code = ("import sys, fedpriv.audits.report, fedpriv.audits.plots; "
            "print('matplotlib' in sys.modules)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "False"
