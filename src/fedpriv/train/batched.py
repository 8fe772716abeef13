"""Batched multi-client local training: many clients' local steps in one forward/backward.

The sequential loop (:func:`fedpriv.train.local.train_local`) trains one client
at a time: load its adapter into the shared model, run its steps, read the
adapter back.  For cross-device federations (hundreds of clients per round with
a few records each) the per-client Python, optimiser and small-matmul overhead
dominates.  :class:`BatchedClientTrainer` trains a *chunk* of clients together:

* every LoRA layer of the shared base model is patched, for the duration of a
  chunk, to hold a **stack** of adapters — ``A`` as ``(C, r, in)`` and ``B`` as
  ``(C, out, r)``, one slice per client (only ``B`` under FFA-LoRA, whose ``A``
  is frozen and shared).  The chunk's batches are concatenated client-major
  into one ``(C·b, T)`` batch; the base layers run once on all of it, and the
  LoRA path is a batched matmul ``x_c A_cᵀ B_cᵀ`` per client slice;
* client ``c``'s loss depends only on its own slice, so one backward pass of
  ``Σ_c loss_c`` gives every client its own gradient;
* each client has its own optimiser state, kept stacked (AdamW's moments as
  ``(C, …)`` tensors), and the update follows ``torch.optim.AdamW`` / ``SGD``
  formula for formula;
* under sample-level DP every example's gradient is clipped to ``C`` *within
  its client*: per-example gradients of the LoRA weights come from the layer
  inputs and output gradients (``∇B_n = s·Σ_t δy_{n,t} h_{n,t}ᵀ``,
  ``∇A_n = Σ_t δh_{n,t} x_{n,t}ᵀ``, as Opacus computes them for ``nn.Linear``),
  the per-example norm is taken over every trainable parameter, and the clipped
  sum, the Gaussian noise (drawn from the client's own generator, parameter by
  parameter, exactly as Opacus' ``DPOptimizer`` draws it) and the division by
  the expected batch size follow ``DPOptimizer`` step by step.

Batches that differ in size or length are padded: missing rows are dummy rows
(one pad token, every label ``-100``) that contribute neither loss nor gradient;
a causal model's real positions never attend to right padding.  The result is
therefore the sequential loop's, within float rounding (``tests/test_batched.py``
compares the two on a small federation, with and without DP and FFA-LoRA).

Memory is bounded: clients are processed in chunks whose estimated activation
memory (:func:`estimate_client_bytes`) fits ``memory_budget_mb``; on a CPU a
chunk also holds at most about :data:`CPU_CHUNK_TOKENS` tokens, where larger
chunks only fall out of the caches.

What it does not do (:func:`batched_unsupported` says why, and the federated
loop then trains those clients sequentially): adapter dropout (its random masks
cannot match the sequential RNG), Opacus' ``secure_mode`` noise sampler and
ghost clipping's two-pass backward (the clipped sum here is exact per-example
clipping, which is the same quantity), LoRA variants (DoRA) and layers other
than ``nn.Linear``.
"""

from __future__ import annotations

import contextlib
import math
import types
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from peft import PeftModel
from peft.tuners.lora.layer import Linear as LoraLinear

from fedpriv.errors import ConfigError, ModelError
from fedpriv.models import trainable_parameters
from fedpriv.train.batching import TokenIds, training_batches
from fedpriv.train.local import LocalResult, LocalTrainingSettings, autocast_context

__all__ = [
    "CPU_CHUNK_TOKENS",
    "BatchedClientTrainer", "ClientJob", "DPJobSettings", "batched_unsupported",
    "estimate_client_bytes",
]

CPU_CHUNK_TOKENS = 4096
"""On a CPU, about how many tokens one chunk of clients holds (see ``chunk_size``)."""
_ADAMW_BETAS = (0.9, 0.999)
_ADAMW_EPS = 1e-8


