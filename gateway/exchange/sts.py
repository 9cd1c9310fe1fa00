"""OAuth token service client: RFC 8693 token exchange and RFC 7523 client credentials.

One ``TokenServiceClient`` per configured STS: token endpoint (configured, or discovered from
the issuer's RFC 8414 metadata and cached), client authentication (``private_key_jwt`` per
RFC 7523 with the gateway's key, a client secret read from a file or the environment, or mTLS),
timeouts, retries with jitter on 5xx and connection errors only, and a circuit breaker. Answers
are validated before anything is cached or injected; an STS's ``error_description`` is never
passed to the caller (it may leak), only its RFC 6749 ``error`` code.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import logging
import os
import random
import secrets
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import jwt

from gateway.clock import Clock
from gateway.config.models import TokenServiceConfig
from gateway.config.policy import ClientCredentialsExchangeConfig, StsExchangeConfig
from gateway.errors import ExchangeError, Reason
from gateway.keys import SigningKey, dpop_proof
from gateway.model import Caller, Credential, Destination

log = logging.getLogger("wimse_gateway.sts")

TOKEN_EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"
JWT_BEARER_ASSERTION = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
TT_JWT = "urn:ietf:params:oauth:token-type:jwt"
TT_ACCESS = "urn:ietf:params:oauth:token-type:access_token"
KNOWN_ERRORS = frozenset({
    "invalid_request", "invalid_client", "invalid_grant", "unauthorized_client",
    "unsupported_grant_type", "invalid_scope", "invalid_target", "invalid_dpop_proof",
    "use_dpop_nonce", "access_denied", "server_error", "temporarily_unavailable",
})
CALLER_ERRORS = frozenset({"invalid_grant", "invalid_target", "invalid_scope", "access_denied",
                           "unauthorized_client"})
MAX_RESPONSE = 64 * 1024

StsObserver = Callable[[str, str, float], None]  # (sts name, outcome, seconds)


class CircuitBreaker:
    """Closed -> open after N consecutive failures -> one trial call after ``reset`` seconds."""

    def __init__(self, failures: int, reset: float, clock: Clock) -> None:
        self.threshold = failures
        self.reset = reset
        self.clock = clock
        self.failures = 0
        self.opened_at: float | None = None
        self._trial = False

    @property
    def state(self) -> str:
        if self.opened_at is None:
            return "closed"
        return "half-open" if self.clock.monotonic() - self.opened_at >= self.reset else "open"

    def before(self) -> None:
        state = self.state
        if state == "open" or (state == "half-open" and self._trial):
            raise ExchangeError(Reason.EXCHANGE_CIRCUIT_OPEN,
                                "token service failing; calls paused")
        if state == "half-open":
            self._trial = True

    def success(self) -> None:
        self.failures = 0
        self.opened_at = None
        self._trial = False

    def failure(self) -> None:
        self.failures += 1
        self._trial = False
        if self.failures >= self.threshold or self.opened_at is not None:
            self.opened_at = self.clock.monotonic()


@dataclass(frozen=True)
class TokenResponse:
    access_token: str
    token_type: str
    issued_token_type: str
    expires_at: float
    claims: dict[str, Any]  # unverified claims when the token is a JWT (audit only)


class TokenServiceClient:
    def __init__(self, name: str, cfg: TokenServiceConfig, clock: Clock,
                 signing_key: SigningKey | None, ssl_context: ssl.SSLContext | None,
                 secret_base: Path, observe: StsObserver | None = None) -> None:
        self.name = name
        self.cfg = cfg
        self.clock = clock
        self.signing_key = signing_key
        self.ssl_context = ssl_context
        self.observe = observe or (lambda *_: None)
        self.breaker = CircuitBreaker(cfg.breaker_failures, cfg.breaker_reset, clock)
        self._endpoint: str | None = cfg.token_endpoint
        self._metadata_issuer: str | None = cfg.issuer
        self._session: aiohttp.ClientSession | None = None
        self._secret_base = secret_base
        self.calls = 0

    # ---- plumbing --------------------------------------------------------------------------

    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(ssl=self.ssl_context or True, limit=64),
                timeout=aiohttp.ClientTimeout(total=self.cfg.timeout), trust_env=False)
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    def _secret(self) -> str:
        ca = self.cfg.client_auth
        if ca.secret_env:
            value = os.environ.get(ca.secret_env)
            if not value:
                raise ExchangeError(Reason.EXCHANGE_FAILED, "client secret not set")
            return value
        assert ca.secret_file
        p = Path(ca.secret_file)
        p = p if p.is_absolute() else self._secret_base / p
        return p.read_text().strip()

    async def token_endpoint(self) -> str:
        if self._endpoint:
            return self._endpoint
        assert self._metadata_issuer
        base = self._metadata_issuer.rstrip("/")
        for well_known in ("/.well-known/oauth-authorization-server",
                           "/.well-known/openid-configuration"):
            try:
                async with self.session().get(base + well_known) as r:
                    if r.status != 200:
                        continue
                    meta = json.loads(await r.content.read(MAX_RESPONSE))
            except (aiohttp.ClientError, TimeoutError, ValueError):
                continue
            # RFC 8414 3.3: the metadata must name the issuer we asked
            if isinstance(meta, dict) and meta.get("issuer", "").rstrip("/") == base and \
                    isinstance(meta.get("token_endpoint"), str):
                self._endpoint = meta["token_endpoint"]
                return self._endpoint
        raise ExchangeError(Reason.EXCHANGE_STS_UNAVAILABLE, "token service metadata unavailable")

    def assertion_audience(self, endpoint: str) -> str:
        ca = self.cfg.client_auth
        return ca.assertion_audience or self.cfg.issuer or endpoint

    def mint_assertion(self, client_id: str, audience: str) -> str:
        """RFC 7523 section 3: iss = sub = client_id, aud = the AS, fresh jti, short exp."""
        if self.signing_key is None:
            raise ExchangeError(Reason.EXCHANGE_FAILED, "no signing key for client assertions")
        now = int(self.clock.now())
        claims = {"iss": client_id, "sub": client_id, "aud": audience, "iat": now,
                  "exp": now + self.cfg.client_auth.assertion_lifetime,
                  "jti": secrets.token_urlsafe(16)}
        return jwt.encode(claims, self.signing_key.private_key, algorithm=self.signing_key.alg,
                          headers={"kid": self.signing_key.kid})

    async def _client_auth(self, form: dict[str, Any], headers: dict[str, str],
                           endpoint: str) -> None:
        ca = self.cfg.client_auth
        if "client_assertion" in form:
            return  # the exchanger authenticated the client itself (client_id = caller)
        if ca.method == "private_key_jwt":
            form["client_assertion_type"] = JWT_BEARER_ASSERTION
            form["client_assertion"] = self.mint_assertion(ca.client_id,
                                                           self.assertion_audience(endpoint))
            form["client_id"] = ca.client_id
        elif ca.method == "client_secret_basic":
            # RFC 6749 2.3.1: form-urlencode both parts before Basic
            creds = f"{quote(ca.client_id, safe='')}:{quote(self._secret(), safe='')}"
            headers["Authorization"] = "Basic " + base64.b64encode(creds.encode()).decode()
        elif ca.method == "client_secret_post":
            form["client_id"] = ca.client_id
            form["client_secret"] = self._secret()
        else:  # tls_client_auth (the certificate is on the connection) or none
            form["client_id"] = ca.client_id

    # ---- the call ----------------------------------------------------------------------------

    async def request(self, form: dict[str, Any], requested_type: str | None,
                      dpop_key: SigningKey | None = None) -> TokenResponse:
        """POST to the token endpoint. With ``dpop_key``, each attempt carries a fresh DPoP
        proof (RFC 9449 section 5) and a ``use_dpop_nonce`` answer is retried exactly once
        with the server's nonce."""
        self.breaker.before()
        endpoint = await self.token_endpoint()
        started = time.perf_counter()
        attempt = 0
        nonce: str | None = None
        nonce_retried = False
        while True:
            attempt += 1
            body = dict(form)
            headers = {"Accept": "application/json"}
            # fresh client assertion per attempt: servers refuse a replayed jti
            await self._client_auth(body, headers, endpoint)
            if dpop_key is not None:
                headers["DPoP"] = dpop_proof(dpop_key, "POST", endpoint, self.clock.now(),
                                             nonce=nonce)
            try:
                self.calls += 1
                async with self.session().post(endpoint, data=_encode(body),
                                               headers={**headers, "Content-Type":
                                                        "application/x-www-form-urlencoded"}
                                               ) as r:
                    status = r.status
                    raw = await r.content.read(MAX_RESPONSE + 1)
                    server_nonce = r.headers.get("DPoP-Nonce")
            except (TimeoutError, aiohttp.ServerTimeoutError):
                outcome, err = "timeout", ExchangeError(Reason.EXCHANGE_STS_TIMEOUT,
                                                        "token service timed out")
            except (aiohttp.ClientError, OSError):
                outcome, err = "unreachable", ExchangeError(Reason.EXCHANGE_STS_UNAVAILABLE,
                                                            "token service unreachable")
            else:
                if status >= 500:
                    outcome, err = "5xx", ExchangeError(Reason.EXCHANGE_STS_UNAVAILABLE,
                                                        "token service failed")
                else:
                    if (dpop_key is not None and status == 400 and server_nonce
                            and not nonce_retried and b"use_dpop_nonce" in raw):
                        nonce, nonce_retried = server_nonce, True
                        attempt -= 1  # a nonce challenge is not a failure
                        continue
                    self.breaker.success()
                    self.observe(self.name, "ok" if status == 200 else "rejected",
                                 time.perf_counter() - started)
                    return self._parse(status, raw, requested_type,
                                       dpop_required=dpop_key is not None)
            if attempt > self.cfg.retries or outcome == "timeout":
                # no retry after a timeout: the deadline is spent
                self.breaker.failure()
                self.observe(self.name, outcome, time.perf_counter() - started)
                raise err
            await asyncio.sleep(0.05 * (2 ** (attempt - 1)) * random.uniform(0.5, 1.5))  # noqa: S311

    def _parse(self, status: int, raw: bytes, requested_type: str | None,
               dpop_required: bool = False) -> TokenResponse:
        if len(raw) > MAX_RESPONSE:
            raise ExchangeError(Reason.EXCHANGE_BAD_RESPONSE, "token service answer too large")
        try:
            data = json.loads(raw)
        except ValueError:
            data = None
        if not isinstance(data, dict):
            raise ExchangeError(Reason.EXCHANGE_BAD_RESPONSE, "token service answer is not JSON")
        if status != 200:
            code = data.get("error")
            code = code if code in KNOWN_ERRORS else "other"
            # error_description stays here: it is the STS's text and may leak details
            log.info("token service %s refused: %s %s", self.name, status, code)
            # About the caller (its token, its rights): 403. About us (client auth, request
            # shape): 502, an operator has to look.
            reason = (Reason.EXCHANGE_STS_REFUSED if code in CALLER_ERRORS
                      else Reason.EXCHANGE_STS_REJECTED)
            raise ExchangeError(reason,
                                f"token service refused the exchange ({code})",
                                extra={"sts_error": code})
        token = data.get("access_token")
        token_type = data.get("token_type")
        if not isinstance(token, str) or not token or len(token) > 16384:
            raise ExchangeError(Reason.EXCHANGE_BAD_RESPONSE, "no usable access_token")
        if not isinstance(token_type, str) or token_type.lower() not in ("bearer", "dpop",
                                                                          "n_a"):
            raise ExchangeError(Reason.EXCHANGE_BAD_RESPONSE, "missing or unknown token_type")
        if dpop_required and token_type.lower() != "dpop":
            # RFC 9449 5: a Bearer answer means the server did not bind it; we asked for a bound
            # token, and an unbound one would be a downgrade.
            raise ExchangeError(Reason.EXCHANGE_BAD_RESPONSE, "token service did not bind the "
                                "token to our DPoP key")
        issued = data.get("issued_token_type")
        if issued is None:
            # RFC 8693 2.2.1 requires it; some servers omit it. Accept only when an access
            # token is what we asked for (or we asked for nothing in particular).
            if requested_type not in (None, TT_ACCESS):
                raise ExchangeError(Reason.EXCHANGE_BAD_RESPONSE, "no issued_token_type")
            issued = TT_ACCESS
        elif not isinstance(issued, str) or (requested_type and issued != requested_type):
            raise ExchangeError(Reason.EXCHANGE_BAD_RESPONSE, "issued_token_type is not the "
                                "requested one")
        claims: dict[str, Any] = {}
        try:
            claims = jwt.decode(token, options={"verify_signature": False})
        except jwt.PyJWTError:
            claims = {}
        now = self.clock.now()
        exp_in = data.get("expires_in")
        if exp_in is not None and (isinstance(exp_in, bool) or not isinstance(exp_in, int | float)
                                   or not 0 < exp_in <= self.cfg.max_expires_in):
            raise ExchangeError(Reason.EXCHANGE_BAD_RESPONSE, "expires_in out of range")
        jwt_exp = claims.get("exp")
        if isinstance(jwt_exp, int | float) and not isinstance(jwt_exp, bool):
            # the token's own exp is what the upstream will honour: it is the real lifetime
            expires_at = float(jwt_exp)
            if exp_in is not None:
                expires_at = max(expires_at, now + float(exp_in))
        elif exp_in is not None:
            expires_at = now + float(exp_in)
        else:
            raise ExchangeError(Reason.EXCHANGE_BAD_RESPONSE, "no lifetime (expires_in) given")
        if expires_at <= now:
            raise ExchangeError(Reason.EXCHANGE_BAD_RESPONSE, "token already expired")
        return TokenResponse(token, token_type, issued, expires_at, claims)


