"""JWT -> AWS translation against a moto server (see the peers notes): the gateway calls
AssumeRoleWithWebIdentity with the caller's JWT, signs the S3 request with SigV4 (botocore),
and moto checks the signature. moto authenticates every request after the first
INITIAL_NO_AUTH_ACTION_COUNT, and it answers an unsigned AssumeRoleWithWebIdentity only within
that count, so each test starts its own server with a count of setup calls + one exchange: the
gateway's exchange is the last unchecked request and every S3 request after it is checked."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from tests.functional.test_process import free_port
from tests.helpers.servers import start_gateway
from tests.helpers.tokens import Key

SUB = "spiffe://example.org/ns/shop/sa/frontend"
GW_AUD = "spiffe://example.org/gw"
BUCKET = "orders-bucket"
SETUP_CALLS = 4  # create_role, put_role_policy, create_bucket, put_object

boto3 = pytest.importorskip("boto3") if not os.environ.get("CI") else __import__("boto3")


@contextmanager
def moto_server(exchanges: int) -> Iterator[tuple[str, str]]:
    port = free_port()
    env = {**os.environ, "INITIAL_NO_AUTH_ACTION_COUNT": str(SETUP_CALLS + exchanges)}
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p",
                             str(port)], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), 0.2).close()
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise AssertionError("moto server did not start") from None
                time.sleep(0.1)
        kw = {"endpoint_url": url, "region_name": "us-east-1",
              "aws_access_key_id": "AKIDSETUP", "aws_secret_access_key": "setup"}
        iam, s3 = boto3.client("iam", **kw), boto3.client("s3", **kw)
        trust = {"Version": "2012-10-17", "Statement": [{
            "Effect": "Allow", "Principal": {"Federated": "example.org"},
            "Action": "sts:AssumeRoleWithWebIdentity"}]}
        arn = iam.create_role(RoleName="shop-frontend",
                              AssumeRolePolicyDocument=json.dumps(trust))["Role"]["Arn"]
        iam.put_role_policy(RoleName="shop-frontend", PolicyName="s3", PolicyDocument=json.dumps(
            {"Version": "2012-10-17",
             "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}))
        s3.create_bucket(Bucket=BUCKET)
        s3.put_object(Bucket=BUCKET, Key="report.txt", Body=b"quarterly numbers")
        yield url, arn
    finally:
        proc.terminate()
        proc.wait(10)


@asynccontextmanager
async def tampering_proxy(target: str) -> AsyncIterator[str]:
    """A hop that changes the path of a signed request, as an attacker on the way would."""
    async def handler(request: web.Request) -> web.Response:
        headers = {k: v for k, v in request.headers.items() if k.lower() not in ("host",)}
        path = request.raw_path.replace("report.txt", "other.txt")
        async with aiohttp.ClientSession() as s, s.request(
                request.method, target + path, headers=headers, data=await request.read()) as r:
            return web.Response(status=r.status, body=await r.read())

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


def _config(tmp: Path, s3_url: str, tamper_url: str) -> str:
    return f"""
listeners: [{{name: main, port: 0}}]
routes:
  - {{name: tampered, upstream: "{tamper_url}", match: {{path_prefix: /tampered/}},
     strip_prefix: true}}
  - {{name: s3, upstream: "{s3_url}"}}
trust_domains: {{example.org: {{jwks: {tmp}/td.jwks}}}}
authentication: {{audiences: [{GW_AUD}]}}
admin: null
policy: {{files: [policy.yaml], watch: false}}
"""


def _policy(arn: str, s3_url: str) -> str:
    return f"""
profiles:
  s3:
    exchange: {{type: aws, role_arn: "{arn}", region: us-east-1, endpoint: "{s3_url}"}}
    inject: [{{type: aws_sigv4, service: s3, region: us-east-1}}]
  s3-streamed:
    exchange: {{type: aws, role_arn: "{arn}", region: us-east-1, endpoint: "{s3_url}"}}
    inject: [{{type: aws_sigv4, service: s3, region: us-east-1, payload: unsigned}}]
rules:
  - {{id: short-ok, destination: {{path_prefix: /{BUCKET}/short/}}, caller: {{methods: [bearer]}},
     action: exchange, profile: s3-streamed, allow_lifetime_extension: true}}
  - {{id: s3, caller: {{methods: [bearer]}}, action: exchange, profile: s3}}
  - {{id: default-deny, action: deny}}
