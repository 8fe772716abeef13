"""The audit runner: config → data → model → federated runs → report.

:func:`run_audit` is the one entry point the CLI and benchmark scripts call.
It checks everything it can before loading a model (:func:`preflight`), builds
the clients' data once, loads the base model once, and for each run attaches a
fresh LoRA adapter, trains it through the run's protocol, measures utility and
writes ``report.json`` / ``report.md`` after every finished run, so a crash
never loses a run that finished.  Each run checkpoints after every round;
``resume=True`` continues unfinished runs and reuses finished ones.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fedpriv.attacks.client_canaries import CanaryClients
from fedpriv.attacks.gradient_canaries import GradientCanaries
from fedpriv.audits.canary_audit import measure_client_epsilon, measure_gradient_epsilon
from fedpriv.audits.config import AuditConfig, RunConfig, to_dict
from fedpriv.audits.leakage import (
    PROBE_BATCH,
    PROBE_LENGTH,
    PROBE_LR,
    audit_reference,
    audit_relation,
    measure_epsilon,
    measure_inversion,
    measure_leakage,
    measure_update_mia,
)
from fedpriv.audits.progress import AuditProgress
from fedpriv.audits.report import build_report, write_report
from fedpriv.audits.results import Leakage, RunOutcome
from fedpriv.data import (
    AuditCanaries,
    FederatedDataset,
    build_federated_dataset,
    corpus_words,
    generate_population,
    get_canary_format,
    load_hf_dataset,
    load_records,
    make_audit_canaries,
    make_canaries,
    partition_records,
    rare_token_words,
)
from fedpriv.dp.config import DPPlan, plan_dp
from fedpriv.dp.distributed import DistributedDP
from fedpriv.dp.secret import SECRET_FILE, read_secret, run_secret
from fedpriv.errors import CheckpointError, ConfigError, FedprivError
from fedpriv.models import (
    LoraSettings,
    adapter_size,
    attach_lora,
    get_adapter_vector,
    load_base_model,
    load_tokenizer,
    pick_device,
    set_adapter_vector,
)
from fedpriv.protocols import AggregationProtocol
from fedpriv.protocols import available as available_protocols
from fedpriv.protocols import create as create_protocol
from fedpriv.train import FederatedTrainer, FederationSettings, TrainingResult
from fedpriv.train.batching import TokenIds, encode_texts
from fedpriv.train.checkpoint import load_checkpoint
from fedpriv.train.local import LocalTrainingSettings
from fedpriv.train.loop import RoundRecord, participation_counts

logger = logging.getLogger(__name__)

HF_PREFIX = "hf:"


def preflight(config: AuditConfig) -> None:
    """Check what can be checked without loading a model; raise a FedprivError otherwise.

    With DP runs this builds the clients' data to solve their noise, so an
    unreachable ε fails here, before any output.
    """
    _check_inputs(config)
    if any(run.dp_config().mode in ("sample", "user") for run in config.runs):
        plan_runs_dp(config, build_dataset(config))


def _check_inputs(config: AuditConfig) -> None:
    """Check the config's sources, protocols, canaries and device (no data, no model)."""
    config.data.check_source()
    known = available_protocols()
    for run in config.runs:
        if run.protocol not in known:
            raise ConfigError(f"run '{run.name}': unknown protocol '{run.protocol}'; "
                              f"available: {', '.join(known)}")
        build_protocol(run)
    if config.data.canaries.per_client > 0:
        get_canary_format(config.data.canaries.format)
    pick_device(config.device)


def build_protocol(run: RunConfig) -> AggregationProtocol:
    """Create ``run``'s protocol from its name and ``protocol_params`` (validated there)."""
    params = dict(run.protocol_params)
    dp = run.dp_config()
    if dp.mode == "distributed":  # the secure sum must be exact over residues mod 2^bits
        from fedpriv.dp.distributed import secagg_params

        params.update(secagg_params(dp.bits))
    try:
        return create_protocol(run.protocol, **params)
    except FedprivError as err:
        raise ConfigError(f"run '{run.name}': {err}") from None