def _encode(form: dict[str, Any]) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    for k, v in form.items():
        if v is None:
            continue
        for item in v if isinstance(v, list | tuple) else [v]:
            out.append((k, str(item)))
    return out


def translation(caller: Caller, claims: dict[str, Any]) -> tuple[tuple[str, ...],
                                                                   tuple[str, ...]]:
    """Which of the caller's claims survive in the new token, and which are lost."""
    inp = {k for k in caller.claims if k not in ("exp", "iat", "nbf", "jti", "aud", "iss")}
    carried = tuple(sorted(k for k in inp if k in claims))
    dropped = tuple(sorted(inp - set(carried)))
    return carried, dropped


def credential_from(resp: TokenResponse, caller: Caller, issuer: str,
                    dpop_key: SigningKey | None = None) -> Credential:
    carried, dropped = translation(caller, resp.claims)
    jti = resp.claims.get("jti")
    return Credential(
        token=resp.access_token,
        token_type={"bearer": "Bearer", "dpop": "DPoP"}.get(resp.token_type.lower(), "N_A"),
        issued_token_type=resp.issued_token_type, expires_at=resp.expires_at,
        proof_of_possession=resp.token_type.lower() == "dpop",
        token_id=str(jti) if isinstance(jti, str) else
        "sha256:" + hashlib.sha256(resp.access_token.encode()).hexdigest()[:32],
        issuer=issuer, claims_carried=carried, claims_dropped=dropped,
        proof_key=dpop_key if resp.token_type.lower() == "dpop" else None,
    )


