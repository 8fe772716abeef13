"""Gradient inversion of LoRA updates: recover a client's training text from what the server saw.

The honest-but-curious server knows the global adapter it sent and observes a
LoRA update (one client's under ``plain``, the aggregate under secure
aggregation, noised under DP).  Three attacks, all on that observation only:

* :func:`dager` -- DAGER (Petrov et al. 2024, "DAGER: Exact Gradient Inversion
  for Large Language Models") adapted to LoRA.  For a LoRA module ``y = W x +
  s B A x`` the update of ``A`` is ``s Bᵀ Σ_t g_t x_tᵀ``: its rows lie in the
  span of the module's inputs ``x_t``, and the update of ``B`` is ``s Σ_t g_t
  (A x_t)ᵀ``, whose rows lie in the span of ``A x_t``.  When that span is
  smaller than the space it lives in (fewer distinct inputs than the adapter's
  revealed rank and the hidden size), an input belongs to the batch exactly when
  it lies in the span.  The first attention projections see each token before
  any mixing, so testing every vocabulary entry there recovers the *token set*;
  later modules see inputs that depend on the whole prefix (causal attention),
  so sequences are built greedily position by position, keeping the prefixes
  whose next input lies in the span.  Exact with a single gradient step and a
  rank-deficient span; on multi-step updates the span is the sum of each step's,
  so the first layer still recovers tokens while later layers saturate sooner.
* :func:`token_set_from_embeddings` -- where the embedding is trained (full rows
  or a LoRA embedding adapter), the rows/columns of the tokens in the batch are
  the only non-zero ones.
* :func:`tag` -- optimisation-based (TAG, Deng et al. 2021; LAMP, Balunović et
  al. 2022): fit a soft token distribution per position so that its update
  matches the observation (cosine + L2), with the model's own loss as the
  language prior, then project to tokens.  Bounded iterations and time.

Every attack returns an :class:`InversionRecovery` with what it observed and
the conditions it found; :func:`fedpriv.attacks.metrics.score_inversion`
compares it with the truth.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import numpy as np
import torch
from peft import PeftModel
from peft.tuners.lora import LoraLayer

from fedpriv.errors import DataError, ModelError
from fedpriv.models import (
    adapter_names,
    get_adapter_vector,
    set_adapter_vector,
    trainable_parameters,
)

__all__ = [
    "DagerSettings", "InversionRecovery", "LoraModule", "SpanTest", "TagSettings", "dager",
    "last_tokens", "lora_modules", "rounding_noise", "span_basis", "tag", "token_set",
    "token_set_from_embeddings",
]


# ----------------------------------------------------------------- the adapter's layout


@dataclass(frozen=True)
class LoraModule:
    """One LoRA-adapted module and where its matrices sit in the adapter vector."""

    name: str
    module: torch.nn.Module
    scaling: float
    a_shape: tuple[int, int]
    """``(r, in_features)``."""
    b_shape: tuple[int, int]
    """``(out_features, r)``."""
    a_slice: slice | None
    """Where ``A`` is in the vector; ``None`` when ``A`` is frozen (FFA-LoRA)."""
    b_slice: slice | None
    a_weight: torch.Tensor
    """The module's ``A`` at the time :func:`lora_modules` was called (the global one)."""
    b_param: torch.Tensor
    """The module's ``B`` parameter itself."""


def lora_modules(model: PeftModel) -> list[LoraModule]:
    """Return the model's LoRA linear modules in forward order with their vector slices."""
    offsets: dict[int, slice] = {}
    start = 0
    for param in trainable_parameters(model):
        offsets[id(param)] = slice(start, start + param.numel())
        start += param.numel()
    found = []
    for name, found_module in model.named_modules():
        if not isinstance(found_module, LoraLayer) or not hasattr(found_module, "lora_A"):
            continue
        module: Any = found_module
        adapters = [key for key in module.lora_A if key in module.lora_B]
        if not adapters:
            continue
        key = adapters[0]
        a: torch.Tensor = module.lora_A[key].weight
        b: torch.Tensor = module.lora_B[key].weight
        if a.dim() != 2 or b.dim() != 2:  # pragma: no cover - conv adapters are not attacked
            continue
        found.append(LoraModule(
            name=name, module=module, scaling=float(module.scaling[key]),
            a_shape=(a.shape[0], a.shape[1]), b_shape=(b.shape[0], b.shape[1]),
            a_slice=offsets.get(id(a)), b_slice=offsets.get(id(b)),
            a_weight=a.detach().to("cpu", torch.float64).clone(), b_param=b,
        ))
    if not found:
        raise ModelError("the adapter has no LoRA linear modules to invert")
    return found


