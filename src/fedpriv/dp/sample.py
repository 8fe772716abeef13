"""Sample-level DP-SGD for a client's local training on the LoRA adapter, through Opacus.

The unit of privacy is one training example (one record, one sequence).  Each
local step of a client

1. Poisson-samples its examples: each one independently with rate
   ``q = batch_size / n`` (:func:`poisson_batches`; a step may get no example);
2. computes every sampled example's own loss (:func:`per_example_loss`, the mean
   next-token cross-entropy over its tokens) and its gradient with respect to the
   trainable adapter parameters only;
3. clips each example's gradient to L2 norm ``C``, sums them, adds ``N(0, σ²C²)``
   and divides by the *expected* batch size ``q·n`` (Abadi et al. 2016, with the
   fixed denominator the subsampled-Gaussian accountant assumes), then steps AdamW.

Opacus does steps 2–3.  The base model is frozen and shared by all clients, so
:class:`PrivateModel` wraps it once per run (hooks on the LoRA ``nn.Linear``
layers only) and every client call makes a fresh DP optimiser around the same
wrapper.  Two clipping modes:

* ``per_sample`` — Opacus' ``GradSampleModule`` materialises every example's
  gradient (``p.grad_sample``, shape ``(B, *p.shape)``); ``DPOptimizer`` clips and
  sums them.  Cheap for LoRA, whose per-example gradients are small.
* ``ghost`` — fast gradient / ghost clipping (Li et al. 2022, Bu et al. 2023):
  ``GradSampleModuleFastGradientClipping`` computes only per-example gradient
  *norms* in a first backward pass, and a second backward pass of
  ``Σ_i c_i·ℓ_i`` (``c_i = min(1, C / ‖g_i‖)``) gives the clipped sum directly.

**loss_reduction.**  Opacus' hooks multiply the backpropagated signal by the
batch size when ``loss_reduction="mean"`` (they assume the loss was a batch
mean).  Here the wrapper uses ``loss_reduction="sum"`` and the backward pass is
of ``Σ_i ℓ_i``, so ``grad_sample[i]`` is exactly ``∇ℓ_i`` with no rescaling; the
optimiser, with ``loss_reduction="mean"`` and ``expected_batch_size = q·n``, then
divides the noised clipped sum by ``q·n`` (never by the realised batch size, which
would leak it).

Noise comes from the ``torch.Generator`` the caller passes (the loop seeds it per
round and client from the run's DP secret, :mod:`fedpriv.dp.secret`, so it is
secret from readers of the report yet resumable; only the deterministic debugging
mode seeds it from the public seed).  ``secure_mode`` switches Opacus to its
noise sampler that resists the floating-point attacks on textbook Gaussian
sampling (Mironov 2012; Jin et al. 2022, https://arxiv.org/abs/2112.05307), at
about four times the sampling cost.

**Audit hooks.**  :func:`train_local_dp` can plant white-box gradient canaries
(:mod:`fedpriv.attacks.gradient_canaries`): records whose gradient is a fixed
signed basis vector of norm ``C``, sampled with rate ``q`` like every example
and added to the clipped sum before the noise.  Its ``noise_scale`` scales the
noise actually drawn, for mutation tests of the audit only (does the audit see
a mechanism with less noise than accounted?): the accountant still uses
``dp.noise_multiplier``.
"""

from __future__ import annotations

import contextlib
import math
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import numpy as np
import torch
from torch import nn

from fedpriv.attacks.gradient_canaries import GradientCanaries
from fedpriv.dp.config import CLIPPING_MODES
from fedpriv.errors import ConfigError, DataError, ModelError
from fedpriv.train.batching import TokenIds, collate
from fedpriv.train.local import (
    LocalResult,
    LocalTrainingSettings,
    autocast_context,
    make_optimizer,
)

__all__ = [
    "CLIPPING_MODES", "PrivateModel", "SampleDPSettings", "check_model_supported",
    "local_dp_steps", "local_sample_rate", "per_example_loss", "poisson_batches",
    "train_local_dp",
]

_LEFTOVER_MODULE_ATTRS = ("activations", "max_batch_len")
"""Attributes Opacus' forward hooks leave on a module until its backward hook runs."""
_OPACUS_PARAM_ATTRS = ("grad_sample", "_forward_counter", "_current_grad_sample",
                       "_norm_sample", "summed_grad")
