"""Benchmark: the one-run empirical ε (Steinke, Nasr & Jagielski 2023) against the theoretical ε.

On the built-in model, a configuration that memorises (4 clients, 20 member
records each, 16 rounds of 20 local AdamW steps at lr 2e-3, LoRA rank 64 on every
linear layer: q/k/v/o and the MLP's gate/up/down) is audited with 1000
canaries, each trained on with probability ½:

* ``no-dp``: no DP; the bound should come near its ceiling (1000 guesses, all
  correct, 95%, δ = 1e-5: about 5.8; with the guess ladder's Bonferroni
  correction about 5.1 at 800 guesses);
* ``sample-dp-eps8``: DP-SGD at ε = 8; the bound is reported beside 8 and must
  stay below it;
* the cost of auditing (``overhead``): the audited run's training plus canary
  scoring time over the same run's training time without canaries, minus 1,
  measured side by side in this process with the two runs alternated twice
  (4 rounds each, batch 10 so both train on full batches), which a shared
  machine's load swings disturb less.  ``--overhead-only`` measures just that.

Writes ``benchmarks/results/audit.json``; the table in ``benchmarks/RESULTS.md``
is written from it by hand.

    python benchmarks/audit.py                  # about 6 minutes on 2 cores
    python benchmarks/audit.py --quick          # 200 canaries, short training (smoke run)
    python benchmarks/audit.py --overhead-only  # A/B/A/B timing of auditing's cost only
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fedpriv.audits.config import AuditConfig, from_mapping
from fedpriv.audits.runner import run_audit

RESULTS = Path(__file__).resolve().parent / "results"
MEMORISING_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
"""Every linear layer of the built-in model: rank 64 here gives the adapter the capacity to
memorise ~500 random-word canaries (attention-only rank 16 reached only 0.58)."""


def config(canaries: int, runs: list[dict[str, Any]], quick: bool) -> AuditConfig:
    """Return the memorising configuration with ``canaries`` audit canaries."""
    return from_mapping(AuditConfig, {
        "name": "audit-benchmark", "seed": 0, "device": "auto",
        "model": {"max_length": 64, "lora": {"rank": 64, "alpha": 128.0,
                                             "target_modules": list(MEMORISING_TARGETS)}},
        "data": {"records_per_client": 40, "holdout_fraction": 0.5},
        "federation": {"clients": 4, "rounds": 4 if quick else 16,
                       "local_steps": 10 if quick else 20, "batch_size": 16, "lr": 2e-3},
        "attacks": {"epsilon_canaries": canaries, "inversion": False},
        "runs": runs,
    })


def overhead(m: int, repeats: int = 2) -> dict[str, Any]:
    """Time the no-DP run without and with ``m`` canaries, alternating (A B A B), 4 rounds each.

    Alternating keeps slow drifts of a shared machine out of the ratio; the
    medians of training time and of the canary scoring time are compared.  The
    batch size divides the clients' 20 members, so both runs train on full
    batches and the same number of examples.
    """
    plain_s, audited_s, scoring_s = [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(repeats):
            for canaries in (0, m):
                cfg = config(canaries, [{"name": "no-dp"}], quick=True)
                # batch 10 divides the 20 members: without canaries every batch is full
                # too (with 16, every other batch of the plain run held 4 examples).
                cfg = replace(cfg, federation=replace(cfg.federation, rounds=4, local_steps=20,
                                                      batch_size=10))
                report = run_audit(cfg, Path(tmp) / f"{canaries}-{i}")
                run = report["runs"][0]
                if canaries:
                    audited_s.append(run["cost"]["train_s"])
                    scoring_s.append(run["leakage"]["epsilon_audit"]["seconds"])
                else:
                    plain_s.append(run["cost"]["train_s"])
    result = {"plain_train_s": plain_s, "audited_train_s": audited_s, "scoring_s": scoring_s,
              "overhead": (float(np.median(audited_s)) + float(np.median(scoring_s)))
              / float(np.median(plain_s)) - 1}
    print(json.dumps(result), flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="200 canaries, short training")
    parser.add_argument("--overhead-only", action="store_true",
                        help="only the alternating timing of auditing's cost")
    args = parser.parse_args()
    m = 200 if args.quick else 1000
    if args.overhead_only:
        path = RESULTS / "audit.json"
        saved: dict[str, Any] = json.loads(path.read_text()) if path.exists() else {}
        saved["overhead_alternating"] = overhead(m)
        saved["overhead"] = saved["overhead_alternating"]["overhead"]
        saved.setdefault("acceptance", {})["overhead_at_most_10pct"] = saved["overhead"] <= 0.10
        path.write_text(json.dumps(saved, indent=2) + "\n")
        print(f"wrote {path}")
        return
    out: dict[str, Any] = {"machine": f"{torch.get_num_threads()} threads, torch "
                                      f"{torch.__version__}", "canaries": m}
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        baseline = run_audit(config(0, [{"name": "no-dp-no-audit"}], args.quick),
                             Path(tmp) / "baseline")
        audited = run_audit(config(m, [
            {"name": "no-dp"},
            {"name": "sample-dp-eps8", "dp": "sample", "epsilon": 8.0},
        ], args.quick), Path(tmp) / "audited")
        out["wall_s"] = time.perf_counter() - started
    base_run = baseline["runs"][0]
    runs: dict[str, Any] = {}
    for run in audited["runs"]:
        block = run["leakage"]["epsilon_audit"]
        runs[run["name"]] = {
            "theoretical_epsilon": run["privacy"]["epsilon"],
            "empirical_epsilon": run["leakage"]["empirical_epsilon"],
            "guesses": block["guesses"], "correct": block["correct"],
            "included": block["included"], "ladder": block["ladder"],
            "scoring_s": block["seconds"], "train_s": run["cost"]["train_s"],
            "perplexity": run["utility"]["perplexity"],
        }
        print(json.dumps({k: v for k, v in runs[run["name"]].items() if k != "ladder"}),
              flush=True)
    plain = runs["no-dp"]
    out["runs"] = runs
    out["baseline_train_s"] = base_run["cost"]["train_s"]
    # The single-run comparison is kept for reference only: with batch 16 the baseline's 20
    # members make every other batch 4 examples, so it trains on fewer examples than the
    # audited run.  ``overhead`` is the alternating, full-batch measurement.
    out["overhead_single_run"] = ((plain["train_s"] + plain["scoring_s"])
                                  / out["baseline_train_s"] - 1)
    out["overhead_alternating"] = overhead(m)
    out["overhead"] = out["overhead_alternating"]["overhead"]
    out["acceptance"] = {
        "no_dp_bound_at_least_4": plain["empirical_epsilon"] >= 4,
        "dp_bound_below_theoretical": (runs["sample-dp-eps8"]["empirical_epsilon"]
                                       < runs["sample-dp-eps8"]["theoretical_epsilon"]),
        "overhead_at_most_10pct": out["overhead"] <= 0.10,
    }
    print(json.dumps({k: out[k] for k in ("baseline_train_s", "overhead", "acceptance")}))
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / ("audit.quick.json" if args.quick else "audit.json")
    path.write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