class GatewayTokenMinter:
    """Short-lived JWTs the gateway signs about a verified caller (subject tokens, actors)."""

    def __init__(self, issuer: str, key: SigningKey, client_id: str, clock: Clock) -> None:
        self.issuer = issuer
        self.key = key
        self.client_id = client_id
        self.clock = clock

    def subject_token(self, caller: Caller, audience: str, lifetime: float = 60) -> str:
        now = int(self.clock.now())
        exp = now + int(lifetime)
        if caller.expires_at is not None:
            exp = min(exp, int(caller.expires_at))
        claims = {"iss": self.issuer, "sub": caller.identity, "aud": audience, "iat": now,
                  "exp": exp, "jti": secrets.token_urlsafe(16), "amr": [caller.method.value]}
        return jwt.encode(claims, self.key.private_key, algorithm=self.key.alg,
                          headers={"kid": self.key.kid, "typ": "JWT"})

    def actor_token(self, audience: str, lifetime: float = 60) -> str:
        now = int(self.clock.now())
        claims = {"iss": self.issuer, "sub": self.client_id, "aud": audience, "iat": now,
                  "exp": now + int(lifetime), "jti": secrets.token_urlsafe(16)}
        return jwt.encode(claims, self.key.private_key, algorithm=self.key.alg,
                          headers={"kid": self.key.kid, "typ": "JWT"})


