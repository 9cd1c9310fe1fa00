"""TLS and mTLS listeners, driven by curl (a TLS client we did not write)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from gateway.ca import CertificateAuthority
from tests.conftest import Pki
from tests.helpers.servers import RunningGateway, Upstream, start_gateway

POLICY = """
rules:
  - id: frontend
    caller: {identity: spiffe://example.org/ns/shop/sa/frontend, methods: [mtls]}
    action: forward
  - id: default-deny
    action: deny
"""


def config(pki: Pki, upstream: Upstream, client_cert: str, extra_td: str = "") -> str:
    return f"""
listeners:
  - name: main
    port: 0
    tls:
      cert: {pki.dir}/server.pem
      key: {pki.dir}/server.key
      client_cert: {client_cert}
routes:
  - name: api
    upstream: {upstream.url}
trust_domains:
  example.org: {{x509_bundle: {pki.ca_file}}}
{extra_td}
admin: null
policy: {{files: [policy.yaml], watch: false}}
"""


async def curl(gw: RunningGateway, pki: Pki, *args: str, path: str = "/x") -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        "curl", "-sS", "--cacert", str(pki.ca_file), "-w", "\n%{http_code}", *args,
        gw.url() + path, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await proc.communicate()
    if proc.returncode != 0:
        return -proc.returncode, err.decode()
    body, _, code = out.decode().rpartition("\n")
    return int(code), body


async def test_required_client_cert(tmp_path: Path, pki: Pki, upstream: Upstream) -> None:
    cert, key = pki.svid("frontend", "spiffe://example.org/ns/shop/sa/frontend")
    gw = await start_gateway(tmp_path, config(pki, upstream, "required"), POLICY)
    try:
        code, body = await curl(gw, pki, "--cert", str(cert), "--key", str(key))
        assert code == 200, body
        code, _err = await curl(gw, pki)
        assert code < 0, "the handshake must fail without a client certificate"
        # a certificate from a CA we do not trust fails the handshake too
        rogue = CertificateAuthority.create("example.org")
        rogue.issue_svid("spiffe://example.org/ns/shop/sa/frontend").write(
            tmp_path / "rogue.pem", tmp_path / "rogue.key")
        code, _ = await curl(gw, pki, "--cert", str(tmp_path / "rogue.pem"),
                             "--key", str(tmp_path / "rogue.key"))
        assert code < 0
        # the gateway keeps serving after failed handshakes
        code, _ = await curl(gw, pki, "--cert", str(cert), "--key", str(key))
        assert code == 200
        assert upstream.seen[-1].header("x-forwarded-client-cert") is None
    finally:
        await gw.stop()


async def test_optional_client_cert(tmp_path: Path, pki: Pki, upstream: Upstream) -> None:
    cert, key = pki.svid("frontend", "spiffe://example.org/ns/shop/sa/frontend")
    other, other_key = pki.svid("batch", "spiffe://example.org/ns/shop/sa/batch")
    gw = await start_gateway(tmp_path, config(pki, upstream, "optional"), POLICY)
    try:
        code, body = await curl(gw, pki, "--cert", str(cert), "--key", str(key))
        assert code == 200
        code, body = await curl(gw, pki)
        assert code == 401 and json.loads(body)["reason"] == "authn.missing"
        code, body = await curl(gw, pki, "--cert", str(other), "--key", str(other_key))
        assert code == 403 and json.loads(body)["reason"] == "policy.denied"
        rec = gw.audit.records[-1]
        assert rec["caller"]["identity"] == "spiffe://example.org/ns/shop/sa/batch"
        assert rec["caller"]["method"] == "mtls" and rec["rule"] == "default-deny"
    finally:
        await gw.stop()


async def test_svid_rules_enforced_after_handshake(
    tmp_path: Path, pki: Pki, upstream: Upstream
) -> None:
    """Certificates that pass TLS chain checks but are not valid X509-SVIDs get a reason."""
    two, two_key = pki.svid("two", ["spiffe://example.org/a", "spiffe://example.org/b"])
    bad_path, bad_key = pki.svid("badpath", "spiffe://example.org/a//b")
    no_ds, no_ds_key = pki.svid("nods", "spiffe://example.org/ns/shop/sa/frontend",
                                digital_signature=False)
    gw = await start_gateway(tmp_path, config(pki, upstream, "optional"), POLICY)
    try:
        for cert, key, reason in [
            (two, two_key, "authn.invalid_identity"),
            (bad_path, bad_key, "authn.invalid_identity"),
        ]:
            code, body = await curl(gw, pki, "--cert", str(cert), "--key", str(key))
            assert code == 401, body
            assert json.loads(body)["reason"] == reason
        # without digitalSignature the client cannot even sign the TLS 1.3 CertificateVerify
        code, _ = await curl(gw, pki, "--cert", str(no_ds), "--key", str(no_ds_key))
        assert code < 0
    finally:
        await gw.stop()


async def test_cross_trust_domain_impersonation_refused(
    tmp_path: Path, pki: Pki, upstream: Upstream
) -> None:
    """CA of partner.org (trusted for partner.org) issues a cert claiming example.org."""
    partner = CertificateAuthority.create("partner.org")
    (tmp_path / "partner.pem").write_bytes(partner.cert_pem())
    partner.issue_svid("spiffe://example.org/ns/shop/sa/frontend").write(
        tmp_path / "evil.pem", tmp_path / "evil.key")
    partner.issue_svid("spiffe://partner.org/billing").write(
        tmp_path / "ok.pem", tmp_path / "ok.key")
    extra = f"  partner.org: {{x509_bundle: {tmp_path / 'partner.pem'}}}"
    gw = await start_gateway(tmp_path, config(pki, upstream, "optional", extra), POLICY)
    try:
        code, body = await curl(gw, pki, "--cert", str(tmp_path / "evil.pem"),
                                "--key", str(tmp_path / "evil.key"))
        assert code == 401 and json.loads(body)["reason"] == "authn.untrusted"
        code, body = await curl(gw, pki, "--cert", str(tmp_path / "ok.pem"),
                                "--key", str(tmp_path / "ok.key"))
        assert code == 403  # authenticated as partner.org, which no rule allows
    finally:
        await gw.stop()


async def test_bundle_reload_applies_to_new_handshakes(
    tmp_path: Path, pki: Pki, upstream: Upstream
) -> None:
    newca = CertificateAuthority.create("example.org")
    newca.issue_svid("spiffe://example.org/ns/shop/sa/frontend").write(
        tmp_path / "new.pem", tmp_path / "new.key")
    gw = await start_gateway(tmp_path, config(pki, upstream, "required"), POLICY)
    try:
        args = ("--cert", str(tmp_path / "new.pem"), "--key", str(tmp_path / "new.key"))
        code, _ = await curl(gw, pki, *args)
        assert code < 0  # not trusted yet
        # the trust domain's bundle gains the new CA (rotation), then a reload
        pki.ca_file.write_bytes(pki.ca_file.read_bytes() + newca.cert_pem())
        assert await gw.gateway.reload()
        code, body = await curl(gw, pki, *args)
        assert code == 200, body
    finally:
        await gw.stop()
