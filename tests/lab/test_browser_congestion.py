"""Congestion control in the network lab (issue 16, item 6) with Chromium and livekit-client: the
scenarios of tests/lab/test_congestion.py (Python SDK), with the browser behind the impaired
link. What Chromium decodes is read from its inbound-rtp statistics, sampled every 100 ms
(tests/lab/congestion.py VIDEO_SAMPLER_JS): decoded frames, the worst gap between new ones,
the frame sizes.

- Downlink capped at 500 kbit/s, subscribing to near's three layers: settles below the top
  within 10 s, then decodes near's 20 fps with no gap over a second; the cap lifted, the top
  layer (1280x720) is back within 20 s.
- 150 kbit/s with pausing allowed: livekit-client reports the video track's stream state
  "paused" (TrackStreamStateChanged, from our StreamStateUpdate) while audio keeps playing;
  "active" again once the cap is lifted, and frames decode.
- Chromium publishing 720p simulcast (its fake camera) behind an 800 kbit/s uplink stops its top
  layer: its estimator reads our transport-cc feedback.
- 10 % loss both ways: livekit-client reports its own connection quality "poor"; "excellent" or
  "good" once the link is clean again.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pytest

from roomcast.media.downtrack import PAUSED
from roomcast.server import Server
from tests.browser.conftest import requires_chromium
from tests.integration.sdk import join_token, until
from tests.lab import timings
from tests.lab.chromium import chromium_in, open_page
from tests.lab.conftest import ws_url
from tests.lab.congestion import (
    CAP,
    MIN_FPS,
    PAUSE_CAP,
    RECOVER,
    SETTLE,
    TOP,
    VIDEO_SAMPLER_JS,
    WORST_GAP,
    expected_fps,
    mark_video,
    one_downtrack,
    pausing_server,
    publish_near,
    sent_fps,
    settled_below_top,
    video_since_mark,
    wait_video_frames,
    wait_video_size,
    wait_video_still,
)
from tests.lab.netlab import NetworkLab
from tests.lab.peers import Peers
from tests.lab.test_congestion import LATE_FRAMES, check_uplink_cap, dashboard_quality

pytestmark = [requires_chromium, pytest.mark.media]

STREAM_STATES_JS = """
() => {
  window.rc.streamStates = [];
  window.rc.room.on('trackStreamStateChanged', (pub, state, participant) => {
    window.rc.streamStates.push({ identity: participant.identity, kind: pub.kind, state });
  });
}
"""

QUALITY_JS = """
() => {
  window.rc.qualities = [];
  window.rc.room.on('connectionQualityChanged', (quality, participant) => {
    window.rc.qualities.push({ identity: participant.identity, quality });
  });
}
"""


async def test_chromium_capped_settles_below_the_cap_then_climbs_back(
    lab: NetworkLab,
    lab_server: Server,
    peers: Peers,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, "roomcast.media.downlink")  # the allocation, on failure
    near = await publish_near(lab_server, peers, "cc-cap-b")
    lab.host.cap(CAP, "down")
    async with chromium_in(lab.host, tmp_path) as context:
        page = await open_page(context, "far")
        await page.join(ws_url(lab_server), join_token("cc-cap-b", "far"))
        await page.wait_for_inbound("near", framesDecoded=1, timeout_ms=40_000)
        started = time.monotonic()
        await page.page.evaluate(VIDEO_SAMPLER_JS)
        downtrack = await one_downtrack(lab_server, "far")
        await until(lambda: settled_below_top(downtrack), timeout=SETTLE)
        settled = time.monotonic() - started
        await mark_video(page)
        await wait_video_frames(page, 10, timeout=10)  # what was on its way
        sent_before = await near.command("stats")
        await mark_video(page)
        window = await wait_video_frames(page, int(5 * MIN_FPS), timeout=30)
        sent_after = await near.command("stats")
        sent = sent_fps(sent_before, sent_after, window["seconds"])
        fps = window["frames"] / window["seconds"]
        diagnostics = f"{window}\nsent fps per layer: {sent}\n{await page.diagnostics()}"
        assert TOP not in window["sizes"], diagnostics
        assert window["worst_gap"] < WORST_GAP, diagnostics
        assert fps >= expected_fps(sent, window["sizes"]), diagnostics
        timings.record(
            f"{CAP} kbit/s down, 3 layers", "chromium", settled=settled, fps=fps,
            worst_gap=window["worst_gap"], layers=",".join(sorted(window["sizes"])),
        )  # fmt: skip

        lifted = time.monotonic()
        lab.host.clear()
        await wait_video_size(page, TOP, timeout=RECOVER)
        timings.record("cap lifted: top layer back", "chromium", seconds=time.monotonic() - lifted)


async def test_chromium_cap_below_the_lowest_layer_pauses_video_and_tells_the_client(
    lab: NetworkLab, peers: Peers, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, "roomcast.media.downlink")  # the allocation, on failure
    async with pausing_server(lab) as server, chromium_in(lab.host, tmp_path) as context:
        await publish_near(server, peers, "cc-pause-b")
        page = await open_page(context, "far")
        await page.join(ws_url(server), join_token("cc-pause-b", "far"))
        await page.page.evaluate(STREAM_STATES_JS)
        await page.wait_for_inbound("near", framesDecoded=1, timeout_ms=40_000)
        await page.page.evaluate(VIDEO_SAMPLER_JS)
        capped = time.monotonic()
        lab.host.cap(PAUSE_CAP, "down")
        await page.page.wait_for_function(
            "window.rc.streamStates.some((s) => s.kind === 'video' && s.state === 'paused')",
            timeout=30_000,
        )
        paused = time.monotonic() - capped
        downtrack = await one_downtrack(server, "far")
        assert downtrack.allowed == PAUSED
        forwarded = downtrack.packets_sent
        # Video stops once what was on its way is out of the jitter buffer; audio keeps playing
        # (its energy keeps growing), and the server forwards no video.
        await wait_video_still(page, 1.0, timeout=10)
        await mark_video(page)
        before = (await page.stats())["audio"][0]["totalAudioEnergy"]
        await page.wait_for_inbound("near", totalAudioEnergy=before + 0.5, timeout_ms=20_000)
        assert downtrack.packets_sent == forwarded, "video forwarded while paused"
        assert (await video_since_mark(page))["frames"] <= LATE_FRAMES
        timings.record(f"{PAUSE_CAP} kbit/s down: video paused", "chromium", seconds=paused)

        lab.host.clear()
        lifted = time.monotonic()
        await page.page.wait_for_function(
            "window.rc.streamStates.some((s) => s.kind === 'video' && s.state === 'active')",
            timeout=30_000,
        )
        await mark_video(page)
        await wait_video_frames(page, 20, timeout=20)
        timings.record("cap lifted: video resumed", "chromium", seconds=time.monotonic() - lifted)
        states = await page.page.evaluate("() => window.rc.streamStates.map((s) => s.state)")
        assert states == ["paused", "active"]


async def test_chromium_capped_publisher_drops_its_top_layer(
    lab: NetworkLab, lab_server: Server, peers: Peers, tmp_path: Path
) -> None:
    url = ws_url(lab_server)
    async with chromium_in(lab.host, tmp_path) as context:
        page = await open_page(context, "far")
        await page.join(url, join_token("cc-up-b", "far"), camera=True, simulcast=True)
        near = await peers.start(
            "near", url, join_token("cc-up-b", "near"), (), "--publish", "none"
        )
        await near.wait("first_frame", lambda e: e["kind"] == "video", timeout=40)
        await check_uplink_cap(lab, lab_server, "chromium")
        layers = await page.outbound_video_layers()
        await near.command("mark")
        await near.command("frames", video=20, within=20, timeout=25)
        assert "q" in layers, layers


async def test_chromium_connection_quality_follows_loss(
    lab: NetworkLab, lab_server: Server, peers: Peers, tmp_path: Path
) -> None:
    url = ws_url(lab_server)
    near = await peers.start("near", url, join_token("cc-quality-b", "near"))
    await near.wait("published")
    async with chromium_in(lab.host, tmp_path) as context:
        page = await open_page(context, "far")
        await page.join(
            url, join_token("cc-quality-b", "far"), camera=True, microphone=True, simulcast=False
        )
        await page.page.evaluate(QUALITY_JS)
        await page.wait_for_inbound("near", framesDecoded=1, timeout_ms=40_000)

        async def quality_of_far(qualities: list[str], timeout: float) -> None:
            await page.page.wait_for_function(
                "(q) => { const seen = window.rc.qualities.filter((x) => x.identity === 'far');"
                " return seen.length > 0 && q.includes(seen[seen.length - 1].quality); }",
                arg=qualities,
                timeout=timeout * 1000,
            )

        await quality_of_far(["excellent", "good"], timeout=20)
        lab.host.drop(0.10, "both", protocol="udp")
        start = time.monotonic()
        await quality_of_far(["poor"], timeout=30)
        timings.record("10% loss: quality POOR", "chromium", seconds=time.monotonic() - start)
        assert (await dashboard_quality(lab_server, "cc-quality-b"))["far"] == "poor"

        lab.host.clear()
        start = time.monotonic()
        await quality_of_far(["excellent", "good"], timeout=30)
        timings.record("loss gone: quality back", "chromium", seconds=time.monotonic() - start)
