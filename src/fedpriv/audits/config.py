"""Typed, frozen audit configuration: what one ``fedpriv audit`` runs.

An :class:`AuditConfig` is built from a TOML file (a preset in ``audits/`` or the
user's own), then CLI flags and grid cells are applied on top with :func:`override`
(dotted keys, ``runs.KEY`` for every run).
Every field is type-checked and range-checked when the object is built; unknown
keys are rejected with the list of valid ones, so a misspelt key fails before
any model is loaded.  Building from a mapping is generic over the dataclasses
below (:func:`from_mapping`), so a field added to a dataclass is at once
readable from TOML and written back by :func:`to_dict`.
"""

from __future__ import annotations

import dataclasses
import logging
import sys
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar, Union

from fedpriv.data.canaries import AUDIT_CANARY_KINDS
from fedpriv.data.population import DEFAULT_POPULATION, MAX_USERS, POPULATIONS
from fedpriv.dp.config import DISTRIBUTED_PROTOCOLS, DPConfig, make_dp_config
from fedpriv.errors import ConfigError
from fedpriv.lora import LoraSettings

TRAINERS = ("auto", "sequential", "batched")
"""``federation.trainer``: ``batched`` trains a round's clients together
(:mod:`fedpriv.train.batched`), ``sequential`` one after another, ``auto`` batched
whenever the model and run allow it."""

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

logger = logging.getLogger(__name__)

BUILTIN_DATA = "builtin"
PARTITION_SCHEMES = ("iid", "dirichlet", "natural")
PROTOCOL_NAMES_HINT = "see `fedpriv protocols` for the list"


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigError(message)


@dataclass(frozen=True)
class ModelConfig:
    """Which base model to fine-tune and how."""

    name: str = "builtin:tiny-llama"
    max_length: int = 128
    lora: LoraSettings = field(default_factory=LoraSettings)

    def __post_init__(self) -> None:
        _check(bool(self.name.strip()), "model.name is empty; use 'builtin:tiny-llama' or a path")
        _check(8 <= self.max_length <= 65536,
               f"model.max_length must be in [8, 65536] tokens, got {self.max_length}")


@dataclass(frozen=True)
class CanaryConfig:
    """Canaries inserted into chosen clients' training data."""

    format: str = "account"
    per_client: int = 0
    clients: tuple[int, ...] = (0,)
    repetitions: int = 1

    def __post_init__(self) -> None:
        _check(self.per_client >= 0,
               f"data.canaries.per_client must be >= 0, got {self.per_client}")
        _check(self.repetitions >= 1,
               f"data.canaries.repetitions must be >= 1, got {self.repetitions}")
        _check(all(c >= 0 for c in self.clients),
               f"data.canaries.clients must be client indices >= 0, got {list(self.clients)}")


