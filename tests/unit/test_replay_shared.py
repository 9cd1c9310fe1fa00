"""The replay cache workers share through the supervisor, over a real Unix socket."""

from __future__ import annotations

import asyncio
from pathlib import Path

from gateway.authn.replay import InMemoryReplayCache
from gateway.authn.replay_shared import ReplayServer, SharedReplayCache
from gateway.clock import FrozenClock


async def test_a_proof_seen_by_one_worker_is_a_replay_for_another(tmp_path: Path) -> None:
    clock = FrozenClock(1000.0)
    server = ReplayServer(InMemoryReplayCache(clock), str(tmp_path / "r.sock"))
    await server.start()
    a, b = SharedReplayCache(server.path), SharedReplayCache(server.path)
    try:
        # many questions in one loop turn: batched, answered in order
        first = await asyncio.gather(*(a.check_and_store("wpt:k", f"j{i}", 1100.0)
                                       for i in range(500)))
        assert all(first)
        again = await asyncio.gather(*(b.check_and_store("wpt:k", f"j{i}", 1100.0)
                                       for i in range(0, 1000, 2)))
        assert again == [i >= 500 for i in range(0, 1000, 2)]  # seen by `a`: replays
        # scope and value are kept apart: ("a", "b\\0c") is not ("a\\0b", "c")
        assert await a.check_and_store("s", "tab\tnew\nline", 1100.0)
        assert not await b.check_and_store("s", "tab\tnew\nline", 1100.0)
        clock.advance(200)  # expired entries are forgotten
        assert await a.check_and_store("wpt:k", "j1", 1400.0)
    finally:
        await a.close()
        await b.close()
        await server.close()


async def test_fails_closed_when_the_supervisor_is_gone(tmp_path: Path) -> None:
    clock = FrozenClock(1000.0)
    server = ReplayServer(InMemoryReplayCache(clock), str(tmp_path / "r.sock"))
    await server.start()
    c = SharedReplayCache(server.path, timeout=0.5)
    assert await c.check_and_store("s", "v1", 1100.0)
    await server.close()
    assert not await c.check_and_store("s", "v2", 1100.0)  # refused, never "new"
    await c.close()
    assert not await SharedReplayCache(str(tmp_path / "nothing.sock")).check_and_store(
        "s", "v3", 1100.0)


async def test_a_silent_supervisor_times_out_closed(tmp_path: Path) -> None:
    async def mute(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()

    srv = await asyncio.start_unix_server(mute, path=str(tmp_path / "m.sock"))
    c = SharedReplayCache(str(tmp_path / "m.sock"), timeout=0.2)
    try:
        assert not await c.check_and_store("s", "v", 1100.0)
    finally:
        await c.close()
        srv.close()


async def test_malformed_questions_are_replays(tmp_path: Path) -> None:
    server = ReplayServer(InMemoryReplayCache(FrozenClock(0.0)), str(tmp_path / "r.sock"))
    await server.start()
    reader, writer = await asyncio.open_unix_connection(server.path)
    writer.write(b"no-tab-here\nabc\tnot-a-number\nabc\t10.0\n")
    assert await reader.readexactly(6) == b"0\n0\n1\n"
    writer.write(b"x" * 300)  # an endless line: the server hangs up
    assert await reader.read() == b""
    writer.close()
    await server.close()