# ----------------------------------------------------------------- span tests


def rounding_noise(reference: np.ndarray) -> np.ndarray:
    """Per-entry std of the float32 rounding in ``(reference + update) - reference``.

    An update the server observes is the difference of two float32 adapters, so
    each entry carries an error of about half a unit in the last place of the
    weight: uniform, with std ``ulp / sqrt(12)``.
    """
    ref = np.abs(np.asarray(reference, dtype=np.float32))
    return np.spacing(ref).astype(np.float64) / math.sqrt(12.0)


def span_basis(matrix: np.ndarray | torch.Tensor, noise_std: float | np.ndarray = 0.0, *,
               margin: float = 3.0, relative_floor: float = 1e-6,
               cliff: float = 4.0) -> torch.Tensor | None:
    """Return an orthonormal basis (rows) of ``matrix``'s row space, or ``None`` if it is full.

    The numerical rank counts the singular values above the largest one an iid
    noise matrix of ``noise_std`` per entry would reach, ``(sqrt(m) + sqrt(n)) *
    noise_std``, times ``margin`` (and above ``relative_floor`` times the
    largest).  When every singular value passes, the rows span everything they
    can (``None``): the span test carries no information.  A rank-deficient
    matrix falls off a cliff from its last signal value to the noise; a cut
    inside a smooth decay (a full-rank matrix whose small values drown in the
    noise) drops true directions, so without a fall of ``cliff`` at the cut the
    answer is ``None`` as well.
    """
    m = torch.tensor(np.array(matrix, dtype=np.float64))
    if m.numel() == 0 or not torch.isfinite(m).all():
        return None
    _, s, vh = torch.linalg.svd(m, full_matrices=False)
    if s.numel() == 0 or float(s[0]) == 0.0:
        return None
    sigma = float(np.sqrt(np.mean(np.square(noise_std)))) if np.size(noise_std) else 0.0
    edge = margin * sigma * (math.sqrt(m.shape[0]) + math.sqrt(m.shape[1]))
    cut = max(edge, relative_floor * float(s[0]))
    rank = int((s > cut).sum())
    if rank == 0 or rank >= min(m.shape) or float(s[rank - 1]) < cliff * float(s[rank]):
        return None
    return vh[:rank]


@dataclass
class SpanTest:
    """Linear constraints that an input ``x`` of a group of modules satisfies iff it was seen.

    ``input_basis``: rows spanning the inputs (from the ``A`` updates);
    ``projected``: ``(A, basis)`` pairs -- ``A x`` lies in ``basis``'s span (from
    the ``B`` updates).  The score of ``x`` is its largest relative residual.
    """

    modules: list[str]
    input_basis: torch.Tensor | None = None
    projected: list[tuple[torch.Tensor, torch.Tensor]] = field(default_factory=list)
    ranks: dict[str, int | None] = field(default_factory=dict)

    @property
    def usable(self) -> bool:
        """Whether any constraint carries information."""
        return self.input_basis is not None or bool(self.projected)

    def residuals(self, inputs: torch.Tensor) -> torch.Tensor:
        """Largest relative distance of each row of ``inputs`` from the constraints' spans."""
        x = inputs.to(torch.float64)
        worst = torch.zeros(x.shape[0], dtype=torch.float64)
        if self.input_basis is not None:
            worst = torch.maximum(worst, _relative_residual(x, self.input_basis))
        for a, basis in self.projected:
            worst = torch.maximum(worst, _relative_residual(x @ a.T, basis))
        return worst


