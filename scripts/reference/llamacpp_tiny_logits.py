#!/usr/bin/env python3
"""Reference logits of the tiny GPT-OSS GGUF from llama.cpp (CPU), via llama-cpp-python.

Run it on the F32 twin of the tiny model (`gptoss gen-model --preset tiny --f32-values`):
every tensor holds exactly the MXFP4/Q8_0 values of `--model tiny`, so llama.cpp's CPU path
does not round activations to Q8 (it does for MXFP4 and Q8_0 weights). Flash attention off
and an F32 KV cache keep f16 rounding out. llama.cpp uses floor/ceil'd YaRN correction dims,
so compare with `gptoss logits --yarn-llamacpp`.

Writes the same compact fixture as hf_tiny_logits.py (tokens, cols, logits at cols, argmax,
row norms, meta.json), reusing the tokens and columns of the HF fixture.

Usage: llamacpp_tiny_logits.py TINY_F32.gguf HF_FIXTURE_DIR OUTDIR
Built here from the llama-cpp-python 0.3.36 sdist (CPU): see tests/reference/README.md.
"""
import json
import sys

import numpy as np
import llama_cpp


def main():
    path, hf_dir, outdir = sys.argv[1:4]
    tokens = np.load(f"{hf_dir}/tokens.npy")
    cols = np.load(f"{hf_dir}/cols.npy")
    llm = llama_cpp.Llama(model_path=path, n_ctx=128, n_batch=128, n_ubatch=128, logits_all=True,
                          flash_attn=False, type_k=0, type_v=0, n_threads=2, verbose=False)
    llm.eval(tokens.tolist())
    logits = np.array(llm.scores[: len(tokens)], dtype=np.float32)
    np.save(f"{outdir}/tokens.npy", tokens)
    np.save(f"{outdir}/cols.npy", cols)
    np.save(f"{outdir}/logits.npy", np.ascontiguousarray(logits[:, cols]))
    np.save(f"{outdir}/argmax.npy", logits.argmax(1).astype(np.int64))
    np.save(f"{outdir}/rownorm.npy", np.linalg.norm(logits, axis=1).astype(np.float32))
    meta = {"reference": "llama.cpp via llama-cpp-python", "version": llama_cpp.__version__,
            "device": "cpu", "flash_attn": False, "kv_type": "f32", "model": "tiny --f32-values",
            "yarn": "llama.cpp rounded correction dims", "T": int(len(tokens))}
    json.dump(meta, open(f"{outdir}/meta.json", "w"), indent=1)
    print(json.dumps(meta))
    print("argmax", logits.argmax(1)[:10], "std", logits.std())


if __name__ == "__main__":
    main()
