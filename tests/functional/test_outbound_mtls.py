"""exchange x509 + inject mtls: the gateway issues a short-lived certificate for the caller's
identity and presents it to an upstream that requires client certificates (a real TLS
handshake, verified against the root; the gateway's intermediate travels in the chain)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import aiohttp
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from gateway.keys import write_private_key
from tests.conftest import Pki
from tests.helpers.servers import start_gateway, start_upstream
from tests.helpers.tokens import Key

SUB = "spiffe://example.org/ns/shop/sa/frontend"
GW_AUD = "spiffe://example.org/gw"

POLICY = """
profiles:
  cert:
    exchange: {type: x509, lifetime: 1800}
    inject: [{type: mtls}]
rules:
  - {id: mtls-callers, destination: {path_prefix: /pop/}, caller: {methods: [mtls]},
     action: exchange, profile: cert}
  - {id: bearer-callers, destination: {path_prefix: /bearer/}, caller: {methods: [bearer]},
     action: exchange, profile: cert}
  - {id: bearer-upgraded, destination: {path_prefix: /upgrade/}, caller: {methods: [bearer]},
     action: exchange, profile: cert, allow_assurance_upgrade: true}
  - {id: default-deny, action: deny}
"""


def _config(pki: Pki, upstream: str, *, upstream_ca: bool = True, jwks: str | None = None
            ) -> str:
    """A gateway with an mTLS listener and `issuer.ca` = a fresh intermediate under the root."""
    inter = pki.ca.intermediate("example.org")
    ca_cert, ca_key = pki.dir / "issuing-ca.pem", pki.dir / "issuing-ca.key"
    ca_cert.write_bytes(inter.cert_pem())
    ca_key.unlink(missing_ok=True)
    write_private_key(ca_key, inter.key)
    route_tls = f", tls: {{ca: {pki.ca_file}}}" if upstream_ca else ""
    td_jwks = f", jwks: {jwks}" if jwks else ""
    authn = f"authentication: {{audiences: [{GW_AUD}]}}" if jwks else ""
    return f"""
listeners:
  - name: main
    port: 0
    tls: {{cert: {pki.dir}/server.pem, key: {pki.dir}/server.key, client_cert: optional}}
routes: [{{name: api, upstream: "{upstream}"{route_tls}}}]
trust_domains: {{example.org: {{x509_bundle: {pki.ca_file}{td_jwks}}}}}
{authn}
issuer:
  issuer: https://gw.example.org
  keys: [{{file: {pki.dir}/issuer.key}}]
  ca: {{cert: {ca_cert}, key: {ca_key}}}
admin: null
policy: {{files: [policy.yaml], watch: false}}
"""


async def test_caller_certificate_presented_to_an_mtls_upstream(tmp_path: Path, pki: Pki) -> None:
    td = Key.es256("td")
    (tmp_path / "td.jwks").write_text(json.dumps({"keys": [td.jwk]}))
    up = await start_upstream(pki.server_context(require_client=True))
    svid_cert, svid_key = pki.svid("frontend", SUB)
    config = _config(pki, up.url, jwks="td.jwks")
    gw = await start_gateway(tmp_path, config, POLICY)
    try:
        async with aiohttp.ClientSession() as s:
            ctx = pki.client_context(svid_cert, svid_key)
            for _ in range(2):
                async with s.get(gw.url() + "/pop/orders", ssl=ctx) as r:
                    assert r.status == 200, await r.text()
            first, second = up.seen[-2].tls_client_cert, up.seen[-1].tls_client_cert
            assert first is not None and first == second  # cached, one certificate per caller
            leaf = x509.load_der_x509_certificate(first)
            sans = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
            assert sans.get_values_for_type(x509.UniformResourceIdentifier) == [SUB]
            eku = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
            assert list(eku) == [ExtendedKeyUsageOID.CLIENT_AUTH]
            assert not leaf.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
            assert leaf.issuer.rfc4514_string().endswith("intermediate CA")
            svid_exp = x509.load_pem_x509_certificate(svid_cert.read_bytes()).not_valid_after_utc
            assert leaf.not_valid_after_utc <= svid_exp  # never outlives the caller's SVID
            assert leaf.not_valid_after_utc.timestamp() <= time.time() + 1800 + 5

            # A bearer caller's credential would be upgraded to a key-bound one: refused...
            short = td.sign({"sub": SUB, "aud": GW_AUD, "exp": int(time.time()) + 600,
                             "team": "shop"})
            auth = {"Authorization": f"Bearer {short}"}
            async with s.get(gw.url() + "/bearer/x", ssl=pki.client_context(), headers=auth) as r:
                assert r.status == 403
                assert (await r.json())["reason"] == "policy.assurance_upgrade"
            # ...unless the rule says so, and then it lives no longer than the bearer token.
            async with s.get(gw.url() + "/upgrade/x", ssl=pki.client_context(),
                             headers=auth) as r:
                assert r.status == 200, await r.text()
            leaf = x509.load_der_x509_certificate(up.seen[-1].tls_client_cert)
            assert leaf.not_valid_after_utc.timestamp() <= time.time() + 600 + 2
        rec = [x for x in gw.audit.records if x.get("rule") == "bearer-upgraded"][-1]
        ex = rec["exchange"]
        assert ex["out"]["type"] == "urn:wimse-gateway:token-type:x509-svid"
        assert ex["client_certificate"] == ex["out"]["jti"]
        assert ex["claims_carried"] == ["sub"] and "team" in ex["claims_dropped"]
        assert ex["lifetime_granted"] <= ex["caller_remaining"] + 1
        assert "BEGIN" not in "\n".join(gw.audit.lines)  # neither certificate nor key
    finally:
        await gw.stop()
        await up.close()


async def test_certificate_needs_an_https_upstream(tmp_path: Path, pki: Pki) -> None:
    up = await start_upstream()
    svid_cert, svid_key = pki.svid("frontend", SUB)
    config = _config(pki, up.url, upstream_ca=False)
    gw = await start_gateway(tmp_path, config, POLICY)
    try:
        async with aiohttp.ClientSession() as s, s.get(
                gw.url() + "/pop/x", ssl=pki.client_context(svid_cert, svid_key)) as r:
            assert r.status == 502
            assert (await r.json())["reason"] == "exchange.failed"
        assert up.seen == []
    finally:
        await gw.stop()
        await up.close()


async def test_pools_per_certificate_are_bounded() -> None:
    """Many callers' certificates make many pools; the oldest are closed, not kept forever."""
    import asyncio

    from gateway.config.models import TimeoutsConfig
    from gateway.proxy.forward import UpstreamPool
    from gateway.runtime import UpstreamSettings

    pool = UpstreamPool(4, max_sessions=3, close_delay=0.01)
    sessions = [pool.session(UpstreamSettings(TimeoutsConfig(), None, None, f"k{i}"))
                for i in range(5)]
    assert pool.session(UpstreamSettings(TimeoutsConfig(), None, None, "k4")) is sessions[4]
    await asyncio.sleep(0.05)
    assert [s.closed for s in sessions] == [True, True, False, False, False]
    await pool.close()
    assert all(s.closed for s in sessions)


