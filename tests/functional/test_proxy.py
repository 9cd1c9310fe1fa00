"""Reverse and forward proxying over real loopback sockets."""

from __future__ import annotations

import asyncio
import hashlib
import json
import socket
from pathlib import Path

import aiohttp
import jwt
import pytest
from yarl import URL

from tests.conftest import Pki
from tests.helpers.servers import Upstream, start_gateway, start_upstream

FORWARD_ALL = """
rules:
  - id: everything
    action: forward
"""


def config(upstream: Upstream, extra: str = "", route_extra: str = "", listener_extra: str = "",
           forward_tls: str = "") -> str:
    return f"""
listeners:
  - name: main
    port: 0
    forward_proxy: true
{listener_extra}
routes:
  - name: api
    match: {{path_prefix: /api/}}
    upstream: {upstream.url}
    timeouts: {{connect: 1, read: 1}}
{route_extra}
forward_proxy:
  timeouts: {{connect: 1, read: 2}}
{forward_tls}
admin: {{port: 0}}
policy: {{files: [policy.yaml], watch: false}}
{extra}
"""


async def test_reverse_proxy_sets_forwarding_headers_and_removes_hop_by_hop(
    tmp_path: Path, upstream: Upstream
) -> None:
    gw = await start_gateway(tmp_path, config(upstream), FORWARD_ALL)
    try:
        async with aiohttp.ClientSession() as s, s.get(
            URL(gw.url() + "/api/it%2Fems?x=1&y=%2F", encoded=True),
            headers={"Connection": "X-Secret-Hop", "X-Secret-Hop": "1", "X-Keep": "yes",
                     "Authorization": "Bearer caller-token-xyz", "DPoP": "proof",
                     "Proxy-Authorization": "Basic Zm9vOmJhcg==", "TE": "trailers",
                     "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
                     "X-Request-Id": "req-123"},
        ) as r:
            assert r.status == 200
            await r.json()
            assert r.headers["X-Request-Id"] == "req-123"
            assert "wimse-gateway" in r.headers["Via"]
            assert "Keep-Alive" not in r.headers  # hop-by-hop from the upstream
            assert r.headers["X-Upstream"] == "yes"
        seen = upstream.seen[-1]
        assert seen.path_qs == "/api/it%2Fems?x=1&y=%2F"  # encoding kept byte for byte
        assert seen.header("x-keep") == "yes"
        for gone in ("x-secret-hop", "authorization", "dpop", "proxy-authorization", "te"):
            assert seen.header(gone) is None, gone
        assert seen.header("host") == f"127.0.0.1:{upstream.port}"
        assert seen.header("x-forwarded-for") == "127.0.0.1"
        assert seen.header("forwarded").startswith("for=127.0.0.1;proto=http;host=")
        assert "wimse-gateway" in seen.header("via")
        assert seen.header("traceparent").startswith("00-0af7651916cd43dd")
        assert seen.header("x-request-id") == "req-123"
        rec = gw.audit.records[-1]
        assert rec["request_id"] == "req-123" and rec["rule"] == "everything"
        assert rec["status"] == 200 and rec["upstream_status"] == 200
        assert "caller-token-xyz" not in gw.audit.lines[-1]
    finally:
        await gw.stop()


async def test_forward_proxy_absolute_form(tmp_path: Path, upstream: Upstream) -> None:
    gw = await start_gateway(tmp_path, config(upstream), FORWARD_ALL)
    try:
        async with aiohttp.ClientSession() as s, s.post(
            f"{upstream.url}/anything/else?q=1", proxy=gw.url(), data=b"hello"
        ) as r:
            assert r.status == 200
            body = await r.json()
        assert body["path_qs"] == "/anything/else?q=1"
        assert body["bytes"] == 5
        assert gw.audit.records[-1]["destination"]["route"] == "forward-proxy"
        # curl, a client we did not write, through HTTP_PROXY
        proc = await asyncio.create_subprocess_exec(
            "curl", "-sS", "-x", gw.url(), f"{upstream.url}/via-curl",
            stdout=asyncio.subprocess.PIPE)
        out, _ = await proc.communicate()
        assert json.loads(out)["path_qs"] == "/via-curl"
    finally:
        await gw.stop()


async def test_connect_is_refused_with_a_reason(tmp_path: Path, upstream: Upstream) -> None:
    gw = await start_gateway(tmp_path, config(upstream), FORWARD_ALL)
    try:
        port = gw.gateway.ports["main"]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n")
        await writer.drain()
        head = await reader.read(4096)
        writer.close()
        assert head.startswith(b"HTTP/1.1 405")
        assert b"request.method_unsupported" in head
    finally:
        await gw.stop()


