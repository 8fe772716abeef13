"""Benchmark: what the attacks recover, on the built-in model.

* **Gradient inversion (DAGER on LoRA)** for batch ∈ {1, 4, 16} records of 24
  tokens, LoRA rank ∈ {8, 64, 256} on q/k/v/o, single-step (FedSGD) and 5-step
  (FedAvg, local SGD) updates, and three defences, each through fedpriv's own
  loop, protocol and DP code (a one-round :class:`FederatedTrainer` probe from a
  global adapter a few steps into training, 10 clients):

  - ``plain``: the server sees each client's update; client 0's is attacked;
  - ``secagg+``: the server sees only the sum of the 10 clients' updates, which is
    attacked against all 10 batches;
  - ``user-dp``: user-level DP-FedAvg at ε = 3 (δ = 1e-5, 10 rounds, every
    client each round) under ``plain``: the server sees each *clipped* update
    (its noise is added after it looked), client 0's is attacked.

  Metrics: ROUGE-1 F1 and token F1 (:func:`fedpriv.attacks.metrics.score_inversion`).
* **Membership inference and canaries** after training long enough to memorise
  (16 clients of 8 training and 8 held-out records each, 12 rounds of 5
  full-batch local steps, 10 repetitions of each canary),
  without DP and with sample-level DP-SGD at ε = 3: the best attack's AUC, the
  loss attack against the reference-calibrated ones (base model; 4 shadow
  models trained like the target on other records of the same organisations, for LiRA
  offline and RMIA: AUC, TPR at 1% FPR), and canary exposure against its
  random baseline.

Writes ``benchmarks/results/attacks.json``; the table in ``benchmarks/RESULTS.md``
is written from it by hand.

    python benchmarks/attacks.py           # about 15 minutes on 2 cores
    python benchmarks/attacks.py --quick   # a small grid, for a smoke run
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fedpriv.attacks.inversion import DagerSettings, dager
from fedpriv.attacks.metrics import score_inversion
from fedpriv.audits.config import AuditConfig, from_mapping
from fedpriv.audits.runner import plan_run_dp, run_audit
from fedpriv.data.synthetic import generate_client_records
from fedpriv.lora import LoraSettings
from fedpriv.models import (
    BUILTIN_MODEL,
    attach_lora,
    get_adapter_vector,
    load_base_model,
    trainable_parameters,
)
from fedpriv.protocols import create as create_protocol
from fedpriv.train.batching import encode_texts
from fedpriv.train.local import LocalTrainingSettings, train_local
from fedpriv.train.loop import FederatedTrainer, FederationSettings

RESULTS = Path(__file__).resolve().parent / "results"
CPU = torch.device("cpu")
CLIENTS = 10
LENGTH = 24
TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj")


def _user_dp_plan(records_per_client: int) -> Any:
    config = from_mapping(AuditConfig, {
        "name": "bench", "seed": 0, "device": "cpu",
        "data": {"records_per_client": records_per_client + 2},
        "federation": {"clients": CLIENTS, "rounds": 10, "local_steps": 1,
                       "batch_size": records_per_client},
        "runs": [{"name": "user-dp", "protocol": "plain", "dp": "user", "epsilon": 3.0}],
    })
    return plan_run_dp(config, config.runs[0], [records_per_client] * CLIENTS)


def inversion_grid(batches: list[int], ranks: list[int], steps_list: list[int],
                   time_limit: float) -> list[dict[str, Any]]:
    """Run DAGER on every cell; returns one row per (rank, batch, steps, defence)."""
    texts = [[r.text for r in client] for client in generate_client_records(CLIENTS, 40, seed=7)]
    rows = []
    for rank in ranks:
        model, tokenizer = load_base_model(BUILTIN_MODEL)
        peft_model = attach_lora(model, LoraSettings(rank=rank, alpha=16.0,
                                                     target_modules=TARGETS), seed=0)
        warm = encode_texts(tokenizer, [t for c in texts for t in c[30:]], 64)
        train_local(peft_model, trainable_parameters(peft_model), warm,
                    LocalTrainingSettings(batch_size=8, lr=3e-3, steps=3),
                    pad_id=0, device=CPU, rng=np.random.default_rng(0))
        global_vector = get_adapter_vector(peft_model)
        for batch in batches:
            client_examples = [encode_texts(tokenizer, c[:batch], LENGTH) for c in texts]
            for steps in steps_list:
                local = LocalTrainingSettings(batch_size=batch, lr=0.1, steps=steps,
                                              optimizer="sgd", max_grad_norm=None)
                settings = FederationSettings(rounds=1, clients_per_round=CLIENTS, local=local)
                for defence in ("plain", "secagg+", "user-dp"):
                    protocol = create_protocol("secagg+" if defence == "secagg+" else "plain")
                    plan = _user_dp_plan(batch) if defence == "user-dp" else None
                    trainer = FederatedTrainer(peft_model, client_examples, [], protocol,
                                               settings, pad_id=0, device=CPU, seed=0, dp=plan)
                    view = trainer.probe_round(global_vector).result
                    assert view is not None
                    if view.view.individual_updates is not None:
                        update = np.asarray(view.view.individual_updates[0], dtype=np.float64)
                        truth = client_examples[0]
                        observed = "client 0's update"
                    else:
                        update = np.asarray(view.view.aggregate, dtype=np.float64)
                        truth = [ex for c in client_examples for ex in c]
                        observed = f"aggregate of {CLIENTS} clients"
                    t0 = time.perf_counter()
                    recovery = dager(peft_model, update, global_vector=global_vector,
                                     bos_token_id=tokenizer.bos_token_id, batch_size=len(truth),
                                     settings=DagerSettings(max_length=LENGTH,
                                                            time_limit_s=time_limit))
                    seconds = time.perf_counter() - t0
                    score = score_inversion(
                        [tokenizer.decode(s, skip_special_tokens=True)
                         for s in recovery.sequences],
                        [tokenizer.decode(s, skip_special_tokens=True) for s in truth],
                        recovered_tokens=recovery.token_ids,
                        true_tokens=sorted({t for s in truth for t in s}),
                    )
                    row = {"rank": rank, "batch": batch, "steps": steps, "defence": defence,
                           "observed": observed, "rouge1": round(score.rouge1, 4),
                           "token_f1": round(score.token_f1, 4),
                           "exact_rate": round(score.exact_rate, 4),
                           "span_usable": bool(recovery.conditions.get("token_test_usable")),
                           "seconds": round(seconds, 2)}
                    rows.append(row)
                    print(json.dumps(row), flush=True)
        model = peft_model.unload()
    return rows


MIA_FIGURES = ("auc", "auc_ci", "tpr_at_1pct_fpr", "tpr_at_1pct_fpr_ci")
"""Copied from report.json per attack; a TPR the non-members cannot resolve is null."""


def _figures(prefix: str, attack: dict[str, Any]) -> dict[str, Any]:
    return {f"{prefix}_{key}": attack.get(key) for key in MIA_FIGURES}


def membership(quick: bool) -> dict[str, Any]:
    """Train to memorise without DP and with sample-level DP ε = 3; report MIA and canaries."""
    rounds = 3 if quick else 12
    config = {
        "name": "memorise", "seed": 0, "device": "cpu",
        "model": {"max_length": 64, "lora": {"rank": 8, "alpha": 16.0,
                                             "target_modules": list(TARGETS)}},
        "data": {"records_per_client": 16, "holdout_fraction": 0.5,
                 "canaries": {"format": "pin", "per_client": 1, "clients": [0, 1],
                              "repetitions": 10}},
        "federation": {"clients": 16, "rounds": rounds, "local_steps": 5, "batch_size": 8,
                       "lr": 1e-2},
        "attacks": {"shadow_models": 1 if quick else 4, "inversion": False},
        "runs": [{"name": "no-dp", "protocol": "plain"},
                 {"name": "sample-dp-eps3", "protocol": "plain", "dp": "sample",
                  "epsilon": 3.0}],
    }
    with tempfile.TemporaryDirectory() as out:
        report = run_audit(from_mapping(AuditConfig, config), out)
    result: dict[str, Any] = {}
    for run in report["runs"]:
        leakage = run["leakage"]
        attacks = {a["attack"]: a for a in leakage["mia"]["attacks"]}
        canary = leakage.get("canary", {})
        calibrated = max((a for name, a in attacks.items() if name.startswith(("reference",
                                                                                "rmia", "lira"))),
                         key=lambda a: a["auc"])
        result[run["name"]] = {
            "perplexity": run["utility"]["perplexity"],
            "epsilon": run["privacy"]["epsilon"],
            "mia_auc": leakage["mia"]["auc"], "mia_auc_ci": leakage["mia"].get("auc_ci"),
            "mia_attack": leakage["mia"]["attack"],
            **_figures("loss", attacks["loss"]),
            **_figures("reference", attacks["reference_ratio[base]"]),
            "calibrated_attack": calibrated["attack"],
            **_figures("calibrated", calibrated),
            "attacks": {name: {key: a.get(key) for key in MIA_FIGURES}
                        for name, a in attacks.items()},
            "canary_exposure_mean": canary.get("exposure_mean"),
            "canary_baseline": canary.get("random_baseline"),
            "canary": canary,
        }
        print(json.dumps({k: v for k, v in result[run["name"]].items()
                          if k not in ("canary", "attacks")}),
              flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small grid, short training")
    parser.add_argument("--skip-inversion", action="store_true")
    parser.add_argument("--skip-mia", action="store_true")
    args = parser.parse_args()
    torch.manual_seed(0)
    out: dict[str, Any] = {
        "machine": f"{torch.get_num_threads()} threads, torch {torch.__version__}"}
    if not args.skip_inversion:
        grid = ([1, 4], [64], [1]) if args.quick else ([1, 4, 16], [8, 64, 256], [1, 5])
        out["inversion"] = inversion_grid(*grid, time_limit=10.0 if args.quick else 30.0)
    if not args.skip_mia:
        out["membership"] = membership(args.quick)
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / ("attacks.quick.json" if args.quick else "attacks.json")
    if path.exists() and (args.skip_inversion or args.skip_mia):
        out = {**json.loads(path.read_text()), **out}
    path.write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
