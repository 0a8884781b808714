"""Figures per phase (baseline, attacks) and the targets of issue 20; render.py prints them.

Targets, during the attacks: health-check p99 under 100 ms on every node (and no failed
check), no gap over 500 ms between the render times of two decoded frames at either honest
watcher (bench/hostile/honest.py), memory flat, and no attack that succeeded.

Memory is flat when, after a warm-up (the first `WARMUP_SHARE` of the attack phase, at least
`WARMUP_MIN` seconds, while every attacker arrives and the allocator reaches its working set),
the low RSS (10th percentile of the 1 s samples) of the last third is at most `FLAT_MIB` above
that of the first third. The low values, not the highest: heavy requests (2 MB JSON frames,
8 MB of unread answers) come and go all along and make RSS swing by tens of MiB, while what a
leak keeps raises the floor. Below `JUDGED_MIN` seconds of attacks a warm-up cannot be told
from a leak: memory is then reported, not judged, and a note says so.

The machine is shared (2 cores, other people's work too): every process's CPU, the machine's,
the load average and, for each slow health check, how long the node's event loop ran and how
long it waited for a CPU meanwhile are reported with the figures. A target missed stays
missed; the notes say where the time went.
"""

from __future__ import annotations

import itertools
import math
import os
import statistics
from dataclasses import dataclass, field

from bench.hostile.framework import Tally
from bench.hostile.honest import Honest
from bench.hostile.probe import Check, MemorySample

HEALTH_P99_MS = 100.0
FRAME_GAP_MS = 500.0
FLAT_MIB = 10.0
WARMUP_SHARE = 0.2
WARMUP_MIN = 60.0
JUDGED_MIN = 180.0
CONTROL = "control"  # the idle server (bench/hostile/control.py): the machine's own noise
CONTENDED_PERCENT = 10.0  # a loop thread waiting for a CPU longer than this: noted
SLOWEST = 5  # health checks listed with the attacks in progress at the time
ANSWER_GRACE = 2.0  # s: a ping sent this close to the end of a phase may still be answered


@dataclass
class Window:
    name: str
    start: float
    end: float

    def __contains__(self, at: float) -> bool:
        return self.start <= at < self.end

    @property
    def seconds(self) -> float:
        return self.end - self.start


