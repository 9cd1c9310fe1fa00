"""The client certificate chain that the TLS listener verified, as DER, leaf first.

Python 3.13 exposes ``SSLObject.get_verified_chain()``; 3.10-3.12 have the same method on the
private ``_sslobj``. Without either we fall back to the leaf alone, and the mTLS verifier then
checks the leaf's issuer against the trust domain bundle directly.
"""

from __future__ import annotations

import ssl

from aiohttp import web

try:
    import _ssl

    _DER = _ssl.ENCODING_DER
except (ImportError, AttributeError):  # pragma: no cover - non-CPython
    _DER = 1


def peer_chain(request: web.BaseRequest) -> tuple[bytes, ...]:
    transport = request.transport
    if transport is None:
        return ()
    sslobj = transport.get_extra_info("ssl_object")
    if sslobj is None:
        return ()
    getter = getattr(sslobj, "get_verified_chain", None)
    if getter is None:
        inner = getattr(sslobj, "_sslobj", None)
        getter = getattr(inner, "get_verified_chain", None)
    if getter is not None:
        try:
            chain = getter()
        except (ssl.SSLError, ValueError):
            chain = None
        if chain:
            return tuple(
                c if isinstance(c, bytes) else c.public_bytes(_DER) for c in chain
            )
    leaf = sslobj.getpeercert(binary_form=True)
    return (leaf,) if leaf else ()
