"""Benchmark: CKKS aggregation cost and error beside the plaintext sum and SecAgg+, same vectors.

For every setting (n clients × L float32 coordinates drawn from N(0, 10⁻³) with a
fixed seed, unit weights, no dropouts) this runs, alternately in one process (the
machine is shared and noisy, so only numbers measured side by side mean anything)
and on the same vectors:

* **ckks** ``run_round(create("ckks"), …)`` with its default parameters (N = 4096,
  56 + 24-bit ciphertext primes, scale 2⁶⁸, flooding 2²⁰ × the error bound; the
  key set is generated once per setting, outside the timing, as a federation
  does once):

  - ``encrypt_s``: mean over clients of the phase-0 seconds (clip, weight, encrypt
    and serialize every ciphertext; ``client_stats[c]["encrypt_s"]``);
  - ``sign_s``: mean over clients of the seconds hashing (SHA-256) and signing
    (Ed25519) the upload;
  - ``aggregate_s``: the server's seconds (``cost.server_seconds``: check and
    deserialize every ciphertext of every upload on its own, verify every
    signature);
  - ``decrypt_s``: the key holder's release seconds: ``verify_s`` (check the
    request, hash every forwarded upload, verify every signature) plus
    ``recompute_decrypt_s`` (deserialize and add every upload's ciphertexts
    itself, decrypt, range check, flood, round);
  - ``round_s``: wall time of the whole ``run_round``;
  - ``bytes_up_per_client``: the ``EncryptedUpdate`` of a client that is not the
    key holder (its true serialized length + 16-byte header), and
    ``expansion_vs_float32`` = that / 4L; the key holder also uploads the
    released sum (``key_holder_bytes_up``) and downloads every contributor's signed
    upload (``key_holder_bytes_down`` ≈ n uploads);
  - ``max_rel_error`` = max |aggregate − exact mean| / max |exact mean| (exact:
    float64 mean of the float32 inputs), and ``max_abs_error``;
* **secagg+** ``run_round(create("secagg+"), …)`` with its defaults: ``round_s``,
  bytes and error likewise;
* **plain**: ``run_round(create("plain"), …)`` (``round_s``) and the numpy sum of
  the n vectors (``plain_sum_s``, an in-place ``acc += v`` loop).

Per L it also encrypts one client's vector with TenSEAL's usual tutorial
parameters (N = 8192, coefficient moduli [60, 40, 40, 60], scale 2⁴⁰, public-key
encryption) and records its bytes (``kind = "reference"``), so that the
expansion of the defaults is compared with theirs in the same run.  Client peak
memory: a fresh subprocess encrypts one client's update of the largest L and
reports its peak RSS growth beside the size of the upload it must hold (with
glibc's default allocator, and with ``MALLOC_MMAP_THRESHOLD_=65536``, under which
freed transient buffers go back to the OS and only the live working set shows).

``baseline_unverified`` in the result holds this benchmark's medians from before
key holders verified signed uploads (commit ae9c872), for comparison.

Targets: expansion ≤ 12× float32 with max_rel_error ≤ 1e-5 at the default
precision; a whole ckks round at n = 10, L = 10⁶ in ≤ 10 s.  Results go to
``benchmarks/results/ckks.json`` (rows carry ``kind`` and ``protocol`` so that
other row kinds can join them).

    python benchmarks/ckks.py            # n ∈ {10, 50}, L ∈ {1e5, 1e6}; ~3 min here
    python benchmarks/ckks.py --quick    # n = 3, L = 3000, for CI (a few seconds)
    python benchmarks/ckks.py --compare-with ae9c872 --repeats 3   # side by side with a commit
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

RESULTS = Path(__file__).parent / "results" / "ckks.json"
QUICK_RESULTS = Path(__file__).parent / "results" / "ckks.quick.json"  # not committed

UPDATE_STD = 1e-3  # LoRA-sized update entries
TARGET_SETTING = (10, 1_000_000)
TARGETS = {"expansion_vs_float32": 12.0, "max_rel_error": 1e-5, "round_s": 10.0}
USUAL_DEGREE, USUAL_MODULI, USUAL_SCALE_BITS = 8192, [60, 40, 40, 60], 40  # TenSEAL tutorials
UNVERIFIED_BASELINE = {
    "source": "benchmarks/results/ckks.json at commit ae9c872 (before verified sums: the "
              "server summed, the key holder decrypted the server's sum, nothing was signed)",
    "rows": [
        {"clients": 10, "length": 100_000, "round_s": 0.705, "encrypt_s": 0.0545,
         "aggregate_s": 0.129, "decrypt_s": 0.0296, "key_holder_bytes_down": 4_397_285},
        {"clients": 50, "length": 100_000, "round_s": 3.459, "encrypt_s": 0.0571,
         "aggregate_s": 0.571, "decrypt_s": 0.0320, "key_holder_bytes_down": 4_398_869},
        {"clients": 10, "length": 1_000_000, "round_s": 7.530, "encrypt_s": 0.584,
         "aggregate_s": 1.368, "decrypt_s": 0.318, "key_holder_bytes_down": 43_908_142},
        {"clients": 50, "length": 1_000_000, "round_s": 41.045, "encrypt_s": 0.668,
         "aggregate_s": 7.277, "decrypt_s": 0.359, "key_holder_bytes_down": 43_908_784},
    ],
}
"""The same benchmark's medians before key holders verified signed uploads (for comparison)."""
TENSEAL_USUAL = {"poly_modulus_degree": USUAL_DEGREE, "coeff_mod_bit_sizes": USUAL_MODULI,
                 "scale_bits": USUAL_SCALE_BITS, "encryption": "asymmetric"}


