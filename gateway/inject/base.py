"""The injector interface and the stripping of the caller's own credentials."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from multidict import CIMultiDict

from gateway.model import Credential, Destination

# SECURITY: credential forwarding. A caller's proof or token must not reach the upstream, where
# it could be replayed (bearer) or would leak the caller's identity token to a third party.
CALLER_CREDENTIAL_HEADERS = (
    "Authorization",
    "Proxy-Authorization",
    "DPoP",
    "Workload-Identity-Token",
    "Workload-Proof-Token",
    "Signature",
    "Signature-Input",
    "X-Forwarded-Client-Cert",
    "Cookie",
)


def strip_caller_credentials(headers: CIMultiDict[str]) -> None:
    for name in CALLER_CREDENTIAL_HEADERS:
        headers.popall(name, None)


@dataclass(frozen=True, slots=True)
class ClientCertificate:
    """A client certificate for the upstream TLS handshake (the mTLS injector sets it).

    ``pool_key`` names the connection pool: connections made with one certificate are never
    reused for a request that should present another.
    """

    pool_key: str
    chain_pem: bytes = field(repr=False)
    private_key: Any = field(repr=False)


@dataclass(slots=True)
class Outgoing:
    """The request as it will leave: what injectors read and change.

    ``body`` holds the whole body when an injector declared ``needs_body`` (the pipeline reads
    it, bounded by ``limits.max_buffered_body_bytes``), else None; ``client_certificate`` is
    presented on the upstream TLS connection.
    """

    headers: CIMultiDict[str]
    dest: Destination
    body: bytes | None = None
    client_certificate: ClientCertificate | None = None
    notes: dict[str, Any] = field(default_factory=dict)  # for the audit line; no secrets


class Injector(Protocol):
    """Adds a credential to the outgoing request.

    Proof-bound injectors (DPoP, WIMSE WPT, HTTP signatures, SigV4) need the final method, URL
    and headers, so they run after every header is set, in profile order, and may add more
    than one header. ``needs_body`` asks the pipeline to read the body first (digests, signed
    payloads).
    """

    kind: str
    needs_body: bool

    def inject(self, out: Outgoing, credential: Credential) -> None: ...
