"""The printed report of one run (bench/hostile/report.py has the figures and the targets)."""

from __future__ import annotations

from bench.hostile.framework import CORRECTNESS
from bench.hostile.report import (
    CONTROL,
    FLAT_MIB,
    FRAME_GAP_MS,
    HEALTH_P99_MS,
    Health,
    Phase,
    Report,
    attacks_during,
)

INCIDENTS = 10  # listed; the rest counted


def figure(name: str, value: float) -> str:
    return f"{name} {value:,.0f}" if value >= 10 else f"{name} {value:.3g}"


def ms3(h: Health) -> str:
    return f"{h.p50:.1f}/{h.p99:.1f}/{h.max:.1f}"


def load3(phase: Phase) -> str:
    low, mean, high = phase.machine.load
    return f"{low:.1f}/{mean:.1f}/{high:.1f}"


def figures_table(report: Report) -> list[str]:
    b, a = report.baseline, report.attacks
    lines = [f"{'':40}{'baseline':>22}{'attacks':>22}"]

    def row(label: str, left: str, right: str, note: str = "") -> None:
        lines.append(f"{label:40}{left:>22}{right:>22}  {note}".rstrip())

    row("phase length (s)", f"{b.window.seconds:.0f}", f"{a.window.seconds:.0f}")
    for node in a.health:
        hb, ha = b.health[node], a.health[node]
        row(
            f"health {node if node != CONTROL else 'control (idle)'} p50/p99/max (ms)",
            ms3(hb),
            ms3(ha),
            f"{ha.checks} checks, {ha.failed} failed, {ha.slow} ≥ {HEALTH_P99_MS:g} ms",
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
    row("honest incidents (see below)", str(len(b.incidents)), str(len(a.incidents)))
    for name in a.cpu:
        row(
            f"CPU of {name} (% of one core)",
            f"{b.cpu[name]:.0f}" if name in b.cpu else "-",
            f"{a.cpu[name]:.0f}",
        )
    row(
        "CPU of everything else (% of one core)",
        f"{b.machine.others:.0f}",
        f"{a.machine.others:.0f}",
        f"machine busy {b.machine.busy:.0f} → {a.machine.busy:.0f}% of {a.machine.cores * 100}%",
    )
    row("load average min/mean/max", load3(b), load3(a))
    dropping = [n for n in a.udp_drops if a.udp_drops[n] or b.udp_drops.get(n, 0)]
    for name in dropping:
        row(
            f"UDP datagrams dropped at {name}",
            str(b.udp_drops[name]) if name in b.udp_drops else "-",
            str(a.udp_drops[name]),
            "receive buffer full",
        )
    if not dropping:
        row("UDP datagrams dropped (buffer full)", "0", "0", "at every process of the run")
    for name, (ran, waited) in a.loop.items():
        ran_before, waited_before = b.loop.get(name, (0.0, 0.0))
        row(
            f"{name} loop thread: ran, waited for CPU (%)",
            f"{ran_before:.0f}, {waited_before:.0f}",
            f"{ran:.0f}, {waited:.0f}",
        )
    return lines


def slowest_checks(report: Report) -> list[str]:
    a = report.attacks
    lines = [
        "slowest health checks during the attacks (the node's event loop meanwhile, the "
        "probe's own wait; attacks in progress; the idle control's check nearest in time):"
    ]
    for node, check in a.slowest:
        at = check.at - a.window.start
        during = ", ".join(attacks_during(report.tallies, check.at, check.at + check.seconds))
        control = min(a.control, key=lambda c: abs(c.at - check.at), default=None)
        idle = f"; control {control.seconds * 1000:.0f} ms" if control is not None else ""
        lines.append(
            f"  {node} at +{at:.1f} s: {check.seconds * 1000:.0f} ms (ran {check.ran * 1000:.0f}"
            f" ms, waited for CPU {check.waited * 1000:.0f} ms, probe waited "
            f"{check.probe_waited * 1000:.0f} ms; {during or 'no attack'}{idle})"
        )
    return lines


def frame_gaps(report: Report) -> list[str]:
    a = report.attacks
    lines = [
        "largest frame gap at each watcher during the attacks (the publisher's longest pause "
        "then; event loops' CPU wait and machine load in the seconds around it):"
    ]
    for gap in a.gaps:
        at = gap.start - a.window.start
        during = ", ".join(attacks_during(report.tallies, gap.start, gap.end))
        waits = ", ".join(f"{name} {share:.0f}%" for name, share in gap.waited.items())
        lines.append(
            f"  {gap.watcher} at +{at:.1f} s: {gap.ms:.0f} ms (publisher paused "
            f"{gap.capture_ms:.0f} ms; loops waited for a CPU: {waits or '-'}; machine busy "
            f"{gap.machine_busy:.0f}% of one core; {during or 'no attack'})"
        )
    incidents = a.incidents[:INCIDENTS] + (["…"] if len(a.incidents) > INCIDENTS else [])
    lines.append(
        "honest incidents during the attacks (reconnections, honest tracks lost): "
        + ("; ".join(incidents) or "none")
    )
    return lines


def memory_table(report: Report) -> list[str]:
    names = list(report.memory_rows[0].mib) if report.memory_rows else []
    lines = [
        "memory (MiB): at the start, every minute, at the end; t from the start of the baseline",
        f"{'t (s)':>8}" + "".join(f"{n:>10}" for n in names),
    ]
    for sample in report.memory_rows:
        at = sample.at - report.baseline.window.start
        lines.append(f"{at:>8.0f}" + "".join(f"{sample.mib.get(n, 0):>10.1f}" for n in names))
    for name, t in report.memory.items():
        lines.append(
            f"  {name}: {t.start:.1f} → {t.end:.1f} MiB during the attacks, peak {t.peak:.1f}; "
            f"low (p10) {t.early_low:.1f} early, {t.late_low:.1f} late ({t.growth:+.1f})"
        )
    return lines


def attacks_table(report: Report) -> list[str]:
    hits = ", ".join(f"{k} {v:,.0f}" for k, v in sorted(report.limit_hits.items()) if v)
    lines = [f"limits hit during the attacks (roomcast_limit_hits_total): {hits or 'none'}", ""]
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
    return lines


def render(report: Report) -> str:
    lines = [report.title, *figures_table(report), ""]
    lines += [*slowest_checks(report), "", *frame_gaps(report), ""]
    lines += [*memory_table(report), "", *attacks_table(report)]
    lines += [f"NOTE: {note}" for note in report.notes]
    if report.failures:
        lines += [f"FAILED: {failure}" for failure in report.failures]
    else:
        memory = (
            f"memory flat (low RSS +≤ {FLAT_MIB:g} MiB)"
            if report.memory_judged
            else "memory not judged (too short)"
        )
        lines.append(
            f"PASS: health p99 < {HEALTH_P99_MS:g} ms, frame gaps ≤ {FRAME_GAP_MS:g} ms, "
            f"{memory}, no attack succeeded"
        )
    return "\n".join(lines)
