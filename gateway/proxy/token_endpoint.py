"""The gateway as an RFC 8693 token endpoint (the "credential exchanger" pattern of the WIMSE
credential-exchange draft, section 5.2), for workloads that ask explicitly instead of being
proxied.

Same authentication, same policy, same exchangers, cache and guard rails as the proxy. The
request names the destination with ``resource`` (or an absolute-URI ``audience``); policy sees it
as route ``token-endpoint``. The caller is the authenticated client: ``subject_token``, when
sent, must verify and name that same workload (delegation to another subject is not offered
here); a client that proved possession of a key (mTLS, WIT, HTTP signature, DPoP) may omit it.
Errors are RFC 6749 section 5.2 JSON, with our stable ``reason`` as an extra member.
"""

from __future__ import annotations

import json
import time
from typing import Any

from aiohttp import web
from yarl import URL

from gateway.authn.request import normalize_uri
from gateway.config.models import ListenerConfig
from gateway.errors import AuthnError, ExchangeError, GatewayError, PolicyError, Reason
from gateway.model import Action, Caller, Destination, Inbound
from gateway.proxy import pipeline
from gateway.proxy.tlsinfo import peer_chain
from gateway.runtime import Runtime

ROUTE = "token-endpoint"
TOKEN_EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"
MAX_FORM = 64 * 1024


def _oauth_error(status: int, error: str, description: str, reason: str, request_id: str,
                 headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        status=status, content_type="application/json",
        body=json.dumps({"error": error, "error_description": description, "reason": reason,
                         "request_id": request_id}).encode(),
        headers={"Cache-Control": "no-store", "X-Request-Id": request_id, **(headers or {})})


def _from_gateway_error(err: GatewayError, request_id: str) -> web.Response:
    if isinstance(err, AuthnError):
        # RFC 6749 5.2: client authentication failed -> 401 invalid_client
        return _oauth_error(401, "invalid_client", err.detail, err.reason.code, request_id,
                            {k: v for k, v in err.headers.items() if k == "WWW-Authenticate"}
                            or {"WWW-Authenticate": 'Bearer realm="wimse-gateway"'})
    if isinstance(err, PolicyError):
        error = "invalid_target" if err.reason is Reason.POLICY_DENIED else "invalid_grant"
        return _oauth_error(400, error, err.detail, err.reason.code, request_id)
    if isinstance(err, ExchangeError):
        if err.reason in (Reason.EXCHANGE_STS_REFUSED, Reason.EXCHANGE_NO_SUBJECT):
            return _oauth_error(400, "invalid_grant", err.detail, err.reason.code, request_id)
        status = 503 if err.status in (503, 504) else 500
        error = "temporarily_unavailable" if status == 503 else "server_error"
        return _oauth_error(status, error, err.detail, err.reason.code, request_id)
    return _oauth_error(400, "invalid_request", err.detail, err.reason.code, request_id)


def endpoint_urls(rt: Runtime, listener: ListenerConfig, port: int) -> frozenset[str]:
    """The URIs a client's proof may name for this endpoint: configured, or the listener's."""
    te = rt.config.token_endpoint
    scheme = "https" if listener.tls else "http"
    urls = {normalize_uri(f"{scheme}://{listener.address}:{port}{te.path}")}
    if te.public_url:
        urls.add(normalize_uri(te.public_url))
    urls.discard(None)
    return frozenset(urls)  # type: ignore[arg-type]


async def metadata(rt: Runtime, listener: ListenerConfig, port: int) -> web.Response:
    """RFC 8414 authorization server metadata."""
    te = rt.config.token_endpoint
    issuer = rt.config.issuer.issuer if rt.config.issuer else None
    token_url = te.public_url or sorted(endpoint_urls(rt, listener, port))[0]
    return web.json_response({
        "issuer": issuer,
        "token_endpoint": token_url,
        "grant_types_supported": [TOKEN_EXCHANGE],
        "token_endpoint_auth_methods_supported": ["tls_client_auth", "private_key_jwt"],
        "dpop_signing_alg_values_supported": sorted(rt.config.authentication.dpop.algorithms),
    })


