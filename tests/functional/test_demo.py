"""`wimse-gateway demo` does what README.md promises: every command it prints works."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.functional.test_process import free_port

EXPECT = [
    ('"caller_as_seen_by_upstream": "spiffe://demo.example/ns/shop/sa/frontend"', "mTLS"),
    ('"caller_as_seen_by_upstream": "spiffe://demo.example/ns/shop/sa/frontend"', "JWT-SVID"),
    ('"issued_token_type": "urn:ietf:params:oauth:token-type:access_token"', "token endpoint"),
    ('"client_certificate_uri_san": ["spiffe://demo.example/ns/shop/sa/frontend"]', "partner"),
    ('"reason": "policy.denied"', "batch"),
    ('"reason": "authn.missing"', "no certificate"),
    ('"status": "ok"', "forward proxy, public"),
    ('"reason": "authn.missing"', "forward proxy, denied"),
    ("wimse_gateway_requests_total", "metrics"),
    ('"keys"', "jwks"),
]


def test_demo_commands_work(tmp_path: Path) -> None:
    ports = [free_port() for _ in range(5)]
    proc = subprocess.Popen(
        [sys.executable, "-m", "gateway.cli", "demo", "--state-dir", str(tmp_path / "state"),
         "--port", str(ports[0]), "--proxy-port", str(ports[1]), "--admin-port",
         str(ports[2]), "--upstream-port", str(ports[3]), "--partner-port", str(ports[4])],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        lines: list[str] = []
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                raise AssertionError(proc.stderr.read())
            lines.append(line.rstrip("\n"))
            if line.startswith('{"ports"'):
                break
        commands = [x for x in lines if x.startswith("curl ")]
        assert len(commands) == len(EXPECT), commands
        for cmd, (expected, what) in zip(commands, EXPECT, strict=True):
            # run from another directory: the commands carry absolute paths
            out = subprocess.run(["bash", "-c", cmd], capture_output=True, text=True,
                                 cwd="/", timeout=30)
            assert expected in out.stdout, (what, cmd, out.stdout, out.stderr)
        audit = (tmp_path / "state" / "audit.jsonl")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
        records = [json.loads(x) for x in audit.read_text().splitlines()]
        assert {r.get("rule") for r in records} >= {"frontend-calls-orders", "default-deny",
                                                    "anyone-reads-public-status",
                                                    "frontend-calls-partner"}
        svid = (tmp_path / "state" / "frontend.jwt").read_text()
        assert svid not in audit.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
