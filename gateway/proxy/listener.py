"""Listeners and the process around them: aiohttp apps, TLS, reload and drain.

The request handler only assigns the request id and turns errors into problem responses; all the
work is in ``pipeline.handle``.
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import os
import re
import secrets
import ssl
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aiohttp import web

from gateway.authn.replay import InMemoryReplayCache, ReplayCache
from gateway.authn.replay_shared import SharedReplayCache
from gateway.clock import Clock, SystemClock
from gateway.config.load import LoadedConfig, load_config
from gateway.config.source import ConfigError
from gateway.errors import GatewayError, Reason, to_problem
from gateway.exchange.cache import CredentialCache
from gateway.keys import RotatingKeys
from gateway.observe.audit import AuditLog
from gateway.observe.metrics import Metrics
from gateway.proxy import forward, pipeline, token_endpoint
from gateway.runtime import Runtime, build_runtime, server_ssl_context

log = logging.getLogger("wimse_gateway")

_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}\Z")


def request_id_for(request: web.BaseRequest) -> str:
    """Keep a sane incoming X-Request-Id (so traces join up); otherwise make one."""
    rid = request.headers.get("X-Request-Id")
    if rid and _REQUEST_ID.match(rid):
        return rid
    return secrets.token_hex(12)


def problem_response(err: GatewayError, request_id: str) -> web.Response:
    headers = {**err.headers, "X-Request-Id": request_id, "Cache-Control": "no-store"}
    return web.Response(
        status=err.status,
        body=json.dumps(to_problem(err, request_id)).encode(),
        content_type="application/problem+json",
        headers=headers,
    )


class Gateway:
    """One gateway process: the current runtime, its listeners and the admin endpoints."""

    def __init__(self, config_path: str | Path, clock: Clock | None = None,
                 audit: AuditLog | None = None) -> None:
        self.config_path = Path(config_path)
        self.clock = clock or SystemClock()
        self._audit_override = audit
        self.runtime: Runtime | None = None
        self.services: pipeline.Services | None = None
        self.ready = False
        self.ports: dict[str, int] = {}
        self.admin_port: int | None = None
        self._runners: list[web.BaseRunner] = []
        self._tls: dict[str, ssl.SSLContext] = {}
        self._watch_task: asyncio.Task[None] | None = None
        self._flush_task: asyncio.Task[None] | None = None
        self._rotate_task: asyncio.Task[None] | None = None
        self._mtimes: dict[Path, float] = {}
        self._retired: list[tuple[Runtime, asyncio.TimerHandle]] = []
        self._reload_lock = asyncio.Lock()
        self.on_reload: list[Callable[[bool], None]] = []
        self.replay: ReplayCache | None = None
        # Worker processes share their listening ports (SO_REUSEPORT); see gateway/supervisor.
        self.reuse_port = bool(os.environ.get("WIMSE_GATEWAY_WORKER"))

    # ---- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        loaded = load_config(self.config_path)
        shared = os.environ.get("WIMSE_GATEWAY_REPLAY_SOCKET")
        self.replay = (SharedReplayCache(shared) if shared else InMemoryReplayCache(
            self.clock, loaded.config.authentication.replay_cache_entries))
        metrics = Metrics()
        self._observe_sts = lambda name, outcome, s: metrics.sts_seconds.labels(
            name, outcome).observe(s)
        rt = build_runtime(loaded, self.clock, self.replay, self._observe_sts)
        cfg = loaded.config
        cc = cfg.exchange_cache
        cache = CredentialCache(
            self.clock, max_entries=cc.max_entries, refresh_ahead=cc.refresh_ahead,
            expiry_margin=cc.expiry_margin, negative_ttl=cc.failure_ttl,
            on_event=lambda e: metrics.cache_events.labels(e).inc(),
        )
        audit = self._audit_override or AuditLog(
            cfg.audit.path if cfg.audit.path == "-" else loaded.path(cfg.audit.path)
        )
        self.services = pipeline.Services(
            clock=self.clock, metrics=metrics, audit=audit, cache=cache,
            pool=forward.UpstreamPool(cfg.limits.max_connections_per_upstream),
        )
        self._install(rt)
        for i, lst in enumerate(cfg.listeners):
            await self._start_listener(loaded, i, lst.name)
        if cfg.admin is not None:
            runner = web.AppRunner(self._admin_app(), access_log=None)
            await runner.setup()
            site = web.TCPSite(runner, cfg.admin.address, cfg.admin.port,
                               reuse_port=self.reuse_port or None)
            await site.start()
            self._runners.append(runner)
            self.admin_port = _bound_port(site)
        self._remember_mtimes(rt)
        if cfg.policy.watch:
            self._watch_task = asyncio.create_task(self._watch())
        self._flush_task = asyncio.create_task(self._flush_audit())
        if cfg.issuer and cfg.issuer.rotation:
            self._rotate_task = asyncio.create_task(self._rotate_keys())
        self.ready = True
        # Everything built so far lives as long as the process: keep the collector off it.
        gc.collect()
        gc.freeze()
        # Requests make many short-lived objects; collect the young generation less often.
        gc.set_threshold(20_000, 20, 20)
        log.info("gateway ready: listeners %s, admin %s, policy %s", self.ports,
                 self.admin_port, rt.policy.digest)

    async def _rotate_keys(self) -> None:
        """Reload when the key schedule says a key starts being published or signing."""
        while True:
            rt = self.runtime
            assert rt is not None and rt.config.issuer and rt.config.issuer.rotation
            rot = rt.config.issuer.rotation
            await asyncio.sleep(min(30.0, rot.overlap / 4))
            lc = rt.loaded
            assert rt.config.issuer.state_dir
            keys = RotatingKeys(lc.path(rt.config.issuer.state_dir), rot.period, rot.overlap,
                                self.clock)
            _, published = await asyncio.to_thread(keys.current)
            if [k.kid for k in published] != [k.kid for k in rt.signing_keys]:
                log.info("issuer key schedule moved: reloading")
                await self.reload()

    async def _flush_audit(self) -> None:
        while True:
            await asyncio.sleep(AuditLog.FLUSH_INTERVAL)
            if self.services is not None:
                self.services.audit.flush()

    async def stop(self, grace: float | None = None) -> None:
        """Stop accepting, let in-flight requests finish (up to ``grace`` s), then close."""
        self.ready = False
        if self._watch_task:
            self._watch_task.cancel()
        # Listeners first (aiohttp waits for running handlers up to shutdown_timeout), admin last.
        for runner in self._runners:
            if grace is not None:
                runner._shutdown_timeout = grace  # type: ignore[attr-defined]
            await runner.cleanup()
        self._runners.clear()
        for rt, handle in self._retired:
            handle.cancel()
            await rt.close()
        self._retired.clear()
        if self.runtime is not None:
            await self.runtime.close()
        if isinstance(self.replay, SharedReplayCache):
            await self.replay.close()
        if self._flush_task:
            self._flush_task.cancel()
        if self._rotate_task:
            self._rotate_task.cancel()
        if self.services:
            await self.services.cache.close()
            await self.services.pool.close()
            if self._audit_override is None:
                self.services.audit.close()
            else:
                self.services.audit.flush()

    def _install(self, rt: Runtime) -> None:
        old = self.runtime
        self.runtime = rt
        assert self.services is not None
        self.services.metrics.policy_info.clear()
        self.services.metrics.policy_info.labels(rt.policy.digest).set(self.clock.now())
        for w in rt.warnings:
            log.warning("%s", w)
        if old is not None:
            # In-flight requests may still use the old version's STS connections.
            task = asyncio.get_running_loop().call_later(
                60.0, lambda: asyncio.ensure_future(old.close()))
            self._retired.append((old, task))
        # Rebuild listener TLS contexts so new bundles and certificates apply to new handshakes.
        for i, lst in enumerate(rt.config.listeners):
            if lst.name in self._tls:
                try:
                    ctx = server_ssl_context(rt.loaded, i, rt.bundles)
                    if ctx is not None:
                        self._tls[lst.name] = ctx
                except (ssl.SSLError, OSError) as exc:
                    log.error("listener %s keeps its old TLS settings: %s", lst.name, exc)

    async def reload(self) -> bool:
        """Build a whole new runtime; swap it in only if everything is valid."""
        async with self._reload_lock:
            assert self.services is not None
            try:
                loaded = load_config(self.config_path)
                rt = build_runtime(loaded, self.clock, self.replay, self._observe_sts)
                self._check_listeners_unchanged(loaded)
            except ConfigError as exc:
                self.services.metrics.reloads.labels("refused").inc()
                log.error("reload refused, previous config keeps serving:\n%s", exc)
                self._notify(False)
                return False
            except Exception:
                self.services.metrics.reloads.labels("refused").inc()
                log.exception("reload failed, previous config keeps serving")
                self._notify(False)
                return False
            self._install(rt)
            self._remember_mtimes(rt)
            self.services.metrics.reloads.labels("ok").inc()
            log.info("reloaded: policy %s", rt.policy.digest)
            self._notify(True)
            return True

    def _notify(self, ok: bool) -> None:
        for cb in self.on_reload:
            cb(ok)

    def _check_listeners_unchanged(self, loaded: LoadedConfig) -> None:
        assert self.runtime is not None
        old = [(lst.name, lst.address, lst.port, lst.tls is None)
               for lst in self.runtime.config.listeners]
        new = [(lst.name, lst.address, lst.port, lst.tls is None)
               for lst in loaded.config.listeners]
        if old != new:
            raise ConfigError([loaded.document.problem(
                ("listeners",), "listener names, addresses, ports and TLS on/off change only "
                "with a restart")])

    # ---- file watching ---------------------------------------------------------------------

    def _watched(self, rt: Runtime) -> list[Path]:
        lc = rt.loaded
        files = [lc.file, *rt.policy.files]
        files += [lc.path(td.x509_bundle) for td in lc.config.trust_domains.values()
                  if td.x509_bundle]
        return files

    def _remember_mtimes(self, rt: Runtime) -> None:
        self._mtimes = {p: _mtime(p) for p in self._watched(rt)}

    async def _watch(self) -> None:
        while True:
            assert self.runtime is not None
            await asyncio.sleep(self.runtime.config.policy.watch_interval)
            changed = any(_mtime(p) != m for p, m in self._mtimes.items())
            if changed:
                ok = await self.reload()
                if not ok:  # do not retry the same broken file every interval
                    self._mtimes = {p: _mtime(p) for p in self._mtimes}

    # ---- apps --------------------------------------------------------------------------------

    async def _start_listener(self, loaded: LoadedConfig, index: int, name: str) -> None:
        lst = loaded.config.listeners[index]
        assert self.runtime is not None
        # A low-level server, not an Application: every request-target form (origin, absolute,
        # authority for CONNECT) reaches the pipeline, and there is no router to walk.
        server = web.Server(
            self._handler(name),
            # aiohttp's own caps sit above ours so our check can answer 431 with a reason.
            max_field_size=loaded.config.limits.max_header_bytes * 2,
            max_line_size=loaded.config.limits.max_header_bytes * 2,
            max_headers=256,
            # SECURITY: no access log; query strings can carry tokens. The audit line is the log.
            access_log=None,
        )
        ctx = server_ssl_context(loaded, index, self.runtime.bundles)
        if ctx is not None:
            self._tls[name] = ctx
            # Swap in the newest context per handshake, so reloaded certificates and bundles
            # apply without closing the listening socket.
            ctx.sni_callback = self._sni_switch(name)
        runner = web.ServerRunner(server, shutdown_timeout=loaded.config.limits.shutdown_grace)
        await runner.setup()
        site = web.TCPSite(runner, lst.address, lst.port, ssl_context=ctx, backlog=1024,
                           reuse_port=self.reuse_port or None)
        await site.start()
        self._runners.append(runner)
        self.ports[name] = _bound_port(site)

    def _sni_switch(self, name: str) -> Callable[[Any, str | None, ssl.SSLContext], None]:
        def switch(sslobj: Any, server_name: str | None, ctx: ssl.SSLContext) -> None:
            current = self._tls.get(name)
            if current is not None and current is not ctx:
                sslobj.context = current
        return switch

    def _handler(self, listener_name: str) -> Callable[[web.BaseRequest], Any]:
        async def handler(request: web.BaseRequest) -> web.StreamResponse:
            rid = request_id_for(request)
            rt = self.runtime
            svc = self.services
            if rt is None or svc is None or not self.ready:
                return problem_response(GatewayError(Reason.UNAVAILABLE), rid)
            listener = next(x for x in rt.config.listeners if x.name == listener_name)
            te = rt.config.token_endpoint
            try:
                if te is not None and te.listener == listener_name:
                    if request.path == te.path:
                        return await token_endpoint.handle(svc, rt, listener, request, rid,
                                                           self.ports[listener_name])
                    if request.path == "/.well-known/oauth-authorization-server":
                        return await token_endpoint.metadata(rt, listener,
                                                             self.ports[listener_name])
                return await pipeline.handle(svc, rt, listener, request, rid)
            except GatewayError as exc:
                return problem_response(exc, rid)
            except Exception:
                log.exception("unexpected error (request %s)", rid)
                return problem_response(GatewayError(Reason.INTERNAL), rid)
        return handler

    def _admin_app(self) -> web.Application:
        app = web.Application()

        async def healthz(_: web.Request) -> web.Response:
            return web.json_response({"status": "ok"})

        async def readyz(_: web.Request) -> web.Response:
            rt = self.runtime
            ok = self.ready and rt is not None and (
                rt.config.issuer is None or bool(rt.signing_keys))
            return web.json_response({"status": "ready" if ok else "not ready"},
                                     status=200 if ok else 503)

        async def metrics(_: web.Request) -> web.Response:
            assert self.services is not None
            return web.Response(body=self.services.metrics.render(),
                                headers={"Content-Type": "text/plain; version=0.0.4"})

        async def jwks(_: web.Request) -> web.Response:
            rt = self.runtime
            keys = [k.public_jwk for k in rt.signing_keys] if rt else []
            return web.json_response({"keys": keys},
                                     headers={"Cache-Control": "public, max-age=300"})

        async def policy(_: web.Request) -> web.Response:
            rt = self.runtime
            if rt is None:
                return web.json_response({}, status=503)
            return web.json_response({
                "digest": rt.policy.digest,
                "files": [str(p) for p in rt.policy.files],
                "rules": [r.id for r in rt.policy.engine.rules],
                "profiles": sorted(rt.policy.profiles),
                "warnings": [str(w) for w in rt.warnings],
            })

        app.router.add_get("/healthz", healthz)
        app.router.add_get("/readyz", readyz)
        app.router.add_get("/metrics", metrics)
        app.router.add_get("/.well-known/jwks.json", jwks)
        app.router.add_get("/policy", policy)
        return app


def _bound_port(site: web.TCPSite) -> int:
    server = site._server  # type: ignore[attr-defined]
    assert server is not None and server.sockets
    return int(server.sockets[0].getsockname()[1])


def _mtime(p: Path) -> float:
    try:
        return p.stat().st_mtime
    except OSError:
        return -1.0
