"""The upstream hop: header hygiene (RFC 9110 7.6), pooled connections, streaming both ways.

Bodies are never buffered whole: request chunks go upstream as they arrive, response chunks go
back as they arrive, so a 50 MB upload costs a few 64 KiB buffers.
"""

from __future__ import annotations

import asyncio
import ssl
from collections import OrderedDict
from collections.abc import AsyncIterator

import aiohttp
from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy

from gateway.errors import Reason, RequestError, UpstreamError
from gateway.model import Destination
from gateway.runtime import UpstreamSettings

# RFC 9110 7.6.1 plus the legacy ones still seen in the wild.
HOP_BY_HOP = frozenset(
    h.lower()
    for h in (
        "Connection", "Keep-Alive", "Proxy-Authenticate", "Proxy-Authorization", "TE",
        "Trailer", "Transfer-Encoding", "Upgrade", "Proxy-Connection",
    )
)
CHUNK = 64 * 1024
SMALL_BODY = 64 * 1024


def hop_by_hop_names(headers: CIMultiDictProxy[str] | CIMultiDict[str]) -> set[str]:
    """Hop-by-hop names, including every name listed in ``Connection`` (RFC 9110 7.6.1)."""
    names = set(HOP_BY_HOP)
    for value in headers.getall("Connection", ()):
        for token in value.split(","):
            token = token.strip().lower()
            if token:
                names.add(token)
    return names


def end_to_end_headers(headers: CIMultiDictProxy[str]) -> CIMultiDict[str]:
    drop = hop_by_hop_names(headers)
    drop.add("host")
    drop.add("content-length")  # re-added by the caller only when the length is known
    return CIMultiDict((k, v) for k, v in headers.items() if k.lower() not in drop)


class UpstreamPool:
    """One aiohttp ClientSession per TLS setting, so connections are reused per upstream.

    Settings with a caller's client certificate make a pool each; the least recently used
    beyond ``max_sessions`` is closed after ``close_delay`` seconds, so requests still using
    it can finish.
    """

    def __init__(self, limit_per_host: int, max_sessions: int = 1024,
                 close_delay: float = 120.0) -> None:
        self.limit_per_host = limit_per_host
        self.max_sessions = max_sessions
        self.close_delay = close_delay
        self._sessions: OrderedDict[str, aiohttp.ClientSession] = OrderedDict()
        self._closing: dict[asyncio.Task[None], aiohttp.ClientSession] = {}

    def _evict(self) -> None:
        while len(self._sessions) > self.max_sessions:
            _key, old = self._sessions.popitem(last=False)

            async def close_later(session: aiohttp.ClientSession = old) -> None:
                await asyncio.sleep(self.close_delay)
                await session.close()

            task = asyncio.get_running_loop().create_task(close_later())
            self._closing[task] = old
            task.add_done_callback(lambda t: self._closing.pop(t, None))

    def session(self, settings: UpstreamSettings) -> aiohttp.ClientSession:
        s = self._sessions.get(settings.tls_key)
        if s is not None and not s.closed:
            if len(self._sessions) > 1:
                self._sessions.move_to_end(settings.tls_key)
            return s
        ctx = settings.ssl_context
        if ctx is None and settings.make_ssl_context is not None:
            ctx = settings.make_ssl_context()
        connector = aiohttp.TCPConnector(
            limit=0,
            limit_per_host=self.limit_per_host,
            ssl=ctx if ctx is not None else False,
            enable_cleanup_closed=True,
            keepalive_timeout=30,
        )
        s = aiohttp.ClientSession(
            connector=connector,
            auto_decompress=False,
            cookie_jar=aiohttp.DummyCookieJar(),
            skip_auto_headers=("User-Agent", "Accept-Encoding", "Accept", "Content-Type"),
            trust_env=False,
        )
        self._sessions[settings.tls_key] = s
        self._evict()
        return s

    async def close(self) -> None:
        for t, retired in list(self._closing.items()):
            t.cancel()
            await retired.close()
        for s in self._sessions.values():
            await s.close()
        self._sessions.clear()


class BodyStream:
    """The caller's body, chunk by chunk, counting bytes against the configured limit.

    aiohttp wraps whatever a body iterator raises into its own client errors, so an overflow is
    remembered here and turned back into ``request.body_too_large`` by ``send``.
    """

    def __init__(self, request: web.BaseRequest, limit: int | None) -> None:
        self.request = request
        self.limit = limit
        self.sent = 0
        self.overflow = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self.request.content.iter_chunked(CHUNK):
            self.sent += len(chunk)
            if self.limit is not None and self.sent > self.limit:
                self.overflow = True
                raise RequestError(Reason.REQUEST_BODY_TOO_LARGE, "request body over the limit")
            yield chunk


class BufferedBody:
    """The request body read whole, once, for a verifier that needs all of it."""

    def __init__(self, request: web.BaseRequest, limit: int) -> None:
        self.request = request
        self.limit = limit
        self.data: bytes | None = None

    async def read(self) -> bytes:
        if self.data is None:
            length = self.request.content_length
            if length is not None and length > self.limit:
                raise RequestError(Reason.REQUEST_BODY_TOO_LARGE, "body too large to verify")
            parts: list[bytes] = []
            size = 0
            async for chunk in self.request.content.iter_chunked(CHUNK):
                size += len(chunk)
                if size > self.limit:
                    raise RequestError(Reason.REQUEST_BODY_TOO_LARGE, "body too large to verify")
                parts.append(chunk)
            self.data = b"".join(parts)
        return self.data