def percentile(values: list[float], q: float) -> float:
    """Nearest rank; NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q / 100 * len(ordered)) - 1))]


@dataclass
class Health:
    p50: float
    p99: float
    max: float
    checks: int
    failed: int
    slow: int = 0  # checks of HEALTH_P99_MS or more
    slow_ran: float = 0.0  # mean ms the node's event loop ran during a slow check
    slow_waited: float = 0.0  # ... and was runnable but waited for a CPU
    slow_probe_waited: float = 0.0  # ... and the probe's own thread waited for a CPU
    slow_ms: float = 0.0  # mean duration of a slow check


@dataclass
class Video:
    fps: float
    max_gap: float  # ms between two render times
    max_arrival_gap: float  # ms between two frames' arrivals in the measuring process


@dataclass
class Data:
    p50: float
    p99: float
    answered: int
    lost: int


@dataclass
class Machine:
    """The whole machine over a phase: CPU in % of one core (200 = two cores busy)."""

    busy: float
    others: float  # busy minus every process of this run: other people's work
    load: tuple[float, float, float]  # 1-minute load average: min, mean, max
    cores: int


@dataclass
class Phase:
    window: Window
    health: dict[str, Health]
    capture: Video  # the publisher's own frames: what the watchers can get at best
    video: dict[str, Video]
    data: Data
    incidents: list[str]
    cpu: dict[str, float]  # process (nodes, redis, control, bench, attacker) -> % of one core
    # node (or "bench") -> % of the phase its event loop thread ran, and waited for a CPU
    loop: dict[str, tuple[float, float]]
    machine: Machine
    udp_drops: dict[str, int]  # process -> datagrams its UDP sockets dropped (buffer full)
    slowest: list[tuple[str, Check]]  # (node, check), slowest first
    control: list[Check]  # the idle control server's checks
    gaps: list[GapContext]  # each watcher's largest frame gap, and what waited meanwhile


def health_of(checks: list[Check], window: Window) -> Health:
    inside = [c for c in checks if c.at in window]
    ms = [c.seconds * 1000 for c in inside]
    failed = sum(not c.ok for c in inside)
    slow = [c for c in inside if c.seconds * 1000 >= HEALTH_P99_MS]
    return Health(
        percentile(ms, 50),
        percentile(ms, 99),
        max(ms, default=math.nan),
        len(ms),
        failed,
        len(slow),
        1000 * statistics.fmean([c.ran for c in slow]) if slow else 0.0,
        1000 * statistics.fmean([c.waited for c in slow]) if slow else 0.0,
        1000 * statistics.fmean([c.probe_waited for c in slow]) if slow else 0.0,
        1000 * statistics.fmean([c.seconds for c in slow]) if slow else 0.0,
    )


def gap_span(times: list[float], window: Window) -> tuple[float, float]:
    """The longest time without a frame in ``window`` (its edges count): (start, end)."""
    edges = [window.start, *sorted(t for t in times if t in window), window.end]
    return max(itertools.pairwise(edges), key=lambda span: span[1] - span[0])


def largest_gap(times: list[float], window: Window) -> float:
    """The longest time without a frame in ``window`` (its edges count), ms."""
    start, end = gap_span(times, window)
    return 1000 * (end - start)


@dataclass
class GapContext:
    """Where the time went around one watcher's largest frame gap."""

    watcher: str
    start: float
    end: float
    capture_ms: float  # the publisher's longest pause between captured frames overlapping it
    # event loop thread (nodes, "bench") -> % of the seconds around the gap it spent runnable
    # but waiting for a CPU
    waited: dict[str, float]
    machine_busy: float  # % of one core, the whole machine, around the gap

    @property
    def ms(self) -> float:
        return 1000 * (self.end - self.start)


def gap_context(
    watcher: str, renders: list[float], honest: Honest, samples: list[MemorySample], window: Window
) -> GapContext:
    start, end = gap_span(renders, window)
    captures = sorted(honest.captures)
    capture = max(
        (b - a for a, b in itertools.pairwise(captures) if a < end and b > start), default=0.0
    )
    # The 1 s samples that enclose the gap (or come nearest, at the ends of the run).
    before = [s for s in samples if s.at <= start] or samples[:1]
    after = [s for s in samples if s.at >= end] or samples[-1:]
    if not before or not after or after[0].at <= before[-1].at:
        return GapContext(watcher, start, end, 1000 * capture, {}, math.nan)
    first, last = before[-1], after[0]
    share = 100 / (last.at - first.at)
    waited = {
        name: share * (last.loop[name][1] - first.loop[name][1])
        for name in first.loop
        if name in last.loop
    }
    busy = share * (last.machine[0] - first.machine[0])
    return GapContext(watcher, start, end, 1000 * capture, waited, busy)


def video_of(renders: list[float], arrivals: list[float], window: Window) -> Video:
    frames = sum(t in window for t in renders)
    return Video(
        frames / window.seconds, largest_gap(renders, window), largest_gap(arrivals, window)
    )


def data_of(honest: Honest, window: Window) -> Data:
    rtts = [seconds * 1000 for sent, seconds in honest.rtts if sent in window]
    answered = {sent for sent, _ in honest.rtts}
    due = [s for s in honest.sent.values() if window.start <= s < window.end - ANSWER_GRACE]
    lost = sum(s not in answered for s in due)
    return Data(percentile(rtts, 50), percentile(rtts, 99), len(rtts), lost)


