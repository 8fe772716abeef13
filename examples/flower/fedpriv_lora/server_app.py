"""The ServerApp: rounds of fedpriv's secagg+ with user-level DP over the connected nodes.

Each round the workflow sends the global adapter vector with phase 0, runs the four
secagg+ phases (one Flower message per node per phase), adds DP-FedAvg's central
noise to the sum and updates the global vector.  It logs the held-out loss of the
clients' records after every round and, with ``out-dir`` set, writes ``rounds.json``,
the final adapter vector (``adapter.npy``) and every round's ServerView
(``views/round-N.bin``, fedpriv's pickle-free codec: what an audit of this run consumes).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from fedpriv.integrations import codec
from fedpriv.integrations.flower import FedprivWorkflow, assign_client_ids, wait_for_nodes
from fedpriv_lora.task import build_protocol, build_user_dp, client_texts, load_model

logger = logging.getLogger("fedpriv_lora")
app = ServerApp()


def _held_out_loss(model: Any, tokenizer: Any, config: dict[str, Any], vector: np.ndarray) -> float:
    import torch

    from fedpriv.models import set_adapter_vector
    from fedpriv.train.batching import encode_texts
    from fedpriv.train.local import evaluate

    set_adapter_vector(model, vector)
    texts = [t for c in range(int(config["num-clients"])) for t in client_texts(config, c)[1]]
    examples = encode_texts(tokenizer, texts, int(config["max-length"]))
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    return evaluate(model, examples, pad_id=pad, device=torch.device("cpu")).loss


@app.main()
def main(grid: Grid, context: Context) -> None:
    """Fine-tune the adapter for ``num-server-rounds`` rounds."""
    from fedpriv.models import get_adapter_vector

    config = dict(context.run_config)
    nodes = wait_for_nodes(grid, int(config["num-clients"]), timeout=120)
    node_ids = assign_client_ids(nodes[: int(config["num-clients"])])
    model, tokenizer = load_model(config)
    global_vector = get_adapter_vector(model)
    workflow = FedprivWorkflow(build_protocol(config),
                               user_dp=build_user_dp(config),
                               phase_timeout=float(config["phase-timeout"]))
    base_loss = _held_out_loss(model, tokenizer, config, global_vector)
    history: list[dict[str, Any]] = [{"round": -1, "held_out_loss": base_loss}]
    print(f"before training: held-out loss {history[0]['held_out_loss']:.4f}")
    for round_index in range(int(config["num-server-rounds"])):
        step = workflow.round(grid, round_index, global_vector, node_ids)
        global_vector = step.global_vector
        loss = _held_out_loss(model, tokenizer, config, global_vector)
        flower = step.flower
        history.append({
            "round": round_index, "held_out_loss": loss, "aborted": step.aborted,
            "survivors": [] if flower is None else list(flower.result.survivors),
            "dropouts": {} if flower is None else {str(c): p for c, p in flower.dropouts.items()},
            "train_loss": None if flower is None else float(np.mean(
                [m.get("train_loss", np.nan) for m in flower.metrics.values()])),
            "bytes_up_per_client": 0.0 if flower is None else
            flower.result.cost.bytes_up_per_client(),
        })
        print(f"round {round_index}: survivors {history[-1]['survivors']}, "
              f"train loss {history[-1]['train_loss']}, held-out loss {loss:.4f}")
    if config.get("out-dir"):
        out = Path(str(config["out-dir"]))
        (out / "views").mkdir(parents=True, exist_ok=True)
        (out / "rounds.json").write_text(json.dumps(history, indent=2))
        np.save(out / "adapter.npy", global_vector)
        for view in workflow.views:
            (out / "views" / f"round-{view.round}.bin").write_bytes(codec.encode(view))
