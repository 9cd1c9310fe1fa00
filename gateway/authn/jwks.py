"""JWT signing keys per trust domain or issuer: from a JWKS file, or an https URL (RFC 7517).

A remote JWKS is cached as its ``Cache-Control: max-age`` says (bounded), and refetched early
only when a token names an unknown ``kid``, at most once per ``min_refresh`` seconds: an attacker
sending random kids cannot make us hammer the key server.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp

from gateway.authn.jose import Jws, key_from_jwk, verify_signature
from gateway.clock import Clock
from gateway.errors import AuthnError, Reason

log = logging.getLogger("wimse_gateway.jwks")


class KeySet:
    """Parsed JWKS: signing keys by kid, with key objects built once per (kid, alg)."""

    def __init__(self, jwks: dict[str, Any]) -> None:
        keys = jwks.get("keys")
        if not isinstance(keys, list):
            raise ValueError("a JWKS has a `keys` list")
        self.jwks = [k for k in keys if isinstance(k, dict) and k.get("use", "sig") == "sig"]
        self._objects: dict[tuple[int, str], Any] = {}

    def kids(self) -> set[str]:
        return {k["kid"] for k in self.jwks if isinstance(k.get("kid"), str)}

    def verify(self, jws: Jws, alg: str, status: int | None = None) -> bool:
        """True if a key selected by ``kid`` verifies the signature. Unknown kid: False."""
        kid = jws.header.get("kid")
        if kid is not None:
            candidates = [i for i, k in enumerate(self.jwks) if k.get("kid") == kid]
        else:
            # RFC 7517 4.5: without kid the choice must be unambiguous.
            candidates = [i for i, k in enumerate(self.jwks)
                          if k.get("alg") in (None, alg)]
            if len(candidates) != 1:
                raise AuthnError(Reason.AUTHN_UNTRUSTED, "token has no kid and the key set has "
                                 "no single candidate", status_override=status)
        for i in candidates:
            key = self._objects.get((i, alg))
            if key is None:
                try:
                    key = key_from_jwk(self.jwks[i], alg)
                except ValueError:
                    continue  # a key of another type: not this one
                self._objects[(i, alg)] = key
            if verify_signature(jws, alg, key):
                return True
        return False

    def has_kid(self, kid: str | None) -> bool:
        return kid is None or any(k.get("kid") == kid for k in self.jwks)


class StaticKeySource:
    """Keys from a file (reloaded with the config)."""

    def __init__(self, keyset: KeySet) -> None:
        self.keyset = keyset

    @classmethod
    def from_file(cls, path: Path) -> StaticKeySource:
        return cls(KeySet(json.loads(path.read_text())))

    async def current(self, kid: str | None) -> KeySet:
        return self.keyset


_MAX_AGE = re.compile(r"max-age=(\d+)")


class RemoteKeySource:
    """Keys from an https URL, cached, refreshed on an unknown kid at most once per interval."""

    def __init__(self, url: str, clock: Clock, *, min_refresh: float = 60.0,
                 max_cache: float = 3600.0, default_cache: float = 300.0,
                 ssl: Any = None, timeout: float = 5.0) -> None:
        self.url = url
        self.clock = clock
        self.min_refresh = min_refresh
        self.max_cache = max_cache
        self.default_cache = default_cache
        self.ssl = ssl
        self.timeout = timeout
        self.fetches = 0
        self._keyset: KeySet | None = None
        self._expires = 0.0
        self._last_fetch = -1e18
        self._lock = asyncio.Lock()

    async def current(self, kid: str | None) -> KeySet:
        now = self.clock.monotonic()
        ks = self._keyset
        stale = ks is None or now >= self._expires
        unknown = ks is not None and not ks.has_kid(kid)
        if stale or (unknown and now - self._last_fetch >= self.min_refresh):
            async with self._lock:
                # someone else may have refreshed while we waited
                now = self.clock.monotonic()
                if self._keyset is ks and (stale or now - self._last_fetch >= self.min_refresh):
                    await self._fetch()
        if self._keyset is None:
            raise AuthnError(Reason.AUTHN_UNTRUSTED, "signing keys unavailable")
        return self._keyset

    async def _fetch(self) -> None:
        self._last_fetch = self.clock.monotonic()
        self.fetches += 1
        try:
            timeout = aiohttp.ClientTimeout(total=self.timeout)
            async with aiohttp.ClientSession(timeout=timeout) as s, s.get(
                self.url, ssl=self.ssl if self.ssl is not None else True
            ) as r:
                if r.status != 200:
                    raise ValueError(f"HTTP {r.status}")
                body = await r.content.read(1024 * 1024)
                cache = self.default_cache
                m = _MAX_AGE.search(r.headers.get("Cache-Control", ""))
                if m:
                    cache = min(float(m.group(1)), self.max_cache)
            self._keyset = KeySet(json.loads(body))
            self._expires = self.clock.monotonic() + max(cache, self.min_refresh)
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            log.warning("JWKS fetch from %s failed: %s", self.url, exc)
            # keep serving the keys we had; try again after min_refresh
            self._expires = self.clock.monotonic() + self.min_refresh


KeySource = StaticKeySource | RemoteKeySource


async def verify_with_source(jws: Jws, alg: str, source: KeySource,
                             err: Callable[[Reason, str], AuthnError]) -> None:
    """The kid must be in the source's keys and one of them must verify; ``err`` makes the
    error, so each caller keeps its own status and wording."""
    kid = jws.header.get("kid")
    keyset = await source.current(kid if isinstance(kid, str) else None)
    if isinstance(kid, str) and not keyset.has_kid(kid):
        raise err(Reason.AUTHN_UNKNOWN_KEY, "token signed with an unknown key")
    try:
        ok = keyset.verify(jws, alg)
    except AuthnError as exc:
        raise err(exc.reason, exc.detail) from None
    if not ok:
        raise err(Reason.AUTHN_BAD_SIGNATURE, "token signature does not verify")
