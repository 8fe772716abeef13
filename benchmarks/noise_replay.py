"""Attack benchmark: remove user-level DP noise by regenerating it from what report.json holds.

The attack of issue 14, played against a real audit: take report.json (seed,
σ, C, rounds, expected clients per round), rebuild the initial adapter from the
seed, regenerate each round's central noise as the seed would give it
(``noise_seed(seed, round)``) and subtract it from the released adapter.  What
is left is Σ over rounds of the clipped sums — norm ≤ T·n·C — when the noise
followed the seed, and the noise itself otherwise.

Runs the same audit twice: with the default secret randomness and with
``--dp-deterministic`` (seed-derived, the debugging mode), and prints both
residual norms beside the bound T·n·C and the noise norm.  Writes
``benchmarks/results/noise_replay.json``.

    python benchmarks/noise_replay.py            # the quick preset, --dp user --epsilon 3
"""

from __future__ import annotations

import json
import math
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from fedpriv.audits.config import load_preset, override_runs
from fedpriv.audits.runner import lora_settings, run_audit
from fedpriv.dp.noise import gaussian, noise_seed
from fedpriv.models import BUILTIN_MODEL, attach_lora, get_adapter_vector, load_base_model
from fedpriv.train.checkpoint import load_checkpoint

RESULTS = Path(__file__).parent / "results" / "noise_replay.json"


def attack(report: dict, out: Path) -> dict[str, float]:
    """Subtract the seed-regenerated noise from the released adapter; return the norms."""
    run = report["runs"][0]
    seed = report["config"]["seed"]
    sigma, clip = run["dp"]["noise_multiplier"], run["dp"]["clip"]
    rounds = len(run["history"])
    expected = report["config"]["federation"]["clients_per_round"] or report["config"][
        "federation"]["clients"]
    from fedpriv.audits.config import AuditConfig, from_mapping

    cfg = from_mapping(AuditConfig, report["config"])
    model, _ = load_base_model(BUILTIN_MODEL, device=torch.device("cpu"))
    initial = get_adapter_vector(attach_lora(model, lora_settings(cfg, cfg.runs[0]), seed=seed))
    ckpt = load_checkpoint(out / "runs" / run["name"] / "checkpoint.pt")
    assert ckpt is not None
    total = expected * (ckpt.global_vector.astype(np.float64) - initial)
    for r in range(rounds):
        total -= gaussian(noise_seed(seed, r), initial.size, sigma * clip)
    return {
        "residual_norm": float(np.linalg.norm(total)),
        "bound_T_n_C": rounds * expected * clip,
        "noise_norm_per_round": sigma * clip * math.sqrt(initial.size),
        "epsilon": run["privacy"]["epsilon"],
    }


def main() -> None:
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        for label, deterministic in (("secret (default)", False), ("deterministic", True)):
            cfg = override_runs(load_preset("quick"), dp="user", epsilon=3.0,
                                deterministic=deterministic)
            t0 = time.perf_counter()
            out = Path(tmp) / label.split()[0]
            report = run_audit(cfg, out)
            rows[label] = dict(attack(report, out), seconds=time.perf_counter() - t0)
            r = rows[label]
            print(f"{label:18s} ε={r['epsilon']:.2f}  residual ‖·‖={r['residual_norm']:.4g}  "
                  f"T·n·C={r['bound_T_n_C']:.4g}  noise ‖·‖/round={r['noise_norm_per_round']:.4g}",
                  flush=True)
    RESULTS.write_text(json.dumps({"preset": "quick", "dp": "user", "epsilon": 3.0,
                                   "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