def build_dataset(config: AuditConfig) -> FederatedDataset:
    """Build the clients' member / non-member data (with canaries) for ``config``."""
    data, fed = config.data, config.federation
    rng = np.random.default_rng([config.seed, 0xDA7A])
    if data.is_builtin and data.partition == "natural" and data.partition_by == "key":
        # The generator's clients are the natural partition already, in client order
        # (pooling and grouping by key again would cost time at 100,000 users).
        client_records = generate_population(data.population, fed.clients,
                                             data.records_per_client, seed=config.seed)
    else:
        if data.is_builtin:
            per_client = generate_population(data.population, fed.clients,
                                             data.records_per_client, seed=config.seed)
            records = [r for client in per_client for r in client]
        elif data.source.startswith(HF_PREFIX):
            records = load_hf_dataset(data.source[len(HF_PREFIX):], text_field=data.text_field,
                                      key_field=data.key_field, label_field=data.label_field)
        else:
            records = load_records(data.source, text_field=data.text_field,
                                   key_field=data.key_field, label_field=data.label_field,
                                   fmt=data.format)
        client_records = partition_records(records, num_clients=fed.clients,
                                           scheme=data.partition, rng=rng,
                                           alpha=data.dirichlet_alpha, by=data.partition_by)
    canaries = []
    if data.canaries.per_client > 0:
        canaries = make_canaries(get_canary_format(data.canaries.format), data.canaries.clients,
                                 data.canaries.per_client, data.canaries.repetitions, rng)
    audit = None
    if config.attacks.epsilon_canaries:  # own generator: the splits stay those without audit
        texts = [r.text for client in client_records for r in client]
        words = (rare_token_words(load_tokenizer(config.model.name), texts)
                 if config.attacks.epsilon_canary_kind == "rare-tokens" else corpus_words(texts))
        audit = make_audit_canaries(
            config.attacks.epsilon_canaries, len(client_records),
            np.random.default_rng([config.seed, 0xA0D17]), words,
            repetitions=config.attacks.epsilon_canary_repetitions)
    return build_federated_dataset(client_records, holdout_fraction=data.holdout_fraction,
                                   rng=rng, canaries=canaries, audit_canaries=audit)


def checkpoint_path(out_dir: Path, run: RunConfig) -> Path:
    """Where ``run``'s per-round checkpoint lives inside an audit's output directory."""
    return out_dir / "runs" / run.name / "checkpoint.pt"


def refuse_unfinished_runs(config: AuditConfig, out_dir: Path) -> None:
    """Raise CheckpointError when ``out_dir`` holds an unfinished run of ``config``."""
    for run in config.runs:
        ckpt = load_checkpoint(checkpoint_path(out_dir, run))
        if ckpt is not None and not ckpt.finished:
            raise CheckpointError(
                f"'{out_dir}' holds an unfinished run '{run.name}' (round "
                f"{ckpt.completed_rounds} of {config.federation.rounds}); pass --resume to "
                "continue it, --overwrite to start again, or choose another --out"
            )


def run_fingerprint(config: AuditConfig, run: RunConfig,
                    companions: tuple[RunConfig, ...] = ()) -> str:
    """Hash of everything that determines a run's numbers (not the device or other runs).

    A run that trains for companion runs (shared training) also hashes theirs:
    its checkpoint holds their rounds too.
    """
    shared = to_dict(replace(config, runs=(run, *companions)))
    shared.pop("device", None)
    shared.pop("name", None)
    return hashlib.sha256(json.dumps(shared, sort_keys=True).encode()).hexdigest()[:16]


SHAREABLE_PROTOCOLS = ("plain", "secagg", "secagg+", "ckks")
"""Protocols whose aggregate is the exact weighted mean (up to fixed-point or CKKS
rounding): runs that differ only by one of them can share one training trajectory."""


def shared_training_groups(config: AuditConfig) -> dict[str, tuple[RunConfig, ...]]:
    """Return, by the name of the run that trains it, the runs that share its trajectory.

    With ``federation.share_training`` (default) and no simulated dropouts, runs
    without DP whose protocol is in :data:`SHAREABLE_PROTOCOLS` and whose other
    settings (FFA-LoRA) agree form a group; its first run in config order trains,
    and every round the same client inputs also go through the others' protocols
    (:class:`fedpriv.train.loop.CompanionRound`).  Runs alone in their group are
    not listed.
    """
    fed = config.federation
    if not fed.share_training or fed.dropout:
        return {}
    groups: dict[Any, list[RunConfig]] = {}
    for run in config.runs:
        if run.protocol in SHAREABLE_PROTOCOLS and not run.dp_config().enabled:
            groups.setdefault(run.ffa, []).append(run)
    return {g[0].name: tuple(g[1:]) for g in groups.values() if len(g) > 1}


