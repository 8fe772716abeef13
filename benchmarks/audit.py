"""Benchmark: can the audits tell ε = 1 from ε = 8? One-run bounds against their idealized ceilings.

Every audit gives a one-run lower bound on ε (Steinke, Nasr & Jagielski 2023,
the (ε, δ) analysis, and the f-DP analysis of Mahloujifar, Melis & Chaudhuri
2024 on the same guesses), recorded beside its **idealized ceiling**
(``idealized_lower_bound``: the median bound a perfect attack reaches on an
ideal Gaussian mechanism of exactly the stated ε, with the same m, guess ladder
and analysis; :func:`fedpriv.audits.ceiling.idealized_lower_bound`).  Parts:

* ``text`` — black-box input-space canaries on the final model (memorising
  configuration: 4 clients × 20 members, 16 rounds × 20 AdamW steps, LoRA
  rank 64 on every linear layer) without DP;
* ``text-dp`` — the same under sample-level DP at ε = 8 (8 rounds × 10 steps),
  where the same run also carries ``gradient`` canaries: white-box Dirac
  canaries inserted into one client's DP-SGD steps, scored on what the server
  saw (every round's update of that client) and on the final model;
* ``gradient`` — gradient canaries alone under sample-level DP at ε = 8 with
  SGD as the local optimizer (a client's update is then linear in its noised
  gradient sums), on the cheap federation below;
* ``client`` — canary clients (Andrew et al. 2024) under user-level DP at ε = 8
  and ε = 4 (every client every round) and at ε = 8 with Poisson client
  sampling at q = ½, and distributed DP at ε = 8, scored on every round's
  released aggregate and on the final model, with Andrew et al.'s ε estimate;
* ``mutation`` — at a stated ε = 1, each DP mode with its noise divided by 10
  and removed (``noise/10``, ``no-noise``) must be flagged; with the real noise
  (three seeds) it must not;
* ``overhead`` — auditing's cost: training plus scoring with canaries over
  training without, runs alternated A/B/A/B.

Writes ``benchmarks/results/audit.json``: ``rows`` (one per run × audit ×
observation × analysis, the keys of issue 16), ``acceptance`` and the raw
reports' audit blocks; the table in ``benchmarks/RESULTS.md`` is written from it.

    python benchmarks/audit.py                  # about 30 minutes on 2 cores
    python benchmarks/audit.py --quick          # a smoke run (fewer canaries, rounds)
    python benchmarks/audit.py --only client    # one part: text, text-dp, client, mutation,
                                                #   overhead
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Iterator
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
memorise ~500 random canaries (attention-only rank 16 reached only 0.58)."""
PARTS = ("text", "text-dp", "gradient", "client", "mutation", "overhead")


def memorising(canaries: int, runs: list[dict[str, Any]], quick: bool,
               gradient: int = 0) -> AuditConfig:
    """Return the memorising configuration with ``canaries`` text canaries."""
    return from_mapping(AuditConfig, {
        "name": "audit-benchmark", "seed": 0, "device": "auto",
        "model": {"max_length": 64, "lora": {"rank": 64, "alpha": 128.0,
                                             "target_modules": list(MEMORISING_TARGETS)}},
        "data": {"records_per_client": 40, "holdout_fraction": 0.5},
        "federation": {"clients": 4, "rounds": 4 if quick else 16,
                       "local_steps": 10 if quick else 20, "batch_size": 16, "lr": 2e-3},
        "attacks": {"epsilon_canaries": canaries, "inversion": False,
                    "gradient_canaries": gradient},
        "runs": runs,
    })


def cheap(runs: list[dict[str, Any]], *, seed: int, quick: bool, client_canaries: int,
          gradient: int, text: int = 0) -> AuditConfig:
    """Return a small federation where training is cheap (the client audit needs rounds)."""
    return from_mapping(AuditConfig, {
        "name": "audit-benchmark-cheap", "seed": seed, "device": "auto",
        "model": {"max_length": 48, "lora": {"rank": 4, "alpha": 8.0,
                                             "target_modules": ["q_proj", "v_proj"]}},
        "data": {"records_per_client": 12, "holdout_fraction": 0.25},
        "federation": {"clients": 8, "rounds": 4 if quick else 12, "local_steps": 2,
                       "batch_size": 4, "lr": 5e-3},
        "attacks": {"epsilon_canaries": text, "inversion": False,
                    "client_canaries": client_canaries, "gradient_canaries": gradient},
        "runs": runs,
    })


