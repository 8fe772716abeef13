"""What a run's DP is, and the concrete plan it resolves to before training.

:class:`DPConfig` is the frozen, validated DP part of a run (from TOML
``[[runs]]`` keys ``dp``, ``epsilon``, ``delta`` and ``dp_params``, or from
``--dp`` / ``--epsilon``).  :func:`plan_dp` turns it into a :class:`DPPlan` once
the clients' data sizes and the client schedule are known: the sampling rates,
the number of steps each unit of privacy is exposed to, the noise multiplier
(given, or solved from the target ε with the chosen accountant) and the ε the run
will have spent — so a run that cannot reach its target fails before training.

The unit of privacy is one training example for ``sample`` (DP-SGD inside each
client; the reported ε is the worst client's) and one client's whole dataset for
``user`` (DP-FedAvg, central noise) and ``distributed`` (DP-FedAvg whose noise the
clients add as Skellam shares before secure aggregation, so the server never sees
a sum without it).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from fedpriv.errors import ConfigError

DP_MODES = ("none", "sample", "user", "distributed")
DISTRIBUTED_PROTOCOLS = ("secagg", "secagg+")
"""Protocols distributed DP runs under: it needs an exact modular secure sum."""
ACCOUNTANTS = ("rdp", "prv")
"""Accountants of :mod:`fedpriv.dp.accounting` (imported lazily: it loads Opacus)."""
CLIPPING_MODES = ("per_sample", "ghost")
DEFAULT_DELTA = 1e-5
DEFAULT_SAMPLE_CLIP = 1.0
"""Per-example gradient clip bound of DP-SGD."""
DEFAULT_USER_CLIP = 0.1
"""L2 bound on a client's update under DP-FedAvg (user and distributed).  The built-in
model's default local training gives update norms of about 2.5, so every update is
clipped; the noise scales with C too, and a small C keeps the noised model near the base
one when there are few clients (with 8 clients at ε = 8, C = 1 drove perplexity from 152
to 9400, C = 0.1 lowered it to 134: see benchmarks/RESULTS.md)."""

_MODE_KEYS = {
    "sample": ("clipping",),
    "user": ("adaptive_clip", "target_quantile", "clip_lr", "count_stddev"),
    "distributed": ("bits", "k_stddevs"),
}
"""Keys of :class:`DPConfig` that apply to one mode only."""


@dataclass(frozen=True)
class DPConfig:
    """A run's differential privacy: the mode, the target, and the mechanism's knobs."""

    mode: str = "none"
    epsilon: float | None = None
    """Target ε for the whole run; the noise multiplier is solved from it."""
    delta: float = DEFAULT_DELTA
    noise_multiplier: float | None = None
    """Give σ directly instead of ``epsilon`` (the report still gives the spent ε)."""
    clip: float | None = None
    """Per-example gradient bound (sample) or per-client update bound (user)."""
    accountant: str = "prv"
    """``prv`` (default: numerical composition, Gopi et al. 2021, the tightest correct
    accountant here, 7–12% below RDP) or ``rdp``; the report gives both."""
    clipping: str = "per_sample"
    """sample: Opacus per-sample gradients (``per_sample``) or ghost clipping (``ghost``)."""
    secure_mode: bool = False
    """sample: Opacus' secure_mode noise (slower); user, distributed: every noise key fresh
    from the OS (a resumed run then differs from an uninterrupted one)."""
    deterministic: bool = False
    """Debugging only: derive the noise and the DP sampling from the public seed instead of
    the run's secret.  The run is reproducible by anyone holding its report, so its ε holds
    only against someone who does not know the seed; the privacy block says so."""
    adaptive_clip: bool = False
    target_quantile: float = 0.5
    clip_lr: float = 0.2
    count_stddev: float | None = None
    bits: int = 20
    """distributed: per-coordinate modulus 2^bits of the secure sum."""
    k_stddevs: float = 8.0
    """distributed: standard deviations of the sum kept inside the modulus (wrap-around)."""
    set_keys: tuple[str, ...] = field(default=(), compare=False, repr=False)
    """Names of the parameters given explicitly (for mode/parameter consistency checks)."""

    def __post_init__(self) -> None:
        if self.mode not in DP_MODES:
            raise ConfigError(f"dp mode '{self.mode}' is not available; valid modes: "
                              f"{', '.join(DP_MODES)}")
        if self.mode == "none":
            given = [k for k in self.set_keys if k not in ("delta", "accountant")]
            if given:
                raise ConfigError(f"{', '.join(given)} given but dp is 'none'; set dp to "
                                  f"'sample' or 'user', or remove them")
            return
        if not (math.isfinite(self.delta) and 0 < self.delta < 1):
            raise ConfigError(f"delta must be in (0, 1), got {self.delta}; 1e-5 is usual, and it "
                              "should be well below 1 / (number of records or clients)")
        if self.accountant not in ACCOUNTANTS:
            raise ConfigError(f"unknown accountant '{self.accountant}'; valid: "
                              f"{', '.join(ACCOUNTANTS)}")
        if (self.epsilon is None) == (self.noise_multiplier is None):
            raise ConfigError(f"dp '{self.mode}' needs exactly one of epsilon (e.g. 8) and "
                              "noise_multiplier; give --epsilon or dp_params.noise_multiplier")
        if self.epsilon is not None and not (math.isfinite(self.epsilon) and self.epsilon > 0):
            raise ConfigError(f"epsilon must be a finite number > 0, got {self.epsilon}")
        if self.noise_multiplier is not None and not (
            math.isfinite(self.noise_multiplier) and self.noise_multiplier > 0
        ):
            raise ConfigError(
                f"dp '{self.mode}' is on but noise_multiplier is {self.noise_multiplier}; with "
                "no noise there is no privacy. Give a noise_multiplier > 0 or an epsilon")
        if self.clip is not None and not (math.isfinite(self.clip) and self.clip > 0):
            raise ConfigError(f"dp clip must be a finite number > 0, got {self.clip}")
        misplaced = [
            k for mode, keys in _MODE_KEYS.items() if mode != self.mode
            for k in keys if k in self.set_keys
        ]
        if misplaced:
            raise ConfigError(f"{', '.join(misplaced)} do(es) not apply to dp '{self.mode}'; "
                              "remove it from dp_params")
        if self.mode == "distributed" and "accountant" in self.set_keys:
            raise ConfigError("dp 'distributed' is accounted with the Skellam RDP bound "
                              "(Agarwal et al. 2021); remove accountant from dp_params")
        if not isinstance(self.deterministic, bool):
            raise ConfigError(f"dp_params.deterministic must be true or false, got "
                              f"{self.deterministic!r}")
        if self.deterministic and self.secure_mode:
            raise ConfigError("dp_params.deterministic and secure_mode contradict each other: "
                              "deterministic derives the noise from the public seed; pick one")
        if self.clipping not in CLIPPING_MODES:
            raise ConfigError(f"dp clipping must be one of {', '.join(CLIPPING_MODES)}, got "
                              f"'{self.clipping}'")

    @property
    def enabled(self) -> bool:
        """Whether the run is differentially private."""
        return self.mode != "none"

    @property
    def uses_secret(self) -> bool:
        """Whether the run's DP randomness comes from a stored per-run secret.

        Not in the deterministic debugging mode (keys from the seed), nor under
        ``secure_mode`` for ``user``/``distributed`` (every key fresh from the OS).
        """
        return self.enabled and not self.deterministic and not (
            self.secure_mode and self.mode in ("user", "distributed"))

    @property
    def effective_clip(self) -> float:
        """The clip bound, with the mode's default when none was given."""
        if self.clip is not None:
            return self.clip
        return DEFAULT_SAMPLE_CLIP if self.mode == "sample" else DEFAULT_USER_CLIP


