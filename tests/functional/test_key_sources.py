"""JWKS over https (cache, refresh on unknown kid, rate limit) and XFCC from trusted proxies."""

from __future__ import annotations

import json
import time
from pathlib import Path
from urllib.parse import quote

import aiohttp
from aiohttp import web

from gateway.authn.jwks import RemoteKeySource
from gateway.clock import FrozenClock
from tests.conftest import Pki
from tests.helpers.servers import Upstream, start_gateway
from tests.helpers.tokens import Key


async def start_jwks_server(pki: Pki, state: dict) -> tuple[web.AppRunner, str]:
    async def handler(request: web.Request) -> web.Response:
        state["hits"] += 1
        return web.json_response({"keys": [k.jwk for k in state["keys"]]},
                                 headers={"Cache-Control": "public, max-age=600"})

    app = web.Application()
    app.router.add_get("/jwks.json", handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=pki.server_context())
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return runner, f"https://127.0.0.1:{port}/jwks.json"


async def test_remote_jwks_refreshes_on_unknown_kid_at_most_once_per_interval(pki: Pki) -> None:
    old, new = Key.es256("old"), Key.es256("new")
    state = {"hits": 0, "keys": [old]}
    runner, url = await start_jwks_server(pki, state)
    clock = FrozenClock(time.time())
    try:
        src = RemoteKeySource(url, clock, min_refresh=60, ssl=pki.client_context())
        ks = await src.current("old")
        assert ks.kids() == {"old"} and state["hits"] == 1
        await src.current("old")
        assert state["hits"] == 1  # cached (max-age 600)
        state["keys"] = [old, new]  # rotation at the key server
        # unknown kid right after a fetch: no refetch yet (rate limit)
        assert not (await src.current("new")).has_kid("new")
        for _ in range(50):  # an attacker sending random kids
            await src.current(f"random-{_}")
        assert state["hits"] == 1
        clock.advance(61)
        assert (await src.current("new")).has_kid("new")
        assert state["hits"] == 2
        clock.advance(30)
        await src.current("still-unknown")
        assert state["hits"] == 2
        clock.advance(600)  # past max-age: refetched even for known kids
        await src.current("old")
        assert state["hits"] == 3
    finally:
        await runner.cleanup()


async def test_gateway_verifies_jwt_svid_with_remote_jwks(
    tmp_path: Path, pki: Pki, upstream: Upstream
) -> None:
    k = Key.es256("td-key")
    state = {"hits": 0, "keys": [k]}
    runner, url = await start_jwks_server(pki, state)
    config = f"""
listeners: [{{name: main, port: 0}}]
routes: [{{name: api, upstream: "{upstream.url}"}}]
trust_domains:
  example.org: {{jwks_url: "{url}", jwks_ca: {pki.ca_file}}}
authentication: {{audiences: [spiffe://example.org/gw]}}
admin: null
policy: {{files: [policy.yaml], watch: false}}
"""
    policy = """
rules:
  - {id: svids, caller: {trust_domain: example.org, methods: [bearer]}, action: forward}
  - {id: default-deny, action: deny}
"""
    gw = await start_gateway(tmp_path, config, policy)
    try:
        now = int(time.time())
        token = k.sign({"sub": "spiffe://example.org/ns/a/sa/b", "aud": "spiffe://example.org/gw",
                        "exp": now + 60})
        async with aiohttp.ClientSession() as s:
            for _ in range(3):
                async with s.get(gw.url() + "/x",
                                 headers={"Authorization": f"Bearer {token}"}) as r:
                    assert r.status == 200, await r.text()
            assert state["hits"] == 1
            forged = Key.es256("other-kid").sign({"sub": "spiffe://example.org/ns/a/sa/b",
                                                  "aud": "spiffe://example.org/gw",
                                                  "exp": now + 60})
            async with s.get(gw.url() + "/x", headers={"Authorization": f"Bearer {forged}"}) as r:
                assert r.status == 401
                assert (await r.json())["reason"] == "authn.unknown_key"
    finally:
        await gw.stop()
        await runner.cleanup()


async def test_xfcc_only_from_trusted_proxies(tmp_path: Path, pki: Pki, upstream: Upstream) -> None:
    cert, _ = pki.svid("meshed", "spiffe://example.org/ns/shop/sa/api")
    pem = cert.read_text()
    config_tpl = """
listeners: [{{name: main, port: 0}}]
routes: [{{name: api, upstream: "{up}"}}]
trust_domains:
  example.org: {{x509_bundle: {ca}}}
authentication: {{trusted_proxies: [{trusted}]}}
admin: null
policy: {{files: [policy.yaml], watch: false}}
"""
    policy = """
rules:
  - {id: api, caller: {identity: spiffe://example.org/ns/shop/sa/api}, action: forward}
  - {id: default-deny, action: deny}
"""
    xfcc_uri = 'By=spiffe://example.org/gw;URI=spiffe://example.org/ns/shop/sa/api'
    xfcc_cert = f'By=spiffe://example.org/gw;Cert="{quote(pem)}"'
    # 127.0.0.1 is trusted: XFCC is believed (URI form and Cert form)
    gw = await start_gateway(tmp_path / "a", config_tpl.format(
        up=upstream.url, ca=pki.ca_file, trusted="127.0.0.1"), policy)
    try:
        async with aiohttp.ClientSession() as s:
            for value in (xfcc_uri, xfcc_cert):
                async with s.get(gw.url() + "/x",
                                 headers={"X-Forwarded-Client-Cert": value}) as r:
                    assert r.status == 200, await r.text()
                assert upstream.seen[-1].header("x-forwarded-client-cert") is None
            assert json.loads(gw.audit.lines[-1])["caller"]["method"] == "mtls"
    finally:
        await gw.stop()
    # nobody trusted: the header is ignored (and stripped)
    gw = await start_gateway(tmp_path / "b", config_tpl.format(
        up=upstream.url, ca=pki.ca_file, trusted="10.0.0.1"), policy)
    try:
        async with aiohttp.ClientSession() as s, s.get(
            gw.url() + "/x", headers={"X-Forwarded-Client-Cert": xfcc_uri}
        ) as r:
            assert r.status == 401
            assert (await r.json())["reason"] == "authn.missing"
    finally:
        await gw.stop()