@dataclass(frozen=True)
class DataConfig:
    """Where client data comes from and how it is split.

    ``population`` picks the built-in corpus's clients: ``"organisations"``
    (cross-silo: ``federation.clients`` organisations, each with
    ``records_per_client`` documents about its own people) or ``"users"``
    (cross-device: ``federation.clients`` users, each one client with
    ``records_per_client`` documents about themselves).
    """

    source: str = BUILTIN_DATA
    population: str = DEFAULT_POPULATION
    format: str | None = None
    text_field: str = "text"
    key_field: str | None = None
    label_field: str | None = None
    records_per_client: int = 120
    holdout_fraction: float = 0.2
    partition: str = "natural"
    partition_by: str = "key"
    dirichlet_alpha: float = 0.5
    canaries: CanaryConfig = field(default_factory=CanaryConfig)

    def __post_init__(self) -> None:
        _check(self.population in POPULATIONS,
               f"data.population must be one of {', '.join(POPULATIONS)}; "
               f"got '{self.population}'")
        per_client = "each user" if self.population == "users" else "each client"
        _check(self.records_per_client >= 2,
               f"data.records_per_client must be >= 2 ({per_client} needs a record to train on "
               f"and one held out as a non-member), got {self.records_per_client}")
        _check(0 < self.holdout_fraction < 1,
               f"data.holdout_fraction must be in (0, 1), got {self.holdout_fraction}")
        _check(self.partition in PARTITION_SCHEMES,
               f"data.partition must be one of {', '.join(PARTITION_SCHEMES)}; "
               f"got '{self.partition}'")
        _check(self.partition_by in ("key", "label"),
               f"data.partition_by must be 'key' or 'label', got '{self.partition_by}'")
        _check(self.dirichlet_alpha > 0,
               f"data.dirichlet_alpha must be > 0, got {self.dirichlet_alpha}")
        _check(bool(self.text_field), "data.text_field is empty")
        if self.population == "users":
            _check(self.is_builtin,
                   "data.population = 'users' is the built-in cross-device population; with "
                   f"a data file ('{self.source}') leave data.population = 'organisations' and "
                   "set data.key_field with partition = 'natural' for one client per user")
            _check(self.partition == "natural" and self.partition_by == "key",
                   "data.population = 'users' makes one client per user: use partition = "
                   "'natural' with partition_by = 'key' (the defaults), got partition = "
                   f"'{self.partition}', partition_by = '{self.partition_by}'")

    @property
    def is_builtin(self) -> bool:
        """Whether the built-in synthetic private-records corpus is used."""
        return self.source == BUILTIN_DATA

    def check_source(self) -> None:
        """Fail early, with the path, when a data file does not exist."""
        if self.is_builtin or self.source.startswith("hf:"):
            return
        path = Path(self.source)
        _check(path.exists(), f"data file '{self.source}' does not exist; pass an existing "
               "JSONL/CSV/text file with --data, or use the built-in corpus")


DEFAULT_LOCAL_STEPS = 8
"""Local steps per round when a config sets neither ``local_steps`` nor ``local_epochs``."""


@dataclass(frozen=True)
class FederationConfig:
    """The federated training loop: clients, rounds, local work."""

    clients: int = 8
    clients_per_round: int | None = None
    client_fraction: float | None = None
    rounds: int = 10
    local_steps: int | None = None
    """Optimiser steps per client per round (8 when neither this nor ``local_epochs`` is set)."""
    local_epochs: int | None = None
    """Passes over each client's data per round, instead of ``local_steps`` (DP-SGD:
    ``ceil(epochs / q)`` Poisson-sampled steps)."""
    batch_size: int = 16
    lr: float = 3e-3
    weight_decay: float = 0.0
    max_grad_norm: float | None = 1.0
    optimizer: str = "adamw"
    """Clients' local optimiser: ``adamw`` or ``sgd`` (FedSGD with one local step)."""
    server_lr: float = 1.0
    eval_every: int = 1
    eval_batch_size: int = 32
    dropout: float = 0.0
    trainer: str = "auto"
    """How clients train locally: ``auto`` (batched when the run allows it), ``batched``
    (many clients in one forward/backward, :mod:`fedpriv.train.batched`) or ``sequential``."""
    memory_budget_mb: float = 2048.0
    """Batched trainer: estimated activation memory of one chunk of clients, in MiB."""
    share_training: bool = True
    """Runs without DP that differ only by an exact aggregation protocol (``plain``,
    ``secagg``, ``secagg+``, ``ckks``) train one trajectory: each round the same client
    updates go through every such protocol, whose aggregate must match (else that run
    trains on its own); each run keeps its own server view, cost and attacks."""

    def __post_init__(self) -> None:
        _check(self.clients >= 1, f"federation.clients must be >= 1, got {self.clients}")
        _check(self.rounds >= 1, f"federation.rounds must be >= 1, got {self.rounds}")
        _check(self.clients_per_round is None or self.client_fraction is None,
               "set federation.clients_per_round OR federation.client_fraction, not both")
        if self.clients_per_round is not None:
            _check(1 <= self.clients_per_round <= self.clients,
                   f"federation.clients_per_round must be in [1, clients={self.clients}], "
                   f"got {self.clients_per_round}")
        if self.client_fraction is not None:
            _check(0 < self.client_fraction <= 1,
                   f"federation.client_fraction must be in (0, 1], got {self.client_fraction}")
        if self.local_steps is None and self.local_epochs is None:
            object.__setattr__(self, "local_steps", DEFAULT_LOCAL_STEPS)
        _check((self.local_steps is None) != (self.local_epochs is None),
               "set exactly one of federation.local_steps and federation.local_epochs")
        _check(self.local_steps is None or self.local_steps >= 1,
               f"federation.local_steps must be >= 1, got {self.local_steps}")
        _check(self.local_epochs is None or self.local_epochs >= 1,
               f"federation.local_epochs must be >= 1, got {self.local_epochs}")
        _check(self.batch_size >= 1, f"federation.batch_size must be >= 1, got {self.batch_size}")
        _check(self.eval_batch_size >= 1,
               f"federation.eval_batch_size must be >= 1, got {self.eval_batch_size}")
        _check(self.lr > 0, f"federation.lr must be > 0, got {self.lr}")
        _check(self.weight_decay >= 0,
               f"federation.weight_decay must be >= 0, got {self.weight_decay}")
        _check(self.max_grad_norm is None or self.max_grad_norm > 0,
               f"federation.max_grad_norm must be > 0 (or left out), got {self.max_grad_norm}")
        _check(self.optimizer in ("adamw", "sgd"),
               f"federation.optimizer must be 'adamw' or 'sgd', got {self.optimizer!r}")
        _check(self.server_lr > 0, f"federation.server_lr must be > 0, got {self.server_lr}")
        _check(self.eval_every >= 1, f"federation.eval_every must be >= 1, got {self.eval_every}")
        _check(0 <= self.dropout < 1,
               f"federation.dropout must be a fraction in [0, 1), got {self.dropout}")
        _check(self.trainer in TRAINERS,
               f"federation.trainer must be one of {', '.join(TRAINERS)}, got {self.trainer!r}")
        _check(isinstance(self.memory_budget_mb, (int, float))
               and not isinstance(self.memory_budget_mb, bool) and self.memory_budget_mb > 0,
               f"federation.memory_budget_mb must be a number of MiB > 0, got "
               f"{self.memory_budget_mb!r}")

    @property
    def sampled_per_round(self) -> int:
        """How many clients take part in each round."""
        if self.clients_per_round is not None:
            return self.clients_per_round
        if self.client_fraction is not None:
            return max(1, round(self.client_fraction * self.clients))
        return self.clients