def make_dp_config(
    mode: str, *, epsilon: float | None = None, delta: float | None = None,
    params: Mapping[str, Any] | None = None,
) -> DPConfig:
    """Build a :class:`DPConfig` from a run's ``dp``, ``epsilon``, ``delta`` and ``dp_params``.

    Unknown ``params`` keys are rejected with the list of valid ones.
    """
    params = dict(params or {})
    names = {f.name for f in dataclasses.fields(DPConfig)} - {"mode", "epsilon", "delta",
                                                                "set_keys"}
    unknown = sorted(set(params) - names)
    if unknown:
        raise ConfigError(f"unknown dp_params key '{unknown[0]}'; valid keys: "
                          f"{', '.join(sorted(names))}")
    kwargs: dict[str, Any] = dict(params)
    set_keys = list(params)
    if epsilon is not None:
        kwargs["epsilon"] = float(epsilon)
        set_keys.append("epsilon")
    if delta is not None:
        kwargs["delta"] = float(delta)
        set_keys.append("delta")
    return DPConfig(mode=mode, set_keys=tuple(set_keys), **kwargs)


@dataclass(frozen=True)
class DPPlan:
    """A DP configuration resolved against the data and schedule of one run."""

    config: DPConfig
    noise_multiplier: float
    clip: float
    epsilon: float
    """ε the whole run spends (the worst client's, for sample-level DP)."""
    sample_rate: float
    """Poisson rate: of examples per local step (sample; the worst client's) or of clients per
    round (user)."""
    steps: int
    """Noised steps the worst-off unit takes part in: local steps over all its rounds (sample)
    or rounds (user)."""
    per_client_epsilon: tuple[float, ...] = ()
    """sample: ε of each client's examples."""
    warnings: tuple[str, ...] = ()
    details: Mapping[str, Any] = field(default_factory=dict)
    """Mode-specific parameters for the report (distributed: bits, scale, wrap-around)."""
    epsilon_by_accountant: Mapping[str, float] = field(default_factory=dict)
    """The same ε from each accountant that applies (``rdp`` and ``prv``), where cheap."""
    replace_one_epsilon: float | None = None
    """user, distributed: ε when one client's data is *replaced* (the sum moves by up to 2C),
    the relation that audit canaries planted inside existing clients realise."""
    noise_scale: float = 1.0
    """Mutation testing of the audit only: the noise actually added is multiplied by this
    while every ε above is still the one for :attr:`noise_multiplier` (a deliberately broken
    implementation the audit must catch).  1 in every real run; the report names any other
    value as the run's ``privacy.mutation``."""

    @property
    def mutation(self) -> str | None:
        """Name the audit's mutation of the noise (None: the real noise), e.g. ``noise/10``."""
        if self.noise_scale == 1:
            return None
        return "no-noise" if self.noise_scale == 0 else f"noise/{1 / self.noise_scale:g}"

    @property
    def accountant(self) -> str:
        """The accountant that produced :attr:`epsilon`."""
        return "skellam-rdp" if self.mode == "distributed" else self.config.accountant

    @property
    def mode(self) -> str:
        """The DP mode."""
        return self.config.mode

    @property
    def relation(self) -> str:
        """The neighbouring relation :attr:`epsilon` is stated for."""
        return "add/remove one record" if self.mode == "sample" else "add/remove one client"

    @property
    def participation_secret(self) -> bool:
        """Whether who was sampled is secret from the report's readers.

        The accountant credits amplification by sampling (examples under ``sample``,
        clients under ``user`` with q < 1); it holds only while nobody knows who was
        drawn, i.e. while the DP randomness is not derived from the public seed.
        """
        return not self.config.deterministic

    def threat_model(self, protocol: str) -> dict[str, Any]:
        """Who the ε protects against under ``protocol``, and who it does not.

        Returned as the report's ``privacy`` fields ``threat_model`` (one line),
        ``protects_against``, ``not_against`` and ``noise_added_by``.
        """
        secure = protocol in DISTRIBUTED_PROTOCOLS or protocol == "ckks"
        readers = "anyone holding the released adapter, report.json, report.md and the logs"
        if self.mode == "sample":
            against = [readers, "the server", "the other clients"]
            not_against = ["the client that holds the record (it trains on it)"]
            added_by = "each client, to every DP-SGD step (local noise)"
            line = ("record-level DP-SGD noise added inside each client: protects each "
                    "training record against the server, the other clients and every reader "
                    "of the model and report")
        elif self.mode == "user":
            against = [readers, "the other clients"]
            seen = ("the sum of the clipped updates, before noise" if secure
                    else "each client's clipped update")
            not_against = [f"the server, which sees {seen}"]
            added_by = "the server, to the aggregate (central noise)"
            line = ("central DP: protects each client's whole dataset against every reader of "
                    f"the released model and report, not against the server ({seen})")
        else:
            against = [readers, "the other clients",
                       "an honest-but-curious server (it sees only the noised secure sum)"]
            not_against = ["a server colluding with clients, which can subtract their noise "
                           "shares", "a server that drops clients below the planned survivors "
                           "(the report's ε is recomputed from the shares that arrived)"]
            added_by = "the clients, as Skellam shares before secure aggregation"
            line = ("distributed DP: each client adds its noise share before secure "
                    "aggregation, so even the server sees only a noised sum")
        if self.config.deterministic:
            caveat = ("deterministic mode: the noise and sampling follow the public seed in "
                      "report.json, so this ε holds only against someone who does not know "
                      "the seed")
            line = f"{line}. {caveat}"
            not_against.append("anyone who knows the seed (deterministic debugging mode)")
        return {"threat_model": line, "protects_against": against,
                "not_against": not_against, "noise_added_by": added_by}

    def to_report(self) -> dict[str, Any]:
        """Return the report's ``dp`` block (the mechanism's parameters)."""
        cfg = self.config
        out: dict[str, Any] = {
            "mode": cfg.mode,
            "noise_multiplier": self.noise_multiplier,
            "clip": self.clip,
            "target_epsilon": cfg.epsilon,
            "sample_rate": self.sample_rate,
            "steps": self.steps,
            "unit": "example" if cfg.mode == "sample" else "client",
        }
        if cfg.mode == "sample":
            out["clipping"] = cfg.clipping
        elif cfg.mode == "user":
            out["adaptive_clip"] = cfg.adaptive_clip
            out["noise"] = "central (added by the server to the aggregate)"
        else:
            out["noise"] = ("distributed (Skellam shares added by each client before secure "
                            "aggregation)")
        out.update(self.details)
        return out