def lora_settings(config: AuditConfig, run: RunConfig) -> LoraSettings:
    """Return the LoRA settings of ``run`` (the model's, with the run's overrides)."""
    lora = config.model.lora
    return lora if run.ffa is None else replace(lora, ffa=run.ffa)


def federation_settings(config: AuditConfig) -> FederationSettings:
    """Loop settings derived from the config's ``[federation]`` table."""
    fed = config.federation
    return FederationSettings(
        rounds=fed.rounds,
        clients_per_round=fed.sampled_per_round,
        local=LocalTrainingSettings(
            batch_size=fed.batch_size, lr=fed.lr, steps=fed.local_steps, epochs=fed.local_epochs,
            weight_decay=fed.weight_decay, max_grad_norm=fed.max_grad_norm,
            optimizer=fed.optimizer,
        ),
        server_lr=fed.server_lr,
        dropout=fed.dropout,
        eval_every=fed.eval_every,
        eval_batch_size=fed.eval_batch_size,
        trainer=fed.trainer,
        memory_budget_mb=fed.memory_budget_mb,
    )


def plan_run_dp(
    config: AuditConfig, run: RunConfig, client_sizes: list[int], adapter_dim: int | None = None,
) -> DPPlan | None:
    """Resolve ``run``'s DP against the clients' data sizes and the schedule (None: no DP).

    Solving the noise multiplier here, before any model is loaded, makes an
    unreachable ε fail at once.  Distributed DP also needs the adapter's size:
    without ``adapter_dim`` it is left for later (``None``).
    """
    dp = run.dp_config()
    if not dp.enabled or (dp.mode == "distributed" and adapter_dim is None):
        return None
    from fedpriv.dp.sample import local_dp_steps, local_sample_rate

    fed, local = config.federation, federation_settings(config).local
    try:
        return plan_dp(
            dp, client_sizes=client_sizes,
            rounds_per_client=participation_counts(config.seed, fed.rounds, fed.clients,
                                                   fed.sampled_per_round),
            rounds=fed.rounds, clients_per_round=fed.sampled_per_round,
            adapter_dim=adapter_dim, dropout=fed.dropout,
            local_steps=[local_dp_steps(local, n) for n in client_sizes],
            local_sample_rates=[local_sample_rate(local.batch_size, n) for n in client_sizes],
        )
    except FedprivError as err:
        raise ConfigError(f"run '{run.name}': {err}") from None


def spent_distributed(
    plan: DPPlan, mech: DistributedDP, history: list[RoundRecord],
) -> DPPlan:
    """Return ``plan`` with the ε distributed DP really spent: each round's noise shares.

    A round whose sum was released carries the Skellam noise of its survivors
    only; aborted rounds released nothing and cost nothing.
    """
    variances = [mech.round_variance(len(h.survivors)) for h in history
                 if h.aborted is None and h.survivors]
    delta = plan.config.delta
    spent = mech.epsilon(variances, delta) if variances else 0.0
    replaced = mech.epsilon(variances, delta, replace_one=True) if variances else 0.0
    return replace(plan, epsilon=spent, replace_one_epsilon=replaced)


def probe_trainer(
    config: AuditConfig, run: RunConfig, model: Any, tokenizer: Any, dataset: FederatedDataset,
    plan: DPPlan | None, device: torch.device,
) -> FederatedTrainer:
    """Build the inversion probe: first record(s) per client, one SGD step, run's protocol/DP."""
    examples = [
        encode_texts(tokenizer, [r.text for r in c.member_records][:PROBE_BATCH], PROBE_LENGTH)
        for c in dataset.clients
    ]
    settings = replace(
        federation_settings(config), rounds=1, dropout=0.0, keep_views="last",
        local=LocalTrainingSettings(batch_size=PROBE_BATCH, lr=PROBE_LR, steps=1,
                                    optimizer="sgd", max_grad_norm=None),
    )
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    return FederatedTrainer(model, examples, [], build_protocol(run), settings, pad_id=pad_id,
                            device=device, seed=config.seed + 1, dp=plan)


CLIENT_CANARY_SEED = 0xC11E47
"""Offset of the auditor's seed that draws the canary clients and their inclusion."""
GRADIENT_CANARY_SEED = 0x6AD1E47
"""Offset of the auditor's seed that draws the gradient canaries and their inclusion."""
GRADIENT_CANARY_CLIENT = 0
"""The client that holds the gradient canaries."""