def make_vectors(n: int, length: int, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.normal(0.0, UPDATE_STD, size=length).astype(np.float32) for _ in range(n)]


def timed(call: Callable[[], Any]) -> tuple[Any, float]:
    start = time.perf_counter()
    value = call()
    return value, time.perf_counter() - start


def median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def errors(aggregate: np.ndarray, exact: np.ndarray) -> dict[str, float]:
    error = float(np.max(np.abs(np.asarray(aggregate, np.float64) - exact)))
    return {"max_abs_error": error, "max_rel_error": error / float(np.max(np.abs(exact)))}


def plain_sum_loop(vectors: list[np.ndarray]) -> np.ndarray:
    acc = vectors[0].copy()
    for vector in vectors[1:]:
        acc += vector
    return acc


class Setting:
    """One setting's inputs and protocols, built once outside the timing."""

    def __init__(self, n: int, length: int, seed: int) -> None:
        from fedpriv.protocols import ClientInput, RoundContext, create

        self.n, self.length = n, length
        vectors = make_vectors(n, length, seed)
        self.vectors = vectors
        self.ctx = RoundContext(round=0, participants=tuple(range(n)), vector_size=length)
        self.inputs = {c: ClientInput(v, weight=1.0) for c, v in enumerate(vectors)}
        self.exact = np.asarray(np.mean(np.stack(vectors), axis=0, dtype=np.float64))
        self.protocols = {name: create(name) for name in ("ckks", "secagg+", "plain")}
        self.rounds = 0

    def run(self, name: str) -> dict[str, float]:
        """Run one round of ``name``; return its seconds, bytes and errors.

        Every run is a new round number: a CKKS key set signs and releases a round once.
        """
        from fedpriv.protocols import run_round

        ctx = dataclasses.replace(self.ctx, round=self.rounds)
        self.rounds += 1
        cpu = time.process_time()
        result, wall = timed(lambda: run_round(self.protocols[name], ctx, self.inputs))
        cpu = time.process_time() - cpu
        cost = result.cost
        values = {"round_s": wall, "round_cpu_s": cpu, "server_s": cost.server_seconds,
                  "client_s": statistics.fmean(cost.client_seconds.values()),
                  **errors(result.aggregate, self.exact)}
        if name != "ckks":
            values["bytes_up_per_client"] = statistics.fmean(cost.bytes_up.values())
            return values
        holder = result.view.released_by
        others = [c for c in self.ctx.participants if c != holder] or [holder]
        stats = result.client_stats
        values.update({
            "encrypt_s": statistics.fmean(stats[c]["encrypt_s"] for c in self.ctx.participants),
            "aggregate_s": cost.server_seconds,
            "decrypt_s": stats[holder]["decrypt_s"],
            "sign_s": statistics.fmean(stats[c]["sign_s"] for c in self.ctx.participants),
            "verify_s": stats[holder]["verify_s"],
            "recompute_decrypt_s": stats[holder]["decrypt_s"] - stats[holder]["verify_s"],
            "bytes_up_per_client": statistics.fmean(cost.bytes_up[c] for c in others),
            "key_holder_bytes_up": float(cost.bytes_up[holder]),
            "key_holder_bytes_down": float(cost.bytes_down[holder]),
        })
        return values


