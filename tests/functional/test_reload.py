"""Live policy reload while requests are in flight: no request fails because of a reload."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import aiohttp

from tests.helpers.servers import Upstream, start_gateway

GOOD = "rules:\n  - id: allow-{n}\n    action: forward\n"
BROKEN = "rules:\n  - id: broken\n    action: sometimes\n"


async def test_reload_good_and_broken_files_under_load(tmp_path: Path, upstream: Upstream) -> None:
    config = f"""
listeners: [{{name: main, port: 0}}]
routes: [{{name: api, upstream: "{upstream.url}"}}]
admin: {{port: 0}}
policy: {{files: [policy.yaml], watch: true, watch_interval: 0.05}}
"""
    gw = await start_gateway(tmp_path, config, GOOD.format(n=0))
    policy = tmp_path / "policy.yaml"
    statuses: list[int] = []
    stop = asyncio.Event()

    async def worker(s: aiohttp.ClientSession) -> None:
        for _ in range(2000):  # bounded even if `stop` never comes
            if stop.is_set():
                return
            async with s.get(gw.url() + "/x?sleep=0.01") as r:
                statuses.append(r.status)

    def bump(text: str) -> None:
        policy.write_text(text)
        st = policy.stat()
        os.utime(policy, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))

    metrics = gw.gateway.services.metrics
    try:
        async with aiohttp.ClientSession() as s:
            workers = [asyncio.create_task(worker(s)) for _ in range(16)]
            for n in range(1, 7):
                bump(BROKEN if n % 2 else GOOD.format(n=n))
                for _ in range(100):
                    await asyncio.sleep(0.02)
                    done = (metrics.reloads.labels("refused")._value.get()
                            + metrics.reloads.labels("ok")._value.get())
                    if done >= n:
                        break
            stop.set()
            await asyncio.gather(*workers)
            async with s.get(gw.url() + "/last") as r:
                statuses.append(r.status)
        assert metrics.reloads.labels("refused")._value.get() == 3
        assert metrics.reloads.labels("ok")._value.get() == 3
        assert len(statuses) > 100
        assert set(statuses) == {200}, {s: statuses.count(s) for s in set(statuses)}
        # the serving policy is the last good one, and audit lines name its digest
        assert [r.id for r in gw.gateway.runtime.policy.engine.rules] == ["allow-6"]
        digests = {r["policy_digest"] for r in gw.audit.records}
        assert len(digests) == 4  # allow-0, allow-2, allow-4, allow-6
    finally:
        await gw.stop()
