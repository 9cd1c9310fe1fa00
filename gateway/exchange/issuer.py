"""The gateway's own issuer: RFC 9068 JWT access tokens (``typ: at+jwt``) for a destination.

Used when the destination trusts the gateway's JWKS directly, so no STS round trip is needed.
"""

from __future__ import annotations

import secrets

import jwt

from gateway.clock import Clock
from gateway.config.policy import IssuerExchangeConfig
from gateway.errors import ExchangeError, Reason
from gateway.keys import SigningKey
from gateway.model import Caller, Credential, Destination

ACCESS_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:access_token"


class IssuerExchanger:
    """Mints an audience-scoped access token signed with the gateway's current key."""

    kind = "issuer"

    def __init__(
        self,
        cfg: IssuerExchangeConfig,
        issuer: str,
        key: SigningKey,
        client_id: str,
        clock: Clock,
        on_behalf_of: bool = False,
    ) -> None:
        self.cfg = cfg
        self.issuer = issuer
        self.key = key
        self.client_id = client_id
        self.clock = clock
        self.on_behalf_of = on_behalf_of

    def audience(self, dest: Destination) -> str:
        return self.cfg.audience or dest.origin

    def cache_key(self, caller: Caller, dest: Destination) -> tuple[str, ...]:
        return (self.audience(dest), self.cfg.scope or "")

    async def exchange(self, caller: Caller, dest: Destination, max_lifetime: float) -> Credential:
        if not caller.identity:
            raise ExchangeError(Reason.EXCHANGE_FAILED, "no caller identity to issue a token for")
        lifetime = int(min(self.cfg.lifetime, max_lifetime))
        if lifetime < 1:
            raise ExchangeError(Reason.EXCHANGE_FAILED, "caller credential about to expire")
        now = int(self.clock.now())
        jti = secrets.token_urlsafe(16)
        claims: dict[str, object] = {
            "iss": self.issuer,
            "sub": caller.identity,
            "aud": self.audience(dest),
            "iat": now,
            "nbf": now,
            "exp": now + lifetime,
            "jti": jti,
            "client_id": self.client_id,
        }
        if self.cfg.scope:
            claims["scope"] = self.cfg.scope
        if self.on_behalf_of:
            claims["act"] = {"sub": self.client_id}
        carried = []
        for name in self.cfg.carry_claims:
            if name in caller.claims and name not in claims:
                claims[name] = caller.claims[name]
                carried.append(name)
        dropped = tuple(sorted(set(caller.claims) - set(carried) - {"sub"}))
        token = jwt.encode(
            claims,
            self.key.private_key,
            algorithm=self.key.alg,
            headers={"typ": "at+jwt", "kid": self.key.kid},
        )
        return Credential(
            token=token,
            token_type="Bearer",
            issued_token_type=ACCESS_TOKEN_TYPE,
            expires_at=float(now + lifetime),
            proof_of_possession=False,
            token_id=jti,
            issuer=self.issuer,
            claims_carried=("sub", *carried),
            claims_dropped=dropped,
        )
