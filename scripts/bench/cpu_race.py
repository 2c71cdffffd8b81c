#!/usr/bin/env python3
"""gptoss vs llama.cpp on this machine's CPU: the same GGUF files, the same threads, nothing
else running, alternating runs. Prints a markdown table of prefill 64 / 512 tokens and decode
128 tokens (tok/s, medians over --reps alternations) with ratios.

  python3 scripts/bench/cpu_race.py [--reps 3] [--inner-reps 3] [--threads 2]
                                    [--precision exact,fast] [--models tiny,20b-4l]

Each run times --inner-reps repetitions after its engine's own warm-up (gptoss: the median;
llama-bench: its mean): with one repetition llama-bench's tg128 on the tiny model read ~600
tok/s against ~1,040 with five on the same build (its warm-up decodes a single token, so its
first repetition pays for cold caches).

Builds what it needs once: llama.cpp's `llama-bench` from the llama-cpp-python sdist
(scripts/bench/build_llamacpp_cpu.sh, cached in target/llamacpp-cpu/), the release `gptoss`,
and the models in target/bench/ (`gen-model` tiny, and 20B shape with 4 layers).
"""
import argparse
import json
import os
import statistics
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BENCH = os.path.join(ROOT, "target", "bench")
GPTOSS = os.path.join(ROOT, "target", "release", "gptoss")
TESTS = [("pp64", 64, 0), ("pp512", 512, 0), ("tg128", 0, 128)]


def run(cmd, **kw):
    return subprocess.run(cmd, check=True, text=True, stdout=subprocess.PIPE, **kw).stdout


def model_path(name):
    path = os.path.join(BENCH, name + ".gguf")
    if not os.path.exists(path):
        preset = ["--preset", "tiny"] if name == "tiny" else ["--preset", "20b", "--layers", "4"]
        run([GPTOSS, "gen-model", *preset, "--out", path])
    return path


def ours(path, threads, precision, prompt, gen, reps):
    env = dict(os.environ, RAYON_NUM_THREADS=str(threads))
    out = run([GPTOSS, "bench", "--model", path, "--device", "cpu", "--json", "--reps", str(reps),
               "--prompt-tokens", str(prompt), "--gen-tokens", str(gen),
               "--cpu-precision", precision], env=env, stderr=subprocess.DEVNULL)
    j = json.loads(out.strip().splitlines()[-1])
    return j["prefill_tok_s"] if prompt else j["decode_tok_s"]


def llama(llama_bench, path, threads, prompt, gen, reps):
    out = run([llama_bench, "-m", path, "-t", str(threads), "-r", str(reps), "-o", "json",
               "-p", str(prompt), "-n", str(gen)], stderr=subprocess.DEVNULL)
    return json.loads(out)[0]["avg_ts"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--inner-reps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--precision", default="exact,fast")
    ap.add_argument("--models", default="tiny,20b-4l")
    a = ap.parse_args()
    os.makedirs(BENCH, exist_ok=True)
    llama_bench = run([os.path.join(ROOT, "scripts", "bench", "build_llamacpp_cpu.sh")]).strip()
    subprocess.run(["cargo", "build", "--release", "-q", "-p", "gpt-cli"], cwd=ROOT, check=True)
    precisions = a.precision.split(",")
    rows = []
    for name in a.models.split(","):
        path = model_path(name)
        for test, prompt, gen in TESTS:
            got = {p: [] for p in precisions}
            ref = []
            for _ in range(a.reps):  # alternate: ours (each precision), then llama.cpp
                for p in precisions:
                    got[p].append(ours(path, a.threads, p, prompt, gen, a.inner_reps))
                ref.append(llama(llama_bench, path, a.threads, prompt, gen, a.inner_reps))
            r = statistics.median(ref)
            cells = []
            for p in precisions:
                v = statistics.median(got[p])
                cells.append(f"{v:,.1f} ({v / r:.2f}x)")
            rows.append((name, test, cells, r))
            print(f"{name} {test}: " + ", ".join(cells) + f", llama.cpp {r:,.1f}", file=sys.stderr)
    print(f"\nthreads {a.threads}, medians of {a.reps} alternating runs of {a.inner_reps} "
          "repetitions each, tok/s\n")
    print("| model | test | " + " | ".join(f"gptoss {p} (ratio)" for p in precisions) + " | llama.cpp |")
    print("|---|---|" + "---|" * len(precisions) + "---|")
    for name, test, cells, r in rows:
        print(f"| {name} | {test} | " + " | ".join(cells) + f" | {r:,.1f} |")


if __name__ == "__main__":
    main()
