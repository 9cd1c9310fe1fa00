"""Error families and stable reasons, rendered as RFC 9457 problem details.

Every refusal in the gateway is a :class:`GatewayError` carrying a :class:`Reason`. The reason
fixes the HTTP status in one place, so a stage cannot pick a status that disagrees with its
reason. Reasons are public API: clients and dashboards match on them, so values never change.
The ``detail`` text is always the gateway's own words; input is never echoed into it.
"""

from __future__ import annotations

import enum
from typing import Any


class Reason(enum.Enum):
    """A machine-readable refusal reason: ``<stage>.<snake_case>`` and its HTTP status."""

    def __init__(self, code: str, status: int, title: str) -> None:
        self.code = code
        self.status = status
        self.title = title

    # request: the HTTP message itself is unacceptable
    REQUEST_MALFORMED = ("request.malformed", 400, "Malformed request")
    REQUEST_BODY_TOO_LARGE = ("request.body_too_large", 413, "Request body too large")
    REQUEST_HEADER_TOO_LARGE = ("request.header_too_large", 431, "Request header too large")
    REQUEST_NO_ROUTE = ("request.no_route", 404, "No route for this request")
    REQUEST_METHOD_UNSUPPORTED = ("request.method_unsupported", 405, "Method not supported")
    REQUEST_LOOP = ("request.loop", 508, "Request loops through the gateway")

    # authn: who is calling
    AUTHN_MISSING = ("authn.missing", 401, "Authentication required")
    AUTHN_MALFORMED = ("authn.malformed", 401, "Malformed credential")
    AUTHN_EXPIRED = ("authn.expired", 401, "Credential expired")
    AUTHN_NOT_YET_VALID = ("authn.not_yet_valid", 401, "Credential not yet valid")
    AUTHN_BAD_SIGNATURE = ("authn.bad_signature", 401, "Signature verification failed")
    AUTHN_UNTRUSTED = ("authn.untrusted", 401, "Credential not issued by a trusted authority")
    AUTHN_INVALID_IDENTITY = ("authn.invalid_identity", 401, "Credential names no valid identity")
    AUTHN_INVALID_CERTIFICATE = ("authn.invalid_certificate", 401, "Client certificate refused")
    AUTHN_REPLAYED = ("authn.replayed", 401, "Proof already used")
    AUTHN_TOO_LARGE = ("authn.too_large", 401, "Credential too large")
    AUTHN_DUPLICATE = ("authn.duplicate_header", 401, "Credential header sent more than once")
    AUTHN_ALG_NOT_ALLOWED = ("authn.alg_not_allowed", 401, "Signature algorithm not allowed")
    AUTHN_WRONG_TYPE = ("authn.wrong_type", 401, "Wrong token type (typ)")
    AUTHN_UNKNOWN_KEY = ("authn.unknown_key", 401, "Signing key unknown")
    AUTHN_MISSING_CLAIM = ("authn.missing_claim", 401, "Required claim missing or invalid")
    AUTHN_WRONG_AUDIENCE = ("authn.wrong_audience", 401, "Credential meant for another audience")
    AUTHN_WRONG_TARGET = ("authn.wrong_target", 401, "Proof made for another URI")
    AUTHN_WRONG_METHOD = ("authn.wrong_method", 401, "Proof made for another HTTP method")
    AUTHN_HASH_MISMATCH = (
        "authn.token_hash_mismatch", 401, "Proof does not cover the tokens sent with it")
    AUTHN_KEY_BINDING = (
        "authn.key_binding_mismatch", 401, "Token is bound to another key than the proof's")
    AUTHN_TOKEN_BOUND = (
        "authn.bound_token_as_bearer", 401, "Key-bound token presented as a bearer token")
    AUTHN_DIGEST_MISMATCH = ("authn.digest_mismatch", 401, "Content-Digest does not match body")
    AUTHN_NONCE_REQUIRED = ("authn.use_dpop_nonce", 401, "A server nonce is required")

    # policy: what the caller may do
    POLICY_DENIED = ("policy.denied", 403, "Denied by policy")
    POLICY_METHOD_NOT_ACCEPTED = (
        "policy.authn_method_not_accepted",
        403,
        "Authentication method not accepted for this destination",
    )
    POLICY_LIFETIME_EXTENSION = (
        "policy.lifetime_extension",
        403,
        "Exchanged credential would outlive the caller's credential",
    )
    POLICY_ASSURANCE_UPGRADE = (
        "policy.assurance_upgrade",
        403,
        "Exchanged credential would be of higher assurance than the caller's",
    )

    # exchange: obtaining the destination's credential
    EXCHANGE_FAILED = ("exchange.failed", 502, "Credential exchange failed")
    EXCHANGE_STS_REJECTED = (
        "exchange.sts_rejected", 502, "Token service refused the gateway's request")
    EXCHANGE_STS_REFUSED = (
        "exchange.sts_refused", 403, "Token service refused a credential for this caller")
    EXCHANGE_NO_SUBJECT = (
        "exchange.no_subject_token", 403, "The caller sent no token this exchange can use")
    EXCHANGE_STS_UNAVAILABLE = ("exchange.sts_unavailable", 503, "Token service unavailable")
    EXCHANGE_STS_TIMEOUT = ("exchange.sts_timeout", 504, "Token service timed out")
    EXCHANGE_BAD_RESPONSE = ("exchange.bad_response", 502, "Token service answered nonsense")
    EXCHANGE_CIRCUIT_OPEN = ("exchange.circuit_open", 503, "Token service circuit open")

    # upstream: reaching the destination
    UPSTREAM_UNREACHABLE = ("upstream.unreachable", 502, "Upstream unreachable")
    UPSTREAM_TIMEOUT = ("upstream.timeout", 504, "Upstream timed out")
    UPSTREAM_TLS = ("upstream.tls", 502, "TLS to upstream failed")
    UPSTREAM_PROTOCOL = ("upstream.protocol", 502, "Upstream broke the HTTP protocol")

    # anything the gateway did not foresee
    INTERNAL = ("internal", 500, "Internal error")
    UNAVAILABLE = ("unavailable", 503, "Gateway not ready")


