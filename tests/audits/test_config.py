from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fedpriv.audits.config import (
    AuditConfig,
    FederationConfig,
    apply_overrides,
    available_presets,
    from_mapping,
    load_config,
    load_preset,
    override,
    to_dict,
)
from fedpriv.audits.sweep import apply_cell, cell_label
from fedpriv.errors import ConfigError
from helpers import tiny_config_dict


def test_presets_load_and_round_trip() -> None:
    assert {"default", "quick"} <= set(available_presets())
    for name in available_presets():
        cfg = load_preset(name)
        assert isinstance(cfg, AuditConfig)
        assert from_mapping(AuditConfig, to_dict(cfg)) == cfg


def test_shipped_presets_pass_preflight() -> None:
    """Every preset (gpu on CPU here) is valid down to its DP plans; default is the issue's five."""
    from fedpriv.audits.runner import preflight

    assert {"default", "quick", "dp", "gpu"} <= set(available_presets())
    for name in available_presets():
        preflight(apply_overrides(load_preset(name), device="cpu"))
    default = load_preset("default")
    assert [(r.protocol, r.dp, r.epsilon) for r in default.runs] == [
        ("plain", "none", None), ("secagg+", "none", None), ("plain", "sample", 8.0),
        ("secagg+", "user", 3.0), ("ckks", "none", None)]
    assert default.attacks.epsilon_canaries > 0 and default.attacks.inversion


def test_cross_device_preset_is_what_issue_17_asks_for() -> None:
    """The preset holds what issue 17 asks for.

    ≥ 1,000 users, ≥ 100 per round, small adapter, user-level DP at ε 3 and 8 beside
    no DP, all under secagg+, with the full leakage block (Poisson sampling comes with
    user DP).
    """
    cfg = load_preset("cross-device")
    assert cfg.data.population == "users" and cfg.federation.clients >= 1000
    assert cfg.federation.sampled_per_round >= 100
    assert cfg.model.lora.rank <= 4 or cfg.model.lora.ffa
    assert {(r.protocol, r.dp, r.epsilon) for r in cfg.runs} == {
        ("secagg+", "none", None), ("secagg+", "user", 8.0), ("secagg+", "user", 3.0)}
    assert cfg.attacks.inversion and cfg.attacks.epsilon_canaries > 0
    assert cfg.attacks.client_canaries > 0


def test_attacks_table_is_checked() -> None:
    with pytest.raises(ConfigError, match="shadow_models"):
        from_mapping(AuditConfig, {"attacks": {"shadow_models": 2}, "data": {"source": "x.jsonl"}})
    with pytest.raises(ConfigError, match="epsilon_canaries"):
        from_mapping(AuditConfig, {"attacks": {"epsilon_canaries": 1}})
    with pytest.raises(ConfigError, match="epsilon_confidence"):
        from_mapping(AuditConfig, {"attacks": {"epsilon_confidence": 1.0}})


def test_unknown_key_is_rejected_with_valid_keys(tmp_path: Path) -> None:
    p = tmp_path / "c.toml"
    p.write_text("[federation]\nroundz = 3\n")
    with pytest.raises(ConfigError, match=r"unknown config key 'federation.roundz'.*rounds"):
        load_config(p)


def test_unknown_top_level_key(tmp_path: Path) -> None:
    p = tmp_path / "c.toml"
    p.write_text("sede = 3\n")
    with pytest.raises(ConfigError, match="'sede'"):
        load_config(p)


def test_wrong_types_are_rejected() -> None:
    with pytest.raises(ConfigError, match=r"federation.rounds must be an integer"):
        from_mapping(AuditConfig, {"federation": {"rounds": "ten"}})
    with pytest.raises(ConfigError, match=r"federation.rounds must be an integer"):
        from_mapping(AuditConfig, {"federation": {"rounds": True}})
    with pytest.raises(ConfigError, match=r"model.lora.ffa must be true or false"):
        from_mapping(AuditConfig, {"model": {"lora": {"ffa": 1}}})


