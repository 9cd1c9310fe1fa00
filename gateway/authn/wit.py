"""WIMSE Workload Identity Token + Workload Proof Token.

draft-ietf-wimse-workload-creds section 5.1 (WIT) and draft-ietf-wimse-wpt section 2 (WPT).
The WIT says who the workload is and which key it holds (``cnf.jwk``); the WPT, signed with
that key for this one request, proves possession. Failures answer 400, as the WIMSE drafts ask.
A verified WIT is cached by its hash until it expires, so a busy caller costs one signature
check per request (its WPT), not two. WPT results are never cached.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from gateway.authn.identifier import parse_workload_id
from gateway.authn.jose import (
    ASYMMETRIC,
    check_alg,
    key_from_jwk,
    numeric,
    parse_jws,
    typ_is,
    verify_signature,
)
from gateway.authn.jwks import KeySource, verify_with_source
from gateway.authn.replay import ReplayCache
from gateway.authn.request import normalize_uri, single_header
from gateway.clock import Clock
from gateway.errors import AuthnError, Reason
from gateway.keys import jwk_thumbprint, sha256_b64url
from gateway.model import AuthnMethod, Caller, Inbound

STATUS = 400  # WIMSE: 400, not 401 (no WWW-Authenticate scheme is defined)
WIT_HEADER = "Workload-Identity-Token"
WPT_HEADER = "Workload-Proof-Token"


def _err(reason: Reason, detail: str) -> AuthnError:
    return AuthnError(reason, detail, status_override=STATUS)


@dataclass(frozen=True)
class TrustDomainKeys:
    """What verifies tokens issued for one trust domain."""

    source: KeySource
    algorithms: frozenset[str]
    skew: float


@dataclass(frozen=True)
class VerifiedWit:
    identity: str
    trust_domain: str
    expires_at: float
    cnf_jwk: dict[str, Any]
    cnf_alg: str
    cnf_key: Any
    jkt: str
    claims: dict[str, Any]
    token_hash: str


async def verify_wit(token: str, trust: Callable[[str], TrustDomainKeys | None],
                     now: float) -> VerifiedWit:
    """The WIT checklist of specs/wimse.md section 2, in its order."""
    jws = parse_jws(token, status=STATUS, what="WIT")
    if not typ_is(jws.header, "wit+jwt"):
        raise _err(Reason.AUTHN_WRONG_TYPE, "WIT typ must be wit+jwt")
    sub = jws.claims.get("sub")
    if not isinstance(sub, str):
        raise _err(Reason.AUTHN_MISSING_CLAIM, "WIT has no sub")
    try:
        wid = parse_workload_id(sub)
    except ValueError:
        raise _err(Reason.AUTHN_INVALID_IDENTITY, "WIT sub is not a workload identifier") from None
    td = trust(wid.trust_domain)
    if td is None:
        # SECURITY: keys only from configuration for the sub's trust domain, never from the token.
        raise _err(Reason.AUTHN_UNTRUSTED, "no keys configured for the WIT's trust domain")
    try:
        alg = check_alg(jws, td.algorithms, status=STATUS, what="WIT")
    except AuthnError:
        raise _err(Reason.AUTHN_ALG_NOT_ALLOWED, "WIT algorithm not allowed") from None
    await verify_with_source(jws, alg, td.source, lambda r, d: _err(r, f"WIT: {d}"))
    try:
        exp = numeric(jws.claims, "exp")
        nbf = numeric(jws.claims, "nbf")
    except ValueError:
        raise _err(Reason.AUTHN_MISSING_CLAIM, "WIT exp/nbf not numeric") from None
    if exp is None:
        raise _err(Reason.AUTHN_MISSING_CLAIM, "WIT has no exp")
    if exp + td.skew <= now:
        raise _err(Reason.AUTHN_EXPIRED, "WIT expired")
    if nbf is not None and nbf - td.skew > now:
        raise _err(Reason.AUTHN_NOT_YET_VALID, "WIT not yet valid")
    cnf = jws.claims.get("cnf")
    jwk = cnf.get("jwk") if isinstance(cnf, dict) else None
    if not isinstance(jwk, dict):
        raise _err(Reason.AUTHN_MISSING_CLAIM, "WIT has no cnf.jwk")
    cnf_alg = jwk.get("alg")
    # WIMSE: cnf.jwk.alg is required, asymmetric, and fixes the WPT's algorithm.
    if not isinstance(cnf_alg, str) or cnf_alg not in ASYMMETRIC:
        raise _err(Reason.AUTHN_MISSING_CLAIM, "WIT cnf.jwk.alg missing or not asymmetric")
    try:
        cnf_key = key_from_jwk(jwk, cnf_alg)
    except ValueError as exc:
        raise _err(Reason.AUTHN_MISSING_CLAIM, f"WIT cnf.jwk: {exc}") from None
    return VerifiedWit(
        identity=wid.uri, trust_domain=wid.trust_domain, expires_at=exp, cnf_jwk=jwk,
        cnf_alg=cnf_alg, cnf_key=cnf_key, jkt=jwk_thumbprint(jwk),
        claims={k: v for k, v in jws.claims.items() if k != "cnf"},
        token_hash=hashlib.sha256(token.encode()).hexdigest()[:32],
    )




def verify_wpt(wpt: str, wit: VerifiedWit, wit_raw: str, inbound: Inbound, now: float,
               max_lifetime: float, skew: float) -> tuple[dict[str, Any], float]:
    """The WPT checklist of specs/wimse.md section 3; returns (claims, expiry)."""
    jws = parse_jws(wpt, status=STATUS, what="WPT")
    if not typ_is(jws.header, "wpt+jwt"):
        raise _err(Reason.AUTHN_WRONG_TYPE, "WPT typ must be wpt+jwt")
    # draft-ietf-wimse-wpt 2: alg MUST string-equal the WIT's cnf.jwk.alg
    if jws.header.get("alg") != wit.cnf_alg:
        raise _err(Reason.AUTHN_ALG_NOT_ALLOWED, "WPT alg differs from the WIT's cnf.jwk.alg")
    if not verify_signature(jws, wit.cnf_alg, wit.cnf_key):
        raise _err(Reason.AUTHN_BAD_SIGNATURE, "WPT not signed by the WIT's key")
    c = jws.claims
    try:
        exp = numeric(c, "exp")
    except ValueError:
        exp = None
    if exp is None:
        raise _err(Reason.AUTHN_MISSING_CLAIM, "WPT has no exp")
    if exp + skew <= now:
        raise _err(Reason.AUTHN_EXPIRED, "WPT expired")
    if exp - now > max_lifetime + skew:
        raise _err(Reason.AUTHN_MISSING_CLAIM, "WPT lives too long")
    aud = c.get("aud")
    auds = aud if isinstance(aud, list) else [aud]
    if not any(isinstance(a, str) and normalize_uri(a) in inbound.targets for a in auds):
        raise _err(Reason.AUTHN_WRONG_AUDIENCE, "WPT aud is not this request's target")
    if c.get("wth") != sha256_b64url(wit_raw):
        raise _err(Reason.AUTHN_HASH_MISMATCH, "WPT wth does not match the WIT")
    _check_token_hashes(c, inbound)
    jti = c.get("jti")
    if not isinstance(jti, str) or not jti or len(jti) > 512:
        raise _err(Reason.AUTHN_MISSING_CLAIM, "WPT jti missing")
    return c, exp


def _check_token_hashes(c: dict[str, Any], inbound: Inbound) -> None:
    """ath / tth / oth: each mandatory when its token is present, and must match it."""
    auth = inbound.headers.get("Authorization")
    if auth is not None:
        scheme, _, token = auth.partition(" ")
        if scheme.lower() not in ("bearer", "dpop") or not token:
            raise _err(Reason.AUTHN_HASH_MISMATCH, "unsupported Authorization beside a WIT")
        if c.get("ath") != sha256_b64url(token.strip()):
            raise _err(Reason.AUTHN_HASH_MISMATCH, "WPT ath does not cover the access token")
    elif "ath" in c:
        raise _err(Reason.AUTHN_HASH_MISMATCH, "WPT ath names a token that was not sent")
    txn = inbound.headers.get("Txn-Token")
    if txn is not None:
        if c.get("tth") != sha256_b64url(txn.strip()):
            raise _err(Reason.AUTHN_HASH_MISMATCH, "WPT tth does not cover the Txn-Token")
    elif "tth" in c:
        raise _err(Reason.AUTHN_HASH_MISMATCH, "WPT tth names a token that was not sent")
    oth = c.get("oth")
    if oth is not None:
        if not isinstance(oth, dict):
            raise _err(Reason.AUTHN_HASH_MISMATCH, "WPT oth is not an object")
        for name, digest in oth.items():
            values = inbound.headers.getall(name, ())
            if len(values) != 1 or digest != sha256_b64url(values[0].strip()):
                raise _err(Reason.AUTHN_HASH_MISMATCH, "WPT oth does not match its headers")


class WitAuthenticator:
    """WIT + WPT on a request; 400 with a reason on any failure."""

    name = AuthnMethod.WIT.value

    def __init__(self, trust: dict[str, TrustDomainKeys], replay: ReplayCache, clock: Clock,
                 max_wpt_lifetime: float = 300.0, cache_size: int = 10_000) -> None:
        self.trust = trust
        self.replay = replay
        self.clock = clock
        self.max_wpt_lifetime = max_wpt_lifetime
        self.cache_size = cache_size
        self._cache: OrderedDict[bytes, VerifiedWit] = OrderedDict()

    def present(self, inbound: Inbound) -> bool:
        return WIT_HEADER in inbound.headers or WPT_HEADER in inbound.headers

    async def verified_wit(self, wit_raw: str, now: float) -> VerifiedWit:
        """verify_wit, cached by token hash until the WIT expires (shared with httpsig)."""
        key = hashlib.sha256(wit_raw.encode()).digest()
        wit = self._cache.get(key)
        if wit is not None and wit.expires_at > now:
            self._cache.move_to_end(key)
            return wit
        wit = await verify_wit(wit_raw, self.trust.get, now)
        self._cache[key] = wit
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
        return wit

    async def authenticate(self, inbound: Inbound) -> Caller:
        wit_raw = single_header(inbound, WIT_HEADER, status=STATUS)
        wpt_raw = single_header(inbound, WPT_HEADER, status=STATUS)
        if wit_raw is None or wpt_raw is None:
            raise _err(Reason.AUTHN_MISSING, "a WIT needs a WPT and the other way round")
        now = self.clock.now()
        wit = await self.verified_wit(wit_raw, now)
        skew = self.trust[wit.trust_domain].skew
        claims, exp = verify_wpt(wpt_raw, wit, wit_raw, inbound, now, self.max_wpt_lifetime,
                                 skew)
        # Replay last: only a proof that is otherwise valid may occupy the cache.
        if not await self.replay.check_and_store("wpt:" + wit.jkt, claims["jti"], exp + skew):
            raise _err(Reason.AUTHN_REPLAYED, "WPT jti already used")
        return Caller(
            identity=wit.identity, trust_domain=wit.trust_domain, method=AuthnMethod.WIT,
            proof_of_possession=True, expires_at=wit.expires_at, claims=wit.claims,
            key_thumbprint=wit.jkt, credential_id="wit:" + wit.token_hash,
        )
