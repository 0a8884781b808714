"""One run: servers up, honest participants talking, a baseline phase, then the attacker
process for the attack phase; the figures of both phases side by side."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import platform
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import aiohttp
from livekit import api
from tests.conftest import API_KEY, API_SECRET

from bench.hostile.attacker import RESULT_PREFIX, STARTED
from bench.hostile.framework import Plan, Tally, stacks_on_signals
from bench.hostile.honest import honest_room
from bench.hostile.probe import ATTACKER, HealthProbe, MemorySample, Target, sample_memory
from bench.hostile.report import CONTROL, Report, Window, judge, phase_of, trends
from bench.hostile.servers import REPO, cluster, limit_hits, redis_available
from roomcast.config import LimitConfig

ROOM = "honest"
ATTACKER_GRACE = 300.0  # s the attacker may take past its time to finish its cycles
MEMORY_ROW_EVERY = 60.0
SAMPLER_GRACE = 10.0  # s for the sampler to finish its last sample


@dataclass
class Options:
    minutes: float = 2.0  # the attack phase
    baseline: float = 20.0  # seconds of honest traffic alone, measured
    warmup: float = 5.0  # seconds of honest traffic before the baseline, not measured
    multinode: bool | None = None  # two nodes on a private redis-server; None: if installed
    idle_timeout: float | None = None  # the nodes' limit.http_idle_timeout; None: default
    only: list[str] = field(default_factory=list)  # attack name prefixes; []: every attack
    skip: list[str] = field(default_factory=list)  # attack name prefixes left out


@dataclass
class AttackRun:
    started: float
    ended: float
    tallies: list[Tally]
    problem: str | None = None


async def attack(plan: Plan, log: Path, pids: dict[str, int]) -> AttackRun:
    """The attacker process, from start to exit (its pid in ``pids`` meanwhile); its
    tallies."""
    path = os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])
    env = {**os.environ, "PYTHONPATH": path}
    with log.open("ab") as errors:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bench.hostile.attacker",
            plan.to_json(),
            stdout=asyncio.subprocess.PIPE,
            stderr=errors,
            cwd=REPO,
            env=env,
        )
    pids[ATTACKER] = proc.pid
    run = AttackRun(time.monotonic(), 0.0, [])
    assert proc.stdout is not None
    try:
        async with asyncio.timeout(plan.seconds + ATTACKER_GRACE):
            async for raw in proc.stdout:
                line = raw.decode(errors="replace").strip()
                if line == STARTED:
                    run.started = time.monotonic()
                elif line.startswith(RESULT_PREFIX):
                    run.ended = time.monotonic()  # the attacks are over; the process exits
                    tallies = json.loads(line.removeprefix(RESULT_PREFIX))
                    run.tallies = [Tally.from_dict(t) for t in tallies]
            await proc.wait()
    except TimeoutError:
        proc.kill()
        await proc.wait()
        run.problem = f"the attacker overran its time by {ATTACKER_GRACE:g} s and was killed"
    run.ended = run.ended or time.monotonic()
    if proc.returncode and run.problem is None:
        run.problem = f"the attacker exited with {proc.returncode} (see {log})"
    return run


def memory_rows(
    samples: list[MemorySample], start: float, every: float = MEMORY_ROW_EVERY
) -> list[MemorySample]:
    """The first sample from ``start``, one every ``every`` seconds after it, and the last."""
    rows: list[MemorySample] = []
    due = start
    for sample in samples:
        if sample.at >= due:
            rows.append(sample)
            due = sample.at + every
    if samples and samples[-1].at >= start and (not rows or rows[-1] is not samples[-1]):
        rows.append(samples[-1])
    return rows


async def run(options: Options) -> Report:
    logging.getLogger("livekit").setLevel(logging.ERROR)  # the SDK's v1-path fallback notes
    stacks_on_signals()
    multinode = redis_available() if options.multinode is None else options.multinode
    if multinode and not redis_available():
        raise SystemExit("--multinode needs redis-server, which is not installed")
    skipped = None
    if not multinode:
        why = "redis-server is not installed" if options.multinode is None else "--single-node"
        skipped = f"{why}: one node, the multi-node attacks (H3, M7) are not run"
        print(f"hostile: {skipped}", file=sys.stderr, flush=True)
    idle_timeout = options.idle_timeout or LimitConfig().http_idle_timeout
    extra = f"limit:\n  http_idle_timeout: {idle_timeout}\n" if options.idle_timeout else ""
    load_at_start = os.getloadavg()[0]
    samples: list[MemorySample] = []
    others: dict[str, int] = {}  # processes started later: the attacker
    async with cluster(multinode, extra) as running, aiohttp.ClientSession() as http:
        home = running.nodes[0].address
        async with api.LiveKitAPI(home.http, API_KEY, API_SECRET) as lk:
            await lk.room.create_room(api.CreateRoomRequest(name=ROOM))  # placed on node 0
        targets = {n.name: Target(n.address.http + "/", n.proc.pid) for n in running.nodes}
        targets[CONTROL] = Target(running.control_url, running.control_pid)
        probe = HealthProbe(targets)
        print(
            f"hostile: {options.warmup:g} s warm-up, {options.baseline:g} s baseline, then "
            f"{options.minutes:g} min of attacks; logs in {running.logs}",
            file=sys.stderr,
            flush=True,
        )
        sampling = asyncio.Event()
        sampler = asyncio.ensure_future(sample_memory(running, samples, others, sampling))
        try:
            async with honest_room(home.ws, ROOM) as honest:
                probe.start()
                await asyncio.sleep(options.warmup)
                baseline = Window("baseline", time.monotonic(), 0.0)
                await asyncio.sleep(options.baseline)
                baseline.end = time.monotonic()
                hits_before = await limit_hits(http, running.nodes)
                plan = Plan(
                    nodes=[node.address for node in running.nodes],
                    room=ROOM,
                    honest=honest.identities,
                    seconds=options.minutes * 60,
                    idle_timeout=idle_timeout,
                    redis_port=running.redis.port if running.redis is not None else 0,
                    only=options.only,
                    skip=options.skip,
                )
                attacked = await attack(plan, running.logs / "attacker.log", others)
                hits_after = await limit_hits(http, running.nodes)
        finally:
            probe.stop()
            sampling.set()
            try:
                await asyncio.wait_for(asyncio.shield(sampler), SAMPLER_GRACE)
            except TimeoutError:  # a Redis call that never returns: leave it behind
                sampler.cancel()
    attacks = Window("attacks", attacked.started, attacked.ended)
    title = (
        f"hostile: {'two nodes on a private redis-server' if multinode else 'one node'}, "
        f"baseline {baseline.seconds:.0f} s, attacks {attacks.seconds:.0f} s, on "
        f"{platform.node()} ({os.cpu_count()} CPUs, shared; load average {load_at_start:.2f} "
        f"at start, {os.getloadavg()[0]:.2f} at end), Python {platform.python_version()}; "
        f"logs and samples.json in {running.logs}"
    )
    report = Report(
        title=title,
        baseline=phase_of(baseline, probe.checks, honest, samples),
        attacks=phase_of(attacks, probe.checks, honest, samples),
        memory=trends(samples, attacks),
        memory_rows=memory_rows(samples, baseline.start),
        tallies=attacked.tallies,
        limit_hits={k: v - hits_before.get(k, 0.0) for k, v in hits_after.items()},
    )
    judge(report)
    if skipped is not None:
        report.notes.append(skipped)
    if attacked.problem is not None:
        report.failures.append(attacked.problem)
    raw = {
        "windows": {w.name: [w.start, w.end] for w in (baseline, attacks)},
        "memory": [asdict(s) for s in samples],
        "checks": {node: [asdict(c) for c in checks] for node, checks in probe.checks.items()},
        "renders": honest.frames,
        "arrivals": honest.arrivals,
        "captures": honest.captures,
        "rtts": honest.rtts,
        "tallies": [asdict(t) for t in attacked.tallies],
    }
    (running.logs / "samples.json").write_text(json.dumps(raw))
    return report