class StsExchanger:
    """RFC 8693 token exchange at a configured STS."""

    kind = "sts"

    def __init__(self, cfg: StsExchangeConfig, client: TokenServiceClient,
                 minter: GatewayTokenMinter | None, on_behalf_of: bool) -> None:
        self.cfg = cfg
        self.client = client
        self.minter = minter
        self.on_behalf_of = on_behalf_of

    def cache_key(self, caller: Caller, dest: Destination) -> tuple[str, ...]:
        subject = caller.credential_id or "" if self.cfg.subject == "caller_token" else "minted"
        return (self.cfg.audience or "", self.cfg.resource or "", self.cfg.scope or "",
                self.cfg.requested_token_type or "", subject)

    async def exchange(self, caller: Caller, dest: Destination, max_lifetime: float
                       ) -> Credential:
        endpoint = await self.client.token_endpoint()
        aud = self.client.assertion_audience(endpoint)
        if self.cfg.subject == "caller_token":
            # SECURITY: only a bearer JWT the caller sent as such; a WIT never reaches an STS
            # as a bearer subject_token (WIMSE forbids using it as a bearer credential).
            if not caller.raw_token:
                raise ExchangeError(Reason.EXCHANGE_NO_SUBJECT,
                                    "the caller sent no token this profile can exchange")
            subject = caller.raw_token
        else:
            assert self.minter is not None
            subject = self.minter.subject_token(caller, aud, min(60.0, max_lifetime))
        form: dict[str, Any] = {
            "grant_type": TOKEN_EXCHANGE,
            "subject_token": subject,
            "subject_token_type": TT_JWT,
            "audience": self.cfg.audience,
            "resource": self.cfg.resource,
            "scope": self.cfg.scope,
            "requested_token_type": self.cfg.requested_token_type,
        }
        if self.on_behalf_of:
            assert self.minter is not None
            form["actor_token"] = self.minter.actor_token(aud)
            form["actor_token_type"] = TT_JWT
        key = SigningKey.generate() if self.cfg.dpop else None
        resp = await self.client.request(form, self.cfg.requested_token_type, key)
        return credential_from(resp, caller, self.client.cfg.issuer or endpoint, key)


