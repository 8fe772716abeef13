"""Membership inference: per-example scores from what the adversary observed.

The observation is a model the adversary can query (the final global model,
released after training) or, where the protocol reveals it, one client's
update ``Δ_i`` in a round's :class:`~fedpriv.protocols.ServerView`. Every
score here is "higher = more likely a member" and is computed without the
membership labels; :mod:`fedpriv.attacks.metrics` compares scores with them.

Scores (one forward pass per model, shared by all of them):

* ``loss`` — minus the mean next-token loss (Yeom et al. 2018);
* ``zlib`` — log-likelihood over the zlib-compressed length of the text
  (Carlini et al. 2021, "Extracting Training Data from Large Language Models");
* ``min_k[k]`` — the mean log-probability of the ``k`` fraction of least
  likely tokens (Shi et al. 2024, "Detecting Pretraining Data from Large
  Language Models", Min-K% Prob);
* ``reference[name]`` — the loss drop from a reference model to the target,
  e.g. the base model before fine-tuning (a likelihood ratio; difficulty
  calibration: Watson et al. 2022, Mireshghallah et al. 2022);
* ``reference_ratio[name]`` — the ratio of the two models' mean losses
  (log-perplexities; Carlini et al. 2021), robust to the domain shift
  between the reference's data and the fine-tuning data;
* ``lira_offline`` — with two or more shadow models trained without the
  targets (e.g. on a public split): how far the target's loss falls below a
  Gaussian fitted to the shadows' losses (Carlini et al. 2022, "Membership
  Inference Attacks From First Principles", offline LiRA);
* ``rmia`` — the likelihood ratio of the target to the shadows' mean
  likelihood (Zarifzadeh et al. 2024, "Low-Cost High-Power Membership
  Inference Attacks"; with ``γ = 1`` its pairwise test against population
  samples ranks examples exactly as this ratio does);
* ``update_loss_change`` — on one client's update: the loss drop from the
  global model to global + ``Δ_i``.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn
from transformers import PreTrainedTokenizerBase

from fedpriv.attacks.metrics import MIAResult, evaluate_mia
from fedpriv.errors import DataError
from fedpriv.models import get_adapter_vector, set_adapter_vector
from fedpriv.train.batching import TokenIds, collate, encode_texts
from fedpriv.train.local import autocast_context

if TYPE_CHECKING:
    from peft import PeftModel

    from fedpriv.protocols import ServerView

__all__ = [
    "SequenceScores",
    "client_update",
    "lira_offline_score",
    "loss_score",
    "mia_scores",
    "min_k_score",
    "reference_ratio_score",
    "reference_score",
    "rmia_score",
    "run_mia",
    "sequence_scores",
    "update_loss_change",
    "zlib_score",
]

_SIGMA_FLOOR = 1e-6  # keeps a z-score finite when shadow losses coincide


@dataclass(frozen=True)
class SequenceScores:
    """What one model says about each example: its mean loss and every token's log-probability.

    Attributes:
        losses: Mean next-token loss per example (nats), shape ``(n,)``.
        token_logprobs: Per example, the log-probability of each predicted
            token (every token after the first), in order.
    """

    losses: np.ndarray
    token_logprobs: tuple[np.ndarray, ...]

    @property
    def total_logprobs(self) -> np.ndarray:
        """Log-probability of each whole sequence (the sum over its predicted tokens)."""
        return np.array([float(lp.sum()) for lp in self.token_logprobs], dtype=np.float64)


def _token_logprobs(
    model: nn.Module,
    examples: Sequence[TokenIds],
    *,
    pad_id: int,
    device: torch.device,
    batch_size: int,
) -> list[np.ndarray]:
    """Return every example's predicted-token log-probabilities, batched by length."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise DataError(f"batch_size must be a positive integer, got {batch_size!r}.")
    for index, seq in enumerate(examples):
        if len(seq) < 2:
            raise DataError(
                f"example #{index} has {len(seq)} token(s); scoring needs at least 2 "
                "(encode texts with fedpriv.train.batching.encode_texts)."
            )
    out: list[np.ndarray] = [np.empty(0)] * len(examples)
    order = sorted(range(len(examples)), key=lambda i: len(examples[i]))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for start in range(0, len(order), batch_size):
                rows = order[start : start + batch_size]
                batch = collate([examples[i] for i in rows], pad_id, device)
                with autocast_context(device):
                    logits = model(
                        input_ids=batch.input_ids, attention_mask=batch.attention_mask
                    ).logits
                logits = logits[:, :-1, :].float()
                targets = batch.labels[:, 1:]
                picked = logits.gather(-1, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1)
                logprobs = (picked - torch.logsumexp(logits, dim=-1)).cpu().numpy()
                for row, index in enumerate(rows):
                    out[index] = logprobs[row, : len(examples[index]) - 1].astype(np.float64)
    finally:
        model.train(was_training)
    return out


