"""Credentials made by npm `jose` and `dpop`, checked by the gateway over real sockets."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import aiohttp

from tests.helpers.servers import Upstream, start_gateway
from tests.interop.node import needs_node

HERE = Path(__file__).resolve().parent
SUB = "spiffe://example.org/ns/shop/sa/api"
ISSUER = "https://as.example.org"
SVID_AUD = "spiffe://example.org/egress-gateway"

# In CI (CI=true) these never skip: a missing install must fail the build, not hide it.
pytestmark = needs_node()


def node_tokens(target: str, count: int) -> dict:
    out = subprocess.run(
        ["node", str(HERE / "make_tokens.mjs")], cwd=HERE, check=True, capture_output=True,
        text=True, timeout=60,
        input=json.dumps({"target": target, "count": count, "sub": SUB, "issuer": ISSUER,
                          "audience": "https://api.example.org", "svid_aud": SVID_AUD}))
    return json.loads(out.stdout)


POLICY = """
rules:
  - id: by-method
    caller:
      identity: spiffe://example.org/ns/shop/sa/api
      methods: [wit, dpop, bearer, httpsig]
    action: forward
  - id: default-deny
    action: deny
"""


async def test_wit_dpop_and_bearer_from_independent_libraries(
    tmp_path: Path, upstream: Upstream
) -> None:
    target = f"{upstream.url}/v1/orders"
    tokens = node_tokens(target, 3)
    (tmp_path / "td.jwks").write_text(json.dumps(tokens["trust_domain_jwks"]))
    (tmp_path / "as.jwks").write_text(json.dumps(tokens["issuer_jwks"]))
    config = f"""
listeners: [{{name: main, port: 0, forward_proxy: true}}]
trust_domains:
  example.org: {{jwks: td.jwks}}
authentication:
  audiences: [{SVID_AUD}]
  issuers:
    - {{issuer: "{ISSUER}", jwks: as.jwks, audiences: [https://api.example.org]}}
admin: null
policy: {{files: [policy.yaml], watch: false}}
"""
    gw = await start_gateway(tmp_path, config, POLICY)
    try:
        async with aiohttp.ClientSession() as s:
            for method in ("wit", "dpop"):
                for headers in tokens[method]:
                    async with s.get(target, proxy=gw.url(), headers=headers) as r:
                        assert r.status == 200, (method, await r.text())
                    rec = gw.audit.records[-1]
                    assert rec["caller"]["method"] == method
                    assert rec["caller"]["identity"] == SUB and rec["caller"]["pop"] is True
                    seen = upstream.seen[-1]
                    for h in ("workload-identity-token", "workload-proof-token", "dpop",
                              "authorization"):
                        assert seen.header(h) is None  # the caller's credentials stay here
                # the same proof twice: replay refused with the mechanism's status
                async with s.get(target, proxy=gw.url(), headers=tokens[method][0]) as r:
                    body = await r.json()
                    assert body["reason"] == "authn.replayed"
                    assert r.status == (400 if method == "wit" else 401)
                    for value in tokens[method][0].values():
                        assert value.split(" ")[-1] not in json.dumps(body)
            # RFC 9421 signatures with a Content-Digest over the body, by http-message-signatures
            body = tokens["httpsig_body"].encode()
            for headers in tokens["httpsig"]:
                async with s.post(target, proxy=gw.url(), headers=headers, data=body) as r:
                    assert r.status == 200, await r.text()
                assert gw.audit.records[-1]["caller"]["method"] == "httpsig"
                seen = upstream.seen[-1]
                assert seen.body_bytes == len(body)  # the verified bytes are what went upstream
                assert seen.header("signature") is None
                assert seen.header("signature-input") is None
            async with s.post(target, proxy=gw.url(), headers=tokens["httpsig"][0],
                              data=body) as r:
                assert (await r.json())["reason"] == "authn.replayed"
            async with s.post(target, proxy=gw.url(), headers=tokens["httpsig"][1],
                              data=body.replace(b"42", b"43")) as r:
                assert r.status == 400
                assert (await r.json())["reason"] == "authn.digest_mismatch"
            tampered = dict(tokens["httpsig"][2], **{"Content-Type": "text/plain"})
            async with s.post(target, proxy=gw.url(), headers=tampered, data=body) as r:
                assert r.status == 400
                assert (await r.json())["reason"] == "authn.bad_signature"
            async with s.get(target, proxy=gw.url(), headers=tokens["bearer"]) as r:
                assert r.status == 200
                assert gw.audit.records[-1]["caller"]["pop"] is False
            # a proof made for another URI
            async with s.get(f"{upstream.url}/v1/other", proxy=gw.url(),
                             headers=tokens["wit"][1]) as r:
                assert r.status == 400
                assert (await r.json())["reason"] == "authn.wrong_audience"
            # a DPoP proof that names this URI but for another method
            async with s.post(target, proxy=gw.url(), headers=tokens["dpop"][1]) as r:
                assert r.status == 401
                assert (await r.json())["reason"] == "authn.wrong_method"
                assert r.headers["WWW-Authenticate"].startswith("DPoP algs=")
        # no token in any audit line
        text = "\n".join(gw.audit.lines)
        assert tokens["wit"][0]["Workload-Identity-Token"] not in text
        assert tokens["bearer"]["Authorization"][7:] not in text
    finally:
        await gw.stop()
