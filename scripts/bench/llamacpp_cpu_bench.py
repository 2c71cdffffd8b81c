#!/usr/bin/env python3
"""Prefill and decode tokens/s of llama.cpp (CPU, via llama-cpp-python) on a GGUF, to put side
by side with `gptoss bench --device cpu` on the same file and machine.

Usage: llamacpp_cpu_bench.py MODEL.gguf [--prompt-tokens 64] [--gen-tokens 16] [--threads 2] [--reps 3]
Prints one JSON object like `gptoss bench --json`.
"""
import argparse
import json
import statistics
import time

import numpy as np
import llama_cpp

ap = argparse.ArgumentParser()
ap.add_argument("model")
ap.add_argument("--prompt-tokens", type=int, default=64)
ap.add_argument("--gen-tokens", type=int, default=16)
ap.add_argument("--threads", type=int, default=2)
ap.add_argument("--reps", type=int, default=3)
a = ap.parse_args()

llm = llama_cpp.Llama(model_path=a.model, n_ctx=a.prompt_tokens + a.gen_tokens + 8, n_batch=512,
                      n_threads=a.threads, n_threads_batch=a.threads, verbose=False)
rng = np.random.default_rng(42)
pp, tg = [], []
for _ in range(a.reps):
    prompt = rng.integers(0, 199998, a.prompt_tokens).tolist()
    llm.reset()
    t = time.perf_counter()
    llm.eval(prompt)
    pp.append(a.prompt_tokens / (time.perf_counter() - t))
    tok = int(np.argmax(llm.scores[llm.n_tokens - 1]))
    t = time.perf_counter()
    for _ in range(a.gen_tokens):
        llm.eval([tok])
        tok = int(np.argmax(llm.scores[llm.n_tokens - 1]))
    tg.append(a.gen_tokens / (time.perf_counter() - t))
print(json.dumps({"engine": "llama.cpp " + llama_cpp.__version__, "model": a.model, "threads": a.threads,
                  "prompt_tokens": a.prompt_tokens, "prefill_tok_s": statistics.median(pp),
                  "gen_tokens": a.gen_tokens, "decode_tok_s": statistics.median(tg)}))