def sequence_scores(
    model: nn.Module,
    examples: Sequence[TokenIds],
    *,
    pad_id: int,
    device: torch.device,
    batch_size: int = 32,
) -> SequenceScores:
    """Run ``model`` once over ``examples`` and keep what every score needs.

    Args:
        model: A causal LM (a base model or a PeftModel with its adapter loaded).
        examples: Token ids per example (from :func:`~fedpriv.train.batching.encode_texts`).
        pad_id: Padding id of the tokenizer.
        device: Device of ``model``.
        batch_size: Examples per forward pass.

    Returns:
        Mean losses and token log-probabilities, in the order of ``examples``.

    Raises:
        DataError: If an example has fewer than 2 tokens or ``batch_size`` is invalid.
    """
    logprobs = _token_logprobs(model, examples, pad_id=pad_id, device=device,
                               batch_size=batch_size)
    losses = np.array([-float(lp.mean()) for lp in logprobs], dtype=np.float64)
    return SequenceScores(losses=losses, token_logprobs=tuple(logprobs))


# ----------------------------------------------------------------- score rules


def _as_losses(values: Any, name: str) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 1:
        raise DataError(f"{name} must be a 1-D array (one value per example), got {array.shape}.")
    return array


def loss_score(losses: Any) -> np.ndarray:
    """Return minus the mean loss per example (the loss attack; higher = member)."""
    return -_as_losses(losses, "losses")


def zlib_score(texts: Sequence[str], losses: Any) -> np.ndarray:
    """Return the log-likelihood over the zlib-compressed length of each text (higher = member).

    As in Shi et al.'s code: ``-loss / len(zlib.compress(text))``, with the
    mean token loss and the compressed length in bytes. Texts that compress
    well (repetitive, easy) need a lower loss to score as high.

    Args:
        texts: The examples as text.
        losses: Mean next-token loss of each, from the target model.

    Returns:
        One score per text.

    Raises:
        DataError: If the lengths differ.
    """
    loss_arr = _as_losses(losses, "losses")
    if len(texts) != loss_arr.size:
        raise DataError(f"got {len(texts)} texts but {loss_arr.size} losses; pass one per text.")
    sizes = np.array([len(zlib.compress(text.encode("utf-8"))) for text in texts], np.float64)
    return -loss_arr / sizes


def min_k_score(token_logprobs: Sequence[np.ndarray], k: float = 0.2) -> np.ndarray:
    """Return Min-K% Prob: the mean of the lowest ``k`` fraction of log-probs (higher = member).

    Shi et al. 2024: a non-member has a few very unlikely tokens, a member
    rarely does. At least one token is always used.

    Args:
        token_logprobs: Per example, the log-probability of each predicted token.
        k: Fraction of tokens, in ``(0, 1]``.

    Returns:
        One score per example.

    Raises:
        DataError: If ``k`` is out of range or an example has no token.
    """
    if not 0.0 < float(k) <= 1.0:
        raise DataError(f"min_k fraction k must be in (0, 1], got {k!r}.")
    scores = np.empty(len(token_logprobs), dtype=np.float64)
    for index, logprobs in enumerate(token_logprobs):
        values = np.asarray(logprobs, dtype=np.float64)
        if values.size == 0:
            raise DataError(f"example #{index} has no scored token.")
        count = max(1, int(values.size * float(k)))
        scores[index] = float(np.partition(values, count - 1)[:count].mean())
    return scores


