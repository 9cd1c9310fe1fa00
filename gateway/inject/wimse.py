"""WIMSE Workload Identity Token + Workload Proof Token for the next hop.

draft-ietf-wimse-wpt section 2: a fresh WPT per request, signed with the key the WIT binds,
``aud`` = the target URI without query and fragment, ``wth`` = hash of the WIT, and ``ath`` /
``tth`` when an access token or a Txn-Token rides along (so add those injectors first).
"""

from __future__ import annotations

import secrets

import jwt

from gateway.clock import Clock
from gateway.errors import ExchangeError, Reason
from gateway.inject.base import Outgoing
from gateway.keys import sha256_b64url
from gateway.model import Credential


class WimseInjector:
    kind = "wimse"
    needs_body = False

    def __init__(self, clock: Clock, wpt_lifetime: int = 60) -> None:
        self.clock = clock
        self.wpt_lifetime = wpt_lifetime

    def inject(self, out: Outgoing, credential: Credential) -> None:
        headers, dest = out.headers, out.dest
        key = credential.proof_key
        if key is None:
            raise ExchangeError(Reason.EXCHANGE_FAILED, "the wimse injector needs a WIT "
                                "minted with its key (token: wit)")
        now = int(self.clock.now())
        claims = {"aud": dest.target_uri,
                  "exp": now + self.wpt_lifetime, "jti": secrets.token_urlsafe(16),
                  "wth": sha256_b64url(credential.token)}
        auth = headers.get("Authorization")
        if auth and " " in auth:
            claims["ath"] = sha256_b64url(auth.split(" ", 1)[1].strip())
        txn = headers.get("Txn-Token")
        if txn:
            claims["tth"] = sha256_b64url(txn.strip())
        headers["Workload-Identity-Token"] = credential.token
        headers["Workload-Proof-Token"] = jwt.encode(
            claims, key.private_key, algorithm=key.alg, headers={"typ": "wpt+jwt"})