def audits(run: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any], float | None]]:
    """Yield (canaries, observed, observation block, reference ε) of every audit of a run."""
    leakage = run["leakage"]
    text = leakage.get("epsilon_audit")
    if text:
        yield "text", "final_model", text, text.get("reference_epsilon")
    for kind, key in (("gradient", "gradient_audit"), ("client", "client_audit")):
        block = leakage.get(key)
        if block:
            for observed, obs in block["observations"].items():
                yield kind, observed, obs, block.get("reference_epsilon")


def rows_of(run: dict[str, Any], overhead: float | None) -> list[dict[str, Any]]:
    """Return the result rows (issue 16's keys) of one run of a report."""
    rows = []
    stated = run["privacy"]["epsilon"]
    for canaries, observed, obs, reference in audits(run):
        fdp = obs.get("f_dp") or {}
        analyses = [("eps-delta", obs["epsilon_lower_bound"], obs.get("idealized_lower_bound"))]
        if fdp:
            analyses.append(("f-dp", fdp["epsilon_lower_bound"],
                             obs.get("idealized_lower_bound_f_dp")))
        if obs.get("epsilon_estimate") is not None:
            analyses.append(("estimate", None, None))
        for analysis, bound, ceiling in analyses:
            rows.append({
                "run": run["name"], "dp": run["dp"]["mode"], "stated_epsilon": stated,
                "reference_epsilon": reference, "canaries": canaries, "observed": observed,
                "analysis": analysis, "epsilon_lower_bound": bound,
                "idealized_lower_bound": ceiling,
                "fraction_of_ceiling": (bound / ceiling if bound is not None and ceiling
                                        else None),
                "epsilon_estimate": (obs.get("epsilon_estimate") if analysis == "estimate"
                                     else None),
                "mutation": run["privacy"].get("mutation"),
                "flagged": bool(reference is not None and bound is not None
                                and bound > reference),
                "overhead": overhead,
            })
    return rows


def audit(cfg: AuditConfig, tmp: Path, name: str, **kwargs: Any) -> dict[str, Any]:
    started = time.perf_counter()
    report = run_audit(cfg, tmp / name, **kwargs)
    print(f"[{name}] {time.perf_counter() - started:.0f} s", file=sys.stderr, flush=True)
    return report


def part_text(tmp: Path, quick: bool) -> list[dict[str, Any]]:
    """No DP: text canaries on the memorising configuration."""
    m = 200 if quick else 1000
    report = audit(memorising(m, [{"name": "no-dp"}], quick), tmp, "text")
    return [row for run in report["runs"] for row in rows_of(run, None)]


def part_text_dp(tmp: Path, quick: bool) -> list[dict[str, Any]]:
    """Sample-level DP at ε = 8: black-box text and white-box gradient canaries, one run.

    Half the memorising schedule (8 rounds × 10 steps): under DP-SGD the rate
    comes from the clients' public size (20 members) while the included text
    canaries sit in their data too, so every Poisson batch holds ~6× more
    examples than without canaries.
    """
    m = 200 if quick else 1000
    cfg = memorising(m, [{"name": "sample-dp-eps8", "dp": "sample", "epsilon": 8.0}], quick,
                     gradient=m)
    if not quick:
        cfg = replace(cfg, federation=replace(cfg.federation, rounds=8, local_steps=10))
    report = audit(cfg, tmp, "text-dp")
    return [row for run in report["runs"] for row in rows_of(run, None)]


def part_gradient(tmp: Path, quick: bool) -> list[dict[str, Any]]:
    """Sample-level DP at ε = 8 with SGD as the local optimizer: the white-box audit's best case.

    With SGD a client's update is linear in its noised gradient sums, so the
    canaries' coordinates summed over the rounds are the Gaussian statistic;
    AdamW (the ``text-dp`` part) rescales each coordinate by its own history.
    """
    m = 200 if quick else 1000
    cfg = cheap([{"name": "sample-dp-eps8-sgd", "dp": "sample", "epsilon": 8.0}], seed=0,
                quick=quick, client_canaries=0, gradient=m)
    cfg = replace(cfg, federation=replace(cfg.federation, optimizer="sgd", lr=0.05))
    report = audit(cfg, tmp, "gradient")
    return [row for run in report["runs"] for row in rows_of(run, None)]


