"""Outbound credentials the gateway mints, checked by an upstream we did not write (npm jose):
WIMSE WIT + WPT for the next hop, transaction tokens that keep their txn id across hops."""

from __future__ import annotations

import json
from pathlib import Path

import aiohttp

from tests.conftest import Pki
from tests.functional.test_process import free_port
from tests.helpers.servers import start_gateway
from tests.interop.node import needs_node
from tests.interop.test_sts_peers import node_server

HERE = Path(__file__).resolve().parent
SUB = "spiffe://example.org/ns/shop/sa/frontend"

pytestmark = needs_node()

POLICY = """
profiles:
  next-hop-wit:
    exchange: {type: issuer, token: wit, lifetime: 600}
    inject: [{type: wimse}]
  gateway-wit:
    exchange: {type: issuer, token: wit, identity: gateway, lifetime: 600}
    inject: [{type: wimse}]
  txn:
    exchange: {type: issuer, token: txn_token, scope: orders.read, lifetime: 60}
    inject: [{type: txn_token}]
rules:
  - {id: wit, destination: {path_prefix: /wit/}, caller: {methods: [mtls]}, action: exchange,
     profile: next-hop-wit}
  - {id: gw-wit, destination: {path_prefix: /gw-wit/}, caller: {methods: [mtls]},
     action: exchange, profile: gateway-wit}
  - id: txn-entered-through-front
    destination: {path_prefix: /inner/}
    caller: {claims: {txn_token.req_wl: "spiffe://example.org/gateways/front"}}
    action: exchange
    profile: txn
  - {id: txn, destination: {path_prefix: /txn/}, caller: {methods: [mtls]}, action: exchange,
     profile: txn}
  - {id: default-deny, action: deny}
"""


def mtls_gateway(pki: Pki, up_port: int, *, admin_port: int | None = None,
                 txn_audiences: bool = False) -> str:
    """A gateway with an mTLS listener, its own issuer, and a Node upstream on `up_port`."""
    authn = "authentication: {txn_token_audiences: [example.org]}" if txn_audiences else ""
    admin = f"{{port: {admin_port}}}" if admin_port is not None else "null"
    return f"""
listeners:
  - name: mtls
    port: 0
    tls: {{cert: {pki.dir}/server.pem, key: {pki.dir}/server.key, client_cert: optional}}
routes: [{{name: api, upstream: "http://127.0.0.1:{up_port}"}}]
trust_domains: {{example.org: {{x509_bundle: {pki.ca_file}}}}}
{authn}
issuer:
  issuer: https://gw.example.org
  keys: [{{file: {pki.dir}/issuer.key}}]
  workload_identity: spiffe://example.org/gateways/front
admin: {admin}
policy: {{files: [policy.yaml], watch: false}}
"""


# A bearer caller (JWT-SVID) gets an at+jwt minted by the gateway's own issuer.
OWN_TOKEN_POLICY = """
profiles:
  own: {exchange: {type: issuer, audience: https://api.example, lifetime: 60},
        inject: [{type: bearer}]}
rules:
  - {id: own, caller: {methods: [bearer]}, action: exchange, profile: own}
  - {id: default-deny, action: deny}
"""


def bearer_gateway(upstream: str, issuer: str) -> str:
    return f"""
listeners: [{{name: main, port: 0}}]
routes: [{{name: api, upstream: "{upstream}"}}]
trust_domains: {{example.org: {{jwks: td.jwks}}}}
authentication: {{audiences: [spiffe://example.org/gw]}}
issuer: {issuer}
admin: {{port: 0}}
policy: {{files: [policy.yaml], watch: false}}
"""


async def verify_with_jose(jwks: str, token: str, at: float | None = None) -> dict:
    """npm jose checks an at+jwt from the gateway's issuer; returns its header and payload."""
    import asyncio

    args = [jwks, token, "https://api.example", "https://gw.example.org", "at+jwt"]
    proc = await asyncio.create_subprocess_exec(
        "node", str(HERE / "verify_jwt.mjs"), *args, *([str(int(at))] if at else []),
        stdout=asyncio.subprocess.PIPE)
    out, _ = await proc.communicate()
    result = json.loads(out)
    assert proc.returncode == 0, result
    return result


