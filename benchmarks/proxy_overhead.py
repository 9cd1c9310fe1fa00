"""Proxy overhead: the same upstream called directly and through the gateway, in one run.

    .venv/bin/python -m benchmarks.proxy_overhead [--duration 10] [--connections 32]

Starts on 127.0.0.1: a small aiohttp upstream (its own process), the gateway (`wimse-gateway
run`, its own process, policy `forward`), and drives both with wrk. Prints requests/s, p50 and
p99 for each, then the ratios. Absolute numbers depend on the machine and its neighbours; the
ratios from one run are what to compare.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.request
from pathlib import Path

UPSTREAM = """
from aiohttp import web
async def h(request):
    return web.Response(body=b"x" * 256, content_type="application/octet-stream")
app = web.Application()
app.router.add_get("/{tail:.*}", h)
web.run_app(app, host="127.0.0.1", port=int(__import__("sys").argv[1]), access_log=None,
            print=None)
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_http(url: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1) as r:  # noqa: S310 - loopback only
                if r.status < 500:
                    return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not come up")


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


def _ms(text: str) -> float:
    m = re.match(r"([\d.]+)(us|ms|s)", text)
    assert m, text
    return float(m.group(1)) * _UNITS[m.group(2)]


def run_wrk(url: str, duration: int, connections: int, threads: int) -> dict[str, float]:
    out = subprocess.run(
        ["wrk", "-t", str(threads), "-c", str(connections), "-d", f"{duration}s", "--latency",
         url], capture_output=True, text=True, check=True, timeout=duration + 30).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    p50 = _ms(re.search(r"^\s+50%\s+(\S+)", out, re.M).group(1))
    p99 = _ms(re.search(r"^\s+99%\s+(\S+)", out, re.M).group(1))
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {"rps": rps, "p50_ms": p50, "p99_ms": p99,
            "non_2xx": float(errors.group(1)) if errors else 0.0}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--duration", type=int, default=10)
    ap.add_argument("--connections", type=int, nargs="+", default=[1, 32])
    ap.add_argument("--rounds", type=int, default=3, help="median of this many runs")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    if not shutil.which("wrk"):
        print("wrk is needed: apt-get install wrk", file=sys.stderr)
        return 2

    work = Path(tempfile.mkdtemp(prefix="wg-bench-"))
    up_port, gw_port, admin_port = free_port(), free_port(), free_port()
    (work / "upstream.py").write_text(UPSTREAM)
    (work / "policy.yaml").write_text("rules:\n  - {id: all, action: forward}\n")
    (work / "gateway.yaml").write_text(textwrap.dedent(f"""\
        listeners: [{{name: main, port: {gw_port}}}]
        routes: [{{name: up, upstream: "http://127.0.0.1:{up_port}"}}]
        admin: {{port: {admin_port}}}
        policy: {{files: [policy.yaml], watch: false}}
        audit: {{path: audit.jsonl}}
        """))
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    # Pin: upstream and load generator share core 0, the gateway gets core 1, so the
    # gateway's work is what the two setups differ in. (On a 2-core box this is the best split.)
    pin = shutil.which("taskset")
    upstream = subprocess.Popen([*( [pin, "-c", "0"] if pin else []), sys.executable,
                                 str(work / "upstream.py"), str(up_port)], env=env)
    gateway = subprocess.Popen([*( [pin, "-c", "1"] if pin else []), sys.executable, "-m",
                                "gateway.cli", "--log-level", "warning", "run", "--workers",
                                "1", "-c", str(work / "gateway.yaml")], env=env)
    results: dict[str, dict[str, float]] = {}
    try:
        wait_http(f"http://127.0.0.1:{up_port}/")
        wait_http(f"http://127.0.0.1:{admin_port}/readyz")
        for c in args.connections:
            threads = 1 if c == 1 else 2
            for name, url in (("direct", f"http://127.0.0.1:{up_port}/x"),
                              ("gateway", f"http://127.0.0.1:{gw_port}/x")):
                runs = []
                for _ in range(args.rounds):
                    runs.append(run_wrk(url, args.duration, c, threads))
                runs.sort(key=lambda r: r["rps"])
                results[f"{name}@{c}"] = runs[len(runs) // 2]
    finally:
        for p in (gateway, upstream):
            p.terminate()
        for p in (gateway, upstream):
            p.wait(timeout=20)

    print(f"\n{'scenario':<16}{'req/s':>10}{'p50 ms':>10}{'p99 ms':>10}{'non-2xx':>9}")
    for k, r in results.items():
        print(f"{k:<16}{r['rps']:>10.0f}{r['p50_ms']:>10.3f}{r['p99_ms']:>10.3f}"
              f"{r['non_2xx']:>9.0f}")
    print()
    summary = {}
    for c in args.connections:
        d, g = results[f"direct@{c}"], results[f"gateway@{c}"]
        summary[c] = {"rps_ratio": g["rps"] / d["rps"],
                      "added_p50_ms": g["p50_ms"] - d["p50_ms"],
                      "added_p99_ms": g["p99_ms"] - d["p99_ms"]}
        s = summary[c]
        print(f"{c} connection(s): gateway/direct requests/s = {s['rps_ratio']:.2f}x, "
              f"added p50 {s['added_p50_ms']:.3f} ms, added p99 {s['added_p99_ms']:.3f} ms")
    if args.json:
        args.json.write_text(json.dumps({"results": results, "summary": summary}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
