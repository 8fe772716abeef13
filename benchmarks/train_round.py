"""Benchmark: one federated round vs the same local steps as plain single-model LoRA training.

Both sides use the same built-in model, LoRA adapter, data and batches, and run
alternately in one process (this machine is shared and noisy, so only ratios
measured side by side mean anything):

* **federated**: ``FederatedTrainer.train_round`` with the ``plain`` protocol —
  N clients each load the global adapter into the one shared base model, train
  S local steps with a fresh AdamW, return Δᵢ, and the protocol aggregates them
  (``--trainer sequential``, the default; ``--trainer batched`` trains the
  clients together, :mod:`fedpriv.train.batched`);
* **plain**: one adapter and one AdamW trained for N × S steps over exactly the
  same batches (same clients, same order), no federation.

The ratio ``fed_over_plain_ratio`` = median(federated) / median(plain) is the
overhead of federation itself (target ≤ 1.15 at 10 clients).  Results go to
``benchmarks/results/train_round.json``.

    python benchmarks/train_round.py            # 10 clients, 8 steps, 5 repeats
    python benchmarks/train_round.py --quick    # a few seconds, for CI
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import time
from pathlib import Path

import torch
import transformers

from fedpriv.audits.config import AuditConfig, FederationConfig, apply_overrides, to_dict
from fedpriv.audits.runner import build_dataset, federation_settings, lora_settings
from fedpriv.models import (
    BUILTIN_MODEL,
    attach_lora,
    get_adapter_vector,
    load_base_model,
    set_adapter_vector,
    trainable_parameters,
)
from fedpriv.protocols import create
from fedpriv.train import FederatedTrainer, encode_texts
from fedpriv.train.local import train_local

RESULTS = Path(__file__).parent / "results" / "train_round.json"
QUICK_RESULTS = Path(__file__).parent / "results" / "train_round.quick.json"  # not committed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=10)
    parser.add_argument("--steps", type=int, default=8, help="local steps per client")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--trainer", default="sequential", choices=["sequential", "batched"],
                        help="how the federated round trains its clients (default sequential: "
                             "the loop this benchmark has always timed, and the machine "
                             "yardstick of benchmarks/default_audit.py)")
    parser.add_argument("--quick", action="store_true", help="tiny sizes, for CI")
    parser.add_argument("--out", type=Path, default=None,
                        help=f"result file (default {RESULTS.name}; "
                             f"{QUICK_RESULTS.name} with --quick)")
    args = parser.parse_args()
    if args.quick:
        args.clients, args.steps, args.repeats = 3, 2, 2
    if args.out is None:
        args.out = QUICK_RESULTS if args.quick else RESULTS

    torch.manual_seed(0)
    transformers.utils.logging.disable_progress_bar()
    config = apply_overrides(AuditConfig(), federation=to_dict(FederationConfig(
        clients=args.clients, rounds=1, local_steps=args.steps, batch_size=args.batch_size)))
    device = torch.device("cpu")
    dataset = build_dataset(config)
    base, tok = load_base_model(BUILTIN_MODEL, device=device)
    model = attach_lora(base, lora_settings(config, config.runs[0]), seed=0)
    pad = tok.pad_token_id
    examples = [encode_texts(tok, c.members, config.model.max_length) for c in dataset.clients]
    settings = dataclasses.replace(federation_settings(config), trainer=args.trainer)
    trainer = FederatedTrainer(model, examples, [], create("plain"), settings,
                               pad_id=pad, device=device, seed=0)
    params = trainable_parameters(model)
    start_vec = get_adapter_vector(model)
    optimizer = torch.optim.AdamW(params, lr=settings.local.lr)
    def federated() -> float:
        t = time.perf_counter()
        trainer.train_round(0, start_vec)
        return time.perf_counter() - t

    def plain() -> float:
        # The same clients' batches, in the same order, trained as one model with one
        # optimiser: no adapter reloads, no fresh optimisers, no aggregation.
        set_adapter_vector(model, start_vec)
        t = time.perf_counter()
        for client in trainer.sample_clients(0):
            train_local(model, params, examples[client], settings.local, pad_id=pad,
                        device=device, rng=trainer.batch_rng(0, client),
                        optimizer=optimizer)
        return time.perf_counter() - t

    federated(), plain()  # warm-up
    fed_times, plain_times = [], []
    for _ in range(args.repeats):
        fed_times.append(federated())
        plain_times.append(plain())
    ratio = statistics.median(fed_times) / statistics.median(plain_times)
    result = {
        "benchmark": "train_round",
        "clients": args.clients,
        "local_steps": args.steps,
        "trainer": args.trainer,
        "batch_size": args.batch_size,
        "repeats": args.repeats,
        "quick": args.quick,
        "torch_threads": torch.get_num_threads(),
        "fed_round_s": fed_times,
        "plain_s": plain_times,
        "fed_round_median_s": statistics.median(fed_times),
        "plain_median_s": statistics.median(plain_times),
        "fed_over_plain_ratio": ratio,
        "target": 1.15,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"federated round ({args.clients} clients x {args.steps} steps): "
          f"{statistics.median(fed_times):.3f} s median")
    print(f"plain LoRA ({args.clients * args.steps} steps):            "
          f"{statistics.median(plain_times):.3f} s median")
    print(f"fed_over_plain_ratio = {ratio:.3f}  (target <= 1.15)  -> {args.out}")


if __name__ == "__main__":
    main()