def _relative_residual(x: torch.Tensor, basis: torch.Tensor) -> torch.Tensor:
    rest = x - (x @ basis.T) @ basis
    return rest.norm(dim=1) / x.norm(dim=1).clamp_min(1e-30)


def _span_test(group: Sequence[LoraModule], update: np.ndarray, noise: np.ndarray) -> SpanTest:
    test = SpanTest(modules=[m.name for m in group])
    with_a = [m for m in group if m.a_slice is not None]
    if with_a:
        stacked = np.concatenate([update[m.a_slice].reshape(m.a_shape) for m in with_a], axis=0)
        test.input_basis = span_basis(stacked, np.concatenate([noise[m.a_slice] for m in with_a]))
        test.ranks["A"] = None if test.input_basis is None else int(test.input_basis.shape[0])
    for m in group:
        if m.b_slice is None:
            continue
        basis = span_basis(update[m.b_slice].reshape(m.b_shape), noise[m.b_slice])
        test.ranks[f"B:{m.name}"] = None if basis is None else int(basis.shape[0])
        if basis is not None:
            test.projected.append((m.a_weight, basis))
    return test


# ----------------------------------------------------------------- module inputs


class _Stop(Exception):
    """Raised by a hook once the deepest input needed has been captured."""


@contextlib.contextmanager
def _capture(modules: Sequence[torch.nn.Module], store: dict[int, torch.Tensor],
             stop_after: torch.nn.Module | None) -> Iterator[None]:
    handles = []

    def hook(mod: torch.nn.Module, args: tuple[Any, ...]) -> None:
        store[id(mod)] = args[0].detach()
        if mod is stop_after:
            raise _Stop

    for mod in modules:
        handles.append(mod.register_forward_pre_hook(hook))
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def _inputs(model: PeftModel, ids: torch.Tensor, modules: Sequence[torch.nn.Module],
            chunk: int = 256) -> list[torch.Tensor]:
    """Return the inputs of ``modules`` (every position) for each row of ``ids``, float64, CPU."""
    device = next(model.parameters()).device
    deepest = modules[-1]
    parts: list[list[torch.Tensor]] = [[] for _ in modules]
    for start in range(0, ids.shape[0], chunk):
        store: dict[int, torch.Tensor] = {}
        batch = ids[start:start + chunk].to(device)
        with torch.no_grad(), _capture(modules, store, deepest), contextlib.suppress(_Stop):
            model(input_ids=batch, attention_mask=torch.ones_like(batch))
        for i, mod in enumerate(modules):
            parts[i].append(store[id(mod)].to("cpu", torch.float64))
    return [torch.cat(p, dim=0) for p in parts]


def _groups(model: PeftModel, mods: Sequence[LoraModule]) -> list[list[LoraModule]]:
    """Group the modules that receive the same input (e.g. q/k/v of one layer), in order."""
    probe = torch.tensor([[1, 5, 9, 2, 7]])
    inputs = _inputs(model, probe, [m.module for m in mods])
    groups: list[list[LoraModule]] = []
    last: torch.Tensor | None = None
    for m, x in zip(mods, inputs, strict=True):
        if groups and last is not None and x.shape == last.shape and torch.equal(x, last):
            groups[-1].append(m)
        else:
            groups.append([m])
        last = x
    return groups


# ----------------------------------------------------------------- results


@dataclass
class InversionRecovery:
    """What an inversion attack recovered from one observed update."""

    method: str
    observation: str
    token_ids: list[int]
    """The recovered token set (sorted)."""
    sequences: list[list[int]]
    """Recovered sequences (token ids), best first."""
    conditions: dict[str, Any] = field(default_factory=dict)
    """What the attack found about its own preconditions (ranks, saturation, time)."""
    seconds: float = 0.0


# ----------------------------------------------------------------- DAGER


