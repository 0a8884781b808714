"""The servers under attack: `roomcast serve` subprocesses (one, or two on a private
redis-server), and what is read from them: RSS from /proc, limit hits from /metrics."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import sys
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
from tests.conftest import API_KEY, API_SECRET, free_port
from tests.integration.cluster import REDIS_SERVER, RedisServer

from bench.hostile.framework import NodeAddress

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
REPO = Path(__file__).resolve().parents[2]


def schedstat(pid: int, tid: int | None = None) -> tuple[float, float]:
    """(seconds on a CPU, seconds runnable but waiting for one) of a thread, from
    /proc/PID/task/TID/schedstat; (0, 0) when it is gone or the kernel does not keep them."""
    try:
        fields = Path(f"/proc/{pid}/task/{tid or pid}/schedstat").read_text().split()
        return int(fields[0]) / 1e9, int(fields[1]) / 1e9
    except (OSError, IndexError, ValueError):
        return 0.0, 0.0


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a whole process (every thread) so far, from /proc (0 once it
    is gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = stat.rpartition(")")[2].split()  # after the command name, which may hold spaces
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def machine_cpu() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine, all cores, from /proc/stat: what every
    process on it used, ours and other people's."""
    try:
        first = Path("/proc/stat").read_text().splitlines()[0].split()
    except (OSError, IndexError):
        return 0.0, 0.0
    ticks = [int(value) for value in first[1:8]]  # user nice system idle iowait irq softirq
    idle = ticks[3] + ticks[4]
    return (sum(ticks) - idle) / CLOCK_TICKS, sum(ticks) / CLOCK_TICKS


def udp_drops(pids: dict[str, int]) -> dict[str, int]:
    """Datagrams the kernel dropped so far (the receive buffer was full) on the UDP sockets
    each process holds, from /proc/net/udp{,6} matched to the sockets in /proc/PID/fd."""
    drops_by_inode: dict[str, int] = {}
    for table in ("/proc/net/udp", "/proc/net/udp6"):
        try:
            rows = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            fields = row.split()
            drops_by_inode[fields[9]] = int(fields[-1])
    out: dict[str, int] = {}
    for name, pid in pids.items():
        total = 0
        try:
            for fd in os.scandir(f"/proc/{pid}/fd"):
                with suppress(OSError):
                    link = os.readlink(fd.path)
                    if link.startswith("socket:["):
                        total += drops_by_inode.get(link[8:-1], 0)
        except OSError:
            continue
        out[name] = total
    return out


@dataclass
class ServerProcess:
    name: str
    address: NodeAddress
    proc: asyncio.subprocess.Process
    log: Path

    def rss_mib(self) -> float:
        """Resident memory now, from /proc (0 once the process is gone)."""
        try:
            status = Path(f"/proc/{self.proc.pid}/status").read_text()
        except OSError:
            return 0.0
        for line in status.splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return 0.0

    def loop_schedstat(self) -> tuple[float, float]:
        """Seconds the main (event loop) thread has run, and waited for a CPU while runnable."""
        return schedstat(self.proc.pid)

    def cpu_seconds(self) -> float:
        return cpu_seconds(self.proc.pid)


@dataclass
class Cluster:
    nodes: list[ServerProcess]
    redis: RedisServer | None = None
    logs: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="hostile-")))
    control_url: str = ""  # bench/hostile/control.py: an idle server, probed like the nodes
    control_pid: int = 0

    def pids(self) -> dict[str, int]:
        """Every server process of the run by name: the nodes, "redis", "control"."""
        pids = {node.name: node.proc.pid for node in self.nodes}
        if self.redis is not None and self.redis.proc is not None:
            pids["redis"] = self.redis.proc.pid
        if self.control_pid:
            pids["control"] = self.control_pid
        return pids


def redis_available() -> bool:
    return shutil.which("redis-server") is not None or Path(REDIS_SERVER).exists()


