"""Credential exchange against OAuth servers we did not write, started by the tests.

- @jmondi/oauth2-server (RFC 8693 TokenExchangeGrant; checks subject tokens with npm `jose`)
- oidc-provider (client_credentials with RFC 7523 private_key_jwt, JWT access tokens)
The upstream verifies the injected token against the server's JWKS with pyjwt.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
import jwt

from gateway.keys import SigningKey, load_private_key
from tests.conftest import Pki
from tests.helpers.servers import Upstream, start_gateway
from tests.helpers.tokens import Key
from tests.interop.node import needs_node

HERE = Path(__file__).resolve().parent
SUB = "spiffe://example.org/ns/shop/sa/api"
GW_AUD = "spiffe://example.org/gw"
TD_KEY = Key.es256("td")

pytestmark = needs_node("@jmondi/oauth2-server")


@asynccontextmanager
async def node_server(script: str, env: dict[str, str]) -> AsyncIterator[int]:
    proc = await asyncio.create_subprocess_exec(
        "node", str(HERE / script), cwd=HERE, env={**os.environ, **env},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        line = await asyncio.wait_for(proc.stdout.readline(), 30)
        if not line:
            raise AssertionError((await proc.stderr.read()).decode())
        yield json.loads(line)["port"]
    finally:
        proc.terminate()
        await proc.wait()


def svid(lifetime: int) -> str:
    now = int(time.time())
    return TD_KEY.sign({"sub": SUB, "aud": GW_AUD, "iat": now, "exp": now + lifetime})


async def jwks_key(url: str, token: str):
    async with aiohttp.ClientSession() as s, s.get(url) as r:
        keys = await r.json()
    kid = jwt.get_unverified_header(token)["kid"]
    return jwt.PyJWK(next(k for k in keys["keys"] if k["kid"] == kid)).key


async def test_rfc8693_exchange_with_jmondi_oauth2_server(
    tmp_path: Path, pki: Pki, upstream: Upstream
) -> None:
    issuer_pub = SigningKey.from_private_key(load_private_key(pki.dir / "issuer.key"))
    (tmp_path / "subject.jwks").write_text(json.dumps(
        {"keys": [TD_KEY.jwk, issuer_pub.public_jwk]}))
    (tmp_path / "td.jwks").write_text(json.dumps({"keys": [TD_KEY.jwk]}))
    (tmp_path / "secret").write_text("s3cret")
    async with node_server("rfc8693_server.mjs",
                           {"SUBJECT_JWKS": str(tmp_path / "subject.jwks")}) as port:
        config = f"""
listeners:
  - {{name: main, port: 0}}
  - name: mtls
    port: 0
    tls: {{cert: {pki.dir}/server.pem, key: {pki.dir}/server.key, client_cert: optional}}
routes: [{{name: api, upstream: "{upstream.url}"}}]
trust_domains:
  example.org: {{jwks: td.jwks, x509_bundle: {pki.ca_file}}}
authentication: {{audiences: [{GW_AUD}]}}
issuer:
  issuer: https://gw.example.org
  keys: [{{file: {pki.dir}/issuer.key}}]
token_services:
  jmondi:
    token_endpoint: http://127.0.0.1:{port}/token
    client_auth: {{method: client_secret_basic, client_id: gateway, secret_file: secret}}
admin: null
policy: {{files: [policy.yaml], watch: false}}
"""
        policy = """
profiles:
  by-token:
    exchange: {type: sts, sts: jmondi, subject: caller_token, audience: https://api.example,
               scope: read}
    inject: [{type: bearer}]
  minted:
    exchange: {type: sts, sts: jmondi, subject: gateway_token, audience: https://api.example,
               scope: read}
    inject: [{type: bearer}]
rules:
  - {id: strict, destination: {path_prefix: /strict/}, action: exchange, profile: by-token}
  - id: lenient
    destination: {path_prefix: /lenient/}
    action: exchange
    profile: by-token
    allow_lifetime_extension: true
  - id: minted
    destination: {path_prefix: /minted/}
    action: exchange
    profile: minted
    allow_lifetime_extension: true
  - {id: default-deny, action: deny}