class ClientCredentialsExchanger:
    """RFC 7523 client authentication with a JWT assertion for the caller, so every SPIFFE
    workload is its own OAuth client without a secret of its own."""

    kind = "client_credentials"

    def __init__(self, cfg: ClientCredentialsExchangeConfig, client: TokenServiceClient) -> None:
        self.cfg = cfg
        self.client = client

    def cache_key(self, caller: Caller, dest: Destination) -> tuple[str, ...]:
        return (self.cfg.resource or "", self.cfg.scope or "", self.cfg.client_id)

    async def exchange(self, caller: Caller, dest: Destination, max_lifetime: float
                       ) -> Credential:
        form: dict[str, Any] = {"grant_type": "client_credentials",
                                "resource": self.cfg.resource, "scope": self.cfg.scope}
        if self.cfg.client_id == "caller_identity":
            if not caller.identity:
                raise ExchangeError(Reason.EXCHANGE_NO_SUBJECT, "no caller identity")
            endpoint = await self.client.token_endpoint()
            form["client_id"] = caller.identity
            form["client_assertion_type"] = JWT_BEARER_ASSERTION
            form["client_assertion"] = self.client.mint_assertion(
                caller.identity, self.client.assertion_audience(endpoint))
        key = SigningKey.generate() if self.cfg.dpop else None
        resp = await self.client.request(form, None, key)
        return credential_from(resp, caller, self.client.cfg.issuer or "sts", key)