async def test_wit_wpt_and_txn_tokens_verified_by_jose(tmp_path: Path, pki: Pki) -> None:
    cert, key = pki.svid("frontend", SUB)
    admin_port = free_port()
    env = {"JWKS_URL": f"http://127.0.0.1:{admin_port}/.well-known/jwks.json",
           "TXN_AUDIENCE": "example.org"}
    async with node_server("verifying_upstream.mjs", env) as up_port:
        config = mtls_gateway(pki, up_port, admin_port=admin_port, txn_audiences=True)
        gw = await start_gateway(tmp_path, config, POLICY)
        base = f"https://127.0.0.1:{gw.gateway.ports['mtls']}"
        ssl = pki.client_context(cert, key)
        try:
            async with aiohttp.ClientSession() as s:
                async with s.get(base + "/wit/orders", ssl=ssl) as r:
                    body = await r.json()
                    assert r.status == 200, body
                assert body["wit"]["sub"] == SUB
                assert body["wpt"]["aud"] == f"http://127.0.0.1:{up_port}/wit/orders"
                async with s.get(base + "/wit/orders", ssl=ssl) as r:  # cached WIT, new WPT
                    body2 = await r.json()
                assert body2["wit"]["jti"] == body["wit"]["jti"]
                assert body2["wpt"]["jti"] != body["wpt"]["jti"]
                async with s.get(base + "/gw-wit/x", ssl=ssl) as r:
                    body = await r.json()
                    assert r.status == 200, body
                assert body["wit"]["sub"] == "spiffe://example.org/gateways/front"
                assert body["wit"]["act"] == {"sub": SUB}
                # a transaction starts here...
                async with s.get(base + "/txn/start", ssl=ssl) as r:
                    first = await r.json()
                    assert r.status == 200, first
                txn = first["txn"]
                assert txn["sub"] == SUB and txn["scope"] == "orders.read"
                assert txn["req_wl"] == "spiffe://example.org/gateways/front"
                assert txn["tctx"] == {"method": "GET",
                                       "target": f"http://127.0.0.1:{up_port}/txn/start"}
                # ...and the next hop (the Txn-Token as it arrived upstream) keeps its id
                token = first["txn_raw"]
                async with s.get(base + "/inner/next", ssl=ssl,
                                 headers={"Txn-Token": token}) as r:
                    nxt = await r.json()
                    assert r.status == 200, nxt
                assert nxt["txn"]["txn"] == _claims(token)["txn"]
                assert nxt["txn"]["tctx"] == txn["tctx"]  # the context travels unchanged
                # a request that did not enter through the front gateway is refused
                async with s.get(base + "/inner/next", ssl=ssl) as r:
                    assert r.status == 403
                async with s.get(base + "/inner/next", ssl=ssl,
                                 headers={"Txn-Token": token[:-4] + "AAAA"}) as r:
                    assert r.status == 401
                    assert (await r.json())["reason"] == "authn.bad_signature"
            rec = next(x for x in gw.audit.records if x.get("rule") == "txn-entered-through-front")
            assert rec["txn"] == _claims(token)["txn"]
            assert rec["exchange"]["out"]["type"] == "urn:ietf:params:oauth:token-type:txn_token"
            assert token not in "\n".join(gw.audit.lines)
        finally:
            await gw.stop()


def _claims(token: str) -> dict:
    import jwt

    return jwt.decode(token, options={"verify_signature": False})