def ckks_parameters(protocol: Any) -> dict[str, Any]:
    params = protocol.params
    return {"poly_modulus_degree": params.poly_modulus_degree,
            "coeff_mod_bit_sizes": list(params.coeff_mod_bit_sizes),
            "scale_bits": params.scale_bits, "flood_bits": params.flood_bits,
            "precision": params.precision, "max_clients": params.max_clients,
            "clip": params.clip}


def measure_setting(n: int, length: int, repeats: int, seed: int) -> list[dict[str, Any]]:
    """Measure ckks, secagg+ and plain on one setting, alternating; a row per protocol."""
    setting = Setting(n, length, seed)
    names = list(setting.protocols)
    samples: dict[str, dict[str, list[float]]] = {name: {} for name in names}
    plain_sum: list[float] = []
    for repeat in range(repeats):
        order = names[repeat % len(names):] + names[:repeat % len(names)]
        for name in order:
            for key, value in setting.run(name).items():
                samples[name].setdefault(key, []).append(value)
        plain_sum.append(timed(lambda: plain_sum_loop(setting.vectors))[1])
    plain_sum_s = median(plain_sum)
    medians = {name: {k: median(v) for k, v in samples[name].items()} for name in names}
    rows = []
    for name in names:
        row: dict[str, Any] = {"kind": "aggregation", "protocol": name, "clients": n,
                               "length": length, "repeats": repeats}
        row.update({key: None for key in ("encrypt_s", "aggregate_s", "decrypt_s", "sign_s",
                                          "verify_s")})
        row.update(medians[name])
        row["float32_bytes"] = 4 * length
        row["expansion_vs_float32"] = ratio(row["bytes_up_per_client"], 4 * length)
        row["plain_sum_s"] = plain_sum_s
        row["round_over_plain_round"] = ratio(row["round_s"], medians["plain"]["round_s"])
        row["round_over_secagg_plus"] = ratio(row["round_s"], medians["secagg+"]["round_s"])
        row["bytes_over_secagg_plus"] = ratio(row["bytes_up_per_client"],
                                              medians["secagg+"]["bytes_up_per_client"])
        if name == "ckks":
            protocol: Any = setting.protocols["ckks"]
            row["parameters"] = ckks_parameters(protocol)
            row["release_bound"] = protocol.params.release_bound(n)
            row["aggregate_over_plain_sum"] = ratio(row["aggregate_s"], plain_sum_s)
        row["samples"] = samples[name]
        rows.append(row)
    return rows


def tenseal_usual_row(length: int, seed: int) -> dict[str, Any]:
    """Encrypt one client's vector with TenSEAL's tutorial parameters; record bytes and time."""
    import tenseal as ts

    context = ts.context(ts.SCHEME_TYPE.CKKS, USUAL_DEGREE, coeff_mod_bit_sizes=USUAL_MODULI)
    scale = 2.0**USUAL_SCALE_BITS
    vector = make_vectors(1, length, seed)[0].astype(np.float64)
    slots = USUAL_DEGREE // 2
    start = time.perf_counter()
    chunks = [ts.ckks_vector(context, vector[i:i + slots], scale=scale).serialize()
              for i in range(0, length, slots)]
    encrypt_s = time.perf_counter() - start
    decrypted = np.concatenate([ts.ckks_vector_from(context, c).decrypt() for c in chunks])
    nbytes = sum(len(c) for c in chunks)
    return {"kind": "reference", "protocol": "tenseal_usual", "clients": 1, "length": length,
            "parameters": TENSEAL_USUAL, "encrypt_s": encrypt_s, "bytes_up_per_client": nbytes,
            "float32_bytes": 4 * length, "expansion_vs_float32": nbytes / (4 * length),
            **errors(decrypted, vector)}


