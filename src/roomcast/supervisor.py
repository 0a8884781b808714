"""``roomcast serve --workers N``: N media worker processes on one machine, one per core.

Each worker is an ordinary multi-node Roomcast node: they share the HTTP port (SO_REUSEPORT,
so the kernel spreads WebSockets and API calls across them), each has its own WebRTC UDP port
(``udp_port + i``), and rooms are pinned to one worker by the same Redis placement that spreads
rooms over machines. Without a configured Redis a private ``redis-server`` is started on a
Unix socket (Debian package ``redis-server``). A worker that dies is restarted; its rooms are
placed again when their participants reconnect. A worker that cannot bind its ports exits with
``STARTUP_FAILED`` after saying why: that is not retried, the supervisor stops the others.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from roomcast.config import Config

log = logging.getLogger("roomcast.supervisor")

WORKER_ENV = "ROOMCAST_WORKER_INDEX"  # set in each worker: its index (0 serves Prometheus)
RESTART_DELAY = 1.0
STARTUP_FAILED = 3  # a worker's exit status when its ports cannot be bound (cli.py)
STOP_TIMEOUT = 30.0  # seconds workers get to drain after SIGTERM before SIGKILL


class WorkersError(Exception):
    pass


def worker_index() -> int | None:
    """This process's worker index, or None when not started by ``--workers``."""
    value = os.environ.get(WORKER_ENV)
    return int(value) if value and value.isdigit() else None


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM when the supervisor dies (Linux prctl
    PR_SET_PDEATHSIG), so a killed supervisor never leaves workers holding the port."""
    with contextlib.suppress(OSError, AttributeError):
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)


def strip_workers_flag(argv: Sequence[str]) -> list[str]:
    out: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
            continue
        if arg == "--workers":
            skip = True
            continue
        if arg.startswith("--workers="):
            continue
        out.append(arg)
    return out


class PrivateRedis:
    """A redis-server only the workers use: Unix socket, no TCP port, no persistence."""

    def __init__(self) -> None:
        self._dir = tempfile.mkdtemp(prefix="roomcast-redis-")
        self.socket = str(Path(self._dir) / "redis.sock")
        self._proc: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise WorkersError(
                "--workers needs Redis: set redis.address (or --redis-host), "
                "or install redis-server (Debian: apt-get install redis-server)"
            )
        self._proc = await asyncio.create_subprocess_exec(
            binary,
            "--port", "0",
            "--unixsocket", self.socket,
            "--unixsocketperm", "700",
            "--save", "",
            "--appendonly", "no",
            stdout=asyncio.subprocess.DEVNULL,
            preexec_fn=_die_with_parent,
            # Its own session: a terminal's Ctrl-C (SIGINT to the foreground process group)
            # must not stop Redis before the workers have left their rooms through it.
            start_new_session=True,
        )  # fmt: skip
        for _ in range(200):
            try:
                _, writer = await asyncio.open_unix_connection(self.socket)
                writer.close()
                return
            except OSError:
                if self._proc.returncode is not None:
                    break
                await asyncio.sleep(0.05)
        raise WorkersError("the private redis-server did not start")

    async def stop(self) -> None:
        if self._proc is not None and self._proc.returncode is None:
            self._proc.terminate()
            await self._proc.wait()
        shutil.rmtree(self._dir, ignore_errors=True)


async def supervise(config: Config, count: int, argv: Sequence[str]) -> int:
    """Run ``count`` workers until SIGINT/SIGTERM; forward the signal and wait for them."""
    if config.port == 0:
        raise WorkersError("--workers needs a fixed port (the workers share it)")
    private = None if config.redis.enabled else PrivateRedis()
    if private is not None:
        await private.start()
        log.info(
            "private Redis on unix://%s (roomcast list-nodes --redis-host unix://%s)",
            private.socket,
            private.socket,
        )
    base_args = strip_workers_flag(argv)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    children: dict[int, asyncio.subprocess.Process] = {}
    startup_failed = asyncio.Event()

    async def run_worker(index: int) -> None:
        args = [*base_args, "--udp-port", str(config.effective_udp_port + index)]
        if private is not None:
            args += ["--redis-host", f"unix://{private.socket}"]
        env = {**os.environ, WORKER_ENV: str(index)}
        while not stop.is_set():
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "roomcast", *args, env=env, preexec_fn=_die_with_parent
            )
            children[index] = proc
            code = await proc.wait()
            if stop.is_set():
                return
            if code == STARTUP_FAILED:  # it said why; restarting would fail the same way
                log.error("worker %d could not start; stopping the other workers", index)
                startup_failed.set()
                stop.set()
                return
            log.error("worker %d exited with %s; restarting it", index, code)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), RESTART_DELAY)

    first_udp = config.effective_udp_port
    log.info(
        "starting %d workers on port %d (WebRTC UDP %d-%d)",
        count,
        config.port,
        first_udp,
        first_udp + count - 1,
    )
    tasks = [loop.create_task(run_worker(i)) for i in range(count)]
    await stop.wait()
    for proc in children.values():
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
    try:
        await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), STOP_TIMEOUT)
    except TimeoutError:
        log.error("workers did not stop within %.0f s; killing them", STOP_TIMEOUT)
    for proc in children.values():
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    if private is not None:
        await private.stop()
    failed = [p.returncode for p in children.values() if p.returncode not in (0, None)]
    return 1 if failed or startup_failed.is_set() else 0