SHADOW_SEED = 0x5AD0
"""Offset of the shadow models' public data seed and training seeds."""


def train_shadows(
    config: AuditConfig, model: Any, tokenizer: Any, device: torch.device,
) -> list[np.ndarray]:
    """Train ``attacks.shadow_models`` adapters like the target, on a public split; return them.

    The public split is the population the clients' records come from, minus
    those records: the built-in generator's next records of the same
    organisations or users (it is prefix-stable, so none is a member or a held-out
    non-member of the target).  Each shadow draws as many records per client
    as the target's members from a pool of twice that, and runs the
    run-independent recipe (plain FedAvg, no DP) from the model's current
    adapter, which is put back afterwards.
    """
    fed, data = config.federation, config.data
    initial = get_adapter_vector(model)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    n = data.records_per_client
    members = max(1, round((1 - data.holdout_fraction) * n))
    population = generate_population(data.population, fed.clients, n + 2 * members,
                                     seed=config.seed)
    pools = [client[n:] for client in population]
    settings = replace(federation_settings(config), eval_every=fed.rounds, dropout=0.0)
    vectors = []
    try:
        for index in range(config.attacks.shadow_models):
            rng = np.random.default_rng([config.seed, SHADOW_SEED, index])
            picks = [rng.choice(len(pool), size=members, replace=False) for pool in pools]
            examples = [encode_texts(tokenizer, [pool[int(i)].text for i in pick],
                                     config.model.max_length)
                        for pool, pick in zip(pools, picks, strict=True)]
            set_adapter_vector(model, initial)
            trainer = FederatedTrainer(model, examples, examples[0][:8], create_protocol("plain"),
                                       settings, pad_id=pad_id, device=device,
                                       seed=config.seed + SHADOW_SEED + index)
            vectors.append(trainer.run().global_vector)
    finally:
        set_adapter_vector(model, initial)
    return vectors


