"""The compact federated loop: sample clients, train locally, aggregate through a protocol.

One base model is shared by all clients.  Each sampled client loads the global
adapter vector into it, trains for a few local steps, and hands its update
``Δ_i = local - global`` and FedAvg weight (its number of training records) to
the aggregation protocol.  The driver in :mod:`fedpriv.protocols` runs the
protocol's message phases and returns the weighted mean and the
:class:`~fedpriv.protocols.ServerView`; the server applies
``global += server_lr · mean Δ``.  Because every client trains the same
vector (A and B of each LoRA pair, or only B under FFA-LoRA), averaging the
flat vector is FedAvg of A and of B.

Randomness.  Without DP, everything is derived from ``(seed, round, client)``
with ``numpy`` ``SeedSequence``, so a run is deterministic on CPU and a resumed
run draws the same clients and batches as an uninterrupted one.  With DP, every
draw that DP relies on — the noise, the Poisson sampling of examples (sample-level)
and of clients (user-level), and the batches — comes from keys derived from the
run's secret (:mod:`fedpriv.dp.secret`), never from the public seed: the report
publishes the seed, and noise regenerated from it could be subtracted.  The
secret is kept beside the checkpoint, so a resumed DP run is still identical to
an uninterrupted one.  Only ``dp_params.deterministic`` (debugging) derives them
from the seed, and such a run says so in its privacy block.

Shared training.  A trainer built with ``companions`` (other runs' protocols,
by run name) also aggregates every round's client inputs with each of them and
compares (:class:`CompanionRound`): same survivors, every entry within
:data:`SHARE_TOLERANCE` of the trainer's own aggregate.  Their views and costs
are kept per round, so :meth:`TrainingResult.companion` gives each companion
run a result of its own on the one trajectory, and
:meth:`TrainingResult.companion_error` says when it did not match.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from peft import PeftModel

from fedpriv.attacks.client_canaries import CanaryClients, CanaryRound
from fedpriv.attacks.gradient_canaries import GradientCanaries
from fedpriv.audits.config import TRAINERS
from fedpriv.dp.config import DPPlan
from fedpriv.dp.distributed import DistributedDP, DistributedDPSettings
from fedpriv.dp.noise import key_generator, noise_seed, torch_seed
from fedpriv.dp.rounds import (
    DP_CLIENT_WEIGHT,
    protocol_vector,
    protocol_vector_size,
    rounding_l2_bound,
    server_mean,
)
from fedpriv.dp.secret import fresh_secret
from fedpriv.dp.user import UserDPRound, UserDPSettings, UserLevelDP
from fedpriv.errors import CheckpointError, ConfigError, ProtocolError
from fedpriv.models import (
    adapter_size,
    get_adapter_vector,
    set_adapter_vector,
    trainable_parameters,
)
from fedpriv.protocols import (
    AggregationProtocol,
    AggregationResult,
    ClientInput,
    RoundContext,
    ServerView,
    run_round,
)
from fedpriv.protocols.driver import draw_dropouts
from fedpriv.train.batched import (
    BatchedClientTrainer,
    ClientJob,
    DPJobSettings,
    batched_unsupported,
)
from fedpriv.train.batching import TokenIds
from fedpriv.train.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from fedpriv.train.local import EvalResult, LocalTrainingSettings, evaluate, train_local

if TYPE_CHECKING:  # fedpriv.dp.sample builds on fedpriv.train.local: imported where used
    from fedpriv.dp.sample import PrivateModel

logger = logging.getLogger(__name__)

VIEW_POLICIES = ("none", "last", "all")

RoundRunner = Callable[..., AggregationResult]
"""Runs one protocol round: ``runner(protocol, ctx, inputs, *, dropouts=...)``, as
:func:`fedpriv.protocols.run_round` (the default) does."""

_ROUND_RUNNER: ContextVar[RoundRunner | None] = ContextVar("fedpriv_round_runner", default=None)


@contextlib.contextmanager
def use_round_runner(runner: RoundRunner) -> Iterator[None]:
    """Within the block, trainers built without ``round_runner`` aggregate with ``runner``.

    This is how an engine other than the in-process driver (e.g.
    :func:`fedpriv.integrations.flower.flower_round_runner`) takes over the
    aggregation of every round an audit runs, without changing the audit's code.
    """
    token = _ROUND_RUNNER.set(runner)
    try:
        yield
    finally:
        _ROUND_RUNNER.reset(token)


def _run_round_in_process(
    protocol: AggregationProtocol, ctx: RoundContext, inputs: Mapping[int, ClientInput],
    *, dropouts: Mapping[int, int] | None = None,
) -> AggregationResult:
    return run_round(protocol, ctx, inputs, dropouts=dropouts)


@dataclass(frozen=True)
class FederationSettings:
    """Loop settings (built from :class:`fedpriv.audits.config.FederationConfig`)."""

    rounds: int
    clients_per_round: int
    local: LocalTrainingSettings
    server_lr: float = 1.0
    eval_every: int = 1
    eval_batch_size: int = 32
    keep_views: str = "last"
    dropout: float = 0.0
    trainer: str = "auto"
    """``auto``, ``sequential`` or ``batched`` (:data:`TRAINERS`)."""
    memory_budget_mb: float = 2048.0
    """Batched trainer: activation memory one chunk of clients may take (sizes the chunks)."""

    def __post_init__(self) -> None:
        if self.keep_views not in VIEW_POLICIES:
            raise ConfigError(f"keep_views must be one of {VIEW_POLICIES}, got {self.keep_views!r}")
        if self.trainer not in TRAINERS:
            raise ConfigError(f"trainer must be one of {TRAINERS}, got {self.trainer!r}")
        if not self.memory_budget_mb > 0:
            raise ConfigError(f"memory_budget_mb must be > 0, got {self.memory_budget_mb!r}")


@dataclass(frozen=True)
class RoundRecord:
    """What happened in one round (one row of the report's per-round history)."""

    round: int
    participants: list[int]
    survivors: list[int]
    train_loss: float
    update_norm: float
    eval_loss: float | None
    perplexity: float | None
    wall_s: float
    train_s: float
    protocol_s: float
    bytes_up_per_client: float
    bytes_down_per_client: float
    clipped_values: int = 0
    aborted: str | None = None
    rejected_clients: int = 0
    """Clients dropped because the server refused one of their messages (hostile input)."""
    dp_clip: float | None = None
    """User-level DP: the update clip bound clients used this round."""
    dp_next_clip: float | None = None
    """User-level DP: the bound for the next round (moves under adaptive clipping)."""
    companions: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Shared training: by companion run, what its protocol made of this round's inputs
    (:meth:`CompanionRound.record`); empty for a trainer without companions."""


@dataclass
class TrainingResult:
    """The outcome of a federated run."""

    global_vector: np.ndarray
    history: list[RoundRecord]
    base_eval: EvalResult
    final_eval: EvalResult
    views: list[ServerView] = field(default_factory=list)
    view_globals: list[np.ndarray] = field(default_factory=list)
    """The global adapter each kept view's round started from (what the server sent)."""
    wall_s: float = 0.0
    resumed_from_round: int | None = None
    canary_rounds: list[CanaryRound] = field(default_factory=list)
    """Every released round's observation of the audit's canary clients (if planted)."""
    companion_views: dict[str, list[ServerView]] = field(default_factory=dict)
    """Shared training: each companion protocol's server views (kept like ``views``)."""

    def companion_error(self, name: str) -> str | None:
        """Why companion run ``name`` cannot take this trajectory as its own (``None``: it can).

        It can when every round's companion aggregate matched (same survivors,
        within :data:`SHARE_TOLERANCE`) and no round was aborted.
        """
        for h in self.history:
            record = h.companions.get(name)
            if record is None:
                return f"round {h.round} has no record of it"
            if record["error"] is not None:
                return f"round {h.round}: {record['error']}"
            if h.aborted is not None:
                return f"round {h.round} was aborted"
        return None

    def max_abs_deviation(self, name: str) -> float:
        """Largest entry of |companion aggregate − own aggregate| over the rounds."""
        return max((h.companions[name]["max_abs_deviation"] for h in self.history
                    if name in h.companions), default=0.0)

    def companion(self, name: str) -> TrainingResult:
        """Companion run ``name``'s result: this trajectory, its protocol's views and costs."""
        history, own_s, its_s = [], 0.0, 0.0
        for h in self.history:
            c = h.companions[name]
            own_s += h.protocol_s
            its_s += c["protocol_s"]
            history.append(replace(
                h, **{key: c[key] for key in protocol_fields(None)},  # its protocol's fields
                wall_s=h.wall_s - h.protocol_s + c["protocol_s"], companions={}))
        return replace(self, history=history, views=list(self.companion_views.get(name, [])),
                       view_globals=list(self.view_globals) if name in self.companion_views
                       else [], wall_s=self.wall_s - own_s + its_s, companion_views={})


@dataclass(frozen=True)
class RoundOutcome:
    """What :meth:`FederatedTrainer.train_round` produced."""

    global_vector: np.ndarray
    participants: tuple[int, ...]
    result: AggregationResult | None
    """The protocol's result; ``None`` when it aborted the round."""
    losses: list[float]
    """Each participant's mean local training loss."""
    train_s: float
    """Seconds spent in local training."""
    aborted: str | None = None
    """Why the protocol aborted the round (too few survivors), if it did."""
    dp_round: UserDPRound | None = None
    """What user-level DP's server step did (clip bounds), when it is on."""
    companions: Mapping[str, CompanionRound] = field(default_factory=dict)
    """Shared training: what each companion protocol made of the same inputs."""


SHARE_TOLERANCE = 1e-3
"""A companion protocol's aggregate may differ from the trainer's own by at most this
fraction of the largest entry of the trainer's aggregate (fixed-point rounding of
``secagg``/``secagg+`` at the default step 2⁻²⁰ and CKKS' ≤ 2⁻³⁰ error are far below)."""


@dataclass(frozen=True)
class CompanionRound:
    """What a companion protocol made of the inputs the trainer's own protocol aggregated.

    Shared training (:class:`FederatedTrainer` ``companions``): runs that differ only
    by an exact aggregation protocol train on one trajectory; each round the same
    client inputs also go through every companion protocol, whose aggregate must
    match the trainer's (same survivors, within :data:`SHARE_TOLERANCE`), so the
    companion's released model *is* the trainer's.
    """

    result: AggregationResult | None
    max_abs_deviation: float
    """Largest ``|companion aggregate − trainer aggregate|`` entry (``inf``: not comparable)."""
    error: str | None = None
    """Why the companion's round failed or does not match (``None``: it matches)."""

    @classmethod
    def compare(cls, result: AggregationResult, own: AggregationResult) -> CompanionRound:
        """Compare a companion's ``result`` with the trainer's ``own`` result of the round."""
        if tuple(result.survivors) != tuple(own.survivors):
            return cls(result, math.inf, f"survivors {list(result.survivors)} differ from "
                                         f"{list(own.survivors)}")
        deviation = float(np.max(np.abs(np.asarray(result.aggregate, dtype=np.float64)
                                        - own.aggregate), initial=0.0))
        bound = SHARE_TOLERANCE * float(np.max(np.abs(own.aggregate), initial=0.0))
        if not deviation <= bound:
            return cls(result, deviation, f"aggregate differs by {deviation:.3g} (> {bound:.3g}, "
                                          f"{SHARE_TOLERANCE:g} of its largest entry)")
        return cls(result, deviation)

    def record(self) -> dict[str, Any]:
        """Return the round's history entry for the companion run (JSON-able, checkpointed)."""
        return {**protocol_fields(self.result), "max_abs_deviation": self.max_abs_deviation,
                "error": self.error}


def protocol_fields(result: AggregationResult | None) -> dict[str, Any]:
    """Return the :class:`RoundRecord` fields a protocol's round result decides (none: zeros).

    One place for the trainer's own history and its companions' (shared training).
    """
    return {
        "survivors": [] if result is None else [int(c) for c in result.survivors],
        "update_norm": 0.0 if result is None else float(np.linalg.norm(result.aggregate)),
        "protocol_s": 0.0 if result is None else result.cost.protocol_seconds(),
        "bytes_up_per_client": 0.0 if result is None else result.cost.bytes_up_per_client(),
        "bytes_down_per_client": 0.0 if result is None else result.cost.bytes_down_per_client(),
        "clipped_values": 0 if result is None else int(sum(
            s.get("clipped_values", 0) for s in result.client_stats.values())),
        "rejected_clients": 0 if result is None else len(result.rejected_clients),
    }


def _seed_int(*entropy: int) -> int:
    return int(np.random.SeedSequence(list(entropy)).generate_state(1, dtype=np.uint64)[0] >> 1)


def sample_clients(
    seed: int, round_index: int, num_clients: int, per_round: int
) -> tuple[int, ...]:
    """Clients taking part in ``round_index``: a deterministic sample without replacement."""
    if per_round == num_clients:
        return tuple(range(num_clients))
    rng = np.random.default_rng([seed, round_index, 1])
    return tuple(sorted(int(c) for c in rng.choice(num_clients, size=per_round, replace=False)))


def participation_counts(seed: int, rounds: int, num_clients: int, per_round: int) -> list[int]:
    """How many of ``rounds`` rounds each client is sampled for (:func:`sample_clients`)."""
    counts = [0] * num_clients
    for r in range(rounds):
        for c in sample_clients(seed, r, num_clients, per_round):
            counts[c] += 1
    return counts


class FederatedTrainer:
    """Runs the federated loop for one run of an audit on a shared base model."""

    def __init__(
        self,
        model: PeftModel,
        client_examples: Sequence[Sequence[TokenIds]],
        eval_examples: Sequence[TokenIds],
        protocol: AggregationProtocol,
        settings: FederationSettings,
        *,
        pad_id: int,
        device: torch.device,
        seed: int,
        checkpoint_path: Path | None = None,
        fingerprint: str = "",
        dp: DPPlan | None = None,
        round_runner: RoundRunner | None = None,
        dp_secret: bytes | None = None,
        nominal_sizes: Sequence[int] | None = None,
        companions: Mapping[str, AggregationProtocol] | None = None,
    ) -> None:
        if not client_examples:
            raise ConfigError("the federation has no clients")
        if settings.clients_per_round > len(client_examples):
            raise ConfigError(
                f"{settings.clients_per_round} clients per round requested but only "
                f"{len(client_examples)} clients have data; lower federation.clients_per_round"
            )
        self.model = model
        self.client_examples = client_examples
        # FedAvg weights relative to the largest client (the mean is unchanged, and every
        # weight is in (0, 1], the public bound secure aggregation encodes weights under).
        largest = max(len(e) for e in client_examples)
        if largest == 0:
            raise ConfigError("no client has training examples")
        self.client_weights = [len(e) / largest for e in client_examples]
        self.dp = dp
        if nominal_sizes is not None and len(nominal_sizes) != len(client_examples):
            raise ConfigError(f"{len(nominal_sizes)} nominal client sizes for "
                              f"{len(client_examples)} clients; give one per client")
        self.nominal_sizes = (
            [len(e) for e in client_examples] if nominal_sizes is None else list(nominal_sizes))
        """Public sizes DP-SGD's sample rate derives from (never the count that includes
        the audit canaries, which would reveal how many each client included)."""
        self._dp_secret: bytes | None = None
        self._dp_seed: int | None = None
        if dp is not None:
            if dp.config.deterministic:
                self._dp_seed = seed
            elif dp.config.uses_secret:
                if dp_secret is None:
                    if checkpoint_path is not None:
                        logger.warning("a DP run without its stored secret: a resumed run will "
                                       "not match an uninterrupted one")
                    dp_secret = fresh_secret()
                self._dp_secret = dp_secret
        self.user_dp: UserLevelDP | None = None
        if dp is not None and dp.mode == "user":
            cfg = dp.config
            self.user_dp = UserLevelDP(
                UserDPSettings(noise_multiplier=dp.noise_multiplier, clip=dp.clip,
                               adaptive_clip=cfg.adaptive_clip, target_quantile=cfg.target_quantile,
                               clip_lr=cfg.clip_lr, count_stddev=cfg.count_stddev),
                num_clients=len(client_examples), clients_per_round=settings.clients_per_round,
                seed=self._dp_seed, secret=self._dp_secret,
            )
            # Fixed-point rounding inside secure aggregation happens after clipping: clip to
            # C − r√d so that the rounded update, what the sum really holds, stays within C.
            self.user_dp.set_rounding_margin(rounding_l2_bound(
                protocol, adapter_size(model) + self.user_dp.extra_coordinates))
            self.user_dp.noise_scale = dp.noise_scale
            # DP-FedAvg bounds each client's contribution by C: every client weighs 1.
            self.client_weights = [DP_CLIENT_WEIGHT] * len(client_examples)
        self.dist_dp: DistributedDP | None = None
        if dp is not None and dp.mode == "distributed":
            cfg = dp.config
            self.dist_dp = DistributedDP(
                DistributedDPSettings(noise_multiplier=dp.noise_multiplier, clip=dp.clip,
                                      bits=cfg.bits, k_stddevs=cfg.k_stddevs),
                dim=adapter_size(model),
                expected_clients=settings.clients_per_round,
                seed=self._dp_seed, secret=self._dp_secret,
            )
            self.dist_dp.noise_scale = dp.noise_scale
            self.client_weights = [DP_CLIENT_WEIGHT] * len(client_examples)
        self._private: PrivateModel | None = None
        self._batched: BatchedClientTrainer | None = None
        self._batched_reason: str | None = None
        """Why clients train sequentially (``None`` until decided, ``""`` when batched)."""
        self.eval_examples = eval_examples
        self.protocol = protocol
        self.companions: dict[str, AggregationProtocol] = dict(companions or {})
        """Shared training: protocols that also aggregate every round's inputs
        (:class:`CompanionRound`), by the name of the run they stand for."""
        if self.companions and (dp is not None or settings.dropout):
            raise ConfigError("shared training (companion protocols) needs runs without DP "
                              "and without simulated dropouts; train such runs separately")
        self.settings = settings
        self.pad_id = pad_id
        self.device = device
        self.seed = seed
        self.checkpoint_path = checkpoint_path
        self.fingerprint = fingerprint
        self.params = trainable_parameters(model)
        self.canaries: CanaryClients | None = None
        self.gradient_canaries: GradientCanaries | None = None
        self.gradient_canary_client = 0
        self.canary_rounds: list[CanaryRound] = []
        """Per released round: what it showed of the canary clients or gradient canaries."""
        self.round_runner: RoundRunner = (
            round_runner or _ROUND_RUNNER.get() or _run_round_in_process
        )
        """Aggregates each round (default: the in-process driver, or the engine set by
        :func:`use_round_runner` when the trainer was built)."""

    # ------------------------------------------------------------------ pieces
    def plant_canaries(self, count: int, rng: np.random.Generator) -> CanaryClients:
        """Add ``count`` canary clients to the federation (audit of user-level/distributed DP).

        They take part like real clients: at user-level DP's Poisson rate, or every
        round under distributed DP (whose accountant credits no sampling); see
        :mod:`fedpriv.attacks.client_canaries`.  ``rng`` is the auditor's: it draws
        the canaries and their inclusion, never which round they take part in.

        Raises:
            ConfigError: Without user-level or distributed DP.
        """
        if self.user_dp is None and self.dist_dp is None:
            raise ConfigError("canary clients audit user-level or distributed DP runs only; "
                              "set attacks.client_canaries = 0 for this run")
        rate = self.user_dp.sample_rate if self.user_dp is not None else 1.0
        self.canaries = CanaryClients.draw(count, adapter_size(self.model), rng,
                                           sample_rate=min(rate, 1.0))
        return self.canaries

    def plant_gradient_canaries(self, count: int, rng: np.random.Generator, *,
                                client: int = 0) -> GradientCanaries:
        """Give ``client`` ``count`` gradient (Dirac) canary records (audit of sample-level DP).

        See :mod:`fedpriv.attacks.gradient_canaries`: each is one record of the
        client, sampled in its DP-SGD steps at the examples' rate from the run's
        secret randomness.  ``rng`` is the auditor's (canaries and inclusion).

        Raises:
            ConfigError: Without sample-level DP, or for a client that does not exist.
        """
        if self.dp is None or self.dp.mode != "sample":
            raise ConfigError("gradient canaries audit sample-level DP runs only; set "
                              "attacks.gradient_canaries = 0 for this run")
        if not 0 <= client < len(self.client_examples):
            raise ConfigError(f"client {client} does not exist ({len(self.client_examples)} "
                              "clients)")
        self.gradient_canaries = GradientCanaries.draw(count, adapter_size(self.model), rng)
        self.gradient_canary_client = client
        return self.gradient_canaries

    def _canary_norm(self) -> float:
        """Return a canary client's update norm: the sensitivity accounted this round."""
        if self.user_dp is not None:
            return float(self.user_dp.clip)
        assert self.dist_dp is not None
        return float(self.dist_dp.l2_sensitivity * self.dist_dp.scale)

    def _observe_canaries(self, round_index: int, mean: np.ndarray, norm: float,
                          result: AggregationResult | None) -> None:
        """Record what this round's release shows of every canary (its noise std is public)."""
        assert self.canaries is not None
        if self.user_dp is not None:
            expected = self.user_dp.expected_clients
            noise_std = self.user_dp.update_noise * norm
        else:
            assert self.dist_dp is not None and result is not None
            expected = self.dist_dp.expected_clients
            noise_std = math.sqrt(self.dist_dp.round_variance(len(result.survivors))) * float(
                self.dist_dp.scale)
        self.canary_rounds.append(self.canaries.observe(
            round_index, mean * expected, norm=norm, noise_std=noise_std))

    def _observe_gradient_canaries(self, round_index: int, result: AggregationResult) -> None:
        """Record the gradient canaries' scores on what the server saw of the holder this round.

        Its own update where the server sees individual updates (``plain``); the
        aggregate otherwise (the holder's update is in it when it survived).
        """
        assert self.gradient_canaries is not None and self.dp is not None
        holder = self.gradient_canary_client
        updates = result.view.individual_updates
        if updates is not None and holder in updates:
            seen = np.asarray(updates[holder], dtype=np.float64)
        elif updates is None and holder in result.survivors:
            seen = np.asarray(result.aggregate, dtype=np.float64)
        else:
            return  # the holder did not take part: the round shows nothing of its canaries
        scores = self.gradient_canaries.scores(seen)
        local = self.settings.local
        if updates is not None and local.optimizer == "sgd" and not local.weight_decay:
            # Its own update, linear in the noised sums: the subsampled Gaussian's ratio.
            from fedpriv.dp.sample import local_dp_steps, local_sample_rate

            n = self.nominal_sizes[holder]
            q = local_sample_rate(local.batch_size, n)
            per_step = local.lr * self.dp.noise_multiplier * self.dp.clip / min(local.batch_size, n)
            scores = self.gradient_canaries.sgd_round_log_ratio(
                scores / per_step, steps=local_dp_steps(local, n), sample_rate=q,
                noise_multiplier=self.dp.noise_multiplier)
        self.canary_rounds.append(CanaryRound(round_index, scores, 0.0))

    def sample_clients(self, round_index: int) -> tuple[int, ...]:
        """Clients taking part in ``round_index``.

        A deterministic sample of ``clients_per_round`` without replacement, or,
        under user-level DP, Poisson sampling (which its accountant assumes).
        """
        if self.user_dp is not None:
            return self.user_dp.sample(self._dp_rng("client-sampling", round_index))
        return sample_clients(self.seed, round_index, len(self.client_examples),
                              self.settings.clients_per_round)

    def _dp_key(self, purpose: str, *context: int) -> bytes:
        """Return the key of a DP draw: from the run's secret (the seed in deterministic mode)."""
        return noise_seed(self._dp_seed, *context, purpose=purpose, secret=self._dp_secret)

    def _dp_rng(self, purpose: str, *context: int) -> np.random.Generator:
        return key_generator(self._dp_key(purpose, *context))

    def batch_rng(self, round_index: int, client: int) -> np.random.Generator:
        """Return the generator that orders (DP-SGD: Poisson-samples) ``client``'s batches.

        From the public seed without DP; from the run's DP secret with DP (the
        amplification by sampling assumes nobody knows which examples were drawn).
        """
        if self.dp is not None:
            return self._dp_rng("batches", round_index, client)
        return np.random.default_rng([self.seed, round_index, 3, client])

    def batched_trainer(self) -> BatchedClientTrainer | None:
        """Return the batched client trainer, or ``None`` when clients train one by one.

        ``federation.trainer = "sequential"`` never batches; ``"auto"`` batches
        whenever :func:`~fedpriv.train.batched.batched_unsupported` finds nothing
        in the way (adapter dropout, Opacus' ``secure_mode``, non-Linear LoRA);
        ``"batched"`` raises instead of falling back.

        Raises:
            ConfigError: ``trainer = "batched"`` for a run it cannot train.
        """
        if self._batched_reason is None:
            reason = "federation.trainer is 'sequential'"
            if self.settings.trainer != "sequential":
                secure = (self.dp is not None and self.dp.mode == "sample"
                          and self.dp.config.secure_mode)
                reason = batched_unsupported(self.model, secure_mode=secure) or ""
                if reason and self.settings.trainer == "batched":
                    raise ConfigError(f"federation.trainer = 'batched' cannot train this run: "
                                      f"{reason}; set it to 'auto' or 'sequential'")
                if reason:
                    logger.info("training clients sequentially: %s", reason)
                else:
                    self._batched = BatchedClientTrainer(
                        self.model, pad_id=self.pad_id, device=self.device,
                        memory_budget_mb=self.settings.memory_budget_mb)
            self._batched_reason = reason
        return self._batched

    def _trains_sequentially(self, client: int) -> bool:
        """Whether ``client`` needs the sequential path even when the round is batched."""
        holds_canaries = (self.gradient_canaries is not None
                          and client == self.gradient_canary_client)
        return holds_canaries or not self.client_examples[client]

    def _client_input(self, client: int, round_index: int, delta: np.ndarray) -> ClientInput:
        """Return ``client``'s protocol input for its raw update ``delta = local - global``."""
        vector = protocol_vector(delta, round_index=round_index, client=client,
                                 user_dp=self.user_dp, dist_dp=self.dist_dp)
        return ClientInput(update=vector, weight=self.client_weights[client])

    def _sample_dp_noise(self, round_index: int, client: int) -> torch.Generator:
        """Return the generator of ``client``'s DP-SGD noise this round (from the DP key)."""
        noise = torch.Generator(device=self.device)
        noise.manual_seed(torch_seed(self._dp_key("sample-dp", round_index, client)))
        return noise

    def train_clients_batched(
        self, clients: Sequence[int], round_index: int, global_vector: np.ndarray,
    ) -> dict[int, tuple[ClientInput, float]]:
        """Train ``clients`` together with the batched trainer; return each one's input and loss.

        Every client gets the same generators as :meth:`client_update` would give
        it (its batch order, its DP-SGD noise), so the result is the sequential
        one within float rounding.
        """
        batched = self.batched_trainer()
        assert batched is not None
        sample_dp = self.dp is not None and self.dp.mode == "sample"
        jobs = [ClientJob(
            client=c, examples=self.client_examples[c], rng=self.batch_rng(round_index, c),
            noise=self._sample_dp_noise(round_index, c) if sample_dp else None,
            nominal_size=self.nominal_sizes[c],
        ) for c in clients]
        dp = None
        if sample_dp:
            assert self.dp is not None
            dp = DPJobSettings(noise_multiplier=self.dp.noise_multiplier * self.dp.noise_scale,
                               max_grad_norm=self.dp.clip)
        results = batched.train(jobs, global_vector, self.settings.local, dp=dp)
        return {c: (self._client_input(c, round_index, local - global_vector), res.mean_loss)
                for c, (local, res) in zip(clients, results, strict=True)}

    def client_update(
        self, client: int, round_index: int, global_vector: np.ndarray
    ) -> tuple[ClientInput, float]:
        """Train ``client`` from the global adapter; return its protocol input and mean loss."""
        set_adapter_vector(self.model, global_vector)
        rng = self.batch_rng(round_index, client)
        # Adapter dropout draws from torch's global RNG: seed it per (round, client) inside a
        # fork so the caller's RNG state is left as it was.
        cuda = [self.device.index or 0] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=cuda):
            torch.manual_seed(_seed_int(self.seed, round_index, 2, client))
            if self._private is not None:
                from fedpriv.dp.sample import train_local_dp

                noise = self._sample_dp_noise(round_index, client)
                canaries = (self.gradient_canaries if client == self.gradient_canary_client
                            else None)
                result = train_local_dp(
                    self._private, self.params, self.client_examples[client], self.settings.local,
                    self._private.settings, pad_id=self.pad_id, device=self.device, rng=rng,
                    noise_generator=noise, nominal_size=self.nominal_sizes[client],
                    gradient_canaries=canaries, noise_scale=self.dp.noise_scale if self.dp else 1.0,
                    canary_rng=None if canaries is None else self._dp_rng(
                        "gradient-canaries", round_index, client),
                )
            else:
                result = train_local(
                    self.model, self.params, self.client_examples[client], self.settings.local,
                    pad_id=self.pad_id, device=self.device, rng=rng,
                )
        delta = get_adapter_vector(self.model) - global_vector
        return self._client_input(client, round_index, delta), result.mean_loss

    def train_round(self, round_index: int, global_vector: np.ndarray) -> RoundOutcome:
        """One round without evaluation or checkpointing.

        A round that the protocol aborts because too many clients dropped (secure
        aggregation below its threshold) leaves the global vector unchanged and
        has ``result=None`` and the reason in ``aborted``; any other protocol
        error propagates.
        """
        t0 = time.perf_counter()
        participants = self.sample_clients(round_index)
        done: dict[int, tuple[ClientInput, float]] = {}
        if self.batched_trainer() is not None:
            together = [c for c in participants if not self._trains_sequentially(c)]
            if together:
                done = self.train_clients_batched(together, round_index, global_vector)
        for client in participants:
            if client not in done:
                done[client] = self.client_update(client, round_index, global_vector)
        inputs = {c: done[c][0] for c in participants}
        losses = [done[c][1] for c in participants]
        train_s = time.perf_counter() - t0
        if not participants:  # Poisson sampling under user-level DP chose nobody
            return self._step(round_index, global_vector, participants, None, losses, train_s)
        size = protocol_vector_size(global_vector.size, user_dp=self.user_dp,
                                    dist_dp=self.dist_dp)
        ctx = RoundContext(round=round_index, participants=participants, vector_size=size)
        dropouts = draw_dropouts(
            participants, self.settings.dropout, self.protocol.num_phases,
            np.random.default_rng([self.seed, round_index, 4]),
        )
        try:
            result = self.round_runner(self.protocol, ctx, inputs, dropouts=dropouts)
        except ProtocolError as err:
            if not dropouts:
                raise
            logger.warning("round %d aborted after %d dropouts: %s", round_index,
                           len(dropouts), err)
            return RoundOutcome(global_vector, participants, None, losses, train_s, str(err))
        outcome = self._step(round_index, global_vector, participants, result, losses, train_s)
        if not self.companions:
            return outcome
        return replace(outcome, companions={
            name: self._companion_round(name, protocol, ctx, inputs, dropouts, result)
            for name, protocol in self.companions.items()})

    def _companion_round(
        self, name: str, protocol: AggregationProtocol, ctx: RoundContext,
        inputs: Mapping[int, ClientInput], dropouts: Mapping[int, int],
        own: AggregationResult,
    ) -> CompanionRound:
        """Aggregate the round's ``inputs`` with a companion protocol; compare with ``own``."""
        try:
            result = self.round_runner(protocol, ctx, inputs, dropouts=dropouts)
        except ProtocolError as err:
            logger.warning("round %d: companion run '%s' failed: %s", ctx.round, name, err)
            return CompanionRound(None, math.inf, f"{type(err).__name__}: {err}")
        companion = CompanionRound.compare(result, own)
        if companion.error is not None:
            logger.warning("round %d: companion run '%s' does not match: %s", ctx.round, name,
                           companion.error)
        return companion

    def _step(
        self, round_index: int, global_vector: np.ndarray, participants: tuple[int, ...],
        result: AggregationResult | None, losses: list[float], train_s: float,
    ) -> RoundOutcome:
        """Apply ``server_lr`` times the round's mean update to the global vector.

        Plain FedAvg: the protocol's weighted mean.  User-level DP: the sum of the
        clipped updates (every weight is 1, so the mean times the survivors) plus
        the server's noise, over the expected number of clients; ``result`` is
        ``None`` when nobody was sampled and the server releases noise alone.
        Distributed DP: the decoded noised sum over the expected number of clients.
        """
        extra, norm = None, 0.0
        if self.canaries is not None:
            norm = self._canary_norm()
            extra = self.canaries.round_sum(global_vector.size, norm,
                                            self._dp_rng("canary-clients", round_index))
        mean, dp_round = server_mean(
            None if result is None else result.aggregate,
            0.0 if result is None else result.total_weight,
            update_size=global_vector.size, round_index=round_index,
            user_dp=self.user_dp, dist_dp=self.dist_dp, extra_sum=extra,
        )
        if self.canaries is not None:
            self._observe_canaries(round_index, mean, norm, result)
        if self.gradient_canaries is not None and result is not None:
            self._observe_gradient_canaries(round_index, result)
        step = (self.settings.server_lr * mean).astype(global_vector.dtype)
        return RoundOutcome(global_vector + step, participants, result, losses, train_s,
                            dp_round=dp_round)

    def evaluate(self, vector: np.ndarray) -> EvalResult:
        """Held-out loss and perplexity of the model with adapter ``vector``."""
        set_adapter_vector(self.model, vector)
        return evaluate(self.model, self.eval_examples, pad_id=self.pad_id, device=self.device,
                        batch_size=self.settings.eval_batch_size)

    # ------------------------------------------------------------------ the loop
    def _resume_state(self, resume: bool) -> Checkpoint | None:
        if not resume or self.checkpoint_path is None:
            return None
        ckpt = load_checkpoint(self.checkpoint_path)
        if ckpt is None:
            return None
        if ckpt.fingerprint != self.fingerprint:
            raise CheckpointError(
                f"checkpoint '{self.checkpoint_path}' was written by a different configuration; "
                "resume with the same config and flags, or use another --out to start afresh"
            )
        return ckpt

    def run(
        self,
        *,
        resume: bool = False,
        on_start: Callable[[int], None] | None = None,
        on_round_end: Callable[[RoundRecord], None] | None = None,
    ) -> TrainingResult:
        """Train for the configured rounds (continuing a checkpoint when ``resume``).

        ``on_start`` gets the round training starts at (> 0 when resumed).  Under
        sample-level DP the model is wrapped for per-sample gradients for the
        run and unwrapped afterwards, whatever happens.
        """
        with self._sample_dp():
            return self._run(resume, on_start, on_round_end)

    def probe_round(self, global_vector: np.ndarray, round_index: int = 0) -> RoundOutcome:
        """One round from ``global_vector`` outside the loop: no evaluation, checkpoint or history.

        The audit's attacks use it to see what the protocol (and DP) reveal of
        one round of the trainer's local settings (e.g. a FedSGD step).
        """
        with self._sample_dp():
            return self.train_round(round_index, global_vector)

    @contextlib.contextmanager
    def _sample_dp(self) -> Iterator[None]:
        """Under sample-level DP, wrap the model for per-sample gradients inside; else nothing."""
        if self.dp is None or self.dp.mode != "sample":
            yield
            return
        from fedpriv.dp.sample import PrivateModel, SampleDPSettings

        cfg = self.dp.config
        self._private = PrivateModel(self.model, SampleDPSettings(
            noise_multiplier=self.dp.noise_multiplier, max_grad_norm=self.dp.clip,
            clipping=cfg.clipping, secure_mode=cfg.secure_mode,
        ))
        try:
            yield
        finally:
            self._private.close()
            self._private = None

    def _run(
        self,
        resume: bool,
        on_start: Callable[[int], None] | None,
        on_round_end: Callable[[RoundRecord], None] | None,
    ) -> TrainingResult:
        start = time.perf_counter()
        ckpt = self._resume_state(resume)
        initial = get_adapter_vector(self.model)
        if ckpt is not None:
            if ckpt.global_vector.shape != initial.shape:
                raise CheckpointError(
                    f"checkpoint '{self.checkpoint_path}' holds an adapter of "
                    f"{ckpt.global_vector.size} values, this model's has {initial.size}"
                )
            global_vector = ckpt.global_vector
            history = [RoundRecord(**h) for h in ckpt.history]
            clips = [h.dp_next_clip for h in history if h.dp_next_clip is not None]
            if self.user_dp is not None and clips:
                self.user_dp.restore(clips[-1])
            base_eval = EvalResult(
                loss=float(ckpt.base_eval["loss"]),
                perplexity=float(ckpt.base_eval["perplexity"]),
                tokens=int(ckpt.base_eval["tokens"]),
            )
            first_round, elapsed_before = ckpt.completed_rounds, ckpt.elapsed_s
            self.canary_rounds = [] if ckpt.canary_projections is None else [
                CanaryRound(r, x, mu) for r, x, mu in zip(
                    ckpt.canary_rounds, ckpt.canary_projections, ckpt.canary_mu, strict=True)]
            logger.info("resuming from round %d of %d", first_round, self.settings.rounds)
        else:
            global_vector = initial
            history = []
            base_eval = self.evaluate(global_vector)
            first_round, elapsed_before = 0, 0.0
            self.canary_rounds = []
        if on_start is not None:
            on_start(first_round)
        views: list[ServerView] = []
        view_globals: list[np.ndarray] = []
        companion_views: dict[str, list[ServerView]] = {name: [] for name in self.companions}
        companion_s = 0.0  # the companions' protocols' time is theirs, not this run's
        last_eval: EvalResult | None = None
        for r in range(first_round, self.settings.rounds):
            t_round = time.perf_counter()
            before = global_vector
            outcome = self.train_round(r, global_vector)
            global_vector, result = outcome.global_vector, outcome.result
            companion_records = {name: c.record() for name, c in outcome.companions.items()}
            round_companion_s = sum(c["protocol_s"] for c in companion_records.values())
            companion_s += round_companion_s
            if result is not None and self.settings.keep_views == "all":
                views.append(result.view)
                view_globals.append(before)
            elif result is not None and self.settings.keep_views == "last":
                views, view_globals = [result.view], [before]
            for name, companion in outcome.companions.items():
                if companion.result is not None and self.settings.keep_views != "none":
                    kept = companion_views[name] if self.settings.keep_views == "all" else []
                    companion_views[name] = [*kept, companion.result.view]
            last = r == self.settings.rounds - 1
            last_eval = None
            if last or (r + 1) % self.settings.eval_every == 0:
                last_eval = self.evaluate(global_vector)
            record = RoundRecord(
                round=r,
                participants=list(outcome.participants),
                train_loss=float(np.mean(outcome.losses)) if outcome.losses else float("nan"),
                eval_loss=None if last_eval is None else last_eval.loss,
                perplexity=None if last_eval is None else last_eval.perplexity,
                wall_s=time.perf_counter() - t_round - round_companion_s,
                train_s=outcome.train_s,
                aborted=outcome.aborted,
                dp_clip=None if outcome.dp_round is None else outcome.dp_round.clip,
                dp_next_clip=None if outcome.dp_round is None else outcome.dp_round.next_clip,
                companions=companion_records,
                **protocol_fields(result),
            )
            history.append(record)
            if self.checkpoint_path is not None:
                save_checkpoint(self.checkpoint_path, Checkpoint(
                    fingerprint=self.fingerprint,
                    completed_rounds=r + 1,
                    global_vector=global_vector,
                    history=[asdict(h) for h in history],
                    base_eval=asdict(base_eval),
                    elapsed_s=elapsed_before + time.perf_counter() - start - companion_s,
                    finished=last,
                    **self._canary_checkpoint(),
                ))
            if on_round_end is not None:
                on_round_end(record)
        if last_eval is None:  # resumed a finished run, or eval skipped on the last round
            last_eval = self.evaluate(global_vector)
        set_adapter_vector(self.model, global_vector)
        return TrainingResult(
            global_vector=global_vector,
            history=history,
            base_eval=base_eval,
            final_eval=last_eval,
            views=views,
            view_globals=view_globals,
            wall_s=elapsed_before + time.perf_counter() - start - companion_s,
            resumed_from_round=first_round if ckpt is not None else None,
            canary_rounds=list(self.canary_rounds),
            companion_views={name: v for name, v in companion_views.items() if v},
        )

    def _canary_checkpoint(self) -> dict[str, Any]:
        """Return the canary observations so far, as :class:`Checkpoint` fields."""
        if not self.canary_rounds:
            return {}
        return {"canary_rounds": [c.round for c in self.canary_rounds],
                "canary_mu": [c.mu for c in self.canary_rounds],
                "canary_projections": np.stack([c.projections for c in self.canary_rounds])}
