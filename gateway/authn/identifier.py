"""Workload identifiers: SPIFFE IDs (SPIFFE-ID.md section 2) and ``wimse://`` URIs.

draft-ietf-wimse-identifier section 4: an absolute URI with a non-empty authority (the trust
domain), no port, userinfo, query or fragment. We refuse anything non-canonical rather than
normalise it, so that policy compares exactly what was signed (a percent-encoded path would
otherwise match a rule written for the decoded one).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

MAX_IDENTIFIER_BYTES = 2048
MAX_TRUST_DOMAIN_BYTES = 255

_TRUST_DOMAIN = re.compile(r"[a-z0-9._-]+\Z")
_SPIFFE_SEGMENT = re.compile(r"[A-Za-z0-9._-]+\Z")
# wimse paths are opaque but must still be plain URI path characters, without percent-escapes
_WIMSE_PATH = re.compile(r"(/[A-Za-z0-9._~!$&'()*+,;=:@-]+)*\Z")


@dataclass(frozen=True, slots=True)
class WorkloadId:
    uri: str
    scheme: str
    trust_domain: str
    path: str

    @property
    def origin(self) -> str:
        return f"{self.scheme}://{self.trust_domain}"


def parse_workload_id(value: str, *, require_path: bool = False) -> WorkloadId:
    """Parse a SPIFFE ID or wimse:// identifier; raise ValueError naming the broken rule."""
    if len(value.encode("utf-8", "surrogatepass")) > MAX_IDENTIFIER_BYTES:
        raise ValueError("identifier longer than 2048 bytes")
    scheme, sep, rest = value.partition("://")
    if not sep:
        raise ValueError("not an absolute URI with an authority")
    if scheme not in ("spiffe", "wimse"):
        raise ValueError("scheme must be spiffe or wimse (lower case)")
    authority, slash, path_rest = rest.partition("/")
    path = slash + path_rest
    if not authority:
        raise ValueError("empty trust domain")
    if len(authority) > MAX_TRUST_DOMAIN_BYTES:
        raise ValueError("trust domain longer than 255 bytes")
    if not _TRUST_DOMAIN.match(authority):
        raise ValueError("trust domain must be lower-case letters, digits, '.', '-', '_' "
                         "(no port, userinfo or percent-encoding)")
    if "?" in path or "#" in path:
        raise ValueError("query and fragment are not allowed")
    if path:
        if path == "/" or path.endswith("/"):
            raise ValueError("trailing '/' is not allowed")
        if scheme == "spiffe":
            for seg in path[1:].split("/"):
                if seg in ("", ".", ".."):
                    raise ValueError("empty, '.' or '..' path segment")
                if not _SPIFFE_SEGMENT.match(seg):
                    raise ValueError("path segments must be letters, digits, '.', '-', '_'")
        else:
            if "//" in path or "/./" in path + "/" or "/../" in path + "/":
                raise ValueError("empty, '.' or '..' path segment")
            if not _WIMSE_PATH.match(path):
                raise ValueError("path has characters outside the URI path set")
    elif require_path:
        raise ValueError("a workload identifier needs a path")
    return WorkloadId(value, scheme, authority, path)