async def test_jwks_rotation_never_surprises_a_verifier(tmp_path: Path) -> None:
    """A verifier (npm jose) holding the JWKS it fetched before a rotation verifies tokens
    signed after it: the next key is published `overlap` seconds before it signs."""
    import time

    from gateway.clock import FrozenClock
    from tests.helpers.servers import start_upstream
    from tests.helpers.tokens import Key

    clock = FrozenClock(time.time() // 100 * 100 + 10)  # 10 s into a 100 s slot
    td = Key.es256("td")
    (tmp_path / "td.jwks").write_text(json.dumps({"keys": [td.jwk]}))
    up = await start_upstream()
    config = bearer_gateway(up.url, "{issuer: https://gw.example.org, state_dir: state, "
                                    "rotation: {period: 100, overlap: 20}}")
    gw = await start_gateway(tmp_path, config, OWN_TOKEN_POLICY, clock=clock)
    try:
        async with aiohttp.ClientSession() as s:
            clock.advance(75)  # 15 s before the switch
            assert await gw.gateway.reload()
            async with s.get(gw.admin + "/.well-known/jwks.json") as r:
                snapshot = await r.json()
            (tmp_path / "snapshot.jwks").write_text(json.dumps(snapshot))
            assert len(snapshot["keys"]) == 3  # signing, previous, next
            clock.advance(20)  # the next key now signs
            assert await gw.gateway.reload()
            caller = td.sign({"sub": SUB, "aud": "spiffe://example.org/gw",
                              "exp": int(clock.now()) + 600})
            async with s.get(gw.url() + "/x", headers={"Authorization": f"Bearer {caller}"}) as r:
                assert r.status == 200, await r.text()
        token = up.seen[-1].header("authorization")[7:]
        result = await verify_with_jose(f"file:{tmp_path / 'snapshot.jwks'}", token,
                                        clock.now())
        signed_by = result["header"]["kid"]
        assert signed_by != snapshot["keys"][0]["kid"]  # a key that was not yet signing then
        assert signed_by in {k["kid"] for k in snapshot["keys"]}
    finally:
        await gw.stop()
        await up.close()


async def test_transaction_token_and_wit_on_one_request(tmp_path: Path, pki: Pki) -> None:
    """A profile that includes another: the Txn-Token is injected first, then a WIT + WPT whose
    `tth` covers it; the Node upstream checks both, and the audit line records both exchanges."""
    cert, key = pki.svid("frontend", SUB)
    admin_port = free_port()
    env = {"JWKS_URL": f"http://127.0.0.1:{admin_port}/.well-known/jwks.json",
           "TXN_AUDIENCE": "example.org"}
    policy = """
profiles:
  txn:
    exchange: {type: issuer, token: txn_token, scope: orders.read, lifetime: 60}
    inject: [{type: txn_token}]
  wit-with-txn:
    include: [txn]
    exchange: {type: issuer, token: wit, lifetime: 600}
    inject: [{type: wimse}]
rules:
  - {id: both, caller: {methods: [mtls]}, action: exchange, profile: wit-with-txn}
  - {id: default-deny, action: deny}
"""
    async with node_server("verifying_upstream.mjs", env) as up_port:
        config = mtls_gateway(pki, up_port, admin_port=admin_port)
        gw = await start_gateway(tmp_path, config, policy)
        base = f"https://127.0.0.1:{gw.gateway.ports['mtls']}"
        try:
            async with aiohttp.ClientSession() as s, s.get(
                    base + "/orders", ssl=pki.client_context(cert, key)) as r:
                body = await r.json()
                assert r.status == 200, body
            assert body["txn"]["sub"] == SUB and body["wit"]["sub"] == SUB
            assert body["wpt"]["tth"]  # checked against the Txn-Token by the upstream
            rec = gw.audit.records[-1]
            assert rec["injected"] == ["txn_token", "wimse"]
            assert rec["included"][0]["profile"] == "txn"
            assert rec["included"][0]["exchange"]["out"]["type"].endswith(":txn_token")
            assert rec["exchange"]["out"]["type"].endswith(":wit")
        finally:
            await gw.stop()


async def test_eddsa_issuer_key_verified_by_jose(tmp_path: Path) -> None:
    """The issuer signs with an Ed25519 key from a file (EdDSA); npm jose verifies the at+jwt
    against the gateway's published JWKS."""

    from cryptography.hazmat.primitives.asymmetric import ed25519

    from gateway.keys import write_private_key
    from tests.helpers.servers import start_upstream
    from tests.helpers.tokens import Key

    write_private_key(tmp_path / "ed.key", ed25519.Ed25519PrivateKey.generate())
    td = Key.es256("td")
    (tmp_path / "td.jwks").write_text(json.dumps({"keys": [td.jwk]}))
    up = await start_upstream()
    config = bearer_gateway(up.url, "{issuer: https://gw.example.org, keys: [{file: ed.key}]}")
    gw = await start_gateway(tmp_path, config, OWN_TOKEN_POLICY)
    try:
        import time

        caller = td.sign({"sub": SUB, "aud": "spiffe://example.org/gw",
                          "exp": int(time.time()) + 600})
        async with aiohttp.ClientSession() as s, s.get(
                gw.url() + "/x", headers={"Authorization": f"Bearer {caller}"}) as r:
            assert r.status == 200, await r.text()
        token = up.seen[-1].header("authorization")[7:]
        result = await verify_with_jose(gw.admin + "/.well-known/jwks.json", token)
        assert result["header"]["alg"] == "EdDSA" and result["payload"]["sub"] == SUB
    finally:
        await gw.stop()
        await up.close()
