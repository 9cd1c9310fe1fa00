"""Loopback servers for tests: a recording echo upstream and a gateway started from YAML."""

from __future__ import annotations

import asyncio
import hashlib
import json
import ssl
import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

from gateway.observe.audit import AuditLog
from gateway.proxy.listener import Gateway


@dataclass
class Seen:
    method: str
    path_qs: str
    headers: dict[str, list[str]]
    body_bytes: int
    body_sha256: str
    tls_client_cert: bytes | None = None

    def header(self, name: str) -> str | None:
        vals = self.headers.get(name.lower())
        return vals[0] if vals else None


@dataclass
class Upstream:
    """An upstream that records every request and can be told to be slow or to stream."""

    runner: web.AppRunner
    port: int
    scheme: str
    seen: list[Seen] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}"

    async def close(self) -> None:
        await self.runner.cleanup()


async def start_upstream(ssl_context: ssl.SSLContext | None = None) -> Upstream:
    holder: dict[str, Upstream] = {}

    async def handler(request: web.Request) -> web.StreamResponse:
        digest = hashlib.sha256()
        n = 0
        async for chunk in request.content.iter_chunked(65536):
            digest.update(chunk)
            n += len(chunk)
        headers: dict[str, list[str]] = {}
        for k, v in request.headers.items():
            headers.setdefault(k.lower(), []).append(v)
        peer = None
        sslobj = request.transport.get_extra_info("ssl_object") if request.transport else None
        if sslobj is not None:
            peer = sslobj.getpeercert(binary_form=True)
        seen = Seen(request.method, request.raw_path, headers, n, digest.hexdigest(), peer)
        holder["u"].seen.append(seen)
        q = request.rel_url.query
        if "sleep" in q:
            await asyncio.sleep(float(q["sleep"]))
        if "download" in q:
            size = int(q["download"])
            resp = web.StreamResponse(headers={"Content-Type": "application/octet-stream",
                                               "Connection": "keep-alive, X-Hop",
                                               "X-Hop": "must-not-pass"})
            resp.enable_chunked_encoding()
            await resp.prepare(request)
            block = b"x" * 65536
            sent = 0
            while sent < size:
                part = block[: min(len(block), size - sent)]
                await resp.write(part)
                sent += len(part)
            await resp.write_eof()
            return resp
        status = int(q.get("status", "200"))
        return web.json_response(
            {"method": request.method, "path_qs": request.raw_path, "bytes": n,
             "sha256": digest.hexdigest(), "headers": headers},
            status=status,
            headers={"X-Upstream": "yes", "Keep-Alive": "timeout=5"},
        )

    app = web.Application(client_max_size=1024**3)
    app.router.add_route("*", "/{tail:.*}", handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ssl_context)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    up = Upstream(runner, port, "https" if ssl_context else "http")
    holder["u"] = up
    return up


class MemoryAudit(AuditLog):
    """Keeps audit records in memory, and as the JSON text a file would get."""

    def __init__(self) -> None:
        super().__init__("-")
        self.records: list[dict[str, Any]] = []
        self.lines: list[str] = []

    def flush(self) -> None:
        pass

    def write(self, record: dict[str, Any]) -> None:
        self.lines.append(json.dumps(record, default=str))
        self.records.append(json.loads(self.lines[-1]))


@dataclass
class RunningGateway:
    gateway: Gateway
    dir: Path
    audit: MemoryAudit

    def url(self, listener: str = "main") -> str:
        scheme = "https" if self._tls(listener) else "http"
        return f"{scheme}://127.0.0.1:{self.gateway.ports[listener]}"

    def _tls(self, listener: str) -> bool:
        rt = self.gateway.runtime
        assert rt is not None
        return any(x.name == listener and x.tls for x in rt.config.listeners)

    @property
    def admin(self) -> str:
        return f"http://127.0.0.1:{self.gateway.admin_port}"

    async def stop(self) -> None:
        await self.gateway.stop(grace=2)


def write_files(directory: Path, config: str, policy: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "policy.yaml").write_text(textwrap.dedent(policy))
    cfg = directory / "gateway.yaml"
    cfg.write_text(textwrap.dedent(config))
    return cfg


async def start_gateway(directory: Path, config: str, policy: str, **kw: Any) -> RunningGateway:
    cfg = write_files(directory, config, policy)
    audit = MemoryAudit()
    gw = Gateway(cfg, audit=audit, **kw)
    await gw.start()
    return RunningGateway(gw, directory, audit)
