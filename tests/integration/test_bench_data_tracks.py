"""Smoke run of bench/data_tracks.py: every kind sends to two subscribers and its row prints
(figures, timing included, are not checked: the bench measures them)."""

from __future__ import annotations

from bench.data_tracks import LABELS, run


async def test_data_tracks_bench_smoke() -> None:
    results = await run(["track", "reliable", "lossy"], [2], [(1000, 20.0)], seconds=1.0)
    assert [r.kind for r in results] == ["track", "reliable", "lossy"]
    for result in results:
        assert not result.error, result.error
        assert result.sent > 0 and len(result.received) == 2
        assert all(count > 0 for count in result.received), result.line()
        assert result.line().startswith(LABELS[result.kind])
    track = results[0]
    assert track.lost_upstream is not None and track.dropped_by_server is not None
    assert track.server_cpu is not None and track.client_cpu is not None
