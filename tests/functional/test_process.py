"""The gateway as operators run it: a `wimse-gateway` process, signals, `check`, metrics."""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
import pytest

from tests.helpers.servers import Upstream

CLI = [sys.executable, "-m", "gateway.cli"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def write_config(d: Path, upstream: Upstream, port: int, admin: int, policy: str) -> Path:
    (d / "policy.yaml").write_text(textwrap.dedent(policy))
    cfg = d / "gateway.yaml"
    cfg.write_text(textwrap.dedent(f"""\
        listeners:
          - name: main
            port: {port}
        routes:
          - name: api
            match: {{path_prefix: /}}
            upstream: {upstream.url}
            timeouts: {{connect: 1, read: 10}}
        admin: {{port: {admin}}}
        policy:
          files: [policy.yaml]
          watch: false
        audit: {{path: audit.jsonl}}
        limits: {{shutdown_grace: 10}}
        """))
    return cfg


ALLOW = """\
rules:
  - id: allow-all
    action: forward
"""
DENY = """\
rules:
  - id: deny-all
    action: deny
"""


@asynccontextmanager
async def gateway_process(cfg: Path, port: int, admin: int, workers: int = 1
                          ) -> AsyncIterator[subprocess.Popen]:
    proc = subprocess.Popen([*CLI, "run", "-c", str(cfg), "--workers", str(workers)],
                            stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, cwd=cfg.parent)
    try:
        deadline = time.monotonic() + 20
        async with aiohttp.ClientSession() as s:
            while True:
                try:
                    async with s.get(f"http://127.0.0.1:{admin}/readyz") as r:
                        if r.status == 200:
                            break
                except aiohttp.ClientError:
                    pass
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(f"gateway did not start: {proc.stderr.read().decode()}")
                await asyncio.sleep(0.1)
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)


async def metric(admin: int, name: str, **labels: str) -> float:
    async with aiohttp.ClientSession() as s, s.get(f"http://127.0.0.1:{admin}/metrics") as r:
        text = await r.text()
    total = 0.0
    for line in text.splitlines():
        if line.startswith((name + "{", name + " ")) and all(
            f'{k}="{v}"' in line for k, v in labels.items()
        ):
            total += float(line.rsplit(" ", 1)[1])
    return total


@pytest.mark.parametrize("workers", [1, 2])
async def test_sighup_reload_refuses_broken_policy_and_keeps_serving(
    tmp_path: Path, upstream: Upstream, workers: int
) -> None:
    port, admin = free_port(), free_port()
    cfg = write_config(tmp_path, upstream, port, admin, ALLOW)
    async with gateway_process(cfg, port, admin, workers) as proc, aiohttp.ClientSession() as s:
        async with s.get(f"http://127.0.0.1:{port}/x") as r:
            assert r.status == 200
        async with s.get(f"http://127.0.0.1:{admin}/policy") as r:
            first_digest = (await r.json())["digest"]

        (tmp_path / "policy.yaml").write_text("rules:\n  - id: broken\n    action: maybe\n")
        proc.send_signal(signal.SIGHUP)
        for _ in range(50):
            if await metric(admin, "wimse_gateway_reloads_total", outcome="refused") >= workers:
                break
            await asyncio.sleep(0.1)
        # every worker refused it (metrics are summed across workers)
        assert await metric(admin, "wimse_gateway_reloads_total", outcome="refused") == workers
        for _ in range(4):  # new connections, so several workers answer
            async with aiohttp.ClientSession() as s2, s2.get(f"http://127.0.0.1:{port}/x") as r:
                assert r.status == 200  # the old policy keeps serving
        async with s.get(f"http://127.0.0.1:{admin}/policy") as r:
            assert (await r.json())["digest"] == first_digest

        (tmp_path / "policy.yaml").write_text(DENY)
        proc.send_signal(signal.SIGHUP)
        for _ in range(50):
            if await metric(admin, "wimse_gateway_reloads_total", outcome="ok") >= workers:
                break
            await asyncio.sleep(0.1)
        for _ in range(4):
            async with aiohttp.ClientSession() as s2, s2.get(f"http://127.0.0.1:{port}/x") as r:
                assert r.status == 401  # anonymous denied: authentication is what is missing
        async with s.get(f"http://127.0.0.1:{admin}/policy") as r:
            body = await r.json()
            assert body["digest"] != first_digest and body["rules"] == ["deny-all"]
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
    stderr = proc.stderr.read().decode()
    assert "reload refused" in stderr and "rules[0].action" in stderr