async def test_identifiers_that_cannot_be_certified_are_refused(pki: Pki) -> None:
    import pytest

    from gateway.clock import SystemClock
    from gateway.config.policy import X509ExchangeConfig
    from gateway.errors import ExchangeError
    from gateway.exchange.x509 import X509Exchanger
    from gateway.model import AuthnMethod, Caller, Destination

    inter = pki.ca.intermediate("example.org")
    ex = X509Exchanger(X509ExchangeConfig(type="x509"), [inter.cert], inter.key, SystemClock())
    dest = Destination(url=__import__("yarl").URL("https://x.example/"), method="GET",
                       route="api", mode="reverse")
    for identity in ("spiffe://example.org/ns/ü", "spiffe://example.org/a\nb", "no-scheme"):
        caller = Caller(identity=identity, trust_domain="example.org", method=AuthnMethod.MTLS,
                        proof_of_possession=True, expires_at=time.time() + 600)
        with pytest.raises(ExchangeError) as exc:
            await ex.exchange(caller, dest, 600)
        assert exc.value.reason.code == "exchange.failed"


async def test_openssl_s_server_verifies_the_issued_certificate(tmp_path: Path, pki: Pki) -> None:
    """OpenSSL's own server (`s_server -Verify -verify_return_error`) checks the chain the
    gateway presents (issued leaf + intermediate) against the root and prints what it saw."""
    import asyncio

    from tests.functional.test_process import free_port

    port = free_port()
    server = await asyncio.create_subprocess_exec(
        "openssl", "s_server", "-accept", f"127.0.0.1:{port}", "-cert",
        str(pki.dir / "server.pem"), "-key", str(pki.dir / "server.key"), "-CAfile",
        str(pki.ca_file), "-Verify", "2", "-verify_return_error", "-www",
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
    svid_cert, svid_key = pki.svid("frontend", SUB)
    config = _config(pki, f"https://127.0.0.1:{port}")
    gw = await start_gateway(tmp_path, config, POLICY)
    try:
        for _ in range(50):  # s_server takes a moment to listen
            try:
                _, w = await asyncio.open_connection("127.0.0.1", port)
                w.close()
                break
            except OSError:
                await asyncio.sleep(0.1)
        async with aiohttp.ClientSession() as s, s.get(
                gw.url() + "/pop/orders", ssl=pki.client_context(svid_cert, svid_key)) as r:
            page = await r.text()
            assert r.status == 200, page
        assert "Verify return code: 0 (ok)" in page
        assert f"URI:{SUB}" in page
        assert "intermediate CA" in page  # the chain went along
    finally:
        await gw.stop()
        server.terminate()
        await server.wait()
