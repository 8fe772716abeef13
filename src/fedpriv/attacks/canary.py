"""Canary exposure and greedy extraction (Carlini et al. 2019, "The Secret Sharer").

The observation is the released model. Two measurements of how much it
memorised a planted canary (:mod:`fedpriv.data.canaries`):

* **exposure** — the rank of the true secret among every candidate of the
  canary's format, by the model's likelihood of the whole sentence:
  ``log2 |R| - log2 rank`` bits. It is computed exactly by scoring the whole
  space when it is small, and otherwise estimated from a uniform sample:
  from the sample rank when enough sampled candidates beat the secret,
  else by Carlini et al.'s skew-normal extrapolation. A model that learnt
  nothing about the secret has expected exposure ``≈ log2 e ≈ 1.44`` bits
  (:func:`random_exposure_baseline`).
* **greedy extraction** — the adversary knows the sentence and the shape of
  the secret (the format), prompts with the sentence's prefix and decodes
  greedily, keeping only tokens that fit the shape. Success means the
  decoded secret is the planted one.

Exposure needs the true secret to rank it, so it is a measurement of the
model rather than an attack: the scores come from the observed model, and the
comparison with the secret happens in :mod:`fedpriv.attacks.metrics`.
Candidates are scored in batches, one forward pass per batch.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn
from transformers import PreTrainedTokenizerBase

from fedpriv.attacks.metrics import (
    ExposureEstimate,
    exposure_exact,
    exposure_sampled,
    fit_skew_normal,
)
from fedpriv.attacks.mia import _token_logprobs
from fedpriv.data.canaries import PATTERN_ALPHABETS, Canary, CanaryFormat
from fedpriv.errors import DataError, ModelError
from fedpriv.train.batching import encode_texts
from fedpriv.train.local import autocast_context

__all__ = [
    "CanaryExposure",
    "canary_exposures",
    "canary_report",
    "extraction_hits",
    "greedy_extract",
    "random_exposure_baseline",
    "sentence_logprobs",
]

_SLOT = "{secret}"


def _pad_id(tokenizer: PreTrainedTokenizerBase) -> int:
    return int(tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0)


def sentence_logprobs(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    texts: Sequence[str],
    *,
    max_length: int = 128,
    device: torch.device,
    batch_size: int = 256,
) -> np.ndarray:
    """Return the model's log-probability of each whole sentence (``<s> text </s>``, as trained).

    Args:
        model: The observed model.
        tokenizer: Its tokenizer.
        texts: Sentences to score.
        max_length: Token limit; a sentence longer than this is an error (its
            secret could be cut off).
        device: Device of ``model``.
        batch_size: Sentences per forward pass.

    Returns:
        One log-probability (nats) per sentence.

    Raises:
        DataError: If a sentence does not fit in ``max_length`` tokens.
    """
    examples = encode_texts(tokenizer, texts, max_length + 1)
    too_long = [i for i, seq in enumerate(examples) if len(seq) > max_length]
    if too_long:
        raise DataError(
            f"sentence {texts[too_long[0]]!r} is longer than max_length={max_length} tokens; "
            "raise max_length so that the secret is scored."
        )
    logprobs = _token_logprobs(model, examples, pad_id=_pad_id(tokenizer), device=device,
                               batch_size=batch_size)
    return np.array([float(lp.sum()) for lp in logprobs], dtype=np.float64)


def random_exposure_baseline(space_size: int) -> float:
    """Return the expected exposure of a secret whose rank is uniformly random.

    ``log2 |R| - E[log2 rank] = log2 |R| - log2(|R|!) / |R|``, which tends to
    ``log2 e ≈ 1.443`` bits: what a model that memorised nothing scores on average.

    Args:
        space_size: Number of candidates ``|R|`` (>= 1).

    Returns:
        The expected exposure in bits.

    Raises:
        DataError: If ``space_size < 1``.
    """
    if isinstance(space_size, bool) or int(space_size) != space_size or space_size < 1:
        raise DataError(f"space_size must be a positive integer, got {space_size!r}.")
    n = int(space_size)
    return math.log2(n) - math.lgamma(n + 1) / (n * math.log(2.0))


@dataclass(frozen=True)
class CanaryExposure:
    """The exposure of one planted canary in the observed model.

    Attributes:
        canary_id: The canary's id.
        client: The client whose data held it.
        format_name: Name of its format.
        repetitions: How often it was inserted.
        estimate: The exposure and how it was obtained.
    """

    canary_id: str
    client: int
    format_name: str
    repetitions: int
    estimate: ExposureEstimate

    @property
    def exposure(self) -> float:
        """The exposure in bits."""
        return self.estimate.exposure


def _render(fmt: CanaryFormat, secret: str) -> str:
    return fmt.template.replace(_SLOT, secret)


def canary_exposures(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    canaries: Sequence[Canary],
    *,
    device: torch.device,
    rng: np.random.Generator,
    exact_limit: int = 10_000,
    sample_size: int = 4_096,
    min_hits: int = 10,
    bootstrap: int = 30,
    max_length: int = 128,
    batch_size: int = 256,
) -> list[CanaryExposure]:
    """Measure every canary's exposure in ``model``, format by format.

    For a format with at most ``exact_limit`` candidates every candidate is
    scored and the exposure is exact. Otherwise ``sample_size`` candidates
    are drawn uniformly (with replacement) and scored once for all canaries
    of the format; each canary gets the sample-rank estimate when at least
    ``min_hits`` sampled candidates beat it, else the skew-normal
    extrapolation (with a bootstrap standard error).

    Args:
        model: The observed (released) model.
        tokenizer: Its tokenizer.
        canaries: The planted canaries.
        device: Device of ``model``.
        rng: Source of the candidate sample and the bootstrap.
        exact_limit: Largest candidate space scored in full.
        sample_size: Candidates sampled for larger spaces.
        min_hits: Sampled candidates that must beat a secret for the rank estimate.
        bootstrap: Bootstrap refits for the extrapolation's standard error.
        max_length: Token limit for a canary sentence.
        batch_size: Sentences per forward pass.

    Returns:
        One result per canary, in input order.

    Raises:
        DataError: If a count is out of range or a sentence is too long.
    """
    for name, value in (("exact_limit", exact_limit), ("sample_size", sample_size),
                        ("min_hits", min_hits)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise DataError(f"{name} must be a positive integer, got {value!r}.")
    results: dict[str, CanaryExposure] = {}
    formats: dict[CanaryFormat, list[Canary]] = {}
    for canary in canaries:
        formats.setdefault(canary.format, []).append(canary)

    def score(texts: Sequence[str]) -> np.ndarray:
        return sentence_logprobs(model, tokenizer, texts, max_length=max_length, device=device,
                                 batch_size=batch_size)

    for fmt, group in formats.items():
        size = fmt.candidate_space_size
        estimates: list[ExposureEstimate]
        if size <= exact_limit:
            candidates = list(fmt.enumerate_candidates(exact_limit))
            logprobs = score([_render(fmt, c) for c in candidates])
            position = {secret: index for index, secret in enumerate(candidates)}
            estimates = []
            for canary in group:
                bits = exposure_exact(logprobs, position[canary.secret])
                estimates.append(ExposureEstimate(
                    exposure=bits, stderr=0.0, method="exact", space_size=size, samples=size,
                    rank=float(2.0 ** (math.log2(size) - bits)),
                ))
        else:
            sampled = score([_render(fmt, fmt.sample_secret(rng)) for _ in range(sample_size)])
            own = score([c.text for c in group])
            fit = None
            estimates = []
            for own_logprob in own:
                if int((sampled > own_logprob).sum()) >= min_hits:
                    estimates.append(exposure_sampled(float(own_logprob), sampled, size))
                    continue
                if fit is None:
                    fit = fit_skew_normal(sampled, bootstrap=bootstrap, rng=rng)
                estimates.append(fit.exposure(float(own_logprob), size))
        for canary, estimate in zip(group, estimates, strict=True):
            results[canary.canary_id] = CanaryExposure(
                canary_id=canary.canary_id, client=canary.client, format_name=fmt.name,
                repetitions=canary.repetitions, estimate=estimate,
            )
    return [results[canary.canary_id] for canary in canaries]


# ------------------------------------------------------------------ extraction


def _allowed_tokens(
    pieces: Sequence[str | None], shape: str, vocab_size: int
) -> list[np.ndarray]:
    """Return, per character position of ``shape``, which token ids may be generated there."""
    chars: set[str] = set()
    for spec in shape:
        chars.update(PATTERN_ALPHABETS.get(spec, spec))
    masks = [np.zeros(vocab_size, dtype=bool) for _ in shape]
    # One pass over the vocabulary, done once per format; generation only indexes the masks.
    for token_id, piece in enumerate(pieces[:vocab_size]):
        if not piece or not set(piece) <= chars:
            continue
        for start in range(len(shape) - len(piece) + 1):
            if all(
                char == spec if spec not in PATTERN_ALPHABETS else char in PATTERN_ALPHABETS[spec]
                for char, spec in zip(piece, shape[start:], strict=False)
            ):
                masks[start][token_id] = True
    return masks


def greedy_extract(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    fmt: CanaryFormat,
    *,
    device: torch.device,
) -> str:
    """Decode the secret greedily after the format's prefix, within the format's shape.

    The prompt is ``<s>`` and the prefix (trailing whitespace removed, as the
    tokenizer attaches it to the next token); at every step the most likely
    token whose text fits the rest of the shape is appended, until the shape
    is filled.

    Args:
        model: The observed model.
        tokenizer: Its tokenizer.
        fmt: The canary format (sentence and secret shape) the adversary knows.
        device: Device of ``model``.

    Returns:
        A secret matching ``fmt.pattern``.

    Raises:
        ModelError: If no token of the vocabulary fits a position of the shape.
    """
    prefix = fmt.prefix
    stem = prefix.rstrip()
    lead = prefix[len(stem):]
    shape = lead + fmt.pattern
    context = list(tokenizer(stem, add_special_tokens=False)["input_ids"])
    if tokenizer.bos_token_id is not None:
        context = [int(tokenizer.bos_token_id), *context]
    # The text each token adds after the prompt (robust to tokenizers that drop a
    # token's leading space when it is decoded alone).
    base_text = str(tokenizer.decode(context))
    prompts = [[*context, token] for token in range(len(tokenizer))]
    decoded: list[str] = tokenizer.batch_decode(prompts)
    pieces = [text[len(base_text):] if text.startswith(base_text) else None for text in decoded]
    masks: list[np.ndarray] | None = None
    ids = list(context)
    out = ""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            while len(out) < len(shape):
                input_ids = torch.tensor([ids], dtype=torch.long, device=device)
                with autocast_context(device):
                    logits = model(input_ids=input_ids).logits[0, -1].float()
                if masks is None:
                    masks = _allowed_tokens(pieces, shape, int(logits.shape[-1]))
                allowed = masks[len(out)]
                if not allowed.any():
                    raise ModelError(
                        f"no token of the vocabulary can continue the secret at position "
                        f"{len(out)} of {shape!r}; this tokenizer cannot spell the format."
                    )
                logits[~torch.from_numpy(allowed).to(logits.device)] = -math.inf
                token = int(torch.argmax(logits))
                ids.append(token)
                out += pieces[token] or ""
    finally:
        model.train(was_training)
    return out[len(lead):]


def extraction_hits(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    canaries: Sequence[Canary],
    *,
    device: torch.device,
) -> list[bool]:
    """Return, per canary, whether greedy extraction recovers its secret.

    Greedy decoding from a format's prefix yields one secret per format, so of
    several canaries sharing a format at most one can be extracted.

    Args:
        model: The observed model.
        tokenizer: Its tokenizer.
        canaries: The planted canaries.
        device: Device of ``model``.

    Returns:
        One flag per canary, in input order.
    """
    extracted: dict[CanaryFormat, str] = {}
    for canary in canaries:
        if canary.format not in extracted:
            extracted[canary.format] = greedy_extract(model, tokenizer, canary.format,
                                                      device=device)
    return [extracted[canary.format] == canary.secret for canary in canaries]


def canary_report(
    exposures: Sequence[CanaryExposure],
    hits: Sequence[bool] | None = None,
    *,
    observation: str = "final global model",
) -> dict[str, Any]:
    """Return the ``leakage.canary`` block of report.json.

    Args:
        exposures: Per-canary exposures (at least one).
        hits: Per-canary greedy-extraction outcomes, if extraction was run.
        observation: What the adversary observed.

    Returns:
        A JSON-serialisable dict: ``exposure_mean`` / ``_median`` / ``_max``,
        the random baseline, the maximum possible exposure, the methods used,
        ``extraction_rate`` and the per-canary entries.

    Raises:
        DataError: If there are no exposures or ``hits`` has the wrong length.
    """
    if not exposures:
        raise DataError("no canary exposures to report; plant canaries (data.canaries).")
    if hits is not None and len(hits) != len(exposures):
        raise DataError(f"got {len(hits)} extraction results for {len(exposures)} canaries.")
    values = np.array([e.exposure for e in exposures])
    sizes = sorted({e.estimate.space_size for e in exposures})
    block: dict[str, Any] = {
        "attack": "exposure" + ("+greedy-extraction" if hits is not None else ""),
        "observed": observation,
        "exposure_mean": float(values.mean()),
        "exposure_median": float(np.median(values)),
        "exposure_max": float(values.max()),
        "random_baseline": float(
            np.mean([random_exposure_baseline(e.estimate.space_size) for e in exposures])
        ),
        "max_possible": float(max(math.log2(s) for s in sizes)),
        "methods": sorted({e.estimate.method for e in exposures}),
        "n_canaries": len(exposures),
        "canaries": [
            {
                "id": e.canary_id, "client": e.client, "format": e.format_name,
                "repetitions": e.repetitions, "exposure": e.exposure,
                "stderr": e.estimate.stderr, "method": e.estimate.method,
                **({"extracted": bool(hit)} if hits is not None else {}),
            }
            for e, hit in zip(exposures, hits if hits is not None else [None] * len(exposures),
                              strict=True)
        ],
    }
    if hits is not None:
        block["extraction_rate"] = float(np.mean(hits))
    return block
