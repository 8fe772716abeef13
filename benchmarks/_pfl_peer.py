"""The peer side of ``benchmarks/scale.py``: the same federation trained with pfl-research.

pfl-research (Apple's ``pfl`` on PyPI, PyTorch backend) simulates cross-device
federated learning with one model per worker process, updated in place.
:func:`run_pfl` trains exactly the federation fedpriv's trainers train — the
built-in tiny Llama, the same LoRA adapter (``attach_lora`` with the same seed,
so the same ``A``), the same clients' token ids, padded per batch as
``fedpriv.train.batching.collate`` does, local SGD with the same learning rate,
steps and batch size, FedAvg weighted by the clients' record counts, no DP —
through pfl's own simulation API:

* ``pfl.model.pytorch.PyTorchModel`` around a module with pfl's ``loss`` /
  ``metrics`` interface (what pfl-research's own LLM benchmarks add to a Hugging
  Face model), a local ``torch.optim.SGD`` over the adapter parameters only and
  a central ``SGD(lr=1)`` (global += mean Δ: FedAvg);
* ``pfl.algorithm.FederatedAveraging`` with ``NNAlgorithmParams`` (cohort size =
  clients per round, no validation cohort) and ``NNTrainHyperParams``
  (``local_num_steps``, ``local_num_epochs=None``, no local clipping);
* ``pfl.data.federated_dataset.FederatedDataset`` whose user sampler replays
  fedpriv's client sample of each round (``fedpriv.train.loop.sample_clients``),
  so both frameworks train the same clients in the same rounds and, with one
  full-batch local step, end on the same adapter up to float rounding;
* ``pfl.aggregate.simulate.SimulatedBackend`` with the ``WeightByDatapoints``
  postprocessor (fedpriv's FedAvg weights), single process;
* a ``pfl.callback.base.TrainingProcessCallback`` that stamps the end of every
  central iteration, so ``client_steps_per_s`` counts the training rounds only
  (not model loading, setup, or the first round, which is the warm-up).

pfl evaluates every sampled user before and after local training in the
central iterations where ``iteration % evaluation_frequency == 0``: iteration 0
always is one.  ``evaluation_frequency`` is set past the last round, so only
the untimed warm-up round evaluates.

The environment (pfl must not replace the CPU torch that lies on this disk):

    python3 -m venv /work/pflvenv
    /work/pflvenv/bin/pip install torch==2.13.0          # first: the CPU build
    /work/pflvenv/bin/pip install -e /work/wt-pfl        # fedpriv and its deps
    /work/pflvenv/bin/pip install "pfl[pytorch]==0.6.0"  # keeps torch (needs >=2.0.1,<3);
                                                         # downgrades packaging to 25.0 and
                                                         # attrs to 23.2.0, both fine for
                                                         # fedpriv (pip check: no conflicts)

Run the side-by-side measurement (pfl vs fedpriv's sequential loop, same
process, same federation; 2 torch threads):

    /work/pflvenv/bin/python benchmarks/_pfl_peer.py

Measured so (2-core CPU machine, torch 2.13.0+cpu, 2 threads, 250 clients of 8
records of 64 tokens, 1 SGD step of batch 8, LoRA r=4, 2 timed rounds after the
warm-up, median of 2 alternated runs): 10 clients/round — pfl 23.0, sequential
19.2 client-steps/s (pfl/sequential 1.20); 100 clients/round — pfl 20.7,
sequential 18.9 (1.10).  Both end on the same adapter (max difference 4e-8).
The machine is shared: a concurrent process at one core made single runs up
to 20× slower, so compare only runs alternated in one process.
"""

from __future__ import annotations

import logging
import os
import resource
import time
import warnings
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch

__all__ = ["run_pfl"]

IGNORE_INDEX = -100


def _peak_mem_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


