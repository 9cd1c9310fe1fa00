"""The gateway's own RFC 8693 token endpoint, called by curl, its tokens checked by npm jose."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

from tests.conftest import Pki
from tests.helpers.servers import Upstream, start_gateway
from tests.helpers.tokens import Key
from tests.interop.node import needs_node

HERE = Path(__file__).resolve().parent
SUB = "spiffe://example.org/ns/shop/sa/api"
TD_KEY = Key.es256("td")

pytestmark = needs_node()

POLICY = """
profiles:
  orders:
    exchange: {type: issuer, scope: orders.read, lifetime: 300}
    inject: [{type: bearer}]
rules:
  - id: api-gets-orders-tokens
    caller: {identity: spiffe://example.org/ns/shop/sa/api}
    destination: {route: token-endpoint, host: orders.example.com}
    action: exchange
    profile: orders
  - {id: default-deny, action: deny}
"""


async def run(*args: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(*args, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.PIPE)
    out, err = await proc.communicate()
    return proc.returncode, out.decode() + err.decode()


async def test_token_endpoint_with_curl_and_jose(tmp_path: Path, pki: Pki,
                                                 upstream: Upstream) -> None:
    cert, key = pki.svid("api", SUB)
    other, other_key = pki.svid("batch", "spiffe://example.org/ns/shop/sa/batch")
    (tmp_path / "td.jwks").write_text(json.dumps({"keys": [TD_KEY.jwk]}))
    config = f"""
listeners:
  - name: sts
    port: 0
    reverse_proxy: true
    tls: {{cert: {pki.dir}/server.pem, key: {pki.dir}/server.key, client_cert: optional}}
trust_domains:
  example.org: {{x509_bundle: {pki.ca_file}, jwks: td.jwks}}
authentication: {{audiences: [spiffe://example.org/gw]}}
issuer:
  issuer: https://gw.example.org
  keys: [{{file: {pki.dir}/issuer.key}}]
token_endpoint: {{listener: sts, path: /token}}
admin: {{port: 0}}
policy: {{files: [policy.yaml], watch: false}}
"""
    gw = await start_gateway(tmp_path, config, POLICY)
    base = gw.url("sts")
    curl = ["curl", "-sS", "--cacert", str(pki.ca_file)]
    te = "urn:ietf:params:oauth:grant-type:token-exchange"
    try:
        # mTLS client, no subject_token: the client is the subject
        code, out = await run(*curl, "--cert", str(cert), "--key", str(key),
                              "-d", f"grant_type={te}",
                              "-d", "resource=https://orders.example.com/v1", f"{base}/token")
        body = json.loads(out)
        assert body["token_type"] == "Bearer", body
        assert body["issued_token_type"] == "urn:ietf:params:oauth:token-type:access_token"
        assert 0 < body["expires_in"] <= 300
        code, out = await run("node", str(HERE / "verify_jwt.mjs"),
                              f"{gw.admin}/.well-known/jwks.json", body["access_token"],
                              "https://orders.example.com", "https://gw.example.org", "at+jwt")
        assert code == 0, out
        claims = json.loads(out)["payload"]
        assert claims["sub"] == SUB and claims["scope"] == "orders.read"
        # bearer client whose subject_token is its own JWT-SVID
        now = int(time.time())
        jwt_svid = TD_KEY.sign({"sub": SUB, "aud": "spiffe://example.org/gw", "exp": now + 120})
        code, out = await run(*curl, "-H", f"Authorization: Bearer {jwt_svid}",
                              "-d", f"grant_type={te}", "-d", f"subject_token={jwt_svid}",
                              "-d", "subject_token_type=urn:ietf:params:oauth:token-type:jwt",
                              "-d", "audience=https://orders.example.com/", f"{base}/token")
        body = json.loads(out)
        assert body["expires_in"] <= 120  # never outlives the subject token
        # RFC 6749 5.2 errors
        code, out = await run(*curl, "--cert", str(other), "--key", str(other_key),
                              "-d", f"grant_type={te}", "-d",
                              "resource=https://orders.example.com/", f"{base}/token")
        body = json.loads(out)
        assert body["error"] == "invalid_target" and body["reason"] == "policy.denied"
        code, out = await run(*curl, "-d", f"grant_type={te}",
                              "-d", "resource=https://orders.example.com/", f"{base}/token")
        body = json.loads(out)
        assert body["error"] == "invalid_client" and body["reason"] == "authn.missing"
        code, out = await run(*curl, "--cert", str(cert), "--key", str(key),
                              "-d", "grant_type=password", f"{base}/token")
        assert json.loads(out)["error"] == "unsupported_grant_type"
        code, out = await run(*curl, f"{base}/.well-known/oauth-authorization-server")
        meta = json.loads(out)
        assert meta["issuer"] == "https://gw.example.org"
        assert meta["grant_types_supported"] == [te]
        assert any(r.get("mode") == "token-endpoint" and r.get("exchange")
                   for r in gw.audit.records)
    finally:
        await gw.stop()
