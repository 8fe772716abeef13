"""Statistical honesty of MIA figures: resolvable targets only, and confidence intervals.

The intervals are checked against a naive reference (every resample rebuilt
and scored one by one), by simulation against a known AUC, and against the
Hanley-McNeil variance; the reports are walked for a ``*_ci`` beside every
``auc`` and ``tpr_at_*``.
"""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedpriv.attacks.metrics import (
    evaluate_mia,
    fpr_resolvable,
    mia_confidence_intervals,
    mia_report,
    resampled_mia_metrics,
    roc_auc,
    tpr_at_fpr,
)
from fedpriv.errors import DataError

TARGETS = (0.0, 0.001, 0.01, 0.1, 0.5, 1.0)


def gaussians(n: int, mu: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``n`` members ~ N(mu, 1) and ``n`` non-members ~ N(0, 1): AUC = Phi(mu / sqrt 2)."""
    scores = np.r_[rng.normal(mu, 1.0, n), rng.normal(0.0, 1.0, n)]
    return scores, np.r_[np.ones(n, bool), np.zeros(n, bool)]


def true_auc(mu: float) -> float:
    return 0.5 * (1.0 + math.erf(mu / 2.0))  # Phi(mu / sqrt 2)


def test_fpr_resolvable_needs_one_allowed_false_positive() -> None:
    assert not fpr_resolvable(0.001, 80)  # the case: 80 non-members, 0.1% FPR
    assert not fpr_resolvable(0.001, 999)
    assert fpr_resolvable(0.001, 1000)  # exactly one false positive, despite 1000 * 0.001 rounding
    assert not fpr_resolvable(0.01, 99) and fpr_resolvable(0.01, 100)
    assert not fpr_resolvable(0.0, 10**9)
    assert fpr_resolvable(1.0, 1) and not fpr_resolvable(0.5, 0)
    with pytest.raises(DataError, match="FPR"):
        fpr_resolvable(1.5, 100)
    with pytest.raises(DataError, match="n_nonmembers"):
        fpr_resolvable(0.01, -1)


def test_tpr_at_unresolvable_fpr_is_none_with_null_interval() -> None:
    scores, labels = gaussians(80, 1.0, np.random.default_rng(0))
    result = evaluate_mia("loss", "final global model", scores, labels)
    assert result.n_nonmembers == 80
    assert result.tpr_at_0_1pct_fpr is None and result.tpr_at_0_1pct_fpr_ci is None
    assert result.tpr_at_1pct_fpr is None and result.tpr_at_1pct_fpr_ci is None  # 80 < 100
    entry = result.to_report()
    assert entry["tpr_at_0_1pct_fpr"] is None and entry["tpr_at_0_1pct_fpr_ci"] is None
    assert "null" in json.dumps(entry, allow_nan=False)
    # 100 non-members resolve 1% but not 0.1%.
    scores, labels = gaussians(100, 1.0, np.random.default_rng(0))
    result = evaluate_mia("loss", "final global model", scores, labels)
    assert result.tpr_at_1pct_fpr == tpr_at_fpr(scores, labels, 0.01)
    assert result.tpr_at_1pct_fpr_ci is not None and result.tpr_at_0_1pct_fpr is None


scored_examples = st.lists(
    st.tuples(st.integers(-3, 3), st.booleans()), min_size=2, max_size=30
).filter(lambda rows: 0 < sum(y for _, y in rows) < len(rows))


@settings(max_examples=60, deadline=None)
@given(scored_examples, st.integers(0, 2**32 - 1))
def test_resampled_metrics_match_naive_reference(rows: list[tuple[int, bool]], seed: int) -> None:
    """Every resample's AUC and TPR at FPR equal those of the resample built explicitly."""
    scores = np.array([s / 2 for s, _ in rows])  # few distinct values: many ties
    labels = np.array([y for _, y in rows])
    members, nonmembers = scores[labels], scores[~labels]
    rng = np.random.default_rng(seed)
    picks_m = rng.integers(0, members.size, size=(8, members.size))
    picks_n = rng.integers(0, nonmembers.size, size=(8, nonmembers.size))
    counts_m = np.stack([np.bincount(p, minlength=members.size) for p in picks_m])
    counts_n = np.stack([np.bincount(p, minlength=nonmembers.size) for p in picks_n])
    auc, tpr = resampled_mia_metrics(members, nonmembers, counts_m, counts_n, TARGETS)
    for b in range(8):
        resample = np.r_[members[picks_m[b]], nonmembers[picks_n[b]]]
        truth = np.r_[np.ones(members.size, bool), np.zeros(nonmembers.size, bool)]
        assert auc[b] == pytest.approx(roc_auc(resample, truth), abs=1e-12)
        for j, target in enumerate(TARGETS):
            assert tpr[b, j] == pytest.approx(tpr_at_fpr(resample, truth, target), abs=1e-12)


@pytest.mark.parametrize(("n", "mu", "ties"), [(5, 0.0, False), (40, 1.0, True),
                                               (300, 0.5, False), (30, 8.0, False)])
def test_interval_contains_the_point_estimate(n: int, mu: float, ties: bool) -> None:
    for seed in range(5):
        scores, labels = gaussians(n, mu, np.random.default_rng(seed))
        if ties:
            scores = np.round(scores)
        result = evaluate_mia("loss", "final global model", scores, labels, resamples=100,
                              rng=np.random.default_rng(seed))
        low, high = result.auc_ci
        assert 0.0 <= low <= result.auc <= high <= 1.0
        for value, interval in ((result.tpr_at_1pct_fpr, result.tpr_at_1pct_fpr_ci),
                                (result.tpr_at_0_1pct_fpr, result.tpr_at_0_1pct_fpr_ci)):
            assert (value is None) == (interval is None)
            if value is not None and interval is not None:
                assert 0.0 <= interval[0] <= value <= interval[1] <= 1.0


def test_interval_shrinks_with_more_samples() -> None:
    widths = {}
    for n in (50, 200, 800):
        runs = [mia_confidence_intervals(*gaussians(n, 0.75, np.random.default_rng(seed)),
                                         resamples=200, rng=np.random.default_rng(seed))
                for seed in range(5)]
        widths[n] = float(np.mean([ci.auc[1] - ci.auc[0] for ci in runs]))
        tpr_widths = [ci.tpr[0][1] - ci.tpr[0][0] for ci in runs if ci.tpr[0] is not None]
        widths[n, "tpr"] = float(np.mean(tpr_widths)) if tpr_widths else math.inf
    # The width goes as 1 / sqrt(n): each fourfold increase about halves it.
    assert widths[200] < 0.65 * widths[50] and widths[800] < 0.65 * widths[200]
    assert widths[800, "tpr"] < widths[200, "tpr"]


def test_auc_interval_covers_the_true_auc_by_simulation() -> None:
    """Two unit Gaussians, means 0.75 apart: the true AUC is Phi(0.75 / sqrt 2) ~ 0.702."""
    truth = true_auc(0.75)
    covered = 0
    for seed in range(100):
        scores, labels = gaussians(100, 0.75, np.random.default_rng([seed, 1]))
        low, high = mia_confidence_intervals(scores, labels, resamples=200,
                                             rng=np.random.default_rng([seed, 2])).auc
        covered += low <= truth <= high
    assert covered >= 85  # nominal 95%; ~95% over 600 seeds when this was written


def test_auc_interval_agrees_with_hanley_mcneil() -> None:
    """The bootstrap's width matches the Hanley-McNeil (1982) variance of the AUC."""
    n = 150
    ratios = []
    for seed in range(10):
        scores, labels = gaussians(n, 1.0, np.random.default_rng(seed))
        auc = roc_auc(scores, labels)
        q1, q2 = auc / (2 - auc), 2 * auc**2 / (1 + auc)
        var = (auc * (1 - auc) + (n - 1) * (q1 - auc**2) + (n - 1) * (q2 - auc**2)) / n**2
        low, high = mia_confidence_intervals(scores, labels, rng=np.random.default_rng(seed)).auc
        ratios.append((high - low) / (2 * 1.959964 * math.sqrt(var)))
    assert 0.8 < float(np.mean(ratios)) < 1.2


def test_intervals_are_seeded_and_validated() -> None:
    scores, labels = gaussians(60, 1.0, np.random.default_rng(3))
    assert mia_confidence_intervals(scores, labels) == mia_confidence_intervals(scores, labels)
    other = mia_confidence_intervals(scores, labels, rng=np.random.default_rng(9))
    assert other.auc != mia_confidence_intervals(scores, labels).auc
    narrow = mia_confidence_intervals(scores, labels, confidence=0.5)
    wide = mia_confidence_intervals(scores, labels, confidence=0.99)
    assert wide.auc[0] < narrow.auc[0] and narrow.auc[1] < wide.auc[1]
    with pytest.raises(DataError, match="resamples"):
        mia_confidence_intervals(scores, labels, resamples=5)
    with pytest.raises(DataError, match="confidence"):
        mia_confidence_intervals(scores, labels, confidence=1.0)
    with pytest.raises(DataError, match="both members and non-members"):
        mia_confidence_intervals([1.0, 2.0], [1, 1])
    with pytest.raises(DataError, match="shapes"):
        resampled_mia_metrics([1.0], [0.0], np.ones((2, 2)), np.ones((2, 1)))


def _figures_without_interval(node: Any, path: str = "") -> list[str]:
    """Paths of every ``auc`` / ``tpr_at_*`` whose ``*_ci`` sibling is missing or inconsistent."""
    bad: list[str] = []
    if isinstance(node, dict):
        for key, value in node.items():
            here = f"{path}.{key}"
            if (key == "auc" or key.startswith("tpr_at_")) and not key.endswith("_ci"):
                interval = node.get(f"{key}_ci", "missing")
                if value is None:
                    if interval is not None:
                        bad.append(here)
                elif not (isinstance(interval, list) and len(interval) == 2
                          and all(isinstance(x, float) for x in interval)
                          and interval[0] <= value <= interval[1]):
                    bad.append(here)
            bad += _figures_without_interval(value, here)
    elif isinstance(node, list):
        for i, item in enumerate(node):
            bad += _figures_without_interval(item, f"{path}[{i}]")
    return bad


@pytest.mark.parametrize("nonmembers", [3, 80, 1000])
def test_every_report_figure_has_an_interval(nonmembers: int) -> None:
    rng = np.random.default_rng(nonmembers)
    labels = np.r_[np.ones(200, bool), np.zeros(nonmembers, bool)]
    results = [evaluate_mia(name, "final global model",
                            np.r_[rng.normal(mu, 1.0, 200), rng.normal(0.0, 1.0, nonmembers)],
                            labels, resamples=50)
               for name, mu in (("loss", 0.5), ("zlib", 1.0))]
    block = json.loads(json.dumps(mia_report(results, include_roc=True), allow_nan=False))
    assert _figures_without_interval(block) == []
    for entry in (block, *block["attacks"]):
        figures = [key for key in entry
                   if (key == "auc" or key.startswith("tpr_at_")) and not key.endswith("_ci")]
        assert len(figures) == 3 and all(f"{key}_ci" in entry for key in figures)
    assert block["ci_level"] == 0.95 and "bootstrap" in block["ci_method"]
    assert (block["tpr_at_0_1pct_fpr"] is None) == (nonmembers < 1000)
    assert (block["tpr_at_1pct_fpr"] is None) == (nonmembers < 100)
    # The walker itself notices a missing or inconsistent interval.
    assert _figures_without_interval({"auc": 0.5}) == [".auc"]
    assert _figures_without_interval({"x": [{"tpr_at_1pct_fpr": None,
                                             "tpr_at_1pct_fpr_ci": [0.0, 0.1]}]}) \
        == [".x[0].tpr_at_1pct_fpr"]