@pytest.mark.slow
async def test_50mb_bodies_stream_both_ways(tmp_path: Path, upstream: Upstream) -> None:
    """50 MB up and 50 MB down pass whole, and the gateway never holds a body in memory."""
    import tracemalloc

    gw = await start_gateway(tmp_path, config(upstream), FORWARD_ALL)
    size = 50 * 1024 * 1024
    block = bytes(range(256)) * 256  # 64 KiB
    expected = hashlib.sha256()
    for _ in range(size // len(block)):
        expected.update(block)

    async def gen():
        for _ in range(size // len(block)):
            yield block

    tracemalloc.start()
    try:
        async with aiohttp.ClientSession() as s:
            async with s.put(gw.url() + "/api/upload", data=gen()) as r:  # chunked upload
                assert r.status == 200
                body = await r.json()
            assert body["bytes"] == size
            assert body["sha256"] == expected.hexdigest()
            async with s.get(gw.url() + f"/api/dl?download={size}") as r:
                assert r.status == 200
                assert "X-Hop" not in r.headers  # named in the upstream's Connection header
                got = 0
                async for chunk in r.content.iter_chunked(65536):
                    got += len(chunk)
            assert got == size
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
        await gw.stop()
    # Client, gateway and upstream share this process: 50 MB buffered anywhere would show.
    assert peak < 16 * 1024 * 1024, f"peak traced memory {peak / 1e6:.1f} MB"


async def test_content_length_body_keeps_its_length(tmp_path: Path, upstream: Upstream) -> None:
    gw = await start_gateway(tmp_path, config(upstream), FORWARD_ALL)
    try:
        async with aiohttp.ClientSession() as s, s.post(gw.url() + "/api/x", data=b"a" * 1000
                                                        ) as r:
            assert (await r.json())["bytes"] == 1000
        assert upstream.seen[-1].header("content-length") == "1000"
        assert upstream.seen[-1].header("transfer-encoding") is None
    finally:
        await gw.stop()


async def test_read_timeout_is_504_and_unreachable_is_502(
    tmp_path: Path, upstream: Upstream
) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        dead_port = sock.getsockname()[1]
    route_extra = f"""  - name: dead
    match: {{path_prefix: /dead/}}
    upstream: http://127.0.0.1:{dead_port}
"""
    gw = await start_gateway(tmp_path, config(upstream, route_extra=route_extra), FORWARD_ALL)
    try:
        async with aiohttp.ClientSession() as s:
            async with s.get(gw.url() + "/api/slow?sleep=3") as r:
                assert r.status == 504
                assert r.content_type == "application/problem+json"
                assert (await r.json())["reason"] == "upstream.timeout"
            async with s.get(gw.url() + "/dead/x") as r:
                assert r.status == 502
                assert (await r.json())["reason"] == "upstream.unreachable"
            # the gateway keeps serving
            async with s.get(gw.url() + "/api/ok") as r:
                assert r.status == 200
    finally:
        await gw.stop()


async def test_no_route_header_and_body_limits(tmp_path: Path, upstream: Upstream) -> None:
    extra = "limits: {max_header_bytes: 2048, max_request_body_bytes: 1000}"
    gw = await start_gateway(tmp_path, config(upstream, extra=extra), FORWARD_ALL)
    try:
        async with aiohttp.ClientSession() as s:
            async with s.get(gw.url() + "/nothing-here") as r:
                assert r.status == 404
                assert (await r.json())["reason"] == "request.no_route"
            secret = "s3cr3t-" + "A" * 3000
            async with s.get(gw.url() + "/api/x", headers={"Authorization": secret}) as r:
                assert r.status == 431
                text = await r.text()
                assert (json.loads(text))["reason"] == "request.header_too_large"
                assert "s3cr3t" not in text
            async with s.post(gw.url() + "/api/x", data=b"x" * 5000) as r:
                assert r.status == 413
                assert (await r.json())["reason"] == "request.body_too_large"

            async def gen():
                for _ in range(10):
                    yield b"y" * 500

            async with s.post(gw.url() + "/api/x", data=gen()) as r:  # chunked, no length
                assert r.status == 413
            async with s.post(gw.url() + "/api/x", data=b"x" * 999) as r:
                assert r.status == 200
    finally:
        await gw.stop()


async def test_tls_origination_from_plain_http_caller(tmp_path: Path, pki: Pki) -> None:
    """A workload speaks plain HTTP to the gateway; the upstream leg is https, verified."""
    tls_up = await start_upstream(pki.server_context())
    forward_tls = f"""  tls: {{ca: {pki.ca_file}}}
  upgrade_tls_hosts: [localhost]"""
    route_extra = f"""  - name: secure
    match: {{path_prefix: /secure/}}
    upstream: {tls_up.url}
    tls: {{ca: {pki.ca_file}}}
"""
    gw = await start_gateway(
        tmp_path, config(tls_up, forward_tls=forward_tls, route_extra=route_extra), FORWARD_ALL)
    try:
        async with aiohttp.ClientSession() as s:
            # forward proxy: http://localhost:PORT is upgraded to https by config
            async with s.get(f"http://localhost:{tls_up.port}/up", proxy=gw.url()) as r:
                assert r.status == 200, await r.text()
                assert (await r.json())["path_qs"] == "/up"
            assert gw.audit.records[-1]["destination"]["origin"] == (
                f"https://localhost:{tls_up.port}")
            # reverse proxy route with an https upstream
            async with s.get(gw.url() + "/secure/x") as r:
                assert r.status == 200
            # an https upstream we cannot verify is a TLS failure, not a silent downgrade
            async with s.get(f"http://127.0.0.2:{tls_up.port}/up", proxy=gw.url()) as r:
                assert r.status == 502
    finally:
        await gw.stop()
        await tls_up.close()


async def test_policy_upgrade_tls_and_mtls_to_upstream(tmp_path: Path, pki: Pki) -> None:
    """A rule upgrades the leg to https; the route presents a client certificate (mTLS)."""
    tls_up = await start_upstream(pki.server_context(require_client=True))
    cert, key = pki.svid("gw-client", "spiffe://example.org/gateway")
    forward_tls = f"  tls: {{ca: {pki.ca_file}, client_cert: {cert}, client_key: {key}}}"
    policy = f"""
rules:
  - id: partner-over-tls
    destination: {{host: localhost, port: {tls_up.port}}}
    action: forward
    upgrade_tls: true
  - id: default-deny
    action: deny
"""
    gw = await start_gateway(tmp_path, config(tls_up, forward_tls=forward_tls), policy)
    try:
        async with aiohttp.ClientSession() as s, s.get(
            f"http://localhost:{tls_up.port}/partner", proxy=gw.url()
        ) as r:
            assert r.status == 200, await r.text()
        assert tls_up.seen[-1].tls_client_cert is not None
    finally:
        await gw.stop()
        await tls_up.close()


async def test_issuer_exchange_injects_token_verifiable_with_jwks(
    tmp_path: Path, upstream: Upstream, pki: Pki
) -> None:
    """mTLS caller in, gateway-minted access token out, verified against the admin JWKS."""
    cert, key = pki.svid("frontend", "spiffe://example.org/ns/shop/sa/frontend")
    listener_extra = f"""  - name: mtls
    port: 0
    tls: {{cert: {pki.dir}/server.pem, key: {pki.dir}/server.key, client_cert: optional}}
"""
    extra = f"""
trust_domains:
  example.org: {{x509_bundle: {pki.ca_file}}}
issuer:
  issuer: https://gw.example.org
  keys: [{{file: {pki.dir}/issuer.key}}]
"""
    policy = """
profiles:
  api:
    exchange: {type: issuer, audience: https://api.example.org, scope: read, lifetime: 120}
    inject: [{type: bearer}]
rules:
  - id: frontend
    caller: {identity: "spiffe://example.org/ns/*/sa/frontend", methods: [mtls]}
    destination: {route: api}
    action: exchange
    profile: api
  - id: default-deny
    action: deny
"""
    gw = await start_gateway(tmp_path, config(upstream, extra=extra,
                                              listener_extra=listener_extra), policy)
    try:
        url = f"https://127.0.0.1:{gw.gateway.ports['mtls']}/api/orders"
        async with aiohttp.ClientSession() as s:
            async with s.get(url, ssl=pki.client_context(cert, key),
                             headers={"Authorization": "Bearer callers-own"}) as r:
                assert r.status == 200, await r.text()
            async with s.get(gw.admin + "/.well-known/jwks.json") as r:
                jwks = await r.json()
            async with s.get(url, ssl=pki.client_context()) as r:
                assert r.status == 401
                assert (await r.json())["reason"] == "authn.missing"
                assert r.headers["WWW-Authenticate"].startswith("Bearer")
        auth = upstream.seen[-1].header("authorization")
        assert auth.startswith("Bearer ") and auth != "Bearer callers-own"
        token = auth[7:]
        key_obj = jwt.PyJWK(jwks["keys"][0]).key
        claims = jwt.decode(token, key_obj, algorithms=["ES256"], audience="https://api.example.org")
        assert jwt.get_unverified_header(token)["typ"] == "at+jwt"
        assert claims["sub"] == "spiffe://example.org/ns/shop/sa/frontend"
        assert claims["scope"] == "read"
        assert claims["exp"] - claims["iat"] == 120
        rec = next(r for r in gw.audit.records if r.get("rule") == "frontend")
        assert rec["exchange"]["out"]["jti"] == claims["jti"]
        assert token not in "\n".join(gw.audit.lines)
    finally:
        await gw.stop()