"""
        gw = await start_gateway(tmp_path, config, policy)
        try:
            async with aiohttp.ClientSession() as s:
                # The server hands out 1-hour tokens whatever the subject's lifetime (its quirk):
                # a 10-minute caller token must not turn into a 1-hour one.
                short = svid(600)
                async with s.get(gw.url() + "/strict/x",
                                 headers={"Authorization": f"Bearer {short}"}) as r:
                    assert r.status == 403
                    assert (await r.json())["reason"] == "policy.lifetime_extension"
                # A 2-hour caller token: the 1-hour answer is fine without any flag.
                async with s.get(gw.url() + "/strict/x",
                                 headers={"Authorization": f"Bearer {svid(7200)}"}) as r:
                    assert r.status == 200, await r.text()
                token = upstream.seen[-1].header("authorization")[7:]
                claims = jwt.decode(token, await jwks_key(f"http://127.0.0.1:{port}/jwks", token),
                                    algorithms=["ES256"], audience="https://api.example")
                assert claims["sub"] == SUB and claims["scope"] == "read"
                # With the explicit flag the short caller gets through (and the audit says so).
                async with s.get(gw.url() + "/lenient/x",
                                 headers={"Authorization": f"Bearer {short}"}) as r:
                    assert r.status == 200
                rec = gw.audit.records[-1]
                assert rec["exchange"]["lifetime_granted"] > rec["exchange"]["caller_remaining"]
                # mTLS caller: the gateway mints the subject token; jose on the server checks it.
                cert, key = pki.svid("caller", SUB)
                async with s.get(f"https://127.0.0.1:{gw.gateway.ports['mtls']}/minted/x",
                                 ssl=pki.client_context(cert, key)) as r:
                    assert r.status == 200, await r.text()
                # A caller token signed by a key the server does not trust (but we do, after
                # a key rotation the server has not heard of): its invalid_grant is named as
                # the reason's detail, its error_description is not echoed.
                rotated = Key.es256("td-2")
                (tmp_path / "td.jwks").write_text(json.dumps({"keys": [TD_KEY.jwk,
                                                                       rotated.jwk]}))
                await gw.gateway.reload()
                now = int(time.time())
                unknown_to_sts = rotated.sign({"sub": SUB, "aud": GW_AUD, "exp": now + 7200})
                async with s.get(gw.url() + "/strict/y",
                                 headers={"Authorization": f"Bearer {unknown_to_sts}"}) as r:
                    body = await r.json()
                    assert r.status == 403 and body["reason"] == "exchange.sts_refused"
                    assert body["sts_error"] == "invalid_grant"
                    assert "subject token refused" not in json.dumps(body)
            # wrong client secret: invalid_client -> 502 sts_rejected
            (tmp_path / "secret").write_text("wrong")
            await gw.gateway.reload()
            async with aiohttp.ClientSession() as s, s.get(
                gw.url() + "/strict/z", headers={"Authorization": f"Bearer {svid(7000)}"}
            ) as r:
                body = await r.json()
                assert r.status == 502 and body["reason"] == "exchange.sts_rejected"
                assert body["sts_error"] == "invalid_client"
        finally:
            await gw.stop()


async def test_client_credentials_with_oidc_provider(
    tmp_path: Path, pki: Pki, upstream: Upstream
) -> None:
    gw_key = SigningKey.from_private_key(load_private_key(pki.dir / "issuer.key"))
    clients = [{"client_id": SUB, "jwks": {"keys": [gw_key.public_jwk]}}]
    (tmp_path / "td.jwks").write_text(json.dumps({"keys": [TD_KEY.jwk]}))
    async with node_server("oidc_server.mjs", {"CLIENTS": json.dumps(clients),
                                               "RESOURCE": "https://orders.example"}) as port:
        config = f"""
listeners: [{{name: main, port: 0}}]
routes: [{{name: api, upstream: "{upstream.url}"}}]
trust_domains:
  example.org: {{jwks: td.jwks}}
authentication: {{audiences: [{GW_AUD}]}}
issuer:
  issuer: https://gw.example.org
  keys: [{{file: {pki.dir}/issuer.key}}]
token_services:
  oidc:
    issuer: http://127.0.0.1:{port}
    client_auth: {{method: private_key_jwt, client_id: gateway}}
admin: null
policy: {{files: [policy.yaml], watch: false}}
"""
        policy = """
profiles:
  orders:
    exchange: {type: client_credentials, sts: oidc, resource: https://orders.example,
               scope: orders.read}
    inject: [{type: bearer}]
rules:
  - {id: orders, caller: {methods: [bearer]}, action: exchange, profile: orders}
  - {id: default-deny, action: deny}
"""
        gw = await start_gateway(tmp_path, config, policy)
        try:
            async with aiohttp.ClientSession() as s:
                async with s.get(gw.url() + "/orders",
                                 headers={"Authorization": f"Bearer {svid(3600)}"}) as r:
                    assert r.status == 200, await r.text()
                token = upstream.seen[-1].header("authorization")[7:]
                key = await jwks_key(f"http://127.0.0.1:{port}/jwks", token)
                claims = jwt.decode(token, key, algorithms=["ES256"],
                                    audience="https://orders.example")
                assert claims["client_id"] == SUB
                assert claims["scope"] == "orders.read"
                assert jwt.get_unverified_header(token)["typ"] == "at+jwt"
                # a workload the provider does not know as a client
                other = TD_KEY.sign({"sub": "spiffe://example.org/ns/x/sa/unknown",
                                     "aud": GW_AUD, "exp": int(time.time()) + 3600})
                async with s.get(gw.url() + "/orders",
                                 headers={"Authorization": f"Bearer {other}"}) as r:
                    body = await r.json()
                    assert r.status == 502 and body["sts_error"] == "invalid_client"
        finally:
            await gw.stop()
