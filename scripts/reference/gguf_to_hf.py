#!/usr/bin/env python3
"""Write a GPT-OSS GGUF as an original-layout Hugging Face checkpoint (config.json +
model.safetensors), independently of our Rust code: gguf-py reads and dequantizes, numpy packs.

- MXFP4 experts become `*_blocks` u8 [E, N, G, 16] (interleaved nibbles: byte i holds element
  2i low, 2i+1 high) and `*_scales` u8 [E, N, G] (E8M0, scale byte unchanged), gate and up
  interleaved by row (row 2j = gate j, row 2j+1 = up j) in `gate_up_proj_*`, as in
  openai/gpt-oss-20b (spec §3, §4.2).
- Dense tensors are stored as float32 holding gguf-py's dequantized values exactly, so the two
  checkpoints hold the same numbers and their logits must agree to rounding.

Usage: gguf_to_hf.py MODEL.gguf OUTDIR
"""
import json
import os
import sys

import numpy as np
import gguf
from gguf.quants import dequantize
from safetensors.numpy import save_file

from gguf_hf_names import LAYER_TENSORS


def field(r, key):
    f = r.fields[key]
    v = f.parts[f.data[0]]
    return v.tolist()[0] if hasattr(v, "tolist") else v


def ggml_mxfp4_to_hf(raw, shape):
    """raw: uint8 ggml MXFP4 bytes of a tensor with logical shape [E, N, K] -> (blocks, scales)."""
    e, n, k = shape
    g = k // 32
    b = np.asarray(raw, dtype=np.uint8).reshape(e, n, g, 17)
    scales = b[..., 0].copy()
    qs = b[..., 1:]
    codes = np.empty((e, n, g, 32), dtype=np.uint8)
    codes[..., :16] = qs & 0x0F  # ggml: element j = low nibble of qs[j]
    codes[..., 16:] = qs >> 4     # element j + 16 = high nibble of qs[j]
    blocks = (codes[..., 0::2] | (codes[..., 1::2] << 4)).astype(np.uint8)  # HF: 2i low, 2i+1 high
    return blocks, scales


def main():
    path, out = sys.argv[1], sys.argv[2]
    os.makedirs(out, exist_ok=True)
    r = gguf.GGUFReader(path)
    a = "gpt-oss."
    n_layer = field(r, a + "block_count")
    t = {x.name: x for x in r.tensors}

    def dense(name):
        x = t[name]
        shape = [int(s) for s in reversed(x.shape.tolist())]
        return dequantize(x.data, x.tensor_type).astype(np.float32).reshape(shape)

    def mxfp4(name):
        x = t[name]
        assert x.tensor_type == gguf.GGMLQuantizationType.MXFP4, name
        shape = [int(s) for s in reversed(x.shape.tolist())]
        return ggml_mxfp4_to_hf(x.data, shape)

    st = {"model.embed_tokens.weight": dense("token_embd.weight"), "model.norm.weight": dense("output_norm.weight"),
          "lm_head.weight": dense("output.weight")}
    for i in range(n_layer):
        g, p = f"blk.{i}.", f"model.layers.{i}."
        for ours, theirs in LAYER_TENSORS:
            st[p + theirs] = dense(g + ours)
        gb, gs = mxfp4(g + "ffn_gate_exps.weight")
        ub, us = mxfp4(g + "ffn_up_exps.weight")
        e, ff = gb.shape[:2]
        blocks = np.empty((e, 2 * ff) + gb.shape[2:], dtype=np.uint8)
        scales = np.empty((e, 2 * ff) + gs.shape[2:], dtype=np.uint8)
        blocks[:, 0::2], blocks[:, 1::2] = gb, ub
        scales[:, 0::2], scales[:, 1::2] = gs, us
        bias = np.empty((e, 2 * ff), dtype=np.float32)
        bias[:, 0::2], bias[:, 1::2] = dense(g + "ffn_gate_exps.bias"), dense(g + "ffn_up_exps.bias")
        db, ds = mxfp4(g + "ffn_down_exps.weight")
        st[p + "mlp.experts.gate_up_proj_blocks"], st[p + "mlp.experts.gate_up_proj_scales"] = blocks, scales
        st[p + "mlp.experts.gate_up_proj_bias"] = bias
        st[p + "mlp.experts.down_proj_blocks"], st[p + "mlp.experts.down_proj_scales"] = db, ds
        st[p + "mlp.experts.down_proj_bias"] = dense(g + "ffn_down_exps.bias")
    save_file({k: np.ascontiguousarray(v) for k, v in st.items()}, os.path.join(out, "model.safetensors"))
    cfg = {
        "architectures": ["GptOssForCausalLM"], "model_type": "gpt_oss",
        "vocab_size": int(st["model.embed_tokens.weight"].shape[0]),
        "hidden_size": field(r, a + "embedding_length"),
        "intermediate_size": field(r, a + "expert_feed_forward_length"),
        "num_hidden_layers": n_layer,
        "num_attention_heads": field(r, a + "attention.head_count"),
        "num_key_value_heads": field(r, a + "attention.head_count_kv"),
        "head_dim": field(r, a + "attention.key_length"),
        "num_local_experts": field(r, a + "expert_count"),
        "num_experts_per_tok": field(r, a + "expert_used_count"),
        "sliding_window": field(r, a + "attention.sliding_window"),
        "layer_types": ["sliding_attention" if i % 2 == 0 else "full_attention" for i in range(n_layer)],
        "max_position_embeddings": field(r, a + "context_length"),
        "rms_norm_eps": field(r, a + "attention.layer_norm_rms_epsilon"),
        "rope_theta": field(r, a + "rope.freq_base"),
        "rope_scaling": {"rope_type": "yarn", "factor": field(r, a + "rope.scaling.factor"),
                         "original_max_position_embeddings": field(r, a + "rope.scaling.original_context_length"),
                         "beta_fast": 32.0, "beta_slow": 1.0, "truncate": False},
        "attention_bias": True, "tie_word_embeddings": False, "swiglu_limit": 7.0,
        "quantization_config": {"quant_method": "mxfp4"},
    }
    json.dump(cfg, open(os.path.join(out, "config.json"), "w"), indent=1)
    print("wrote", out, sum(v.nbytes for v in st.values()), "bytes of tensors")


if __name__ == "__main__":
    main()