@dataclass(frozen=True)
class RunLeakage:
    """What the leakage measurements of one finished run look at, one method per measurement.

    Each method fills its fields of a :class:`Leakage`; :meth:`steps` lists
    those that apply to the run, in the order they are made.
    """

    model: Any
    tokenizer: Any
    dataset: FederatedDataset
    config: AuditConfig
    device: torch.device
    run: RunConfig
    training: TrainingResult
    plan: DPPlan | None
    shadows: list[np.ndarray] | None = None
    canaries: CanaryClients | None = None
    initial: np.ndarray | None = None
    gradient: GradientCanaries | None = None
    released: Leakage | None = None
    """Shared training: the training run's measurements of the same released model,
    reused for the model-level steps (membership, exposure, empirical ε)."""

    def steps(self) -> list[tuple[str, Callable[[Leakage], None]]]:
        """Return ``(name, measurement)`` for each measurement that applies to the run."""
        steps: list[tuple[str, Callable[[Leakage], None]]] = [("model", self.model_leakage)]
        if self.canaries is not None and self.initial is not None:
            steps.append(("client_audit",
                          partial(self.client_audit, self.canaries, self.initial)))
        if self.gradient is not None and self.initial is not None:
            steps.append(("gradient_audit",
                          partial(self.gradient_audit, self.gradient, self.initial)))
        if self.dataset.audit_canaries is not None:
            steps.append(("empirical_epsilon",
                          partial(self.empirical_epsilon, self.dataset.audit_canaries)))
        if self.training.views and self.training.view_globals:
            steps.append(("mia_update", self.update_mia))
        if self.config.attacks.inversion:
            steps.append(("inversion", self.inversion))
        return steps

    def model_leakage(self, leakage: Leakage) -> None:
        """Measure membership inference on the final model and the data canaries' exposure."""
        if self.released is not None:
            self.released.raise_error("model")
            leakage.mia, leakage.canary = self.released.mia, self.released.canary
            return
        block = measure_leakage(
            self.model, self.tokenizer, self.dataset, max_length=self.config.model.max_length,
            device=self.device, seed=self.config.seed, shadows=self.shadows or ())
        leakage.mia, leakage.canary = block.get("mia"), block.get("canary")

    def client_audit(
        self, canaries: CanaryClients, initial: np.ndarray, leakage: Leakage,
    ) -> None:
        """Run the canary clients' one-run audit (user-level and distributed DP)."""
        plan, dp = self.plan, self.run.dp_config()
        leakage.client_audit = measure_client_epsilon(
            canaries, self.training.canary_rounds, self.training.global_vector - initial,
            delta=dp.delta, confidence=self.config.attacks.epsilon_confidence,
            reference=None if plan is None else plan.epsilon, gaussian=dp.mode == "user")

    def gradient_audit(
        self, gradient: GradientCanaries, initial: np.ndarray, leakage: Leakage,
    ) -> None:
        """Run the white-box gradient canaries' one-run audit (sample-level DP)."""
        plan, holder = self.plan, GRADIENT_CANARY_CLIENT
        leakage.gradient_audit = measure_gradient_epsilon(
            gradient, self.training.canary_rounds, self.training.global_vector - initial,
            holder=holder,
            delta=self.run.dp_config().delta, confidence=self.config.attacks.epsilon_confidence,
            reference=None if plan is None else (
                plan.per_client_epsilon[holder] if plan.per_client_epsilon else plan.epsilon))

    def empirical_epsilon(self, audit: AuditCanaries, leakage: Leakage) -> None:
        """Run the audit canaries' one-run audit: the empirical ε lower bound."""
        if self.released is not None:
            self.released.raise_error("empirical_epsilon")
            leakage.empirical_epsilon = self.released.empirical_epsilon
            leakage.epsilon_audit = self.released.epsilon_audit
            return
        plan, dp = self.plan, self.run.dp_config()
        block = measure_epsilon(
            self.model, self.tokenizer, audit, max_length=self.config.model.max_length,
            device=self.device, delta=dp.delta, confidence=self.config.attacks.epsilon_confidence,
            theoretical=None if plan is None else plan.epsilon,
            relation=audit_relation(dp.mode, audit.repetitions),
            reference=audit_reference(plan, audit.repetitions))
        leakage.empirical_epsilon = block["empirical_epsilon"]
        leakage.epsilon_audit = block["epsilon_audit"]

    def update_mia(self, leakage: Leakage) -> None:
        """Measure membership inference on one client's update, when the server sees it."""
        plan = self.plan
        leakage.mia_update = measure_update_mia(
            self.model, self.tokenizer, self.dataset, self.training.views[-1],
            self.training.view_globals[-1], max_length=self.config.model.max_length,
            device=self.device,
            hide_client=plan is not None and plan.mode == "user" and plan.sample_rate < 1)

    def inversion(self, leakage: Leakage) -> None:
        """Run the gradient-inversion probe on what the server sees."""
        trainer = probe_trainer(self.config, self.run, self.model, self.tokenizer, self.dataset,
                                self.plan, self.device)
        leakage.inversion = measure_inversion(trainer, self.tokenizer, self.dataset,
                                              self.training.global_vector, seed=self.config.seed)


def measure_run_leakage(measured: RunLeakage) -> Leakage:
    """Make every measurement of ``measured``; one that fails is recorded, the run still counts.

    The model holds the run's final adapter again afterwards.
    """
    leakage = Leakage()
    for name, step in measured.steps():
        try:
            step(leakage)
        except (FedprivError, RuntimeError, ValueError) as err:
            logger.error("run '%s': leakage measurement '%s' failed: %s", measured.run.name,
                         name, err)
            leakage.record_error(name, err)
    set_adapter_vector(measured.model, measured.training.global_vector)
    return leakage


def shared_outcome(outcome: RunOutcome, leader: RunOutcome, measured: RunLeakage) -> RunOutcome:
    """Finish companion run ``outcome`` from the run that trained its trajectory.

    ``measured`` is the companion's own view of that training
    (:meth:`~fedpriv.train.loop.TrainingResult.companion`); the model-level
    measurements are the leader's (the released model is the same), what the
    server saw (update MIA, inversion) is measured for the companion's protocol.
    """
    assert leader.training is not None
    set_adapter_vector(measured.model, measured.training.global_vector)
    return replace(
        outcome, training=measured.training, leakage=measure_run_leakage(measured),
        adapter_size=adapter_size(measured.model), status="ok", shared_with=leader.run.name,
        shared_deviation=leader.training.max_abs_deviation(outcome.run.name))


def plan_runs_dp(config: AuditConfig, dataset: FederatedDataset) -> dict[str, DPPlan | None]:
    """Return every run's DP plan by name (distributed DP is planned once its model is built)."""
    sizes = [c.nominal_size for c in dataset.clients]
    return {run.name: plan_run_dp(config, run, sizes) for run in config.runs}


