"""DPoP at a resource (RFC 9449 sections 4.3, 7.1, 8).

``Authorization: DPoP <access token>`` plus a ``DPoP`` proof signed by the key the token is
bound to (``cnf.jkt``, the RFC 7638 thumbprint of the proof's ``jwk``). Failures answer 401 with
``WWW-Authenticate: DPoP``. Server nonces (section 8) are optional.
"""

from __future__ import annotations

import hmac
import secrets
from dataclasses import dataclass
from typing import Any

from gateway.authn.bearer import JwtVerifier
from gateway.authn.jose import check_alg, key_from_jwk, numeric, parse_jws, typ_is
from gateway.authn.jose import verify_signature as jws_verify
from gateway.authn.replay import ReplayCache
from gateway.authn.request import normalize_uri, single_header
from gateway.clock import Clock
from gateway.errors import AuthnError, Reason
from gateway.keys import jwk_thumbprint, sha256_b64url
from gateway.model import AuthnMethod, Caller, Inbound


@dataclass(frozen=True)
class DpopSettings:
    algorithms: frozenset[str] = frozenset({"ES256", "EdDSA", "PS256", "RS256"})
    max_age: float = 60.0  # seconds a proof is accepted after its iat
    skew: float = 5.0  # accepted iat in the future
    require_nonce: bool = False
    nonce_lifetime: float = 300.0


def challenge(algs: frozenset[str], error: str = "invalid_dpop_proof") -> str:
    return f'DPoP algs="{" ".join(sorted(algs))}", error="{error}"'


@dataclass(frozen=True)
class VerifiedProof:
    claims: dict[str, Any]
    jwk: dict[str, Any]
    jkt: str


def verify_proof(proof: str, method: str, targets: frozenset[str], now: float,
                 settings: DpopSettings, access_token: str | None = None) -> VerifiedProof:
    """RFC 9449 4.3 checks 2-12 (the caller has done check 1, one header). No replay check."""
    ch = challenge(settings.algorithms)

    def err(reason: Reason, detail: str) -> AuthnError:
        return AuthnError(reason, detail, challenge=ch)

    try:
        jws = parse_jws(proof, what="DPoP proof")
    except AuthnError as exc:
        raise err(exc.reason, exc.detail) from None
    if not typ_is(jws.header, "dpop+jwt"):
        raise err(Reason.AUTHN_WRONG_TYPE, "DPoP proof typ must be dpop+jwt")
    try:
        alg = check_alg(jws, settings.algorithms, what="DPoP proof")
    except AuthnError:
        raise err(Reason.AUTHN_ALG_NOT_ALLOWED, "DPoP proof algorithm not allowed") from None
    jwk = jws.header.get("jwk")
    if not isinstance(jwk, dict):
        raise err(Reason.AUTHN_MISSING_CLAIM, "DPoP proof has no jwk")
    try:
        key = key_from_jwk(jwk, alg)  # refuses private members and kty/alg mismatch
    except ValueError as exc:
        raise err(Reason.AUTHN_MISSING_CLAIM, f"DPoP jwk: {exc}") from None
    if not jws_verify(jws, alg, key):
        raise err(Reason.AUTHN_BAD_SIGNATURE, "DPoP proof signature does not verify")
    c = jws.claims
    jti, htm, htu = c.get("jti"), c.get("htm"), c.get("htu")
    if not (isinstance(jti, str) and jti and len(jti) <= 512 and isinstance(htm, str)
            and isinstance(htu, str)):
        raise err(Reason.AUTHN_MISSING_CLAIM, "DPoP proof needs jti, htm, htu")
    try:
        iat = numeric(c, "iat")
    except ValueError:
        iat = None
    if iat is None:
        raise err(Reason.AUTHN_MISSING_CLAIM, "DPoP proof needs iat")
    if htm != method:
        raise err(Reason.AUTHN_WRONG_METHOD, "DPoP htm is not this request's method")
    if normalize_uri(htu) not in targets:
        raise err(Reason.AUTHN_WRONG_TARGET, "DPoP htu is not this request's URI")
    if iat > now + settings.skew:
        raise err(Reason.AUTHN_NOT_YET_VALID, "DPoP proof issued in the future")
    if iat < now - settings.max_age:
        raise err(Reason.AUTHN_EXPIRED, "DPoP proof too old")
    # RFC 9449 4.3 (12): ath is the hash of exactly the token sent
    if access_token is not None and not hmac.compare_digest(
        str(c.get("ath", "")), sha256_b64url(access_token)
    ):
        raise err(Reason.AUTHN_HASH_MISMATCH, "DPoP ath does not match the access token")
    return VerifiedProof(c, jwk, jwk_thumbprint(jwk))