@dataclass(frozen=True)
class DagerSettings:
    """Knobs of :func:`dager`; the defaults suit float32 updates."""

    threshold: float = 1e-2
    """Relative residual below which a token's first-layer input counts as inside the span."""
    sequence_threshold: float = 5e-2
    """The same for a prefix's input to the later modules (their span is estimated noisier)."""
    max_length: int = 128
    """Longest sequence to build (the training ``max_length``, public)."""
    max_prefixes: int = 64
    """Beam: the most prefixes kept at one position (lowest residual first)."""
    max_children: int = 4
    """The most extensions of one prefix kept at a position (keeps the beam diverse)."""
    max_sequence_groups: int = 4
    """How many context-dependent module groups score a prefix (the first usable ones)."""
    time_limit_s: float = 120.0
    last_token: bool = True
    """Recover each sequence's last token from the gradient (:func:`last_tokens`)."""

    def __post_init__(self) -> None:
        if not (0 < self.threshold < 1 and 0 < self.sequence_threshold < 1):
            raise DataError("DAGER thresholds must be in (0, 1), got "
                            f"{self.threshold} and {self.sequence_threshold}")
        if min(self.max_length, self.max_prefixes, self.max_children,
               self.max_sequence_groups) < 1:
            raise DataError("DAGER max_length, max_prefixes, max_children and "
                            "max_sequence_groups must be >= 1")


def _check_update(model: PeftModel, update: np.ndarray) -> np.ndarray:
    size = sum(p.numel() for p in trainable_parameters(model))
    vector = np.asarray(update, dtype=np.float64).reshape(-1)
    if vector.size < size:
        raise DataError(
            f"the observed update has {vector.size} values but the adapter has {size}; "
            "attack an update of this model's adapter"
        )
    # Extra trailing coordinates (user-level DP's clipping bit) are not adapter values.
    return vector[:size]


@contextlib.contextmanager
def _at_global(model: PeftModel, global_vector: np.ndarray | None) -> Iterator[None]:
    saved = get_adapter_vector(model)
    if global_vector is not None:
        set_adapter_vector(model, np.asarray(global_vector, dtype=np.float32))
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        set_adapter_vector(model, saved)
        model.train(was_training)


def _vocab_size(model: PeftModel) -> int:
    emb = model.get_input_embeddings()
    return int(emb.weight.shape[0])


def token_set(
    model: PeftModel, update: np.ndarray, *, global_vector: np.ndarray | None = None,
    threshold: float = 1e-2,
) -> tuple[list[int], dict[str, Any]]:
    """Recover the tokens a LoRA update was computed on, from its first module group.

    Returns the sorted token ids (empty when the span test is not usable) and the
    conditions found: the group's modules, revealed ranks, whether it was usable
    and whether its inputs are position-independent (else each position up to 64
    is tested).
    """
    vector = _check_update(model, update)
    with _at_global(model, global_vector):
        mods = lora_modules(model)
        groups = _groups(model, mods)
        first = groups[0]
        test = _span_test(first, vector, rounding_noise(get_adapter_vector(model)))
        conditions: dict[str, Any] = {"token_group": test.modules, "token_ranks": test.ranks,
                                      "token_test_usable": test.usable}
        if not test.usable:
            return [], conditions
        module = first[0].module
        if not _context_free(model, module):
            conditions["token_test_usable"] = False
            conditions["why"] = f"the inputs of {first[0].name} already mix tokens"
            return [], conditions
        vocab = _vocab_size(model)
        ids = torch.arange(vocab).reshape(-1, 1)
        positional = _position_dependent(model, module)
        conditions["position_dependent"] = positional
        length = 64 if positional else 1
        ids = ids.repeat(1, length)
        (x,) = _inputs(model, ids, [module])
        res = test.residuals(x.reshape(-1, x.shape[-1])).reshape(vocab, length).min(dim=1).values
        tokens = sorted(int(t) for t in torch.nonzero(res < threshold).flatten())
        conditions["token_residual_median"] = float(res.median())
        return tokens, conditions