@pytest.mark.parametrize("workers", [1, 2])
async def test_sigterm_drains_in_flight_request(tmp_path: Path, upstream: Upstream,
                                                workers: int) -> None:
    port, admin = free_port(), free_port()
    cfg = write_config(tmp_path, upstream, port, admin, ALLOW)
    async with gateway_process(cfg, port, admin, workers) as proc, aiohttp.ClientSession() as s:
        slow = asyncio.create_task(s.get(f"http://127.0.0.1:{port}/slow?sleep=1.5"))
        for _ in range(50):
            if upstream.seen:
                break
            await asyncio.sleep(0.05)
        assert upstream.seen, "the slow request never reached the upstream"
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        await asyncio.sleep(0.3)
        # new connections are refused while the old request drains
        with pytest.raises(aiohttp.ClientConnectionError):
            async with aiohttp.ClientSession() as s2:
                await s2.get(f"http://127.0.0.1:{port}/new")
        r = await slow
        assert r.status == 200
        assert (await r.json())["path_qs"] == "/slow?sleep=1.5"
        r.release()
        assert await asyncio.to_thread(proc.wait, 15) == 0
        assert time.monotonic() - started >= 1.0
    lines = (tmp_path / "audit.jsonl").read_text().splitlines()
    assert json.loads(lines[-1])["status"] == 200


async def test_metrics_count_what_happened(tmp_path: Path, upstream: Upstream) -> None:
    port, admin = free_port(), free_port()
    policy = """\
rules:
  - id: reads
    destination: {methods: [GET]}
    action: forward
  - id: default-deny
    action: deny
"""
    cfg = write_config(tmp_path, upstream, port, admin, policy)
    async with gateway_process(cfg, port, admin, workers=2) as proc:
        for _ in range(3):  # a new connection each: the kernel spreads them over both workers
            async with aiohttp.ClientSession() as s, s.get(f"http://127.0.0.1:{port}/a") as r:
                assert r.status == 200
        async with aiohttp.ClientSession() as s, s.post(f"http://127.0.0.1:{port}/a") as r:
            assert r.status == 401
        assert await metric(admin, "wimse_gateway_requests_total", route="api",
                            decision="forward", status="200") == 3
        assert await metric(admin, "wimse_gateway_requests_total", route="api",
                            decision="deny", status="401") == 1
        assert await metric(admin, "wimse_gateway_refusals_total", reason="authn.missing") == 1
        assert await metric(admin, "wimse_gateway_request_seconds_count", route="api") == 3
        assert await metric(admin, "wimse_gateway_in_flight_requests") == 0
        async with aiohttp.ClientSession() as s, s.get(f"http://127.0.0.1:{admin}/healthz") as r:
            assert r.status == 200
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=15)
    audit = [json.loads(x) for x in (tmp_path / "audit.jsonl").read_text().splitlines()]
    # two workers write their own buffered lines: the order across workers is not kept
    assert sorted(a["status"] for a in audit) == [200, 200, 200, 401]
    assert all(a["policy_digest"].startswith("sha256:") for a in audit)


