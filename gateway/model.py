"""Frozen values handed from one pipeline stage to the next.

Stages never share mutable state through these: a stage receives values, returns a new value or
raises a GatewayError. That keeps the pipeline readable top to bottom.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

from yarl import URL


class AuthnMethod(enum.StrEnum):
    """How a caller proved who it is. Values are the names used in policy files."""

    MTLS = "mtls"
    WIT = "wit"
    HTTPSIG = "httpsig"
    DPOP = "dpop"
    BEARER = "bearer"
    NONE = "none"


@dataclass(frozen=True, slots=True)
class Caller:
    """A verified caller, or the anonymous caller when no credential was presented."""

    identity: str | None
    trust_domain: str | None
    method: AuthnMethod
    proof_of_possession: bool
    expires_at: float | None
    claims: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)
    key_thumbprint: str | None = None
    # Short hash of the presented credential, for audit and cache keys; never the credential.
    credential_id: str | None = None
    # The raw bearer credential, for exchangers that pass it on (RFC 8693 subject_token).
    # repr=False keeps it out of logs and tracebacks.
    raw_token: str | None = field(default=None, repr=False, compare=False)

    @property
    def authenticated(self) -> bool:
        return self.method is not AuthnMethod.NONE


ANONYMOUS = Caller(
    identity=None,
    trust_domain=None,
    method=AuthnMethod.NONE,
    proof_of_possession=False,
    expires_at=None,
)


@dataclass(frozen=True, slots=True)
class Destination:
    """Where the request is going, after routing and before credential injection."""

    url: URL  # absolute upstream URL including path and query
    method: str
    route: str  # route name, or "forward-proxy" for absolute-form requests
    mode: str  # "reverse" or "forward"

    @property
    def scheme(self) -> str:
        return self.url.scheme

    @property
    def host(self) -> str:
        return (self.url.host or "").lower()

    @property
    def port(self) -> int:
        return self.url.port or (443 if self.url.scheme == "https" else 80)

    @property
    def path(self) -> str:
        return self.url.path or "/"

    @property
    def origin(self) -> str:
        return str(self.url.origin())

    @property
    def target_uri(self) -> str:
        """The URL without query and fragment: what WPT ``aud``, DPoP ``htu`` and
        ``wimse-aud`` name."""
        return str(self.url.with_query(None).with_fragment(None))


class Action(enum.StrEnum):
    DENY = "deny"
    FORWARD = "forward"
    EXCHANGE = "exchange"


@dataclass(frozen=True, slots=True)
class Decision:
    """What policy decided for one request."""

    rule_id: str
    action: Action
    profile: str | None = None
    upgrade_tls: bool = False
    pass_credentials: bool = False
    allow_lifetime_extension: bool = False
    allow_assurance_upgrade: bool = False


@dataclass(frozen=True, slots=True)
class Credential:
    """A credential obtained for the destination."""

    token: str = field(repr=False)
    token_type: str  # how it is presented: "Bearer", "DPoP", "N_A"
    issued_token_type: str  # RFC 8693 token type URI
    expires_at: float
    proof_of_possession: bool
    token_id: str  # jti, or a hash of the token when it has none
    issuer: str
    claims_carried: tuple[str, ...] = ()
    claims_dropped: tuple[str, ...] = ()
    # The private key a proof-bound credential we minted is bound to (WIT cnf); never logged.
    proof_key: Any = field(default=None, repr=False, compare=False)


@dataclass(frozen=True, slots=True)
class Inbound:
    """What authentication may look at: the request as the caller sent it.

    ``peer_chain`` is the client certificate chain the TLS listener verified (DER, leaf first);
    empty on plain listeners or when the client sent no certificate.
    """

    method: str
    target: URL  # absolute URL the caller addressed
    headers: Any  # CIMultiDictProxy[str]
    peer_address: str | None
    peer_chain: tuple[bytes, ...] = ()
    # Target URIs a proof may name (WPT `aud`, DPoP `htu`), normalised: the destination and the
    # configured aliases of its route. Never derived from Host or X-Forwarded-Host.
    targets: frozenset[str] = frozenset()
    has_body: bool = False
    # Reads the whole body (bounded by limits.max_buffered_body_bytes) for verifiers that must
    # see it (Content-Digest); the pipeline then forwards the same bytes.
    read_body: Any = None  # Callable[[], Awaitable[bytes]]
