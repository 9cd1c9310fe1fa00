"""Several worker processes on the same ports (``SO_REUSEPORT``), one event loop each.

Python runs one core per process; a gateway on a 2-core box serves twice as much with two
workers. The supervisor validates the config once (which also creates keys in a state
directory, so workers do not race to make different ones), then starts the workers, hosts the
shared replay cache, passes SIGHUP on (each worker reloads, a bad file is refused by each) and
SIGTERM/SIGINT (each worker drains), and restarts a worker that dies. Metrics are summed across
workers through prometheus-client's multiprocess files.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

from gateway.authn.replay import InMemoryReplayCache
from gateway.authn.replay_shared import ReplayServer
from gateway.clock import SystemClock
from gateway.config.load import load_config
from gateway.config.source import ConfigError
from gateway.runtime import build_runtime

log = logging.getLogger("wimse_gateway.supervisor")


def default_workers() -> int:
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
               else (os.cpu_count() or 1))


class Supervisor:
    def __init__(self, config: Path, workers: int, log_level: str = "info") -> None:
        self.config = config
        self.workers = workers
        self.log_level = log_level
        self.procs: dict[int, subprocess.Popen[bytes]] = {}
        self.stopping = False
        self.state_dir = Path(tempfile.mkdtemp(prefix="wimse-gateway-"))
        self.metrics_dir = self.state_dir / "metrics"
        self.metrics_dir.mkdir()
        self.socket = str(self.state_dir / "replay.sock")

    def _spawn(self, index: int) -> None:
        env = {**os.environ, "WIMSE_GATEWAY_WORKER": str(index),
               "WIMSE_GATEWAY_REPLAY_SOCKET": self.socket,
               "PROMETHEUS_MULTIPROC_DIR": str(self.metrics_dir)}
        self.procs[index] = subprocess.Popen(
            [sys.executable, "-m", "gateway.cli", "--log-level", self.log_level, "run", "-c",
             str(self.config), "--workers", "1"], env=env)
        log.info("worker %d started (pid %d)", index, self.procs[index].pid)

    def _signal_all(self, sig: int) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(sig)

    async def run(self) -> int:
        cfg = load_config(self.config)  # raises ConfigError: nothing started
        build_runtime(cfg, SystemClock())
        if any(lst.port == 0 for lst in cfg.config.listeners):
            raise ConfigError([cfg.document.problem(("listeners",), "several workers need "
                                                    "fixed ports (port 0 picks one per worker)")])
        replay = ReplayServer(InMemoryReplayCache(
            SystemClock(), cfg.config.authentication.replay_cache_entries), self.socket)
        await replay.start()
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()

        def on_stop() -> None:
            self.stopping = True
            stop.set()

        loop.add_signal_handler(signal.SIGTERM, on_stop)
        loop.add_signal_handler(signal.SIGINT, on_stop)
        loop.add_signal_handler(signal.SIGHUP, lambda: self._signal_all(signal.SIGHUP))
        for i in range(self.workers):
            self._spawn(i)
        try:
            while not stop.is_set():
                await asyncio.wait([asyncio.create_task(stop.wait())], timeout=0.5)
                for i, proc in list(self.procs.items()):
                    if proc.poll() is not None and not self.stopping:
                        from prometheus_client import multiprocess

                        multiprocess.mark_process_dead(proc.pid, str(self.metrics_dir))
                        log.error("worker %d exited with %s; restarting", i, proc.returncode)
                        await asyncio.sleep(0.5)
                        self._spawn(i)
            log.info("stopping %d workers", len(self.procs))
            self._signal_all(signal.SIGTERM)
            codes = [await asyncio.to_thread(p.wait) for p in self.procs.values()]
            return 0 if all(c == 0 for c in codes) else 1
        finally:
            await replay.close()
            shutil.rmtree(self.state_dir, ignore_errors=True)