def _context_free(model: PeftModel, module: torch.nn.Module) -> bool:
    """Whether ``module``'s input at a position depends only on that position's token."""
    (x,) = _inputs(model, torch.tensor([[3, 11], [17, 11]]), [module])
    return bool(torch.allclose(x[0, 1], x[1, 1], rtol=1e-6, atol=1e-9))


def _position_dependent(model: PeftModel, module: torch.nn.Module) -> bool:
    (x,) = _inputs(model, torch.tensor([[11, 11, 11]]), [module])
    return not bool(torch.allclose(x[0, 0], x[0, 2], rtol=1e-6, atol=1e-9))


def dager(
    model: PeftModel,
    update: np.ndarray,
    *,
    global_vector: np.ndarray | None = None,
    observation: str = "one client's update",
    bos_token_id: int | None = None,
    batch_size: int | None = None,
    settings: DagerSettings | None = None,
) -> InversionRecovery:
    """DAGER on a LoRA update: the token set, then sequences grown through the span tests.

    ``model`` is the server's copy of the model; ``global_vector`` (default: the
    adapter it holds now) is the global adapter the update was computed from.
    ``update`` is the observed update vector.  ``bos_token_id``: every training
    sequence starts with it (fedpriv's framing, public), so growth starts there.
    ``batch_size`` (public in FedSGD) caps the sequences returned; without it
    every distinct recovered sequence is.  The model's adapter is restored
    afterwards.
    """
    settings = settings or DagerSettings()
    start = time.perf_counter()
    vector = _check_update(model, update)
    tokens, conditions = token_set(model, vector, global_vector=global_vector,
                                   threshold=settings.threshold)
    sequences: list[list[int]] = []
    if tokens:
        with _at_global(model, global_vector):
            sequences = _grow_sequences(model, vector, tokens, settings, conditions, start,
                                        bos_token_id, batch_size)
        if sequences and conditions.get("sequence_groups") and settings.last_token:
            sequences = last_tokens(model, sequences, vector, global_vector=global_vector)
    return InversionRecovery(
        method="dager", observation=observation, token_ids=tokens, sequences=sequences,
        conditions=conditions, seconds=time.perf_counter() - start,
    )


def _grow_sequences(
    model: PeftModel, vector: np.ndarray, tokens: list[int], settings: DagerSettings,
    conditions: dict[str, Any], start: float, bos_token_id: int | None,
    batch_size: int | None,
) -> list[list[int]]:
    mods = lora_modules(model)
    groups = _groups(model, mods)
    tests = []
    noise = rounding_noise(get_adapter_vector(model))
    for group in groups[1:]:
        test = _span_test(group, vector, noise)
        if test.usable:
            tests.append((group[0].module, test))
        if len(tests) == settings.max_sequence_groups:
            break
    conditions["sequence_groups"] = [t.modules for _, t in tests]
    conditions["sequence_ranks"] = [t.ranks for _, t in tests]
    if not tests:
        conditions["why"] = "no later module's update has a rank-deficient span"
        return [[t] for t in tokens]  # the token set is all that is known
    extensions = [t for t in tokens if t != bos_token_id] or tokens
    candidates = torch.tensor(extensions)
    modules = [m for m, _ in tests]
    # A prefix is (tokens, its largest residual so far, their sum): the beam keeps the
    # lowest largest residual (one poor position sinks a wrong branch), the final choice
    # among equally long sequences prefers the lowest sum (a wrong token also raises
    # the residuals of the positions after it).
    prefixes: list[_Prefix] = [_Prefix([], 0.0, 0.0)]
    if bos_token_id is not None:
        prefixes = [_Prefix([int(bos_token_id)], 0.0, 0.0)]
    finished: list[_Prefix] = []
    n = len(candidates)
    for position in range(len(prefixes[0].tokens), settings.max_length):
        if time.perf_counter() - start > settings.time_limit_s:
            conditions["stopped"] = f"time limit {settings.time_limit_s:g} s at position {position}"
            break
        heads = torch.tensor([p.tokens for p in prefixes], dtype=torch.long)
        heads = heads.reshape(len(prefixes), -1)
        grown = torch.cat([heads.repeat_interleave(n, dim=0), candidates.repeat(len(prefixes))
                           .reshape(-1, 1)], dim=1)
        inputs = _inputs(model, grown, modules)
        scores = torch.stack([  # mean over the groups: one noisier span does not veto
            test.residuals(x[:, -1, :]) for x, (_, test) in zip(inputs, tests, strict=True)
        ]).mean(dim=0).reshape(len(prefixes), n)
        grown_prefixes: list[_Prefix] = []
        for index, prefix in enumerate(prefixes):
            row = scores[index]
            passing = torch.nonzero(row < settings.sequence_threshold).flatten()
            if passing.numel() == 0:
                if prefix.tokens:
                    finished.append(prefix)
                continue
            best = passing[torch.argsort(row[passing])][:settings.max_children]
            grown_prefixes.extend(
                _Prefix([*prefix.tokens, int(candidates[j])], max(prefix.worst, float(row[j])),
                        prefix.total + float(row[j]))
                for j in best.tolist()
            )
        grown_prefixes.sort(key=lambda p: p.worst)
        prefixes = grown_prefixes[:settings.max_prefixes]
        if not prefixes:
            break
    finished.extend(p for p in prefixes if p.tokens)
    conditions["candidate_sequences"] = len(finished)
    return _distinct(finished, batch_size)


