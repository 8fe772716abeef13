"""Build fedpriv's built-in pretrained tiny causal LM (``builtin:tiny-llama``).

Trains a byte-level BPE tokenizer and a ~1M-parameter Llama-style model from
scratch on the *public* split of fedpriv's synthetic corpus
(``fedpriv.data.synthetic.generate_public_corpus``) and writes both with
``save_pretrained`` into ``src/fedpriv/assets/tiny-llama`` (or ``--out``).
No private record, canary or client partition is ever seen by this script, so
the base model knows the *format* of the records but none of the secrets that
audits later try to extract.

The build is deterministic for a given ``--seed`` (single process, fixed
thread count, seeded torch / numpy generators).  Typical use::

    PYTHONPATH=src python scripts/build_tiny_model.py            # real asset
    PYTHONPATH=src python scripts/build_tiny_model.py --stand-in --out /tmp/tiny

``--stand-in`` (or ``--corpus-file``) replaces the public corpus with a small
built-in record generator or a text file (one document per line); it exists to
debug the script, never to build the shipped asset.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = REPO_ROOT / "src" / "fedpriv" / "assets" / "tiny-llama"

PAD, BOS, EOS, UNK = "<pad>", "<s>", "</s>", "<unk>"
SPECIAL_TOKENS = [PAD, BOS, EOS, UNK]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse the command line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output folder")
    parser.add_argument("--steps", type=int, default=1000, help="optimizer steps")
    parser.add_argument("--seed", type=int, default=0, help="seed of corpus, init and batches")
    parser.add_argument("--num-docs", type=int, default=30000, help="public documents to use")
    parser.add_argument("--heldout-frac", type=float, default=0.05, help="held-out share of docs")
    parser.add_argument("--vocab-size", type=int, default=2048)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--intermediate", type=int, default=344)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--max-positions", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--weight-decay", type=float, default=0.1)
    parser.add_argument("--warmup-frac", type=float, default=0.05)
    parser.add_argument("--eval-every", type=int, default=100)
    parser.add_argument("--threads", type=int, default=2)
    source = parser.add_mutually_exclusive_group()
    source.add_argument(
        "--corpus-file", type=Path, help="debug only: one document per line instead of the corpus"
    )
    source.add_argument(
        "--stand-in", action="store_true", help="debug only: a small built-in record generator"
    )
    return parser.parse_args(argv)


# --------------------------------------------------------------------------- corpus


def stand_in_corpus(num_docs: int, *, seed: int) -> list[str]:
    """Return record-like documents from a small local generator (debugging only)."""
    rng = np.random.default_rng(seed)
    first = ["Maria", "John", "Aiko", "Lars", "Fatima", "Chen", "Olga", "Pedro", "Amara", "Noah"]
    last = ["Lopez", "Smith", "Tanaka", "Berg", "Haddad", "Wei", "Ivanova", "Silva", "Okafor"]
    cities = ["Porto", "Leeds", "Osaka", "Bergen", "Tunis", "Wuhan", "Kazan", "Recife", "Lagos"]
    notes = ["asthma", "a sprained ankle", "hypertension", "a routine check-up", "migraine"]
    docs = []
    for i in range(num_docs):
        f, s = rng.choice(first), rng.choice(last)
        docs.append(
            f"Record {i:05d}: {f} {s}, age {rng.integers(18, 90)}, lives in {rng.choice(cities)}. "
            f"Visit for {rng.choice(notes)}. Contact {f.lower()}.{s.lower()}@example.org, "
            f"phone 555-{rng.integers(0, 10000):04d}."
        )
    return docs


def load_corpus(args: argparse.Namespace) -> tuple[list[str], str]:
    """Return the training documents and a description of where they came from."""
    if args.corpus_file is not None:
        lines = args.corpus_file.read_text(encoding="utf-8").splitlines()
        docs = [line for line in lines if line.strip()][: args.num_docs]
        return docs, f"file {args.corpus_file} (debug stand-in)"
    if args.stand_in:
        return stand_in_corpus(args.num_docs, seed=args.seed), "built-in stand-in generator"
    from fedpriv.data.synthetic import generate_public_corpus

    docs = generate_public_corpus(args.num_docs, seed=args.seed)
    return list(docs), (
        f"fedpriv.data.synthetic.generate_public_corpus({args.num_docs}, seed={args.seed})"
    )


# --------------------------------------------------------------------------- tokenizer


def train_tokenizer(docs: list[str], vocab_size: int) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE tokenizer that prepends ``<s>`` like Llama's."""
    tok = Tokenizer(models.BPE(unk_token=UNK))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(docs, trainer=trainer)
    bos_id = tok.token_to_id(BOS)
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B", special_tokens=[(BOS, bos_id)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        unk_token=UNK,
        model_max_length=256,
        padding_side="right",
        clean_up_tokenization_spaces=False,
    )


