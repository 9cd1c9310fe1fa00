"""Credential exchange end to end over loopback: caller -> gateway -> STS -> upstream."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import jwt
import pytest

from tests.conftest import Pki
from tests.helpers.servers import RunningGateway, Upstream, start_gateway
from tests.helpers.sts import FakeSts, basic_credentials
from tests.helpers.tokens import Key

TD_KEY = Key.es256("td")
SUB = "spiffe://example.org/ns/shop/sa/api"
GW_AUD = "spiffe://example.org/gw"


def svid(lifetime: int = 600, sub: str = SUB) -> str:
    now = int(time.time())
    return TD_KEY.sign({"sub": sub, "aud": GW_AUD, "exp": now + lifetime, "iat": now})


POLICY = """
profiles:
  orders-by-token:
    exchange: {type: sts, sts: corp, subject: caller_token, audience: https://orders.example,
               scope: orders.read}
    inject: [{type: bearer}]
  orders-minted:
    exchange: {type: sts, sts: corp, subject: gateway_token, audience: https://orders.example}
    inject: [{type: bearer}]
  orders-obo:
    exchange: {type: sts, sts: corp, subject: caller_token, audience: https://orders.example}
    inject: [{type: header, name: X-Orders-Token}]
    on_behalf_of: true
  spiffe-client:
    exchange: {type: client_credentials, sts: corp, resource: https://orders.example}
    inject: [{type: bearer}]
rules:
  - {id: token, destination: {path_prefix: /token/}, action: exchange, profile: orders-by-token}
  - {id: minted, destination: {path_prefix: /minted/}, action: exchange, profile: orders-minted}
  - {id: obo, destination: {path_prefix: /obo/}, action: exchange, profile: orders-obo}
  - {id: cc, destination: {path_prefix: /cc/}, action: exchange, profile: spiffe-client}
  - id: long-ok
    destination: {path_prefix: /long-ok/}
    action: exchange
    profile: orders-by-token
    allow_lifetime_extension: true
  - id: pop-ok
    destination: {path_prefix: /pop-ok/}
    action: exchange
    profile: orders-by-token
    allow_assurance_upgrade: true
  - {id: plain, destination: {path_prefix: /plain/}, action: forward}
  - {id: default-deny, action: deny}
"""


@pytest.fixture
async def sts() -> AsyncIterator[FakeSts]:
    s = await FakeSts().start()
    yield s
    await s.stop()


async def gateway(tmp_path: Path, pki: Pki, upstream: Upstream, sts: FakeSts,
                  extra: str = "") -> RunningGateway:
    (tmp_path / "td.jwks").write_text(json.dumps({"keys": [TD_KEY.jwk]}))
    (tmp_path / "secret").write_text("s3cret-value\n")
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
  corp:
    token_endpoint: {sts.url}/token
    client_auth: {{method: client_secret_basic, client_id: gateway, secret_file: secret}}
    timeout: 1
    retries: 1
    breaker_failures: 3
    breaker_reset: 1
exchange_cache: {{failure_ttl: 0}}
admin: {{port: 0}}
policy: {{files: [policy.yaml], watch: false}}
{extra}
"""
    return await start_gateway(tmp_path, config, POLICY)


async def get(gw: RunningGateway, path: str, token: str | None = None, **kw) -> tuple[int, dict]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with aiohttp.ClientSession() as s, s.get(gw.url() + path, headers=headers, **kw) as r:
        text = await r.text()
        return r.status, json.loads(text) if text.startswith("{") else {"text": text}


async def test_bearer_caller_token_exchanged_and_verified_by_upstream(
    tmp_path: Path, pki: Pki, upstream: Upstream, sts: FakeSts
) -> None:
    gw = await gateway(tmp_path, pki, upstream, sts)
    try:
        caller_token = svid()
        status, body = await get(gw, "/token/orders", caller_token)
        assert status == 200, body
        form = sts.forms[-1]
        assert form["grant_type"] == "urn:ietf:params:oauth:grant-type:token-exchange"
        assert form["subject_token"] == caller_token
        assert form["subject_token_type"] == "urn:ietf:params:oauth:token-type:jwt"
        assert form["audience"] == "https://orders.example" and form["scope"] == "orders.read"
        assert basic_credentials(sts.headers[-1]) == ("gateway", "s3cret-value")
        # the upstream checks what it got against the STS's keys
        injected = upstream.seen[-1].header("authorization")[7:]
        claims = sts.verify(injected, "https://orders.example")
        assert claims["sub"] == SUB
        assert injected != caller_token
        rec = gw.audit.records[-1]
        assert rec["exchange"]["out"]["jti"] == claims["jti"]
        assert rec["exchange"]["in"]["method"] == "bearer"
        assert caller_token not in "\n".join(gw.audit.lines)
        assert injected not in "\n".join(gw.audit.lines)
        # warm cache: no second STS call
        status, _ = await get(gw, "/token/orders", caller_token)
        assert status == 200 and sts.calls == 1
    finally:
        await gw.stop()


async def test_mtls_caller_gets_a_gateway_minted_subject_token(
    tmp_path: Path, pki: Pki, upstream: Upstream, sts: FakeSts
) -> None:
    cert, key = pki.svid("caller", SUB)
    gw = await gateway(tmp_path, pki, upstream, sts)
    try:
        url = f"https://127.0.0.1:{gw.gateway.ports['mtls']}/minted/x"
        async with aiohttp.ClientSession() as s, s.get(
            url, ssl=pki.client_context(cert, key)
        ) as r:
            assert r.status == 200, await r.text()
        subject = sts.forms[-1]["subject_token"]
        async with aiohttp.ClientSession() as s, s.get(
            gw.admin + "/.well-known/jwks.json"
        ) as r:
            jwks = await r.json()
        claims = jwt.decode(subject, jwt.PyJWK(jwks["keys"][0]).key, algorithms=["ES256"],
                            audience=f"{sts.url}/token")
        assert claims["sub"] == SUB and claims["amr"] == ["mtls"]
        assert claims["exp"] - claims["iat"] <= 60
        assert sts.verify(upstream.seen[-1].header("authorization")[7:],
                          "https://orders.example")["sub"] == SUB
        # a WIT-less, token-less caller cannot use a caller_token profile
        async with aiohttp.ClientSession() as s, s.get(
            url.replace("/minted/", "/token/"), ssl=pki.client_context(cert, key)
        ) as r:
            assert r.status == 403
            assert (await r.json())["reason"] == "exchange.no_subject_token"
    finally:
        await gw.stop()


async def test_on_behalf_of_sends_actor_token(
    tmp_path: Path, pki: Pki, upstream: Upstream, sts: FakeSts
) -> None:
    gw = await gateway(tmp_path, pki, upstream, sts)
    try:
        status, _ = await get(gw, "/obo/x", svid())
        assert status == 200
        form = sts.forms[-1]
        assert form["actor_token_type"] == "urn:ietf:params:oauth:token-type:jwt"
        assert jwt.decode(form["actor_token"], options={"verify_signature": False})["sub"] == (
            "wimse-gateway")
        token = upstream.seen[-1].header("x-orders-token")
        assert sts.verify(token, "https://orders.example")["act"] == {"sub": "wimse-gateway"}
        assert upstream.seen[-1].header("authorization") is None
    finally:
        await gw.stop()


async def test_client_credentials_with_caller_identity_assertion(
    tmp_path: Path, pki: Pki, upstream: Upstream, sts: FakeSts
) -> None:
    gw = await gateway(tmp_path, pki, upstream, sts)
    try:
        status, _ = await get(gw, "/cc/x", svid())
        assert status == 200
        form = sts.forms[-1]
        assert form["grant_type"] == "client_credentials"
        assert form["client_id"] == SUB
        assert form["client_assertion_type"] == (
            "urn:ietf:params:oauth:client-assertion-type:jwt-bearer")
        a = jwt.decode(form["client_assertion"], options={"verify_signature": False})
        assert a["iss"] == a["sub"] == SUB and a["aud"] == f"{sts.url}/token"
        assert a["exp"] - a["iat"] <= 60 and a["jti"]
        assert "Authorization" not in sts.headers[-1]  # the assertion is the client auth
    finally:
        await gw.stop()


async def test_100_concurrent_cold_requests_make_one_sts_call(
    tmp_path: Path, pki: Pki, upstream: Upstream, sts: FakeSts
) -> None:
    sts.delay = 0.3
    gw = await gateway(tmp_path, pki, upstream, sts)
    try:
        token = svid()
        async with aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=100)
        ) as s:
            async def one() -> int:
                async with s.get(gw.url() + "/token/x",
                                 headers={"Authorization": f"Bearer {token}"}) as r:
                    return r.status

            statuses = await asyncio.gather(*(one() for _ in range(100)))
        assert statuses == [200] * 100
        assert sts.calls == 1
    finally:
        await gw.stop()


async def test_refresh_ahead_does_not_make_requests_wait(
    tmp_path: Path, pki: Pki, upstream: Upstream, sts: FakeSts
) -> None:
    sts.lifetime = 30
    gw = await gateway(tmp_path, pki, upstream, sts)
    gw.gateway.services.cache.refresh_ahead = 0.05  # refresh after 1.5 s of 30
    try:
        token = svid()
        assert (await get(gw, "/token/x", token))[0] == 200
        first = upstream.seen[-1].header("authorization")
        await asyncio.sleep(1.7)
        sts.delay = 0.6  # the refresh will be slow (the STS timeout is 1 s)
        t = time.perf_counter()
        assert (await get(gw, "/token/x", token))[0] == 200
        assert time.perf_counter() - t < 0.5  # served from cache while the refresh runs
        assert upstream.seen[-1].header("authorization") == first
        await asyncio.sleep(0.9)
        assert sts.calls == 2
        assert (await get(gw, "/token/x", token))[0] == 200
        assert upstream.seen[-1].header("authorization") != first  # the refreshed one
        assert gw.gateway.services.cache.stats.refreshes >= 1
    finally:
        await gw.stop()


@pytest.mark.parametrize(
    ("mode", "status", "reason"),
    [
        ("slow", 504, "exchange.sts_timeout"),
        ("garbage", 502, "exchange.bad_response"),
        ("500", 503, "exchange.sts_unavailable"),
        ("error:invalid_grant", 403, "exchange.sts_refused"),
        ("error:invalid_client", 502, "exchange.sts_rejected"),
        ("long", 403, "policy.lifetime_extension"),
        ("dpop", 403, "policy.assurance_upgrade"),
        ("no_type", 200, None),  # missing issued_token_type, access token asked: accepted
    ],
)
async def test_sts_faults_each_get_their_reason(
    tmp_path: Path, pki: Pki, upstream: Upstream, sts: FakeSts, mode: str, status: int,
    reason: str | None
) -> None:
    sts.mode = mode
    gw = await gateway(tmp_path, pki, upstream, sts)
    try:
        got, body = await get(gw, "/token/x", svid())
        assert got == status, body
        if reason:
            assert body["reason"] == reason
            assert "SHOULD-NOT-LEAK" not in json.dumps(body)
        if mode.startswith("error:"):
            assert body["sts_error"] == mode[6:]
        # other routes keep working meanwhile
        assert (await get(gw, "/plain/x"))[0] == 200
    finally:
        await gw.stop()


async def test_guard_rails_give_way_only_to_the_flag(
    tmp_path: Path, pki: Pki, upstream: Upstream, sts: FakeSts
) -> None:
    gw = await gateway(tmp_path, pki, upstream, sts)
    try:
        sts.mode = "long"
        assert (await get(gw, "/token/x", svid()))[1]["reason"] == "policy.lifetime_extension"
        assert (await get(gw, "/long-ok/x", svid()))[0] == 200
        sts.mode = "dpop"
        assert (await get(gw, "/token/y", svid(sub=SUB + "2")))[1]["reason"] == (
            "policy.assurance_upgrade")
        assert (await get(gw, "/pop-ok/y", svid(sub=SUB + "2")))[0] == 200
        # a short-lived caller token: a 300 s STS token outlives it and is refused
        sts.mode = "ok"
        status, body = await get(gw, "/token/z", svid(lifetime=60, sub=SUB + "3"))
        assert status == 403 and body["reason"] == "policy.lifetime_extension"
    finally:
        await gw.stop()


async def test_breaker_opens_and_recovers(
    tmp_path: Path, pki: Pki, upstream: Upstream, sts: FakeSts
) -> None:
    sts.mode = "500"
    gw = await gateway(tmp_path, pki, upstream, sts)
    try:
        token = svid()
        reasons = [(await get(gw, "/token/x", token))[1]["reason"] for _ in range(5)]
        assert reasons[:3] == ["exchange.sts_unavailable"] * 3
        assert reasons[3:] == ["exchange.circuit_open"] * 2
        calls = sts.calls
        assert calls == 3 * 2  # one retry each, then nothing while open
        sts.mode = "ok"
        await asyncio.sleep(1.1)  # breaker_reset
        assert (await get(gw, "/token/x", token))[0] == 200
        assert (await get(gw, "/token/x", svid(sub=SUB + "9")))[0] == 200
        async with aiohttp.ClientSession() as s, s.get(gw.admin + "/metrics") as r:
            text = await r.text()
        assert 'wimse_gateway_exchanges_total{outcome="exchange.circuit_open"' in text
        assert 'wimse_gateway_sts_seconds_count{outcome="5xx",sts="corp"}' in text
    finally:
        await gw.stop()


async def test_sts_down(tmp_path: Path, pki: Pki, upstream: Upstream, sts: FakeSts) -> None:
    gw = await gateway(tmp_path, pki, upstream, sts)
    await sts.stop()
    try:
        status, body = await get(gw, "/token/x", svid())
        assert status == 503 and body["reason"] == "exchange.sts_unavailable"
        assert (await get(gw, "/plain/x"))[0] == 200
    finally:
        await gw.stop()


async def test_no_exchanger_can_extend_a_short_caller_credential(
    tmp_path: Path, pki: Pki, upstream: Upstream, sts: FakeSts
) -> None:
    """A 60 s caller token through each exchanger: refused, or capped to the caller's expiry."""
    gw = await gateway(tmp_path, pki, upstream, sts)
    try:
        short = svid(lifetime=60)
        # caller's token as subject, a gateway-minted subject (itself capped to 60 s), and
        # client credentials: the STS answers 300 s each time, and each time it is refused
        for path in ("/token/a", "/minted/a", "/cc/a"):
            status, body = await get(gw, path, short)
            assert status == 403 and body["reason"] == "policy.lifetime_extension", path
    finally:
        await gw.stop()


async def test_own_issuer_caps_lifetime_to_the_caller(
    tmp_path: Path, pki: Pki, upstream: Upstream
) -> None:
    (tmp_path / "td.jwks").write_text(json.dumps({"keys": [TD_KEY.jwk]}))
    config = f"""
listeners: [{{name: main, port: 0}}]
routes: [{{name: api, upstream: "{upstream.url}"}}]
trust_domains: {{example.org: {{jwks: td.jwks}}}}
authentication: {{audiences: [{GW_AUD}]}}
issuer: {{issuer: https://gw.example.org, keys: [{{file: {pki.dir}/issuer.key}}]}}
admin: null
policy: {{files: [policy.yaml], watch: false}}
"""
    policy = """
profiles:
  own: {exchange: {type: issuer, lifetime: 3600}, inject: [{type: bearer}]}
rules:
  - {id: own, action: exchange, profile: own, caller: {methods: [bearer]}}
  - {id: default-deny, action: deny}
"""
    gw = await start_gateway(tmp_path, config, policy)
    try:
        caller = svid(lifetime=90)
        caller_exp = jwt.decode(caller, options={"verify_signature": False})["exp"]
        assert (await get(gw, "/x", caller))[0] == 200
        minted = jwt.decode(upstream.seen[-1].header("authorization")[7:],
                            options={"verify_signature": False})
        assert minted["exp"] <= caller_exp
        rec = gw.audit.records[-1]["exchange"]
        assert rec["lifetime_granted"] <= rec["caller_remaining"] + 1
        assert "aud" not in rec["claims_carried"]
    finally:
        await gw.stop()


async def test_wit_caller_through_the_sts(
    tmp_path: Path, pki: Pki, upstream: Upstream, sts: FakeSts
) -> None:
    """WIT + WPT in; the WIT is never sent to the STS; a gateway-minted subject token is."""
    from tests.helpers.tokens import make_wit, make_wpt

    gw = await gateway(tmp_path, pki, upstream, sts)
    try:
        wl = Key.es256()
        wit = make_wit(TD_KEY, SUB, wl)
        url = gw.url() + "/minted/w"
        wpt = make_wpt(wl, wit, f"{upstream.url}/minted/w")
        async with aiohttp.ClientSession() as s, s.get(url, headers={
            "Workload-Identity-Token": wit, "Workload-Proof-Token": wpt}) as r:
            assert r.status == 200, await r.text()
        form = sts.forms[-1]
        assert wit not in json.dumps(form)
        assert jwt.decode(form["subject_token"], options={"verify_signature": False})["amr"] == [
            "wit"]
        assert sts.verify(upstream.seen[-1].header("authorization")[7:],
                          "https://orders.example")["sub"] == SUB
    finally:
        await gw.stop()


async def test_mtls_client_authentication_to_the_sts(
    tmp_path: Path, pki: Pki, upstream: Upstream
) -> None:
    """tls_client_auth: the gateway's certificate authenticates it; no secret is sent."""
    sts = await FakeSts(ssl_context=pki.server_context(require_client=True)).start()
    cert, key = pki.svid("gateway-client", "spiffe://example.org/gateway")
    (tmp_path / "td.jwks").write_text(json.dumps({"keys": [TD_KEY.jwk]}))
    config = f"""
listeners: [{{name: main, port: 0}}]
routes: [{{name: api, upstream: "{upstream.url}"}}]
trust_domains: {{example.org: {{jwks: td.jwks}}}}
authentication: {{audiences: [{GW_AUD}]}}
token_services:
  corp:
    token_endpoint: {sts.url}/token
    client_auth: {{method: tls_client_auth, client_id: spiffe://example.org/gateway}}
    tls: {{ca: {pki.ca_file}, client_cert: {cert}, client_key: {key}}}
admin: null
policy: {{files: [policy.yaml], watch: false}}
"""
    policy = """
profiles:
  p: {exchange: {type: sts, sts: corp, subject: caller_token, audience: https://o.example},
      inject: [{type: bearer}]}
rules:
  - {id: p, action: exchange, profile: p, caller: {methods: [bearer]}}
  - {id: default-deny, action: deny}
"""
    gw = await start_gateway(tmp_path, config, policy)
    try:
        assert (await get(gw, "/x", svid()))[0] == 200
        assert sts.client_certs[-1] is not None
        assert "Authorization" not in sts.headers[-1]
        assert sts.forms[-1]["client_id"] == "spiffe://example.org/gateway"
        assert "client_secret" not in sts.forms[-1]
    finally:
        await gw.stop()
        await sts.stop()


async def test_dpop_bound_token_with_one_nonce_retry(
    tmp_path: Path, pki: Pki, upstream: Upstream, sts: FakeSts
) -> None:
    """dpop: true -> the token request carries a proof; `use_dpop_nonce` is retried once;
    the upstream gets `Authorization: DPoP` and a fresh proof bound to the token's cnf.jkt."""
    from gateway.authn.dpop import DpopSettings, verify_proof
    from gateway.keys import jwk_thumbprint

    sts.mode = "dpop_nonce"
    cert, key = pki.svid("caller", SUB)
    gw = await gateway(tmp_path, pki, upstream, sts)
    pol = (tmp_path / "policy.yaml").read_text().replace(
        "  spiffe-client:", "  dpop-bound:\n"
        "    exchange: {type: sts, sts: corp, subject: gateway_token,"
        " audience: https://orders.example, dpop: true}\n"
        "    inject: [{type: dpop}]\n  spiffe-client:").replace(
        "  - {id: plain,", "  - {id: dpop, destination: {path_prefix: /dpop/}, action: exchange,"
        " profile: dpop-bound}\n  - {id: plain,")
    (tmp_path / "policy.yaml").write_text(pol)
    assert await gw.gateway.reload()
    try:
        url = f"https://127.0.0.1:{gw.gateway.ports['mtls']}/dpop/orders?x=1"
        for _ in range(2):
            async with aiohttp.ClientSession() as s, s.get(
                url, ssl=pki.client_context(cert, key)
            ) as r:
                assert r.status == 200, await r.text()
        assert sts.calls == 2  # the nonce challenge and the retry; then the cache
        seen = upstream.seen[-1]
        scheme, token = seen.header("authorization").split(" ", 1)
        assert scheme == "DPoP"
        proof = verify_proof(seen.header("dpop"), "GET",
                             frozenset({f"{upstream.url}/dpop/orders"}), time.time(),
                             DpopSettings(), access_token=token)
        assert sts.verify(token, "https://orders.example")["cnf"]["jkt"] == proof.jkt
        assert proof.jkt == jwk_thumbprint(proof.jwk)
        # a bearer caller asking for the same: assurance upgrade, refused
        status, body = await get(gw, "/dpop/y", svid())
        assert status == 403 and body["reason"] == "policy.assurance_upgrade"
    finally:
        await gw.stop()