@dataclass(frozen=True)
class RunConfig:
    """One configuration to train and measure; an audit compares several."""

    name: str
    protocol: str = "plain"
    protocol_params: dict[str, Any] = field(default_factory=dict)
    dp: str = "none"
    """``none``, ``sample`` (DP-SGD in each client) or ``user`` (DP-FedAvg)."""
    epsilon: float | None = None
    """Target ε of the whole run (DP on); the noise multiplier is solved from it."""
    delta: float | None = None
    """δ of the guarantee (default 1e-5)."""
    dp_params: dict[str, Any] = field(default_factory=dict)
    """The DP mechanism's other knobs (see :class:`fedpriv.dp.config.DPConfig`)."""
    ffa: bool | None = None

    def __post_init__(self) -> None:
        _check(bool(self.name) and all(c.isalnum() or c in "-_+." for c in self.name),
               f"run name '{self.name}' must be non-empty and use only letters, digits, - _ + .")
        try:
            dp = self.dp_config()
        except ConfigError as err:
            raise ConfigError(f"run '{self.name}': {err}") from None
        if dp.mode == "distributed":
            _check(self.protocol in DISTRIBUTED_PROTOCOLS,
                   f"run '{self.name}': dp 'distributed' needs secure aggregation (protocol "
                   f"{' or '.join(DISTRIBUTED_PROTOCOLS)}), not '{self.protocol}'")
            fixed = sorted({"clip", "resolution", "clip_mode"} & set(self.protocol_params))
            _check(not fixed, f"run '{self.name}': dp 'distributed' sets the secure sum's "
                   f"{', '.join(fixed)} itself; remove them from protocol_params")

    def dp_config(self) -> DPConfig:
        """Return the run's validated DP configuration."""
        return make_dp_config(self.dp, epsilon=self.epsilon, delta=self.delta,
                              params=self.dp_params)


