"""What is measured from outside the servers: a health check per node (``GET /`` every 50 ms,
on a thread of its own so that nothing else in the measuring process delays it) and, once a
second, the servers' memory (RSS from /proc, Redis's used_memory), the CPU time of every
process of the run and of the whole machine, the load average, and the datagrams the kernel
dropped on each process's UDP sockets because their receive buffer was full.

Each check also records how long the checked server's event-loop thread ran, and how long it
was runnable but waiting for a CPU, while the check was in flight, and how long the probe's
own thread waited for a CPU (schedstat): a slow check on a machine shared with others is told
apart from a server busy with its own work.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import Mapping
from contextlib import suppress
from dataclasses import dataclass, field

import aiohttp
import redis.asyncio as aioredis

from bench.hostile.servers import Cluster, cpu_seconds, machine_cpu, schedstat, udp_drops

BENCH = "bench"  # this process: the honest participants (with the SDK's own threads), the probe
ATTACKER = "attacker"

INTERVAL = 0.05
REQUEST_TIMEOUT = 5.0


@dataclass
class Check:
    at: float  # time.monotonic() when the request was sent
    seconds: float  # until the whole answer was read (or the failure)
    ok: bool
    ran: float = 0.0  # s the server's event-loop thread ran meanwhile
    waited: float = 0.0  # s it was runnable but waited for a CPU meanwhile
    probe_waited: float = 0.0  # s the probe's own thread (in this process) waited for a CPU


@dataclass
class Target:
    url: str
    pid: int  # its event loop runs on the main thread


class HealthProbe:
    """``GET /`` on each target every `INTERVAL` s, one after another per target (a request
    that takes longer delays the next, as a load balancer's check would)."""

    def __init__(self, targets: dict[str, Target]) -> None:
        self.checks: dict[str, list[Check]] = {name: [] for name in targets}
        self._targets = targets
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
            await asyncio.gather(*(self._poll(http, name) for name in self._targets))

    async def _poll(self, http: aiohttp.ClientSession, name: str) -> None:
        target, checks = self._targets[name], self.checks[name]
        me, thread = os.getpid(), threading.get_native_id()
        next_at = time.monotonic()
        while not self._stop.is_set():
            ran_before, waited_before = schedstat(target.pid)
            probe_before = schedstat(me, thread)[1]
            started = time.monotonic()
            ok = False
            try:
                async with http.get(target.url) as response:
                    await response.read()
                    ok = response.status == 200
            except (aiohttp.ClientError, TimeoutError):
                pass
            seconds = time.monotonic() - started
            ran, waited = schedstat(target.pid)
            probe_waited = schedstat(me, thread)[1] - probe_before
            checks.append(
                Check(started, seconds, ok, ran - ran_before, waited - waited_before, probe_waited)
            )
            next_at = max(next_at + INTERVAL, time.monotonic())
            await asyncio.sleep(next_at - time.monotonic())


@dataclass
class MemorySample:
    at: float
    mib: dict[str, float] = field(default_factory=dict)  # node name (or "redis") -> MiB
    # process name (nodes, "redis", "control", "bench", "attacker") -> CPU seconds so far,
    # every thread of it
    cpu: dict[str, float] = field(default_factory=dict)
    # node name (and "bench", this process's main thread) -> (seconds its event loop thread
    # ran, seconds it was runnable but waited for a CPU), so far
    loop: dict[str, tuple[float, float]] = field(default_factory=dict)
    machine: tuple[float, float] = (0.0, 0.0)  # (busy, total) CPU seconds of all cores so far
    # process name -> datagrams dropped so far on its UDP sockets (receive buffer full)
    udp_drops: dict[str, int] = field(default_factory=dict)
    load: float = 0.0  # 1-minute load average


async def sample_memory(
    running: Cluster,
    samples: list[MemorySample],
    others: Mapping[str, int],
    stop: asyncio.Event,
) -> None:
    """Every second until ``stop`` is set: each node's RSS and loop thread, Redis's
    used_memory, the CPU time of every process (the servers, this one, and ``others`` by name:
    pid, read each time, so a process started later is sampled from then on), the machine's.
    Stopped by an event, not by cancelling: redis-py's client can swallow a cancellation, and
    the run then never ended."""
    store = (
        aioredis.Redis(host="127.0.0.1", port=running.redis.port)
        if running.redis is not None
        else None
    )
    try:
        while not stop.is_set():
            sample = MemorySample(time.monotonic(), machine=machine_cpu(), load=os.getloadavg()[0])
            for node in running.nodes:
                sample.mib[node.name] = round(node.rss_mib(), 1)
                sample.loop[node.name] = node.loop_schedstat()
            sample.loop[BENCH] = schedstat(os.getpid())
            pids = {**running.pids(), BENCH: os.getpid(), **others}
            sample.cpu = {name: cpu_seconds(pid) for name, pid in pids.items()}
            sample.udp_drops = udp_drops(pids)
            if store is not None:
                info = await store.info("memory")
                sample.mib["redis"] = round(int(info["used_memory"]) / 2**20, 1)
            samples.append(sample)
            with suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 1.0)
    finally:
        if store is not None:
            await store.aclose()
