"""Benchmark: cross-device client throughput — sequential loop vs batched trainer vs pfl-research.

One federation, side by side in one run: ``--clients`` built-in users
(:func:`fedpriv.data.population.generate_user_records`) with 8 records of at most
64 tokens each, the built-in tiny Llama with a rank-4 LoRA adapter, 1 local SGD
step of batch 8 per client per round (``--local-steps`` for more).  For 10, 100
and 1,000 clients per round it times ``FederatedTrainer.train_round`` with

* ``trainer = "sequential"``: clients one after another (adapter load, fresh
  optimiser, forward/backward per client), and
* ``trainer = "batched"``: :class:`fedpriv.train.batched.BatchedClientTrainer`,
  a chunk of clients in one forward/backward with stacked adapters,

without DP and under sample-level DP-SGD (Opacus per-sample clipping
sequentially; per-example clipping within each client batched), with the same
DP secret on both sides so both draw the same noise.  Round 0 of every run is
the warm-up; ``client_steps_per_s`` = clients × local steps of the timed rounds
over their wall seconds.  Runs alternate (sequential, batched, sequential, …):
this machine is shared and noisy, so only ratios measured side by side mean
anything.  ``max_param_diff`` is the largest difference between the two
trainers' global adapters after the same rounds (float rounding only).

The peer, pfl-research (``pfl`` on PyPI, PyTorch backend), trains the same
federation (same model, adapter, clients and rounds' cohorts, local steps,
batch, FedAvg weights) through its own simulation API — see
``benchmarks/_pfl_peer.py``.  pfl pins dependencies of its own, so it runs in a
separate environment given by ``--pfl-python`` (or ``$FEDPRIV_PFL_PYTHON``):

    python3 -m venv /work/pflvenv
    /work/pflvenv/bin/pip install torch==2.13.0 -e . "pfl[pytorch]==0.6.0"
    python benchmarks/scale.py --pfl-python /work/pflvenv/bin/python

Without it the pfl rows are left out (and the run says so).  ``--utility-from
REPORT.json`` copies the utility rows of a ``cross-device`` audit
(``fedpriv audit --preset cross-device``) into the result.

Results go to ``benchmarks/results/scale.json``: ``rows`` (``trainer``,
``clients_per_round``, ``records_per_client``, ``local_steps``, ``dp``,
``client_steps_per_s``, ``peak_mem_mb``, ``max_param_diff``, ``device``, …),
``ratios`` (batched over sequential and over pfl per setting) and ``utility``.
Targets (issue 17): batched ≥ pfl and ≥ 3× sequential at 100 clients/round on
2 CPU cores; on a GPU ≥ 50× and 1,000 clients/round in under 10 s.

    python benchmarks/scale.py                   # the full run (minutes)
    python benchmarks/scale.py --quick           # seconds: a smoke test, not committed
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import transformers

from fedpriv.data.population import generate_user_records
from fedpriv.dp.config import make_dp_config, plan_dp
from fedpriv.lora import LoraSettings
from fedpriv.models import BUILTIN_MODEL, attach_lora, get_adapter_vector, load_base_model
from fedpriv.protocols import create
from fedpriv.train import FederatedTrainer, FederationSettings, encode_texts
from fedpriv.train.local import LocalTrainingSettings

HERE = Path(__file__).parent
RESULTS = HERE / "results" / "scale.json"
QUICK_RESULTS = HERE / "results" / "scale.quick.json"  # not committed
RECORDS, MAX_LEN, BATCH, LR = 8, 64, 8, 0.5
SECRET = bytes(range(32))  # the same DP secret on both sides: the same noise


class PeakMemory:
    """Peak resident memory (CPU, sampled every 2 ms) or peak CUDA allocation inside a block."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.peak_mb = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @staticmethod
    def _rss_mb() -> float:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20

    def _poll(self) -> None:
        while not self._stop.is_set():
            self.peak_mb = max(self.peak_mb, self._rss_mb())
            self._stop.wait(0.002)

    def __enter__(self) -> PeakMemory:
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        elif os.path.exists("/proc/self/statm"):
            self.peak_mb = self._rss_mb()
            self._thread = threading.Thread(target=self._poll, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.peak_mb = torch.cuda.max_memory_allocated(self.device) / 2**20
        elif self._thread is not None:
            self._stop.set()
            self._thread.join()


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    return f"cpu ({platform.processor() or platform.machine()}, {os.cpu_count()} cores, " \
           f"{torch.get_num_threads()} torch threads)"


def _dp_plan(examples: list[list[list[int]]], per_round: int, local_steps: int) -> Any:
    cfg = make_dp_config("sample", params={"noise_multiplier": 1.0, "clip": 1.0})
    return plan_dp(cfg, client_sizes=[len(e) for e in examples],
                   rounds_per_client=[1] * len(examples), rounds=1,
                   clients_per_round=per_round, local_steps=[local_steps] * len(examples),
                   local_sample_rates=[min(1.0, BATCH / len(e)) for e in examples])


def run_fedpriv(base: Any, examples: list[list[list[int]]], *, trainer: str, per_round: int,
                local_steps: int, rounds: int, dp: str, pad_id: int, device: torch.device,
                lora: LoraSettings) -> dict[str, Any]:
    """Time ``rounds`` rounds of ``FederatedTrainer.train_round`` (round 0 untimed)."""
    model = attach_lora(base, lora, seed=0)
    try:
        settings = FederationSettings(
            rounds=rounds, clients_per_round=per_round, trainer=trainer,
            local=LocalTrainingSettings(batch_size=BATCH, lr=LR, steps=local_steps,
                                        optimizer="sgd", max_grad_norm=None))
        plan = _dp_plan(examples, per_round, local_steps) if dp == "sample" else None
        fed = FederatedTrainer(model, examples, [], create("plain"), settings, pad_id=pad_id,
                               device=device, seed=0, dp=plan, dp_secret=SECRET)
        vector = get_adapter_vector(model)
        ends: list[float] = []
        losses: list[float] = []
        with PeakMemory(device) as memory, fed._sample_dp():
            start = time.perf_counter()
            for r in range(rounds):
                outcome = fed.train_round(r, vector)
                vector = outcome.global_vector
                losses.append(float(np.nanmean(outcome.losses)))
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                ends.append(time.perf_counter())
        timed = ends[-1] - ends[0]
        batched = fed.batched_trainer()
        return {
            "trainer": trainer, "clients_per_round": per_round, "records_per_client": RECORDS,
            "local_steps": local_steps, "batch_size": BATCH, "dp": dp, "rounds": rounds,
            "client_steps_per_s": (rounds - 1) * per_round * local_steps / timed,
            "wall_s": timed, "warmup_round_s": ends[0] - start,
            "peak_mem_mb": memory.peak_mb, "device": _device_name(device),
            "first_loss": losses[0], "last_loss": losses[-1],
            "chunk_clients": None if batched is None else batched.chunk_size(
                settings.local, MAX_LEN, dp=dp == "sample"),
            "vector": vector,
        }
    finally:
        model.unload()


def run_pfl_rows(python: str, *, clients: int, per_round: list[int], local_steps: int,
                 rounds: int, threads: int, device: str) -> list[dict[str, Any]]:
    """Run ``_pfl_peer.py --json`` in pfl's environment; return its rows (with vectors)."""
    out = HERE / "results" / ".pfl_rows.json"
    cmd = [python, str(HERE / "_pfl_peer.py"), "--json", str(out), "--clients", str(clients),
           "--per-round", *map(str, per_round), "--rounds", str(rounds), "--threads",
           str(threads), "--local-steps", str(local_steps), "--device", device]
    subprocess.run(cmd, check=True)
    rows = json.loads(out.read_text())
    out.unlink()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=1000, help="federation size (users)")
    parser.add_argument("--per-round", type=int, nargs="+", default=[10, 100, 1000])
    parser.add_argument("--dp-per-round", type=int, nargs="*", default=[100],
                        help="clients/round of the sample-level DP rows")
    parser.add_argument("--local-steps", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=3, help="per run, round 0 the warm-up")
    parser.add_argument("--repeats", type=int, default=2,
                        help="alternated runs per setting (1 at 1,000 clients/round on CPU)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--pfl-python", default=os.environ.get("FEDPRIV_PFL_PYTHON"),
                        help="a Python with pfl installed (default: $FEDPRIV_PFL_PYTHON)")
    parser.add_argument("--utility-from", type=Path, default=None,
                        help="report.json of a cross-device audit: copy its utility rows")
    parser.add_argument("--quick", action="store_true", help="seconds: a smoke test")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    if args.quick:
        args.clients, args.per_round, args.dp_per_round = 24, [4, 12], [8]
        args.rounds, args.repeats = 2, 1
    out = args.out or (QUICK_RESULTS if args.quick else RESULTS)
    torch.set_num_threads(args.threads)
    transformers.utils.logging.disable_progress_bar()
    logging.getLogger("fedpriv").setLevel(logging.WARNING)
    device = torch.device(args.device)

    base, tok = load_base_model(BUILTIN_MODEL, device=device)
    users = generate_user_records(args.clients, RECORDS, seed=0)
    examples = [encode_texts(tok, [r.text for r in user], MAX_LEN) for user in users]
    tokens = [len(s) for c in examples for s in c]
    lora = LoraSettings(rank=4, alpha=8.0)
    print(f"{args.clients} users x {RECORDS} records, {np.mean(tokens):.1f} tokens/record "
          f"(max {max(tokens)}); {args.rounds} rounds per run (round 0 warm-up), "
          f"{args.local_steps} local SGD step(s) of batch {BATCH}; LoRA r={lora.rank}; "
          f"{_device_name(device)}; load {os.getloadavg()[0]:.2f}", flush=True)

    rows: list[dict[str, Any]] = []
    ratios: list[dict[str, Any]] = []
    last_vectors: dict[int, np.ndarray] = {}  # the sequential loop's final adapter, no DP
    settings = [(p, "none") for p in args.per_round] + [(p, "sample") for p in args.dp_per_round]
    for per_round, dp in settings:
        big = per_round >= 1000 and device.type == "cpu"
        repeats, rounds = (1, 2) if big else (args.repeats, args.rounds)
        runs: dict[str, list[dict[str, Any]]] = {"sequential": [], "batched": []}
        for _ in range(repeats):
            for trainer in ("sequential", "batched"):
                runs[trainer].append(run_fedpriv(
                    base, examples, trainer=trainer, per_round=per_round,
                    local_steps=args.local_steps, rounds=rounds, dp=dp,
                    pad_id=tok.pad_token_id, device=device, lora=lora))
        diff = max(float(np.abs(s["vector"] - b["vector"]).max())
                   for s, b in zip(runs["sequential"], runs["batched"], strict=True))
        if dp == "none":
            last_vectors[per_round] = runs["sequential"][-1]["vector"]
        medians = {}
        for trainer, done in runs.items():
            rates = [r["client_steps_per_s"] for r in done]
            row = {k: v for k, v in done[-1].items() if k != "vector"}
            row.update(client_steps_per_s=statistics.median(rates), runs=rates,
                       peak_mem_mb=max(r["peak_mem_mb"] for r in done), max_param_diff=diff)
            rows.append(row)
            medians[trainer] = row["client_steps_per_s"]
        ratio = medians["batched"] / medians["sequential"]
        ratios.append({"clients_per_round": per_round, "dp": dp,
                       "batched_over_sequential": ratio})
        print(f"{per_round:5d} clients/round, dp={dp:6s}: sequential "
              f"{medians['sequential']:7.2f}, batched {medians['batched']:7.2f} client-steps/s "
              f"(x{ratio:.2f}); max |Δ| {diff:.1e}; load {os.getloadavg()[0]:.2f}", flush=True)

    if args.pfl_python:
        pfl_rows = run_pfl_rows(args.pfl_python, clients=args.clients, per_round=args.per_round,
                                local_steps=args.local_steps, rounds=args.rounds,
                                threads=args.threads, device=args.device)
        for row in pfl_rows:
            seq = next(r for r in rows if r["trainer"] == "sequential" and r["dp"] == "none"
                       and r["clients_per_round"] == row["clients_per_round"])
            bat = next(r for r in rows if r["trainer"] == "batched" and r["dp"] == "none"
                       and r["clients_per_round"] == row["clients_per_round"])
            # pfl vs fedpriv's sequential loop after the same rounds (same cohorts)
            row["max_param_diff"] = float(np.abs(
                np.asarray(row.pop("adapter_vector"), dtype=np.float32)
                - last_vectors[row["clients_per_round"]]).max())
            row["device"] = _device_name(device)
            rows.append(row)
            entry = next(r for r in ratios if r["clients_per_round"] == row["clients_per_round"]
                         and r["dp"] == "none")
            entry["batched_over_pfl"] = bat["client_steps_per_s"] / row["client_steps_per_s"]
            entry["pfl_over_sequential"] = row["client_steps_per_s"] / seq["client_steps_per_s"]
            print(f"{row['clients_per_round']:5d} clients/round: pfl "
                  f"{row['client_steps_per_s']:7.2f} client-steps/s; batched/pfl "
                  f"x{entry['batched_over_pfl']:.2f}", flush=True)
    else:
        print("pfl rows left out: give --pfl-python (a Python with `pfl[pytorch]` installed)")

    previous = json.loads(out.read_text()) if out.exists() else {}
    utility = previous.get("utility", [])
    if args.utility_from is not None:
        utility = utility_rows(json.loads(args.utility_from.read_text()))
    result = {
        "benchmark": "scale",
        "clients": args.clients,
        "records_per_client": RECORDS,
        "max_tokens": MAX_LEN,
        "batch_size": BATCH,
        "lora_rank": lora.rank,
        "torch_version": torch.__version__,
        "device": _device_name(device),
        "quick": args.quick,
        "rows": rows,
        "ratios": ratios,
        "targets": {"batched_over_sequential_cpu_100": 3.0, "batched_over_pfl": 1.0,
                    "batched_over_sequential_gpu": 50.0, "gpu_1000_clients_round_s": 10.0,
                    "utility_eps8_share_of_no_dp_reduction": 0.5},
        "utility": utility,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"-> {out}")


def utility_rows(report: dict[str, Any]) -> list[dict[str, Any]]:
    """Return the cross-device audit's utility rows: each run's perplexity beside no DP's."""
    runs = [r for r in report["runs"] if r.get("status") == "ok"]
    def mode(run: dict[str, Any]) -> str:
        return str((run.get("dp") or {}).get("mode", "none"))

    no_dp = [r for r in runs if mode(r) == "none"]
    if not no_dp:
        raise SystemExit("the report has no run without DP to compare with")
    ref = no_dp[0]["utility"]["perplexity"]
    rows = []
    for run in runs:
        util = run["utility"]
        eps = (run.get("privacy") or {}).get("epsilon")
        base = util["base_perplexity"]
        rows.append({
            "run": run["name"], "dp": mode(run), "epsilon": eps,
            "perplexity": util["perplexity"], "base_perplexity": base,
            "no_dp_perplexity": ref,
            "wall_s": (run.get("cost") or {}).get("wall_s"),
            "share_of_no_dp_reduction": (base - util["perplexity"]) / (base - ref)
            if base != ref else None,
        })
    return rows


if __name__ == "__main__":
    sys.exit(main())
