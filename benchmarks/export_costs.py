"""Export the protocols' measured costs from the benchmark results into the package.

``fedpriv protocols`` shows what each protocol cost in the last benchmark run.
An installed fedpriv has no ``benchmarks/`` folder, so this script copies the
numbers into ``src/fedpriv/protocols/measured_costs.json``, which the wheel
ships.  Run it after ``benchmarks/secagg.py`` or ``benchmarks/ckks.py``::

    python benchmarks/export_costs.py           # (re)write the file
    python benchmarks/export_costs.py --check   # exit 1 when the file is stale

Sources: ``secagg`` and ``secagg+`` from ``results/secagg.json`` (10 % of the
clients drop after sharing keys: the server's expensive case); ``plain`` and
``ckks`` from ``results/ckks.json`` (no dropouts).  The headline of each
protocol is the setting of :data:`REFERENCE` clients and vector size, which
every protocol was measured at; ``points`` keeps every setting.  The date is
the day the result file was last committed (its modification day when it has
uncommitted changes).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from fedpriv.protocols.costs import CostPoint, MeasuredCost

ROOT = Path(__file__).resolve().parents[1]
TARGET = ROOT / "src" / "fedpriv" / "protocols" / "measured_costs.json"
REFERENCE = {"clients": 10, "vector_size": 1_000_000}
SOURCES = {
    "plain": "benchmarks/results/ckks.json",
    "secagg": "benchmarks/results/secagg.json",
    "secagg+": "benchmarks/results/secagg.json",
    "ckks": "benchmarks/results/ckks.json",
}


def _git(*args: str) -> str | None:
    try:
        done = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True,
                              check=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip()


def result_date(path: Path) -> str:
    """Day ``path`` was last committed, or its modification day when it has changes."""
    relative = str(path.relative_to(ROOT))
    changed = _git("status", "--porcelain", "--", relative)
    committed = _git("log", "-1", "--format=%cs", "--", relative)
    if changed == "" and committed:
        return committed
    return dt.datetime.fromtimestamp(path.stat().st_mtime, tz=dt.timezone.utc).date().isoformat()


def _rows(protocol: str, result: dict[str, Any]) -> list[dict[str, Any]]:
    if result["benchmark"] == "secagg":
        return [r for r in result["rows"]
                if r["protocol"] == protocol and r.get("fedpriv_measured", True)]
    return [r for r in result["rows"]
            if r.get("kind") == "aggregation" and r["protocol"] == protocol]


def _conditions(result: dict[str, Any], repeats: int) -> str:
    if result["benchmark"] == "secagg":
        dropouts = (f"{result['dropout_fraction']:.0%} of the clients drop "
                    f"{result['dropout_when']}")
    else:
        dropouts = "no dropouts"
    return (f"python benchmarks/{result['benchmark']}.py: {dropouts}; default parameters; "
            f"median of {repeats} repeats on {result['cpu_count']} CPU cores")


def protocol_cost(protocol: str, source: str) -> MeasuredCost:
    """Read the measured cost of ``protocol`` from the result file ``source``."""
    path = ROOT / source
    result = json.loads(path.read_text(encoding="utf-8"))
    if result.get("quick"):
        raise SystemExit(f"{source} holds a --quick run; run the full benchmark first")
    rows = _rows(protocol, result)
    if not rows:
        raise SystemExit(f"{source} has no rows for protocol {protocol!r}")
    points = tuple(sorted(
        (CostPoint(clients=r["clients"], vector_size=r["length"], client_s=r["client_s"],
                   server_s=r["server_s"], bytes_up_per_client=r["bytes_up_per_client"])
         for r in rows),
        key=lambda p: (p.vector_size, p.clients),
    ))
    headline = [r for r in rows if r["clients"] == REFERENCE["clients"]
                and r["length"] == REFERENCE["vector_size"]]
    if not headline:
        raise SystemExit(f"{source} has no {protocol!r} row at {REFERENCE}; the headline "
                         "needs every protocol measured at that setting")
    row = headline[0]
    return MeasuredCost(
        protocol=protocol, clients=row["clients"], vector_size=row["length"],
        client_s=row["client_s"], server_s=row["server_s"],
        bytes_up_per_client=row["bytes_up_per_client"], source=source,
        date=result_date(path), conditions=_conditions(result, row.get("repeats", 1)),
        points=points,
    )


def export() -> str:
    """Return the text of ``measured_costs.json`` built from the current result files."""
    costs = {name: protocol_cost(name, source).to_dict() for name, source in SOURCES.items()}
    data = {
        "generated_by": "benchmarks/export_costs.py",
        "reference": REFERENCE,
        "units": {"client_s": "seconds per round, one client",
                  "server_s": "seconds per round, the server",
                  "bytes_up_per_client": "bytes per round, one client"},
        "protocols": costs,
    }
    return json.dumps(data, indent=2) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--check", action="store_true",
                        help="Exit 1 when the packaged file differs from the results.")
    args = parser.parse_args()
    text = export()
    if args.check:
        current = TARGET.read_text(encoding="utf-8") if TARGET.exists() else ""
        if current != text:
            print(f"{TARGET.relative_to(ROOT)} is stale; run python benchmarks/export_costs.py",
                  file=sys.stderr)
            raise SystemExit(1)
        print(f"{TARGET.relative_to(ROOT)} is up to date")
        return
    TARGET.write_text(text, encoding="utf-8")
    print(f"wrote {TARGET.relative_to(ROOT)} ({len(SOURCES)} protocols)")


if __name__ == "__main__":
    main()
