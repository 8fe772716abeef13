"""ROC / AUC / TPR-at-FPR and exposure metrics against naive references and closed forms."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedpriv.attacks.metrics import (
    evaluate_mia,
    exposure_exact,
    exposure_from_rank,
    exposure_sampled,
    fit_skew_normal,
    mia_report,
    roc_auc,
    roc_curve,
    roc_points,
    tpr_at_fpr,
)
from fedpriv.errors import DataError


def naive_auc(scores: list[float], labels: list[bool]) -> float:
    pos = [s for s, y in zip(scores, labels, strict=True) if y]
    neg = [s for s, y in zip(scores, labels, strict=True) if not y]
    wins = sum((p > n) + 0.5 * (p == n) for p in pos for n in neg)
    return wins / (len(pos) * len(neg))


def naive_tpr_at_fpr(scores: list[float], labels: list[bool], target: float) -> float:
    """Try every threshold (every score and +inf); keep the best TPR with FPR <= target."""
    pos = sum(labels)
    neg = len(labels) - pos
    best = 0.0
    for t in [math.inf, *scores]:
        tp = sum(s >= t and y for s, y in zip(scores, labels, strict=True))
        fp = sum(s >= t and not y for s, y in zip(scores, labels, strict=True))
        if fp / neg <= target + 1e-12:
            best = max(best, tp / pos)
    return best


scored_examples = st.lists(
    st.tuples(st.integers(-4, 4), st.booleans()), min_size=2, max_size=40
).filter(lambda rows: 0 < sum(y for _, y in rows) < len(rows))


@settings(max_examples=150, deadline=None)
@given(scored_examples)
def test_auc_matches_pair_count_with_ties(rows: list[tuple[int, bool]]) -> None:
    scores = [s / 2 for s, _ in rows]  # few distinct values: many ties
    labels = [y for _, y in rows]
    assert roc_auc(scores, labels) == pytest.approx(naive_auc(scores, labels), abs=1e-12)


@settings(max_examples=100, deadline=None)
@given(scored_examples, st.sampled_from([0.0, 0.001, 0.01, 0.1, 0.25, 0.5, 1.0]))
def test_tpr_at_fpr_matches_threshold_search(rows: list[tuple[int, bool]], target: float) -> None:
    scores = [float(s) for s, _ in rows]
    labels = [y for _, y in rows]
    assert tpr_at_fpr(scores, labels, target) == pytest.approx(
        naive_tpr_at_fpr(scores, labels, target)
    )


@settings(max_examples=60, deadline=None)
@given(scored_examples)
def test_roc_curve_is_monotone_and_spans_unit_square(rows: list[tuple[int, bool]]) -> None:
    scores = [float(s) for s, _ in rows]
    labels = [y for _, y in rows]
    fpr, tpr, thresholds = roc_curve(scores, labels)
    assert (fpr[0], tpr[0], fpr[-1], tpr[-1]) == (0.0, 0.0, 1.0, 1.0)
    assert np.all(np.diff(fpr) >= 0) and np.all(np.diff(tpr) >= 0)
    assert np.all(np.diff(thresholds) < 0)
    assert len(thresholds) == len(set(scores)) + 1
    # Flipping the sign of the scores mirrors the AUC.
    assert roc_auc([-s for s in scores], labels) == pytest.approx(1 - roc_auc(scores, labels))


def test_tpr_at_fpr_constructed_cases() -> None:
    # 1000 non-members in [0, 1); 10 members above all but 5 non-members; 90 members low.
    nonmembers = np.linspace(0.0, 0.999, 1000)
    top5 = np.array([2.0, 2.1, 2.2, 2.3, 2.4])
    nonmembers[-5:] = top5
    members = np.r_[np.full(10, 1.5), np.full(90, -1.0)]
    scores = np.r_[members, nonmembers]
    labels = np.r_[np.ones(100, bool), np.zeros(1000, bool)]
    assert tpr_at_fpr(scores, labels, 0.001) == 0.0  # 1 false positive allowed: no member above
    assert tpr_at_fpr(scores, labels, 0.005) == pytest.approx(0.10)  # 5 allowed: threshold 1.5
    assert tpr_at_fpr(scores, labels, 0.01) == pytest.approx(0.10)
    assert tpr_at_fpr(scores, labels, 1.0) == 1.0
    # A perfectly separating score has TPR 1 at FPR 0.
    assert tpr_at_fpr([3, 2, 1, 0], [1, 1, 0, 0], 0.0) == 1.0
    # Ties between a member and a non-member cannot be split: FPR 0 gives TPR 0.
    assert tpr_at_fpr([1, 1, 0], [1, 0, 0], 0.0) == 0.0
    assert tpr_at_fpr([1, 1, 0], [1, 0, 0], 0.5) == 1.0


def test_control_nonmembers_against_nonmembers_is_chance() -> None:
    rng = np.random.default_rng(7)
    aucs = []
    for _ in range(20):
        scores = rng.gamma(2.0, 1.0, size=4000)  # one distribution, arbitrary labels
        labels = rng.permutation(np.r_[np.ones(2000, bool), np.zeros(2000, bool)])
        auc = roc_auc(scores, labels)
        assert abs(auc - 0.5) < 0.05
        aucs.append(auc)
        assert tpr_at_fpr(scores, labels, 0.01) < 0.03
    assert abs(float(np.mean(aucs)) - 0.5) < 0.01


def test_roc_points_are_vertices_and_capped() -> None:
    rng = np.random.default_rng(0)
    scores = np.r_[rng.normal(1.0, 1.0, 3000), rng.normal(0.0, 1.0, 3000)]
    labels = np.r_[np.ones(3000, bool), np.zeros(3000, bool)]
    fpr, tpr, _ = roc_curve(scores, labels)
    points = roc_points(scores, labels, max_points=50)
    assert 10 <= len(points) <= 50
    assert points[0] == (0.0, 0.0) and points[-1] == (1.0, 1.0)
    vertices = set(zip(fpr.tolist(), tpr.tolist(), strict=True))
    assert all(point in vertices for point in points)
    xs = [p[0] for p in points]
    assert xs == sorted(xs)
    # Log-spaced: several points below 1% FPR.
    assert sum(0 < x < 0.01 for x in xs) >= 8
    small = roc_points([1, 0], [1, 0])
    assert small == [(0.0, 0.0), (0.0, 1.0), (1.0, 1.0)]


def test_mia_result_report_names_attack_and_observation() -> None:
    good = evaluate_mia("loss", "final global model", [3, 2, 1, 0], [1, 1, 0, 0])
    weak = evaluate_mia("zlib", "final global model", [3, 0, 1, 2], [1, 1, 0, 0])
    assert good.auc == 1.0 and weak.auc == 0.5
    assert (good.n_members, good.n_nonmembers) == (2, 2)
    block = mia_report([weak, good])
    assert block["attack"] == "loss" and block["observed"] == "final global model"
    assert block["auc"] == 1.0 and block["auc_ci"] == [1.0, 1.0]
    # Two non-members cannot resolve a 1% (or 0.1%) FPR: no figure, no interval.
    assert block["tpr_at_1pct_fpr"] is None and block["tpr_at_1pct_fpr_ci"] is None
    assert block["tpr_at_0_1pct_fpr"] is None and block["tpr_at_0_1pct_fpr_ci"] is None
    assert [entry["attack"] for entry in block["attacks"]] == ["zlib", "loss"]
    assert "roc" not in block and "roc" in good.to_report(include_roc=True)


def test_metrics_reject_bad_input() -> None:
    with pytest.raises(DataError, match="both members and non-members"):
        roc_auc([1.0, 2.0], [1, 1])
    with pytest.raises(DataError, match="NaN"):
        roc_auc([1.0, float("nan")], [1, 0])
    with pytest.raises(DataError, match="same length"):
        roc_auc([1.0, 2.0, 3.0], [1, 0])
    with pytest.raises(DataError, match="0/1"):
        roc_auc([1.0, 2.0], [2, 0])
    with pytest.raises(DataError, match="FPR"):
        tpr_at_fpr([1.0, 2.0], [1, 0], 1.5)
    with pytest.raises(DataError, match="at least one"):
        mia_report([])


# ----------------------------------------------------------------------- exposure


def test_exposure_exact_constructed_table() -> None:
    table = np.array([-1.0, -3.0, -2.0, -5.0, -4.0, -6.0, -7.0, -8.0])
    # Rank by likelihood: -1 (1), -2 (2), -3 (3), ...: index 1 holds rank 3.
    assert exposure_exact(table, 1) == pytest.approx(math.log2(8) - math.log2(3))
    assert exposure_exact(table, 0) == pytest.approx(3.0)  # the most likely: log2 |R|
    assert exposure_exact(table, 7) == pytest.approx(0.0)  # the least likely
    # Two other candidates tie with the secret: rank 1 + 1 + 2/2 = 3.
    tied = np.array([0.0, -1.0, -1.0, -1.0, -2.0])
    assert exposure_exact(tied, 2) == pytest.approx(math.log2(5) - math.log2(3))
    assert exposure_from_rank(1, 1024) == 10.0


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(-20, 0), min_size=1, max_size=50), st.data())
def test_exposure_exact_matches_sorted_position(values: list[int], data: st.DataObject) -> None:
    index = data.draw(st.integers(0, len(values) - 1))
    own = values[index]
    # Mid-rank of the secret's value in the list sorted from most to least likely.
    ordered = sorted(values, reverse=True)
    first = ordered.index(own) + 1
    last = len(ordered) - ordered[::-1].index(own)
    expected = math.log2(len(values)) - math.log2((first + last) / 2)
    assert exposure_exact(values, index) == pytest.approx(expected)


def test_sampled_exposure_is_within_its_error_of_the_exact_value() -> None:
    rng = np.random.default_rng(3)
    space = rng.normal(-30.0, 4.0, size=20_000)
    order = np.argsort(-space)
    covered, trials = 0, 0
    for rank in (30, 200, 1500, 8000):
        index = int(order[rank - 1])
        exact = exposure_exact(space, index)
        for _ in range(15):
            sample = space[rng.integers(0, space.size, size=2000)]
            est = exposure_sampled(float(space[index]), sample, space.size)
            assert est.method == "sampled-rank" and est.samples == 2000
            assert abs(est.exposure - exact) <= 3 * est.stderr
            if rank >= 200:  # >= 20 expected hits: the error bar is informative
                assert est.stderr < 0.6
            covered += abs(est.exposure - exact) <= 2 * est.stderr
            trials += 1
    assert covered / trials >= 0.85  # about 95% coverage expected


def test_unbeaten_secret_is_not_read_as_rank_one() -> None:
    est = exposure_sampled(0.0, np.full(1000, -10.0), 10**12)
    assert est.exposure < math.log2(1000) + 2  # the sample cannot resolve more than ~log2 m
    assert est.stderr > 0.5


def test_extrapolated_exposure_resolves_the_tail() -> None:
    from scipy import stats

    rng = np.random.default_rng(5)
    space = stats.skewnorm.rvs(-4.0, loc=-20.0, scale=5.0, size=400_000, random_state=rng)
    index = int(np.argsort(-space)[9])  # the 10th most likely of 400,000
    exact = exposure_exact(space, index)
    sample = space[rng.integers(0, space.size, size=3000)]
    by_rank = exposure_sampled(float(space[index]), sample, space.size)
    fit = fit_skew_normal(sample, bootstrap=30, rng=rng)
    est = fit.exposure(float(space[index]), space.size)
    assert est.method == "extrapolated" and est.stderr > 0
    assert abs(est.exposure - exact) <= max(3 * est.stderr, 0.5)
    assert abs(est.exposure - exact) < abs(by_rank.exposure - exact)
    assert 0.0 <= fit.exposure(100.0, 1000).exposure == pytest.approx(math.log2(1000))


def test_exposure_rejects_bad_input() -> None:
    with pytest.raises(DataError, match="outside"):
        exposure_exact([1.0, 2.0], 2)
    with pytest.raises(DataError, match="rank"):
        exposure_from_rank(0.5, 10)
    with pytest.raises(DataError, match="non-empty"):
        exposure_sampled(0.0, [], 10)
    with pytest.raises(DataError, match="at least 10"):
        fit_skew_normal([1.0, 2.0], rng=np.random.default_rng(0))