"""


def _trust_domain(tmp: Path) -> Key:
    """The JWT-SVID issuer the gateway trusts (td.jwks, named by `_config`)."""
    td = Key.es256("td")
    (tmp / "td.jwks").write_text(json.dumps({"keys": [td.jwk]}))
    return td


def _caller(td: Key, lifetime: int) -> dict[str, str]:
    token = td.sign({"sub": SUB, "aud": GW_AUD, "exp": int(time.time()) + lifetime,
                     "amr": ["pwd"], "team": "shop", "jti": os.urandom(8).hex()})
    return {"Authorization": f"Bearer {token}"}


async def test_jwt_to_aws_sigv4_checked_by_moto(tmp_path: Path) -> None:
    td = _trust_domain(tmp_path)
    with moto_server(exchanges=1) as (s3_url, arn):
        async with tampering_proxy(s3_url) as tamper_url:
            gw = await start_gateway(tmp_path, _config(tmp_path, s3_url, tamper_url),
                                     _policy(arn, s3_url))
            try:
                caller = _caller(td, 3600)
                async with aiohttp.ClientSession() as s:
                    async with s.get(f"{gw.url()}/{BUCKET}/report.txt", headers=caller) as r:
                        assert r.status == 200, await r.text()
                        assert await r.read() == b"quarterly numbers"
                    # a signed payload: moto checks the body hash too
                    async with s.put(f"{gw.url()}/{BUCKET}/upload.txt", headers=caller,
                                     data=b"new figures") as r:
                        assert r.status == 200, await r.text()
                    async with s.get(f"{gw.url()}/{BUCKET}/upload.txt", headers=caller) as r:
                        assert r.status == 200 and await r.read() == b"new figures"
                    # altered after signing: moto refuses it
                    async with s.get(f"{gw.url()}/tampered/{BUCKET}/report.txt",
                                     headers=caller) as r:
                        assert r.status == 403, await r.text()
                        assert "SignatureDoesNotMatch" in await r.text()
                    # a caller whose JWT expires before AWS's 900 s minimum is refused...
                    async with s.get(f"{gw.url()}/{BUCKET}/report.txt",
                                     headers=_caller(td, 300)) as r:
                        assert r.status == 403
                        assert (await r.json())["reason"] == "policy.lifetime_extension"
                # the gateway made one STS call; moto checked every S3 request after it
                recs = [x for x in gw.audit.records if x.get("profile") == "s3"]
                ex = recs[0]["exchange"]
                assert ex["out"]["type"] == "urn:wimse-gateway:token-type:aws-sts-credentials"
                assert ex["claims_carried"] == ["aud", "sub", "amr"]
                assert ex["claims_dropped"] == ["team"]
                assert 900 <= ex["lifetime_granted"] <= ex["caller_remaining"]
                assert recs[0]["upstream_status"] == 200
                assert ex["out"]["issuer"].endswith("assumed-role/shop-frontend/"
                                                    "example.org-ns-shop-sa-frontend")
                assert recs[-1]["reason"] == "policy.lifetime_extension"
                text = "\n".join(gw.audit.lines)
                assert caller["Authorization"][7:] not in text and "ASIA" not in text
            finally:
                await gw.stop()


async def test_short_lived_caller_with_the_explicit_flag(tmp_path: Path) -> None:
    td = _trust_domain(tmp_path)
    with moto_server(exchanges=1) as (s3_url, arn):
        gw = await start_gateway(tmp_path, _config(tmp_path, s3_url, s3_url),
                                 _policy(arn, s3_url))
        try:
            caller = _caller(td, 300)
            async with aiohttp.ClientSession() as s:
                async with s.get(f"{gw.url()}/{BUCKET}/short/x", headers=caller) as r:
                    # authenticated and signed; the object does not exist
                    assert r.status == 404, await r.text()
                    assert "NoSuchKey" in await r.text()
                # an unsigned payload streams through (S3 accepts UNSIGNED-PAYLOAD)
                async def chunks() -> AsyncIterator[bytes]:
                    for _ in range(5):
                        yield b"z" * 100_000
                async with s.put(f"{gw.url()}/{BUCKET}/short/blob", headers=caller,
                                 data=chunks()) as r:
                    assert r.status == 200, await r.text()
                async with s.get(f"{gw.url()}/{BUCKET}/short/blob", headers=caller) as r:
                    assert r.status == 200 and len(await r.read()) == 500_000
            assert gw.audit.records[-1]["exchange"]["aws_payload"] == "unsigned"
            ex = gw.audit.records[0]["exchange"]
            assert ex["lifetime_granted"] >= 899 and ex["caller_remaining"] <= 300
        finally:
            await gw.stop()


def test_session_names_fit_aws_rules() -> None:
    from gateway.exchange.aws import session_name

    assert session_name(SUB) == "example.org-ns-shop-sa-frontend"
    long_id = "spiffe://example.org/" + "a" * 100
    a, b = session_name(long_id), session_name(long_id + "b")
    assert len(a) == 64 and a != b
    assert session_name("spiffe://x/ü ß") == "x-"  # ASCII word characters, 2 at least
    assert session_name("spiffe://ü") == "caller"




async def test_unreachable_aws_sts_is_a_clear_503(tmp_path: Path) -> None:
    td = _trust_domain(tmp_path)
    dead = f"http://127.0.0.1:{free_port()}"
    arn = "arn:aws:iam::123456789012:role/shop-frontend"
    gw = await start_gateway(tmp_path, _config(tmp_path, dead, dead), _policy(arn, dead))
    try:
        caller = _caller(td, 3600)
        async with aiohttp.ClientSession() as s:
            for _ in range(2):  # the second is answered from the remembered failure
                async with s.get(f"{gw.url()}/{BUCKET}/x", headers=caller) as r:
                    body = await r.json()
                    assert r.status == 503, body
                    assert body["reason"] == "exchange.sts_unavailable"
                    assert "Bearer" not in json.dumps(body)
    finally:
        await gw.stop()


def test_minted_web_identity_token_names_the_caller(tmp_path: Path) -> None:
    """web_identity: gateway_token presents a JWT the gateway signs for the verified caller,
    with the configured audience and no longer life than the caller's credential."""
    import jwt as pyjwt
    from cryptography.hazmat.primitives.asymmetric import ec

    from gateway.clock import SystemClock
    from gateway.config.policy import AwsExchangeConfig
    from gateway.exchange.aws import AwsExchanger
    from gateway.exchange.sts import GatewayTokenMinter
    from gateway.keys import SigningKey
    from gateway.model import AuthnMethod, Caller

    key = SigningKey.from_private_key(ec.generate_private_key(ec.SECP256R1()))
    minter = GatewayTokenMinter("https://gw.example.org", key, "gw", SystemClock())
    cfg = AwsExchangeConfig(type="aws", role_arn="arn:aws:iam::123456789012:role/x",
                            web_identity="gateway_token", audience="sts.amazonaws.com")
    ex = AwsExchanger(cfg, SystemClock(), minter)
    caller = Caller(identity=SUB, trust_domain="example.org", method=AuthnMethod.MTLS,
                    proof_of_possession=True, expires_at=time.time() + 120)
    token = ex.web_identity_token(caller, 1800)
    claims = pyjwt.decode(token, key.private_key.public_key(), algorithms=["ES256"],
                          audience="sts.amazonaws.com")
    assert claims["sub"] == SUB and claims["iss"] == "https://gw.example.org"
    assert claims["exp"] <= caller.expires_at