def reference_score(target_losses: Any, ref_losses: Any) -> np.ndarray:
    """Return the loss drop from one reference model to the target (higher = member).

    ``ref_loss - target_loss``: an example the reference (e.g. the base model
    before fine-tuning) already finds easy gains nothing from being hard to
    tell, so calibrating by it removes per-example difficulty.

    Args:
        target_losses: Mean loss per example under the target model.
        ref_losses: Mean loss per example under the reference model.

    Returns:
        One score per example.

    Raises:
        DataError: If the shapes differ.
    """
    target = _as_losses(target_losses, "target_losses")
    ref = _as_losses(ref_losses, "ref_losses")
    if ref.shape != target.shape:
        raise DataError(f"ref_losses has shape {ref.shape}, target_losses {target.shape}.")
    return ref - target


def reference_ratio_score(target_losses: Any, ref_losses: Any) -> np.ndarray:
    """Return the log of the reference's mean loss over the target's (higher = member).

    Carlini et al. 2021 rank candidates by the ratio of two models'
    log-perplexities. A relative drop is more robust than the absolute one of
    :func:`reference_score` when the fine-tuning data is far from the
    reference's: adapting to a client's templates lowers every example's loss
    by a similar factor, memorising an example lowers it further.

    Args:
        target_losses: Mean loss per example under the target model (> 0).
        ref_losses: Mean loss per example under the reference model (> 0).

    Returns:
        ``log(ref_loss) - log(target_loss)``, one per example.

    Raises:
        DataError: If the shapes differ or a loss is not positive.
    """
    target = _as_losses(target_losses, "target_losses")
    ref = _as_losses(ref_losses, "ref_losses")
    if ref.shape != target.shape:
        raise DataError(f"ref_losses has shape {ref.shape}, target_losses {target.shape}.")
    if not ((target > 0).all() and (ref > 0).all()):
        raise DataError("mean losses must be positive for the ratio score.")
    return np.log(ref) - np.log(target)


def _shadow_matrix(target: np.ndarray, shadow_losses: Any, minimum: int, name: str) -> np.ndarray:
    shadows = np.asarray(shadow_losses, dtype=np.float64)
    if shadows.ndim != 2 or shadows.shape[1] != target.size:
        raise DataError(
            f"shadow_losses must have shape (shadow models, {target.size}), got {shadows.shape}."
        )
    if shadows.shape[0] < minimum:
        raise DataError(
            f"{name} needs at least {minimum} shadow model(s), got {shadows.shape[0]}; train "
            "more reference models on the public split."
        )
    return shadows


def lira_offline_score(
    target_losses: Any, shadow_losses: Any, *, per_example_variance: bool = False
) -> np.ndarray:
    """Return offline LiRA's statistic: how many OUT standard deviations the loss falls below.

    Carlini et al. 2022: fit a Gaussian to each example's loss under shadow
    models that did not train on it (OUT), and test the target's loss
    against it. With few shadows a variance shared by all examples is more
    stable (their recommendation), so that is the default. The z-score ranks
    examples exactly as the one-sided p-value does and keeps tail resolution.

    Args:
        target_losses: Mean loss per example under the target model, ``(n,)``.
        shadow_losses: Mean loss per example under each shadow model, ``(R, n)``, ``R >= 2``.
        per_example_variance: Fit a variance per example instead of one shared.

    Returns:
        ``(mean OUT loss - target loss) / std``, one per example.

    Raises:
        DataError: If the shapes are wrong or there are fewer than 2 shadows.
    """
    target = _as_losses(target_losses, "target_losses")
    shadows = _shadow_matrix(target, shadow_losses, 2, "offline LiRA")
    mean = shadows.mean(axis=0)
    if per_example_variance:
        sigma = shadows.std(axis=0, ddof=1)
    else:
        sigma = np.full_like(mean, float(np.sqrt(((shadows - mean) ** 2).sum()
                                                 / (shadows.size - target.size))))
    return (mean - target) / np.maximum(sigma, _SIGMA_FLOOR)