"""Attributes Opacus puts on parameters (the GradSampleModule's and DPOptimizer's)."""
_HOOK_WARNING = "Full backward hook is firing when gradients are computed with respect to module"


@dataclass(frozen=True)
class SampleDPSettings:
    """The DP-SGD mechanism of every client: noise multiplier, per-example clip bound, mode."""

    noise_multiplier: float
    """σ: the noise added to the clipped sum has standard deviation ``σ·max_grad_norm``."""
    max_grad_norm: float
    """C: every example's gradient is clipped to this L2 norm."""
    clipping: str = "per_sample"
    """``per_sample`` (materialised per-example gradients) or ``ghost`` (norms only)."""
    secure_mode: bool = False
    """Opacus' floating-point-attack-resistant Gaussian sampler."""

    def __post_init__(self) -> None:
        sigma = self.noise_multiplier
        if isinstance(sigma, bool) or not isinstance(sigma, (int, float)) or not (
            math.isfinite(sigma) and sigma >= 0
        ):
            raise ConfigError(f"DP-SGD noise_multiplier must be a finite number > 0, got "
                              f"{sigma!r}; give dp_params.noise_multiplier or an epsilon")
        if sigma == 0:
            raise ConfigError("sample-level DP is on but noise_multiplier is 0: with no noise "
                              "there is no privacy. Give a noise_multiplier > 0 or an epsilon")
        clip = self.max_grad_norm
        if isinstance(clip, bool) or not isinstance(clip, (int, float)) or not (
            math.isfinite(clip) and clip > 0
        ):
            raise ConfigError(f"DP-SGD max_grad_norm (the per-example clip bound, dp_params.clip) "
                              f"must be a finite number > 0, got {clip!r}; 1.0 is usual")
        if self.clipping not in CLIPPING_MODES:
            raise ConfigError(f"DP-SGD clipping must be one of {', '.join(CLIPPING_MODES)}, got "
                              f"{self.clipping!r}")
        if not isinstance(self.secure_mode, bool):
            raise ConfigError(f"secure_mode must be true or false, got {self.secure_mode!r}")


# ---------------------------------------------------------------------------- sampling


def local_sample_rate(batch_size: int, num_examples: int) -> float:
    """Return the Poisson rate ``q = min(1, batch_size / num_examples)`` of one client."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    if isinstance(num_examples, bool) or not isinstance(num_examples, int) or num_examples < 1:
        raise DataError(f"a client has {num_examples!r} training examples; give every client "
                        "at least one record")
    return min(1.0, batch_size / num_examples)


def local_dp_steps(settings: LocalTrainingSettings, num_examples: int) -> int:
    """Return the number of Poisson-sampled steps of one client's local round.

    ``settings.steps`` when given, else ``ceil(epochs / q)`` (one epoch when
    neither is set, as in :func:`fedpriv.train.batching.training_batches`): the
    steps after which every example was sampled ``epochs`` times in expectation.
    """
    q = local_sample_rate(settings.batch_size, num_examples)
    if settings.steps is not None:
        return settings.steps
    epochs = settings.epochs or 1
    if q == 1.0:
        return epochs
    # epochs / q = epochs·n / batch_size, in exact integer arithmetic.
    return -(-epochs * num_examples // settings.batch_size)


def poisson_batches(
    num_examples: int, sample_rate: float, steps: int, rng: np.random.Generator
) -> Iterator[np.ndarray]:
    """Yield ``steps`` index arrays, each holding every example independently with prob ``q``.

    Batches have variable size and may be empty; DP-SGD still takes its (noise
    only) step then, which is what the subsampled-Gaussian accountant assumes.
    """
    if isinstance(num_examples, bool) or not isinstance(num_examples, int) or num_examples < 1:
        raise DataError(f"cannot sample from {num_examples!r} examples; need at least one")
    if not (isinstance(sample_rate, (int, float)) and 0 < sample_rate <= 1):
        raise ConfigError(f"Poisson sample rate must be in (0, 1], got {sample_rate!r}")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
        raise ConfigError(f"steps must be an integer >= 0, got {steps!r}")
    for _ in range(steps):
        yield np.flatnonzero(rng.random(num_examples) < sample_rate)


# ---------------------------------------------------------------------------- loss


def per_example_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Return each sequence's mean next-token cross-entropy over its labelled tokens: ``(B,)``.

    ``logits`` is ``(B, T, V)``, ``labels`` ``(B, T)`` with ``-100`` where no
    token is predicted (padding).  Position ``t`` predicts label ``t + 1``, as in
    Hugging Face's causal-LM loss; logits are upcast to float32 first.  A sequence
    with no labelled token has loss 0 (and so no gradient).
    """
    if logits.dim() != 3 or labels.dim() != 2 or logits.shape[:2] != labels.shape:
        raise DataError(f"logits {tuple(logits.shape)} and labels {tuple(labels.shape)} do not "
                        "match; expected (batch, time, vocab) and (batch, time)")
    # Shift the labels left (padding the end with -100) rather than slicing the logits:
    # no copy of the (B, T, V) logits, as in Hugging Face's ForCausalLMLoss.
    targets = nn.functional.pad(labels[:, 1:], (0, 1), value=-100)
    token_loss = nn.functional.cross_entropy(
        logits.float().reshape(-1, logits.shape[-1]), targets.reshape(-1),
        ignore_index=-100, reduction="none",
    ).view(targets.shape)
    counts = (targets != -100).sum(dim=1).clamp(min=1)
    return token_loss.sum(dim=1) / counts