@dataclass(frozen=True)
class DPJobSettings:
    """Sample-level DP-SGD settings of a batched chunk (see :mod:`fedpriv.dp.sample`)."""

    noise_multiplier: float
    """The multiplier the noise is drawn with (the accounted one times any mutation scale)."""
    max_grad_norm: float


@dataclass
class ClientJob:
    """One client's local round: its examples and the generators its draws come from."""

    client: int
    examples: Sequence[TokenIds]
    rng: np.random.Generator
    """Orders its batches (Poisson-samples its examples under DP)."""
    noise: torch.Generator | None = None
    """DP-SGD noise (required under DP)."""
    nominal_size: int | None = None
    """Public size the DP sample rate and step count derive from (default: the example count)."""


def batched_unsupported(model: PeftModel, *, dropout: float = 0.0, secure_mode: bool = False,
                        ) -> str | None:
    """Return why ``model`` cannot be trained batched (``None`` when it can)."""
    if dropout:
        return "LoRA dropout draws random masks the batched trainer cannot reproduce"
    if secure_mode:
        return "Opacus' secure_mode noise sampler is not reproduced by the batched trainer"
    try:
        _lora_layers(model)
    except ModelError as err:
        return str(err)
    return None


@dataclass
class _Slot:
    """One LoRA layer and which of its matrices are trained (stacked)."""

    module: LoraLinear
    adapter: str
    scaling: float
    a_index: int | None
    """Position of ``lora_A.weight`` in the trainable parameters (``None``: frozen, shared)."""
    b_index: int | None


def _lora_layers(model: PeftModel) -> list[_Slot]:
    """Return every LoRA layer holding a trainable parameter; check each is supported."""
    params = trainable_parameters(model)
    index = {id(p): k for k, p in enumerate(params)}
    slots: list[_Slot] = []
    covered: set[int] = set()
    for name, module in model.named_modules():
        if not isinstance(module, LoraLinear):
            continue
        adapters = [a for a in module.active_adapters if a in module.lora_A]
        if len(adapters) != 1:
            raise ModelError(f"LoRA layer {name} has {len(adapters)} active adapters; the batched "
                             "trainer needs exactly one")
        adapter = adapters[0]
        if adapter in module.lora_variant:
            raise ModelError(f"LoRA layer {name} uses a LoRA variant (e.g. DoRA), which the "
                             "batched trainer does not support")
        if not isinstance(module.lora_dropout[adapter], torch.nn.Identity):
            raise ModelError(f"LoRA layer {name} has dropout; the batched trainer needs none")
        if module.merged or module.disable_adapters:
            raise ModelError(f"LoRA layer {name} is merged or disabled")
        a = module.lora_A[adapter].weight
        b = module.lora_B[adapter].weight
        slot = _Slot(module, adapter, float(module.scaling[adapter]),
                     index.get(id(a)), index.get(id(b)))
        if slot.a_index is None and slot.b_index is None:
            continue
        covered.update(k for k in (slot.a_index, slot.b_index) if k is not None)
        slots.append(slot)
    if len(covered) != len(params):
        raise ModelError("some trainable parameters are not the A/B matrices of peft LoRA "
                         "nn.Linear layers (e.g. embedding or conv LoRA); train sequentially")
    return slots