def part_client(tmp: Path, quick: bool) -> list[dict[str, Any]]:
    m = 200 if quick else 1000
    report = audit(cheap([
        {"name": "user-dp-eps8", "dp": "user", "epsilon": 8.0},
        {"name": "user-dp-eps4", "dp": "user", "epsilon": 4.0},
        {"name": "distributed-dp-eps8", "protocol": "secagg", "dp": "distributed",
         "epsilon": 8.0},
    ], seed=0, quick=quick, client_canaries=m, gradient=0), tmp, "client")
    rows = [row for run in report["runs"] for row in rows_of(run, None)]
    sampled = cheap([{"name": "user-dp-eps8-q0.5", "dp": "user", "epsilon": 8.0}], seed=0,
                    quick=quick, client_canaries=m, gradient=0)
    sampled = replace(sampled, federation=replace(sampled.federation, clients_per_round=4))
    report = audit(sampled, tmp, "client-sampled")  # Poisson client sampling at q = ½
    return rows + [row for run in report["runs"] for row in rows_of(run, None)]


MUTATION_RUNS = [
    {"name": "sample-eps1", "dp": "sample", "epsilon": 1.0},
    {"name": "user-eps1", "dp": "user", "epsilon": 1.0},
    {"name": "distributed-eps1", "protocol": "secagg", "dp": "distributed", "epsilon": 1.0},
]


def part_mutation(tmp: Path, quick: bool) -> list[dict[str, Any]]:
    m = 200 if quick else 1000
    rows = []
    cases = [(0, 0.1), (0, 0.0)] + [(seed, 1.0) for seed in range(1 if quick else 3)]
    for seed, scale in cases:
        cfg = cheap(MUTATION_RUNS, seed=seed, quick=quick, client_canaries=m, gradient=m)
        report = audit(cfg, tmp, f"mutation-{seed}-{scale}", noise_scale=scale)
        for run in report["runs"]:
            for row in rows_of(run, None):
                rows.append({**row, "seed": seed})
    return rows


def part_overhead(tmp: Path, quick: bool, repeats: int = 2) -> dict[str, Any]:
    """Time the no-DP run without and with canaries, alternating (A B A B), 4 rounds each.

    Alternating keeps slow drifts of a shared machine out of the ratio; the
    medians of training time and of the scoring time are compared.  The batch
    size divides the clients' 20 members, so both runs train on full batches.
    """
    m = 200 if quick else 1000
    plain_s, audited_s, scoring_s = [], [], []
    for i in range(repeats):
        for canaries in (0, m):
            cfg = memorising(canaries, [{"name": "no-dp"}], quick=True)
            cfg = replace(cfg, federation=replace(cfg.federation, rounds=4, local_steps=20,
                                                  batch_size=10))
            report = audit(cfg, tmp, f"overhead-{canaries}-{i}")
            run = report["runs"][0]
            if canaries:
                audited_s.append(run["cost"]["train_s"])
                scoring_s.append(run["leakage"]["epsilon_audit"]["seconds"])
            else:
                plain_s.append(run["cost"]["train_s"])
    return {"plain_train_s": plain_s, "audited_train_s": audited_s, "scoring_s": scoring_s,
            "overhead": (float(np.median(audited_s)) + float(np.median(scoring_s)))
            / float(np.median(plain_s)) - 1}


