"""RFC 9449 section 7.1: ``Authorization: DPoP <token>`` and a fresh proof per request, with
``htm``, ``htu`` (the target URI without query and fragment) and ``ath``."""

from __future__ import annotations

import secrets

import jwt

from gateway.clock import Clock
from gateway.errors import ExchangeError, Reason
from gateway.inject.base import Outgoing
from gateway.keys import sha256_b64url
from gateway.model import Credential


class DpopInjector:
    kind = "dpop"
    needs_body = False

    def __init__(self, clock: Clock) -> None:
        self.clock = clock

    def inject(self, out: Outgoing, credential: Credential) -> None:
        headers, dest = out.headers, out.dest
        key = credential.proof_key
        if key is None or credential.token_type != "DPoP":
            raise ExchangeError(Reason.EXCHANGE_FAILED, "the dpop injector needs a DPoP-bound "
                                "token (exchange with dpop: true)")
        jwk = {k: v for k, v in key.public_jwk.items() if k in ("kty", "crv", "x", "y", "n", "e")}
        claims = {"jti": secrets.token_urlsafe(16), "htm": dest.method,
                  "htu": str(dest.url.with_query(None).with_fragment(None)),
                  "iat": int(self.clock.now()), "ath": sha256_b64url(credential.token)}
        headers["Authorization"] = f"DPoP {credential.token}"
        headers["DPoP"] = jwt.encode(claims, key.private_key, algorithm=key.alg,
                                     headers={"typ": "dpop+jwt", "jwk": jwk})