MEMORY_PROBE = textwrap.dedent("""
    import json, re, sys
    import numpy as np
    from fedpriv.protocols import ClientInput, RoundContext, create

    def status(key):  # bytes, from /proc/self/status (Linux)
        text = open("/proc/self/status").read()
        return int(re.search(key + r":\\s+(\\d+) kB", text).group(1)) * 1024

    length = int(sys.argv[1])
    proto = create("ckks")
    ctx = RoundContext(round=0, participants=(0, 1), vector_size=length)
    update = np.random.default_rng(0).normal(0, 1e-3, length).astype(np.float32)
    client = proto.client(0, ctx, ClientInput(update, 1.0))
    with open("/proc/self/clear_refs", "w") as handle:
        handle.write("5")  # reset the peak RSS (VmHWM) to the current RSS
    before = status("VmRSS")
    message = client.handle(0, None)
    growth = status("VmHWM") - before
    print(json.dumps({"peak_rss_growth_bytes": growth, "upload_bytes": message.nbytes(),
                      "beyond_upload_bytes": growth - message.nbytes(),
                      "ciphertexts": len(message.chunks)}))
""")


def client_memory(length: int) -> dict[str, Any] | None:
    """Return one client's peak RSS growth while encrypting ``length`` entries (fresh process).

    Measured twice: with glibc's default allocator, and with big blocks served by
    ``mmap`` (``MALLOC_MMAP_THRESHOLD_=65536``), which returns freed transient
    buffers at once and so shows the live working set beyond the upload itself.
    ``None`` where ``/proc/self/clear_refs`` is not available (not Linux).
    """
    if not Path("/proc/self/clear_refs").exists():
        return None
    probes: dict[str, Any] = {"length": length}
    for label, extra in (("default_malloc", {}),
                         ("mmap_threshold_64k", {"MALLOC_MMAP_THRESHOLD_": "65536"})):
        done = subprocess.run([sys.executable, "-c", MEMORY_PROBE, str(length)], check=True,
                              capture_output=True, text=True, timeout=300,
                              env={**os.environ, **extra})
        probe: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
        probe["growth_over_upload"] = probe["peak_rss_growth_bytes"] / probe["upload_bytes"]
        probes[label] = probe
    return probes


COMPARE_PROBE = textwrap.dedent("""
    import json, statistics, sys, time
    import numpy as np
    from fedpriv.protocols import ClientInput, RoundContext, create, run_round

    n, length, seed = (int(a) for a in sys.argv[1:4])
    rng = np.random.default_rng(seed)
    vectors = [rng.normal(0.0, 1e-3, size=length).astype(np.float32) for _ in range(n)]
    inputs = {c: ClientInput(v, weight=1.0) for c, v in enumerate(vectors)}
    ctx = RoundContext(round=0, participants=tuple(range(n)), vector_size=length)
    proto = create("ckks")
    start, cpu = time.perf_counter(), time.process_time()
    result = run_round(proto, ctx, inputs)
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    stats, holder = result.client_stats, result.view.released_by
    print(json.dumps({
        "round_s": wall, "round_cpu_s": cpu, "server_s": result.cost.server_seconds,
        "encrypt_s": statistics.fmean(stats[c]["encrypt_s"] for c in ctx.participants),
        "sign_s": statistics.fmean(stats[c].get("sign_s", 0.0) for c in ctx.participants),
        "decrypt_s": stats[holder]["decrypt_s"], "verify_s": stats[holder].get("verify_s", 0.0),
        "key_holder_bytes_down": result.cost.bytes_down[holder]}))
""")


