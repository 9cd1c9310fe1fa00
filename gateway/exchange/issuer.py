"""The gateway's own issuer: tokens it mints and signs itself.

- RFC 9068 JWT access tokens (``typ: at+jwt``) for destinations that trust the gateway's JWKS;
- WIMSE Workload Identity Tokens (draft-ietf-wimse-workload-creds 5.1) for the next hop, with a
  fresh key bound in ``cnf`` (the injector proves possession with a WPT per request);
- OAuth transaction tokens (draft-ietf-oauth-transaction-tokens): one ``txn`` id follows the
  request end to end; when the caller brought a verified Txn-Token its ``txn`` and ``tctx`` are
  kept, so the chain of custody is not broken at the gateway.
"""

from __future__ import annotations

import secrets
import uuid
from typing import Any

import jwt

from gateway.clock import Clock
from gateway.config.policy import IssuerExchangeConfig
from gateway.errors import ExchangeError, Reason
from gateway.keys import SigningKey
from gateway.model import Caller, Credential, Destination

ACCESS_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:access_token"
WIT_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:wit"  # no registered URI yet (see note)
TXN_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:txn_token"


class IssuerExchanger:
    """Mints a token signed with the gateway's current key."""

    kind = "issuer"

    def __init__(
        self,
        cfg: IssuerExchangeConfig,
        issuer: str,
        key: SigningKey,
        client_id: str,
        clock: Clock,
        on_behalf_of: bool = False,
        workload_identity: str | None = None,
    ) -> None:
        self.cfg = cfg
        self.issuer = issuer
        self.key = key
        self.client_id = client_id
        self.clock = clock
        self.on_behalf_of = on_behalf_of
        self.workload_identity = workload_identity

    def audience(self, dest: Destination, caller: Caller | None = None) -> str:
        if self.cfg.audience:
            return self.cfg.audience
        if self.cfg.token == "txn_token" and caller is not None and caller.trust_domain:
            return caller.trust_domain
        return dest.origin

    def cache_key(self, caller: Caller, dest: Destination) -> tuple[str, ...]:
        key = (self.audience(dest, caller), self.cfg.scope or "")
        if self.cfg.token == "txn_token":
            # one transaction token per transaction, never shared across them
            txn = caller.claims.get("txn_token")
            return (*key, str(txn.get("txn")) if isinstance(txn, dict) else "new:" +
                    secrets.token_hex(8))
        return key

    async def exchange(self, caller: Caller, dest: Destination, max_lifetime: float) -> Credential:
        if not caller.identity:
            raise ExchangeError(Reason.EXCHANGE_FAILED, "no caller identity to issue a token for")
        lifetime = int(min(self.cfg.lifetime, max_lifetime))
        if lifetime < 1:
            raise ExchangeError(Reason.EXCHANGE_FAILED, "caller credential about to expire")
        now = int(self.clock.now())
        jti = secrets.token_urlsafe(16)
        mint = {"access_token": self._access_token, "wit": self._wit,
                "txn_token": self._txn_token}[self.cfg.token]
        claims, headers, token_type, kind, proof_key = mint(caller, dest, now, lifetime, jti)
        carried = [k for k in ("sub",) if k in claims]
        for name in self.cfg.carry_claims:
            if name in caller.claims and name not in claims:
                claims[name] = caller.claims[name]
                carried.append(name)
        dropped = tuple(sorted(set(caller.claims) - set(carried) - {"sub", "txn_token"}))
        token = jwt.encode(claims, self.key.private_key, algorithm=self.key.alg,
                           headers={**headers, "kid": self.key.kid})
        return Credential(
            token=token, token_type=token_type, issued_token_type=kind,
            expires_at=float(claims["exp"]), proof_of_possession=proof_key is not None,
            token_id=jti, issuer=self.issuer, claims_carried=tuple(carried),
            claims_dropped=dropped, proof_key=proof_key,
        )

    def _access_token(self, caller: Caller, dest: Destination, now: int, lifetime: int,
                      jti: str) -> tuple[dict[str, Any], dict[str, str], str, str, None]:
        claims: dict[str, Any] = {
            "iss": self.issuer, "sub": caller.identity, "aud": self.audience(dest),
            "iat": now, "nbf": now, "exp": now + lifetime, "jti": jti,
            "client_id": self.client_id,
        }
        if self.cfg.scope:
            claims["scope"] = self.cfg.scope
        if self.on_behalf_of:
            claims["act"] = {"sub": self.client_id}
        return claims, {"typ": "at+jwt"}, "Bearer", ACCESS_TOKEN_TYPE, None

    def _wit(self, caller: Caller, dest: Destination, now: int, lifetime: int,
             jti: str) -> tuple[dict[str, Any], dict[str, str], str, str, SigningKey]:
        key = SigningKey.generate()
        sub = caller.identity
        claims: dict[str, Any] = {"iss": self.issuer, "iat": now, "exp": now + lifetime,
                                  "jti": jti,
                                  "cnf": {"jwk": {**key.bare_jwk, "alg": key.alg}}}
        if self.cfg.identity == "gateway":
            if not self.workload_identity:
                raise ExchangeError(Reason.EXCHANGE_FAILED, "issuer.workload_identity unset")
            sub = self.workload_identity
            claims["act"] = {"sub": caller.identity}
        claims["sub"] = sub
        return claims, {"typ": "wit+jwt"}, "N_A", WIT_TOKEN_TYPE, key

    def _txn_token(self, caller: Caller, dest: Destination, now: int, lifetime: int,
                   jti: str) -> tuple[dict[str, Any], dict[str, str], str, str, None]:
        inbound = caller.claims.get("txn_token")
        inbound = inbound if isinstance(inbound, dict) else {}
        claims: dict[str, Any] = {
            "iss": self.issuer, "iat": now, "exp": now + lifetime, "jti": jti,
            "aud": self.audience(dest, caller),
            # the transaction keeps its id and its immutable context across hops
            "txn": inbound.get("txn") or str(uuid.uuid4()),
            "sub": inbound.get("sub") or caller.identity,
            "scope": self.cfg.scope,
            "req_wl": self.workload_identity or self.client_id,
            # a new transaction records the request that started it; later hops keep that
            "tctx": inbound.get("tctx") or {"method": dest.method,
                                              "target": dest.origin + dest.path},
            "rctx": {"authn": caller.method.value, "caller": caller.identity},
        }
        return claims, {"typ": "txntoken+jwt"}, "N_A", TXN_TOKEN_TYPE, None
