"""Load test of `gptoss serve --model tiny` on the CPU: 64 concurrent streams, loopback only
(GPTOSS_SERVE_MODEL and GPTOSS_SERVE_DEVICE serve another model or device, e.g. the
20B-shaped file on `cuda`).

Prints requests/s, aggregate output tok/s, TTFT p50/p99, errors and the server's peak RSS.
Usage: python scripts/serve/load_test.py [--streams 64] [--requests 128] [--max-tokens 32]
"""

import argparse
import json
import statistics
import threading
import time
import urllib.request

from common import Server


def one(base, i, max_tokens, out):
    body = json.dumps({"messages": [{"role": "user", "content": f"Request {i}: tell me a story"}],
                       "max_tokens": max_tokens, "stream": True, "seed": i,
                       "stream_options": {"include_usage": True}}).encode()
    req = urllib.request.Request(base + "/v1/chat/completions", data=body,
                                 headers={"Content-Type": "application/json"})
    t0 = time.time()
    ttft, tokens = None, 0
    try:
        with urllib.request.urlopen(req, timeout=300) as r:
            for line in r:
                line = line.strip()
                if not line.startswith(b"data: ") or line == b"data: [DONE]":
                    continue
                ev = json.loads(line[6:])
                if ev.get("usage"):
                    tokens = ev["usage"]["completion_tokens"]
                for c in ev.get("choices", []):
                    d = c.get("delta", {})
                    if ttft is None and (d.get("content") or d.get("reasoning_content") or d.get("tool_calls")):
                        ttft = time.time() - t0
        out.append(("ok", ttft if ttft is not None else time.time() - t0, tokens))
    except Exception as e:  # noqa: BLE001 - count it
        out.append(("error", str(e), 0))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--streams", type=int, default=64)
    ap.add_argument("--requests", type=int, default=128)
    ap.add_argument("--max-tokens", type=int, default=32)
    a = ap.parse_args()
    srv = Server("--max-seqs", str(a.streams))
    try:
        out, lock, next_i = [], threading.Lock(), [0]

        def worker():
            while True:
                with lock:
                    i = next_i[0]
                    next_i[0] += 1
                if i >= a.requests:
                    return
                one(srv.base, i, a.max_tokens, out)
        t0 = time.time()
        threads = [threading.Thread(target=worker) for _ in range(a.streams)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall = time.time() - t0
        ok = [o for o in out if o[0] == "ok"]
        errors = len(out) - len(ok)
        ttfts = sorted(o[1] for o in ok)
        toks = sum(o[2] for o in ok)
        p = lambda q: ttfts[min(len(ttfts) - 1, int(q * len(ttfts)))] if ttfts else float("nan")  # noqa: E731
        print(f"streams {a.streams}, requests {len(out)}, max_tokens {a.max_tokens}, wall {wall:.1f}s")
        print(f"requests/s {len(ok) / wall:.2f}")
        print(f"output tok/s {toks / wall:.1f} (aggregate, {toks} tokens)")
        print(f"TTFT p50 {p(0.5) * 1000:.0f} ms, p99 {p(0.99) * 1000:.0f} ms, mean {statistics.mean(ttfts) * 1000:.0f} ms" if ttfts else "TTFT n/a")
        print(f"errors {errors}")
        print(f"server peak RSS {srv.peak_rss_kib() / 1024:.0f} MiB (VmHWM)")
    finally:
        srv.stop()


if __name__ == "__main__":
    main()