@dataclass(frozen=True)
class AttackConfig:
    """Optional, costlier measurements (both off by default except where a preset turns them on).

    ``shadow_models``: reference models trained like the target on a public
    split (built-in data: the same organisations' other records), for the LiRA-offline
    and RMIA membership scores.  ``epsilon_canaries``: the ``m`` canaries of
    the one-run audit (Steinke et al. 2023) that gives the empirical ε lower
    bound; each is included in training with probability ½.  ``epsilon_canary_kind``:
    what those canaries are made of (:data:`~fedpriv.data.canaries.AUDIT_CANARY_KINDS`;
    ``words`` by default: random words of the corpus; ``rare-tokens``: words
    that are one token of the model's tokenizer, rarest in the clients' data
    first, which LoRA on attention only memorises *less* — their output
    embeddings stay frozen and untrained).  ``epsilon_canary_repetitions``:
    copies of each included canary in its client's data (default 1); under
    sample-level DP the audit's unit is then a group of that many records and
    its reference the group ε (:func:`fedpriv.dp.accounting.epsilon_group`).  ``client_canaries``:
    canary clients (Andrew et al. 2024) planted in user-level and distributed DP
    runs for the client-level one-run audit (each included with probability ½;
    ignored by runs without client-level DP).  ``gradient_canaries``:
    white-box gradient (Dirac) canary records of client 0 for the example-level
    audit of sample-level DP runs (ignored by the others).  ``inversion``: the
    gradient-inversion probe on what the server sees (on by default).
    """

    shadow_models: int = 0
    epsilon_canaries: int = 0
    epsilon_confidence: float = 0.95
    inversion: bool = True
    client_canaries: int = 0
    gradient_canaries: int = 0
    epsilon_canary_kind: str = "words"
    epsilon_canary_repetitions: int = 1

    def __post_init__(self) -> None:
        _check(0 <= self.shadow_models <= 16,
               f"attacks.shadow_models must be in [0, 16], got {self.shadow_models}")
        _check(self.epsilon_canaries == 0 or 2 <= self.epsilon_canaries <= 100_000,
               "attacks.epsilon_canaries must be 0 (off) or in [2, 100000], got "
               f"{self.epsilon_canaries}")
        _check(0.5 <= self.epsilon_confidence < 1,
               f"attacks.epsilon_confidence must be in [0.5, 1), got {self.epsilon_confidence}")
        _check(self.epsilon_canary_kind in AUDIT_CANARY_KINDS,
               f"attacks.epsilon_canary_kind must be one of {', '.join(AUDIT_CANARY_KINDS)}, "
               f"got {self.epsilon_canary_kind!r}")
        _check(1 <= self.epsilon_canary_repetitions <= 64,
               "attacks.epsilon_canary_repetitions must be in [1, 64], got "
               f"{self.epsilon_canary_repetitions}")
        _check(self.gradient_canaries == 0 or 2 <= self.gradient_canaries <= 1_000_000,
               "attacks.gradient_canaries must be 0 (off) or in [2, 1000000], got "
               f"{self.gradient_canaries}")
        _check(self.client_canaries == 0 or 2 <= self.client_canaries <= 1_000_000,
               "attacks.client_canaries must be 0 (off) or in [2, 1000000], got "
               f"{self.client_canaries}")


@dataclass(frozen=True)
class AuditConfig:
    """A whole audit: shared data, model and federation settings, and the runs to compare."""

    name: str = "audit"
    seed: int = 0
    device: str = "auto"
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    federation: FederationConfig = field(default_factory=FederationConfig)
    attacks: AttackConfig = field(default_factory=AttackConfig)
    runs: tuple[RunConfig, ...] = (RunConfig(name="plain"),)

    def __post_init__(self) -> None:
        _check(self.seed >= 0, f"seed must be >= 0, got {self.seed}")
        _check(len(self.runs) >= 1, "an audit needs at least one [[runs]] entry")
        names = [r.name for r in self.runs]
        dupes = sorted({n for n in names if names.count(n) > 1})
        _check(not dupes, f"run names must be unique; repeated: {', '.join(dupes)}")
        if self.data.population == "users":
            _check(self.federation.clients <= MAX_USERS,
                   f"federation.clients is the number of users with data.population = 'users' "
                   f"and must be at most {MAX_USERS:,}, got {self.federation.clients:,}")
        too_many = [c for c in self.data.canaries.clients if c >= self.federation.clients]
        _check(not too_many or self.data.canaries.per_client == 0,
               f"data.canaries.clients {too_many} do not exist with "
               f"federation.clients={self.federation.clients}")
        _check(self.attacks.shadow_models == 0 or self.data.is_builtin,
               "attacks.shadow_models needs a public split of the data; this version draws it "
               "from the built-in corpus only: set attacks.shadow_models = 0 with --data")


