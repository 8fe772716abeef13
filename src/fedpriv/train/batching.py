"""Tokenisation and batching of client texts for causal-LM training and evaluation.

Texts are tokenised once per audit (``encode_texts``) and kept as lists of ids;
batches are padded on the right to the longest sequence in the batch, with
``-100`` labels on padding so the loss ignores it.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from transformers import PreTrainedTokenizerBase

from fedpriv.errors import DataError

TokenIds = list[int]


def encode_texts(
    tokenizer: PreTrainedTokenizerBase, texts: Sequence[str], max_length: int
) -> list[TokenIds]:
    """Tokenise ``texts`` with BOS/EOS (where the tokenizer has them), truncated to ``max_length``.

    Special tokens are added here rather than by the tokenizer's post-processor, so
    every model family gets the same framing.  Texts that tokenise to fewer than
    two ids (nothing to predict) are rejected.
    """
    if not texts:
        return []
    encoded = tokenizer(list(texts), add_special_tokens=False)["input_ids"]
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    out: list[TokenIds] = []
    for i, ids in enumerate(encoded):
        seq = ([bos] if bos is not None else []) + list(ids) + ([eos] if eos is not None else [])
        seq = seq[:max_length]
        if len(seq) < 2:
            raise DataError(f"text #{i} ({texts[i][:40]!r}) has no tokens to train on; "
                            "remove empty documents from the data")
        out.append(seq)
    return out


@dataclass(frozen=True)
class Batch:
    """A padded batch on a device."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    labels: torch.Tensor

    @property
    def num_examples(self) -> int:
        """Number of sequences in the batch."""
        return int(self.input_ids.shape[0])


def collate(sequences: Sequence[TokenIds], pad_id: int, device: torch.device) -> Batch:
    """Right-pad ``sequences`` into one :class:`Batch` on ``device``."""
    length = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), length), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), length), dtype=torch.long)
    for row, seq in enumerate(sequences):
        ids[row, : len(seq)] = torch.tensor(seq, dtype=torch.long)
        mask[row, : len(seq)] = 1
    labels = ids.masked_fill(mask == 0, -100)
    return Batch(ids.to(device), mask.to(device), labels.to(device))


def training_batches(
    examples: Sequence[TokenIds],
    *,
    batch_size: int,
    steps: int | None,
    epochs: int | None,
    rng: np.random.Generator,
) -> Iterator[list[TokenIds]]:
    """Yield shuffled mini-batches: ``steps`` batches, or ``epochs`` passes over the data.

    Each pass is a fresh permutation drawn from ``rng``; with ``steps`` the passes
    repeat until enough batches were produced, so every example is seen before any
    is seen twice.
    """
    if not examples:
        raise DataError("a client has no training examples; give every client at least one record")
    n = len(examples)
    per_epoch = max(1, -(-n // batch_size))
    total = steps if steps is not None else per_epoch * (epochs or 1)
    produced = 0
    while produced < total:
        order = rng.permutation(n)
        for start in range(0, n, batch_size):
            if produced >= total:
                return
            yield [examples[i] for i in order[start : start + batch_size]]
            produced += 1


def eval_batches(examples: Sequence[TokenIds], batch_size: int) -> Iterator[list[TokenIds]]:
    """Yield examples in order, ``batch_size`` at a time, for evaluation."""
    for start in range(0, len(examples), batch_size):
        yield list(examples[start : start + batch_size])
