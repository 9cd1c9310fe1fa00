"""Incoming transaction tokens (draft-ietf-oauth-transaction-tokens): verified, then offered to
policy as the caller's ``txn_token`` claim, so rules can say "only requests that entered through
the front end" (``claims: {txn_token.tctx.entry: frontend}``).

A Txn-Token is neither an authentication credential nor an access token: a bad one is refused
(it would otherwise break the chain of custody), a missing one just means no transaction
context. Keys: this gateway's own issuer keys (an earlier hop of the same deployment) or those of
an issuer under ``authentication.issuers``; ``aud`` must be one of our trust domains.
"""

from __future__ import annotations

from typing import Any

from gateway.authn.jose import check_alg, numeric, parse_jws, typ_is
from gateway.authn.jwks import KeySource, verify_with_source
from gateway.authn.request import single_header
from gateway.errors import AuthnError, Reason
from gateway.model import Inbound

HEADER = "Txn-Token"
ALGS = frozenset({"ES256", "ES384", "EdDSA", "RS256", "PS256"})


class TxnTokenVerifier:
    def __init__(self, issuers: dict[str, KeySource], audiences: frozenset[str],
                 skew: float = 30.0) -> None:
        self.issuers = issuers
        self.audiences = audiences
        self.skew = skew

    def present(self, inbound: Inbound) -> bool:
        return HEADER in inbound.headers

    async def verify(self, inbound: Inbound, now: float) -> dict[str, Any]:
        raw = single_header(inbound, HEADER)
        assert raw is not None

        def err(reason: Reason, detail: str) -> AuthnError:
            return AuthnError(reason, f"Txn-Token: {detail}")

        try:
            jws = parse_jws(raw, what="Txn-Token")
        except AuthnError as exc:
            raise err(exc.reason, exc.detail) from None
        if not typ_is(jws.header, "txntoken+jwt"):
            raise err(Reason.AUTHN_WRONG_TYPE, "typ must be txntoken+jwt")
        source = self.issuers.get(str(jws.claims.get("iss")))
        if source is None:
            raise err(Reason.AUTHN_UNTRUSTED, "issuer not trusted")
        try:
            alg = check_alg(jws, ALGS, what="Txn-Token")
        except AuthnError:
            raise err(Reason.AUTHN_ALG_NOT_ALLOWED, "algorithm not allowed") from None
        await verify_with_source(jws, alg, source, err)
        c = jws.claims
        try:
            exp = numeric(c, "exp")
        except ValueError:
            exp = None
        if exp is None or exp + self.skew <= now:
            raise err(Reason.AUTHN_EXPIRED, "expired or without exp")
        aud = c.get("aud")
        auds = aud if isinstance(aud, list) else [aud]
        if not any(a in self.audiences for a in auds):
            raise err(Reason.AUTHN_WRONG_AUDIENCE, "not for this trust domain")
        for name in ("txn", "sub", "scope"):
            if not isinstance(c.get(name), str):
                raise err(Reason.AUTHN_MISSING_CLAIM, f"{name} missing")
        return c
