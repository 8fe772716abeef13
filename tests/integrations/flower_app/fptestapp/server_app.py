"""The test app's ServerApp: rounds of secagg+ over the grid, results written as JSON.

With ``sync-dir`` and ``pause-round`` set, after phase 1 (key sharing) of that round
the server writes ``paused.json`` (the node ids) and waits for ``resume`` to exist,
so the test can stop a SuperNode between the key-sharing and masked-input phases.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from fedpriv.integrations.flower import assign_client_ids, run_protocol_round, wait_for_nodes
from fedpriv.protocols import RoundContext
from fptestapp.task import build_protocol

app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    """Run the configured rounds and write aggregate, survivors and dropouts per round."""
    config = context.run_config
    node_ids = assign_client_ids(wait_for_nodes(grid, int(config["num-nodes"]), timeout=60))
    protocol = build_protocol(config)
    sync = Path(str(config["sync-dir"])) if config["sync-dir"] else None
    pause_round = int(config["pause-round"])
    rounds = []
    started = time.perf_counter()

    phase_ends: list[float] = []

    def pause(round_index: int, phase: int) -> None:
        phase_ends.append(time.perf_counter())
        if sync is None or (round_index, phase) != (pause_round, 1):
            return
        (sync / "paused.json").write_text(json.dumps({str(c): n for c, n in node_ids.items()}))
        deadline = time.monotonic() + 60
        while not (sync / "resume").exists() and time.monotonic() < deadline:
            time.sleep(0.05)

    for round_index in range(int(config["rounds"])):
        ctx = RoundContext(round=round_index, participants=tuple(node_ids),
                           vector_size=int(config["vector-size"]))
        t0 = time.perf_counter()
        phase_ends.clear()
        flower = run_protocol_round(grid, protocol, ctx, node_ids,
                                    phase_timeout=float(config["phase-timeout"]),
                                    on_phase_end=pause)
        view = flower.result.view
        rounds.append({
            "round": round_index,
            "aggregate": [float(v) for v in flower.result.aggregate],
            "total_weight": flower.result.total_weight,
            "survivors": list(flower.result.survivors),
            "dropouts": {str(c): p for c, p in flower.dropouts.items()},
            "errors": {str(c): e for c, e in flower.errors.items()},
            "mask_keys_reconstructed": sorted(getattr(view, "mask_private_keys", {})),
            "seconds": time.perf_counter() - t0,
            "phase_seconds": [b - a for a, b in zip([t0, *phase_ends], phase_ends, strict=False)],
        })
    Path(str(config["out"])).write_text(json.dumps({
        "node_ids": {str(c): n for c, n in node_ids.items()}, "rounds": rounds,
        "seconds": time.perf_counter() - started,
    }))