def _solve_and_spend(
    config: DPConfig, stretches: Sequence[tuple[float, int]],
) -> tuple[float, list[float]]:
    """σ (given or the smallest meeting the target for every unit) and each unit's ε."""
    from fedpriv.dp.accounting import GaussianSteps, epsilon_of, solve_noise_multiplier

    delta, accountant = config.delta, config.accountant
    if config.noise_multiplier is not None:
        sigma = config.noise_multiplier
    else:
        target = float(config.epsilon or 0.0)  # DPConfig guarantees one of the two is set
        sigma = max(
            solve_noise_multiplier(target, q, steps, delta, accountant)
            for q, steps in stretches if steps > 0
        )
    spent = [
        epsilon_of([GaussianSteps(sigma, q, steps)], delta, accountant) if steps > 0 else 0.0
        for q, steps in stretches
    ]
    return sigma, spent


def plan_dp(
    config: DPConfig,
    *,
    client_sizes: Sequence[int],
    rounds_per_client: Sequence[int],
    rounds: int,
    clients_per_round: int,
    local_steps: Sequence[int],
    local_sample_rates: Sequence[float],
    adapter_dim: int | None = None,
    dropout: float = 0.0,
) -> DPPlan | None:
    """Resolve ``config`` for a run; ``None`` when DP is off.

    ``rounds_per_client[i]`` is how many rounds client ``i`` trains in,
    ``local_steps[i]`` / ``local_sample_rates[i]`` its DP-SGD steps per round and
    Poisson rate (sample-level DP only).  Distributed DP also needs the adapter's
    length ``adapter_dim`` (its rounding sensitivity grows with it) and plans for
    each round losing the ``dropout`` share of its clients' noise.
    """
    if not config.enabled:
        return None
    from fedpriv.dp.accounting import delta_warning

    warnings: list[str] = []
    if config.mode == "distributed":
        if adapter_dim is None:
            raise ConfigError("distributed DP needs the adapter's size to plan; pass adapter_dim")
        return _plan_distributed(config, num_clients=len(client_sizes), rounds=rounds,
                                 clients_per_round=clients_per_round, dim=adapter_dim,
                                 dropout=dropout)
    if config.mode == "sample":
        stretches = [
            (q, steps * r)
            for q, steps, r in zip(local_sample_rates, local_steps, rounds_per_client, strict=True)
        ]
        if all(steps == 0 for _, steps in stretches):
            raise ConfigError("no client takes a DP-SGD step; raise federation.rounds")
        sigma, spent = _solve_and_spend(config, stretches)
        worst = max(range(len(spent)), key=lambda i: spent[i])
        smallest = min(client_sizes)
        message = delta_warning(config.delta, smallest, "training record")
        if message:
            warnings.append(message)
        plan = DPPlan(config=config, noise_multiplier=sigma, clip=config.effective_clip,
                      epsilon=spent[worst], sample_rate=stretches[worst][0],
                      steps=stretches[worst][1], per_client_epsilon=tuple(spent),
                      warnings=tuple(warnings),
                      epsilon_by_accountant=_both(sigma, *stretches[worst], config.delta))
    else:
        num_clients = len(client_sizes)
        q = clients_per_round / num_clients
        sigma, spent = _solve_and_spend(config, [(q, rounds)])
        if config.adaptive_clip:  # fail before training when the count noise cannot split σ
            from fedpriv.dp.user import COUNT_STDDEV_FRACTION, update_noise_multiplier

            update_noise_multiplier(sigma, config.count_stddev if config.count_stddev is not None
                                    else COUNT_STDDEV_FRACTION * clients_per_round)
        message = delta_warning(config.delta, num_clients, "client")
        if message:
            warnings.append(message)
        plan = DPPlan(config=config, noise_multiplier=sigma, clip=config.effective_clip,
                      epsilon=spent[0], sample_rate=q, steps=rounds, warnings=tuple(warnings),
                      replace_one_epsilon=replace_one_epsilon(sigma, q, rounds, config),
                      epsilon_by_accountant=_both(sigma, q, rounds, config.delta))
    return plan


