"""Benchmark: the cost of differential privacy on the adapter, in time, memory and utility.

Two parts, both on the built-in model with LoRA r8 on q/k/v/o:

* **step cost**, side by side in one process (this machine is shared and noisy,
  so only ratios measured together mean anything): DP-SGD through Opacus
  (``train_local_dp``, per-sample clipping and noise) against non-private LoRA
  training (``train_local``) on the *same* batches — batch 32 of 128-token
  sequences: with 32 examples and Poisson rate q = 1 every DP step takes all
  32, as the non-private step does.  ``time_ratio`` = median DP step /
  median non-private step (target ≤ 1.5); ghost clipping is timed too.
  ``mem_ratio`` = peak memory growth during training with DP / without
  (target ≤ 1.3): on CPU the growth of the peak RSS over the RSS before the
  first step, each mode in a fresh subprocess; on CUDA the peak allocated.
* **utility**: held-out perplexity after the default federation (8 clients,
  10 rounds) at ε ∈ {1, 3, 8, ∞} for sample-level DP-SGD, user-level DP-FedAvg
  (central noise) and distributed DP (Skellam noise from the clients under
  secagg+), LoRA and FFA-LoRA (distributed: LoRA only), δ = 1e-5.

Writes ``benchmarks/results/dp.json`` (``time_ratio``, ``mem_ratio``, and
``utility``: a list of {mode, lora, epsilon, perplexity, …}); the distributed
and central user-level rows are also written into ``benchmarks/results/ckks.json``
as rows of kind ``"dp-utility"`` (issue 5 reports them beside CKKS).

    python benchmarks/dp.py              # everything (about 25 minutes on 2 cores)
    python benchmarks/dp.py --skip-utility
    python benchmarks/dp.py --quick      # seconds, for CI (results/dp.quick.json)
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import transformers

from fedpriv.audits.config import AuditConfig, from_mapping, load_preset, to_dict
from fedpriv.audits.runner import run_audit
from fedpriv.dp.sample import PrivateModel, SampleDPSettings, train_local_dp
from fedpriv.lora import LoraSettings
from fedpriv.models import (
    BUILTIN_MODEL,
    attach_lora,
    get_adapter_vector,
    load_base_model,
    pick_device,
    set_adapter_vector,
    trainable_parameters,
)
from fedpriv.train.local import LocalTrainingSettings, train_local

HERE = Path(__file__).parent
RESULTS = HERE / "results" / "dp.json"
QUICK_RESULTS = HERE / "results" / "dp.quick.json"  # not committed
CKKS_RESULTS = HERE / "results" / "ckks.json"
EPSILONS = (1.0, 3.0, 8.0)
TIME_TARGET, MEM_TARGET = 1.5, 1.3


def _batch(tokenizer: Any, size: int, length: int, seed: int) -> list[list[int]]:
    """``size`` sequences of exactly ``length`` tokens of the built-in private corpus."""
    from fedpriv.data import generate_client_records

    records = generate_client_records(4, 200, seed=seed)
    stream: list[int] = []
    for client in records:
        for r in client:
            stream.extend(tokenizer(r.text, add_special_tokens=False)["input_ids"])
    if len(stream) < size * length:
        raise SystemExit("not enough built-in text for the requested batch")
    return [stream[i * length:(i + 1) * length] for i in range(size)]


def _setup(batch: int, length: int, device: torch.device) -> tuple[Any, Any, list[list[int]]]:
    model, tok = load_base_model(BUILTIN_MODEL, device=device)
    peft = attach_lora(model, LoraSettings(), seed=0)
    return peft, tok, _batch(tok, batch, length, seed=0)


def _train(mode: str, peft: Any, examples: list[list[int]], steps: int, device: torch.device,
           private: PrivateModel | None, pad_id: int) -> float:
    """Train ``steps`` steps over all of ``examples`` (one batch each); return seconds per step."""
    settings = LocalTrainingSettings(batch_size=len(examples), lr=1e-3, steps=steps,
                                     max_grad_norm=1.0)
    params = trainable_parameters(peft)
    rng = np.random.default_rng(0)
    t0 = time.perf_counter()
    if mode == "plain":
        train_local(peft, params, examples, settings, pad_id=pad_id, device=device, rng=rng)
    else:
        assert private is not None
        gen = torch.Generator(device=device)
        gen.manual_seed(0)
        train_local_dp(private, params, examples, settings, private.settings, pad_id=pad_id,
                       device=device, rng=rng, noise_generator=gen)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return (time.perf_counter() - t0) / steps


def _private(peft: Any, clipping: str) -> PrivateModel:
    return PrivateModel(peft, SampleDPSettings(noise_multiplier=1.0, max_grad_norm=1.0,
                                               clipping=clipping))


def step_times(batch: int, length: int, steps: int, repeats: int,
               device: torch.device) -> dict[str, Any]:
    """Median seconds per step of each mode, alternating modes in every repeat."""
    peft, tok, examples = _setup(batch, length, device)
    pad_id = tok.pad_token_id or 0
    start = get_adapter_vector(peft)
    times: dict[str, list[float]] = {"plain": [], "per_sample": [], "ghost": []}
    for rep in range(repeats + 1):  # the first repeat warms up
        for mode in times:
            set_adapter_vector(peft, start)
            private = None if mode == "plain" else _private(peft, mode)
            try:
                seconds = _train(mode, peft, examples, steps, device, private, pad_id)
            finally:
                if private is not None:
                    private.close()
            if rep > 0:
                times[mode].append(seconds)
    med = {m: statistics.median(v) for m, v in times.items()}
    return {
        "plain_step_s": med["plain"], "dp_step_s": med["per_sample"],
        "ghost_step_s": med["ghost"],
        "time_ratio": med["per_sample"] / med["plain"],
        "ghost_time_ratio": med["ghost"] / med["plain"],
        "samples": {m: v for m, v in times.items()},
    }


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def memory_probe(mode: str, batch: int, length: int, steps: int) -> None:
    """Subprocess body: print the peak memory growth of training in ``mode`` (bytes)."""
    device = pick_device("auto")
    peft, tok, examples = _setup(batch, length, device)
    private = None if mode == "plain" else _private(peft, mode)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
    else:
        before = _rss_bytes()
    _train(mode, peft, examples, steps, device, private, tok.pad_token_id or 0)
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device)
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({"mode": mode, "growth_bytes": peak - before, "before_bytes": before}))


def peak_memory(batch: int, length: int, steps: int, repeats: int) -> dict[str, Any]:
    """Median peak growth per mode over ``repeats`` fresh subprocesses each."""
    growth: dict[str, list[int]] = {"plain": [], "per_sample": [], "ghost": []}
    for _ in range(repeats):
        for mode in growth:
            out = subprocess.run(
                [sys.executable, __file__, "--memory-probe", mode, "--batch", str(batch),
                 "--length", str(length), "--steps", str(steps)],
                check=True, capture_output=True, text=True, timeout=900,
            )
            growth[mode].append(json.loads(out.stdout.strip().splitlines()[-1])["growth_bytes"])
    med = {m: statistics.median(v) for m, v in growth.items()}
    return {
        "plain_peak_growth_mb": med["plain"] / 2**20,
        "dp_peak_growth_mb": med["per_sample"] / 2**20,
        "ghost_peak_growth_mb": med["ghost"] / 2**20,
        "mem_ratio": med["per_sample"] / med["plain"],
        "ghost_mem_ratio": med["ghost"] / med["plain"],
        "memory_measure": "peak allocated (CUDA)" if torch.cuda.is_available()
        else "peak RSS growth over RSS before the first step (CPU, fresh subprocess)",
    }


def utility_config(quick: bool) -> AuditConfig:
    """Return the utility grid as one audit: every mode × ε × LoRA/FFA on one federation."""
    base = to_dict(load_preset("quick" if quick else "default"))
    base["name"] = "dp-benchmark"
    base["data"]["canaries"] = {"per_client": 0}
    epsilons = EPSILONS[-1:] if quick else EPSILONS
    runs: list[dict[str, Any]] = [
        {"name": "none-lora", "protocol": "plain"},
        {"name": "none-ffa", "protocol": "plain", "ffa": True},
    ]
    for eps in epsilons:
        for ffa in (False, True):
            tag = "ffa" if ffa else "lora"
            runs.append({"name": f"sample-{tag}-eps{eps:g}", "protocol": "plain", "dp": "sample",
                         "epsilon": eps, "ffa": ffa})
            runs.append({"name": f"user-{tag}-eps{eps:g}", "protocol": "plain", "dp": "user",
                         "epsilon": eps, "ffa": ffa})
        runs.append({"name": f"distributed-lora-eps{eps:g}", "protocol": "secagg+",
                     "dp": "distributed", "epsilon": eps})
    base["runs"] = runs
    return from_mapping(AuditConfig, base)


def utility(quick: bool) -> list[dict[str, Any]]:
    """Run the grid; one row per run."""
    cfg = utility_config(quick)
    with tempfile.TemporaryDirectory() as out:
        report = run_audit(cfg, out)
    rows = []
    for run in report["runs"]:
        if run["status"] != "ok":
            raise SystemExit(f"run {run['name']} failed: {run['error']}")
        rows.append({
            "mode": run["dp"]["mode"],
            "lora": "ffa" if run["lora"]["ffa"] else "lora",
            "epsilon": run["privacy"]["epsilon"],
            "target_epsilon": run["dp"].get("target_epsilon"),
            "perplexity": run["utility"]["perplexity"],
            "base_perplexity": run["utility"]["base_perplexity"],
            "noise_multiplier": run["dp"].get("noise_multiplier"),
            "accountant": run["privacy"]["accountant"],
            "protocol": run["protocol"],
            "wall_s": run["cost"]["wall_s"],
        })
        print(f"  {run['name']:<28} ε={rows[-1]['epsilon']} ppl={rows[-1]['perplexity']:.2f}",
              flush=True)
    return rows


def _write_ckks_rows(rows: list[dict[str, Any]], path: Path) -> None:
    """Put the distributed vs central user-level rows into ckks.json (issue 5's table)."""
    if not path.exists():
        return
    data = json.loads(path.read_text())
    kept = [r for r in data.get("rows", []) if r.get("kind") != "dp-utility"]
    for r in rows:
        if r["mode"] in ("distributed", "user") and r["lora"] == "lora":
            kept.append({"kind": "dp-utility", **r})
    data["rows"] = kept
    path.write_text(json.dumps(data, indent=2) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--length", type=int, default=128)
    parser.add_argument("--steps", type=int, default=10, help="steps per timing sample")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="tiny sizes, for CI")
    parser.add_argument("--skip-utility", action="store_true")
    parser.add_argument("--memory-probe", choices=["plain", "per_sample", "ghost"],
                        help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    transformers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()
    if args.memory_probe:
        memory_probe(args.memory_probe, args.batch, args.length, args.steps)
        return
    if args.quick:
        args.batch, args.length, args.steps, args.repeats = 8, 32, 2, 1
    device = pick_device("auto")
    print(f"step cost: batch {args.batch} × {args.length} tokens, {args.steps} steps × "
          f"{args.repeats} repeats on {device}", flush=True)
    result: dict[str, Any] = {
        "device": str(device), "batch": args.batch, "length": args.length,
        "time_target": TIME_TARGET, "mem_target": MEM_TARGET,
    }
    result.update(step_times(args.batch, args.length, args.steps, args.repeats, device))
    print(f"  time_ratio {result['time_ratio']:.3f} (ghost {result['ghost_time_ratio']:.3f})",
          flush=True)
    result.update(peak_memory(args.batch, args.length, args.steps, args.repeats))
    print(f"  mem_ratio {result['mem_ratio']:.3f} (ghost {result['ghost_mem_ratio']:.3f})",
          flush=True)
    out = args.out or (QUICK_RESULTS if args.quick else RESULTS)
    if not args.skip_utility:
        print("utility grid:", flush=True)
        result["utility"] = utility(args.quick)
    elif out.exists():  # keep the last measured utility rows
        result["utility"] = json.loads(out.read_text()).get("utility", [])
    else:
        result["utility"] = []
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    if not args.quick and not args.skip_utility:
        _write_ckks_rows(result["utility"], CKKS_RESULTS)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
