"""Start and stop a real `gptoss serve --model tiny` on a free loopback port."""

import os
import socket
import subprocess
import sys
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def binary():
    """GPTOSS_BIN, else the newest of target/{release,debug}/gptoss."""
    if os.environ.get("GPTOSS_BIN"):
        return os.environ["GPTOSS_BIN"]
    found = [p for p in (os.path.join(ROOT, "target", d, "gptoss") for d in ("release", "debug"))
             if os.path.exists(p)]
    if not found:
        sys.exit("no gptoss binary: cargo build -p gpt-cli (or set GPTOSS_BIN)")
    return max(found, key=os.path.getmtime)


class Server:
    """A server process; `base` is its http://127.0.0.1:PORT."""

    def __init__(self, *extra, timeout=180):
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        os.makedirs(os.path.join(ROOT, "target"), exist_ok=True)
        self.log = open(os.path.join(ROOT, "target", f"serve-{self.port}.log"), "w")
        # GPTOSS_SERVE_MODEL / GPTOSS_SERVE_DEVICE: another model or device (the GPU load test).
        model = os.environ.get("GPTOSS_SERVE_MODEL", "tiny")
        device = os.environ.get("GPTOSS_SERVE_DEVICE", "cpu")
        cmd = [binary(), "serve", "--model", model, "--host", "127.0.0.1",
               "--port", str(self.port), "--device", device, "--ctx", "2048", *extra]
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.time() + timeout
        self.saw_503 = False
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}; see {self.log.name}")
            try:
                with urllib.request.urlopen(self.base + "/health", timeout=2) as r:
                    if r.status == 200:
                        return
            except urllib.error.HTTPError as e:
                if e.code == 503:
                    self.saw_503 = True
            except OSError:
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError("server not ready in time")

    def alive(self):
        return self.proc.poll() is None

    def peak_rss_kib(self):
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
        return 0

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.log.close()
