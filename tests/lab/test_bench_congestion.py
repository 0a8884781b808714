"""Smoke run of bench/congestion.py: one short run with the allocation on and one with it off
complete and their table prints (the figures are the bench's to measure, not checked here)."""

from __future__ import annotations

import pytest
from bench.congestion import run, table

pytestmark = pytest.mark.media


async def test_congestion_bench_smoke(lab_ready: None) -> None:
    results = [
        await run(allocation, cap=500, settle=3.0, seconds=2.0, trace=True)
        for allocation in (True, False)
    ]
    assert [r.mode for r in results] == ["on", "off"]
    on = results[0]
    assert on.first_frame is not None and on.fps > 0 and on.layers, on
    assert on.trace and "est=" in on.trace[-1]
    printed = table(results, 500, 2.0)
    assert "| decoded fps" in printed and "| allocation" in printed
