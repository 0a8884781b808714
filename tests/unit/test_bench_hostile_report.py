"""The pure pieces of bench/hostile (run with ``python -m bench.hostile``, never in the suite):
percentiles, gaps, per-phase figures, the targets and the printed report, on made-up samples."""

from __future__ import annotations

import math

from bench.hostile.framework import CONTAINMENT, CORRECTNESS, Tally
from bench.hostile.honest import Honest
from bench.hostile.probe import Check, MemorySample
from bench.hostile.render import render
from bench.hostile.report import (
    CONTROL,
    Health,
    Report,
    Window,
    cpu_of,
    health_of,
    judge,
    largest_gap,
    percentile,
    phase_of,
    slow_checks_note,
    trends,
)
from bench.hostile.runner import memory_rows


def test_percentile_is_the_nearest_rank() -> None:
    values = [float(v) for v in range(100, 0, -1)]  # 1..100, in any order
    assert percentile(values, 50) == 50
    assert percentile(values, 99) == 99
    assert percentile(values, 100) == 100
    assert percentile(values, 0) == 1
    assert percentile([7.0], 99) == 7
    assert percentile([1.0, 2.0, 3.0], 99) == 3
    assert math.isnan(percentile([], 50))


def test_largest_gap_counts_the_window_edges() -> None:
    window = Window("w", 10.0, 11.0)
    assert math.isclose(largest_gap([10.1, 10.2, 10.9], window), 700)
    assert math.isclose(largest_gap([10.5], window), 500)
    assert math.isclose(largest_gap([], window), 1000)  # no frame at all: the whole window
    assert math.isclose(largest_gap([9.0, 10.95, 12.0], window), 950)  # outside: ignored


def test_health_of_a_window_with_the_slow_checks_split_into_running_and_waiting() -> None:
    checks = [Check(10 + i / 100, 0.002, True) for i in range(97)]
    checks += [
        Check(11.0, 0.150, True, ran=0.010, waited=0.120),
        Check(11.1, 0.250, True, ran=0.030, waited=0.200),
        Check(11.2, 0.004, False),
        Check(20.0, 9.0, True),  # outside the window
    ]
    health = health_of(checks, Window("w", 10.0, 12.0))
    assert health.checks == 100 and health.failed == 1
    assert health.p50 == 2.0 and health.p99 == 150.0 and health.max == 250.0
    assert health.slow == 2
    assert math.isclose(health.slow_ran, 20) and math.isclose(health.slow_waited, 160)


def sample(at: float, mib: float, cpu: dict[str, float], machine: float) -> MemorySample:
    return MemorySample(
        at,
        mib={"node": mib},
        cpu=cpu,
        loop={"node": (cpu.get("node", 0) / 2, at / 10)},
        machine=(machine, 2 * at),
        load=at / 10,
    )


def test_cpu_counts_a_process_from_its_first_sample_to_its_highest_total() -> None:
    samples = [
        sample(0.0, 100, {"node": 0.0}, 0.0),
        sample(10.0, 100, {"node": 2.0, "attacker": 5.0}, 9.0),  # the attacker started
        sample(20.0, 100, {"node": 4.0, "attacker": 9.0}, 19.0),
        sample(30.0, 100, {"node": 6.0, "attacker": 0.0}, 30.0),  # and exited: /proc reads 0
    ]
    cpu, loop, machine = cpu_of(samples, Window("attacks", 0.0, 31.0), cores=2)
    assert math.isclose(cpu["node"], 20)  # 6 s in 30 s
    assert math.isclose(cpu["attacker"], 100 * 4 / 30)
    assert math.isclose(loop["node"][0], 10) and math.isclose(loop["node"][1], 10)
    assert math.isclose(machine.busy, 100)  # one core of two
    assert math.isclose(machine.others, 100 - 20 - 100 * 4 / 30)
    assert machine.load == (0.0, 1.5, 3.0) and machine.cores == 2


def test_memory_flat_is_judged_on_the_low_values_after_the_warm_up() -> None:
    # 100 s: the first 20 s are the warm-up; spikes come and go; the floor rises by 4 MiB.
    samples = [
        sample(float(t), (150 if t % 7 == 0 else 100 + 4 * (t >= 74)), {}, 0.0) for t in range(100)
    ]
    trend = trends(samples, Window("attacks", 0.0, 100.0))["node"]
    assert trend.start == 150 and trend.peak == 150 and trend.end == 104
    assert trend.early_low == 100 and trend.late_low == 104
    assert trend.growth == 4


def test_memory_rows_are_the_start_every_minute_and_the_end() -> None:
    samples = [sample(float(t), 100, {}, 0.0) for t in range(5, 200)]
    rows = memory_rows(samples, start=10.0)
    assert [row.at for row in rows] == [10.0, 70.0, 130.0, 190.0, 199.0]
    assert [row.at for row in memory_rows(samples, start=10.0, every=200)] == [10.0, 199.0]
    assert memory_rows([], 0.0) == []


