"""The dashboard's charts (dashboard-charts.js, uPlot vendored in /static/vendor/uplot): the last
minutes of bitrate, packets/s, participants and loss per room and per node, fed by /stats while
two playground pages publish camera and microphone; each participant's connection quality."""

from __future__ import annotations

from typing import Any

from livekit.protocol import models

from roomcast.server import Server
from tests.browser.test_dashboard import admin_token, row, sign_in, text_of
from tests.browser.test_playground import (
    join_playground,
    open_app,
    page_problems,
    playground_server,
    requires_chromium,
    screenshot,
    wait_for,
)
from tests.conftest import url_of

__all__ = ["playground_server"]

pytestmark = requires_chromium

LATEST = "() => { const s = window.dashboardCharts.samples; return s[s.length - 1]; }"
LEGEND = (
    "(id) => Array.from(document.querySelectorAll(`#chart-${id} .u-legend .u-series th`))"
    ".map((e) => e.textContent.trim())"
)
UNKNOWN = "quality \u2013"  # the chip before the server reports a quality


async def test_charts_show_rooms_nodes_and_quality(playground_server: Server, browser: Any) -> None:
    url = url_of(playground_server)
    alice = await open_app(browser, url + "/")
    bob = await open_app(browser, url + "/")
    alice_id = await join_playground(alice, "charts", "Alice")
    await join_playground(bob, "charts", "Bob")

    dashboard = await open_app(browser, url + "/dashboard")
    assert await dashboard.is_visible("#login")
    await sign_in(dashboard, admin_token("charts"))
    await wait_for(dashboard, "() => !document.querySelector('#board').hidden")

    # A few refreshes with media flowing: every figure of the room is in the samples.
    await wait_for(
        dashboard,
        f"() => {{ const s = ({LATEST})(); const r = s && s.rooms.charts;"
        " return window.dashboardCharts.samples.length >= 4 && r && r.bitrate > 0"
        " && r.packets > 0 && r.participants === 2; }",
        timeout=60,
    )
    for chart in ("bitrate", "packets", "participants", "loss"):
        assert await dashboard.is_visible(f"#chart-{chart} canvas"), chart
        assert "charts" in await dashboard.evaluate(LEGEND, chart)
    assert (await text_of(dashboard, "#chart-bitrate .now")).endswith("bps")
    assert (await text_of(dashboard, "#chart-packets .now")).endswith("/s")
    assert await text_of(dashboard, "#chart-participants .now") == "2"
    assert (await text_of(dashboard, "#chart-loss .now")).endswith("%")

    # Connection quality: not reported by the server yet, then reported (the slot /stats fills
    # from the participant's connection_quality once the rooms layer keeps one).
    chip = f"{row('charts', alice_id)} .p-quality"
    await wait_for(
        dashboard, "([s, t]) => document.querySelector(s)?.textContent === t", [chip, UNKNOWN]
    )
    room = playground_server.rooms.get("charts")
    assert room is not None
    participant = next(p for p in room.live_participants() if p.identity == alice_id)
    participant.connection_quality = models.ConnectionQuality.GOOD  # type: ignore[attr-defined]
    await wait_for(
        dashboard, "(s) => document.querySelector(s)?.textContent === 'quality: good'", chip
    )
    await wait_for(
        dashboard,
        "(s) => !!document.querySelector(s)",
        f"{row('charts', alice_id)} .p-quality-chart canvas",
    )

    # Enough history for a chart worth looking at, then the docs screenshot.
    await wait_for(dashboard, "() => window.dashboardCharts.samples.length >= 8", timeout=60)
    await dashboard.set_viewport_size({"width": 1280, "height": 1000})
    await screenshot(dashboard, "dashboard-charts", docs_name="dashboard-charts.png")

    # Per node: one node here, its packets received and forwarded.
    node = playground_server.node_id
    await dashboard.click('#chart-scope [data-scope="nodes"]')
    await wait_for(
        dashboard, "(id) => document.querySelector(`#chart-bitrate .u-legend`)", "bitrate"
    )
    assert node in await dashboard.evaluate(LEGEND, "bitrate")
    assert {f"{node} in", f"{node} out"} <= set(await dashboard.evaluate(LEGEND, "packets"))
    await screenshot(dashboard, "dashboard-charts-nodes")

    # The history lives in the tab: a reload keeps it (and the scope).
    kept = await dashboard.evaluate("() => window.dashboardCharts.samples.length")
    await dashboard.reload()
    await wait_for(dashboard, "() => window.dashboard && window.dashboard.initialized")
    await wait_for(
        dashboard,
        "(n) => window.dashboardCharts.samples.length > n"
        " && !document.querySelector('#charts-grid').hidden",
        kept,
    )
    assert node in await dashboard.evaluate(LEGEND, "bitrate")
    assert not page_problems(alice, bob, dashboard)

    # Signing out forgets it.
    await dashboard.click("#logout")
    assert (
        await dashboard.evaluate("() => sessionStorage.getItem('roomcast.dashboard-history')")
        is None
    )
