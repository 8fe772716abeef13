"""Empirical ε (one-run audit, Steinke et al. 2023): the bound's maths and the audit end to end."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from fedpriv.audits.config import AttackConfig, AuditConfig, from_mapping
from fedpriv.audits.epsilon import epsilon_lower_bound, one_run_audit, p_value
from fedpriv.audits.runner import build_dataset, run_audit
from fedpriv.data import make_audit_canaries
from fedpriv.errors import ConfigError, DataError


def naive_p_value(m: int, r: int, v: int, eps: float, delta: float) -> float:
    """Compute the p-value with the paper's Appendix D loop, written out literally."""
    q = 1 / (1 + math.exp(-eps))
    beta = stats.binom.sf(v - 1, r, q)
    alpha, total = 0.0, 0.0
    for i in range(1, v + 1):
        total += stats.binom.pmf(v - i, r, q)
        if total > i * alpha:
            alpha = total / i
    return float(min(beta + alpha * delta * 2 * m, 1.0))


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 300), st.data(), st.floats(0, 6), st.sampled_from([0.0, 1e-5, 1e-3]))
def test_p_value_matches_the_papers_loop(r: int, data: st.DataObject, eps: float,
                                          delta: float) -> None:
    v = data.draw(st.integers(0, r))
    m = data.draw(st.integers(r, 2 * r))
    assert p_value(m, r, v, eps, delta) == pytest.approx(naive_p_value(m, r, v, eps, delta),
                                                         rel=1e-9, abs=1e-12)


def test_ceiling_for_1000_correct_guesses() -> None:
    # The figure: 1000 all-correct guesses, 95%, δ = 1e-5 → about 5.8.
    assert epsilon_lower_bound(1000, 1000, 1000, delta=1e-5, p=0.05) == pytest.approx(5.78,
                                                                                      abs=0.01)
    assert epsilon_lower_bound(1000, 1000, 500, delta=1e-5, p=0.05) == 0.0
    assert epsilon_lower_bound(1000, 0, 0, delta=1e-5, p=0.05) == 0.0


@settings(max_examples=40, deadline=None)
@given(st.integers(10, 400), st.data())
def test_bound_grows_with_correct_guesses(r: int, data: st.DataObject) -> None:
    v = data.draw(st.integers(0, r - 1))
    low = epsilon_lower_bound(2 * r, r, v, delta=1e-5, p=0.05)
    high = epsilon_lower_bound(2 * r, r, v + 1, delta=1e-5, p=0.05)
    assert high >= low >= 0
    if low > 0:  # the returned ε is rejected, a little more is not
        assert p_value(2 * r, r, v, low, 1e-5) < 0.05
        assert p_value(2 * r, r, v, low + 0.01, 1e-5) >= 0.05


def test_bound_is_valid_on_an_eps_dp_mechanism() -> None:
    """Check randomised response at ε = 1 (exactly ε-DP): the bound exceeds 1 in ≤ 5% of trials."""
    eps, m, trials = 1.0, 1000, 200
    rng = np.random.default_rng(0)
    q = 1 / (1 + math.exp(-eps))
    above = 0
    bounds = []
    for _ in range(trials):
        included = rng.random(m) < 0.5
        truthful = rng.random(m) < q
        scores = np.where(truthful, included, ~included).astype(float) + rng.random(m) * 1e-3
        bound = one_run_audit(scores, included, delta=0.0).epsilon
        bounds.append(bound)
        above += bound > eps
    assert above <= 0.05 * trials
    assert np.median(bounds) > 0.3  # and it is not vacuous: it sees most of the ε


def test_audit_separates_and_abstains() -> None:
    included = np.random.default_rng(1).random(400) < 0.5
    perfect = one_run_audit(included.astype(float), included, delta=1e-5)
    assert perfect.epsilon > 3 and perfect.correct == perfect.guesses
    noise = one_run_audit(np.random.default_rng(2).random(400), included, delta=1e-5)
    assert noise.epsilon < 0.5
    with pytest.raises(DataError):
        one_run_audit([1.0, 2.0], [True], delta=1e-5)
    with pytest.raises(DataError):
        one_run_audit([1.0, float("nan")], [True, False], delta=1e-5)


