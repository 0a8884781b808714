"""Figures per phase (baseline, attacks), the targets of issue 20 and the printed report.

Targets, during the attacks: health-check p99 under 100 ms on every node (and no failed
check), no gap over 500 ms between the render times of two decoded frames at either honest
watcher (bench/hostile/honest.py), memory flat, and no attack that succeeded.

Memory is flat when, after a warm-up (the first `WARMUP_SHARE` of the attack phase, while
every attacker arrives), the low RSS (10th percentile of the 1 s samples) of the last third is
at most `FLAT_MIB` above that of the first third. The low values, not the highest: heavy
requests (2 MB JSON frames, 8 MB of unread answers) come and go all along and make RSS swing by
tens of MiB, while what a leak keeps raises the floor.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field

from bench.hostile.framework import CORRECTNESS, Tally
from bench.hostile.honest import Honest
from bench.hostile.probe import Check, MemorySample

HEALTH_P99_MS = 100.0
FRAME_GAP_MS = 500.0
FLAT_MIB = 10.0
WARMUP_SHARE = 0.2
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
class Phase:
    window: Window
    health: dict[str, Health]
    capture: Video  # the publisher's own frames: what the watchers can get at best
    video: dict[str, Video]
    data: Data
    incidents: list[str]
    cpu: dict[str, float]  # node -> share of one core used, %
    # node (or "bench") -> % of the phase its event loop thread ran, and waited for a CPU
    loop: dict[str, tuple[float, float]]
    slowest: list[tuple[str, Check]]  # (node, check), slowest first
    control: list[Check]  # the idle control server's checks


def health_of(checks: list[Check], window: Window) -> Health:
    inside = [c for c in checks if c.at in window]
    ms = [c.seconds * 1000 for c in inside]
    failed = sum(not c.ok for c in inside)
    worst = max(ms, default=math.nan)
    return Health(percentile(ms, 50), percentile(ms, 99), worst, len(ms), failed)


def largest_gap(times: list[float], window: Window) -> float:
    """The longest time without a frame in ``window`` (its edges count), ms."""
    edges = [window.start, *sorted(t for t in times if t in window), window.end]
    return 1000 * max(b - a for a, b in itertools.pairwise(edges))


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
    samples: list[MemorySample], window: Window
) -> tuple[dict[str, float], dict[str, tuple[float, float]]]:
    inside = [s for s in samples if s.at in window]
    if len(inside) < 2:
        return {}, {}
    first, last = inside[0], inside[-1]
    share = 100 / (last.at - first.at)
    cpu = {name: share * (last.cpu[name] - first.cpu[name]) for name in first.cpu}
    loop = {
        name: (
            share * (last.loop[name][0] - first.loop[name][0]),
            share * (last.loop[name][1] - first.loop[name][1]),
        )
        for name in first.loop
    }
    return cpu, loop


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
        [what for at, what in honest.incidents if at in window],
        *cpu_of(samples, window),
        slowest[:SLOWEST],
        [c for c in checks.get(CONTROL, []) if c.at in window],
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
    settled = window.start + WARMUP_SHARE * window.seconds
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

    @property
    def exit_code(self) -> int:
        return 1 if self.failures else 0


def judge(report: Report) -> None:
    """Fill report.failures with one line per target missed."""
    failures = report.failures
    for node, health in report.attacks.health.items():
        if node == CONTROL:
            continue
        if not health.p99 < HEALTH_P99_MS:
            failures.append(f"health p99 on {node}: {health.p99:.1f} ms ≥ {HEALTH_P99_MS:g} ms")
        if health.failed:
            failures.append(f"health checks on {node}: {health.failed} failed")
    for name, video in report.attacks.video.items():
        if not video.max_gap <= FRAME_GAP_MS:
            failures.append(f"frame gap at {name}: {video.max_gap:.0f} ms > {FRAME_GAP_MS:g} ms")
    for name, trend in report.memory.items():
        if trend.growth > FLAT_MIB:
            failures.append(
                f"memory of {name} not flat: its low RSS rose {trend.growth:.1f} MiB "
                f"> {FLAT_MIB:g} MiB"
            )
    for name, (_, waited) in report.attacks.loop.items():
        if waited > CONTENDED_PERCENT:
            report.notes.append(
                f"{name}'s event loop thread was runnable but waiting for a CPU {waited:.0f}% "
                "of the attack phase: the machine is oversubscribed, latencies and gaps "
                "include that wait"
            )
    if not report.tallies:
        failures.append("the attacker process reported nothing")
    for tally in report.tallies:
        for detail in tally.succeeded[:3]:
            failures.append(f"attack succeeded: {tally.name}: {detail}")


def figure(name: str, value: float) -> str:
    return f"{name} {value:,.0f}" if value >= 10 else f"{name} {value:.3g}"


def ms3(h: Health) -> str:
    return f"{h.p50:.1f}/{h.p99:.1f}/{h.max:.1f}"


def render(report: Report) -> str:
    b, a = report.baseline, report.attacks
    lines = [report.title, f"{'':40}{'baseline':>22}{'attacks':>22}"]

    def row(label: str, left: str, right: str, note: str = "") -> None:
        lines.append(f"{label:40}{left:>22}{right:>22}  {note}".rstrip())

    row("phase length (s)", f"{b.window.seconds:.0f}", f"{a.window.seconds:.0f}")
    for node in a.health:
        hb, ha = b.health[node], a.health[node]
        row(
            f"health {node if node != CONTROL else 'control (idle)'} p50/p99/max (ms)",
            ms3(hb),
            ms3(ha),
            f"{ha.checks} checks, {ha.failed} failed",
        )
    row(
        "video captured: frames/s, max gap (ms)",
        f"{b.capture.fps:.1f}, {b.capture.max_gap:.0f}",
        f"{a.capture.fps:.1f}, {a.capture.max_gap:.0f}",
    )
    for name in a.video:
        vb, va = b.video[name], a.video[name]
        row(
            f"video at {name}: frames/s, max gap (ms)",
            f"{vb.fps:.1f}, {vb.max_gap:.0f}",
            f"{va.fps:.1f}, {va.max_gap:.0f}",
            f"arrival gap {vb.max_arrival_gap:.0f} → {va.max_arrival_gap:.0f} ms",
        )
    row(
        "data round trip p50/p99 (ms), lost",
        f"{b.data.p50:.1f}/{b.data.p99:.1f}, {b.data.lost}",
        f"{a.data.p50:.1f}/{a.data.p99:.1f}, {a.data.lost}",
        f"{a.data.answered} answered",
    )
    row("honest reconnects/disconnects", str(len(b.incidents)), str(len(a.incidents)))
    for node in a.cpu:
        row(f"CPU of {node} (% of one core)", f"{b.cpu.get(node, 0):.0f}", f"{a.cpu[node]:.0f}")
    for name, (ran, waited) in a.loop.items():
        before = b.loop.get(name, (0.0, 0.0))
        row(
            f"{name} loop thread: ran, waited for CPU (%)",
            f"{before[0]:.0f}, {before[1]:.0f}",
            f"{ran:.0f}, {waited:.0f}",
        )
    lines.append("")
    lines.append("slowest health checks during the attacks (attacks in progress):")
    for node, check in a.slowest:
        at = check.at - a.window.start
        during = ", ".join(attacks_during(report.tallies, check.at, check.at + check.seconds))
        control = min(a.control, key=lambda c: abs(c.at - check.at), default=None)
        idle = f"; control {control.seconds * 1000:.0f} ms" if control is not None else ""
        lines.append(
            f"  {node} at +{at:.1f} s: {check.seconds * 1000:.0f} ms "
            f"({during or 'no attack'}{idle})"
        )
    names = list(report.memory_rows[0].mib) if report.memory_rows else []
    lines.append("")
    lines.append("memory (MiB) over time, t from the start of the baseline")
    lines.append(f"{'t (s)':>8}" + "".join(f"{n:>10}" for n in names))
    for sample in report.memory_rows:
        at = sample.at - b.window.start
        lines.append(f"{at:>8.0f}" + "".join(f"{sample.mib.get(n, 0):>10.1f}" for n in names))
    for name, t in report.memory.items():
        lines.append(
            f"  {name}: {t.start:.1f} → {t.end:.1f} MiB during the attacks, peak {t.peak:.1f}; "
            f"low (p10) {t.early_low:.1f} early, {t.late_low:.1f} late ({t.growth:+.1f})"
        )
    lines.append("")
    hits = ", ".join(f"{k} {v:g}" for k, v in sorted(report.limit_hits.items()) if v)
    lines.append(f"limits hit during the attacks: {hits or 'none'}")
    lines.append("")
    lines.append(f"{'attack':42}{'kind':13}{'blocked':>9}{'errors':>8}  figures")
    for tally in report.tallies:
        figures = ", ".join(figure(k, v) for k, v in tally.figures.items())
        blocked = f"{tally.blocked}/{tally.tested}"
        lines.append(f"{tally.name:42}{tally.kind:13}{blocked:>9}{tally.error_count:>8}  {figures}")
        for error in tally.errors:
            lines.append(f"{'':44}error: {error}")
    correctness = [t for t in report.tallies if t.kind == CORRECTNESS]
    lines.append("")
    lines.append(
        f"correctness attacks blocked {sum(t.blocked for t in correctness)}"
        f"/{sum(t.tested for t in correctness)}; all attacks blocked "
        f"{sum(t.blocked for t in report.tallies)}/{sum(t.tested for t in report.tallies)}"
    )
    lines += [f"NOTE: {note}" for note in report.notes]
    if report.failures:
        lines += [f"FAILED: {failure}" for failure in report.failures]
    else:
        lines.append(
            f"PASS: health p99 < {HEALTH_P99_MS:g} ms, frame gaps ≤ {FRAME_GAP_MS:g} ms, "
            f"memory flat (low RSS +≤ {FLAT_MIB:g} MiB), no attack succeeded"
        )
    return "\n".join(lines)
