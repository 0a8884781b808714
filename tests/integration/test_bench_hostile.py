"""Smoke run of bench/hostile: every attack at least once, for a few seconds per phase, against
two nodes on a private redis-server (one node without redis-server). The bench must run end to
end and every correctness attack must be blocked; its timing figures are never checked."""

from __future__ import annotations

from bench.hostile.attacker import attacks_for
from bench.hostile.framework import CORRECTNESS, NodeAddress, Plan
from bench.hostile.report import CONTROL, render
from bench.hostile.runner import Options, run
from bench.hostile.servers import redis_available


async def test_hostile_bench_smoke() -> None:
    # An attack phase of 3 s: each attack's first cycle runs to its end all the same.
    report = await run(Options(minutes=0.05, baseline=2.0, warmup=1.0, idle_timeout=1.0))
    text = render(report)
    nodes = [NodeAddress(0, 0)] * (2 if redis_available() else 1)
    expected = attacks_for(Plan(nodes, "", [], 0, 0, redis_port=1 if len(nodes) > 1 else 0))
    assert [t.name for t in report.tallies] == [a.name for a in expected], text
    for tally in report.tallies:
        assert tally.tested >= 1, (tally.name, tally.errors)  # performed, not just attempted
        assert not tally.succeeded, (tally.name, tally.succeeded)
        if tally.kind == CORRECTNESS:
            assert tally.blocked == tally.tested
    for phase in (report.baseline, report.attacks):
        assert all(health.checks > 0 for health in phase.health.values()), text
        assert len(phase.video) == 2 and all(v.fps > 0 for v in phase.video.values()), text
        assert phase.data.answered > 0, text
    assert set(report.memory) >= {node for node in report.attacks.health if node != CONTROL}, text
    assert "correctness attacks blocked" in text