class DpopAuthenticator:
    """A DPoP-bound access token with its proof."""

    name = AuthnMethod.DPOP.value

    def __init__(self, verifier: JwtVerifier, replay: ReplayCache, clock: Clock,
                 settings: DpopSettings | None = None) -> None:
        self.verifier = verifier
        self.replay = replay
        self.clock = clock
        self.settings = settings or DpopSettings()
        self._nonce_key = secrets.token_bytes(32)
        self._challenge = challenge(self.settings.algorithms)

    def present(self, inbound: Inbound) -> bool:
        auth = inbound.headers.get("Authorization", "")
        return auth[:5].lower() == "dpop " or "DPoP" in inbound.headers

    def _err(self, reason: Reason, detail: str, error: str = "invalid_dpop_proof",
             headers: dict[str, str] | None = None) -> AuthnError:
        return AuthnError(reason, detail, challenge=challenge(self.settings.algorithms, error),
                          headers=headers)

    def new_nonce(self) -> str:
        """A stateless nonce: issue time plus an HMAC, so any replica's nonce can be checked."""
        t = str(int(self.clock.now()))
        mac = hmac.new(self._nonce_key, t.encode(), "sha256").hexdigest()[:32]
        return f"{t}.{mac}"

    def _nonce_ok(self, nonce: Any) -> bool:
        if not isinstance(nonce, str) or "." not in nonce:
            return False
        t, mac = nonce.split(".", 1)
        want = hmac.new(self._nonce_key, t.encode(), "sha256").hexdigest()[:32]
        if not t.isdigit() or not hmac.compare_digest(mac, want):
            return False
        return self.clock.now() - int(t) <= self.settings.nonce_lifetime

    async def authenticate(self, inbound: Inbound) -> Caller:
        ch = self._challenge
        auth = single_header(inbound, "Authorization", challenge=ch)
        proof = single_header(inbound, "DPoP", challenge=ch)
        if auth is None or auth[:5].lower() != "dpop " or proof is None:
            raise self._err(Reason.AUTHN_MISSING, "DPoP needs Authorization: DPoP and a proof",
                            error="invalid_token")
        token = auth[5:].strip()
        now = self.clock.now()
        p = verify_proof(proof, inbound.method, inbound.targets, now, self.settings, token)
        if self.settings.require_nonce and not self._nonce_ok(p.claims.get("nonce")):
            raise self._err(Reason.AUTHN_NONCE_REQUIRED, "a fresh DPoP nonce is required",
                            error="use_dpop_nonce", headers={"DPoP-Nonce": self.new_nonce()})
        v = await self.verifier.verify(token, now, challenge=ch.replace(
            "invalid_dpop_proof", "invalid_token"))
        cnf = v.claims.get("cnf")
        jkt = cnf.get("jkt") if isinstance(cnf, dict) else None
        if not isinstance(jkt, str) or not hmac.compare_digest(jkt, p.jkt):
            raise self._err(Reason.AUTHN_KEY_BINDING, "token is not bound to the proof's key",
                            error="invalid_token")
        window_end = float(p.claims["iat"]) + self.settings.max_age + self.settings.skew
        if not await self.replay.check_and_store("dpop:" + p.jkt, p.claims["jti"], window_end):
            raise self._err(Reason.AUTHN_REPLAYED, "DPoP proof already used")
        return Caller(
            identity=v.identity, trust_domain=v.trust_domain, method=AuthnMethod.DPOP,
            proof_of_possession=True, expires_at=v.expires_at, claims=v.claims,
            key_thumbprint=p.jkt, credential_id="jwt:" + v.token_hash, raw_token=token,
        )

