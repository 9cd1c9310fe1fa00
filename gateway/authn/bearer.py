"""Bearer JWTs (RFC 6750): JWT-SVIDs (SPIFFE JWT-SVID.md) and access tokens of OAuth issuers.

A JWT-SVID's keys come from the bundle of the trust domain named in its ``sub``; any other JWT
must come from an issuer listed in the configuration (``authentication.issuers``), whose keys are
used. Either way ``aud`` must include one of the configured audiences. The caller is marked as a
bearer (no proof of possession) so policy can treat it as lower assurance. A token bound to a
key (``cnf``) is refused here: RFC 9449 7.1 forbids accepting it as a bearer token.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from gateway.authn.identifier import parse_workload_id
from gateway.authn.jose import check_alg, numeric, parse_jws
from gateway.authn.jwks import KeySource, verify_with_source
from gateway.authn.request import single_header
from gateway.authn.wit import TrustDomainKeys
from gateway.clock import Clock
from gateway.errors import AuthnError, Reason
from gateway.model import AuthnMethod, Caller, Inbound


@dataclass(frozen=True)
class IssuerKeys:
    """An OAuth/OIDC issuer whose JWTs are accepted."""

    issuer: str
    source: KeySource
    algorithms: frozenset[str]
    audiences: frozenset[str]
    skew: float


@dataclass(frozen=True)
class VerifiedJwt:
    identity: str
    trust_domain: str | None
    issuer: str | None
    expires_at: float
    claims: dict[str, Any]
    token_hash: str


class JwtVerifier:
    """Verifies a JWT against trust domain bundles (JWT-SVID) or configured issuers.

    Results are cached by token hash until expiry: a caller sending the same token again costs
    a dict lookup, not a signature check.
    """

    def __init__(self, trust: dict[str, TrustDomainKeys], issuers: dict[str, IssuerKeys],
                 audiences: frozenset[str], cache_size: int = 10_000) -> None:
        self.trust = trust
        self.issuers = issuers
        self.audiences = audiences
        self.cache_size = cache_size
        self._cache: OrderedDict[bytes, VerifiedJwt] = OrderedDict()

    async def verify(self, token: str, now: float, *, challenge: str,
                     typ: frozenset[str] = frozenset()) -> VerifiedJwt:
        key = hashlib.sha256(token.encode()).digest()
        hit = self._cache.get(key)
        if hit is not None and hit.expires_at > now:
            self._cache.move_to_end(key)
            return hit
        v = await self._verify(token, now, challenge, typ)
        self._cache[key] = v
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
        return v

    async def _verify(self, token: str, now: float, challenge: str,
                      typ: frozenset[str]) -> VerifiedJwt:
        def err(reason: Reason, detail: str) -> AuthnError:
            return AuthnError(reason, detail, challenge=challenge)

        try:
            jws = parse_jws(token, what="access token")
        except AuthnError as exc:
            raise err(exc.reason, exc.detail) from None
        if typ and str(jws.header.get("typ", "")).lower() not in typ:
            raise err(Reason.AUTHN_WRONG_TYPE, "token typ not accepted")
        c = jws.claims
        iss = c.get("iss") if isinstance(c.get("iss"), str) else None
        sub = c.get("sub")
        if not isinstance(sub, str) or not sub:
            raise err(Reason.AUTHN_MISSING_CLAIM, "token has no sub")
        issuer = self.issuers.get(iss) if iss else None
        trust_domain = None
        identity = sub
        if issuer is not None:
            source, algs, audiences, skew = (issuer.source, issuer.algorithms,
                                             issuer.audiences or self.audiences, issuer.skew)
            try:
                trust_domain = parse_workload_id(sub).trust_domain
            except ValueError:
                trust_domain = None
        else:
            try:
                wid = parse_workload_id(sub)
            except ValueError:
                raise err(Reason.AUTHN_UNTRUSTED, "token from an issuer that is not "
                          "configured") from None
            td = self.trust.get(wid.trust_domain)
            if td is None:
                raise err(Reason.AUTHN_UNTRUSTED, "no keys for the token's trust domain")
            source, algs, audiences, skew = td.source, td.algorithms, self.audiences, td.skew
            trust_domain = wid.trust_domain
        try:
            alg = check_alg(jws, algs, what="token")
        except AuthnError:
            raise err(Reason.AUTHN_ALG_NOT_ALLOWED, "token algorithm not allowed") from None
        await verify_with_source(jws, alg, source, err)
        try:
            exp = numeric(c, "exp")
            nbf = numeric(c, "nbf")
        except ValueError:
            raise err(Reason.AUTHN_MISSING_CLAIM, "exp/nbf not numeric") from None
        if exp is None:
            raise err(Reason.AUTHN_MISSING_CLAIM, "token has no exp")
        if exp + skew <= now:
            raise err(Reason.AUTHN_EXPIRED, "token expired")
        if nbf is not None and nbf - skew > now:
            raise err(Reason.AUTHN_NOT_YET_VALID, "token not yet valid")
        aud = c.get("aud")
        auds = aud if isinstance(aud, list) else [aud]
        if not audiences or not any(isinstance(a, str) and a in audiences for a in auds):
            raise err(Reason.AUTHN_WRONG_AUDIENCE, "token audience is not this gateway")
        return VerifiedJwt(identity, trust_domain, iss, exp, c,
                           hashlib.sha256(token.encode()).hexdigest()[:32])


BEARER_CHALLENGE = 'Bearer realm="wimse-gateway", error="invalid_token"'


class BearerAuthenticator:
    """``Authorization: Bearer <JWT>``."""

    name = AuthnMethod.BEARER.value

    def __init__(self, verifier: JwtVerifier, clock: Clock) -> None:
        self.verifier = verifier
        self.clock = clock

    def present(self, inbound: Inbound) -> bool:
        auth = inbound.headers.get("Authorization", "")
        return auth[:7].lower() == "bearer "

    async def authenticate(self, inbound: Inbound) -> Caller:
        auth = single_header(inbound, "Authorization", challenge=BEARER_CHALLENGE)
        assert auth is not None
        token = auth[7:].strip()
        v = await self.verifier.verify(token, self.clock.now(), challenge=BEARER_CHALLENGE)
        if "cnf" in v.claims:
            # SECURITY: RFC 9449 7.1, a DPoP-bound token presented as Bearer must be rejected;
            # accepting it would turn a stolen bound token back into a bearer token.
            raise AuthnError(Reason.AUTHN_TOKEN_BOUND, "key-bound token sent as Bearer",
                             challenge=BEARER_CHALLENGE)
        return Caller(
            identity=v.identity, trust_domain=v.trust_domain, method=AuthnMethod.BEARER,
            proof_of_possession=False, expires_at=v.expires_at, claims=v.claims,
            credential_id="jwt:" + v.token_hash, raw_token=token,
        )
