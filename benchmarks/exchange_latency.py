"""Latency added by credential exchange: warm cache and cold cache, STS on loopback.

    .venv/bin/python -m benchmarks.exchange_latency [--n 400]

One process runs a small upstream, a small RFC 8693 STS (ES256 tokens) and the gateway; a client
sends requests one at a time (1 connection) with bearer JWT-SVIDs. Three scenarios, same run:
forward only (the baseline), exchange with a warm cache (one caller, token cached), and
exchange with a cold cache (every request a new caller, so every request waits for the STS).
Prints p50/p99 per scenario and what exchange adds over forward-only.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

from gateway.keys import load_or_create_key
from tests.helpers.servers import start_upstream
from tests.helpers.sts import FakeSts
from tests.helpers.tokens import Key

POLICY = """
profiles:
  orders:
    exchange: {type: sts, sts: corp, subject: caller_token, audience: https://orders.example}
    inject: [{type: bearer}]
rules:
  - {id: fwd, destination: {path_prefix: /fwd/}, action: forward}
  - {id: xch, destination: {path_prefix: /xch/}, action: exchange, profile: orders}
  - {id: default-deny, action: deny}
"""


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(len(xs) * p))]


async def main_async(n: int) -> dict[str, dict[str, float]]:
    td = Key.es256("td")
    tmp = Path(tempfile.mkdtemp(prefix="wg-xbench-"))
    (tmp / "td.jwks").write_text(json.dumps({"keys": [td.jwk]}))
    (tmp / "secret").write_text("s")
    load_or_create_key(tmp / "issuer.key")
    up = await start_upstream()
    sts = await FakeSts().start()
    config = f"""
listeners: [{{name: main, port: 0}}]
routes: [{{name: api, upstream: "{up.url}"}}]
trust_domains: {{example.org: {{jwks: td.jwks}}}}
authentication: {{audiences: [spiffe://example.org/gw]}}
issuer: {{issuer: https://gw.example.org, keys: [{{file: issuer.key}}]}}
token_services:
  corp:
    token_endpoint: {sts.url}/token
    client_auth: {{method: client_secret_basic, client_id: gw, secret_file: secret}}
admin: null
audit: {{path: audit.jsonl}}
policy: {{files: [policy.yaml], watch: false}}
"""
    (tmp / "policy.yaml").write_text(POLICY)
    (tmp / "gateway.yaml").write_text(config)
    from gateway.proxy.listener import Gateway

    gw = Gateway(tmp / "gateway.yaml")
    await gw.start()
    base = f"http://127.0.0.1:{gw.ports['main']}"
    now = int(time.time())
    one = td.sign({"sub": "spiffe://example.org/ns/a/sa/one", "aud": "spiffe://example.org/gw",
                   "exp": now + 3600})
    many = [td.sign({"sub": f"spiffe://example.org/ns/a/sa/w{i}",
                     "aud": "spiffe://example.org/gw", "exp": now + 3600}) for i in range(n)]
    out: dict[str, list[float]] = {"forward only": [], "exchange, warm cache": [],
                                   "exchange, cold cache": []}
    try:
        async with aiohttp.ClientSession() as s:
            async def call(path: str, token: str) -> float:
                t = time.perf_counter()
                async with s.get(base + path, headers={"Authorization": f"Bearer {token}"}) as r:
                    await r.read()
                    assert r.status == 200, r.status
                return (time.perf_counter() - t) * 1000

            for _ in range(50):  # warm up connections and caches
                await call("/fwd/x", one)
                await call("/xch/x", one)
            for i in range(n):
                out["forward only"].append(await call("/fwd/x", one))
                out["exchange, warm cache"].append(await call("/xch/x", one))
                out["exchange, cold cache"].append(await call("/xch/x", many[i]))
        calls = sts.calls
    finally:
        await gw.stop()
        await sts.stop()
        await up.close()
    res = {k: {"p50_ms": statistics.median(v), "p99_ms": pct(v, 0.99)} for k, v in out.items()}
    res["_sts_calls"] = {"count": float(calls)}
    return res


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=400)
    args = ap.parse_args()
    try:
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    except ImportError:
        pass
    res = asyncio.run(main_async(args.n))
    base = res["forward only"]
    print(f"{'scenario':<24}{'p50 ms':>9}{'p99 ms':>9}{'added p50':>11}{'added p99':>11}")
    for k, v in res.items():
        if k.startswith("_"):
            continue
        print(f"{k:<24}{v['p50_ms']:>9.3f}{v['p99_ms']:>9.3f}"
              f"{v['p50_ms'] - base['p50_ms']:>11.3f}{v['p99_ms'] - base['p99_ms']:>11.3f}")
    print(f"STS calls: {int(res['_sts_calls']['count'])} (warm-up 1 + {args.n} cold callers)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