def cpu_of(
    samples: list[MemorySample], window: Window, cores: int = os.cpu_count() or 1
) -> tuple[dict[str, float], dict[str, tuple[float, float]], Machine]:
    """CPU per process and event loop, % of one core, and the machine's, over ``window``.

    A process started during the window (the attacker) counts from its first sample; one
    that ended counts up to its highest total (/proc reads 0 once it is gone)."""
    inside = [s for s in samples if s.at in window]
    if len(inside) < 2:
        return {}, {}, Machine(math.nan, math.nan, (math.nan, math.nan, math.nan), cores)
    first, last = inside[0], inside[-1]
    share = 100 / (last.at - first.at)
    cpu: dict[str, float] = {}
    for name in dict.fromkeys(name for s in inside for name in s.cpu):
        totals = [s.cpu[name] for s in inside if name in s.cpu]
        cpu[name] = share * (max(totals) - totals[0])
    loop = {
        name: (
            share * (last.loop[name][0] - first.loop[name][0]),
            share * (last.loop[name][1] - first.loop[name][1]),
        )
        for name in first.loop
    }
    busy = share * (last.machine[0] - first.machine[0])
    loads = [s.load for s in inside]
    machine = Machine(
        busy, busy - sum(cpu.values()), (min(loads), statistics.fmean(loads), max(loads)), cores
    )
    return cpu, loop, machine


def drops_of(samples: list[MemorySample], window: Window) -> dict[str, int]:
    """Datagrams dropped on each process's UDP sockets during ``window`` (from its first
    sample there to its highest total)."""
    inside = [s for s in samples if s.at in window]
    out = {}
    for name in dict.fromkeys(name for s in inside for name in s.udp_drops):
        totals = [s.udp_drops[name] for s in inside if name in s.udp_drops]
        out[name] = max(totals) - totals[0]
    return out


def phase_of(
    window: Window,
    checks: dict[str, list[Check]],
    honest: Honest,
    samples: list[MemorySample],
) -> Phase:
    frames = honest.frames.items()
    slowest = sorted(
        ((node, c) for node, cs in checks.items() if node != CONTROL for c in cs if c.at in window),
        key=lambda item: -item[1].seconds,
    )
    return Phase(
        window,
        {node: health_of(c, window) for node, c in checks.items()},
        video_of(honest.captures, honest.captures, window),
        {name: video_of(renders, honest.arrivals[name], window) for name, renders in frames},
        data_of(honest, window),
        [f"+{at - window.start:.1f} s {what}" for at, what in honest.incidents if at in window],
        *cpu_of(samples, window),
        drops_of(samples, window),
        slowest[:SLOWEST],
        [c for c in checks.get(CONTROL, []) if c.at in window],
        [gap_context(name, renders, honest, samples, window) for name, renders in frames],
    )


def attacks_during(tallies: list[Tally], start: float, end: float) -> list[str]:
    """The attacks with a cycle in progress at some point of [start, end]."""
    return [
        t.name.split(" ", 1)[0]
        for t in tallies
        if any(a <= end and start <= b for a, b in t.cycles)
    ]


@dataclass
class Trend:
    """One process's memory over the attack phase, MiB."""

    start: float
    end: float
    peak: float
    early_low: float  # 10th percentile over the first third after the warm-up
    late_low: float  # ... over the last third

    @property
    def growth(self) -> float:
        return self.late_low - self.early_low


def trends(samples: list[MemorySample], window: Window) -> dict[str, Trend]:
    inside = [s for s in samples if s.at in window]
    settled = window.start + max(WARMUP_SHARE * window.seconds, WARMUP_MIN)
    settled = min(settled, window.start + window.seconds / 2)  # short runs: something to show
    third = (window.end - settled) / 3
    out = {}
    for name in inside[0].mib if inside else []:
        early = [s.mib[name] for s in inside if settled <= s.at < settled + third]
        late = [s.mib[name] for s in inside if s.at >= window.end - third]
        out[name] = Trend(
            inside[0].mib[name],
            inside[-1].mib[name],
            max(s.mib[name] for s in inside),
            percentile(early or [inside[0].mib[name]], 10),
            percentile(late or [inside[-1].mib[name]], 10),
        )
    return out


