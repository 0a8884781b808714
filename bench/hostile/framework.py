"""What the attacker process and the measuring process share: the plan of the run (where the
servers are, which room is the honest one) and the tally of each attack.

An `Attack` is one cycle of one attack from the security review of issue 20 (findings H1-H4,
M1-M7, L1-L8). `run_attack` repeats the cycle every `period` seconds until told to stop, always
finishing the cycle it is in (each is bounded by `timeout`), so a short run still performs every
attack at least once. A cycle ends in one of three ways: the server held (it returns), the
attack worked (`AttackSucceeded`), or the attacker could not carry it out (any other exception:
reported, not counted either way).
"""

from __future__ import annotations

import asyncio
import faulthandler
import itertools
import json
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import aiohttp

CORRECTNESS = "correctness"  # the server must refuse: a success is a security bug
CONTAINMENT = "containment"  # the server must refuse, cut or bound the attacker


@dataclass
class NodeAddress:
    """One `roomcast serve` process on 127.0.0.1 (a `hostile_client.Listening`)."""

    port: int
    metrics_port: int  # prometheus.port: /metrics is served there only
    udp_port: int = 0  # rtc.udp_port: ICE, DTLS and SRTP

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws(self) -> str:
        return f"ws://127.0.0.1:{self.port}"


@dataclass
class Plan:
    nodes: list[NodeAddress]
    room: str  # the honest participants' room (on nodes[0])
    honest: list[str]  # their identities: no roomList-only token may see them in /stats
    seconds: float  # how long to keep attacking
    idle_timeout: float  # the nodes' limit.http_idle_timeout (slowloris)
    redis_port: int = 0  # 0: a single node, no multi-node attacks
    only: list[str] = field(default_factory=list)  # attack name prefixes ("H1", "M"); []: all
    skip: list[str] = field(default_factory=list)  # attack name prefixes left out

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> Plan:
        raw = json.loads(text)
        nodes = [NodeAddress(**node) for node in raw.pop("nodes")]
        return cls(nodes=nodes, **raw)


class AttackSucceeded(Exception):
    """The server let the attack through; the message says what happened."""


@dataclass
class Tally:
    name: str
    kind: str
    attempts: int = 0
    blocked: int = 0
    succeeded: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)  # the first few
    error_count: int = 0
    figures: dict[str, float] = field(default_factory=dict)  # e.g. bytes sent, chunks
    cycles: list[tuple[float, float]] = field(default_factory=list)  # time.monotonic() spans

    def add(self, figure: str, amount: float = 1) -> None:
        self.figures[figure] = self.figures.get(figure, 0) + amount

    @property
    def tested(self) -> int:
        return self.blocked + len(self.succeeded)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Tally:
        return cls(**raw)


class Context:
    """What every attack cycle can use."""

    def __init__(self, plan: Plan, http: aiohttp.ClientSession) -> None:
        self.plan = plan
        self.http = http
        self.stop = asyncio.Event()
        self._serial = itertools.count(1)

    @property
    def node(self) -> NodeAddress:
        return self.plan.nodes[0]

    def identity(self, prefix: str) -> str:
        """A new participant identity: joins per identity are rate-limited, and a removed
        attacker comes back as someone else."""
        return f"{prefix}-{next(self._serial)}"


Cycle = Callable[[Context, Tally], Awaitable[None]]


@dataclass
class Attack:
    name: str
    kind: str
    period: float  # seconds from the start of one cycle to the start of the next
    timeout: float  # a cycle that takes longer is abandoned (and reported as an error)
    cycle: Cycle


async def run_attack(attack: Attack, context: Context, tally: Tally, delay: float = 0.0) -> None:
    """Cycles of ``attack`` until ``context.stop``, the first after ``delay`` seconds (the
    attacks start one after another, not all in the same instant)."""
    await asyncio.sleep(delay)
    while True:
        started = time.monotonic()
        tally.attempts += 1
        try:
            async with asyncio.timeout(attack.timeout):
                await attack.cycle(context, tally)
            tally.blocked += 1
        except AttackSucceeded as exc:
            tally.succeeded.append(str(exc))
        except Exception as exc:  # the attacker's own failure: reported
            tally.error_count += 1
            if len(tally.errors) < 3:
                tally.errors.append(f"{type(exc).__name__}: {exc}"[:300])
        # CLOCK_MONOTONIC is system-wide: the measuring process lines these up with its checks.
        tally.cycles.append((started, time.monotonic()))
        if context.stop.is_set():
            return
        rest = attack.period - (time.monotonic() - started)
        if rest > 0:
            try:
                await asyncio.wait_for(context.stop.wait(), rest)
                return
            except TimeoutError:
                pass


def stacks_on_signals() -> None:
    """``kill -USR1 PID`` prints every task's and thread's stack to stderr, ``kill -USR2 PID``
    every thread's even while the event loop is blocked: where a run that does not end waits.
    Call from the running loop."""
    faulthandler.register(signal.SIGUSR2, all_threads=True)

    def dump() -> None:
        faulthandler.dump_traceback(all_threads=True)
        for task in asyncio.all_tasks():
            task.print_stack(file=sys.stderr)
        sys.stderr.flush()

    asyncio.get_running_loop().add_signal_handler(signal.SIGUSR1, dump)