def _both(sigma: float, sample_rate: float, steps: int, delta: float) -> dict[str, float]:
    """ε of ``steps`` subsampled Gaussians under RDP and PRV (one PRV evaluation)."""
    from fedpriv.dp.accounting import GaussianSteps, epsilon_both

    return epsilon_both([GaussianSteps(sigma, sample_rate, steps)], delta)


def replace_one_epsilon(sigma: float, sample_rate: float, rounds: int, config: DPConfig) -> float:
    """ε of DP-FedAvg when one client's data is replaced (the sum moves by ≤ 2C, bit by ≤ 1).

    Every sensitivity (the update's, and adaptive clipping's count's) doubles: at
    q = 1 this is the Gaussian mechanism at σ/2, exactly; with q < 1 the
    replace-one subsampled privacy loss of :func:`fedpriv.dp.accounting.epsilon_replace_one`.
    """
    from fedpriv.dp.accounting import GaussianSteps, epsilon_replace_one

    return epsilon_replace_one([GaussianSteps(sigma, sample_rate, rounds)], config.delta,
                               config.accountant)


def _plan_distributed(
    config: DPConfig, *, num_clients: int, rounds: int, clients_per_round: int, dim: int,
    dropout: float,
) -> DPPlan:
    """Plan the Skellam mechanism: σ for the worst planned survivors, ε, wrap-around bound."""
    from fedpriv.dp.accounting import delta_warning
    from fedpriv.dp.distributed import (
        DistributedDPSettings,
        choose_scale,
        planned_epsilon,
        solve_noise_multiplier,
        wraparound_probability,
    )

    survivors = max(1, clients_per_round - math.ceil(dropout * clients_per_round))
    if config.noise_multiplier is not None:
        sigma = config.noise_multiplier
    else:
        sigma = solve_noise_multiplier(
            float(config.epsilon or 0.0), rounds, config.delta, dim=dim,
            expected_clients=clients_per_round, bits=config.bits, k_stddevs=config.k_stddevs,
            min_survivors=survivors)
    settings = DistributedDPSettings(noise_multiplier=sigma, clip=config.effective_clip,
                                     bits=config.bits, k_stddevs=config.k_stddevs)
    epsilon = planned_epsilon(settings, dim=dim, expected_clients=clients_per_round,
                              rounds=rounds, delta=config.delta, min_survivors=survivors)
    replaced = planned_epsilon(settings, dim=dim, expected_clients=clients_per_round,
                               rounds=rounds, delta=config.delta, min_survivors=survivors,
                               replace_one=True)
    warnings = [w for w in [delta_warning(config.delta, num_clients, "client")] if w]
    scale = choose_scale(settings, dim, clients_per_round)
    details = {
        "bits": config.bits,
        "k_stddevs": config.k_stddevs,
        "scale": scale,
        "wraparound_probability": wraparound_probability(settings, dim, clients_per_round,
                                                         scale),
        "planned_epsilon": epsilon,
        "planned_survivors": survivors,
    }
    return DPPlan(config=config, noise_multiplier=sigma, clip=config.effective_clip,
                  epsilon=epsilon, sample_rate=1.0, steps=rounds, warnings=tuple(warnings),
                  details=details, replace_one_epsilon=replaced)