def test_canaries_are_distinct_and_half_included() -> None:
    words = [f"w{i}" for i in range(50)]
    c = make_audit_canaries(2000, 4, np.random.default_rng(0), [w.replace("w", "word") for w in
                                                                 words])
    assert len(set(c.texts)) == 2000
    assert 0.45 < c.included.mean() < 0.55
    assert set(c.clients.tolist()) == {0, 1, 2, 3}
    assert sum(len(c.planted(k)) for k in range(4)) == int(c.included.sum())
    with pytest.raises(DataError):
        make_audit_canaries(10, 2, np.random.default_rng(0), ["a", "b"])
    with pytest.raises(ConfigError):
        AttackConfig(epsilon_canaries=1)


def _config(seed: int, runs: list[dict]) -> AuditConfig:
    return from_mapping(AuditConfig, {
        "name": "eps", "seed": seed, "device": "cpu",
        "model": {"max_length": 32, "lora": {"rank": 8, "alpha": 16.0,
                                             "target_modules": ["q_proj", "v_proj"]}},
        "data": {"records_per_client": 8, "holdout_fraction": 0.5},
        "federation": {"clients": 2, "rounds": 2, "local_steps": 8, "batch_size": 8,
                       "lr": 2e-2},
        "attacks": {"epsilon_canaries": 64, "inversion": False},
        "runs": runs,
    })


def test_canaries_are_planted_once_and_counted_in_the_data() -> None:
    cfg = _config(0, [{"name": "plain"}])
    dataset = build_dataset(cfg)
    audit = dataset.audit_canaries
    assert audit is not None
    members = dataset.all_members()
    for text, inc in zip(audit.texts, audit.included, strict=True):
        assert members.count(text) == int(inc)
    assert not set(audit.texts) & set(dataset.all_nonmembers())


def test_repeated_canaries_are_a_group_with_the_group_epsilon_as_reference() -> None:
    """Copies of a canary are records of one client; sample DP's reference is the group ε."""
    from dataclasses import replace

    from fedpriv.audits.leakage import audit_reference, audit_relation
    from fedpriv.audits.runner import plan_runs_dp

    cfg = _config(0, [{"name": "sample", "dp": "sample", "epsilon": 2.0}])
    cfg = replace(cfg, attacks=replace(cfg.attacks, epsilon_canary_repetitions=3))
    dataset = build_dataset(cfg)
    audit = dataset.audit_canaries
    assert audit is not None and audit.repetitions == 3
    members = dataset.all_members()
    for text, inc in zip(audit.texts, audit.included, strict=True):
        assert members.count(text) == 3 * int(inc)
    plan = plan_runs_dp(cfg, dataset)["sample"]
    assert plan is not None
    assert audit_relation("sample", 3) == "add/remove a group of 3 copies of one record"
    group = audit_reference(plan, 3)
    assert group is not None and group > plan.epsilon
    assert audit_reference(plan, 1) == plan.epsilon
    assert audit_relation("user", 3) == "replace-one client"


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_empirical_epsilon_below_theoretical_with_dp_positive_without(seed: int,
                                                                       tmp_path: Path) -> None:
    report = run_audit(_config(seed, [
        {"name": "no-dp"},
        {"name": "sample-dp", "dp": "sample", "epsilon": 2.0},
    ]), tmp_path)
    runs = {r["name"]: r for r in report["runs"]}
    assert all(r["status"] == "ok" for r in runs.values())
    dp = runs["sample-dp"]
    assert dp["leakage"]["empirical_epsilon"] <= dp["privacy"]["epsilon"]
    assert dp["leakage"]["epsilon_audit"]["theoretical_epsilon"] == dp["privacy"]["epsilon"]
    no_dp = runs["no-dp"]["leakage"]
    assert no_dp["empirical_epsilon"] > 0.3, no_dp["epsilon_audit"]
    assert no_dp["epsilon_audit"]["canaries"] == 64