async def test_aws_sts_refusals_and_nonsense(tmp_path: Path) -> None:
    """An STS that refuses the caller (403 AccessDenied) and one that answers garbage: each a
    clear refusal with its own reason, and nothing of the answer echoed back."""
    answers = {"mode": "denied"}

    async def sts(request: web.Request) -> web.Response:
        await request.read()
        if answers["mode"] == "denied":
            return web.Response(status=403, content_type="text/xml", text=(
                '<ErrorResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/"><Error>'
                "<Type>Sender</Type><Code>AccessDenied</Code><Message>Not authorized "
                "SECRET-DETAIL</Message></Error><RequestId>r1</RequestId></ErrorResponse>"))
        return web.Response(status=200, content_type="text/xml", text="<html>SECRET-DETAIL")

    app = web.Application()
    app.router.add_post("/", sts)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    td = _trust_domain(tmp_path)
    arn = "arn:aws:iam::123456789012:role/shop-frontend"
    gw = await start_gateway(tmp_path, _config(tmp_path, url, url), _policy(arn, url))
    try:
        async with aiohttp.ClientSession() as s:
            for mode, status, reason in (("denied", 403, "exchange.sts_refused"),
                                         ("garbage", 502, "exchange.bad_response")):
                answers["mode"] = mode
                async with s.get(f"{gw.url()}/{BUCKET}/x", headers=_caller(td, 3600)) as r:
                    text = await r.text()
                    assert r.status == status, text
                    assert json.loads(text)["reason"] == reason
                    assert "SECRET-DETAIL" not in text
    finally:
        await gw.stop()
        await runner.cleanup()