@dataclass
class _Prefix:
    tokens: list[int]
    worst: float
    total: float


def _mismatches(a: Sequence[int], b: Sequence[int]) -> int:
    return sum(x != y for x, y in zip(a, b, strict=False)) + abs(len(a) - len(b))


def _common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    count = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        count += 1
    return count


def _is_variant(seq: Sequence[int], other: Sequence[int]) -> bool:
    """Branches of one text share a long prefix or differ in a token or two."""
    return (5 * _common_prefix(seq, other) >= 3 * min(len(seq), len(other))
            or _mismatches(seq, other) <= max(2, len(seq) // 5))


def _distinct(found: list[_Prefix], limit: int | None) -> list[list[int]]:
    """Choose sequences greedily by the recovered tokens they newly cover, then by residual.

    The batch's texts together hold every token of the set while the branches
    of one text add few or none; sequences shorter than half the longest (dead
    branches) and variants of a chosen sequence are skipped.
    """
    if not found:
        return []
    longest = max(len(p.tokens) for p in found)
    pool = [p for p in found if 2 * len(p.tokens) >= longest]
    chosen: list[list[int]] = []
    covered: set[int] = set()
    while pool and (limit is None or len(chosen) < limit):
        best = min(pool, key=lambda p: (-len(set(p.tokens) - covered), p.total / len(p.tokens)))
        if chosen and not set(best.tokens) - covered:
            break
        pool = [p for p in pool if p is not best and not _is_variant(p.tokens, best.tokens)]
        chosen.append(best.tokens)
        covered |= set(best.tokens)
    return chosen


def last_tokens(
    model: PeftModel, sequences: Sequence[Sequence[int]], update: np.ndarray, *,
    global_vector: np.ndarray | None = None, chunk: int = 256, sweeps: int = 2,
    max_coordinates: int = 4096,
) -> list[list[int]]:
    """Append to each sequence the final token the span tests cannot see, matched by gradient.

    A sequence's last token is never an input whose output is trained on, so no
    span holds it; it is only the *label* of the position before.  The loss's
    gradient is linear in that label: ``g(y) = g(y0) + (J[y0] - J[y]) / N`` with
    ``J[y]`` the gradient of the logit of ``y``, so every vocabulary entry is
    scored at once (batched vector-Jacobian products over the deepest LoRA
    module's parameters) by the cosine of ``-g(y)`` with the observed update,
    one sequence after another.
    """
    vector = _check_update(model, update)
    seqs = [list(s) for s in sequences if len(s) >= 1]
    if not seqs:
        return [list(s) for s in sequences]
    with _at_global(model, global_vector):
        deepest = lora_modules(model)[-1]
        # B of the deepest module (out x r) is enough to tell the labels apart.
        weight = deepest.b_param
        if deepest.b_slice is None or not weight.requires_grad:
            return seqs
        params = [weight]
        device = next(model.parameters()).device
        observed_all = torch.from_numpy(vector[deepest.b_slice]).to(device, torch.float32)
        # A seeded subset of the coordinates bounds memory (vocab x coordinates per text).
        keep = torch.randperm(observed_all.numel(), generator=torch.Generator().manual_seed(0))
        keep = keep[:max_coordinates].to(device)
        observed = observed_all[keep]
        vocab = _vocab_size(model)
        width = max(len(s) for s in seqs) + 1
        ids = torch.zeros(len(seqs), width, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for b, seq in enumerate(seqs):
            ids[b, :len(seq)] = torch.tensor(seq)
            mask[b, :len(seq) + 1] = 1
        labels = torch.where(mask.bool(), ids, torch.full_like(ids, -100))
        ids, mask, labels = ids.to(device), mask.to(device), labels.to(device)
        count = int((labels[:, 1:] != -100).sum())
        out = model(input_ids=ids, attention_mask=mask, labels=labels)
        (base,) = torch.autograd.grad(out.loss, params, retain_graph=True)
        current = base.reshape(-1)[keep]
        jacobians = []
        for b, seq in enumerate(seqs):
            logits = out.logits[b, len(seq) - 1]
            rows = []
            for start in range(0, vocab, chunk):
                eye = torch.zeros(min(chunk, vocab - start), vocab, device=device)
                eye[torch.arange(eye.shape[0]), torch.arange(start, start + eye.shape[0])] = 1
                (grads,) = torch.autograd.grad(logits, params, grad_outputs=eye,
                                               retain_graph=True, is_grads_batched=True)
                rows.append(grads.reshape(grads.shape[0], -1)[:, keep])
            jacobians.append(torch.cat(rows) / count)  # vocab x P: d logit / d params, over N
        labels_now = [int(ids[b, len(seq)]) for b, seq in enumerate(seqs)]  # placeholders
        for _ in range(sweeps):  # coordinate descent: each label with the others fixed
            for b, jac in enumerate(jacobians):
                candidates = current + jac[labels_now[b]] - jac
                cos = torch.nn.functional.cosine_similarity(
                    -candidates, observed.expand_as(candidates), dim=1)
                best = int(torch.argmax(cos))
                current = candidates[best]
                labels_now[b] = best
        for seq, label in zip(seqs, labels_now, strict=True):
            seq.append(label)
    return seqs


# ----------------------------------------------------------------- embeddings


def token_set_from_embeddings(model: PeftModel, update: np.ndarray) -> list[int]:
    """Tokens whose embedding rows (or LoRA-embedding columns) the update changed.

    Works when the input embedding is trained (``modules_to_save`` or a LoRA
    adapter on ``embed_tokens``); returns an empty list otherwise.
    """
    vector = _check_update(model, update)
    offset = 0
    found: set[int] = set()
    emb = model.get_input_embeddings()
    vocab = int(emb.weight.shape[0])
    for name, param in zip(adapter_names(model), trainable_parameters(model), strict=True):
        n = param.numel()
        part = vector[offset:offset + n].reshape(tuple(param.shape))
        offset += n
        if "lora_embedding_A" in name and part.shape[-1] == vocab:
            found.update(int(i) for i in np.nonzero(np.abs(part).sum(axis=0))[0])
        elif "embed_tokens" in name and part.ndim == 2 and part.shape[0] == vocab:
            found.update(int(i) for i in np.nonzero(np.abs(part).sum(axis=1))[0])
    return sorted(found)


# ----------------------------------------------------------------- TAG / LAMP


@contextlib.contextmanager
def _eager_attention(model: PeftModel) -> Iterator[None]:
    """Use eager attention inside: fused kernels have no second derivative (TAG needs one)."""
    config: Any = cast(Any, model.get_base_model()).config
    saved = getattr(config, "_attn_implementation", None)
    config._attn_implementation = "eager"
    try:
        yield
    finally:
        config._attn_implementation = saved


@dataclass(frozen=True)
class TagSettings:
    """Knobs of :func:`tag` (bounded iterations and time)."""

    iterations: int = 200
    lr: float = 0.1
    l2_weight: float = 1e-2
    """Weight of the L2 distance between the dummy and observed updates (TAG's extra term)."""
    prior_weight: float = 0.05
    """Weight of the language prior: the model's own loss on the dummy text."""
    time_limit_s: float = 60.0
    seed: int = 0


def tag(
    model: PeftModel,
    update: np.ndarray,
    *,
    batch_size: int,
    length: int,
    global_vector: np.ndarray | None = None,
    candidate_tokens: Sequence[int] | None = None,
    observation: str = "one client's update",
    settings: TagSettings | None = None,
) -> InversionRecovery:
    """Fit ``batch_size`` soft sequences of ``length`` tokens whose gradient matches ``update``.

    The attacker knows the training batch size and sequence length (public
    hyperparameters).  With ``candidate_tokens`` (from :func:`token_set`) the
    search is restricted to them, as LAMP does with the embedding gradient.
    The cosine is sign- and scale-free, so it matches an SGD step's update as
    well as a gradient.
    """
    settings = settings or TagSettings()
    if batch_size < 1 or length < 2:
        raise DataError("TAG needs batch_size >= 1 and length >= 2")
    start = time.perf_counter()
    vector = _check_update(model, update)
    device = next(model.parameters()).device
    vocab = _vocab_size(model)
    allowed = torch.arange(vocab) if not candidate_tokens else torch.tensor(
        sorted(set(int(t) for t in candidate_tokens)))
    emb = model.get_input_embeddings().weight.detach()
    table = emb[allowed.to(emb.device)]
    params = trainable_parameters(model)
    target = torch.from_numpy(vector).to(device=device, dtype=torch.float32)
    gen = torch.Generator().manual_seed(settings.seed)
    logits = (0.1 * torch.randn(batch_size, length, len(allowed), generator=gen)).to(device)
    logits.requires_grad_(True)
    opt = torch.optim.Adam([logits], lr=settings.lr)
    best: tuple[float, torch.Tensor] = (math.inf, logits.detach().clone())
    iterations = 0
    with _at_global(model, global_vector), _eager_attention(model):
        model.eval()  # dropout off; autograd still flows into the adapter
        for step in range(1, settings.iterations + 1):
            iterations = step
            probs = torch.softmax(logits, dim=-1)
            embeds = probs @ table
            out = model(inputs_embeds=embeds).logits[:, :-1, :]
            soft_labels = torch.zeros(batch_size, length - 1, vocab, device=device)
            soft_labels[..., allowed.to(device)] = probs[:, 1:, :]
            loss = -(soft_labels * torch.log_softmax(out, dim=-1)).sum(-1).mean()
            grads = torch.autograd.grad(loss, params, create_graph=True)
            flat = torch.cat([g.reshape(-1) for g in grads])
            # A descent step is minus the gradient: match the update's direction.
            cos = torch.nn.functional.cosine_similarity(-flat, target, dim=0)
            scale = target.norm() / flat.norm().clamp_min(1e-12)
            l2 = (flat * scale + target).pow(2).sum() / target.pow(2).sum().clamp_min(1e-30)
            objective = (1 - cos) + settings.l2_weight * l2 + settings.prior_weight * loss
            opt.zero_grad()
            objective.backward()
            opt.step()
            value = float(1 - cos.detach())
            if value < best[0]:
                best = (value, logits.detach().clone())
            if time.perf_counter() - start > settings.time_limit_s:
                break
    picked = allowed[best[1].argmax(dim=-1).cpu()]
    sequences = [row.tolist() for row in picked]
    return InversionRecovery(
        method="tag", observation=observation,
        token_ids=sorted({t for s in sequences for t in s}), sequences=sequences,
        conditions={"iterations": iterations, "best_cosine_distance": best[0],
                    "candidates": len(allowed)},
        seconds=time.perf_counter() - start,
    )