@dataclass
class Report:
    title: str
    baseline: Phase
    attacks: Phase
    memory: dict[str, Trend]
    memory_rows: list[MemorySample]
    tallies: list[Tally]
    limit_hits: dict[str, float]
    failures: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    memory_judged: bool = True  # False: the attack phase was too short (JUDGED_MIN)

    @property
    def exit_code(self) -> int:
        return 1 if self.failures else 0


def slow_checks_note(node: str, health: Health) -> str:
    """Where the time of the slow checks went: the node's loop running, waiting for a CPU
    (the machine), or neither (blocked: on the interpreter lock another of its threads held,
    or on I/O)."""
    waits = max(health.slow_waited, health.slow_probe_waited)
    blocked = max(0.0, health.slow_ms - health.slow_ran - waits)
    shares = {
        "the node running": health.slow_ran,
        "waiting for a CPU": waits,
        "the node's loop blocked": blocked,
    }
    mostly = max(shares, key=lambda name: shares[name])
    return (
        f"{node}: {health.slow} of {health.checks} health checks took {HEALTH_P99_MS:g} ms or "
        f"more, {health.slow_ms:.0f} ms on average; during them its event loop ran "
        f"{health.slow_ran:.0f} ms and waited for a CPU {health.slow_waited:.0f} ms, the probe "
        f"waited for a CPU {health.slow_probe_waited:.0f} ms (mostly {mostly})"
    )


def judge(report: Report) -> None:
    """Fill report.failures with one line per target missed, report.notes with what the
    machine did meanwhile."""
    failures, attacks = report.failures, report.attacks
    for node, health in attacks.health.items():
        if node == CONTROL:
            continue
        if not health.p99 < HEALTH_P99_MS:
            failures.append(f"health p99 on {node}: {health.p99:.1f} ms ≥ {HEALTH_P99_MS:g} ms")
        if health.failed:
            failures.append(f"health checks on {node}: {health.failed} failed")
        if health.slow:
            report.notes.append(slow_checks_note(node, health))
    for name, video in attacks.video.items():
        if not video.max_gap <= FRAME_GAP_MS:
            failures.append(f"frame gap at {name}: {video.max_gap:.0f} ms > {FRAME_GAP_MS:g} ms")
    judged = report.memory_judged = attacks.window.seconds >= JUDGED_MIN
    if not judged:
        report.notes.append(
            f"memory not judged: {attacks.window.seconds:.0f} s of attacks cannot tell a leak "
            f"from the allocator's warm-up ({JUDGED_MIN:g} s or more can)"
        )
    for name, trend in report.memory.items():
        if judged and trend.growth > FLAT_MIB:
            failures.append(
                f"memory of {name} not flat: its low RSS rose {trend.growth:.1f} MiB "
                f"> {FLAT_MIB:g} MiB"
            )
    for name, (_, waited) in attacks.loop.items():
        if waited > CONTENDED_PERCENT:
            report.notes.append(
                f"{name}'s event loop thread was runnable but waiting for a CPU {waited:.0f}% "
                "of the attack phase: the machine is oversubscribed, latencies and gaps "
                "include that wait"
            )
    machine = attacks.machine
    if machine.others > CONTENDED_PERCENT:
        report.notes.append(
            f"other processes on this machine used {machine.others:.0f}% of one core during "
            f"the attacks (load average {machine.load[1]:.1f} on {machine.cores} cores)"
        )
    if not report.tallies:
        failures.append("the attacker process reported nothing")
    for tally in report.tallies:
        for detail in tally.succeeded[:3]:
            failures.append(f"attack succeeded: {tally.name}: {detail}")