def rmia_score(target_losses: Any, shadow_losses: Any) -> np.ndarray:
    """Return the log-ratio of the target's likelihood to the shadows' mean likelihood.

    Zarifzadeh et al. 2024 compare ``Pr(x | θ) / Pr(x)``, with ``Pr(x)`` the
    mean over reference models, against the same ratio for population
    samples ``z``; with ``γ = 1`` that test ranks examples exactly as the
    ratio itself, which is returned. Likelihoods are per token
    (``exp(-mean loss)``) so that long and short texts compare.

    Args:
        target_losses: Mean loss per example under the target model, ``(n,)``.
        shadow_losses: Mean loss per example under each shadow model, ``(R, n)``, ``R >= 1``.

    Returns:
        ``-target_loss - log mean_r exp(-shadow_loss_r)``, one per example.

    Raises:
        DataError: If the shapes are wrong.
    """
    target = _as_losses(target_losses, "target_losses")
    shadows = _shadow_matrix(target, shadow_losses, 1, "RMIA")
    neg = -shadows
    top = neg.max(axis=0)
    log_mean = top + np.log(np.exp(neg - top).mean(axis=0))
    return -target - log_mean


def mia_scores(
    target: SequenceScores,
    texts: Sequence[str],
    *,
    references: Mapping[str, SequenceScores] | None = None,
    shadows: Sequence[SequenceScores] = (),
    min_k: float = 0.2,
) -> dict[str, np.ndarray]:
    """Compute every applicable membership score from models' outputs on the same texts.

    Args:
        target: The observed model's outputs on ``texts``.
        texts: The candidate examples (members and non-members, unlabelled).
        references: Single reference models' outputs by name (e.g. ``"base"``),
            each giving ``reference[name]`` and ``reference_ratio[name]`` scores.
        shadows: Outputs of shadow models trained without the candidates (e.g.
            on a public split): one or more give ``rmia``, two or more ``lira_offline``.
        min_k: Fraction for Min-K% Prob.

    Returns:
        Scores by attack name, each one per text, higher = member.

    Raises:
        DataError: If a model's outputs do not cover exactly ``texts``.
    """
    count = len(texts)
    outputs = [("target", target), *(references or {}).items()]
    outputs += [(f"shadow {i}", s) for i, s in enumerate(shadows)]
    for name, scores in outputs:
        if scores.losses.size != count:
            raise DataError(
                f"the {name} model scored {scores.losses.size} examples but there are "
                f"{count} texts; score every model on the same texts."
            )
    result = {
        "loss": loss_score(target.losses),
        "zlib": zlib_score(texts, target.losses),
        f"min_k[{min_k:g}]": min_k_score(target.token_logprobs, min_k),
    }
    for name, ref in (references or {}).items():
        result[f"reference[{name}]"] = reference_score(target.losses, ref.losses)
        result[f"reference_ratio[{name}]"] = reference_ratio_score(target.losses, ref.losses)
    if shadows:
        shadow_losses = np.stack([s.losses for s in shadows])
        result["rmia"] = rmia_score(target.losses, shadow_losses)
        if len(shadows) >= 2:
            result["lira_offline"] = lira_offline_score(target.losses, shadow_losses)
    return result


