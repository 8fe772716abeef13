"""Base models, LoRA adapters and flat adapter vectors.

This module owns everything fedpriv does to a language model before and around
federated training:

* loading a causal LM and its tokenizer from a local directory, the Hugging Face
  hub, or the built-in pretrained tiny model (:data:`BUILTIN_MODEL`);
* attaching a LoRA adapter with `peft` (optionally FFA-LoRA: Sun et al. 2024,
  "Improving LoRA in Privacy-preserving Federated Learning", where ``A`` is frozen
  and identical on every client and only ``B`` is trained and sent);
* turning the trainable adapter into one flat ``float32`` vector and back.  The
  vector layout is the key order of ``peft.get_peft_model_state_dict``, so a
  vector can always be named (:func:`adapter_names`) and saved as a peft adapter.
"""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path
from typing import cast

import numpy as np
import torch
from peft import LoraConfig, PeftModel, TaskType, get_peft_model, get_peft_model_state_dict
from peft.tuners.tuners_utils import BaseTunerLayer
from peft.utils.constants import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)
from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES
from transformers.pytorch_utils import Conv1D

from fedpriv.errors import ConfigError, ModelError
from fedpriv.lora import LoraSettings

__all__ = [
    "BUILTIN_MODEL", "LoraSettings", "adapter_names", "adapter_size", "attach_lora",
    "builtin_model_dir", "get_adapter_vector", "load_base_model", "pick_device",
    "set_adapter_vector", "trainable_parameters",
]

logger = logging.getLogger(__name__)

BUILTIN_MODEL = "builtin:tiny-llama"
"""Name of the pretrained ~1M-parameter Llama-style model shipped with fedpriv."""

_FFA_ATTR = "fedpriv_ffa_lora"  # set on PeftModels built by attach_lora(..., ffa=True)
_A_MATRIX_NAMES = frozenset({"lora_A", "lora_embedding_A"})
_ADAPTABLE_TYPES = (torch.nn.Linear, Conv1D, torch.nn.Embedding, torch.nn.Conv1d, torch.nn.Conv2d)


def builtin_model_dir() -> Path:
    """Return the folder of the built-in tiny model (config, weights, tokenizer)."""
    return Path(__file__).resolve().parent / "assets" / "tiny-llama"


def pick_device(requested: str = "auto") -> torch.device:
    """Resolve a device string to a :class:`torch.device`.

    ``"auto"`` picks CUDA when available, else CPU; ``"cpu"``, ``"cuda"``,
    ``"cuda:<index>"`` and ``"mps"`` are honoured as given.  Raises
    :class:`ModelError` when the requested accelerator is not available and
    :class:`ConfigError` when the string is not a device at all.
    """
    text = requested.strip().lower()
    if text == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    hint = "use 'auto', 'cpu', 'cuda', 'cuda:<index>' or 'mps'"
    try:
        device = torch.device(text)
    except (RuntimeError, ValueError) as err:
        raise ConfigError(f"unknown device {requested!r}; {hint}") from err
    if device.type == "cpu":
        return device
    if device.type == "mps":
        available, why = torch.backends.mps.is_available(), "Apple MPS is not available"
    elif device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        available = count > (device.index or 0)
        why = (
            f"only {count} CUDA device(s) exist" if count else
            f"CUDA is not available (torch {torch.__version__}, "
            f"CUDA build: {torch.version.cuda or 'none'})"
        )
    else:
        raise ConfigError(f"unsupported device {requested!r}; {hint}")
    if not available:
        raise ModelError(
            f"device {requested!r} was requested but {why}; pass --device cpu "
            "(device = \"cpu\" in a config) or pick an available device"
        )
    return device


def _looks_like_path(name: str) -> bool:
    # Hub ids are "name" or "org/name": a leading "." / "~", an absolute path, two or
    # more "/" or any other separator ("\\" on Windows) mark a filesystem path instead.
    other_seps = {os.sep, os.altsep or os.sep} - {"/"}
    return (name.startswith((".", "~")) or os.path.isabs(name) or name.count("/") > 1
            or any(sep in name for sep in other_seps))


def _resolve_source(name_or_path: str) -> tuple[str, bool]:
    """Return ``(source, is_local)`` for :func:`load_base_model`."""
    if name_or_path == BUILTIN_MODEL:
        folder = builtin_model_dir()
        if not (folder / "config.json").is_file():
            raise ModelError(
                f"the built-in model files are missing from {folder}; reinstall fedpriv or "
                "rebuild them with `python scripts/build_tiny_model.py`"
            )
        return str(folder), True
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelError(
                f"model directory {path} has no config.json; pass a folder written by "
                "`save_pretrained` (config.json, weights and tokenizer files)"
            )
        return str(path), True
    if path.exists():
        raise ModelError(f"{path} is a file; pass the directory that contains config.json")
    if _looks_like_path(name_or_path):
        raise ModelError(
            f"model directory {name_or_path!r} does not exist; check the path, or pass a hub id "
            f"like 'org/name' or {BUILTIN_MODEL!r}"
        )
    return name_or_path, False