def report_of(
    health_ms: float, frame_gap: float, floor_rise: float, attack_seconds: float = 240.0
) -> Report:
    """A 60 s baseline, then ``attack_seconds`` of attacks: health checks of ``health_ms``,
    25 frames/s but for a pause of ``frame_gap`` s at +0.2 s, the low RSS up ``floor_rise`` MiB
    in the last 60 s."""
    end = 60.0 + attack_seconds
    baseline, attacks = Window("baseline", 0.0, 60.0), Window("attacks", 60.0, end)
    checks = {
        name: [
            Check(t / 20, (health_ms if t / 20 in attacks else 2) / 1000, True, 0.01, 0.1, 0.005)
            for t in range(int(20 * end))
        ]
        for name in ("node", CONTROL)
    }
    frames = [t / 25 for t in range(int(25 * end)) if not 60.2 < t / 25 < 60.2 + frame_gap]
    honest = Honest(
        frames={"honest-a": frames},
        arrivals={"honest-a": frames},
        captures=frames,
        sent={i: i * 0.5 for i in range(240)},
        rtts=[(i * 0.5, 0.008) for i in range(240)],
        incidents=[(70.0, "honest-a reconnecting")] if frame_gap else [],
    )
    samples = [
        sample(float(t), 100 + floor_rise * (t >= end - 60), {"node": t / 10}, t / 5)
        for t in range(int(end) + 1)
    ]
    for each in samples:
        each.udp_drops = {"node": int(floor_rise * each.at)}
    tallies = [
        Tally("H1 SCTP TSN-gap flood", CONTAINMENT, 3, 3, figures={"chunks": 12000}),
        Tally("M5 /stats with roomList only", CORRECTNESS, 2, 2, cycles=[(60.0, 61.0)]),
    ]
    report = Report(
        title="hostile: test",
        baseline=phase_of(baseline, checks, honest, samples),
        attacks=phase_of(attacks, checks, honest, samples),
        memory=trends(samples, attacks),
        memory_rows=memory_rows(samples, baseline.start),
        tallies=tallies,
        limit_hits={"data_channel_tsn_window": 12000.0, "signal_queue_bytes": 0.0},
    )
    judge(report)
    return report


def test_a_run_within_the_targets_passes_and_prints_every_figure() -> None:
    report = report_of(health_ms=5, frame_gap=0, floor_rise=0)
    text = render(report)
    assert report.exit_code == 0, text
    assert "health node p50/p99/max (ms)" in text and "5.0/5.0/5.0" in text
    assert "video at honest-a: frames/s, max gap (ms)" in text and "25.0, 40" in text
    assert "data round trip p50/p99 (ms), lost" in text and "8.0/8.0, 0" in text
    assert "CPU of node (% of one core)" in text and "CPU of everything else" in text
    assert "UDP datagrams dropped (buffer full)" in text
    assert "honest incidents during the attacks (reconnections, honest tracks lost): none" in text
    assert "load average min/mean/max" in text
    assert "memory (MiB): at the start, every minute, at the end" in text
    assert "NOTE: memory not judged" not in text
    assert "limits hit during the attacks (roomcast_limit_hits_total): " in text
    assert "data_channel_tsn_window 12,000" in text and "signal_queue_bytes" not in text
    assert "correctness attacks blocked 2/2; all attacks blocked 5/5" in text
    assert text.splitlines()[-1].startswith("PASS: health p99 < 100 ms")
    assert "memory flat (low RSS +≤ 10 MiB)" in text.splitlines()[-1]


def test_a_short_run_reports_memory_without_judging_it() -> None:
    report = report_of(health_ms=5, frame_gap=0, floor_rise=30, attack_seconds=60)
    text = render(report)
    assert report.exit_code == 0, text
    assert (
        "NOTE: memory not judged: 60 s of attacks cannot tell a leak from the allocator's" in text
    )
    assert "memory not judged (too short)" in text.splitlines()[-1]


def test_each_missed_target_is_a_failure_with_where_the_time_went() -> None:
    report = report_of(health_ms=150, frame_gap=0.6, floor_rise=30)
    text = render(report)
    assert report.exit_code == 1
    assert "FAILED: health p99 on node: 150.0 ms ≥ 100 ms" in text
    assert "FAILED: frame gap at honest-a: 640 ms > 500 ms" in text
    assert "FAILED: memory of node not flat: its low RSS rose 30.0 MiB > 10 MiB" in text
    assert "health p99 on control" not in text  # the idle control server is no target
    assert (
        "node: 4800 of 4800 health checks took 100 ms or more, 150 ms on average; during them "
        "its event loop ran 10 ms and waited for a CPU 100 ms, the probe waited for a CPU 5 ms "
        "(mostly waiting for a CPU)" in text
    )
    assert "ran 10 ms, waited for CPU 100 ms, probe waited 5 ms; M5; control 150 ms" in text
    assert "honest-a at +0.2 s: 640 ms (publisher paused 640 ms; loops waited for a CPU: " in text
    assert "node 10%; machine busy 20% of one core; M5)" in text
    assert "UDP datagrams dropped at node" in text and "receive buffer full" in text
    assert "honest incidents during the attacks (reconnections, honest tracks lost): " in text
    assert "+10.0 s honest-a reconnecting" in text
    assert "PASS" not in text


def test_slow_checks_are_put_down_to_running_waiting_or_a_blocked_loop() -> None:
    def note(ran: float, waited: float, probe: float, took: float) -> str:
        health = Health(1, took, took, 100, 0, 10, ran, waited, probe, took)
        return slow_checks_note("node-a", health)

    assert note(ran=80, waited=10, probe=5, took=120).endswith("(mostly the node running)")
    assert note(ran=10, waited=90, probe=40, took=120).endswith("(mostly waiting for a CPU)")
    # An idle machine, the interpreter held by the node's decoding thread: neither.
    assert note(ran=10, waited=11, probe=5, took=130).endswith("(mostly the node's loop blocked)")