def check_run_secrets(config: AuditConfig, out_dir: Path) -> None:
    """Before resuming: every checkpointed DP run's secret must be there, readable, private.

    Raises :class:`CheckpointError` (the CLI exits 2) naming the file and what to do;
    a silently drawn new secret would make the resumed run differ from an
    uninterrupted one.
    """
    for run in config.runs:
        path = checkpoint_path(out_dir, run)
        if run.dp_config().uses_secret and path.exists():
            read_secret(path.parent / SECRET_FILE)


def dp_secret_for(run: RunConfig, out_dir: Path, *, resume: bool) -> bytes | None:
    """Return the run's DP secret: read back when its checkpoint is resumed, else new."""
    if not run.dp_config().uses_secret:
        return None
    # Resuming continues the run whose secret was drawn: its checkpoint needs it, and a run
    # killed before its first checkpoint reuses the secret it already wrote.
    path = checkpoint_path(out_dir, run)
    resuming = resume and ((path.parent / SECRET_FILE).exists() or path.exists())
    return run_secret(path.parent, resume=resuming)


ENGINES = ("inprocess", "flower")
"""How rounds are aggregated: in this process, or as Flower messages (a loopback grid)."""


def audit_engine(engine: str) -> Callable[..., dict[str, Any]]:
    """Return the ``run_audit`` of ``engine`` (:data:`ENGINES`), for the audit and sweep commands.

    Raises:
        ConfigError: For an unknown engine.
    """
    if engine == "flower":
        from fedpriv.integrations.flower import run_audit_on_flower

        return run_audit_on_flower
    if engine != "inprocess":
        raise ConfigError(f"engine must be one of {', '.join(ENGINES)}, got {engine!r}")
    return run_audit


