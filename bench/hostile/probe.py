"""What is measured from outside the servers: a health check per node (``GET /`` every 50 ms,
on a thread of its own so that nothing else in the measuring process delays it) and the
servers' memory (RSS from /proc, Redis's used_memory) once a second."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from dataclasses import dataclass, field

import aiohttp
import redis.asyncio as aioredis

from bench.hostile.servers import Cluster, schedstat

BENCH = "bench"  # this process (the honest participants' event loop)

INTERVAL = 0.05
REQUEST_TIMEOUT = 5.0


@dataclass
class Check:
    at: float  # time.monotonic() when the request was sent
    seconds: float  # until the whole answer was read (or the failure)
    ok: bool


class HealthProbe:
    """``GET /`` on each URL every `INTERVAL` s, one after another per URL (a request that
    takes longer delays the next, as a load balancer's check would)."""

    def __init__(self, urls: dict[str, str]) -> None:
        self.checks: dict[str, list[Check]] = {name: [] for name in urls}
        self._urls = urls
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._main, name="health-probe", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(REQUEST_TIMEOUT + 5)

    def _main(self) -> None:
        asyncio.run(self._run())

    async def _run(self) -> None:
        timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT)
        async with aiohttp.ClientSession(timeout=timeout) as http:
            await asyncio.gather(*(self._poll(http, name) for name in self._urls))

    async def _poll(self, http: aiohttp.ClientSession, name: str) -> None:
        url, checks = self._urls[name], self.checks[name]
        next_at = time.monotonic()
        while not self._stop.is_set():
            started = time.monotonic()
            ok = False
            try:
                async with http.get(url) as response:
                    await response.read()
                    ok = response.status == 200
            except (aiohttp.ClientError, TimeoutError):
                pass
            checks.append(Check(started, time.monotonic() - started, ok))
            next_at = max(next_at + INTERVAL, time.monotonic())
            await asyncio.sleep(next_at - time.monotonic())


@dataclass
class MemorySample:
    at: float
    mib: dict[str, float] = field(default_factory=dict)  # node name (or "redis") -> MiB
    cpu: dict[str, float] = field(default_factory=dict)  # node name -> CPU seconds so far
    # node name (and "bench", this process's main thread) -> (seconds its event loop thread
    # ran, seconds it was runnable but waited for a CPU), so far
    loop: dict[str, tuple[float, float]] = field(default_factory=dict)


async def sample_memory(running: Cluster, samples: list[MemorySample]) -> None:
    """Every second until cancelled: each node's RSS and CPU time, Redis's used_memory."""
    store = (
        aioredis.Redis(host="127.0.0.1", port=running.redis.port)
        if running.redis is not None
        else None
    )
    try:
        while True:
            sample = MemorySample(time.monotonic())
            for node in running.nodes:
                sample.mib[node.name] = round(node.rss_mib(), 1)
                sample.cpu[node.name] = node.cpu_seconds()
                sample.loop[node.name] = node.loop_schedstat()
            sample.loop[BENCH] = schedstat(os.getpid())
            if store is not None:
                info = await store.info("memory")
                sample.mib["redis"] = round(int(info["used_memory"]) / 2**20, 1)
            samples.append(sample)
            await asyncio.sleep(1.0)
    finally:
        if store is not None:
            await store.aclose()
