"""Tests of fedpriv.models: loading, LoRA attachment and flat adapter vectors."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path

import huggingface_hub.constants
import numpy as np
import pytest
import torch
from peft import PeftModel, set_peft_model_state_dict
from transformers import (
    GPT2Config,
    GPT2LMHeadModel,
    LlamaForCausalLM,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    ViTConfig,
)

from fedpriv.errors import ConfigError, ModelError
from fedpriv.models import (
    BUILTIN_MODEL,
    LoraSettings,
    adapter_names,
    adapter_size,
    attach_lora,
    builtin_model_dir,
    get_adapter_vector,
    load_base_model,
    pick_device,
    set_adapter_vector,
    trainable_parameters,
)

SMALL = LoraSettings(rank=4, alpha=8.0)
Loaded = tuple[PreTrainedModel, PreTrainedTokenizerBase]


def public_texts(n: int = 16) -> list[str]:
    from fedpriv.data.synthetic import generate_public_corpus

    # A seed the asset build did not use, so these are (almost surely) unseen documents.
    return generate_public_corpus(n, seed=987_654)


def mean_loss(
    model: torch.nn.Module, tokenizer: PreTrainedTokenizerBase, texts: list[str]
) -> float:
    enc = tokenizer(texts, return_tensors="pt", padding=True)
    labels = enc["input_ids"].masked_fill(enc["attention_mask"] == 0, -100)
    with torch.no_grad():
        return float(model(**enc, labels=labels).loss)


def logits(
    model: torch.nn.Module, tokenizer: PreTrainedTokenizerBase, text: str = "Name: Ada, id 42."
) -> torch.Tensor:
    with torch.no_grad():
        return model(**tokenizer([text], return_tensors="pt")).logits


@pytest.fixture
def builtin() -> Loaded:
    return load_base_model(BUILTIN_MODEL)


@pytest.fixture
def gpt2_dir(tmp_path: Path) -> Path:
    _, tokenizer = load_base_model(BUILTIN_MODEL)
    config = GPT2Config(
        vocab_size=len(tokenizer), n_positions=64, n_embd=32, n_layer=1, n_head=2,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        GPT2LMHeadModel(config).save_pretrained(tmp_path / "gpt2")
    tokenizer.save_pretrained(tmp_path / "gpt2")
    return tmp_path / "gpt2"


# ---------------------------------------------------------------- loading


def test_builtin_is_a_frozen_fp32_causal_lm(builtin: Loaded) -> None:
    model, tokenizer = builtin
    assert isinstance(model, LlamaForCausalLM)
    assert not model.training
    assert model.dtype == torch.float32
    assert not any(p.requires_grad for p in model.parameters())
    assert tokenizer.pad_token_id is not None
    assert {tokenizer.bos_token, tokenizer.eos_token, tokenizer.unk_token} <= set(
        tokenizer.get_vocab()
    )
    assert (builtin_model_dir() / "README.md").is_file()


def test_dtype_and_device_are_honoured() -> None:
    model, _ = load_base_model(BUILTIN_MODEL, device=torch.device("cpu"), dtype=torch.bfloat16)
    assert model.dtype == torch.bfloat16
    assert model.device == torch.device("cpu")


def test_builtin_generates(builtin: Loaded) -> None:
    model, tokenizer = builtin
    enc = tokenizer(["The"], return_tensors="pt")
    out = model.generate(**enc, max_new_tokens=12, do_sample=False, pad_token_id=0)
    assert out.shape[1] > enc["input_ids"].shape[1]
    assert isinstance(tokenizer.decode(out[0], skip_special_tokens=True), str)


def test_builtin_is_pretrained_on_public_text(builtin: Loaded) -> None:
    model, tokenizer = builtin
    texts = public_texts()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        fresh = LlamaForCausalLM(model.config).eval()
    trained, untrained = mean_loss(model, tokenizer, texts), mean_loss(fresh, tokenizer, texts)
    assert math.isfinite(trained)
    assert trained < 0.5 * untrained  # fresh ≈ ln(vocab) ≈ 7.6


def test_builtin_readme_matches_build_info() -> None:
    info = json.loads((builtin_model_dir() / "build_info.json").read_text())
    assert str(info["final_heldout_loss"]) in (builtin_model_dir() / "README.md").read_text()


def test_local_directory_gpt2_with_default_targets(gpt2_dir: Path) -> None:
    model, tokenizer = load_base_model(str(gpt2_dir))
    assert isinstance(model, GPT2LMHeadModel)
    peft_model = attach_lora(model, SMALL, seed=0)
    names = adapter_names(peft_model)
    assert names and all(".c_attn.lora_" in n for n in names)
    before = logits(peft_model, tokenizer)
    vector = np.random.default_rng(0).normal(size=adapter_size(peft_model)).astype(np.float32)
    set_adapter_vector(peft_model, vector)
    np.testing.assert_array_equal(get_adapter_vector(peft_model), vector)
    assert not torch.allclose(before, logits(peft_model, tokenizer))


def test_tokenizer_without_pad_gets_eos(gpt2_dir: Path) -> None:
    config_path = gpt2_dir / "tokenizer_config.json"
    config = json.loads(config_path.read_text())
    config.pop("pad_token", None)
    config_path.write_text(json.dumps(config))
    _, tokenizer = load_base_model(str(gpt2_dir))
    assert tokenizer.pad_token == tokenizer.eos_token


def test_missing_path_raises(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="does not exist"):
        load_base_model(str(tmp_path / "nope"))
    with pytest.raises(ModelError, match="does not exist"):
        load_base_model("./no-such-model-dir")


def test_directory_without_config_and_file_raise(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match=r"no config\.json"):
        load_base_model(str(tmp_path))
    (tmp_path / "weights.bin").write_bytes(b"")
    with pytest.raises(ModelError, match="is a file"):
        load_base_model(str(tmp_path / "weights.bin"))


def test_unknown_hub_id_fails_fast_offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(ModelError, match="not a local directory and the hub could not serve"):
        load_base_model("fedpriv-test/definitely-not-a-model")


def test_non_causal_model_raises(tmp_path: Path) -> None:
    ViTConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2).save_pretrained(tmp_path)
    with pytest.raises(ModelError, match="not a causal LM"):
        load_base_model(str(tmp_path))


# ---------------------------------------------------------------- LoRA settings and attachment


@pytest.mark.parametrize(
    "kwargs",
    [{"rank": 0}, {"rank": 2.5}, {"alpha": 0.0}, {"dropout": 1.0}, {"dropout": -0.1},
     {"target_modules": ()}, {"target_modules": ("q_proj", "")}],
)
def test_lora_settings_validation(kwargs: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        LoraSettings(**kwargs)


def test_lora_settings_list_targets_become_tuple() -> None:
    settings = LoraSettings(target_modules=["q_proj"])
    assert settings.target_modules == ("q_proj",)


def test_unknown_target_lists_module_names(builtin: Loaded) -> None:
    model, _ = builtin
    with pytest.raises(ModelError, match=r"\['qproj'\].*q_proj"):
        attach_lora(model, LoraSettings(target_modules=("qproj", "v_proj")), seed=0)


def test_unknown_architecture_needs_targets(builtin: Loaded) -> None:
    model, _ = builtin
    model.config.model_type = "mystery-lm"
    with pytest.raises(ModelError, match="set target_modules"):
        attach_lora(model, SMALL, seed=0)


def test_attach_twice_raises_and_unload_allows_again(builtin: Loaded) -> None:
    model, _ = builtin
    peft_model = attach_lora(model, SMALL, seed=0)
    with pytest.raises(ModelError, match="already carries"):
        attach_lora(peft_model.get_base_model(), SMALL, seed=0)
    again = attach_lora(peft_model.unload(), SMALL, seed=0)
    assert adapter_size(again) == adapter_size(peft_model)


def test_same_seed_same_a_and_global_rng_untouched() -> None:
    state = torch.get_rng_state()
    a1 = get_adapter_vector(attach_lora(load_base_model(BUILTIN_MODEL)[0], SMALL, seed=7))
    a2 = get_adapter_vector(attach_lora(load_base_model(BUILTIN_MODEL)[0], SMALL, seed=7))
    a3 = get_adapter_vector(attach_lora(load_base_model(BUILTIN_MODEL)[0], SMALL, seed=8))
    assert torch.equal(state, torch.get_rng_state())
    np.testing.assert_array_equal(a1, a2)
    assert not np.array_equal(a1, a3)


def vector_slices(peft_model: PeftModel) -> dict[str, slice]:
    slices, offset = {}, 0
    pairs = zip(adapter_names(peft_model), trainable_parameters(peft_model), strict=True)
    for name, param in pairs:
        slices[name] = slice(offset, offset + param.numel())
        offset += param.numel()
    return slices


def test_adapter_starts_as_identity(builtin: Loaded) -> None:
    model, tokenizer = builtin
    base = logits(model, tokenizer)
    peft_model = attach_lora(model, SMALL, seed=0)
    torch.testing.assert_close(logits(peft_model, tokenizer), base, rtol=0, atol=0)
    vector = get_adapter_vector(peft_model)
    for name, part in vector_slices(peft_model).items():
        assert np.all(vector[part] == 0) == (".lora_B." in name)  # A random, B zero
    # Zeroing B alone (whatever A is) gives the base model back exactly.
    vector = np.random.default_rng(1).normal(size=vector.shape).astype(np.float32)
    for name, part in vector_slices(peft_model).items():
        if ".lora_B." in name:
            vector[part] = 0.0
    set_adapter_vector(peft_model, vector)
    torch.testing.assert_close(logits(peft_model, tokenizer), base, rtol=0, atol=0)


# ---------------------------------------------------------------- flat vectors


def test_vector_layout_matches_names_and_parameters(builtin: Loaded) -> None:
    peft_model = attach_lora(builtin[0], SMALL, seed=0)
    assert isinstance(peft_model, PeftModel)
    names, params = adapter_names(peft_model), trainable_parameters(peft_model)
    assert len(names) == len(params) == 16  # 4 layers x (q_proj, v_proj) x (A, B)
    assert names == adapter_names(attach_lora(load_base_model(BUILTIN_MODEL)[0], SMALL, seed=1))
    assert adapter_size(peft_model) == sum(p.numel() for p in params)
    vector = get_adapter_vector(peft_model)
    assert vector.dtype == np.float32 and vector.ndim == 1
    assert all(p.requires_grad for p in params)


def test_set_then_get_is_identity_and_get_copies(builtin: Loaded) -> None:
    peft_model = attach_lora(builtin[0], SMALL, seed=0)
    vector = np.random.default_rng(0).normal(size=adapter_size(peft_model)).astype(np.float32)
    set_adapter_vector(peft_model, vector)
    got = get_adapter_vector(peft_model)
    np.testing.assert_array_equal(got, vector)
    got[:] = 0.0  # a copy: the model is unaffected
    np.testing.assert_array_equal(get_adapter_vector(peft_model), vector)
    set_adapter_vector(peft_model, vector.astype(np.float64))
    np.testing.assert_array_equal(get_adapter_vector(peft_model), vector)


def test_in_place_set_equals_peft_set_state_dict(builtin: Loaded) -> None:
    ours = attach_lora(builtin[0], SMALL, seed=0)
    theirs = attach_lora(load_base_model(BUILTIN_MODEL)[0], SMALL, seed=0)
    vector = np.random.default_rng(3).normal(size=adapter_size(ours)).astype(np.float32)
    set_adapter_vector(ours, vector)
    pairs = zip(adapter_names(theirs), trainable_parameters(theirs), strict=True)
    shapes = {name: tuple(param.shape) for name, param in pairs}
    state = {
        name: torch.from_numpy(vector[part].reshape(shapes[name]).copy())
        for name, part in vector_slices(theirs).items()
    }
    result = set_peft_model_state_dict(theirs, state)
    assert not result.unexpected_keys
    for (n1, p1), (n2, p2) in zip(ours.named_parameters(), theirs.named_parameters(), strict=True):
        assert n1 == n2
        assert torch.equal(p1, p2), n1


def test_changing_vector_changes_output(builtin: Loaded) -> None:
    model, tokenizer = builtin
    peft_model = attach_lora(model, SMALL, seed=0)
    before = logits(peft_model, tokenizer)
    vector = get_adapter_vector(peft_model)
    vector += np.random.default_rng(0).normal(scale=0.1, size=vector.shape).astype(np.float32)
    set_adapter_vector(peft_model, vector)
    assert not torch.allclose(before, logits(peft_model, tokenizer))


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda n: np.zeros(n + 1, np.float32), "needs"),
        (lambda n: np.zeros((1, n), np.float32), "needs"),
        (lambda n: np.zeros(n, np.int64), "floating point"),
        (lambda n: np.full(n, np.nan, np.float32), "non-finite"),
        (lambda n: [0.0] * n, "numpy array"),
    ],
)
def test_set_rejects_bad_vectors(
    builtin: Loaded, make: Callable[[int], object], match: str
) -> None:
    peft_model = attach_lora(builtin[0], SMALL, seed=0)
    before = get_adapter_vector(peft_model)
    with pytest.raises(ModelError, match=match):
        set_adapter_vector(peft_model, make(adapter_size(peft_model)))
    np.testing.assert_array_equal(get_adapter_vector(peft_model), before)


def test_vector_functions_need_a_peft_model(builtin: Loaded) -> None:
    with pytest.raises(ModelError, match="attach_lora"):
        get_adapter_vector(builtin[0])


# ---------------------------------------------------------------- FFA-LoRA


def test_ffa_vector_is_b_only_and_a_is_frozen(builtin: Loaded) -> None:
    peft_model = attach_lora(builtin[0], LoraSettings(rank=4, alpha=8.0, ffa=True), seed=0)
    b_params = [p for n, p in peft_model.named_parameters() if ".lora_B." in n]
    a_params = [p for n, p in peft_model.named_parameters() if ".lora_A." in n]
    assert adapter_size(peft_model) == sum(p.numel() for p in b_params)
    assert all(".lora_B." in n for n in adapter_names(peft_model))
    assert not any(p.requires_grad for p in a_params)
    assert [p.requires_grad for p in peft_model.parameters()].count(True) == len(b_params)
    np.testing.assert_array_equal(get_adapter_vector(peft_model), 0.0)


def test_ffa_training_step_changes_only_b(builtin: Loaded) -> None:
    model, tokenizer = builtin
    peft_model = attach_lora(model, LoraSettings(rank=4, alpha=8.0, ffa=True), seed=0)
    snapshot = {n: p.detach().clone() for n, p in peft_model.named_parameters()}
    optimizer = torch.optim.SGD(trainable_parameters(peft_model), lr=0.1)
    enc = tokenizer(["Name: Ada Lovelace, born 1815."], return_tensors="pt")
    peft_model.train()
    loss = peft_model(**enc, labels=enc["input_ids"]).loss
    loss.backward()
    optimizer.step()
    changed = {n for n, p in peft_model.named_parameters() if not torch.equal(p, snapshot[n])}
    assert changed
    assert all(".lora_B." in n for n in changed)
    assert np.any(get_adapter_vector(peft_model) != 0)


# ---------------------------------------------------------------- devices


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only fallback")
def test_pick_device_without_cuda() -> None:
    assert pick_device("auto") == torch.device("cpu")
    assert pick_device() == torch.device("cpu")
    with pytest.raises(ModelError, match="--device cpu"):
        pick_device("cuda")
    with pytest.raises(ModelError, match="CUDA is not available"):
        pick_device("cuda:1")


def test_pick_device_explicit_and_invalid() -> None:
    assert pick_device("cpu") == torch.device("cpu")
    assert pick_device(" CPU ") == torch.device("cpu")
    with pytest.raises(ConfigError, match="unknown device"):
        pick_device("gpu-please")
