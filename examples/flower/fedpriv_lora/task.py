"""What the ServerApp and the ClientApp share: protocol, DP, model, data and local training.

The model, data and training helpers import torch/transformers lazily: a deployment
starts a fresh ClientApp process for every protocol phase, and only phase 0 trains.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fedpriv.dp.user import UserDPSettings, UserLevelDP
from fedpriv.protocols import AggregationProtocol, create

BUILTIN_MODEL = "builtin:tiny-llama"


def build_protocol(run_config: Mapping[str, Any]) -> AggregationProtocol:
    """secagg+ with its defaults (clip 1.0 per coordinate, resolution 2^-20, t = 1/2)."""
    return create("secagg+")


def build_user_dp(run_config: Mapping[str, Any]) -> UserLevelDP:
    """User-level DP-FedAvg: every node clips to ``dp-clip``; the server adds the noise.

    The server's noise and client sampling come from the OS (``seed=None``): never
    from a seed in the run config, which every party (and any report) knows.
    """
    clients = int(run_config["num-clients"])
    settings = UserDPSettings(noise_multiplier=float(run_config["dp-noise-multiplier"]),
                              clip=float(run_config["dp-clip"]))
    return UserLevelDP(settings, num_clients=clients, clients_per_round=clients, seed=None)


def load_model(run_config: Mapping[str, Any]) -> tuple[Any, Any]:
    """Return (the built-in model with a fresh LoRA adapter, its tokenizer), on CPU.

    Every party attaches the adapter with the same seed, so all start from the same
    initial adapter (the server then sends the global vector every round anyway).
    """
    import torch

    from fedpriv.lora import LoraSettings
    from fedpriv.models import attach_lora, load_base_model

    torch.set_num_threads(1)
    model, tokenizer = load_base_model(BUILTIN_MODEL)
    lora = LoraSettings(rank=int(run_config["lora-rank"]), alpha=2.0 * int(run_config["lora-rank"]))
    return attach_lora(model, lora, seed=int(run_config["seed"])), tokenizer


def client_texts(run_config: Mapping[str, Any], partition_id: int) -> tuple[list[str], list[str]]:
    """Return (training texts, held-out texts) of client ``partition_id`` (built-in corpus)."""
    from fedpriv.data import generate_client_records

    records = generate_client_records(int(run_config["num-clients"]),
                                      int(run_config["records-per-client"]),
                                      seed=int(run_config["seed"]))[partition_id]
    texts = [r.text for r in records]
    cut = max(1, len(texts) * 3 // 4)
    return texts[:cut], texts[cut:]


def train(run_config: Mapping[str, Any], partition_id: int, global_vector: Any,
          round_index: int) -> tuple[Any, float]:
    """Train client ``partition_id`` from ``global_vector``; return (Δ = local − global, loss)."""
    import numpy as np
    import torch

    from fedpriv.models import get_adapter_vector, set_adapter_vector, trainable_parameters
    from fedpriv.train.batching import encode_texts
    from fedpriv.train.local import LocalTrainingSettings, train_local

    model, tokenizer = load_model(run_config)
    set_adapter_vector(model, global_vector)
    texts, _ = client_texts(run_config, partition_id)
    examples = encode_texts(tokenizer, texts, int(run_config["max-length"]))
    settings = LocalTrainingSettings(batch_size=int(run_config["batch-size"]),
                                     lr=float(run_config["lr"]),
                                     steps=int(run_config["local-steps"]))
    seed = int(run_config["seed"])
    torch.manual_seed(seed * 1_000_003 + round_index * 101 + partition_id)
    result = train_local(
        model, trainable_parameters(model), examples, settings,
        pad_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0,
        device=torch.device("cpu"), rng=np.random.default_rng([seed, round_index, partition_id]),
    )
    return get_adapter_vector(model) - global_vector, float(result.mean_loss)
