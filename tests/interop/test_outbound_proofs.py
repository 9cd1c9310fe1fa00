"""Proof-bound outbound credentials, each checked by an upstream built on packages we did not
write: a WIMSE HTTP Message Signature (npm http-message-signatures, with Content-Digest), and a
DPoP-bound access token from oidc-provider presented with a fresh DPoP proof per request
(checked with npm jose against the provider's JWKS and the token's cnf.jkt)."""

from __future__ import annotations

import json
from pathlib import Path

import aiohttp

from gateway.keys import SigningKey, load_private_key
from tests.conftest import Pki
from tests.functional.test_process import free_port
from tests.helpers.servers import start_gateway
from tests.interop.node import needs_node
from tests.interop.test_outbound_interop import mtls_gateway
from tests.interop.test_sts_peers import node_server

HERE = Path(__file__).resolve().parent
SUB = "spiffe://example.org/ns/shop/sa/frontend"

pytestmark = needs_node()


async def test_http_message_signature_verified_by_npm(tmp_path: Path, pki: Pki) -> None:
    cert, key = pki.svid("frontend", SUB)
    admin_port = free_port()
    env = {"JWKS_URL": f"http://127.0.0.1:{admin_port}/.well-known/jwks.json",
           "TXN_AUDIENCE": "example.org"}
    policy = """
profiles:
  signed:
    exchange: {type: issuer, token: wit, lifetime: 600}
    inject: [{type: httpsig}]
  signed-with-txn:
    exchange: {type: issuer, token: wit, lifetime: 600}
    inject: [{type: httpsig}]
rules:
  - {id: signed, caller: {methods: [mtls]}, action: exchange, profile: signed}
  - {id: default-deny, action: deny}
"""
    async with node_server("verifying_upstream.mjs", env) as up_port:
        config = mtls_gateway(pki, up_port, admin_port=admin_port)
        gw = await start_gateway(tmp_path, config, policy)
        base = f"https://127.0.0.1:{gw.gateway.ports['mtls']}"
        ssl = pki.client_context(cert, key)
        try:
            async with aiohttp.ClientSession() as s:
                async with s.get(base + "/orders?page=2", ssl=ssl) as r:
                    got = await r.json()
                    assert r.status == 200, got
                assert got["wit"]["sub"] == SUB and got["httpsig"]["body_bytes"] == 0
                body = json.dumps({"order": 42, "items": ["x"] * 1000}).encode()
                async with s.post(base + "/orders", ssl=ssl, data=body,
                                  headers={"Content-Type": "application/json",
                                           "Content-Digest": "sha-256=:bogus:",
                                           "Signature": "caller=:AAAA:"}) as r:
                    got2 = await r.json()
                    assert r.status == 200, got2
                assert got2["httpsig"]["body_bytes"] == len(body)
                assert got2["httpsig"]["nonce"] != got["httpsig"]["nonce"]
            rec = gw.audit.records[-1]
            assert rec["injected"] == ["httpsig"]
            assert rec["exchange"]["out"]["type"] == "urn:ietf:params:oauth:token-type:wit"
        finally:
            await gw.stop()


async def test_dpop_bound_token_from_oidc_provider(tmp_path: Path, pki: Pki) -> None:
    cert, key = pki.svid("frontend", SUB)
    gw_key = SigningKey.from_private_key(load_private_key(pki.dir / "issuer.key"))
    clients = [{"client_id": SUB, "jwks": {"keys": [gw_key.public_jwk]}}]
    async with node_server("oidc_server.mjs", {"CLIENTS": json.dumps(clients),
                                               "RESOURCE": "https://orders.example"}) as op:
        env = {"JWKS_URL": f"http://127.0.0.1:{op}/jwks", "TXN_AUDIENCE": "example.org",
               "AT_JWKS_URL": f"http://127.0.0.1:{op}/jwks"}
        async with node_server("verifying_upstream.mjs", env) as up_port:
            config = mtls_gateway(pki, up_port) + f"""
token_services:
  oidc:
    issuer: http://127.0.0.1:{op}
    client_auth: {{method: private_key_jwt, client_id: gateway}}
"""
            policy = """
profiles:
  orders:
    exchange: {type: client_credentials, sts: oidc, resource: https://orders.example,
               scope: orders.read, dpop: true}
    inject: [{type: dpop}]
rules:
  - {id: orders, caller: {methods: [mtls]}, action: exchange, profile: orders}
  - {id: default-deny, action: deny}
"""
            gw = await start_gateway(tmp_path, config, policy)
            base = f"https://127.0.0.1:{gw.gateway.ports['mtls']}"
            ssl = pki.client_context(cert, key)
            try:
                async with aiohttp.ClientSession() as s:
                    proofs = []
                    for method in ("GET", "POST"):
                        async with s.request(method, base + "/orders/7?x=1", ssl=ssl,
                                             data=b"{}" if method == "POST" else None) as r:
                            got = await r.json()
                            assert r.status == 200, got
                        proofs.append(got["dpop"]["proof"])
                        token = got["dpop"]["access_token"]
                        assert token["client_id"] == SUB and token["cnf"]["jkt"]
                        assert token["aud"] == "https://orders.example"
                    assert [p["htm"] for p in proofs] == ["GET", "POST"]
                    assert proofs[0]["jti"] != proofs[1]["jti"]
                    assert proofs[0]["htu"] == f"http://127.0.0.1:{up_port}/orders/7"
                ex = gw.audit.records[-1]["exchange"]
                assert ex["out"]["token_type"] == "DPoP" and ex["out"]["pop"] is True
                assert gw.gateway.services.cache.stats.misses == 1  # one token, two proofs
            finally:
                await gw.stop()
