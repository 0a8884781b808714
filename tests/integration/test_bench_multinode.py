"""Smoke run of bench/multinode.py: every setup joins and answers (figures are not checked)."""

from __future__ import annotations

from bench.multinode import main


async def test_multinode_bench_smoke() -> None:
    rows = await main(joins=2)
    assert [name for name, _, _ in rows] == [
        "single node, no Redis",
        "cluster, direct to room node",
        "cluster, relayed by other node",
    ]
    for _, join_ms, api_ms in rows:
        assert len(join_ms) == len(api_ms) == 2
        assert all(value > 0 for value in join_ms + api_ms)


async def test_workers_bench_smoke() -> None:
    from bench.workers import run

    results = await run([1, 2], rooms=2, per_room=3, window=1.0)
    for result in results:
        assert result.failed == 0 and result.participants == 6
        assert result.packets_per_s > 0 and result.loss == 0.0
        assert result.join_p50 is not None and result.media_p50 is not None