def acceptance(rows: list[dict[str, Any]], overhead: float | None) -> dict[str, Any]:
    """Check issue 16's targets on the rows (None where a part was not run)."""
    def estimate_error(stated: float) -> float | None:
        found = [abs(r["epsilon_estimate"] / r["stated_epsilon"] - 1) for r in rows
                 if r["canaries"] == "client" and r["observed"] == "all_rounds"
                 and r["analysis"] == "estimate" and r["dp"] == "user"
                 and r["stated_epsilon"] and abs(r["stated_epsilon"] - stated) < 0.5]
        return min(found) if found else None

    mutated = [r for r in rows if r["mutation"] is not None]
    honest = [r for r in rows if r["mutation"] is None and r["stated_epsilon"] is not None
              and r["stated_epsilon"] <= 1.01]
    mutated_runs: dict[tuple[Any, ...], bool] = {}
    for r in mutated:
        key = (r["run"], r["mutation"], r.get("seed"))
        mutated_runs[key] = mutated_runs.get(key, False) or r["flagged"]
    no_dp = [r["epsilon_lower_bound"] for r in rows if r["dp"] == "none"
             and r["analysis"] == "eps-delta"]
    values = {
        "no_dp_text_bound": max(no_dp) if no_dp else None,
        "every_mutation_flagged": all(mutated_runs.values()) if mutated_runs else None,
        "mutations": {f"{k[0]} {k[1]} seed {k[2]}": v for k, v in mutated_runs.items()},
        "no_correct_run_flagged": (not any(r["flagged"] for r in honest)) if honest else None,
        "overhead": overhead,
        "overhead_at_most_10pct": None if overhead is None else overhead <= 0.10,
        "estimate_error_eps8": estimate_error(8.0),
        "estimate_error_eps4": estimate_error(4.0),
    }
    for stated in (8.0, 4.0):
        found = [r["fraction_of_ceiling"] for r in rows
                 if r["dp"] == "user" and r["canaries"] == "client" and r["mutation"] is None
                 and r["observed"] == "all_rounds" and r["fraction_of_ceiling"] is not None
                 and r["stated_epsilon"] and abs(r["stated_epsilon"] - stated) < 0.5]
        values[f"user_all_rounds_eps{stated:g}_best_fraction_of_ceiling"] = (
            max(found) if found else None)
    for canaries, target in (("gradient", 0.9), ("text", 0.5)):
        found = [r["fraction_of_ceiling"] for r in rows  # the targets are at stated ε = 8
                 if r["dp"] == "sample" and r["canaries"] == canaries and r["mutation"] is None
                 and r["fraction_of_ceiling"] is not None and r["stated_epsilon"] > 7]
        best = max(found) if found else None
        values[f"sample_{canaries}_best_fraction_of_ceiling"] = best
        values[f"sample_{canaries}_at_least_{target:g}"] = None if best is None else best >= target
    return values


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer canaries and rounds")
    parser.add_argument("--only", choices=PARTS, action="append",
                        help="run only this part (repeatable); default: all")
    args = parser.parse_args()
    parts = args.only or list(PARTS)
    path = RESULTS / ("audit.quick.json" if args.quick else "audit.json")
    saved: dict[str, Any] = json.loads(path.read_text()) if path.exists() else {}
    kept = [r for r in saved.get("rows", []) if r.get("part") not in parts]
    rows: list[dict[str, Any]] = []
    started = time.perf_counter()
    overhead = saved.get("overhead") if "overhead" not in parts else None
    with tempfile.TemporaryDirectory() as tmp:
        for part in parts:
            if part == "overhead":
                result = part_overhead(Path(tmp), args.quick)
                saved["overhead_alternating"] = result
                overhead = result["overhead"]
                print(json.dumps(result), flush=True)
                continue
            runner = {"text": part_text, "text-dp": part_text_dp, "gradient": part_gradient,
                      "client": part_client, "mutation": part_mutation}[part]
            for row in runner(Path(tmp), args.quick):
                row["part"] = part
                rows.append(row)
                print(json.dumps(row), flush=True)
    rows = kept + rows
    for row in rows:
        if row["canaries"] == "text" and row["mutation"] is None:
            row["overhead"] = overhead
    saved.update({
        "machine": f"{torch.get_num_threads()} threads, torch {torch.__version__}",
        "wall_s": time.perf_counter() - started, "rows": rows, "overhead": overhead,
        "acceptance": acceptance(rows, overhead),
    })
    for stale in ("runs", "canaries", "baseline_train_s", "overhead_single_run"):
        saved.pop(stale, None)  # the layout before issue 16
    print(json.dumps(saved["acceptance"], indent=2))
    RESULTS.mkdir(exist_ok=True)
    path.write_text(json.dumps(saved, indent=2) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