async def handle(svc: pipeline.Services, rt: Runtime, listener: ListenerConfig,
                 request: web.BaseRequest, request_id: str, port: int) -> web.StreamResponse:
    started = time.perf_counter()
    rec: dict[str, Any] = {"ts": round(svc.clock.now(), 3), "request_id": request_id,
                           "listener": listener.name, "method": request.method,
                           "mode": ROUTE, "policy_digest": rt.policy.digest}
    status = 500
    decision_label = "refused"
    try:
        if request.method != "POST":
            return _oauth_error(405, "invalid_request", "use POST", "request.method_unsupported",
                                request_id, {"Allow": "POST"})
        if (request.content_length or 0) > MAX_FORM:
            raise GatewayError(Reason.REQUEST_BODY_TOO_LARGE)
        form = await request.post()
        if form.get("grant_type") != TOKEN_EXCHANGE:
            status = 400
            return _oauth_error(400, "unsupported_grant_type", "only token exchange is offered",
                                "request.malformed", request_id)
        inbound = Inbound(method=request.method, target=request.url, headers=request.headers,
                          peer_address=request.remote, peer_chain=peer_chain(request),
                          targets=endpoint_urls(rt, listener, port))
        try:
            caller = await rt.authn.authenticate(inbound)
        except AuthnError as exc:
            svc.metrics.authn_failures.labels(exc.reason.code).inc()
            raise
        caller = await _subject(rt, svc, caller, form)
        rec["caller"] = {"identity": caller.identity, "method": caller.method.value,
                         "pop": caller.proof_of_possession, "credential": caller.credential_id}
        target = form.get("resource") or form.get("audience")
        url = URL(str(target)) if target else None
        if url is None or url.scheme not in ("http", "https") or not url.host:
            status = 400
            return _oauth_error(400, "invalid_target", "resource (or an absolute-URI audience) "
                                "names the destination", "request.malformed", request_id)
        dest = Destination(url=url, method="POST", route=ROUTE, mode="sts")
        rec["destination"] = {"route": ROUTE, "origin": dest.origin, "path": dest.path}
        decision = rt.policy.engine.decide(caller, dest)
        rec["rule"], rec["decision"] = decision.rule_id, decision.action.value
        decision_label = decision.action.value
        if decision.action is not Action.EXCHANGE:
            raise PolicyError(Reason.POLICY_DENIED, f"rule {decision.rule_id} issues nothing "
                              "for this target")
        assert decision.profile is not None
        prof = rt.profiles[decision.profile]
        cred = await pipeline.exchange(svc, caller, dest, decision, prof)
        rec["profile"] = prof.name
        rec["exchange"] = pipeline.exchange_record(svc, caller, cred)
        status = 200
        body: dict[str, Any] = {
            "access_token": cred.token,
            "issued_token_type": cred.issued_token_type,
            "token_type": cred.token_type,
            "expires_in": max(1, int(cred.expires_at - svc.clock.now())),
        }
        return web.json_response(body, headers={"Cache-Control": "no-store",
                                                "X-Request-Id": request_id})
    except GatewayError as exc:
        rec["reason"] = exc.reason.code
        svc.metrics.refusals.labels(exc.reason.code).inc()
        resp = _from_gateway_error(exc, request_id)
        status = resp.status
        return resp
    finally:
        rec["status"] = status
        rec["duration_ms"] = round((time.perf_counter() - started) * 1000, 3)
        svc.metrics.requests.labels(ROUTE, decision_label, str(status)).inc()
        svc.audit.write(rec)


async def _subject(rt: Runtime, svc: pipeline.Services, caller: Caller, form: Any) -> Caller:
    """RFC 8693 subject_token: it must be the authenticated client itself."""
    if not caller.authenticated:
        raise AuthnError(Reason.AUTHN_MISSING, "authenticate the client (mTLS, WIT, DPoP, "
                         "HTTP signature or a bearer JWT)")
    subject = form.get("subject_token")
    if subject is None:
        if not caller.proof_of_possession:
            raise GatewayError(Reason.REQUEST_MALFORMED, "subject_token is required")
        return caller
    subject = str(subject)
    if subject == caller.raw_token:
        return caller
    verifier = rt.jwt_verifier
    if verifier is None:
        raise GatewayError(Reason.REQUEST_MALFORMED, "subject_token cannot be verified here")
    v = await verifier.verify(subject, svc.clock.now(), challenge='Bearer realm="wimse-gateway"')
    if v.identity != caller.identity:
        raise GatewayError(Reason.REQUEST_MALFORMED, "subject_token must name the "
                           "authenticated client")
    # The subject's lifetime bounds what we hand out (guard rail), the client's proof stays.
    expires = min(x for x in (caller.expires_at, v.expires_at) if x is not None)
    return Caller(caller.identity, caller.trust_domain, caller.method,
                  caller.proof_of_possession, expires, {**v.claims, **caller.claims},
                  caller.key_thumbprint, caller.credential_id, subject)