def load_tokenizer(name_or_path: str) -> PreTrainedTokenizerBase:
    """Load only the tokenizer of :func:`load_base_model`'s model (cheap: no weights)."""
    source, _ = _resolve_source(name_or_path)
    try:
        return AutoTokenizer.from_pretrained(source)
    except (OSError, ValueError, KeyError, ImportError, RuntimeError) as err:
        raise ModelError(f"could not load the tokenizer of {name_or_path!r} from {source!r}: "
                         f"{err}; pass a directory written by save_pretrained") from err


def load_base_model(
    name_or_path: str,
    *,
    device: torch.device | None = None,
    dtype: torch.dtype | None = None,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load a causal LM and its tokenizer, frozen and in eval mode.

    ``name_or_path`` is :data:`BUILTIN_MODEL`, a local directory written by
    ``save_pretrained``, or a hub id (``"gpt2"``, ``"org/name"``).  The model is
    loaded in ``dtype`` (default ``torch.float32``), moved to ``device`` (default
    CPU), put in eval mode and every base parameter gets ``requires_grad=False``.
    A tokenizer without a pad token gets ``pad_token = eos_token`` (padding is
    always masked out of the loss, so reusing EOS is harmless).
    """
    source, is_local = _resolve_source(name_or_path)
    where = "from directory" if is_local else "from the hub as"

    def failure(what: str, err: Exception) -> ModelError:
        if is_local:
            return ModelError(
                f"could not load {what} {where} {source!r}: {err}. The folder needs config.json, "
                "weights (*.safetensors or *.bin) and tokenizer files from `save_pretrained`."
            )
        reason = " ".join(str(err).split()).rstrip(".")
        return ModelError(
            f"could not load model {name_or_path!r}: it is not a local directory and the hub "
            f"could not serve it ({type(err).__name__}: {reason}). Pass a local directory with "
            "config.json and weights, or check the id/network."
        )

    try:
        config = AutoConfig.from_pretrained(source)
    except (OSError, ValueError, KeyError) as err:
        raise failure("the model config", err) from err
    if config.model_type not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
        raise ModelError(
            f"model {name_or_path!r} is a {config.model_type!r} model, not a causal LM; fedpriv "
            "fine-tunes decoder-only LMs (e.g. Llama, GPT-2, Qwen, Mistral)"
        )
    try:
        model = AutoModelForCausalLM.from_pretrained(
            source, config=config, dtype=dtype or torch.float32
        )
        tokenizer = AutoTokenizer.from_pretrained(source)
    except (OSError, ValueError, KeyError, ImportError, RuntimeError) as err:
        raise failure("the model or tokenizer", err) from err
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise ModelError(
                f"the tokenizer of {name_or_path!r} has neither a pad nor an eos token; "
                "add a pad token to the tokenizer and save it again"
            )
        tokenizer.pad_token = tokenizer.eos_token
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    torch.nn.Module.to(model, device or torch.device("cpu"))
    model.eval()
    model.requires_grad_(False)
    logger.info(
        "loaded %s (%s, %d parameters) %s %s",
        name_or_path, config.model_type, model.num_parameters(), where, source,
    )
    return model, tokenizer


def _matches(module_name: str, target: str) -> bool:
    # peft's rule for a list of target names: the full name or its last dotted components.
    return module_name == target or module_name.endswith("." + target)


def _layer_names(model: torch.nn.Module) -> list[str]:
    leaves = model.named_modules()
    return sorted({n.rsplit(".", 1)[-1] for n, m in leaves if isinstance(m, _ADAPTABLE_TYPES)})


def attach_lora(model: PreTrainedModel, settings: LoraSettings, *, seed: int) -> PeftModel:
    """Wrap ``model`` (in place) with a fresh LoRA adapter and return the :class:`PeftModel`.

    ``A`` is initialised from ``seed`` alone (same seed, same ``A``, without touching
    the global RNG) and ``B`` is zero, so the adapter starts as the identity.  With
    ``settings.ffa`` the ``A`` matrices are frozen.  Call ``peft_model.unload()``
    to get the bare base model back before attaching another adapter.
    """
    if isinstance(model, PeftModel) or any(isinstance(m, BaseTunerLayer) for m in model.modules()):
        raise ModelError(
            "the model already carries a LoRA adapter; call .unload() on the PeftModel first "
            "or load a fresh base model"
        )
    model_type = getattr(model.config, "model_type", "?")
    targets = settings.target_modules
    if targets is None:
        default = TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING.get(model_type)
        if default is None:
            raise ModelError(
                f"no default LoRA target modules are known for model type {model_type!r}; set "
                f"target_modules, e.g. some of: {', '.join(_layer_names(model)[:20])}"
            )
        targets = tuple(default)
    modules = dict(model.named_modules())
    matched = {t: [m for n, m in modules.items() if _matches(n, t)] for t in targets}
    missing = [t for t, hits in matched.items() if not hits]
    if missing:
        raise ModelError(
            f"LoRA target module(s) {missing} match no module of this {model_type!r} model; "
            f"layer names it has: {', '.join(_layer_names(model)[:20])}"
        )
    uses_conv1d = any(isinstance(m, Conv1D) for hits in matched.values() for m in hits)
    config = LoraConfig(
        task_type=TaskType.CAUSAL_LM,
        r=settings.rank,
        lora_alpha=cast(int, settings.alpha),  # peft annotates int; any float > 0 works
        lora_dropout=settings.dropout,
        target_modules=list(targets),
        fan_in_fan_out=uses_conv1d,  # GPT-2 style Conv1D stores weights transposed
        bias="none",
        init_lora_weights=True,
    )
    # peft draws A from the global CPU generator while it builds the layers: fork it so
    # the caller's RNG stream is untouched and A depends on `seed` only.
    with torch.random.fork_rng(devices=[]), warnings.catch_warnings():
        warnings.filterwarnings("ignore", "`is_gradient_checkpointing`", FutureWarning)
        torch.default_generator.manual_seed(seed)
        try:
            peft_model = get_peft_model(model, config)
        except (ValueError, TypeError, RuntimeError) as err:
            raise ModelError(
                f"peft could not attach LoRA to this {model_type!r} model: {err}"
            ) from err
    if not isinstance(peft_model, PeftModel):  # pragma: no cover - peft always wraps
        raise ModelError("peft did not return a PeftModel")
    setattr(peft_model, _FFA_ATTR, settings.ffa)
    if settings.ffa:
        for name, param in peft_model.named_parameters():
            if _A_MATRIX_NAMES.intersection(name.split(".")):
                param.requires_grad_(False)
    return peft_model


def _adapter_entries(model: PeftModel) -> list[tuple[str, torch.nn.Parameter]]:
    """Return the (peft state-dict key, parameter) pairs that make up the vector, in order."""
    if not isinstance(model, PeftModel):
        raise ModelError(
            f"expected a PeftModel from attach_lora, got {type(model).__name__}; "
            "call attach_lora(model, settings, seed=...) first"
        )
    # save_embedding_layers=False: "auto" would look the base model up (disk or hub) every call.
    state = get_peft_model_state_dict(model, save_embedding_layers=False)
    by_storage = {(p.data_ptr(), p.shape): p for p in model.parameters()}
    skip_a = bool(getattr(model, _FFA_ATTR, False))
    entries = []
    for key, tensor in state.items():
        if skip_a and _A_MATRIX_NAMES.intersection(key.split(".")):
            continue
        param = by_storage.get((tensor.data_ptr(), tensor.shape))
        if param is None:  # pragma: no cover - peft state dicts are views of parameters
            raise ModelError(f"adapter entry {key!r} is not a parameter of the model")
        entries.append((key, param))
    return entries


def adapter_names(model: PeftModel) -> list[str]:
    """Names (peft state-dict keys) of the tensors in the adapter vector, in vector order."""
    return [key for key, _ in _adapter_entries(model)]


def trainable_parameters(model: PeftModel) -> list[torch.nn.Parameter]:
    """Return the adapter parameters behind the vector, in order (only ``B`` under FFA-LoRA)."""
    return [param for _, param in _adapter_entries(model)]


def adapter_size(model: PeftModel) -> int:
    """Length of the adapter vector (number of exchanged adapter parameters)."""
    return sum(param.numel() for _, param in _adapter_entries(model))


def get_adapter_vector(model: PeftModel) -> np.ndarray:
    """Return a float32 1-D copy of the adapter parameters (see :func:`adapter_names`)."""
    params = trainable_parameters(model)
    with torch.no_grad():
        flat = torch.cat([p.detach().reshape(-1).to("cpu", torch.float32) for p in params])
    return flat.numpy()


def set_adapter_vector(model: PeftModel, vector: np.ndarray) -> None:
    """Copy ``vector`` into the adapter parameters in place (inverse of :func:`get_adapter_vector`).

    Equivalent to ``peft.set_peft_model_state_dict`` with the tensors named by
    :func:`adapter_names`, without building a state dict.
    """
    params = trainable_parameters(model)
    expected = sum(p.numel() for p in params)
    if not isinstance(vector, np.ndarray):
        raise ModelError(f"adapter vector must be a numpy array, got {type(vector).__name__}")
    if vector.ndim != 1 or vector.size != expected:
        raise ModelError(
            f"adapter vector has shape {vector.shape} but this adapter needs ({expected},); "
            "was it produced for another model, rank, target modules or FFA setting?"
        )
    if not np.issubdtype(vector.dtype, np.floating):
        raise ModelError(f"adapter vector must be floating point, got dtype {vector.dtype}")
    if not np.isfinite(vector).all():
        bad = int(np.size(vector) - np.isfinite(vector).sum())
        raise ModelError(f"adapter vector has {bad} non-finite value(s) (NaN/inf); not applied")
    if vector.dtype.itemsize > 8:  # long double: torch has no such dtype
        vector = vector.astype(np.float64)
    source = torch.from_numpy(np.ascontiguousarray(vector))
    if params:  # one host-to-device transfer, then cheap slices
        source = source.to(device=params[0].device, dtype=params[0].dtype)
    offset = 0
    with torch.no_grad():
        for param in params:
            n = param.numel()
            param.copy_(source[offset : offset + n].view(param.shape))
            offset += n