def node_config(address: NodeAddress, redis: RedisServer | None, extra: str) -> str:
    # A free ICE/TCP port too: rtc.tcp_port defaults to 7881, which two nodes cannot share.
    config = (
        f"port: {address.port}\nbind_addresses: [127.0.0.1]\nkeys:\n  {API_KEY}: {API_SECRET}\n"
        f"rtc:\n  udp_port: {address.udp_port}\n  tcp_port: {free_port()}\n"
        f"prometheus:\n  port: {address.metrics_port}\n"
        "logging:\n  level: warn\n"
    )
    if redis is not None:
        # Ties go to the local node: the honest room, created first through node 0, lives there.
        config += f"redis:\n  address: {redis.address}\nnode_selector:\n  sort_by: rooms\n"
    return config + extra


async def start_node(name: str, redis: RedisServer | None, extra: str, logs: Path) -> ServerProcess:
    address = NodeAddress(free_port(), free_port(), free_port(socket.SOCK_DGRAM))
    log = logs / f"{name}.log"
    with log.open("ab") as out:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "roomcast",
            "serve",
            "--config-body",
            node_config(address, redis, extra),
            stdout=out,
            stderr=out,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    async with aiohttp.ClientSession() as http:
        for _ in range(300):
            if proc.returncode is not None:
                break
            with suppress(aiohttp.ClientError):
                async with http.get(address.http + "/") as resp:
                    if resp.status == 200:
                        return ServerProcess(name, address, proc, log)
            await asyncio.sleep(0.1)
    with suppress(ProcessLookupError):
        proc.kill()
    raise RuntimeError(f"node {name} did not start:\n{log.read_text()[-3000:]}")


async def stop_node(node: ServerProcess) -> None:
    if node.proc.returncode is None:
        node.proc.terminate()
        try:
            await asyncio.wait_for(node.proc.wait(), 15)
        except TimeoutError:
            node.proc.kill()
            await node.proc.wait()


async def start_control(port: int) -> asyncio.subprocess.Process:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bench.hostile.control", str(port), cwd=REPO
    )
    async with aiohttp.ClientSession() as http:
        for _ in range(100):
            with suppress(aiohttp.ClientError):
                async with http.get(f"http://127.0.0.1:{port}/") as resp:
                    if resp.status == 200:
                        return proc
            await asyncio.sleep(0.1)
    proc.kill()
    raise RuntimeError("the control server did not start")


@asynccontextmanager
async def cluster(multinode: bool, extra_config: str) -> AsyncIterator[Cluster]:
    """One node, or two nodes on a private redis-server, and the control server; all stopped
    at the end."""
    redis = RedisServer() if multinode else None
    running = Cluster(nodes=[], redis=redis)
    control: asyncio.subprocess.Process | None = None
    try:
        if redis is not None:
            await redis.start()
        names = ["node-a", "node-b"] if multinode else ["node"]
        for name in names:
            running.nodes.append(await start_node(name, redis, extra_config, running.logs))
        port = free_port()
        control = await start_control(port)
        running.control_url = f"http://127.0.0.1:{port}/"
        running.control_pid = control.pid
        yield running
    finally:
        if control is not None and control.returncode is None:
            control.terminate()
            await control.wait()
        await asyncio.gather(*(stop_node(node) for node in running.nodes))
        if redis is not None:
            await redis.stop()


async def limit_hits(http: aiohttp.ClientSession, nodes: list[ServerProcess]) -> dict[str, float]:
    """roomcast_limit_hits_total by limit, summed over the nodes."""
    totals: dict[str, float] = {}
    for node in nodes:
        try:
            async with http.get(f"http://127.0.0.1:{node.address.metrics_port}/metrics") as r:
                text = await r.text()
        except aiohttp.ClientError:
            continue
        for line in text.splitlines():
            if line.startswith('roomcast_limit_hits_total{limit="'):
                labels, _, value = line.rpartition(" ")
                limit = labels.split('"')[1]
                totals[limit] = totals.get(limit, 0.0) + float(value)
    return totals