def request_body(
    request: web.BaseRequest, headers: CIMultiDict[str], limit: int | None,
    buffered: BufferedBody | None = None,
) -> BodyStream | bytes | None:
    """The body for the upstream request: bytes already read, a stream, or None."""
    if buffered is not None and buffered.data is not None:
        headers["Content-Length"] = str(len(buffered.data))
        if limit is not None and len(buffered.data) > limit:
            raise RequestError(Reason.REQUEST_BODY_TOO_LARGE, "request body over the limit")
        return buffered.data or None
    length = request.content_length
    if length is not None:
        if limit is not None and length > limit:
            raise RequestError(Reason.REQUEST_BODY_TOO_LARGE, "request body over the limit")
        headers["Content-Length"] = str(length)
        return BodyStream(request, limit) if length > 0 else None
    if request.body_exists:
        return BodyStream(request, limit)  # chunked in, chunked out
    return None


async def send(
    pool: UpstreamPool,
    settings: UpstreamSettings,
    request: web.BaseRequest,
    dest: Destination,
    headers: CIMultiDict[str],
    body: BodyStream | bytes | None,
) -> aiohttp.ClientResponse:
    """Open the upstream request and return once response headers are in."""
    try:
        return await _send(pool, settings, dest, headers, body)
    except UpstreamError:
        if isinstance(body, BodyStream) and body.overflow:
            raise RequestError(Reason.REQUEST_BODY_TOO_LARGE, "request body over the limit"
                               ) from None
        raise


async def _send(
    pool: UpstreamPool,
    settings: UpstreamSettings,
    dest: Destination,
    headers: CIMultiDict[str],
    body: BodyStream | bytes | None,
) -> aiohttp.ClientResponse:
    t = settings.timeouts
    timeout = aiohttp.ClientTimeout(total=t.total, sock_connect=t.connect, sock_read=t.read)
    kwargs = {}
    if settings.server_name and dest.scheme == "https":
        kwargs["server_hostname"] = settings.server_name
    try:
        return await pool.session(settings).request(
            dest.method,
            dest.url,
            headers=headers,
            data=body.__aiter__() if isinstance(body, BodyStream) else body,
            allow_redirects=False,
            timeout=timeout,
            compress=None,
            **kwargs,
        )
    except RequestError:
        raise
    except (aiohttp.ClientConnectorCertificateError, aiohttp.ClientSSLError, ssl.SSLError):
        raise UpstreamError(Reason.UPSTREAM_TLS, "TLS handshake with the upstream failed") from None
    except (TimeoutError, aiohttp.ServerTimeoutError):
        raise UpstreamError(Reason.UPSTREAM_TIMEOUT, "upstream did not answer in time") from None
    except aiohttp.ClientConnectorError:
        raise UpstreamError(Reason.UPSTREAM_UNREACHABLE, "cannot connect to the upstream") from None
    except (aiohttp.ClientError, OSError):
        raise UpstreamError(
            Reason.UPSTREAM_PROTOCOL, "the upstream closed or broke the exchange"
        ) from None


def response_headers(upstream: aiohttp.ClientResponse) -> CIMultiDict[str]:
    drop = hop_by_hop_names(upstream.headers)
    return CIMultiDict((k, v) for k, v in upstream.headers.items() if k.lower() not in drop)


async def relay(
    request: web.BaseRequest, upstream: aiohttp.ClientResponse, headers: CIMultiDict[str]
) -> web.StreamResponse:
    """Stream the upstream response back to the caller.

    Once the status line is sent, a failure can only cut the connection; the caller sees a
    truncated body (and a length mismatch or missing final chunk), never a fake success.
    """
    length = upstream.content_length
    if length is not None and length <= SMALL_BODY and request.method != "HEAD":
        # Small answers go back in one write (headers and body together): half the syscalls
        # of streaming, and most API answers are small.
        try:
            body = await upstream.read()
        except TimeoutError:
            upstream.close()
            raise UpstreamError(Reason.UPSTREAM_TIMEOUT, "upstream did not finish in time"
                                ) from None
        except (aiohttp.ClientError, OSError):
            upstream.close()
            raise UpstreamError(Reason.UPSTREAM_PROTOCOL, "the upstream broke off its answer"
                                ) from None
        finally:
            upstream.release()
        headers.popall("Content-Length", None)
        return web.Response(status=upstream.status, reason=upstream.reason, headers=headers,
                            body=body)
    resp = web.StreamResponse(status=upstream.status, reason=upstream.reason, headers=headers)
    if "Content-Length" not in headers and request.version >= (1, 1):
        resp.enable_chunked_encoding()
    try:
        await resp.prepare(request)
        async for chunk in upstream.content.iter_chunked(CHUNK):
            await resp.write(chunk)
        await resp.write_eof()
    except (TimeoutError, aiohttp.ClientError, OSError):
        # Either side went away mid-response (the caller hung up, or the upstream broke off).
        upstream.close()
        resp.force_close()
        if request.transport is not None:
            request.transport.close()
    finally:
        upstream.release()
    return resp
