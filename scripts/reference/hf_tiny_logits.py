#!/usr/bin/env python3
"""Reference logits of a tiny GPT-OSS GGUF from transformers' GptOssForCausalLM.

Reads the GGUF with gguf-py (ggml's own reader), dequantizes every tensor with
gguf.quants.dequantize (MXFP4 experts included), maps GGUF names to the HF module tree
(gate/up interleaved along the last dim as HF expects), runs one float32 prefill with eager
attention, and writes a compact fixture:

  tokens.npy   int64 [T]         the input ids
  cols.npy     int64 [C]         vocab columns kept (seeded random subset)
  logits.npy   float32 [T, C]    reference logits at those columns
  argmax.npy   int64 [T]         argmax over the full vocabulary
  rownorm.npy  float32 [T]       L2 norm of each full logits row
  meta.json    what was run

Usage: hf_tiny_logits.py MODEL.gguf OUTDIR [--device cpu|cuda]
Ran on the H100 machine (torch 2.11, transformers 5.17); see tests/reference/README.md.
"""
import json
import sys

import numpy as np
import torch
import gguf
from gguf.quants import dequantize
import transformers
from transformers import GptOssConfig, GptOssForCausalLM

from gguf_hf_names import LAYER_TENSORS


def tensors(reader):
    out = {}
    for t in reader.tensors:
        shape = [int(x) for x in reversed(t.shape.tolist())]  # logical, row-major
        vals = dequantize(t.data, t.tensor_type).astype(np.float32).reshape(shape)
        out[t.name] = torch.from_numpy(vals.copy())
    return out


def field(reader, key):
    f = reader.fields[key]
    v = f.parts[f.data[0]]
    return v.tolist()[0] if hasattr(v, "tolist") else v


def main():
    path, outdir = sys.argv[1], sys.argv[2]
    device = sys.argv[4] if len(sys.argv) > 4 and sys.argv[3] == "--device" else "cpu"
    r = gguf.GGUFReader(path)
    a = "gpt-oss."
    n_layer = field(r, a + "block_count")
    sw = field(r, a + "attention.sliding_window")
    cfg = GptOssConfig(
        vocab_size=len(r.fields["tokenizer.ggml.tokens"].data),
        hidden_size=field(r, a + "embedding_length"),
        intermediate_size=field(r, a + "expert_feed_forward_length"),
        num_hidden_layers=n_layer,
        num_attention_heads=field(r, a + "attention.head_count"),
        num_key_value_heads=field(r, a + "attention.head_count_kv"),
        head_dim=field(r, a + "attention.key_length"),
        num_local_experts=field(r, a + "expert_count"),
        num_experts_per_tok=field(r, a + "expert_used_count"),
        sliding_window=sw,
        layer_types=["sliding_attention" if i % 2 == 0 else "full_attention" for i in range(n_layer)],
        max_position_embeddings=field(r, a + "context_length"),
        rms_norm_eps=field(r, a + "attention.layer_norm_rms_epsilon"),
        rope_theta=field(r, a + "rope.freq_base"),
        rope_scaling={"rope_type": "yarn", "factor": field(r, a + "rope.scaling.factor"),
                      "original_max_position_embeddings": field(r, a + "rope.scaling.original_context_length"),
                      "beta_fast": 32.0, "beta_slow": 1.0, "truncate": False},
        attention_bias=True,
        tie_word_embeddings=False,
        swiglu_limit=7.0,
    )
    cfg._attn_implementation = "eager"
    torch.manual_seed(0)
    model = GptOssForCausalLM(cfg).to(torch.float32).eval()
    t = tensors(r)
    sd = {"model.embed_tokens.weight": t["token_embd.weight"], "model.norm.weight": t["output_norm.weight"],
          "lm_head.weight": t["output.weight"]}
    params = dict(model.named_parameters())
    for i in range(n_layer):
        g, p = f"blk.{i}.", f"model.layers.{i}."
        for ours, theirs in LAYER_TENSORS:
            sd[p + theirs] = t[g + ours]
        gate, up, down = t[g + "ffn_gate_exps.weight"], t[g + "ffn_up_exps.weight"], t[g + "ffn_down_exps.weight"]
        gb, ub, db = t[g + "ffn_gate_exps.bias"], t[g + "ffn_up_exps.bias"], t[g + "ffn_down_exps.bias"]
        e, ff, d = gate.shape  # (e, ff, d) logical
        gu_shape = tuple(params[p + "mlp.experts.gate_up_proj"].shape)
        if gu_shape == (e, d, 2 * ff):  # x @ W layout, gate/up interleaved on the last dim
            gu = torch.empty(e, d, 2 * ff)
            gu[:, :, 0::2], gu[:, :, 1::2] = gate.transpose(1, 2), up.transpose(1, 2)
            dn = down.transpose(1, 2)  # (e, ff, d)
        elif gu_shape == (e, 2 * ff, d):  # W x layout, interleaved rows
            gu = torch.empty(e, 2 * ff, d)
            gu[:, 0::2, :], gu[:, 1::2, :] = gate, up
            dn = down
        else:
            raise SystemExit(f"unexpected gate_up_proj shape {gu_shape}")
        assert tuple(params[p + "mlp.experts.down_proj"].shape) == tuple(dn.shape), params[p + "mlp.experts.down_proj"].shape
        gub = torch.empty(e, 2 * ff)
        gub[:, 0::2], gub[:, 1::2] = gb, ub
        sd[p + "mlp.experts.gate_up_proj"], sd[p + "mlp.experts.gate_up_proj_bias"] = gu, gub
        sd[p + "mlp.experts.down_proj"], sd[p + "mlp.experts.down_proj_bias"] = dn, db
    missing, unexpected = model.load_state_dict(sd, strict=False)
    missing = [m for m in missing if "rotary" not in m]
    assert not missing and not unexpected, (missing, unexpected)
    model = model.to(device)

    rng = np.random.default_rng(1234)
    T = 40
    # A harmony-like start (<|start|>system<|message|>) then ordinary-text ids.
    tokens = np.concatenate([[200006, 17360, 200008], rng.integers(0, 199998, T - 3)]).astype(np.int64)
    with torch.no_grad():
        logits = model(torch.from_numpy(tokens)[None].to(device)).logits[0].float().cpu().numpy()
    cols = np.sort(rng.choice(logits.shape[1], 4096, replace=False)).astype(np.int64)
    np.save(f"{outdir}/tokens.npy", tokens)
    np.save(f"{outdir}/cols.npy", cols)
    np.save(f"{outdir}/logits.npy", np.ascontiguousarray(logits[:, cols], dtype=np.float32))
    np.save(f"{outdir}/argmax.npy", logits.argmax(1).astype(np.int64))
    np.save(f"{outdir}/rownorm.npy", np.linalg.norm(logits, axis=1).astype(np.float32))
    rope = getattr(model.model, "rotary_emb", None)
    meta = {"reference": "transformers GptOssForCausalLM", "transformers": transformers.__version__,
            "torch": torch.__version__, "gguf": gguf.__version__ if hasattr(gguf, "__version__") else "0.19",
            "device": device, "dtype": "float32", "attn": "eager", "T": T,
            "attention_scaling": float(getattr(rope, "attention_scaling", float("nan"))),
            "inv_freq": rope.inv_freq.cpu().tolist() if rope is not None else None}
    json.dump(meta, open(f"{outdir}/meta.json", "w"), indent=1)
    print(json.dumps({k: v for k, v in meta.items() if k != "inv_freq"}))
    print("argmax", logits.argmax(1)[:10], "std", logits.std())


if __name__ == "__main__":
    main()