# --------------------------------------------------------------------------- building

T = TypeVar("T")


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp).replace("typing.", ""))


def _coerce(value: Any, tp: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        non_none = [a for a in args if a is not type(None)]
        if len(non_none) == 1:
            return _coerce(value, non_none[0], where)
        raise ConfigError(f"{where}: unsupported union type {tp}")  # pragma: no cover
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where} must be a table of settings, got {value!r}")
        return from_mapping(typing.cast(type, tp), value, where)
    if origin is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where} must be a table of settings, got {value!r}")
        return dict(value)
    if origin is tuple:
        item_tp = typing.get_args(tp)[0]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where} must be a list, got {value!r}")
        return tuple(_coerce(v, item_tp, f"{where}[{i}]") for i, v in enumerate(value))
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where} must be true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where} must be an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where} must be a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where} must be a string, got {value!r}")
        return value
    raise ConfigError(f"{where}: unsupported type {_type_name(tp)}")  # pragma: no cover


def from_mapping(cls: type[T], data: Mapping[str, Any], where: str = "") -> T:
    """Build the frozen dataclass ``cls`` from a mapping, rejecting unknown keys.

    ``where`` is the dotted path of ``data`` inside the whole config, used in messages.
    """
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    prefix = f"{where}." if where else ""
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(
            f"unknown config key '{prefix}{unknown[0]}'; valid keys"
            f"{' in [' + where + ']' if where else ''}: {', '.join(sorted(fields))}"
        )
    kwargs: dict[str, Any] = {}
    for name, value in data.items():
        if name == "runs" and cls is AuditConfig:
            if not isinstance(value, list):
                raise ConfigError("runs must be an array of tables ([[runs]])")
            kwargs[name] = tuple(
                from_mapping(RunConfig, v, f"runs[{i}]") if isinstance(v, Mapping) else
                _raise(f"runs[{i}] must be a table") for i, v in enumerate(value)
            )
            continue
        kwargs[name] = _coerce(value, hints[name], prefix + name)
    missing = [
        n for n, f in fields.items()
        if n not in kwargs and f.default is dataclasses.MISSING
        and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        raise ConfigError(f"missing required config key '{prefix}{missing[0]}'")
    return cls(**kwargs)


def _raise(message: str) -> Any:
    raise ConfigError(message)


def to_dict(config: Any) -> Any:
    """Turn a config dataclass into plain JSON/TOML-able data (tuples become lists)."""
    if dataclasses.is_dataclass(config) and not isinstance(config, type):
        return {f.name: to_dict(getattr(config, f.name)) for f in dataclasses.fields(config)}
    if isinstance(config, (tuple, list)):
        return [to_dict(v) for v in config]
    if isinstance(config, Mapping):
        return {k: to_dict(v) for k, v in config.items()}
    return config


def load_config(path: str | Path) -> AuditConfig:
    """Read an audit configuration from a TOML file."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file '{path}' does not exist; pass a TOML file or use "
                          "--preset NAME (see `fedpriv presets`)")
    try:
        data = tomllib.loads(p.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"config file '{path}' is not valid TOML: {err}") from None
    return from_mapping(AuditConfig, data)


def preset_dirs() -> list[Path]:
    """Folders searched for presets: the installed package data, then the source tree."""
    here = Path(__file__).resolve()
    candidates = [here.parents[1] / "_presets", here.parents[3] / "audits"]
    return [d for d in candidates if d.is_dir()]


def available_presets() -> list[str]:
    """Names of the presets shipped with fedpriv."""
    names = {p.stem for d in preset_dirs() for p in d.glob("*.toml")}
    return sorted(names)


def load_preset(name: str) -> AuditConfig:
    """Load a shipped preset (``default``, ``quick``, …) by name."""
    for d in preset_dirs():
        candidate = d / f"{name}.toml"
        if candidate.is_file():
            return load_config(candidate)
    raise ConfigError(f"unknown preset '{name}'; available: {', '.join(available_presets())}")


# ------------------------------------------------------------------------- overriding

RUNS_PREFIX = "runs."
"""Keys under this prefix set a setting of every run (``runs.epsilon``, ``runs.dp``, …)."""
_FREE_TABLES = ("protocol_params", "dp_params")


def format_value(value: Any) -> str:
    """Show an override value compactly: ``3`` for 3.0, ``0.001``, ``none``, ``true``."""
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() and abs(value) < 1e15 else repr(value)
    return str(value)


def _set_path(node: dict[str, Any], parts: Sequence[str], value: Any) -> None:
    """Set the dotted path ``parts`` in the mapping ``node``, creating tables on the way."""
    for part in parts[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            child = node[part] = {}
        node = child
    if value is None and len(parts) >= 2 and parts[-2] in _FREE_TABLES:
        node.pop(parts[-1], None)  # a free-table entry set to none falls back to its default
    else:
        node[parts[-1]] = to_dict(value)  # tuples become lists, tables are copied


def _run_key_order(key: str) -> tuple[int, str]:
    # dp first: switching a run's DP mode resets its DP settings, which the others then set
    return (0 if key == "runs.dp" else 1, key)


def _set_on_run(run: dict[str, Any], key: str, value: Any) -> bool:
    """Set ``key`` (``runs.…``) on one run mapping; return whether it applied to that run."""
    parts = key[len(RUNS_PREFIX):].split(".")
    if parts == ["dp"]:
        if value != run.get("dp", "none"):
            run["dp_params"] = {}  # mode-specific knobs of the old mode would be rejected
            if value == "none":
                run["epsilon"] = None
        run["dp"] = value
        return True
    if parts == ["epsilon"]:
        if run.get("dp", "none") == "none":
            return False  # the target ε of every DP run
        run["epsilon"] = value
        run.setdefault("dp_params", {}).pop("noise_multiplier", None)
        return True
    _set_path(run, parts, value)
    return True


def _override_mapping(data: dict[str, Any], values: Mapping[str, Any], *, where: str = "") -> None:
    """Apply the dotted-key ``values`` to ``data`` (a config as :func:`to_dict` gives it), in place.

    The mapping is not validated here; :func:`override` does that.  ``where``
    names the overrides in the warning of a ``runs.*`` key that sets no run.
    """
    for key, value in values.items():
        if not key.startswith(RUNS_PREFIX):
            _set_path(data, key.split("."), value)
    # local_steps and local_epochs are alternatives: setting one alone replaces the other.
    for chosen, other in (("local_steps", "local_epochs"), ("local_epochs", "local_steps")):
        if (f"federation.{chosen}" in values and values[f"federation.{chosen}"] is not None
                and f"federation.{other}" not in values):
            data.setdefault("federation", {})[other] = None
    for key in sorted((k for k in values if k.startswith(RUNS_PREFIX)), key=_run_key_order):
        applied = [_set_on_run(run, key, values[key]) for run in data["runs"]]
        if not any(applied):
            logger.warning("%s%s=%s sets no run (no run uses DP there)",
                           f"{where}: " if where else "", key, format_value(values[key]))


def override(config: AuditConfig, values: Mapping[str, Any], *, where: str = "") -> AuditConfig:
    """Return ``config`` with the dotted-key ``values`` set, validated by :func:`from_mapping`.

    A key is a dotted path into the config (``federation.lr``, ``model.lora.rank``,
    ``seed``, ``data.canaries``) and its value replaces what is there; an entry
    of a free table (``runs.protocol_params.NAME``, ``runs.dp_params.NAME``)
    set to ``None`` is removed, so it falls back to its default.  Keys under
    ``runs.`` apply to every run, ``runs.dp`` first: it resets a run's
    ``dp_params`` when it changes the run's mode (and its ``epsilon`` when the
    mode becomes ``none``); ``runs.epsilon`` sets the target ε of the DP runs
    only and drops their ``noise_multiplier``, and a warning says when no run
    uses DP.  ``federation.local_steps`` alone replaces a config's ``local_epochs``
    and the other way round (they are alternatives).  ``where`` (e.g. ``grid cell
    federation.lr=0.001``) prefixes that warning and the message of any
    :class:`ConfigError`.
    """
    data = to_dict(config)
    _override_mapping(data, values, where=where)
    try:
        return from_mapping(AuditConfig, data)
    except ConfigError as err:
        if not where:
            raise
        raise ConfigError(f"{where}: {err}") from None


def apply_overrides(config: AuditConfig, **overrides: Any) -> AuditConfig:
    """:func:`override` with keyword keys, ``__`` for the dots (``federation__rounds=3``).

    ``None`` values are ignored, so callers can pass every optional flag straight through.
    """
    values = {key.replace("__", "."): value for key, value in overrides.items()
              if value is not None}
    return override(config, values)


def run_flag_values(
    config: AuditConfig, *, protocol: str | None = None, dp: str | None = None,
    epsilon: float | None = None,
) -> dict[str, Any]:
    """Translate the CLI's ``--protocol`` / ``--dp`` / ``--epsilon`` into :func:`override` values.

    ``protocol`` replaces the runs by a single run with that protocol (named after
    it and the DP mode).  ``dp`` is ``runs.dp``; besides, a run whose mode it
    changes is renamed to say so (``plain`` under ``--dp user`` becomes
    ``plain-user-dp``) and loses the ε of its old mode.  ``epsilon`` is
    ``runs.epsilon``.
    """
    values: dict[str, Any] = {}
    if protocol is not None:
        mode = dp or "none"
        values["runs"] = [{"name": protocol if mode == "none" else f"{protocol}-{mode}-dp",
                           "protocol": protocol}]
    elif dp is not None and any(run.dp != dp for run in config.runs):
        suffix = f"-{'no' if dp == 'none' else dp}-dp"
        values["runs"] = [
            to_dict(run) if run.dp == dp else {**to_dict(run), "name": run.name + suffix,
                                               "epsilon": None}
            for run in config.runs
        ]
    if dp is not None:
        values["runs.dp"] = dp
    if epsilon is not None:
        values["runs.epsilon"] = epsilon
    return values


def override_runs(
    config: AuditConfig, *, protocol: str | None = None, dp: str | None = None,
    epsilon: float | None = None, deterministic: bool = False,
) -> AuditConfig:
    """Apply ``--protocol`` / ``--dp`` / ``--epsilon`` / ``--dp-deterministic`` to ``config``.

    The first three are :func:`run_flag_values` given to :func:`override`;
    ``deterministic`` also sets ``dp_params.deterministic`` on every DP run
    (debugging: noise from the seed).  ``--epsilon`` and ``--dp-deterministic``
    with no DP run among the resulting runs are refused.
    """
    if protocol is None and dp is None and epsilon is None and not deterministic:
        return config
    modes = [dp or "none"] if protocol is not None else [
        run.dp if dp is None else dp for run in config.runs]
    if epsilon is not None and all(mode == "none" for mode in modes):
        raise ConfigError("--epsilon needs a DP run: add --dp sample or --dp user")
    if deterministic and all(mode == "none" for mode in modes):
        raise ConfigError("--dp-deterministic needs a DP run: add --dp sample or --dp user")
    data = to_dict(config)
    _override_mapping(data, run_flag_values(config, protocol=protocol, dp=dp, epsilon=epsilon))
    if deterministic:  # dp_params.deterministic of the DP runs only (runs.dp has reset theirs)
        for run in data["runs"]:
            if run.get("dp", "none") != "none":
                run.setdefault("dp_params", {})["deterministic"] = True
    return from_mapping(AuditConfig, data)
