"""Where a request goes: a named route (reverse proxy) or the absolute URL (forward proxy)."""

from __future__ import annotations

from aiohttp import web
from yarl import URL

from gateway.config.models import ListenerConfig
from gateway.errors import Reason, RequestError
from gateway.model import Destination
from gateway.runtime import Route, Runtime, UpstreamSettings

FORWARD_ROUTE = "forward-proxy"


def _host_only(host: str) -> str:
    host = host.strip().lower()
    if host.startswith("["):
        return host.split("]", 1)[0] + "]"
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def resolve(
    rt: Runtime, request: web.BaseRequest, listener: ListenerConfig
) -> tuple[Destination, UpstreamSettings, Route | None]:
    """Map the request to its upstream URL, or refuse with ``request.no_route``."""
    if request.method == "CONNECT":
        raise RequestError(Reason.REQUEST_METHOD_UNSUPPORTED, "CONNECT tunnels are not supported: "
                           "send plain http:// requests and let the gateway originate TLS")
    raw_target = request.raw_path
    if raw_target[:1] != "/" and "://" in raw_target[:10]:
        # absolute-form request-target (RFC 9112 3.2.2): a forward-proxy request
        target = URL(raw_target, encoded=True)
        if not listener.forward_proxy:
            raise RequestError(Reason.REQUEST_NO_ROUTE, "this listener is not a forward proxy")
        if target.scheme != "http" or not target.host:
            # https:// absolute-form would mean the caller expects us to do its TLS; refuse it
            raise RequestError(Reason.REQUEST_MALFORMED, "forward proxying takes http:// URLs")
        url = target.with_fragment(None)
        host = (url.host or "").lower()
        if host in rt.upgrade_tls_hosts:
            url = upgrade_to_https(url)
        return (
            Destination(url=url, method=request.method, route=FORWARD_ROUTE, mode="forward"),
            rt.forward_settings,
            None,
        )
    if not listener.reverse_proxy:
        raise RequestError(Reason.REQUEST_NO_ROUTE, "this listener only forward-proxies")
    host = _host_only(request.headers.get("Host", ""))
    path = request.rel_url.raw_path
    route = rt.route_for(host, path)
    if route is None:
        raise RequestError(Reason.REQUEST_NO_ROUTE, "no route matches this host and path")
    tail = path[len(route.path_prefix):] if route.strip_prefix else path
    if route.strip_prefix and not tail.startswith("/"):
        tail = "/" + tail
    raw = route.upstream + tail
    qs = request.rel_url.raw_query_string
    url = URL(raw + ("?" + qs if qs else ""), encoded=True)
    return (
        Destination(url=url, method=request.method, route=route.name, mode="reverse"),
        route.settings,
        route,
    )


def upgrade_to_https(url: URL) -> URL:
    port = url.explicit_port
    url = url.with_scheme("https")
    if port in (None, 80):
        url = url.with_port(None)
    return url