# ---------------------------------------------------------------------------- model support


def _registries() -> tuple[dict[type, Any], dict[type, Any], dict[type, Any]]:
    """Opacus' grad samplers, norm samplers (ghost) and module validators, by exact type."""
    from opacus.grad_sample import GradSampleModule, GradSampleModuleFastGradientClipping
    from opacus.validators import ModuleValidator

    return (GradSampleModule.GRAD_SAMPLERS, GradSampleModuleFastGradientClipping.NORM_SAMPLERS,
            ModuleValidator.VALIDATORS)


def _unsupported(name: str, module: nn.Module, why: str) -> ModelError:
    return ModelError(
        f"layer '{name}' ({type(module).__name__}) {why}; leave it out of LoRA target_modules / "
        "freeze it (requires_grad=False), or train without sample-level DP (dp 'user' bounds "
        "whole client updates instead)"
    )


def check_model_supported(model: nn.Module, clipping: str = "per_sample") -> None:
    """Raise :class:`ModelError` naming the first layer DP-SGD cannot handle in ``model``.

    Every module that directly holds a trainable parameter must be of a type
    Opacus has a per-sample gradient function for (``GradSampleModule.GRAD_SAMPLERS``,
    exact type: a subclass may compute something else); with ``ghost`` clipping a
    type with a norm sampler (``NORM_SAMPLERS``) works as well.  Opacus' own
    validators are run on those modules and trainable modules with buffers are
    rejected, like ``GradSampleModule(strict=True)`` does.  Opacus' functorch
    fallback is deliberately not used for other types: it is only right for
    layers that treat the examples of a batch independently, which cannot be
    checked.  Batch normalisation anywhere (even frozen) is rejected: in training
    mode it mixes the examples of a batch, so no per-example gradient exists.
    """
    if clipping not in CLIPPING_MODES:
        raise ConfigError(f"clipping must be one of {', '.join(CLIPPING_MODES)}, got "
                          f"{clipping!r}")
    grad_samplers, norm_samplers, validators = _registries()
    supported = set(grad_samplers)
    if clipping == "ghost":
        supported |= set(norm_samplers)
    trainable = 0
    for name, module in model.named_modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            raise _unsupported(name, module, "normalises over the batch in training mode, so "
                               "examples are not independent and DP-SGD does not apply")
        own = [p for p in module.parameters(recurse=False) if p.requires_grad]
        if not own:
            continue
        trainable += len(own)
        kind = type(module)
        if kind not in supported:
            raise _unsupported(name, module, "holds trainable parameters Opacus cannot compute "
                               "per-sample gradients for")
        if any(True for _ in module.buffers(recurse=False)):
            raise _unsupported(name, module, "holds trainable parameters and buffers (state "
                               "shared across examples), which Opacus does not support")
        if kind in validators:
            problems = validators[kind](module)
            if problems:
                raise _unsupported(name, module, f"fails Opacus' validation ({problems[0]})")
    if trainable == 0:
        raise ModelError("the model has no trainable parameters; attach a LoRA adapter "
                         "(attach_lora) before wrapping it for DP-SGD")