def run_audit(
    config: AuditConfig,
    out_dir: str | Path,
    *,
    resume: bool = False,
    overwrite: bool = False,
    progress: AuditProgress | None = None,
    noise_scale: float = 1.0,
) -> dict[str, Any]:
    """Run every configuration of ``config``; write and return the report (schema 1).

    ``noise_scale`` is for mutation testing of the audit only: every DP run adds
    that fraction of its noise while stating the ε of the full noise (a broken
    implementation the audit must flag); the report names it in
    ``privacy.mutation``.

    A run that fails with an error is recorded with ``status: "failed"`` and its
    message, and the remaining runs still go ahead.  ``out_dir`` holding an
    unfinished run is refused unless ``resume`` (continue it) or ``overwrite``
    (start it again) is set, so a forgotten ``--resume`` never discards work.
    """
    progress = progress or AuditProgress()
    out = Path(out_dir)
    started = time.perf_counter()
    _check_inputs(config)
    dataset = build_dataset(config)
    if not (noise_scale >= 0 and math.isfinite(noise_scale)):
        raise ConfigError(f"noise_scale must be a finite number >= 0, got {noise_scale}")
    plans = plan_runs_dp(config, dataset)  # an unreachable ε fails before anything is written
    if not (resume or overwrite):
        refuse_unfinished_runs(config, out)
    if resume:
        check_run_secrets(config, out)
    out.mkdir(parents=True, exist_ok=True)
    device = pick_device(config.device)
    model, tokenizer = load_base_model(config.model.name, device=device)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    max_len = config.model.max_length
    client_examples: list[list[TokenIds]] = [
        encode_texts(tokenizer, c.members, max_len) for c in dataset.clients
    ]
    eval_examples = encode_texts(tokenizer, dataset.all_nonmembers(), max_len)
    outcomes: list[RunOutcome] = []
    shadows: dict[str, list[np.ndarray]] = {}  # by LoRA settings: shared by runs alike
    groups = shared_training_groups(config)
    trained_by = {c.name: leader for leader, members in groups.items() for c in members}
    finished: dict[str, RunOutcome] = {}
    for run in config.runs:
        lora = lora_settings(config, run)
        run_dir = out / "runs" / run.name
        outcome = RunOutcome(run=run, lora=lora, status="failed", dp=plans[run.name])
        for message in outcome.dp.warnings if outcome.dp is not None else ():
            logger.warning("run '%s': %s", run.name, message)
        leader = finished.get(trained_by.get(run.name, ""))
        if run.name in trained_by:
            why = (f"run '{trained_by[run.name]}' that was to train it failed"
                   if leader is None or leader.training is None
                   else leader.training.companion_error(run.name))
            if why is not None:
                logger.warning("run '%s' trains on its own: %s", run.name, why)
                leader = None
        peft_model = None
        try:
            peft_model = attach_lora(model, lora, seed=config.seed)
            if config.attacks.shadow_models and repr(lora) not in shadows:
                shadows[repr(lora)] = train_shadows(config, peft_model, tokenizer, device)
            if leader is not None and leader.training is not None:
                progress.run_shared(run, leader.run.name, config.federation.rounds)
                outcome = shared_outcome(outcome, leader, RunLeakage(
                    peft_model, tokenizer, dataset, config, device, run,
                    leader.training.companion(run.name), None, shadows.get(repr(lora)),
                    released=leader.leakage))
                peft_model.save_pretrained(str(run_dir / "adapter"))
                outcome.adapter_dir = str(Path("runs") / run.name / "adapter")
            else:
                if run.dp_config().mode == "distributed":
                    plans[run.name] = plan_run_dp(config, run,
                                                  [c.nominal_size for c in dataset.clients],
                                                  adapter_dim=adapter_size(peft_model))
                plan = plans[run.name]
                if plan is not None and noise_scale != 1:
                    plan = plans[run.name] = replace(plan, noise_scale=noise_scale)
                outcome.dp = plan
                companions = groups.get(run.name, ())
                trainer = FederatedTrainer(
                    peft_model, client_examples, eval_examples, build_protocol(run),
                    federation_settings(config), pad_id=pad_id, device=device, seed=config.seed,
                    checkpoint_path=checkpoint_path(out, run),
                    fingerprint=run_fingerprint(config, run, companions), dp=plans[run.name],
                    dp_secret=dp_secret_for(run, out, resume=resume),
                    nominal_sizes=[c.nominal_size for c in dataset.clients],
                    companions={c.name: build_protocol(c) for c in companions},
                )
                canaries = None
                if config.attacks.client_canaries and run.dp_config().mode in ("user",
                                                                                 "distributed"):
                    canaries = trainer.plant_canaries(
                        config.attacks.client_canaries,
                        np.random.default_rng([config.seed, CLIENT_CANARY_SEED]))
                gradient = None
                if config.attacks.gradient_canaries and run.dp_config().mode == "sample":
                    gradient = trainer.plant_gradient_canaries(
                        config.attacks.gradient_canaries,
                        np.random.default_rng([config.seed, GRADIENT_CANARY_SEED]),
                        client=GRADIENT_CANARY_CLIENT)
                initial = get_adapter_vector(peft_model)
                outcome.training = trainer.run(
                    resume=resume,
                    on_start=partial(progress.run_started, run, config.federation.rounds),
                    on_round_end=partial(progress.round_finished, run),
                )
                if trainer.dist_dp is not None and outcome.dp is not None:
                    outcome.dp = spent_distributed(outcome.dp, trainer.dist_dp,
                                                   outcome.training.history)
                outcome.leakage = measure_run_leakage(RunLeakage(
                    peft_model, tokenizer, dataset, config, device, run, outcome.training,
                    outcome.dp, shadows.get(repr(lora)), canaries=canaries, initial=initial,
                    gradient=gradient))
                outcome.adapter_size = adapter_size(peft_model)
                peft_model.save_pretrained(str(run_dir / "adapter"))
                outcome.adapter_dir = str(Path("runs") / run.name / "adapter")
                outcome.status = "ok"
        except (FedprivError, RuntimeError, torch.cuda.OutOfMemoryError) as err:
            if isinstance(err, FedprivError) and len(config.runs) == 1:
                raise
            logger.error("run '%s' failed: %s", run.name, err)
            outcome.error = f"{type(err).__name__}: {err}"
        finally:
            if peft_model is not None:
                model = peft_model.unload()
        if outcome.status == "ok":
            finished[run.name] = outcome
        outcomes.append(outcome)
        progress.run_finished(run, outcome)
        report = build_report(config, outcomes, device=str(device),
                              wall_s=time.perf_counter() - started)
        write_report(out, report)
    try:  # once, at the end: the figures are a convenience and never fail the audit
        from fedpriv.audits.plots import write_plots

        write_plots(report, out)
    except Exception as err:
        logger.warning("plots not written: %s: %s", type(err).__name__, err)
    return report