def pack(docs: list[str], tokenizer: PreTrainedTokenizerFast, seq_len: int) -> torch.Tensor:
    """Tokenize ``<s> doc </s>`` for every doc, concatenate and cut into blocks."""
    ids: list[int] = []
    eos = tokenizer.eos_token_id
    for enc in tokenizer(docs, add_special_tokens=True)["input_ids"]:
        ids.extend(enc)
        ids.append(eos)
    n_blocks = len(ids) // seq_len
    return torch.tensor(ids[: n_blocks * seq_len], dtype=torch.long).view(n_blocks, seq_len)


# --------------------------------------------------------------------------- training


def batches(blocks: torch.Tensor, batch_size: int, gen: torch.Generator) -> Iterator[torch.Tensor]:
    """Yield shuffled batches forever, reshuffling each epoch."""
    while True:
        order = torch.randperm(blocks.shape[0], generator=gen)
        for start in range(0, len(order) - batch_size + 1, batch_size):
            yield blocks[order[start : start + batch_size]]


@torch.no_grad()
def evaluate(model: LlamaForCausalLM, blocks: torch.Tensor, batch_size: int = 64) -> float:
    """Mean next-token loss over all (packed) held-out blocks."""
    model.eval()
    total, count = 0.0, 0
    for start in range(0, blocks.shape[0], batch_size):
        x = blocks[start : start + batch_size]
        n = x.shape[0] * (x.shape[1] - 1)
        total += float(model(input_ids=x, labels=x).loss) * n
        count += n
    model.train()
    return total / count


@torch.no_grad()
def evaluate_docs(
    model: LlamaForCausalLM,
    tokenizer: PreTrainedTokenizerFast,
    docs: list[str],
    batch_size: int = 64,
) -> float:
    """Token-weighted mean loss of each document on its own (``<s> doc``, truncated, no packing)."""
    model.eval()
    total, count = 0.0, 0
    for start in range(0, len(docs), batch_size):
        enc = tokenizer(
            docs[start : start + batch_size], return_tensors="pt", padding=True,
            truncation=True, max_length=model.config.max_position_embeddings,
        )
        labels = enc["input_ids"].masked_fill(enc["attention_mask"] == 0, -100)
        n = int((labels[:, 1:] != -100).sum())
        total += float(model(**enc, labels=labels).loss) * n
        count += n
    model.train()
    return total / count


def lr_at(step: int, total: int, warmup: int, peak: float) -> float:
    """Linear warmup then cosine decay to 10% of the peak."""
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return peak * (0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * progress)))