def test_check_reports_file_line_errors(tmp_path: Path) -> None:
    (tmp_path / "policy.yaml").write_text(textwrap.dedent("""\
        profiles: {}
        rules:
          - id: a
            action: exchange
            profile: nowhere
          - id: a
            destination: {route: missing-route}
            action: forward
        """))
    cfg = tmp_path / "gateway.yaml"
    cfg.write_text(textwrap.dedent("""\
        listeners:
          - name: main
            port: 8080
            tls:
              cert: certs/none.pem
              key: certs/none.key
              client_cert: required
              client_ca: [certs/ca.pem]
        routes:
          - name: api
            upstream: http://127.0.0.1:1
            colour: blue
        policy: {files: [policy.yaml]}
        """))
    out = subprocess.run([*CLI, "check", "-c", str(cfg)], capture_output=True, text=True,
                         cwd=tmp_path)
    assert out.returncode == 1
    err = out.stderr
    assert "gateway.yaml:12: routes[0].colour: unknown key" in err
    assert out.stdout == ""

    cfg.write_text(cfg.read_text().replace("    colour: blue\n", ""))
    out = subprocess.run([*CLI, "check", "-c", str(cfg)], capture_output=True, text=True,
                         cwd=tmp_path)
    assert out.returncode == 1
    err = out.stderr
    assert "gateway.yaml:5: listeners[0].tls.cert: file not found: certs/none.pem" in err
    assert "gateway.yaml:8: listeners[0].tls.client_ca[0]: file not found: certs/ca.pem" in err

    (tmp_path / "certs").mkdir()
    for f in ("none.pem", "none.key", "ca.pem"):
        (tmp_path / "certs" / f).write_text("x")
    out = subprocess.run([*CLI, "check", "-c", str(cfg)], capture_output=True, text=True,
                         cwd=tmp_path)
    assert out.returncode == 1, out.stdout
    err = out.stderr
    assert "policy.yaml:5: rules[0].profile: unknown profile 'nowhere'" in err
    assert "policy.yaml:6: rules[1].id: duplicate rule id 'a'" in err
    assert "policy.yaml:7: rules[1].destination.route: unknown route 'missing-route'" in err
    assert "rules[1]: the last rule must be an explicit catch-all" in err


def test_check_refuses_duplicate_yaml_keys(tmp_path: Path) -> None:
    (tmp_path / "policy.yaml").write_text("rules:\n  - {id: all, action: forward}\n")
    cfg = tmp_path / "gateway.yaml"
    cfg.write_text("listeners:\n  - {name: a, port: 1}\npolicy: {files: [policy.yaml]}\n"
                   "listeners:\n  - {name: b, port: 2}\n")
    out = subprocess.run([*CLI, "check", "-c", str(cfg)], capture_output=True, text=True)
    assert out.returncode == 1
    assert "gateway.yaml:4: listeners: duplicate key (first defined on line 1)" in out.stderr


async def test_workers_share_the_port_and_the_replay_cache(
    tmp_path: Path, upstream: Upstream
) -> None:
    """Two workers answer on one port; a proof replayed on new connections (which the kernel
    spreads over both workers) is accepted exactly once."""
    import json as _json

    from tests.helpers.tokens import Key, make_wit, make_wpt

    td, wl = Key.es256("td"), Key.es256()
    (tmp_path / "td.jwks").write_text(_json.dumps({"keys": [td.jwk]}))
    port, admin = free_port(), free_port()
    cfg = write_config(tmp_path, upstream, port, admin, ALLOW)
    cfg.write_text(cfg.read_text() + "trust_domains:\n  example.org: {jwks: td.jwks}\n")
    wit = make_wit(td, "spiffe://example.org/ns/a/sa/b", wl)
    target = f"{upstream.url}/w"
    async with gateway_process(cfg, port, admin, workers=2) as proc:
        statuses = []
        headers = {"Workload-Identity-Token": wit,
                   "Workload-Proof-Token": make_wpt(wl, wit, target)}
        for _ in range(12):
            async with aiohttp.ClientSession() as s, s.get(
                f"http://127.0.0.1:{port}/w", headers=headers
            ) as r:
                statuses.append(r.status)
        assert statuses.count(200) == 1 and statuses.count(400) == 11
        for _ in range(20):
            async with aiohttp.ClientSession() as s, s.get(f"http://127.0.0.1:{port}/x") as r:
                assert r.status == 200
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=15)
    pids = {json.loads(x)["pid"] for x in (tmp_path / "audit.jsonl").read_text().splitlines()}
    assert len(pids) == 2
