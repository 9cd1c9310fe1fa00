"""A small RFC 8693 token service for tests, with knobs for every way a real one misbehaves."""

from __future__ import annotations

import asyncio
import base64
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

import jwt
from aiohttp import web

from tests.helpers.tokens import Key


@dataclass
class FakeSts:
    """Issues ES256 access tokens; ``mode`` picks the behaviour of the next calls."""

    key: Key = field(default_factory=lambda: Key.es256("sts-1"))
    # ok | slow | garbage | 500 | error:<code> | long | dpop | no_type | dpop_nonce
    mode: str = "ok"
    lifetime: int = 300
    delay: float = 0.0
    calls: int = 0
    forms: list[dict[str, Any]] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)
    runner: web.AppRunner | None = None
    port: int = 0
    ssl_context: Any = None
    client_certs: list[bytes | None] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"{'https' if self.ssl_context else 'http'}://127.0.0.1:{self.port}"

    @property
    def issuer(self) -> str:
        return self.url

    def verify(self, token: str, audience: str) -> dict[str, Any]:
        return jwt.decode(token, self.key.private.public_key(), algorithms=["ES256"],
                          audience=audience)

    async def start(self) -> FakeSts:
        app = web.Application()
        app.router.add_post("/token", self._token)
        app.router.add_get("/jwks", self._jwks)
        app.router.add_get("/.well-known/oauth-authorization-server", self._meta)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0, ssl_context=self.ssl_context)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self

    async def stop(self) -> None:
        if self.runner:
            await self.runner.cleanup()

    async def _meta(self, request: web.Request) -> web.Response:
        return web.json_response({"issuer": self.issuer, "token_endpoint": self.url + "/token",
                                  "jwks_uri": self.url + "/jwks"})

    async def _jwks(self, request: web.Request) -> web.Response:
        return web.json_response({"keys": [self.key.jwk]})

    async def _token(self, request: web.Request) -> web.Response:
        self.calls += 1
        form = dict(await request.post())
        self.forms.append(form)
        self.headers.append(dict(request.headers))
        sslobj = request.transport.get_extra_info("ssl_object") if request.transport else None
        self.client_certs.append(sslobj.getpeercert(binary_form=True) if sslobj else None)
        if self.delay:
            await asyncio.sleep(self.delay)
        mode = self.mode
        if mode == "slow":
            await asyncio.sleep(2.5)  # beyond the gateway's 1 s STS timeout
        if mode == "garbage":
            return web.Response(text="<html>oops</html>", content_type="text/html")
        if mode == "500":
            return web.json_response({"error": "server_error"}, status=500)
        if mode.startswith("error:"):
            return web.json_response({"error": mode[6:], "error_description":
                                      "secret internal detail SHOULD-NOT-LEAK"}, status=400)
        cnf = None
        proof = request.headers.get("DPoP")
        if mode == "dpop_nonce" or (mode == "ok" and proof):
            # RFC 9449 5: a proof on the token request gets a token bound to its key.
            if not proof:
                return web.json_response({"error": "invalid_dpop_proof"}, status=400)
            hdr = jwt.get_unverified_header(proof)
            body_claims = jwt.decode(proof, jwt.PyJWK(hdr["jwk"]).key, algorithms=[hdr["alg"]])
            if mode == "dpop_nonce" and body_claims.get("nonce") != "server-nonce-1":
                return web.json_response({"error": "use_dpop_nonce"}, status=400,
                                         headers={"DPoP-Nonce": "server-nonce-1"})
            assert body_claims["htm"] == "POST" and body_claims["htu"].endswith("/token")
            from gateway.keys import jwk_thumbprint

            cnf = {"jkt": jwk_thumbprint(hdr["jwk"])}
        sub = "unknown"
        if "subject_token" in form:
            sub = jwt.decode(str(form["subject_token"]), options={"verify_signature": False}
                             ).get("sub", "unknown")
        elif "client_assertion" in form:
            sub = jwt.decode(str(form["client_assertion"]), options={"verify_signature": False}
                             ).get("sub", "unknown")
        now = int(time.time())
        lifetime = 86400 if mode == "long" else self.lifetime
        claims = {"iss": self.issuer, "sub": sub, "aud": form.get("audience") or
                  form.get("resource") or "any", "iat": now, "exp": now + lifetime,
                  "jti": secrets.token_urlsafe(8)}
        if form.get("scope"):
            claims["scope"] = form["scope"]
        if cnf:
            claims["cnf"] = cnf
        if "actor_token" in form:
            act = jwt.decode(str(form["actor_token"]), options={"verify_signature": False})
            claims["act"] = {"sub": act["sub"]}
        token = jwt.encode(claims, self.key.private, algorithm="ES256",
                           headers={"kid": self.key.kid, "typ": "at+jwt"})
        body: dict[str, Any] = {"access_token": token, "token_type":
                                "DPoP" if mode == "dpop" or cnf else "Bearer",
                                "expires_in": lifetime}
        if mode != "no_type":
            body["issued_token_type"] = "urn:ietf:params:oauth:token-type:access_token"
        return web.json_response(body, headers={"Cache-Control": "no-store"})


def basic_credentials(headers: dict[str, str]) -> tuple[str, str] | None:
    auth = headers.get("Authorization", "")
    if not auth.startswith("Basic "):
        return None
    user, _, pw = base64.b64decode(auth[6:]).decode().partition(":")
    return user, pw