# ---------------------------------------------------------------------------- the wrapper


def _trainable(model: nn.Module) -> list[nn.Parameter]:
    return [p for p in model.parameters() if p.requires_grad]


class PrivateModel:
    """Owner of the Opacus wrapper around one model for one run.

    Wraps ``model`` once (hooks on the modules with trainable parameters, which
    stay off outside :meth:`training`), keeps the trainable parameters it was
    wrapped with, and makes a fresh DP optimiser per client call.  :meth:`close`
    (or leaving the ``with`` block) removes every hook and attribute Opacus added,
    leaving ``model`` as it was.
    """

    def __init__(self, model: nn.Module, settings: SampleDPSettings) -> None:
        """Check ``model`` (see :func:`check_model_supported`) and wrap it."""
        from opacus.grad_sample import GradSampleModule, GradSampleModuleFastGradientClipping

        if not isinstance(settings, SampleDPSettings):
            raise ConfigError(f"settings must be SampleDPSettings, got {type(settings).__name__}")
        if hasattr(model, "autograd_grad_sample_hooks"):
            raise ModelError("the model is already wrapped by Opacus; close() the other "
                             "PrivateModel first")
        check_model_supported(model, settings.clipping)
        self.settings = settings
        self.model = model
        self.params = _trainable(model)
        self._closed = False
        # loss_reduction="sum": the hooks take the backpropagated signal as is, so with
        # a backward pass of Σ_i ℓ_i every grad_sample[i] (or norm) is exactly ∇ℓ_i.
        try:
            if settings.clipping == "ghost":
                wrapper: Any = GradSampleModuleFastGradientClipping(
                    model, batch_first=True, loss_reduction="sum", strict=True,
                    max_grad_norm=settings.max_grad_norm, use_ghost_clipping=True,
                )
            else:
                wrapper = GradSampleModule(
                    model, batch_first=True, loss_reduction="sum", strict=True,
                )
        except NotImplementedError as err:  # pragma: no cover - check_model_supported is stricter
            raise ModelError(f"Opacus cannot wrap this model: {err}") from err
        self._wrapper = wrapper  # typed Any: Opacus has no annotations
        self.module: nn.Module = wrapper
        """The wrapped model (an Opacus ``GradSampleModule``; forward passes through)."""
        wrapper.disable_hooks()

    # -- lifetime -----------------------------------------------------------------
    def close(self) -> None:
        """Remove Opacus' hooks and every attribute it put on parameters and modules."""
        if self._closed:
            return
        self._closed = True
        self._wrapper.cleanup()  # remove_hooks() and Opacus' per-parameter attributes
        self._clear_leftovers(delete=True)

    def __enter__(self) -> PrivateModel:
        """Return ``self``; :meth:`close` runs when the block ends."""
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Close the wrapper."""
        self.close()

    def _clear_leftovers(self, *, delete: bool) -> None:
        for module in self.model.modules():
            for attr in _LEFTOVER_MODULE_ATTRS:
                if attr in module.__dict__:
                    delattr(module, attr)
        for param in self.model.parameters():
            for attr in ("_current_grad_sample", "_norm_sample"):
                if hasattr(param, attr):
                    delattr(param, attr)
            if delete:
                for attr in _OPACUS_PARAM_ATTRS:
                    if hasattr(param, attr):
                        delattr(param, attr)
            elif param.requires_grad and hasattr(param, "grad_sample"):
                param.grad_sample = None
                param._forward_counter = 0  # type: ignore[attr-defined]

    def _check_open(self) -> None:
        if self._closed:
            raise ModelError("this PrivateModel was closed; wrap the model again")

    @contextlib.contextmanager
    def training(self) -> Iterator[nn.Module]:
        """Enable the hooks and training mode for the block; yield the wrapped module.

        Afterwards the hooks are off again (evaluation or attacks on the shared
        model between clients do not feed them), stale activations are dropped and
        the model is in eval mode.
        """
        self._check_open()
        if [id(p) for p in _trainable(self.model)] != [id(p) for p in self.params]:
            raise ModelError("the model's trainable parameters changed since it was wrapped for "
                             "DP-SGD; wrap it again (PrivateModel) after changing requires_grad")
        self._wrapper.train()
        self._wrapper.enable_hooks()
        try:
            yield self._wrapper
        finally:
            self._wrapper.disable_hooks()
            self._clear_leftovers(delete=False)
            self._wrapper.eval()

    # -- optimiser and backward -----------------------------------------------------
    def _dp_optimizer(
        self, params: Sequence[nn.Parameter], *, lr: float, weight_decay: float,
        optimizer: str = "adamw", noise_multiplier: float, max_grad_norm: float,
        expected_batch_size: int,
        noise_generator: torch.Generator | None, secure_mode: bool = False,
    ) -> Any:
        """Return a fresh Opacus DP optimiser over ``optimizer`` (AdamW or SGD) for ``params``.

        ``params`` must be all the model's trainable parameters.

        ``noise_multiplier`` is taken as given (0 switches the noise off: tests only).
        """
        from opacus.optimizers import DPOptimizer, DPOptimizerFastGradientClipping

        self._check_open()
        given = {id(p) for p in params}
        if len(given) != len(params) or given != {id(p) for p in self.params}:
            raise ModelError(
                "DP-SGD must update exactly the model's trainable parameters (clipping bounds "
                "the gradient of all of them together); pass trainable_parameters(model), and "
                "freeze anything else"
            )
        base = make_optimizer(optimizer, params, lr=lr, weight_decay=weight_decay)
        cls = DPOptimizerFastGradientClipping if self.settings.clipping == "ghost" else DPOptimizer
        # "mean": divide the noised clipped sum by the fixed expected batch size q·n.
        return cls(base, noise_multiplier=noise_multiplier, max_grad_norm=max_grad_norm,
                   expected_batch_size=expected_batch_size, loss_reduction="mean",
                   generator=noise_generator, secure_mode=secure_mode)

    def backward(self, losses: torch.Tensor, optimizer: Any) -> None:
        """Backpropagate per-example ``losses`` (shape ``(B,)``) for ``optimizer.step()``.

        ``per_sample``: one backward pass of ``Σ_i ℓ_i``; ``p.grad_sample[i] = ∇ℓ_i``.
        ``ghost``: Opacus' two passes; ``p.grad = Σ_i c_i ∇ℓ_i`` with
        ``c_i = min(1, C / (‖∇ℓ_i‖ + 1e-6))`` (the norms are in
        ``self.module.per_sample_gradient_norms``).
        """
        if losses.dim() != 1:
            raise DataError(f"expected one loss per example (shape (B,)), got "
                            f"{tuple(losses.shape)}")
        with warnings.catch_warnings():
            # LoRA's A sees frozen activations: the hook fires on output gradients, as meant.
            warnings.filterwarnings("ignore", _HOOK_WARNING, UserWarning)
            if self.settings.clipping == "ghost":
                from opacus.utils.fast_gradient_clipping_utils import (
                    DPTensorFastGradientClipping,
                )

                self._wrapper.max_grad_norm = optimizer.max_grad_norm
                try:
                    DPTensorFastGradientClipping(self._wrapper, optimizer, losses, "sum").backward()
                except NotImplementedError as err:  # e.g. a layer used twice in one forward
                    raise ModelError(f"ghost clipping cannot handle this model: {err}; use "
                                     "clipping 'per_sample'") from err
            else:
                losses.sum().backward()

    def backward_empty(self, optimizer: Any) -> None:
        """Prepare ``optimizer.step()`` for a step without examples (noise only)."""
        for p in self.params:
            if self.settings.clipping == "ghost":
                p.grad = torch.zeros_like(p)
            else:
                p.grad_sample = p.new_zeros((0, *p.shape))  # type: ignore[attr-defined]


# ---------------------------------------------------------------------------- audit canaries


@dataclass(frozen=True)
class _CanarySlot:
    """The canaries that fall in one parameter: their local flat indices and canary numbers."""

    param: nn.Parameter
    local: torch.Tensor
    """Indices into ``param.reshape(-1)`` (int64, on the parameter's device)."""
    canaries: np.ndarray
    """Which canaries (positions in the coordinate array) these indices belong to."""


def _canary_slots(params: Sequence[nn.Parameter], coordinates: np.ndarray) -> list[_CanarySlot]:
    """Map flat coordinates of the concatenated ``params`` to (parameter, local index), once."""
    offsets = np.cumsum([0] + [p.numel() for p in params])
    dim = int(offsets[-1])
    if coordinates.size and int(coordinates.max()) >= dim:
        raise ConfigError(f"a gradient canary sits at coordinate {int(coordinates.max())} but the "
                          f"trainable parameters hold {dim} values; draw the canaries for this "
                          "adapter (GradientCanaries.draw(count, adapter_size(model), rng))")
    owner = np.searchsorted(offsets, coordinates, side="right") - 1
    slots = []
    for k, param in enumerate(params):
        mine = np.flatnonzero(owner == k)
        if mine.size:
            local = torch.as_tensor(coordinates[mine] - offsets[k], dtype=torch.int64,
                                    device=param.device)
            slots.append(_CanarySlot(param, local, mine))
    return slots


@contextlib.contextmanager
def _planted_canaries(
    optimizer: Any, canaries: GradientCanaries, slots: list[_CanarySlot], *,
    sample_rate: float, clip: float, rng: np.random.Generator,
) -> Iterator[None]:
    """Within the block, ``optimizer`` adds the sampled canaries' gradients before noising.

    Both Opacus optimisers (``DPOptimizer`` and the ghost-clipping one) run
    ``clip_and_accumulate`` / ``accumulate`` (leaving the clipped sum in
    ``p.summed_grad``, for empty batches too), then ``add_noise``, then
    ``scale_grad``; wrapping ``add_noise`` puts the canaries exactly where a
    record's clipped gradient goes: in the sum the noise is added to and that is
    divided by ``q·n``.
    """
    add_noise = optimizer.add_noise

    def add_canaries_then_noise() -> None:
        sampled = canaries.taking_part(sample_rate, rng)  # one draw per step, always
        values = clip * canaries.signs
        for slot in slots:
            mine = sampled[slot.canaries]
            if not mine.any():
                continue
            summed = slot.param.summed_grad  # type: ignore[attr-defined]
            if summed is None:  # pragma: no cover - Opacus always accumulates before noising
                raise ModelError("Opacus left no clipped sum to plant gradient canaries into")
            if not summed.is_contiguous():
                summed = summed.contiguous()
                slot.param.summed_grad = summed  # type: ignore[attr-defined]
            summed.view(-1).index_add_(
                0, slot.local[torch.as_tensor(mine, device=slot.local.device)],
                torch.as_tensor(values[slot.canaries[mine]], dtype=summed.dtype,
                                device=summed.device))
        add_noise()

    optimizer.add_noise = add_canaries_then_noise
    try:
        yield
    finally:
        del optimizer.add_noise  # the class's method again


# ---------------------------------------------------------------------------- training


def train_local_dp(
    private: PrivateModel,
    params: Sequence[nn.Parameter],
    examples: Sequence[TokenIds],
    settings: LocalTrainingSettings,
    dp: SampleDPSettings,
    *,
    pad_id: int,
    device: torch.device,
    rng: np.random.Generator,
    noise_generator: torch.Generator,
    nominal_size: int | None = None,
    gradient_canaries: GradientCanaries | None = None,
    canary_rng: np.random.Generator | None = None,
    noise_scale: float = 1.0,
) -> LocalResult:
    """Train ``params`` (the wrapped model's trainable parameters) with DP-SGD on ``examples``.

    :func:`local_dp_steps` Poisson-sampled steps of rate
    :func:`local_sample_rate` (``rng`` draws the batches), each clipping every
    example's gradient to ``dp.max_grad_norm``, adding ``N(0, (σC)²)`` from
    ``noise_generator`` and dividing by ``q·n``, then an AdamW step with
    ``settings.lr`` / ``settings.weight_decay``.  ``settings.max_grad_norm`` (the
    batch clipping of non-private training) is not used.  ``mean_loss`` is the
    mean per-example loss over the examples seen (NaN when every batch was empty).

    ``nominal_size`` is the public size ``n`` the rate and step count derive from
    (default: ``len(examples)``).  An audit passes the size without its one-run
    canaries: a rate computed from the true count would reveal, in the report's
    ``sample_rate`` and ε, how many canaries the client included.  Every example
    is still sampled with probability ``q``, which is what the accountant assumes.

    ``gradient_canaries`` plants white-box audit records: in every step each
    included canary is Poisson-sampled with rate ``q`` (``canary_rng``, required
    with them and derived by the caller from the run's DP secret, draws one
    uniform per canary per step) and, when sampled, ``C·s_j`` is added at its
    coordinate of the clipped sum before the noise, as Opacus would add a record
    whose gradient is ``C·s_j·e_{i_j}``.  Coordinates index the concatenation of
    ``params`` in their order (that of :func:`fedpriv.models.get_adapter_vector`
    when ``params`` is :func:`fedpriv.models.trainable_parameters`).  The batches
    and the noise do not depend on the canaries, so a canary not sampled changes
    nothing.

    ``noise_scale`` multiplies the noise multiplier the optimiser draws with (0
    switches the noise off).  It exists for mutation tests of audits only: the
    accountant, and every reported ε, still use ``dp.noise_multiplier``, so
    anything but 1 makes the run less (or more) private than it reports.
    """
    if not isinstance(dp, SampleDPSettings):
        raise ConfigError(f"dp must be SampleDPSettings, got {type(dp).__name__}")
    if dp.clipping != private.settings.clipping:
        raise ConfigError(f"dp clipping is '{dp.clipping}' but the model was wrapped for "
                          f"'{private.settings.clipping}'; wrap it with the same settings")
    if not examples:
        raise DataError("a client has no training examples; give every client at least one record")
    if noise_generator.device.type != device.type:
        raise ConfigError(f"the noise generator is on {noise_generator.device} but training runs "
                          f"on {device}; create it with torch.Generator(device=device)")
    if isinstance(noise_scale, bool) or not isinstance(noise_scale, (int, float)) or not (
        math.isfinite(noise_scale) and noise_scale >= 0
    ):
        raise ConfigError(f"noise_scale must be a finite number >= 0, got {noise_scale!r}; "
                          "leave it at 1 outside mutation tests of an audit")
    if gradient_canaries is not None and not isinstance(gradient_canaries, GradientCanaries):
        raise ConfigError(f"gradient_canaries must be GradientCanaries, got "
                          f"{type(gradient_canaries).__name__}")
    if gradient_canaries is not None and canary_rng is None:
        raise ConfigError("gradient_canaries need canary_rng, the generator that draws when each "
                          "canary is sampled; derive it from the run's DP secret")
    if gradient_canaries is None and canary_rng is not None:
        raise ConfigError("canary_rng was given without gradient_canaries; pass both or neither")
    n = len(examples) if nominal_size is None else nominal_size
    q = local_sample_rate(settings.batch_size, n)
    steps = local_dp_steps(settings, n)
    slots = (None if gradient_canaries is None
             else _canary_slots(params, gradient_canaries.coordinates))
    optimizer = private._dp_optimizer(
        params, lr=settings.lr, weight_decay=settings.weight_decay, optimizer=settings.optimizer,
        noise_multiplier=dp.noise_multiplier * noise_scale, max_grad_norm=dp.max_grad_norm,
        expected_batch_size=min(settings.batch_size, n),  # = q·n exactly
        noise_generator=noise_generator, secure_mode=dp.secure_mode,
    )
    planted: contextlib.AbstractContextManager[None] = contextlib.nullcontext()
    if gradient_canaries is not None and slots is not None and canary_rng is not None:
        planted = _planted_canaries(optimizer, gradient_canaries, slots, sample_rate=q,
                                    clip=dp.max_grad_norm, rng=canary_rng)
    total_loss, seen = 0.0, 0
    with private.training() as module, planted:
        for indices in poisson_batches(len(examples), q, steps, rng):
            optimizer.zero_grad(set_to_none=True)
            if indices.size == 0:
                private.backward_empty(optimizer)
            else:
                batch = collate([examples[i] for i in indices], pad_id, device)
                with autocast_context(device):
                    logits = module(input_ids=batch.input_ids,
                                    attention_mask=batch.attention_mask).logits
                losses = per_example_loss(logits, batch.labels)
                del logits
                private.backward(losses, optimizer)
                total_loss += float(losses.detach().sum())
                seen += int(indices.size)
            optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return LocalResult(steps=steps, examples_seen=seen,
                       mean_loss=total_loss / seen if seen else float("nan"))