class _CausalLMForPfl(torch.nn.Module):
    """The adapted LM with the ``loss`` / ``metrics`` methods ``PyTorchModel`` calls.

    A user's data is ``(input_ids, attention_mask)``, right-padded to the user's
    longest record; each batch is cut to its own longest record, so a batch
    costs what fedpriv's per-batch ``collate`` costs.  The training losses are
    kept as tensors (no device sync per step) and read once per round.
    """

    def __init__(self, lm: torch.nn.Module) -> None:
        super().__init__()
        self.lm = lm
        self.step_losses: list[torch.Tensor] = []

    @staticmethod
    def _trim(input_ids: torch.Tensor, attention_mask: torch.Tensor,
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        length = int(attention_mask.sum(dim=1).max())
        ids, mask = input_ids[:, :length], attention_mask[:, :length]
        return ids, mask, ids.masked_fill(mask == 0, IGNORE_INDEX)

    def loss(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        self.train()
        ids, mask, labels = self._trim(input_ids, attention_mask)
        loss = self.lm(input_ids=ids, attention_mask=mask, labels=labels).loss
        self.step_losses.append(loss.detach())
        return loss

    @torch.no_grad()
    def metrics(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> dict[str, Any]:
        from pfl.metrics import Weighted

        self.eval()
        ids, mask, labels = self._trim(input_ids, attention_mask)
        tokens = int((labels[:, 1:] != IGNORE_INDEX).sum())
        loss = float(self.lm(input_ids=ids, attention_mask=mask, labels=labels).loss)
        return {"loss": Weighted(loss * tokens, tokens)}


def _mean_token_loss(model: torch.nn.Module, examples: Sequence[Sequence[int]], *,
                     pad_id: int, device: torch.device) -> float:
    """Token-weighted next-token loss of ``model`` on ``examples`` (fedpriv's evaluation)."""
    from fedpriv.train.local import evaluate

    return evaluate(model, examples, pad_id=pad_id, device=device, batch_size=64).loss


def run_pfl(
    client_examples: list[list[list[int]]],
    *,
    clients_per_round: int,
    local_steps: int,
    batch_size: int,
    lr: float,
    rounds: int,
    pad_id: int,
    lora_rank: int,
    lora_alpha: float,
    target_modules: tuple[str, ...] | None,
    ffa: bool,
    device: str = "cpu",
    seed: int = 0,
    return_vector: bool = False,
) -> dict[str, Any]:
    """Train the federation with pfl-research and return its throughput and checks.

    ``rounds`` central iterations of FedAvg over ``clients_per_round`` clients
    (fedpriv's deterministic sample of each round), each training
    ``local_steps`` SGD steps of ``batch_size`` records at ``lr``.  Round 0 is
    the warm-up: ``client_steps_per_s`` = clients × local steps of rounds
    1 … rounds−1 over their wall seconds, so ``rounds`` must be ≥ 2.

    Checks that pfl trained: the global adapter moved (else ``RuntimeError``),
    and reports the mean training loss of the first and last round
    (``first_loss``, ``last_loss``: different clients, so only indicative) and
    the loss of the initial and final global adapter on fixed records, the
    first round's clients' (``eval_loss_initial``, ``eval_loss_final``), with
    ``loss_decreased`` = final < initial there.
    ``return_vector=True`` adds the final adapter vector (``adapter_vector``,
    fedpriv's layout) for a comparison with fedpriv's trainers.
    """
    if rounds < 2:
        raise ValueError(f"rounds must be >= 2 (round 0 is the untimed warm-up), got {rounds}")
    if not 1 <= clients_per_round <= len(client_examples):
        raise ValueError(f"clients_per_round must be in [1, {len(client_examples)}], "
                         f"got {clients_per_round}")
    torch_device = torch.device(device)
    # pfl reads its device from this variable every time it places a tensor.
    os.environ["PFL_PYTORCH_DEVICE"] = str(torch_device)

    from importlib.metadata import version

    from pfl.aggregate.simulate import SimulatedBackend
    from pfl.aggregate.weighting import WeightByDatapoints
    from pfl.algorithm import FederatedAveraging, NNAlgorithmParams
    from pfl.callback.base import TrainingProcessCallback
    from pfl.data.dataset import Dataset
    from pfl.data.federated_dataset import FederatedDataset
    from pfl.hyperparam import NNEvalHyperParams, NNTrainHyperParams
    from pfl.metrics import Metrics
    from pfl.model.pytorch import PyTorchModel

    from fedpriv.lora import LoraSettings
    from fedpriv.models import (
        BUILTIN_MODEL,
        attach_lora,
        get_adapter_vector,
        load_base_model,
        trainable_parameters,
    )
    from fedpriv.train.batching import collate
    from fedpriv.train.loop import sample_clients

    np.random.seed(seed)  # pfl's algorithm and dataset draw their seeds from numpy's global RNG
    torch.manual_seed(seed)

    # ---- the model: fedpriv's tiny Llama and adapter, wrapped for pfl
    base, _ = load_base_model(BUILTIN_MODEL, device=torch_device)
    lora = LoraSettings(rank=lora_rank, alpha=lora_alpha, target_modules=target_modules, ffa=ffa)
    peft_model = attach_lora(base, lora, seed=seed)
    adapter = trainable_parameters(peft_model)
    initial_vector = get_adapter_vector(peft_model)
    wrapper = _CausalLMForPfl(peft_model)

    def local_sgd(params: Iterator[torch.nn.Parameter], lr: float) -> torch.optim.Optimizer:
        # pfl passes every parameter of the module; the frozen base has no gradients.
        return torch.optim.SGD([p for p in params if p.requires_grad], lr=lr)

    model = PyTorchModel(
        model=wrapper,
        local_optimizer_create=local_sgd,
        central_optimizer=torch.optim.SGD(adapter, lr=1.0),  # global += mean Δ
    )

    # ---- the clients: one pfl Dataset per client, tensors already on the device
    users: list[tuple[torch.Tensor, torch.Tensor]] = []
    for records in client_examples:
        batch = collate(records, pad_id, torch_device)
        users.append((batch.input_ids, batch.attention_mask))

    cohorts = [sample_clients(seed, r, len(client_examples), clients_per_round)
               for r in range(rounds)]
    order = iter([c for cohort in cohorts for c in cohort])

    def next_user() -> int:  # pfl's user_sampler: callable() -> user id
        return next(order)

    federated = FederatedDataset(
        make_dataset_fn=lambda uid: Dataset(raw_data=users[uid], user_id=str(uid)),
        user_sampler=next_user,
    )
    backend = SimulatedBackend(training_data=federated, val_data=federated,
                               postprocessors=[WeightByDatapoints()])

    class RoundClock(TrainingProcessCallback):
        """Stamps the end of every central iteration and reads its mean training loss."""

        def __init__(self) -> None:
            self.ends: list[float] = []
            self.losses: list[float] = []

        def after_central_iteration(self, aggregate_metrics: Any, model: Any, *,
                                    central_iteration: int) -> tuple[bool, Any]:
            steps = wrapper.step_losses
            self.losses.append(float(torch.stack(steps).mean()) if steps else float("nan"))
            steps.clear()
            if torch_device.type == "cuda":
                torch.cuda.synchronize(torch_device)
            self.ends.append(time.perf_counter())
            return False, Metrics()

    clock = RoundClock()
    algorithm_params = NNAlgorithmParams(
        central_num_iterations=rounds,
        evaluation_frequency=rounds + 1,  # only iteration 0 (the warm-up) evaluates
        train_cohort_size=clients_per_round,
        val_cohort_size=None,
    )
    train_params = NNTrainHyperParams(
        local_num_epochs=None,
        local_num_steps=local_steps,
        local_learning_rate=lr,
        local_batch_size=batch_size,
        local_max_grad_norm=None,
    )
    if torch_device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(torch_device)

    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # asyncio.get_event_loop in pfl
        FederatedAveraging().run(
            algorithm_params=algorithm_params,
            backend=backend,
            model=model,
            model_train_params=train_params,
            model_eval_params=NNEvalHyperParams(local_batch_size=batch_size),
            callbacks=[clock],
            send_metrics_to_platform=False,  # the generic platform prints every round
        )
    total_s = time.perf_counter() - start
    peak = _peak_mem_mb(torch_device)

    if len(clock.ends) != rounds:
        raise RuntimeError(f"pfl ran {len(clock.ends)} central iterations, expected {rounds}")
    timed_s = clock.ends[-1] - clock.ends[0]
    timed_steps = (rounds - 1) * clients_per_round * local_steps
    final_vector = get_adapter_vector(peft_model)
    moved = float(np.abs(final_vector - initial_vector).max())
    if not np.isfinite(final_vector).all() or moved == 0.0:
        raise RuntimeError(f"pfl did not train the adapter (max change {moved})")

    # Held-out check on fixed records: the first round's clients, initial vs final adapter.
    from fedpriv.models import set_adapter_vector

    probe = [rec for c in cohorts[0][:64] for rec in client_examples[c]]
    eval_final = _mean_token_loss(peft_model, probe, pad_id=pad_id, device=torch_device)
    set_adapter_vector(peft_model, initial_vector)
    eval_initial = _mean_token_loss(peft_model, probe, pad_id=pad_id, device=torch_device)
    set_adapter_vector(peft_model, final_vector)

    sizes = sorted({len(e) for e in client_examples})
    result: dict[str, Any] = {
        "trainer": "pfl",
        "pfl_version": version("pfl"),
        "torch_version": torch.__version__,
        "device": str(torch_device) if torch_device.type != "cuda"
        else f"{torch_device} ({torch.cuda.get_device_name(torch_device)})",
        "torch_threads": torch.get_num_threads(),
        "clients": len(client_examples),
        "clients_per_round": clients_per_round,
        "records_per_client": sizes[0] if len(sizes) == 1 else sizes,
        "local_steps": local_steps,
        "batch_size": batch_size,
        "lr": lr,
        "rounds": rounds,
        "timed_rounds": rounds - 1,
        "dp": "none",
        "client_steps_per_s": timed_steps / timed_s,
        "wall_s": timed_s,
        "round_s": list(np.diff(clock.ends)),
        "warmup_round_s": clock.ends[0] - start,
        "total_s": total_s,
        "peak_mem_mb": peak,
        "first_loss": clock.losses[0],
        "last_loss": clock.losses[-1],
        "eval_loss_initial": eval_initial,
        "eval_loss_final": eval_final,
        # The rounds train different clients, so the held-out loss on fixed records decides.
        "loss_decreased": eval_final < eval_initial,
        "adapter_max_change": moved,
    }
    if return_vector:
        result["adapter_vector"] = final_vector
    return result


# --------------------------------------------------------------------------- side by side
def _run_sequential(client_examples: list[list[list[int]]], *, clients_per_round: int,
                    local_steps: int, batch_size: int, lr: float, rounds: int, pad_id: int,
                    lora: Any, seed: int = 0) -> dict[str, Any]:
    """Time fedpriv's sequential loop (``FederatedTrainer.train_round``, plain protocol) alike."""
    from fedpriv.models import BUILTIN_MODEL, attach_lora, get_adapter_vector, load_base_model
    from fedpriv.protocols import create
    from fedpriv.train import FederatedTrainer, FederationSettings, LocalTrainingSettings

    device = torch.device("cpu")
    base, _ = load_base_model(BUILTIN_MODEL, device=device)
    model = attach_lora(base, lora, seed=seed)
    settings = FederationSettings(
        rounds=rounds, clients_per_round=clients_per_round,
        local=LocalTrainingSettings(batch_size=batch_size, lr=lr, steps=local_steps,
                                    optimizer="sgd", max_grad_norm=None),
        trainer="sequential")
    trainer = FederatedTrainer(model, client_examples, [], create("plain"), settings,
                               pad_id=pad_id, device=device, seed=seed)
    vector = get_adapter_vector(model)
    ends, losses = [], []
    start = time.perf_counter()
    for r in range(rounds):
        outcome = trainer.train_round(r, vector)
        vector = outcome.global_vector
        losses.append(float(np.mean(outcome.losses)))
        ends.append(time.perf_counter())
    timed_s = ends[-1] - ends[0]
    return {
        "trainer": "sequential",
        "clients_per_round": clients_per_round,
        "local_steps": local_steps,
        "batch_size": batch_size,
        "rounds": rounds,
        "client_steps_per_s": (rounds - 1) * clients_per_round * local_steps / timed_s,
        "wall_s": timed_s,
        "warmup_round_s": ends[0] - start,
        "peak_mem_mb": _peak_mem_mb(device),
        "first_loss": losses[0],
        "last_loss": losses[-1],
        "adapter_vector": vector,
    }


def _json_rows(path: str, *, clients: int, per_round: list[int], rounds: int,
               local_steps: int, device: str) -> None:
    """``benchmarks/scale.py``'s peer rows: pfl on scale.py's federation, written to ``path``.

    The same users (:func:`fedpriv.data.population.generate_user_records`, 8
    records of at most 64 tokens, seed 0), adapter, SGD step and cohorts as
    scale.py's fedpriv rows; the final adapter is included so that scale.py can
    compare it with its sequential loop's.
    """
    import json

    from fedpriv.data.population import generate_user_records
    from fedpriv.lora import LoraSettings
    from fedpriv.models import BUILTIN_MODEL, load_tokenizer
    from fedpriv.train.batching import encode_texts

    records, max_len, lr, batch = 8, 64, 0.5, 8  # scale.py's RECORDS, MAX_LEN, LR, BATCH
    lora = LoraSettings(rank=4, alpha=8.0)
    tok = load_tokenizer(BUILTIN_MODEL)
    users = generate_user_records(clients, records, seed=0)
    examples = [encode_texts(tok, [r.text for r in user], max_len) for user in users]
    rows = []
    for p in per_round:
        r = 2 if p >= 1000 and device == "cpu" else rounds  # as scale.py times its own rows
        row = run_pfl(examples, clients_per_round=p, local_steps=local_steps, batch_size=batch,
                      lr=lr, rounds=r, pad_id=tok.pad_token_id, lora_rank=lora.rank,
                      lora_alpha=lora.alpha, target_modules=lora.target_modules, ffa=lora.ffa,
                      device=device, return_vector=True)
        row["adapter_vector"] = row["adapter_vector"].tolist()
        print(f"pfl {p:5d} clients/round: {row['client_steps_per_s']:.2f} client-steps/s",
              flush=True)
        rows.append(row)
    with open(path, "w") as f:
        json.dump(rows, f)


def _main() -> None:
    import argparse
    import json
    import statistics

    import transformers

    from fedpriv.data import generate_client_records
    from fedpriv.lora import LoraSettings
    from fedpriv.models import BUILTIN_MODEL, load_tokenizer
    from fedpriv.train.batching import encode_texts

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=250, help="federation size")
    parser.add_argument("--per-round", type=int, nargs="+", default=[10, 100])
    parser.add_argument("--rounds", type=int, default=3, help="including the warm-up round")
    parser.add_argument("--repeats", type=int, default=2,
                        help="pfl and sequential runs, alternated (the machine is shared)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--local-steps", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", default=None, metavar="PATH",
                        help="only pfl, on benchmarks/scale.py's federation; rows to PATH")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    transformers.utils.logging.disable_progress_bar()
    logging.getLogger("fedpriv.data").setLevel(logging.ERROR)  # name reuse past ~300 clients
    if args.json:
        _json_rows(args.json, clients=args.clients, per_round=args.per_round, rounds=args.rounds,
                   local_steps=args.local_steps, device=args.device)
        return

    records, max_len, lr, batch, steps = 8, 64, 0.5, 8, args.local_steps
    lora = LoraSettings(rank=4, alpha=8.0)
    tok = load_tokenizer(BUILTIN_MODEL)
    corpus = generate_client_records(args.clients, records, seed=0)
    examples = [encode_texts(tok, [r.text for r in client], max_len) for client in corpus]
    pad = tok.pad_token_id
    tokens = [len(s) for c in examples for s in c]
    print(f"{args.clients} clients x {records} records, {np.mean(tokens):.1f} tokens/record "
          f"(max {max(tokens)}); {args.rounds} rounds (1 warm-up), {steps} local step(s) of "
          f"batch {batch}, SGD lr {lr}, LoRA r={lora.rank}; torch threads "
          f"{torch.get_num_threads()}; load average {os.getloadavg()[0]:.2f}", flush=True)
    summary = []
    for per_round in args.per_round:
        common = dict(clients_per_round=per_round, local_steps=steps, batch_size=batch, lr=lr,
                      rounds=args.rounds, pad_id=pad)
        rates: dict[str, list[float]] = {"pfl": [], "sequential": []}
        for _ in range(args.repeats):
            peer = run_pfl(examples, **common, lora_rank=lora.rank, lora_alpha=lora.alpha,
                           target_modules=lora.target_modules, ffa=lora.ffa, return_vector=True)
            seq = _run_sequential(examples, **common, lora=lora)
            diff = float(np.abs(peer.pop("adapter_vector") - seq.pop("adapter_vector")).max())
            assert peer["loss_decreased"], peer
            rates["pfl"].append(peer["client_steps_per_s"])
            rates["sequential"].append(seq["client_steps_per_s"])
            print(f"{per_round:4d} clients/round: pfl {peer['client_steps_per_s']:7.2f}, "
                  f"sequential {seq['client_steps_per_s']:7.2f} client-steps/s; loss pfl "
                  f"{peer['first_loss']:.3f}->{peer['last_loss']:.3f}, sequential "
                  f"{seq['first_loss']:.3f}->{seq['last_loss']:.3f}; held-out "
                  f"{peer['eval_loss_initial']:.3f}->{peer['eval_loss_final']:.3f}; "
                  f"max |adapter pfl - sequential| {diff:.1e}; load "
                  f"{os.getloadavg()[0]:.2f}", flush=True)
        row = {"clients_per_round": per_round, "pfl_version": peer["pfl_version"],
               "peak_mem_mb": peer["peak_mem_mb"], "max_param_diff": diff}
        for name, values in rates.items():
            row[f"{name}_client_steps_per_s"] = statistics.median(values)
            row[f"{name}_best"] = max(values)
            row[f"{name}_runs"] = values
        row["pfl_over_sequential"] = (row["pfl_client_steps_per_s"]
                                      / row["sequential_client_steps_per_s"])
        summary.append(row)
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    _main()
