"""One client's local training on the adapter, and held-out evaluation.

The base model is shared by every client: a client's state is only the adapter
vector loaded into it before it trains (see :mod:`fedpriv.train.loop`).  Only
the adapter parameters are given to the optimiser; the base stays frozen.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from fedpriv.errors import ConfigError
from fedpriv.train.batching import TokenIds, collate, eval_batches, training_batches


@dataclass(frozen=True)
class LocalTrainingSettings:
    """How a client trains locally in one round."""

    batch_size: int
    lr: float
    steps: int | None = None
    epochs: int | None = None
    weight_decay: float = 0.0
    max_grad_norm: float | None = 1.0
    optimizer: str = "adamw"
    """``"adamw"`` (default) or ``"sgd"`` (plain gradient steps: FedSGD with one step)."""

    def __post_init__(self) -> None:
        if self.optimizer not in LOCAL_OPTIMIZERS:
            raise ConfigError(
                f"local optimizer must be one of {LOCAL_OPTIMIZERS}, got {self.optimizer!r}"
            )


LOCAL_OPTIMIZERS = ("adamw", "sgd")


def make_optimizer(
    name: str, params: Sequence[nn.Parameter], *, lr: float, weight_decay: float
) -> torch.optim.Optimizer:
    """Return a fresh local optimiser: AdamW, or SGD without momentum."""
    if name == "sgd":
        return torch.optim.SGD(list(params), lr=lr, weight_decay=weight_decay)
    return torch.optim.AdamW(list(params), lr=lr, weight_decay=weight_decay)


@dataclass(frozen=True)
class LocalResult:
    """What a client's local training produced (besides the new adapter in the model)."""

    steps: int
    examples_seen: int
    mean_loss: float


def autocast_context(device: torch.device) -> contextlib.AbstractContextManager[None]:
    """bf16 autocast on CUDA devices that support it; nothing elsewhere (CPU runs in fp32)."""
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def train_local(
    model: nn.Module,
    params: Sequence[nn.Parameter],
    examples: Sequence[TokenIds],
    settings: LocalTrainingSettings,
    *,
    pad_id: int,
    device: torch.device,
    rng: np.random.Generator,
    optimizer: torch.optim.Optimizer | None = None,
) -> LocalResult:
    """Train ``params`` of ``model`` on ``examples``.

    Federated clients are stateless: each call makes a fresh optimiser
    (``settings.optimizer``) unless one is passed (the benchmark's single-model
    baseline keeps one).
    """
    model.train()
    if optimizer is None:
        optimizer = make_optimizer(settings.optimizer, params, lr=settings.lr,
                                   weight_decay=settings.weight_decay)
    total_loss, steps, seen = 0.0, 0, 0
    for chunk in training_batches(
        examples, batch_size=settings.batch_size, steps=settings.steps,
        epochs=settings.epochs, rng=rng,
    ):
        batch = collate(chunk, pad_id, device)
        with autocast_context(device):
            loss = model(
                input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                labels=batch.labels,
            ).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if settings.max_grad_norm is not None:
            torch.nn.utils.clip_grad_norm_(params, settings.max_grad_norm)
        optimizer.step()
        total_loss += float(loss.detach())
        steps += 1
        seen += batch.num_examples
    model.eval()
    return LocalResult(steps=steps, examples_seen=seen, mean_loss=total_loss / max(steps, 1))


@dataclass(frozen=True)
class EvalResult:
    """Token-weighted held-out loss and its perplexity."""

    loss: float
    perplexity: float
    tokens: int


def _sorted_by_length(examples: Sequence[TokenIds]) -> Iterator[TokenIds]:
    return iter(sorted(examples, key=len))


@torch.no_grad()
def evaluate(
    model: nn.Module,
    examples: Sequence[TokenIds],
    *,
    pad_id: int,
    device: torch.device,
    batch_size: int = 32,
) -> EvalResult:
    """Mean next-token loss over every predicted token of ``examples``, and ``exp`` of it."""
    model.eval()
    total, tokens = 0.0, 0
    for chunk in eval_batches(list(_sorted_by_length(examples)), batch_size):
        batch = collate(chunk, pad_id, device)
        with autocast_context(device):
            logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
        shift_logits = logits[:, :-1, :].float()
        shift_labels = batch.labels[:, 1:]
        loss = torch.nn.functional.cross_entropy(
            shift_logits.reshape(-1, shift_logits.shape[-1]), shift_labels.reshape(-1),
            ignore_index=-100, reduction="sum",
        )
        total += float(loss)
        tokens += int((shift_labels != -100).sum())
    if tokens == 0:
        return EvalResult(loss=float("nan"), perplexity=float("nan"), tokens=0)
    mean = total / tokens
    return EvalResult(loss=mean, perplexity=math.exp(min(mean, 50.0)), tokens=tokens)