def estimate_client_bytes(model: PeftModel, *, rows: int, seq_len: int, adapter_values: int,
                          dp: bool) -> int:
    """Rough peak memory one client of a chunk adds: activations, logits, stacked state.

    Per token: each decoder layer keeps about 24 hidden-sized activations for the
    backward pass, and the logits with their softmax about 3 vocabulary-sized
    rows; the adapter stack, its gradient and AdamW's two moments add
    ``4 × adapter_values``.  DP adds the per-layer inputs it keeps and each row's
    per-example gradient (``adapter_values`` per row).  An estimate
    for sizing chunks, not a bound.
    """
    cfg = model.config
    hidden = int(getattr(cfg, "hidden_size", 0) or getattr(cfg, "n_embd", 0) or 768)
    layers = int(getattr(cfg, "num_hidden_layers", 0) or getattr(cfg, "n_layer", 0) or 12)
    inter = int(getattr(cfg, "intermediate_size", 0) or 4 * hidden)
    vocab = int(getattr(cfg, "vocab_size", 0) or 32000)
    per_token = layers * (24 * hidden + 4 * inter) + 3 * vocab
    per_row = 0
    if dp:  # the per-layer inputs it keeps, and every example's gradient of the adapter
        per_token += layers * (8 * hidden + 2 * inter)
        per_row = adapter_values
    return 4 * (rows * (seq_len * per_token + per_row) + 4 * adapter_values)


