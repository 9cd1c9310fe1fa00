"""Credential cache behaviour and config loading (no sockets)."""

from __future__ import annotations

import asyncio
import textwrap
from pathlib import Path

import pytest

from gateway.clock import FrozenClock
from gateway.config.load import load_config
from gateway.config.source import ConfigError
from gateway.errors import ExchangeError, Reason, reason_catalog
from gateway.exchange.cache import CredentialCache
from gateway.model import Credential


def cred(clock: FrozenClock, lifetime: float = 100.0, tag: str = "t") -> Credential:
    return Credential(tag, "Bearer", "urn:x", clock.now() + lifetime, False, tag, "iss")


async def test_one_exchange_in_flight_per_key() -> None:
    clock = FrozenClock()
    cache = CredentialCache(clock)
    calls = 0
    gate = asyncio.Event()

    async def fetch() -> Credential:
        nonlocal calls
        calls += 1
        await gate.wait()
        return cred(clock)

    waiters = [asyncio.create_task(cache.get("k", fetch)) for _ in range(100)]
    await asyncio.sleep(0)
    waiters[0].cancel()  # a caller that hangs up does not cancel the exchange for the others
    gate.set()
    results = await asyncio.gather(*waiters[1:])
    assert calls == 1 and all(r.token == "t" for r in results)
    assert cache.stats.misses == 100
    assert (await cache.get("k", fetch)).token == "t" and calls == 1
    assert cache.stats.hits == 1


async def test_refresh_ahead_serves_the_old_credential_meanwhile() -> None:
    clock = FrozenClock()
    cache = CredentialCache(clock, refresh_ahead=0.5)
    n = 0
    slow = asyncio.Event()

    async def fetch() -> Credential:
        nonlocal n
        n += 1
        if n > 1:
            await slow.wait()
        return cred(clock, tag=f"v{n}")

    assert (await cache.get("k", fetch)).token == "v1"
    clock.advance(60)  # past half the lifetime: refresh starts in the background
    assert (await cache.get("k", fetch)).token == "v1"  # no request waits on the refresh
    assert cache.stats.refreshes == 1
    slow.set()
    await asyncio.sleep(0.01)
    assert (await cache.get("k", fetch)).token == "v2"
    assert n == 2


async def test_failures_are_cached_briefly_and_expiry_respected() -> None:
    clock = FrozenClock()
    cache = CredentialCache(clock, negative_ttl=2.0, expiry_margin=5.0)
    n = 0

    async def broken() -> Credential:
        nonlocal n
        n += 1
        raise ExchangeError(Reason.EXCHANGE_STS_UNAVAILABLE)

    for _ in range(5):
        with pytest.raises(ExchangeError):
            await cache.get("k", broken)
    assert n == 1
    clock.advance(3)
    with pytest.raises(ExchangeError):
        await cache.get("k", broken)
    assert n == 2

    async def short() -> Credential:
        return cred(clock, lifetime=10.0, tag="short")

    await cache.get("s", short)
    clock.advance(6)  # within the expiry margin: never handed out
    calls_before = cache.stats.misses
    await cache.get("s", short)
    assert cache.stats.misses == calls_before + 1


async def test_cached_credential_never_outlives_a_shorter_caller_credential() -> None:
    clock = FrozenClock()
    cache = CredentialCache(clock)
    await cache.get("k", lambda: _ret(cred(clock, 100.0, "long")))
    got = await cache.get("k", lambda: _ret(cred(clock, 20.0, "short")),
                          not_after=clock.now() + 30)
    assert got.token == "short"


async def _ret(c: Credential) -> Credential:
    return c


async def test_lru_bound() -> None:
    clock = FrozenClock()
    cache = CredentialCache(clock, max_entries=10)
    for i in range(25):
        await cache.get(i, lambda i=i: _ret(cred(clock, tag=str(i))))
    assert len(cache) == 10 and cache.stats.evictions == 15


def test_config_paths_are_relative_to_the_file(tmp_path: Path) -> None:
    d = tmp_path / "etc"
    d.mkdir()
    (d / "p.yaml").write_text("rules: [{id: all, action: deny}]\n")
    (d / "g.yaml").write_text(textwrap.dedent("""\
        listeners: [{name: a, port: 0}]
        policy: {files: [p.yaml]}
        """))
    lc = load_config(d / "g.yaml")
    assert lc.path("p.yaml") == d / "p.yaml"


def test_config_type_errors_point_at_lines(tmp_path: Path) -> None:
    (tmp_path / "g.yaml").write_text(textwrap.dedent("""\
        listeners:
          - name: a
            port: "8080"
          - name: a
            port: 70000
        routes:
          - {name: r, upstream: "ftp://x"}
        policy: {files: [p.yaml]}
        """))
    with pytest.raises(ConfigError) as exc:
        load_config(tmp_path / "g.yaml")
    text = str(exc.value)
    assert "g.yaml:3: listeners[0].port" in text
    assert "g.yaml:5: listeners[1].port" in text
    (tmp_path / "g.yaml").write_text((tmp_path / "g.yaml").read_text()
                                     .replace('"8080"', "8080").replace("70000", "8081"))
    with pytest.raises(ConfigError) as exc:
        load_config(tmp_path / "g.yaml")
    text = str(exc.value)
    assert "g.yaml:4: listeners[1].name: duplicate name 'a'" in text
    assert "g.yaml:7: routes[0].upstream: expected an http:// or https:// URL" in text
    assert "g.yaml:8: policy.files[0]: file not found: p.yaml" in text


def test_reason_catalog_is_consistent() -> None:
    codes = [r["reason"] for r in reason_catalog()]
    assert len(codes) == len(set(codes))
    for r in reason_catalog():
        stage = r["reason"].split(".")[0]
        assert stage in {"request", "authn", "policy", "exchange", "upstream", "internal",
                         "unavailable"}
        assert 400 <= r["status"] < 600


def test_rotating_keys_publish_before_they_sign(tmp_path: Path) -> None:
    import jwt

    from gateway.keys import RotatingKeys

    clock = FrozenClock(10_000.0)  # slot 100 with a 100 s period
    keys = RotatingKeys(tmp_path / "k", period=100, overlap=20, clock=clock)

    def kid(slot: int) -> str:
        return keys._key(slot).kid

    signing, published = keys.current()
    assert signing.kid == kid(100) and [k.kid for k in published] == [kid(100), kid(99)]
    clock.advance(85)  # 15 s before the switch: the next key is published, not signing
    signing, published = keys.current()
    assert signing.kid == kid(100)
    assert [k.kid for k in published] == [kid(100), kid(99), kid(101)]
    snapshot = {k.kid: k for k in published}  # a verifier fetches the JWKS now
    clock.advance(15)
    signing, published = keys.current()
    assert signing.kid == kid(101) and [k.kid for k in published] == [kid(101), kid(100)]
    token = jwt.encode({"sub": "x"}, signing.private_key, algorithm="ES256",
                       headers={"kid": signing.kid})
    kid = jwt.get_unverified_header(token)["kid"]
    pub = jwt.PyJWK(snapshot[kid].public_jwk).key  # the old snapshot knows the new key
    assert jwt.decode(token, pub, algorithms=["ES256"])["sub"] == "x"
    # the same slot gives the same key to every process; old slots are deleted
    again = RotatingKeys(tmp_path / "k", period=100, overlap=20, clock=clock).current()[0]
    assert again.public_jwk == signing.public_jwk
    clock.advance(300)
    keys.current()
    assert sorted(p.name for p in (tmp_path / "k").glob("*.pem")) == [
        "issuer-slot-103.pem", "issuer-slot-104.pem"]