def render_readme(args: argparse.Namespace, config: LlamaConfig, info: dict[str, Any]) -> str:
    """Describe the asset: what it is, how it was trained, how to rebuild it."""
    gap = info["final_heldout_loss"] - info["final_train_slice_loss"]
    fit_note = (
        f"held-out minus train gap {gap:.3f} nats: not overfit"
        if gap < 0.05
        else f"held-out minus train gap {gap:.3f} nats: some overfitting"
    )
    return f"""# builtin:tiny-llama

fedpriv's built-in base model: a pretrained {info["parameters"]:,}-parameter Llama-style causal
LM (`LlamaForCausalLM`) and its byte-level BPE tokenizer, small enough to fine-tune with LoRA
on a laptop CPU in seconds. Load it with
`fedpriv.models.load_base_model("builtin:tiny-llama")`, or with plain transformers:
`AutoModelForCausalLM.from_pretrained(dir)` / `AutoTokenizer.from_pretrained(dir)`.

| | |
|---|---|
| architecture | Llama: {config.num_hidden_layers} layers, hidden {config.hidden_size}, \
MLP {config.intermediate_size}, {config.num_attention_heads} heads, RoPE, RMSNorm, SwiGLU |
| context | {config.max_position_embeddings} positions (trained on {args.seq_len}-token blocks) |
| embeddings | vocab {config.vocab_size}, input and output embeddings tied |
| tokenizer | byte-level BPE (`tokenizers`); `<pad>`=0, `<s>`=1 (prepended), `</s>`=2, `<unk>`=3 |
| weights | fp32 safetensors |

## Training data

Only the **public** split of fedpriv's synthetic corpus:
`{info["corpus"]}`, shuffled with the seed; {info["train_docs"]} documents for training
(tokenizer and model), {info["heldout_docs"]} held out. The public split draws people and
towns from halves of the name lists that no client uses and has partly different templates:
no client record, canary or client-only template was seen, so the model knows the *format*
of the records but none of the secrets that audits try to extract from fine-tuned adapters.

## Training

From scratch, seed {info["seed"]}: each document encoded as `<s> text </s>`, concatenated and
packed into {args.seq_len}-token blocks ({info["train_tokens"]:,} training tokens); AdamW
(β = 0.9/0.95, weight decay {args.weight_decay} on matrices), peak learning rate {args.lr}
with {args.warmup_frac:.0%} linear warm-up and cosine decay to 10%, batch {args.batch_size},
gradient clipping at 1.0, {info["steps"]} steps ({info["epochs"]} epochs), fp32 on CPU with
{args.threads} threads in {info["train_seconds"]} s (torch {info["torch"]}).

| held-out metric (public split) | loss (nats/token) | perplexity |
|---|---|---|
| before training | {info["initial_heldout_loss"]} | – |
| packed blocks | {info["final_heldout_loss"]} | {info["final_heldout_perplexity"]} |
| each document alone (`<s> text`) | {info["final_heldout_doc_loss"]} | \
{info["final_heldout_doc_perplexity"]} |

Loss on an equally sized slice of the training blocks: {info["final_train_slice_loss"]}
({fit_note}). All numbers are in `build_info.json`.

## Rebuilding

```
PYTHONPATH=src python scripts/build_tiny_model.py --steps {info["steps"]} --seed {info["seed"]} \\
    --num-docs {args.num_docs}
```

The build is deterministic for a given seed, torch version and thread count.
"""


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    t0 = time.perf_counter()

    docs, source = load_corpus(args)
    order = np.random.default_rng(args.seed).permutation(len(docs))
    docs = [docs[i] for i in order]
    n_held = max(1, int(len(docs) * args.heldout_frac))
    train_docs, held_docs = docs[n_held:], docs[:n_held]
    print(f"corpus: {source}: {len(train_docs)} train / {len(held_docs)} held-out docs")

    tokenizer = train_tokenizer(train_docs, args.vocab_size)
    train_blocks = pack(train_docs, tokenizer, args.seq_len)
    held_blocks = pack(held_docs, tokenizer, args.seq_len)
    n_train_tokens = train_blocks.numel()
    print(
        f"tokenizer: vocab {len(tokenizer)}; {n_train_tokens} train tokens "
        f"({n_train_tokens / len(train_docs):.1f}/doc), {held_blocks.numel()} held-out tokens"
    )

    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=args.hidden,
        intermediate_size=args.intermediate,
        num_hidden_layers=args.layers,
        num_attention_heads=args.heads,
        num_key_value_heads=args.heads,
        max_position_embeddings=args.max_positions,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        initializer_range=0.02,
    )
    model = LlamaForCausalLM(config)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"model: {n_params} parameters")

    decay = [p for p in model.parameters() if p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.ndim < 2]
    optimizer = torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": args.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ],
        lr=args.lr,
        betas=(0.9, 0.95),
    )
    warmup = max(1, int(args.steps * args.warmup_frac))
    gen = torch.Generator().manual_seed(args.seed)
    stream = batches(train_blocks, args.batch_size, gen)
    initial_loss = evaluate(model, held_blocks)
    print(f"step 0: held-out loss {initial_loss:.4f} ({time.perf_counter() - t0:.0f}s since start)")
    model.train()
    t_train = time.perf_counter()
    running = 0.0
    for step in range(args.steps):
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, args.steps, warmup, args.lr)
        x = next(stream)
        loss = model(input_ids=x, labels=x).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        running += loss.item()
        if (step + 1) % args.eval_every == 0 or step + 1 == args.steps:
            n = (step % args.eval_every) + 1
            held = evaluate(model, held_blocks[:256])  # a fixed slice; the full set at the end
            print(
                f"step {step + 1}: train loss {running / n:.4f}, held-out slice loss {held:.4f} "
                f"({time.perf_counter() - t_train:.0f}s)",
                flush=True,
            )
            running = 0.0
    train_s = time.perf_counter() - t_train

    model.eval()
    final_held = evaluate(model, held_blocks)
    final_train = evaluate(model, train_blocks[: held_blocks.shape[0]])
    final_docs = evaluate_docs(model, tokenizer, held_docs)
    epochs = args.steps * args.batch_size / train_blocks.shape[0]
    print(
        f"final: held-out loss {final_held:.4f} (ppl {math.exp(final_held):.2f}), "
        f"train-slice loss {final_train:.4f}; per-document held-out loss {final_docs:.4f} "
        f"(ppl {math.exp(final_docs):.2f}); {epochs:.2f} epochs; training {train_s:.0f}s"
    )

    args.out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(args.out, safe_serialization=True)
    # Calling the tokenizer with padding/truncation leaves that state in the backend; a saved
    # tokenizer.json must not carry it (it would also imply a pad token to loaders).
    tokenizer.backend_tokenizer.no_padding()
    tokenizer.backend_tokenizer.no_truncation()
    tokenizer.save_pretrained(args.out)
    # transformers 5 records its new class name; the 4.x name loads in both major versions.
    tok_config_path = args.out / "tokenizer_config.json"
    tok_config = json.loads(tok_config_path.read_text())
    tok_config["tokenizer_class"] = "PreTrainedTokenizerFast"
    tok_config_path.write_text(json.dumps(tok_config, indent=2) + "\n")
    build_info: dict[str, Any] = {
        "corpus": source,
        "train_docs": len(train_docs),
        "heldout_docs": len(held_docs),
        "train_tokens": n_train_tokens,
        "seq_len": args.seq_len,
        "batch_size": args.batch_size,
        "steps": args.steps,
        "epochs": round(epochs, 3),
        "lr": args.lr,
        "seed": args.seed,
        "parameters": n_params,
        "initial_heldout_loss": round(initial_loss, 4),
        "final_heldout_loss": round(final_held, 4),
        "final_heldout_perplexity": round(math.exp(final_held), 3),
        "final_train_slice_loss": round(final_train, 4),
        "final_heldout_doc_loss": round(final_docs, 4),
        "final_heldout_doc_perplexity": round(math.exp(final_docs), 3),
        "train_seconds": round(train_s, 1),
        "total_seconds": round(time.perf_counter() - t0, 1),
        "torch": torch.__version__,
    }
    (args.out / "build_info.json").write_text(json.dumps(build_info, indent=2) + "\n")
    (args.out / "README.md").write_text(render_readme(args, config, build_info))
    print(f"wrote {args.out} in {time.perf_counter() - t0:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
