"""The injector interface and the stripping of the caller's own credentials."""

from __future__ import annotations

from typing import Protocol

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


class Injector(Protocol):
    """Adds a credential to the outgoing request.

    Proof-bound injectors (DPoP, WIMSE WPT, HTTP signatures) need the final method, URL and
    headers, so they get the whole outgoing header map and the destination, and may add more
    than one header.
    """

    kind: str

    def inject(self, headers: CIMultiDict[str], credential: Credential, dest: Destination) -> None:
        ...