def test_ranges_are_checked() -> None:
    with pytest.raises(ConfigError, match=r"federation.rounds must be >= 1"):
        apply_overrides(AuditConfig(), federation__rounds=-3)
    with pytest.raises(ConfigError, match="holdout_fraction"):
        from_mapping(AuditConfig, {"data": {"holdout_fraction": 1.5}})
    with pytest.raises(ConfigError, match="clients_per_round OR"):
        FederationConfig(clients_per_round=2, client_fraction=0.5)
    with pytest.raises(ConfigError, match="exactly one of"):
        FederationConfig(local_steps=4, local_epochs=2)
    assert FederationConfig(local_steps=None, local_epochs=None).local_steps == 8


def test_missing_and_bad_toml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[federation\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(bad)


def test_unknown_preset_lists_available() -> None:
    with pytest.raises(ConfigError, match=r"available: .*default"):
        load_preset("nope")


def test_duplicate_run_names() -> None:
    with pytest.raises(ConfigError, match="unique"):
        from_mapping(AuditConfig, {"runs": [{"name": "a"}, {"name": "a"}]})


def test_canary_clients_must_exist() -> None:
    with pytest.raises(ConfigError, match="do not exist"):
        from_mapping(AuditConfig, {"data": {"canaries": {"per_client": 1, "clients": [9]}},
                                   "federation": {"clients": 4}})


@given(rounds=st.integers(1, 1000), clients=st.integers(1, 64), seed=st.integers(0, 2**31))
def test_overrides_apply(rounds: int, clients: int, seed: int) -> None:
    cfg = apply_overrides(AuditConfig(), federation__rounds=rounds, federation__clients=clients,
                          seed=seed, device=None)
    assert (cfg.federation.rounds, cfg.federation.clients, cfg.seed) == (rounds, clients, seed)
    assert cfg.device == AuditConfig().device


def test_sampled_per_round() -> None:
    assert FederationConfig(clients=10).sampled_per_round == 10
    assert FederationConfig(clients=10, clients_per_round=3).sampled_per_round == 3
    assert FederationConfig(clients=10, client_fraction=0.25).sampled_per_round == 2
    assert FederationConfig(clients=3, client_fraction=0.01).sampled_per_round == 1


def _mixed_runs() -> AuditConfig:
    data = tiny_config_dict()
    data["runs"] = [
        {"name": "plain", "protocol": "plain"},
        {"name": "sample", "protocol": "plain", "dp": "sample", "epsilon": 8.0},
        {"name": "user", "protocol": "secagg+", "dp": "user",
         "dp_params": {"noise_multiplier": 1.5}},
    ]
    return from_mapping(AuditConfig, data)


@pytest.mark.parametrize("values", [
    {"runs.epsilon": 3.0},
    {"runs.dp": "user", "runs.epsilon": 3.0},
    {"runs.dp": "none"},
    {"runs.dp": "sample", "runs.epsilon": 2.0},
    {"runs.protocol": "secagg+"},
    {"runs.protocol_params.threshold": 2},
    {"federation.lr": 1e-3},
    {"model.lora.rank": 4},
    {"attacks.client_canaries": 8},
    {"seed": 7},
    {"seed": 3, "federation.lr": 1e-2, "runs.dp": "user", "runs.epsilon": 4.0},
])
def test_override_gives_the_config_of_a_grid_cell(values: dict[str, object]) -> None:
    base = _mixed_runs()
    assert override(base, values) == apply_cell(base, values)
    where = f"grid cell {cell_label(values)}"
    assert override(base, values, where=where) == apply_cell(base, values)


@pytest.mark.parametrize("values", [
    {"federation.lrr": 1e-3},
    {"runs.protocoll": "plain"},
    {"federation.rounds": -1},
    {"runs.dp": "user", "seed": 1},
])
def test_override_fails_like_a_grid_cell(values: dict[str, object]) -> None:
    base = _mixed_runs()
    with pytest.raises(ConfigError) as cell_error:
        apply_cell(base, values)
    with pytest.raises(ConfigError) as plain:
        override(base, values)
    with pytest.raises(ConfigError) as prefixed:
        override(base, values, where=f"grid cell {cell_label(values)}")
    assert str(prefixed.value) == str(cell_error.value)
    assert str(cell_error.value) == f"grid cell {cell_label(values)}: {plain.value}"


def test_override_warns_like_a_grid_cell_when_no_run_uses_dp(
    caplog: pytest.LogCaptureFixture,
) -> None:
    base = from_mapping(AuditConfig, tiny_config_dict())
    values = {"runs.epsilon": 3.0}
    with caplog.at_level("WARNING"):
        assert override(base, values, where="grid cell runs.epsilon=3") == base
        apply_cell(base, values)
    assert [r.getMessage() for r in caplog.records] == [
        "grid cell runs.epsilon=3: runs.epsilon=3 sets no run (no run uses DP there)"] * 2


def test_override_sets_tables_and_drops_free_entries() -> None:
    base = from_mapping(AuditConfig, {"runs": [
        {"name": "s", "protocol": "secagg+", "protocol_params": {"threshold": 2}}]})
    cleared = override(base, {"runs.protocol_params.threshold": None})
    assert cleared.runs[0].protocol_params == {}
    lora = override(base, {"model.lora": {"rank": 2, "target_modules": ("q_proj",)}})
    assert lora.model.lora.rank == 2 and lora.model.lora.target_modules == ("q_proj",)
    assert base.model.lora.rank != 2  # the base is untouched


def test_population_defaults_to_organisations_and_takes_users() -> None:
    assert AuditConfig().data.population == "organisations"
    cfg = from_mapping(AuditConfig, {"data": {"population": "users", "records_per_client": 8},
                                     "federation": {"clients": 1000}})
    assert cfg.data.population == "users" and cfg.federation.clients == 1000
    assert from_mapping(AuditConfig, to_dict(cfg)) == cfg


@pytest.mark.parametrize(
    ("data", "clients", "message"),
    [
        ({"population": "devices"}, 8, r"data.population must be one of organisations, users"),
        ({"population": "users", "records_per_client": 1}, 8, r">= 2 \(each user needs"),
        ({"population": "users", "source": "notes.jsonl"}, 8, "built-in cross-device"),
        ({"population": "users", "partition": "iid"}, 8, "one client per user"),
        ({"population": "users", "partition_by": "label"}, 8, "partition_by = 'key'"),
        ({"population": "users"}, 1_000_001, "at most 1,000,000"),
    ],
)
def test_population_is_checked(data: dict[str, object], clients: int, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        from_mapping(AuditConfig, {"data": data, "federation": {"clients": clients}})


def test_local_epochs_alone_replaces_the_default_steps() -> None:
    fed = from_mapping(AuditConfig, {"federation": {"local_epochs": 2}}).federation
    assert (fed.local_steps, fed.local_epochs) == (None, 2)
    assert from_mapping(AuditConfig, {}).federation.local_steps == 8
    with pytest.raises(ConfigError, match="exactly one"):
        from_mapping(AuditConfig, {"federation": {"local_epochs": 2, "local_steps": 3}})


def test_overriding_local_steps_replaces_the_presets_local_epochs() -> None:
    default = load_preset("default")
    assert default.federation.local_epochs == 2
    steps = override(default, {"federation.local_steps": 3}).federation
    assert (steps.local_steps, steps.local_epochs) == (3, None)
    epochs = override(override(default, {"federation.local_steps": 3}),
                      {"federation.local_epochs": 1}).federation
    assert (epochs.local_steps, epochs.local_epochs) == (None, 1)
    with pytest.raises(ConfigError, match="exactly one"):
        override(default, {"federation.local_steps": 3, "federation.local_epochs": 1})
