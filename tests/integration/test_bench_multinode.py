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