def compare_with(
    commit: str, n: int, length: int, repeats: int, seed: int,
    previous: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Time one ckks round of this tree and of ``commit``, alternately, in fresh processes.

    The machine is shared: only numbers measured side by side compare; ``round_cpu_s``
    (the process's CPU seconds: the round is single-threaded) is also far less
    sensitive to other load than wall time.  ``commit``'s ``src/`` is exported with
    ``git archive`` into a temporary folder.  Pairs from ``previous`` (an earlier
    comparison of the same setting) are kept and the medians taken over all.
    """
    import tempfile

    root = Path(__file__).resolve().parents[1]
    samples: dict[str, dict[str, list[float]]] = {"this": {}, commit: {}}
    if previous and (previous["clients"], previous["length"]) == (n, length):
        samples = previous["samples"]  # accumulate pairs over runs
    with tempfile.TemporaryDirectory() as folder:
        archive = subprocess.run(["git", "-C", str(root), "archive", commit, "src"],
                                 check=True, capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", folder], input=archive, check=True)
        sources = {"this": str(root / "src"), commit: str(Path(folder) / "src")}
        for repeat in range(repeats):
            order = ["this", commit] if repeat % 2 == 0 else [commit, "this"]
            for label in order:
                done = subprocess.run(
                    [sys.executable, "-c", COMPARE_PROBE, str(n), str(length), str(seed)],
                    check=True, capture_output=True, text=True, timeout=900,
                    env={**os.environ, "PYTHONPATH": sources[label]})
                probe = json.loads(done.stdout.strip().splitlines()[-1])
                for key, value in probe.items():
                    samples[label].setdefault(key, []).append(float(value))
    medians = {label: {k: median(v) for k, v in values.items()}
               for label, values in samples.items()}
    pairs = len(samples["this"]["round_s"])
    return {"clients": n, "length": length, "repeats": pairs, "baseline_commit": commit,
            "cpu_count": os.cpu_count(), "load_average_at_end": os.getloadavg()[0],
            "this": medians["this"], "baseline": medians[commit],
            "round_ratio": ratio(medians["this"]["round_s"], medians[commit]["round_s"]),
            "round_cpu_ratio": ratio(medians["this"].get("round_cpu_s"),
                                     medians[commit].get("round_cpu_s")),
            "samples": samples}


def check_targets(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Return the verdicts at n = 10, L = 10⁶ for ckks (empty when that setting did not run)."""
    n, length = TARGET_SETTING
    row = next((r for r in rows if r["protocol"] == "ckks" and r["clients"] == n
                and r["length"] == length), None)
    if row is None:
        return {}
    return {key: {"value": row[key], "limit": limit,
                  "verdict": "PASS" if row[key] <= limit else "FAIL"}
            for key, limit in TARGETS.items()}


def rows_of_other_benchmarks(path: Path) -> list[dict[str, Any]]:
    """Return the rows another benchmark put into ``path`` (e.g. dp.py's ``dp-utility``)."""
    if not path.exists():
        return []
    rows = json.loads(path.read_text()).get("rows", [])
    return [r for r in rows if r.get("kind") not in ("aggregation", "reference")]


def fmt(value: float | None, spec: str) -> str:
    return "—" if value is None else format(value, spec)


def markdown_table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| protocol | n | L | round s | encrypt s | aggregate s | decrypt s | bytes up / client "
        "| × float32 | max rel error | round / plain | round / secagg+ | sign s | verify s "
        "| key holder down |",
        "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['protocol']} | {r['clients']} | {r['length']:.0e} "
            f"| {fmt(r.get('round_s'), '.3g')} | {fmt(r.get('encrypt_s'), '.3g')} "
            f"| {fmt(r.get('aggregate_s'), '.3g')} | {fmt(r.get('decrypt_s'), '.3g')} "
            f"| {r['bytes_up_per_client']:,.0f} | {fmt(r['expansion_vs_float32'], '.2f')} "
            f"| {fmt(r['max_rel_error'], '.1e')} | {fmt(r.get('round_over_plain_round'), '.0f')} "
            f"| {fmt(r.get('round_over_secagg_plus'), '.1f')} "
            f"| {fmt(r.get('sign_s'), '.3g')} | {fmt(r.get('verify_s'), '.3g')} "
            f"| {fmt(r.get('key_holder_bytes_down'), ',.0f')} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--clients", type=int, nargs="+", default=[10, 50])
    parser.add_argument("--lengths", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--repeats", type=int, default=3, help="repeats of the small settings")
    parser.add_argument("--big-repeats", type=int, default=2,
                        help="repeats of settings with n·L ≥ 10⁷ (each takes tens of seconds)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="tiny sizes, for CI")
    parser.add_argument("--compare-with", metavar="COMMIT", default=None,
                        help="only time a ckks round of this tree against COMMIT's, alternately "
                             "(n = 10, L = 10^6 unless --clients/--lengths), and add the result "
                             "to the result file as compare_<COMMIT>")
    parser.add_argument("--out", type=Path, default=None,
                        help=f"result file (default {RESULTS.name}; {QUICK_RESULTS.name} "
                             "with --quick)")
    args = parser.parse_args()
    if args.quick:
        args.clients, args.lengths, args.repeats, args.big_repeats = [3], [3000], 1, 1
    if args.out is None:
        args.out = QUICK_RESULTS if args.quick else RESULTS

    if args.compare_with is not None:
        n, length = args.clients[0], args.lengths[-1]
        if (args.clients, args.lengths) == (parser.get_default("clients"),
                                            parser.get_default("lengths")):
            n, length = TARGET_SETTING
        data = json.loads(args.out.read_text()) if args.out.exists() else {}
        comparison = compare_with(args.compare_with, n, length, args.repeats, args.seed,
                                  data.get(f"compare_{args.compare_with}"))
        data[f"compare_{args.compare_with}"] = comparison
        args.out.write_text(json.dumps(data, indent=2) + "\n")
        for label in ("this", "baseline"):
            print(label, json.dumps({k: round(v, 4) for k, v in comparison[label].items()}))
        print(f"round this / {args.compare_with}: {comparison['round_ratio']:.2f} -> {args.out}")
        return

    rows: list[dict[str, Any]] = []
    started = time.perf_counter()
    load_at_start = os.getloadavg()[0]  # the machine is shared: > cpu_count means contended
    for length in args.lengths:
        rows.append(tenseal_usual_row(length, args.seed))
        for n in args.clients:
            repeats = args.big_repeats if n * length >= 10_000_000 else args.repeats
            t0 = time.perf_counter()
            rows += measure_setting(n, length, repeats, args.seed)
            print(f"n={n:>3} L={length:>8}: {repeats} repeats in "
                  f"{time.perf_counter() - t0:.1f} s", flush=True)
    memory = client_memory(max(args.lengths))
    targets = check_targets(rows)
    import tenseal

    result = {
        "benchmark": "ckks",
        "quick": args.quick,
        "update_std": UPDATE_STD,
        "seed": args.seed,
        "tenseal_version": tenseal.__version__,
        "numpy_version": np.__version__,
        "cpu_count": os.cpu_count(),
        "load_average_at_start_and_end": [load_at_start, os.getloadavg()[0]],
        "wall_s": time.perf_counter() - started,
        "client_memory": memory,
        "rows": rows,
        "targets": targets,
        "baseline_unverified": UNVERIFIED_BASELINE,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    result["rows"] = rows + rows_of_other_benchmarks(args.out)
    if args.out.exists():  # keep side-by-side comparisons made with --compare-with
        previous = json.loads(args.out.read_text())
        result.update({k: v for k, v in previous.items() if k.startswith("compare_")})
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(markdown_table([r for r in rows if r["kind"] in ("aggregation", "reference")]))
    if memory is not None:
        for label in ("default_malloc", "mmap_threshold_64k"):
            probe = memory[label]
            print(f"client memory at L={memory['length']} ({label}): peak RSS growth "
                  f"{probe['peak_rss_growth_bytes'] / 2**20:.1f} MiB for a "
                  f"{probe['upload_bytes'] / 2**20:.1f} MiB upload: "
                  f"{probe['beyond_upload_bytes'] / 2**20:.1f} MiB beyond it")
    for key, target in targets.items():
        print(f"{key} = {target['value']:.3g}  (target <= {target['limit']})  -> "
              f"{target['verdict']}")
    print(f"-> {args.out}")


if __name__ == "__main__":
    main()
