#!/usr/bin/env python3
"""Writes a tiny Llama-architecture GGUF with random weights and a real tokenizer.

The vocabulary (Llama-2 SentencePiece, 32 000 tokens) is copied from the GGUF vocabulary file
that ships inside the llama.cpp source tree. Weights are random (seeded: same seed, same bytes),
with one twist that makes output lengths deterministic: dimension 0 of the residual stream is a
large constant that no layer writes to, and the output rows of every token that is not a normal
text token (EOS, BOS, UNK, control and byte tokens) point hard against it. Their logits are
hugely negative, so generation never stops early and every SSE chunk carries one normal token.

Usage: make-tiny-model.py VOCAB.gguf OUT.gguf [--seed N]
"""
import argparse
import sys

import numpy as np

try:
    import gguf
except ImportError:
    sys.exit("make-tiny-model: the Python package `gguf` is missing (pip install gguf numpy)")

LAYERS, EMBD, HEADS, FFN, CTX = 4, 512, 8, 1536, 16384
CHATML = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def field(reader, name):
    f = reader.fields[name]
    return f.parts[f.data[0]]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("vocab")
    ap.add_argument("out")
    ap.add_argument("--seed", type=int, default=20261128)
    args = ap.parse_args()

    r = gguf.GGUFReader(args.vocab)
    tf = r.fields["tokenizer.ggml.tokens"]
    tokens = [bytes(tf.parts[i]).decode("utf-8") for i in tf.data]
    scores = [float(r.fields["tokenizer.ggml.scores"].parts[i][0]) for i in r.fields["tokenizer.ggml.scores"].data]
    types = [int(r.fields["tokenizer.ggml.token_type"].parts[i][0]) for i in r.fields["tokenizer.ggml.token_type"].data]
    n_vocab = len(tokens)

    rng = np.random.default_rng(args.seed)
    std = 0.02

    def rand(*shape):
        return (rng.standard_normal(shape, dtype=np.float32) * std).astype(np.float16)

    w = gguf.GGUFWriter(args.out, "llama")
    w.add_name("inferlab-tiny-llama")
    w.add_context_length(CTX)
    w.add_embedding_length(EMBD)
    w.add_block_count(LAYERS)
    w.add_feed_forward_length(FFN)
    w.add_head_count(HEADS)
    w.add_head_count_kv(HEADS)
    w.add_rope_dimension_count(EMBD // HEADS)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_file_type(gguf.LlamaFileType.MOSTLY_F16)
    w.add_vocab_size(n_vocab)
    w.add_tokenizer_model("llama")
    w.add_tokenizer_pre("default")
    w.add_token_list(tokens)
    w.add_token_scores(scores)
    w.add_token_types(types)
    w.add_bos_token_id(int(field(r, "tokenizer.ggml.bos_token_id")[0]))
    w.add_eos_token_id(int(field(r, "tokenizer.ggml.eos_token_id")[0]))
    w.add_unk_token_id(int(field(r, "tokenizer.ggml.unknown_token_id")[0]))
    w.add_add_bos_token(True)
    w.add_add_eos_token(False)
    w.add_chat_template(CHATML)

    emb = rand(n_vocab, EMBD)
    emb[:, 0] = 1.0  # the constant direction
    w.add_tensor("token_embd.weight", emb)
    for i in range(LAYERS):
        p = f"blk.{i}."
        w.add_tensor(p + "attn_norm.weight", np.ones(EMBD, dtype=np.float32))
        w.add_tensor(p + "ffn_norm.weight", np.ones(EMBD, dtype=np.float32))
        w.add_tensor(p + "attn_q.weight", rand(EMBD, EMBD))
        w.add_tensor(p + "attn_k.weight", rand(EMBD, EMBD))
        w.add_tensor(p + "attn_v.weight", rand(EMBD, EMBD))
        out = rand(EMBD, EMBD)
        out[0, :] = 0  # no layer writes dimension 0
        w.add_tensor(p + "attn_output.weight", out)
        w.add_tensor(p + "ffn_gate.weight", rand(FFN, EMBD))
        w.add_tensor(p + "ffn_up.weight", rand(FFN, EMBD))
        down = rand(EMBD, FFN)
        down[0, :] = 0
        w.add_tensor(p + "ffn_down.weight", down)
    w.add_tensor("output_norm.weight", np.ones(EMBD, dtype=np.float32))
    head = rand(n_vocab, EMBD)
    head[:, 0] = 0
    bad = np.array([t != 1 for t in types])
    head[bad, 0] = -60.0  # normal tokens only
    w.add_tensor("output.weight", head)

    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    params = n_vocab * EMBD * 2 + LAYERS * (4 * EMBD * EMBD + 3 * EMBD * FFN)
    print(f"make-tiny-model: wrote {args.out} ({params / 1e6:.1f} M parameters, seed {args.seed})", file=sys.stderr)


if __name__ == "__main__":
    main()
