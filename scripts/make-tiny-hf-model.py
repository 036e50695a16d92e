#!/usr/bin/env python3
"""Writes a tiny random-weight Llama in Hugging Face format, with a tokenizer trained here, for
vLLM and SGLang to serve on a CPU. Nothing is downloaded.

  make-tiny-hf-model.py OUT_DIR [--seed N]

The model: LlamaConfig(hidden 256, intermediate 512, 4 layers, 4 heads, 2 KV heads, 4096
positions), weights drawn from a fixed seed, float32 safetensors (~18 MB). The tokenizer: a
byte-level BPE with a vocabulary of 4096, trained on seeded text made of the words inferlab's
prompts are made of (src/workload/words.rs), with a ChatML chat template and <|im_end|> as EOS.
Same seed, same files. Needs torch, transformers and tokenizers (the engines' venv has them).
"""
import argparse
import json
import pathlib
import random
import re
import sys

VOCAB = 4096
SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
CHATML = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + "
    "message['content'] + '<|im_end|>' + '\\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


def words(repo: pathlib.Path) -> list:
    src = (repo / "src" / "workload" / "words.rs").read_text()
    table = src[src.index("const WORDS"):]
    found = re.findall(r'"([a-z]+)"', table[: table.index("];")])
    if len(found) < 100:
        sys.exit("make-tiny-hf-model: could not read the word list from src/workload/words.rs")
    return found


def corpus(rng: random.Random, vocab: list, lines: int = 20000) -> list:
    out = []
    for _ in range(lines):
        n = rng.randint(4, 24)
        out.append(" ".join(rng.choice(vocab) for _ in range(n)))
    return out


def tokenizer(out: pathlib.Path, rng: random.Random, vocab: list):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB,
        special_tokens=SPECIAL,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus(rng, vocab), trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<|endoftext|>",
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        unk_token="<|endoftext|>",
    )
    fast.chat_template = CHATML
    fast.save_pretrained(out)
    return fast


def model(out: pathlib.Path, seed: int, fast):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(fast),
        hidden_size=256,
        intermediate_size=512,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=4096,
        bos_token_id=fast.bos_token_id,
        eos_token_id=fast.eos_token_id,
        pad_token_id=fast.pad_token_id,
        torch_dtype="float32",
    )
    m = LlamaForCausalLM(config)
    m.save_pretrained(out, safe_serialization=True)
    params = sum(p.numel() for p in m.parameters())
    return params


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--seed", type=int, default=20261201)
    args = ap.parse_args()
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    repo = pathlib.Path(__file__).resolve().parent.parent
    rng = random.Random(args.seed)
    fast = tokenizer(out, rng, words(repo))
    params = model(out, args.seed, fast)
    (out / "inferlab-model.json").write_text(
        json.dumps(
            {
                "architecture": "llama",
                "layers": 4,
                "hidden": 256,
                "heads": 4,
                "kv_heads": 2,
                "parameters_m": round(params / 1e6, 2),
                "dtype": "float32",
                "weights": f"random, seed {args.seed}",
                "tokenizer": f"byte-level BPE, vocabulary {VOCAB}, trained on seeded text of inferlab's prompt words, ChatML template",
                "generator": "scripts/make-tiny-hf-model.py",
            }
        )
    )
    print(f"make-tiny-hf-model: wrote {out} ({params / 1e6:.1f} M parameters, seed {args.seed})", file=sys.stderr)


if __name__ == "__main__":
    main()