class _StackedAdapters:
    """Patches every LoRA layer to run the current stack of client adapters."""

    def __init__(self, slots: list[_Slot]) -> None:
        self.slots = slots
        self.stacks: list[torch.Tensor] = []
        self.capture = False
        self.inputs: list[torch.Tensor] = []
        """Per slot, under capture: the layer input ``x`` as ``(C, b·T, in)``."""
        self.hidden: list[torch.Tensor] = []
        """Per slot, under capture: ``h = x Aᵀ`` as ``(C, b·T, r)``."""
        self.outputs: list[torch.Tensor] = []
        """Per slot, under capture: ``y = h Bᵀ`` (before scaling) as ``(C, b·T, out)``."""
        self.clients = 1

    def _forward(self, k: int) -> Any:
        slot = self.slots[k]
        owner = self

        def forward(module: Any, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
            result = module.base_layer(x, *args, **kwargs)
            dtype = result.dtype
            c = owner.clients
            a_w: torch.Tensor = module.lora_A[slot.adapter].weight
            b_w: torch.Tensor = module.lora_B[slot.adapter].weight
            xc = x.to(a_w.dtype).reshape(c, -1, x.shape[-1])
            if slot.a_index is None:
                h = xc @ a_w.t()
            else:
                h = torch.bmm(xc, owner.stacks[slot.a_index].transpose(1, 2))
            if slot.b_index is None:
                y = h @ b_w.t()
            else:
                y = torch.bmm(h, owner.stacks[slot.b_index].transpose(1, 2))
            if owner.capture:
                owner.inputs.append(xc)
                owner.hidden.append(h)
                owner.outputs.append(y)
            return (result + (y * slot.scaling).reshape(result.shape)).to(dtype)

        return forward

    @contextlib.contextmanager
    def patched(self) -> Iterator[None]:
        for k, slot in enumerate(self.slots):
            slot.module.forward = types.MethodType(self._forward(k), slot.module)  # type: ignore[method-assign]
        try:
            yield
        finally:
            for slot in self.slots:
                if "forward" in slot.module.__dict__:
                    del slot.module.forward


@dataclass
class _Rows:
    """One step's batch of a chunk: ``(C·b, T)`` tensors, client-major, and which rows are real."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    labels: torch.Tensor
    real: torch.Tensor
    """``(C, b)`` bool: the row holds one of the client's examples."""


def _chunk_rows(batches: Sequence[Sequence[TokenIds]], pad_id: int, device: torch.device
                ) -> _Rows:
    """Pad every client's batch (possibly empty) to the same rows and length, client-major."""
    c = len(batches)
    b = max(1, max(len(batch) for batch in batches))
    t = max([len(s) for batch in batches for s in batch] or [1])
    ids = torch.full((c * b, t), pad_id, dtype=torch.long)
    mask = torch.zeros((c * b, t), dtype=torch.long)
    labels = torch.full((c * b, t), -100, dtype=torch.long)
    real = torch.zeros((c, b), dtype=torch.bool)
    mask[:, 0] = 1  # dummy rows attend to their one pad token: no fully masked softmax
    for ci, batch in enumerate(batches):
        for j, seq in enumerate(batch):
            row = ci * b + j
            ids[row, : len(seq)] = torch.tensor(seq, dtype=torch.long)
            mask[row, : len(seq)] = 1
            labels[row, : len(seq)] = ids[row, : len(seq)]
            real[ci, j] = True
    return _Rows(ids.to(device), mask.to(device), labels.to(device), real.to(device))


def _token_losses(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Return each row's summed next-token loss and its number of predicted tokens."""
    targets = torch.nn.functional.pad(labels[:, 1:], (0, 1), value=-100)
    loss = torch.nn.functional.cross_entropy(
        logits.float().reshape(-1, logits.shape[-1]), targets.reshape(-1),
        ignore_index=-100, reduction="none",
    ).view(targets.shape)
    return loss.sum(dim=1), (targets != -100).sum(dim=1)


class BatchedClientTrainer:
    """Trains chunks of clients together on one shared PeftModel (see the module doc).

    ``params`` must be :func:`fedpriv.models.trainable_parameters` of ``model``
    (the adapter vector's order).  :meth:`train` returns every client's local
    adapter vector; the model's own adapter is left as it was.
    """

    def __init__(self, model: PeftModel, *, pad_id: int, device: torch.device,
                 memory_budget_mb: float = 2048.0) -> None:
        if not memory_budget_mb > 0:
            raise ConfigError(f"memory_budget_mb must be > 0, got {memory_budget_mb!r}")
        self.model = model
        self.params = trainable_parameters(model)
        self.shapes = [tuple(p.shape) for p in self.params]
        self.sizes = [p.numel() for p in self.params]
        self.adapter_values = sum(self.sizes)
        self.stack = _StackedAdapters(_lora_layers(model))
        self.pad_id = pad_id
        self.device = device
        self.memory_budget_mb = float(memory_budget_mb)

    # ------------------------------------------------------------------ sizing
    def chunk_size(self, settings: LocalTrainingSettings, seq_len: int, *, dp: bool) -> int:
        """Clients per chunk: the estimated memory fits ``memory_budget_mb``.

        On a CPU a chunk also stays near :data:`CPU_CHUNK_TOKENS` tokens: past a few
        thousand tokens the activations fall out of the caches and a larger chunk
        is slower per client, not faster (measured on 2 cores: 4–10 clients of 8
        records of 64 tokens per chunk gave the most client steps per second).
        """
        rows = settings.batch_size if not dp else math.ceil(1.5 * settings.batch_size) + 2
        per_client = estimate_client_bytes(self.model, rows=rows, seq_len=seq_len,
                                           adapter_values=self.adapter_values, dp=dp)
        size = max(1, int(self.memory_budget_mb * 2**20 // per_client))
        if self.device.type == "cpu":  # by the expected rows: Poisson batches average b
            size = min(size, max(1, CPU_CHUNK_TOKENS // (settings.batch_size * seq_len)))
        return size

    # ------------------------------------------------------------------ training
    def train(self, jobs: Sequence[ClientJob], global_vector: np.ndarray,
              settings: LocalTrainingSettings, *, dp: DPJobSettings | None = None,
              ) -> list[tuple[np.ndarray, LocalResult]]:
        """Train every job's client from ``global_vector``; return (local vector, result) each.

        Under ``dp`` every job needs its ``noise`` generator; the step count and
        rate come from :func:`fedpriv.dp.sample.local_dp_steps` /
        :func:`~fedpriv.dp.sample.local_sample_rate` of its nominal size.
        """
        if dp is not None and any(job.noise is None for job in jobs):
            raise ConfigError("batched DP-SGD needs a noise generator for every client")
        if not jobs:
            return []
        seq_len = max(len(s) for job in jobs for s in job.examples)
        size = self.chunk_size(settings, seq_len, dp=dp is not None)
        out: list[tuple[np.ndarray, LocalResult]] = []
        was_training = self.model.training
        self.model.train()
        try:
            with self.stack.patched():
                for start in range(0, len(jobs), size):
                    out.extend(self._train_chunk(jobs[start:start + size], global_vector,
                                                 settings, dp))
        finally:
            self.model.train(was_training)
            self.stack.stacks = []
        return out

    def _plans(self, jobs: Sequence[ClientJob], settings: LocalTrainingSettings,
               dp: DPJobSettings | None) -> tuple[list[list[list[TokenIds]]], list[int]]:
        """Every client's batches (in order) and its expected batch size (DP)."""
        plans: list[list[list[TokenIds]]] = []
        expected: list[int] = []
        for job in jobs:
            if dp is None:
                plans.append(list(training_batches(
                    job.examples, batch_size=settings.batch_size, steps=settings.steps,
                    epochs=settings.epochs, rng=job.rng)))
                expected.append(0)
            else:
                from fedpriv.dp.sample import local_dp_steps, local_sample_rate, poisson_batches

                n = len(job.examples) if job.nominal_size is None else job.nominal_size
                q = local_sample_rate(settings.batch_size, n)
                steps = local_dp_steps(settings, n)
                plans.append([[job.examples[int(i)] for i in idx] for idx in
                              poisson_batches(len(job.examples), q, steps, job.rng)])
                expected.append(min(settings.batch_size, n))
        return plans, expected

    def _train_chunk(self, jobs: Sequence[ClientJob], global_vector: np.ndarray,
                     settings: LocalTrainingSettings, dp: DPJobSettings | None,
                     ) -> list[tuple[np.ndarray, LocalResult]]:
        c = len(jobs)
        plans, expected = self._plans(jobs, settings, dp)
        base = torch.as_tensor(np.asarray(global_vector, dtype=np.float32), device=self.device)
        stacks: list[torch.Tensor] = []
        offset = 0
        for shape, n in zip(self.shapes, self.sizes, strict=True):
            flat = base[offset:offset + n].to(self.params[len(stacks)].dtype)
            stacks.append(flat.reshape(1, *shape).repeat(c, *([1] * len(shape)))
                          .requires_grad_(True))
            offset += n
        self.stack.stacks = stacks
        self.stack.clients = c
        optim = _StackedOptimizer(settings, stacks, c)
        steps = [len(p) for p in plans]
        loss_sum = np.zeros(c)
        seen = np.zeros(c, dtype=np.int64)
        for s in range(max(steps)):
            active = [k for k in range(c) if s < steps[k]]
            batches = [plans[k][s] if s < steps[k] else [] for k in range(c)]
            if dp is None:
                grads, losses = self._plain_step(batches)
                for k in active:
                    loss_sum[k] += losses[k]
                grads = _clip_per_client(grads, settings.max_grad_norm)
            else:
                grads, losses = self._dp_step(batches, jobs, expected, dp, active)
                for k in active:
                    loss_sum[k] += losses[k]
                    seen[k] += len(batches[k])
            optim.step(grads, active)
        results = []
        with torch.no_grad():
            flat = torch.cat([t.detach().reshape(c, -1).float() for t in stacks], dim=1).cpu()
        for k in range(c):
            if dp is None:
                n_seen = sum(len(b) for b in plans[k])
                mean = loss_sum[k] / max(steps[k], 1)
            else:
                n_seen = int(seen[k])
                mean = loss_sum[k] / n_seen if n_seen else float("nan")
            results.append((flat[k].numpy().copy(),
                            LocalResult(steps=steps[k], examples_seen=n_seen,
                                        mean_loss=float(mean))))
        return results

    def _forward(self, rows: _Rows) -> tuple[torch.Tensor, torch.Tensor]:
        with autocast_context(self.device):
            logits = self.model(input_ids=rows.input_ids,
                                attention_mask=rows.attention_mask).logits
        return _token_losses(logits, rows.labels)

    def _plain_step(self, batches: Sequence[Sequence[TokenIds]]
                    ) -> tuple[list[torch.Tensor], list[float]]:
        """Each client's gradient of its batch's token-mean loss (as Hugging Face's loss)."""
        c = len(batches)
        rows = _chunk_rows(batches, self.pad_id, self.device)
        row_loss, row_tokens = self._forward(rows)
        per_client = row_loss.view(c, -1).sum(dim=1)
        tokens = row_tokens.view(c, -1).sum(dim=1)
        client_loss = per_client / tokens.clamp(min=1)
        grads = torch.autograd.grad(client_loss.sum(), self.stack.stacks)
        return list(grads), client_loss.detach().cpu().tolist()

    def _dp_step(self, batches: Sequence[Sequence[TokenIds]], jobs: Sequence[ClientJob],
                 expected: Sequence[int], dp: DPJobSettings, active: Sequence[int],
                 ) -> tuple[list[torch.Tensor], list[float]]:
        """DP-SGD: per-example clip within each client, sum, add its noise, divide by q·n."""
        c = len(batches)
        st = self.stack
        summed = [torch.zeros_like(t) for t in st.stacks]
        losses = [0.0] * c
        if any(batches):
            rows = _chunk_rows(batches, self.pad_id, self.device)
            b = rows.real.shape[1]
            st.capture = True
            st.inputs, st.hidden, st.outputs = [], [], []
            try:
                row_loss, row_tokens = self._forward(rows)
            finally:
                st.capture = False
            example_loss = row_loss / row_tokens.clamp(min=1)  # per_example_loss's mean
            # δy for every layer; δh only where A is trained (a frozen, shared A under
            # FFA-LoRA may see inputs that carry no gradient at all).
            wanted = list(st.outputs) + [h for h, slot in zip(st.hidden, st.slots, strict=True)
                                         if slot.a_index is not None]
            grads = torch.autograd.grad(example_loss.sum(), wanted)
            d_out = grads[:len(st.slots)]
            rest = iter(grads[len(st.slots):])
            d_hidden = [next(rest) if slot.a_index is not None else None for slot in st.slots]
            sq = torch.zeros((c, b), device=self.device, dtype=torch.float32)
            # Every example's gradient of every stacked weight, kept for the clipped sum
            # (at most rows × adapter values per chunk, which chunk_size budgets for).
            per_example: list[tuple[int, torch.Tensor]] = []
            for k, slot in enumerate(st.slots):
                x = st.inputs[k].detach().reshape(c, b, -1, st.inputs[k].shape[-1])
                h = st.hidden[k].detach().reshape(c, b, -1, st.hidden[k].shape[-1])
                dy = d_out[k].reshape(c, b, -1, d_out[k].shape[-1])  # already holds the scaling
                if slot.b_index is not None:
                    g = dy.transpose(-1, -2) @ h  # (c, b, out, r): Σ_t δy_t h_tᵀ
                    sq += g.float().pow(2).sum(dim=(2, 3))
                    per_example.append((slot.b_index, g))
                grad_h = d_hidden[k]
                if slot.a_index is not None and grad_h is not None:
                    dh = grad_h.reshape(c, b, -1, grad_h.shape[-1])
                    g = dh.transpose(-1, -2) @ x  # (c, b, r, in): Σ_t δh_t x_tᵀ
                    sq += g.float().pow(2).sum(dim=(2, 3))
                    per_example.append((slot.a_index, g))
            norms = sq.sqrt()
            factor = (dp.max_grad_norm / (norms + 1e-6)).clamp(max=1.0) * rows.real
            for index, g in per_example:
                weights = factor.to(g.dtype).view(c, b, 1, 1)
                summed[index] = (weights * g).sum(dim=1).to(summed[index].dtype)
            loss_rows = example_loss.detach().view(c, b) * rows.real
            losses = loss_rows.sum(dim=1).cpu().tolist()
            st.inputs, st.hidden, st.outputs = [], [], []
        std = dp.noise_multiplier * dp.max_grad_norm
        out = self._noise_in_opacus_order(summed, jobs, active, std) if std > 0 else summed
        scale = torch.tensor([float(e) if e else 1.0 for e in expected], device=self.device)
        return [g / scale.view(-1, *([1] * (g.dim() - 1))) for g in out], losses

    def _noise_in_opacus_order(self, summed: list[torch.Tensor], jobs: Sequence[ClientJob],
                               active: Sequence[int], std: float) -> list[torch.Tensor]:
        """Add each active client's noise, drawn parameter by parameter from its generator."""
        out = [t.clone() for t in summed]
        for k in active:
            gen = jobs[k].noise
            assert gen is not None
            for total in out:
                total[k] += torch.normal(mean=0.0, std=std, size=total.shape[1:],
                                         device=total.device, generator=gen)
        return out


def _clip_per_client(grads: list[torch.Tensor], max_norm: float | None) -> list[torch.Tensor]:
    """``torch.nn.utils.clip_grad_norm_`` applied to each client's gradient separately."""
    if max_norm is None:
        return grads
    c = grads[0].shape[0]
    sq = torch.zeros(c, device=grads[0].device, dtype=torch.float32)
    for g in grads:
        sq += g.reshape(c, -1).float().pow(2).sum(dim=1)
    coef = (max_norm / (sq.sqrt() + 1e-6)).clamp(max=1.0)
    return [g * coef.view(-1, *([1] * (g.dim() - 1))).to(g.dtype) for g in grads]


class _StackedOptimizer:
    """AdamW or plain SGD for every client of a chunk, state stacked along dim 0.

    Follows ``torch.optim.AdamW``'s single-tensor update (decoupled weight decay,
    bias-corrected moments, ``eps`` after the square root) and ``torch.optim.SGD``
    without momentum (weight decay added to the gradient).
    """

    def __init__(self, settings: LocalTrainingSettings, stacks: list[torch.Tensor], c: int
                 ) -> None:
        self.settings = settings
        self.stacks = stacks
        self.adam = settings.optimizer == "adamw"
        self.exp_avg = [torch.zeros_like(t) for t in stacks] if self.adam else []
        self.exp_avg_sq = [torch.zeros_like(t) for t in stacks] if self.adam else []
        self.count = np.zeros(c, dtype=np.int64)

    @torch.no_grad()
    def step(self, grads: list[torch.Tensor], active: Sequence[int]) -> None:
        if not active:
            return
        idx = torch.as_tensor(list(active), device=self.stacks[0].device)
        every = len(active) == self.count.size
        lr, wd = self.settings.lr, self.settings.weight_decay
        self.count[list(active)] += 1
        step = int(self.count[active[0]])
        for k, param in enumerate(self.stacks):
            g = grads[k] if every else grads[k].index_select(0, idx)
            p = param.data if every else param.data.index_select(0, idx)
            if self.adam:
                beta1, beta2 = _ADAMW_BETAS
                m = self.exp_avg[k] if every else self.exp_avg[k].index_select(0, idx)
                v = self.exp_avg_sq[k] if every else self.exp_avg_sq[k].index_select(0, idx)
                if wd:
                    p.mul_(1 - lr * wd)
                m.lerp_(g, 1 - beta1)
                v.mul_(beta2).addcmul_(g, g, value=1 - beta2)
                bias1 = 1 - beta1 ** step
                bias2_sqrt = (1 - beta2 ** step) ** 0.5
                denom = (v.sqrt() / bias2_sqrt).add_(_ADAMW_EPS)
                p.addcdiv_(m, denom, value=-(lr / bias1))
                if not every:
                    self.exp_avg[k].index_copy_(0, idx, m)
                    self.exp_avg_sq[k].index_copy_(0, idx, v)
            else:
                d = g + wd * p if wd else g
                p.add_(d, alpha=-lr)
            if not every:
                param.data.index_copy_(0, idx, p)