def run_mia(
    target_model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    members: Sequence[str],
    nonmembers: Sequence[str],
    *,
    observation: str = "final global model",
    reference_models: Mapping[str, nn.Module] | None = None,
    shadow_models: Sequence[nn.Module] = (),
    max_length: int,
    device: torch.device,
    batch_size: int = 32,
    min_k: float = 0.2,
) -> list[MIAResult]:
    """Score members and non-members with every applicable attack and evaluate each.

    The attacks see the texts unlabelled (:func:`mia_scores`); the labels only
    reach :func:`~fedpriv.attacks.metrics.evaluate_mia`. Runners that hold one
    model with several adapter vectors (or the base behind
    ``peft_model.disable_adapter()``) can call :func:`sequence_scores`,
    :func:`mia_scores` and ``evaluate_mia`` themselves.

    Args:
        target_model: The observed model.
        tokenizer: Its tokenizer.
        members: Texts trained on.
        nonmembers: Texts from the same distribution not trained on.
        observation: What the adversary observed (named in every result).
        reference_models: Reference models by name (e.g. ``{"base": base_model}``).
        shadow_models: Models trained without any candidate (public split).
        max_length: Token limit per text (as in training).
        device: Device of the models.
        batch_size: Examples per forward pass.
        min_k: Fraction for Min-K% Prob.

    Returns:
        One result per attack.

    Raises:
        DataError: If members or non-members are empty.
    """
    if not members or not nonmembers:
        raise DataError(
            f"membership inference needs members and non-members, got {len(members)} and "
            f"{len(nonmembers)}; hold out some records (data.holdout_fraction)."
        )
    texts = [*members, *nonmembers]
    examples = encode_texts(tokenizer, texts, max_length)
    pad_id = int(tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0)

    def score(model: nn.Module) -> SequenceScores:
        return sequence_scores(model, examples, pad_id=pad_id, device=device,
                               batch_size=batch_size)

    scores = mia_scores(
        score(target_model),
        texts,
        references={name: score(model) for name, model in (reference_models or {}).items()},
        shadows=[score(model) for model in shadow_models],
        min_k=min_k,
    )
    labels = np.r_[np.ones(len(members), bool), np.zeros(len(nonmembers), bool)]
    return [evaluate_mia(name, observation, values, labels) for name, values in scores.items()]


# ------------------------------------------------------ per-client update attack


def client_update(view: ServerView, client: int) -> np.ndarray:
    """Return the update ``Δ_i`` of ``client`` that the server observed in ``view``.

    Args:
        view: A round's ServerView.
        client: The client whose update to attack.

    Returns:
        The client's update vector.

    Raises:
        DataError: If the protocol hides individual updates (secure
            aggregation: only the aggregate is observed) or the client's
            update is not in the view.
    """
    updates = view.individual_updates
    if updates is None:
        raise DataError(
            f"the '{view.protocol}' protocol hides individual updates (round {view.round}: the "
            "server observed only the aggregate), so there is no per-client update to attack; "
            "attack the final model instead, or use the plain protocol to measure the worst case."
        )
    if client not in updates:
        raise DataError(
            f"client {client} has no update in the round-{view.round} view (its updates: "
            f"{sorted(updates)}); pick a surviving participant."
        )
    return np.asarray(updates[client])


def update_loss_change(
    model: PeftModel,
    global_vector: np.ndarray,
    update: np.ndarray,
    examples: Sequence[TokenIds],
    *,
    pad_id: int,
    device: torch.device,
    batch_size: int = 32,
) -> np.ndarray:
    """Return each example's loss drop from global to global + ``update`` (higher = member).

    The observation is one client's update (:func:`client_update`) and the
    global adapter the server sent that round; the client's own examples get
    a larger drop than examples it did not train on. The model's adapter is
    restored afterwards.

    Args:
        model: The PeftModel the adapter vectors belong to.
        global_vector: The global adapter vector of that round (before the update).
        update: The client's update ``Δ_i``.
        examples: Token ids of the candidate examples.
        pad_id: Padding id of the tokenizer.
        device: Device of ``model``.
        batch_size: Examples per forward pass.

    Returns:
        ``loss(global) - loss(global + Δ_i)`` per example.

    Raises:
        DataError: If the vectors differ in shape.
        ModelError: If the vectors do not fit the adapter.
    """
    global_arr = np.asarray(global_vector, dtype=np.float32)
    update_arr = np.asarray(update, dtype=np.float32)
    if global_arr.shape != update_arr.shape:
        raise DataError(
            f"the update has shape {update_arr.shape} but the global vector {global_arr.shape}; "
            "pass the global adapter of the round the update belongs to."
        )
    saved = get_adapter_vector(model)
    try:
        set_adapter_vector(model, global_arr)
        before = sequence_scores(model, examples, pad_id=pad_id, device=device,
                                 batch_size=batch_size).losses
        set_adapter_vector(model, global_arr + update_arr)
        after = sequence_scores(model, examples, pad_id=pad_id, device=device,
                                batch_size=batch_size).losses
    finally:
        set_adapter_vector(model, saved)
    return before - after
