"""DP configuration: validation, CLI-style overrides, and the plan a run resolves to."""

from __future__ import annotations

import pytest

from fedpriv.audits.config import AuditConfig, RunConfig, from_mapping, override_runs, to_dict
from fedpriv.dp.config import DPConfig, make_dp_config, plan_dp
from fedpriv.errors import ConfigError


def test_modes_and_required_target():
    assert not make_dp_config("none").enabled
    cfg = make_dp_config("sample", epsilon=8)
    assert cfg.enabled and cfg.epsilon == 8.0 and cfg.delta == 1e-5 and cfg.effective_clip == 1.0
    assert make_dp_config("user", params={"noise_multiplier": 1.0}).effective_clip > 0
    with pytest.raises(ConfigError, match="valid modes"):
        make_dp_config("local")
    with pytest.raises(ConfigError, match="exactly one of epsilon"):
        make_dp_config("sample")
    with pytest.raises(ConfigError, match="exactly one of epsilon"):
        make_dp_config("user", epsilon=3, params={"noise_multiplier": 1.0})
    with pytest.raises(ConfigError, match="no noise"):
        make_dp_config("sample", params={"noise_multiplier": 0.0})
    with pytest.raises(ConfigError, match="epsilon must be"):
        make_dp_config("sample", epsilon=-1)
    with pytest.raises(ConfigError, match="delta"):
        make_dp_config("sample", epsilon=1, delta=1.0)


def test_parameters_must_fit_the_mode():
    with pytest.raises(ConfigError, match="unknown dp_params key 'clipp'"):
        make_dp_config("sample", epsilon=1, params={"clipp": 1.0})
    with pytest.raises(ConfigError, match="adaptive_clip do"):
        make_dp_config("sample", epsilon=1, params={"adaptive_clip": True})
    with pytest.raises(ConfigError, match="clipping do"):
        make_dp_config("user", epsilon=1, params={"clipping": "ghost"})
    with pytest.raises(ConfigError, match="but dp is 'none'"):
        make_dp_config("none", epsilon=3)
    with pytest.raises(ConfigError, match="clipping must be"):
        make_dp_config("sample", epsilon=1, params={"clipping": "batch"})
    with pytest.raises(ConfigError, match="accountant"):
        make_dp_config("sample", epsilon=1, params={"accountant": "moments"})


def test_run_config_validates_dp_with_its_name():
    run = RunConfig(name="dp", dp="user", epsilon=3.0, dp_params={"clip": 0.5})
    assert run.dp_config().clip == 0.5
    with pytest.raises(ConfigError, match="run 'bad'"):
        RunConfig(name="bad", dp="sample")
    cfg = from_mapping(AuditConfig, {"runs": [{"name": "a", "dp": "sample", "epsilon": 8}]})
    assert cfg.runs[0].dp_config().epsilon == 8.0
    assert from_mapping(AuditConfig, to_dict(cfg)) == cfg


def test_override_runs_like_the_cli():
    base = from_mapping(AuditConfig, {"runs": [
        {"name": "plain"},
        {"name": "user", "dp": "user", "dp_params": {"noise_multiplier": 2.0}},
    ]})
    single = override_runs(base, protocol="secagg+", dp="user", epsilon=3.0)
    assert [(r.name, r.protocol, r.dp, r.epsilon) for r in single.runs] == [
        ("secagg+-user-dp", "secagg+", "user", 3.0)]
    eps = override_runs(base, epsilon=2.0)
    assert eps.runs[0].epsilon is None  # not a DP run: untouched
    assert eps.runs[1].epsilon == 2.0 and "noise_multiplier" not in eps.runs[1].dp_params
    off = override_runs(base, dp="none")
    assert all(r.dp == "none" and not r.dp_params for r in off.runs)
    with pytest.raises(ConfigError, match="--epsilon needs a DP run"):
        override_runs(from_mapping(AuditConfig, {}), epsilon=1.0)
    assert override_runs(base) is base


def _plan(cfg: DPConfig, sizes=(100, 50, 200), rounds=5, per_round=3, steps=4, batch=10):
    return plan_dp(cfg, client_sizes=list(sizes), rounds_per_client=[rounds] * len(sizes),
                   rounds=rounds, clients_per_round=per_round,
                   local_steps=[steps] * len(sizes),
                   local_sample_rates=[min(1.0, batch / n) for n in sizes])


def test_sample_plan_reports_the_worst_client():
    from fedpriv.dp.accounting import epsilon

    plan = _plan(make_dp_config("sample", epsilon=4.0))
    assert plan is not None and plan.mode == "sample"
    assert plan.epsilon <= 4.0 * 1.001
    # the smallest client (50 examples) has the largest sampling rate: it is the worst off
    assert plan.sample_rate == pytest.approx(10 / 50) and plan.steps == 20
    assert plan.epsilon == max(plan.per_client_epsilon) == plan.per_client_epsilon[1]
    assert plan.epsilon == pytest.approx(epsilon(plan.noise_multiplier, 0.2, 20, 1e-5,
                                                 plan.config.accountant))
    assert plan.epsilon > 4.0 * 0.95  # σ is the smallest meeting the target, not any σ
    given = _plan(make_dp_config("sample", params={"noise_multiplier": plan.noise_multiplier}))
    assert given is not None and given.epsilon == pytest.approx(plan.epsilon)
    report = plan.to_report()
    assert report["unit"] == "example" and report["clipping"] == "per_sample"


def test_user_plan_and_delta_warning():
    plan = _plan(make_dp_config("user", epsilon=3.0, delta=0.2), sizes=[10] * 8, per_round=4)
    assert plan is not None and plan.sample_rate == 0.5 and plan.steps == 5
    assert plan.epsilon <= 3.0 * 1.001
    assert plan.warnings and "1/8" in plan.warnings[0]
    assert plan.to_report()["unit"] == "client"
    assert _plan(make_dp_config("none")) is None


def test_unreachable_epsilon_names_the_smallest_reachable():
    with pytest.raises(ConfigError, match="reach"):
        _plan(make_dp_config("user", epsilon=1e-6), sizes=[10] * 4, per_round=4, rounds=1000)


def test_prv_accountant_plans_no_larger_sigma_than_rdp():
    rdp = _plan(make_dp_config("user", epsilon=3.0), sizes=[10] * 8, per_round=4, rounds=50)
    prv = _plan(make_dp_config("user", epsilon=3.0, params={"accountant": "prv"}),
                sizes=[10] * 8, per_round=4, rounds=50)
    assert rdp is not None and prv is not None
    assert prv.epsilon <= 3.0 * 1.001 and prv.config.accountant == "prv"
    assert prv.noise_multiplier <= rdp.noise_multiplier  # PRV is the tighter accountant