PROBLEM_TYPE_BASE = "https://wimse-gateway.dev/problems/"


class GatewayError(Exception):
    """A refusal with a stable reason. ``detail`` must never contain request input."""

    family = "gateway"

    def __init__(
        self,
        reason: Reason,
        detail: str | None = None,
        *,
        headers: dict[str, str] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(f"{reason.code}: {detail or reason.title}")
        self.reason = reason
        self.detail = detail or reason.title
        self.headers = dict(headers or {})
        self.extra = dict(extra or {})

    @property
    def status(self) -> int:
        return self.reason.status


class RequestError(GatewayError):
    family = "request"


class AuthnError(GatewayError):
    """Authentication failed. ``challenge`` names the scheme for ``WWW-Authenticate``.

    The WIMSE drafts ask for 400 rather than 401 (they define no ``WWW-Authenticate``
    scheme); those verifiers pass ``status_override=400``.
    """

    family = "authn"

    def __init__(
        self,
        reason: Reason,
        detail: str | None = None,
        *,
        challenge: str | None = None,
        status_override: int | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(reason, detail, headers=headers)
        self.status_override = status_override
        if challenge and status_override is None:
            self.headers.setdefault("WWW-Authenticate", challenge)

    @property
    def status(self) -> int:
        return self.status_override or self.reason.status


class PolicyError(GatewayError):
    family = "policy"


class ExchangeError(GatewayError):
    family = "exchange"


class UpstreamError(GatewayError):
    family = "upstream"


def to_problem(err: GatewayError, request_id: str | None) -> dict[str, Any]:
    """Render an error as an RFC 9457 problem object (the JSON body)."""
    body: dict[str, Any] = {
        "type": PROBLEM_TYPE_BASE + err.reason.code.replace(".", "/"),
        "title": err.reason.title,
        "status": err.status,
        "detail": err.detail,
        "reason": err.reason.code,
    }
    if request_id:
        body["request_id"] = request_id
    body.update(err.extra)
    return body


def reason_catalog() -> list[dict[str, Any]]:
    """Every reason the gateway can return, for documentation and tests."""
    return [{"reason": r.code, "status": r.status, "title": r.title} for r in Reason]
