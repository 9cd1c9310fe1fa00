"""The one-way pipeline: authenticate -> decide -> exchange -> inject -> forward -> record.

Each stage returns a value or raises a GatewayError. This function, not the stages, records the
metrics and writes exactly one audit line per request, in a ``finally``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from multidict import CIMultiDict

from gateway.clock import Clock
from gateway.config.models import ListenerConfig
from gateway.errors import AuthnError, GatewayError, PolicyError, Reason, RequestError
from gateway.exchange.cache import CredentialCache
from gateway.inject.base import Outgoing, strip_caller_credentials
from gateway.model import Action, Caller, Credential, Decision, Destination, Inbound
from gateway.observe.audit import AuditLog
from gateway.observe.metrics import Metrics
from gateway.policy import guards
from gateway.proxy import forward, routes
from gateway.proxy.tlsinfo import peer_chain
from gateway.runtime import ProfileRuntime, Runtime

log = logging.getLogger("wimse_gateway.pipeline")
PID = os.getpid()  # which worker process wrote an audit line


@dataclass
class Services:
    """Process-wide parts that outlive a runtime (reloads keep pools, caches and counters)."""

    clock: Clock
    metrics: Metrics
    audit: AuditLog
    cache: CredentialCache
    pool: forward.UpstreamPool
    instance: str = field(default_factory=lambda: secrets.token_hex(4))


def token_hash(token: str) -> str:
    return "sha256:" + hashlib.sha256(token.encode()).hexdigest()[:32]


def _header_bytes(request: web.BaseRequest) -> int:
    return sum(len(k) + len(v) + 4 for k, v in request.raw_headers)


async def exchange(
    svc: Services, caller: Caller, dest: Destination, decision: Decision, prof: ProfileRuntime
) -> Credential:
    """The exchange stage: cached, one exchange in flight per key, guard rails enforced."""
    wanted = 24 * 3600.0
    max_lifetime = guards.max_lifetime_for(caller, decision, svc.clock.now(), wanted)
    key = (
        caller.identity,
        prof.name,
        prof.fingerprint,
        decision.allow_lifetime_extension,
        *prof.exchanger.cache_key(caller, dest),
    )

    async def fetch() -> Credential:
        started = svc.clock.monotonic()
        try:
            cred = await prof.exchanger.exchange(caller, dest, max_lifetime)
        except GatewayError as exc:
            svc.metrics.exchanges.labels(prof.name, exc.reason.code).inc()
            raise
        svc.metrics.exchanges.labels(prof.name, "ok").inc()
        svc.metrics.exchange_seconds.labels(prof.name).observe(svc.clock.monotonic() - started)
        return cred

    not_after = None if decision.allow_lifetime_extension else caller.expires_at
    cred = await svc.cache.get(key, fetch, not_after=not_after)
    # Engine-enforced guard rails: whatever the exchanger or its STS returned.
    guards.check_credential(caller, decision, cred)
    return cred


async def handle(
    svc: Services, rt: Runtime, listener: ListenerConfig, request: web.BaseRequest, request_id: str
) -> web.StreamResponse:
    """Run one request through every stage. Raises GatewayError for the middleware to render."""
    started = time.perf_counter()
    cfg = rt.config
    rec: dict[str, Any] = {
        "ts": round(svc.clock.now(), 3),
        "request_id": request_id,
        "listener": listener.name,
        "method": request.method,
        "policy_digest": rt.policy.digest,
        "pid": PID,
    }
    route_label = "-"
    decision_label = "error"
    status = 500
    svc.metrics.in_flight.inc()
    try:
        # SECURITY: header floods; aiohttp's own cap is set above ours so we can answer 431.
        if _header_bytes(request) > cfg.limits.max_header_bytes:
            raise RequestError(Reason.REQUEST_HEADER_TOO_LARGE, "request headers over the limit")
        via_token = f"{cfg.gateway_name}-{svc.instance}"
        # SECURITY: a forward proxy pointed at itself would loop until sockets run out.
        if any(via_token in v for v in request.headers.getall("Via", ())):
            raise RequestError(Reason.REQUEST_LOOP, "request already passed this gateway")

        dest, settings, route = routes.resolve(rt, request, listener)
        route_label = dest.route
        rec["destination"] = {"route": dest.route, "mode": dest.mode, "method": dest.method,
                              "origin": dest.origin, "path": dest.path}

        buffered = forward.BufferedBody(request, cfg.limits.max_buffered_body_bytes)
        inbound = Inbound(
            method=request.method,
            target=request.url,
            headers=request.headers,
            peer_address=request.remote,
            peer_chain=peer_chain(request),
            targets=rt.targets_for(dest.url, route, request.rel_url.raw_path),
            has_body=request.body_exists,
            read_body=buffered.read,
        )
        try:
            caller = await rt.authn.authenticate(inbound)
            if rt.txn_verifier is not None and rt.txn_verifier.present(inbound):
                txn = await rt.txn_verifier.verify(inbound, svc.clock.now())
                caller = dataclasses.replace(caller, claims={**caller.claims, "txn_token": txn})
                rec["txn"] = txn["txn"]
        except AuthnError as exc:
            svc.metrics.authn_failures.labels(exc.reason.code).inc()
            raise
        rec["caller"] = {"identity": caller.identity, "method": caller.method.value,
                         "pop": caller.proof_of_possession, "credential": caller.credential_id,
                         "expires_at": caller.expires_at}

        decision = rt.policy.engine.decide(caller, dest)
        decision_label = decision.action.value
        rec["rule"] = decision.rule_id
        rec["decision"] = decision.action.value
        if decision.action is Action.DENY:
            if not caller.authenticated:
                raise AuthnError(Reason.AUTHN_MISSING, "this destination needs an authenticated "
                                 "caller", challenge='Bearer realm="wimse-gateway"')
            raise PolicyError(Reason.POLICY_DENIED, f"rule {decision.rule_id} denies this request")
        if decision.upgrade_tls and dest.scheme == "http":
            dest = Destination(routes.upgrade_to_https(dest.url), dest.method, dest.route,
                               dest.mode)
            rec["destination"]["origin"] = dest.origin

        headers = forward.end_to_end_headers(request.headers)
        if not decision.pass_credentials:
            strip_caller_credentials(headers)
        # Proof-bound injectors sign what leaves, so every other header is set first.
        _set_forwarding_headers(request, headers, dest, via_token, request_id)

        if decision.action is Action.EXCHANGE:
            if not caller.authenticated:
                raise AuthnError(Reason.AUTHN_MISSING, "credential exchange needs an "
                                 "authenticated caller", challenge='Bearer realm="wimse-gateway"')
            assert decision.profile is not None
            prof = rt.profiles[decision.profile]
            rec["profile"] = prof.name
            steps = (*prof.includes, prof)
            creds = [await exchange(svc, caller, dest, decision, p) for p in steps]
            out = Outgoing(headers, dest)
            if request.body_exists and prof.needs_body:
                out.body = await buffered.read()
            rec["injected"] = []
            records = []
            for step, cred in zip(steps, creds, strict=True):
                for injector in step.injectors:
                    injector.inject(out, cred)
                rec["injected"].extend(i.kind for i in step.injectors)
                records.append({**exchange_record(svc, caller, cred), **out.notes})
                out.notes = {}
            rec["exchange"] = records[-1]
            if len(steps) > 1:
                rec["included"] = [{"profile": p.name, "exchange": r}
                                   for p, r in zip(steps[:-1], records[:-1], strict=True)]
            if out.client_certificate is not None:
                settings = settings.with_client_certificate(out.client_certificate, dest)

        body = forward.request_body(request, headers, cfg.limits.max_request_body_bytes,
                                    buffered)
        up_started = time.perf_counter()
        upstream = await forward.send(svc.pool, settings, request, dest, headers, body)
        svc.metrics.child(svc.metrics.upstream_seconds, route_label).observe(
            time.perf_counter() - up_started)
        status = upstream.status
        rec["upstream_status"] = upstream.status
        resp_headers = forward.response_headers(upstream)
        resp_headers.add("Via", f"1.1 {via_token}")
        resp_headers["X-Request-Id"] = request_id
        svc.metrics.child(svc.metrics.request_seconds, route_label).observe(
            time.perf_counter() - started)
        return await forward.relay(request, upstream, resp_headers)
    except GatewayError as exc:
        status = exc.status
        rec["reason"] = exc.reason.code
        svc.metrics.refusals.labels(exc.reason.code).inc()
        if decision_label == "error" and isinstance(exc, RequestError | AuthnError):
            decision_label = "refused"
        raise
    except Exception:
        rec["reason"] = Reason.INTERNAL.code
        raise
    finally:
        svc.metrics.in_flight.dec()
        rec["status"] = status
        rec["duration_ms"] = round((time.perf_counter() - started) * 1000, 3)
        svc.metrics.child(svc.metrics.requests, route_label, decision_label, str(status)).inc()
        try:
            svc.audit.write(rec)
        except Exception:
            log.exception("audit write failed")


def exchange_record(svc: Services, caller: Caller, cred: Credential) -> dict[str, Any]:
    """The translation record for the audit line: identifiers and hashes, never a token."""
    now = svc.clock.now()
    return {
        "in": {"method": caller.method.value, "credential": caller.credential_id,
               "expires_at": caller.expires_at},
        "out": {"type": cred.issued_token_type, "token_type": cred.token_type,
                "jti": cred.token_id, "hash": token_hash(cred.token), "issuer": cred.issuer,
                "expires_at": cred.expires_at, "pop": cred.proof_of_possession},
        "claims_carried": list(cred.claims_carried),
        "claims_dropped": list(cred.claims_dropped),
        "lifetime_granted": round(cred.expires_at - now, 1),
        "caller_remaining": round(caller.expires_at - now, 1) if caller.expires_at else None,
    }


def _set_forwarding_headers(
    request: web.BaseRequest,
    headers: CIMultiDict[str],
    dest: Destination,
    via: str,
    request_id: str,
) -> None:
    peer = request.remote or "unknown"
    prior = request.headers.get("X-Forwarded-For")
    headers["X-Forwarded-For"] = f"{prior}, {peer}" if prior else peer
    headers["X-Forwarded-Proto"] = request.scheme
    headers["X-Forwarded-Host"] = request.host
    host = request.host.replace('"', "")
    node = f'"[{peer}]"' if ":" in peer else peer
    fwd = f'for={node};proto={request.scheme};host="{host}"'
    prior_fwd = request.headers.get("Forwarded")
    headers["Forwarded"] = f"{prior_fwd}, {fwd}" if prior_fwd else fwd
    headers.add("Via", f"{request.version.major}.{request.version.minor} {via}")
    headers["X-Request-Id"] = request_id
