"""Benchmark: the default audit's wall time in units of one federated round of train_round.py.

Machines of the same kind differ about 6× in speed, so the default audit's cost
is stated against a yardstick measured on the same machine, in the same run:
one federated round of ``benchmarks/train_round.py`` (10 clients × 8 AdamW
steps of batch 16 on the default's model, ``trainer = "sequential"``).  The
yardstick is timed before and after the audit (median of the repeats on both
sides), and the audit is ``fedpriv audit`` on the embedded default, in process,
into a temporary folder.

``default_over_train_round`` = audit wall seconds / yardstick seconds is
merged into ``benchmarks/results/audit.json`` (issue 17's target: ≤ 7, so that
the default stays within 5 minutes on the slowest machines seen here).

    python benchmarks/default_audit.py            # the default audit + 2×3 yardstick rounds
    python benchmarks/default_audit.py --quick    # the quick preset: a smoke run, not recorded
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch
import transformers

from fedpriv.audits.config import (
    AuditConfig,
    FederationConfig,
    apply_overrides,
    load_preset,
    to_dict,
)
from fedpriv.audits.runner import build_dataset, federation_settings, lora_settings, run_audit
from fedpriv.models import BUILTIN_MODEL, attach_lora, get_adapter_vector, load_base_model
from fedpriv.protocols import create
from fedpriv.train import FederatedTrainer, encode_texts

RESULTS = Path(__file__).parent / "results" / "audit.json"
TARGET = 7.0


def yardstick(repeats: int) -> list[float]:
    """Seconds of ``repeats`` federated rounds as ``benchmarks/train_round.py`` times them."""
    config = apply_overrides(AuditConfig(), federation=to_dict(FederationConfig(
        clients=10, rounds=1, local_steps=8, batch_size=16)))
    device = torch.device("cpu")
    dataset = build_dataset(config)
    base, tok = load_base_model(BUILTIN_MODEL, device=device)
    model = attach_lora(base, lora_settings(config, config.runs[0]), seed=0)
    try:
        examples = [encode_texts(tok, c.members, config.model.max_length)
                    for c in dataset.clients]
        settings = dataclasses.replace(federation_settings(config), trainer="sequential")
        trainer = FederatedTrainer(model, examples, [], create("plain"), settings,
                                   pad_id=tok.pad_token_id, device=device, seed=0)
        start = get_adapter_vector(model)
        trainer.train_round(0, start)  # warm-up
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            trainer.train_round(0, start)
            times.append(time.perf_counter() - t)
        return times
    finally:
        model.unload()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="yardstick rounds on each side")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    transformers.utils.logging.disable_progress_bar()
    preset = "quick" if args.quick else "default"

    before = yardstick(args.repeats)
    print(f"yardstick before: {[round(t, 2) for t in before]} s", flush=True)
    with tempfile.TemporaryDirectory() as out:
        t = time.perf_counter()
        report = run_audit(load_preset(preset), Path(out))
        audit_s = time.perf_counter() - t
    print(f"fedpriv audit ({preset}): {audit_s:.1f} s", flush=True)
    after = yardstick(args.repeats)
    print(f"yardstick after:  {[round(t, 2) for t in after]} s", flush=True)
    round_s = statistics.median(before + after)
    ratio = audit_s / round_s
    runs = {r["name"]: round(r["cost"]["wall_s"], 1) for r in report["runs"]}
    print(f"default_over_train_round = {audit_s:.1f} / {round_s:.2f} = {ratio:.1f} "
          f"(target <= {TARGET:g}); per run: {runs}")
    if args.quick:
        return
    result = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    result.update({
        "default_over_train_round": ratio,
        "default_over_train_round_target": TARGET,
        "default_audit_s": audit_s,
        "default_audit_runs_s": runs,
        "train_round_s": round_s,
        "train_round_runs_s": before + after,
        "default_audit_machine": f"{os.cpu_count()} cores, {torch.get_num_threads()} torch "
                                 f"threads, torch {torch.__version__}",
        "default_audit_measured": time.strftime("%Y-%m-%d"),
    })
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(f"-> {RESULTS}")


if __name__ == "__main__":
    main()
