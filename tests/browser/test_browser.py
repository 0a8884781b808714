"""Headless Chromium with the official npm `livekit-client` against Roomcast."""

from __future__ import annotations

import asyncio
from typing import Any

from livekit import rtc

from roomcast.server import Server
from tests.browser.conftest import open_page
from tests.conftest import url_of
from tests.integration.sdk import join_token, joined

TIMEOUT_MS = 30_000


async def wait_js(page: Any, expression: str, arg: Any = None) -> Any:
    """Poll an (async) page function until it returns something truthy."""
    for _ in range(TIMEOUT_MS // 100):
        result = await page.evaluate(expression, arg)
        if result:
            return result
        await asyncio.sleep(0.1)
    raise AssertionError(f"{expression} never held; console errors: {page.console_errors}")


async def test_browser_and_python_exchange_data(
    server: Server, browser: Any, page_server: str
) -> None:
    page = await open_page(browser, page_server)
    joined_info = await page.evaluate(
        "([u, t]) => join(u, t)", [url_of(server, "ws"), join_token("web", "chrome")]
    )
    assert joined_info["sid"].startswith("PA_")
    async with joined(server, "web", "py") as (py, events):
        assert "chrome" in py.remote_participants
        await wait_js(page, "() => remoteIdentities().includes('py')")
        await page.evaluate("() => publishData('from the browser', 'web')")
        (packet,) = await events.wait("data_received", lambda p: p.data == b"from the browser")
        assert packet.participant.identity == "chrome" and packet.topic == "web"
        await py.local_participant.publish_data(b"from python", topic="py")
        await wait_js(
            page,
            "() => rc.data.some(d => d.text === 'from python' && d.from === 'py'"
            " && d.topic === 'py')",
        )
        await page.evaluate("() => leave()")
        await events.wait("participant_disconnected", lambda p: p.identity == "chrome")
    assert not [e for e in page.console_errors if "Uncaught" in e]


async def test_two_browsers_and_python_see_and_hear_each_other(
    server: Server, browser: Any, page_server: str
) -> None:
    url = url_of(server, "ws")
    publisher = await open_page(browser, page_server)
    await publisher.evaluate(
        "([u, t]) => join(u, t, {camera: true, microphone: true, simulcast: true})",
        [url, join_token("call", "cam")],
    )
    local = await publisher.evaluate("() => localTracks()")
    assert sorted(t["kind"] for t in local) == ["audio", "video"]

    async with joined(server, "call", "py") as (_, events):
        video, _, _ = await events.wait(
            "track_subscribed", lambda t, pub, p: t.kind == rtc.TrackKind.KIND_VIDEO
        )
        stream = rtc.VideoStream(video)
        try:
            frame = await asyncio.wait_for(anext(aiter(stream)), 30)
        finally:
            await stream.aclose()
        assert frame.frame.width > 0 and frame.frame.height > 0
        await events.wait("track_subscribed", lambda t, pub, p: t.kind == rtc.TrackKind.KIND_AUDIO)

        viewer = await open_page(browser, page_server)
        await viewer.evaluate("([u, t]) => join(u, t)", [url, join_token("call", "viewer")])
        await wait_js(
            viewer,
            "async () => { const s = await inboundStats();"
            " return s.video.framesDecoded > 10 && s.audio.totalSamplesReceived > 0; }",
        )
        stats = await viewer.evaluate("() => inboundStats()")
        assert stats["video"]["frameWidth"] > 0
        # The REMB/RR feedback lets Chrome send its top simulcast layer too (reference 16 §7).
        await wait_js(
            publisher,
            "async () => { const l = await outboundLayers(); return (l.f || 0) > 0; }",
        )
