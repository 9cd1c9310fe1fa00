"""Reading credentials off a request safely: one header, bounded size; target URI comparison.

RFC 9449 4.3 and draft-ietf-wimse-wpt both say: exactly one header, compare the target URI
after RFC 3986 6.2.2/6.2.3 normalisation, without query and fragment.
"""

from __future__ import annotations

from yarl import URL

from gateway.errors import AuthnError, Reason
from gateway.model import Inbound

MAX_CREDENTIAL_HEADER = 8192


def single_header(inbound: Inbound, name: str, *, status: int | None = None,
                  challenge: str | None = None, limit: int = MAX_CREDENTIAL_HEADER) -> str | None:
    values = inbound.headers.getall(name, ())
    if not values:
        return None
    if len(values) > 1:
        # SECURITY: two proofs let a verifier and a later consumer disagree on which one counts.
        raise AuthnError(Reason.AUTHN_DUPLICATE, f"more than one {name} header",
                         status_override=status, challenge=challenge)
    value = values[0].strip()
    if len(value) > limit:
        raise AuthnError(Reason.AUTHN_TOO_LARGE, f"{name} header too large",
                         status_override=status, challenge=challenge)
    return value


def normalize_uri(value: str) -> str | None:
    """RFC 3986 6.2.2-6.2.3 normal form without query/fragment; None if not an http(s) URI."""
    try:
        url = URL(value)
    except (ValueError, TypeError):
        return None
    if url.scheme not in ("http", "https") or not url.host:
        return None
    port = url.explicit_port
    default = 443 if url.scheme == "https" else 80
    authority = url.host.lower() if ":" not in url.host else f"[{url.host.lower()}]"
    if port is not None and port != default:
        authority += f":{port}"
    path = url.raw_path or "/"
    return f"{url.scheme}://{authority}{path}"
