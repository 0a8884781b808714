"""Official Python SDK participants as processes (tests/lab/sdk_peer.py), in a client network of
the lab or in the root namespace, driven over stdin/stdout."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

SCRIPT = Path(__file__).with_name("sdk_peer.py")
REPO = SCRIPT.parents[2]
EVENT_TIMEOUT = 30.0

Event = dict[str, Any]


class PeerProcess:
    """One sdk_peer.py process: its events as they come, and commands with awaited replies."""

    def __init__(self, name: str, prefix: Sequence[str] = ()) -> None:
        self.name = name
        self.prefix = list(prefix)  # e.g. ["ip", "netns", "exec", ns]
        self.events: list[Event] = []
        self.stderr_tail: list[str] = []
        self._changed = asyncio.Event()
        self._ids = itertools.count(1)
        self._proc: asyncio.subprocess.Process | None = None
        self._readers: list[asyncio.Task[None]] = []

    async def start(self, url: str, token: str, *extra: str) -> None:
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self._proc = await asyncio.create_subprocess_exec(
            *self.prefix, sys.executable, str(SCRIPT), url, token, *extra,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            cwd=REPO,
            env=env,
            limit=1 << 20,
        )  # fmt: skip
        assert self._proc.stdout is not None and self._proc.stderr is not None
        self._readers = [
            asyncio.create_task(self._read_events(self._proc.stdout)),
            asyncio.create_task(self._read_stderr(self._proc.stderr)),
        ]

    async def _read_events(self, stream: asyncio.StreamReader) -> None:
        while line := await stream.readline():
            with contextlib.suppress(json.JSONDecodeError):
                self.events.append(json.loads(line))
                self._changed.set()
        self.events.append({"event": "exited"})
        self._changed.set()

    async def _read_stderr(self, stream: asyncio.StreamReader) -> None:
        while line := await stream.readline():
            self.stderr_tail = [*self.stderr_tail[-40:], line.decode(errors="replace").rstrip()]

    def diagnostics(self) -> str:
        events = json.dumps(self.events[-20:])
        stderr = "\n    ".join(self.stderr_tail[-20:])
        return f"peer {self.name!r}: last events {events}\n  stderr:\n    {stderr}"

    async def wait(
        self,
        event: str,
        where: Callable[[Event], bool] = lambda _: True,
        timeout: float = EVENT_TIMEOUT,
        after: int = 0,
    ) -> Event:
        """The first `event` (from index `after` on) that satisfies `where`."""

        async def find() -> Event:
            while True:
                for seen in self.events[after:]:
                    if seen["event"] == event and where(seen):
                        return seen
                    if seen["event"] in ("exited", "connect_failed") and event != seen["event"]:
                        raise AssertionError(f"{self.name} {seen['event']}: {self.diagnostics()}")
                self._changed.clear()
                await self._changed.wait()

        try:
            return await asyncio.wait_for(find(), timeout)
        except TimeoutError:
            raise AssertionError(
                f"no {event!r} from {self.name} within {timeout:g} s\n{self.diagnostics()}"
            ) from None

    async def command(self, cmd: str, timeout: float = EVENT_TIMEOUT, **fields: Any) -> Event:
        assert self._proc is not None and self._proc.stdin is not None
        ident = next(self._ids)
        self._proc.stdin.write(json.dumps({"cmd": cmd, "id": ident, **fields}).encode() + b"\n")
        await self._proc.stdin.drain()
        reply = await self.wait("reply", lambda e: e.get("id") == ident, timeout)
        assert "error" not in reply, f"{cmd}: {reply['error']}\n{self.diagnostics()}"
        return reply

    async def stop(self) -> None:
        proc = self._proc
        if proc is None:
            return
        if proc.returncode is None:
            with contextlib.suppress(Exception):
                await self.command("quit", timeout=5)
            try:
                await asyncio.wait_for(proc.wait(), 10)
            except TimeoutError:
                proc.kill()
                await proc.wait()
        for reader in self._readers:
            reader.cancel()
        self._proc = None


class Peers:
    """Starts peers and stops every one of them at the end of the test (before the lab goes)."""

    def __init__(self) -> None:
        self.started: list[PeerProcess] = []

    async def start(
        self, name: str, url: str, token: str, prefix: Sequence[str] = (), *extra: str
    ) -> PeerProcess:
        peer = PeerProcess(name, prefix)
        self.started.append(peer)
        await peer.start(url, token, *extra)
        return peer

    async def stop_all(self) -> None:
        await asyncio.gather(*(peer.stop() for peer in self.started))
