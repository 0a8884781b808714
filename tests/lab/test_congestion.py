"""Congestion control in the network lab (issue 16, item 6) with the official Python SDK; the same
scenarios with Chromium are in tests/lab/test_browser_congestion.py, the publisher and the
layer rates in tests/lab/congestion.py.

- A subscriber behind a 500 kbit/s downlink: within 10 s the allocation settles on a layer
  below the top, then video decodes every frame the publisher sends of it (20 fps) with no gap
  over a second; with the cap lifted, probing finds the room and the top layer is back within
  20 s.
- 150 kbit/s (below audio plus the lowest layer), with pausing allowed: video is paused and the
  client is told (`StreamStateUpdate` PAUSED), audio goes on; with the cap lifted the video
  resumes (ACTIVE). The Python SDK has no stream-state event: the test reads what the server
  signalled to it.
- A publisher whose uplink is capped at 800 kbit/s drops its top layer: its own estimator works
  from our transport-wide feedback (no REMB is sent to it).
- With 10 % random loss both ways a participant's connection quality falls to POOR, as both it
  and the other participant are told; on a clean link it is EXCELLENT or GOOD; the dashboard's
  /stats says the same.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import aiohttp
import pytest
from livekit.protocol import rtc

from roomcast.auth import VideoGrant
from roomcast.media.downtrack import PAUSED
from roomcast.media.quality import EXCELLENT, GOOD, POOR
from roomcast.server import Server
from tests.conftest import token
from tests.integration.sdk import join_token, until
from tests.lab import timings
from tests.lab.conftest import ws_url
from tests.lab.congestion import (
    CAP,
    PAUSE_CAP,
    RECOVER,
    SETTLE,
    TOP,
    UPLINK_CAP,
    WORST_GAP,
    expected_fps,
    one_downtrack,
    pausing_server,
    publish_near,
    sent_fps,
    settled_below_top,
    stream_states_sent,
)
from tests.lab.netlab import NetworkLab
from tests.lab.peers import Peers

pytestmark = pytest.mark.media

WINDOW = {"video": 100, "audible": 200}
# Frames a paused subscriber may still decode after a second without any: a jitter buffer
# stretched by a 150 kbit/s link can hold them that long (the server sent nothing more).
LATE_FRAMES = 2  # 5 s of 20 fps video; 2 s of audio (10 ms frames)


async def test_capped_subscriber_settles_below_the_cap_then_climbs_back(
    lab: NetworkLab, lab_server: Server, peers: Peers, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, "roomcast.media.downlink")  # the allocation, on failure
    near = await publish_near(lab_server, peers, "cc-cap")
    lab.host.cap(CAP, "down")
    url = ws_url(lab_server)
    far = await peers.start(
        "far", url, join_token("cc-cap", "far"), lab.host.command(), "--publish", "none"
    )
    first = await far.wait("first_frame", lambda e: e["kind"] == "video", timeout=40)
    started = time.monotonic()

    # Within SETTLE s the allocation is below the top layer; from then on video decodes every
    # frame the publisher sends of that layer, with no freeze.
    downtrack = await one_downtrack(lab_server, "far")
    if lab_server.mux.engine is not None:  # the native plane forwards it, estimator and all
        assert type(downtrack).__name__ == "NativeDownTrack"
    await until(lambda: settled_below_top(downtrack), timeout=SETTLE)
    settled = time.monotonic() - started
    await far.command("mark")
    await far.command("frames", video=10, within=10, timeout=15)  # what was on its way
    sent_before = await near.command("stats")
    await far.command("mark")
    stats = await far.command("frames", **WINDOW, within=30, timeout=35)
    sent_after = await near.command("stats")
    seconds = stats["seconds_since_mark"]
    fps = stats["since_mark"]["video"] / seconds
    sent = sent_fps(sent_before, sent_after, seconds)
    sizes = stats["video_sizes"]
    diagnostics = f"{stats}\nsent fps per layer: {sent}\nfirst frame: {first}"
    assert TOP not in sizes, f"the top layer went through a {CAP} kbit/s link: {diagnostics}"
    assert stats["worst_video_gap"] < WORST_GAP, diagnostics
    assert fps >= expected_fps(sent, sizes), diagnostics
    assert stats["since_mark"]["audible"] >= 0.9 * stats["since_mark"]["audio"], diagnostics
    timings.record(
        f"{CAP} kbit/s down, 3 layers", "sdk far", settled=settled, fps=fps,
        worst_gap=stats["worst_video_gap"], layers=",".join(sorted(sizes)),
    )  # fmt: skip

    lifted = time.monotonic()
    lab.host.clear()
    await far.command("size", size=TOP, frames=10, within=RECOVER, timeout=RECOVER + 5)
    timings.record("cap lifted: top layer back", "sdk far", seconds=time.monotonic() - lifted)


async def test_cap_below_the_lowest_layer_pauses_video_and_tells_the_client(
    lab: NetworkLab, peers: Peers, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, "roomcast.media.downlink")  # the allocation, on failure
    async with pausing_server(lab) as server:
        await publish_near(server, peers, "cc-pause")
        far = await peers.start(
            "far", ws_url(server), join_token("cc-pause", "far"), lab.host.command(),
            "--publish", "none",
        )  # fmt: skip
        await far.wait("first_frame", lambda e: e["kind"] == "video", timeout=40)
        downtrack = await one_downtrack(server, "far")
        told = stream_states_sent(server, "far")
        capped = time.monotonic()
        lab.host.cap(PAUSE_CAP, "down")
        await until(lambda: _told(told, rtc.StreamState.PAUSED), timeout=30)
        paused = time.monotonic() - capped
        assert downtrack.allowed == PAUSED
        forwarded = downtrack.packets_sent
        # Video stops once what was on its way is out of the client's jitter buffer; audio
        # goes on, and the server forwards no video.
        await far.command("still", seconds=1, within=10, timeout=15)
        await far.command("mark")
        stats = await far.command("frames", audible=200, within=20, timeout=25)
        assert downtrack.packets_sent == forwarded, f"video forwarded while paused: {told}"
        assert stats["since_mark"]["video"] <= LATE_FRAMES, f"{stats}\ntold: {told}"
        timings.record(f"{PAUSE_CAP} kbit/s down: video paused", "sdk far", seconds=paused)

        lab.host.clear()
        lifted = time.monotonic()
        await until(lambda: _told(told, rtc.StreamState.ACTIVE), timeout=30)
        await far.command("mark")
        await far.command("frames", video=20, within=20, timeout=25)
        timings.record("cap lifted: video resumed", "sdk far", seconds=time.monotonic() - lifted)
        assert [s.state for s in told] == [rtc.StreamState.PAUSED, rtc.StreamState.ACTIVE]


def _told(told: list[rtc.StreamStateInfo], state: int) -> bool:
    return bool(told) and told[-1].state == state


async def test_capped_publisher_drops_its_top_layer(
    lab: NetworkLab, lab_server: Server, peers: Peers
) -> None:
    url = ws_url(lab_server)
    far = await peers.start(
        "far", url, join_token("cc-up", "far"), lab.host.command(),
        "--size", "1280x720", "--fps", "20", "--simulcast", "--pattern", "smooth",
    )  # fmt: skip
    await far.wait("published")
    near = await peers.start("near", url, join_token("cc-up", "near"), (), "--publish", "none")
    await near.wait("first_frame", lambda e: e["kind"] == "video")
    await check_uplink_cap(lab, lab_server, "sdk far")
    await near.command("mark")
    await near.command("frames", video=20, within=20, timeout=25)


async def check_uplink_cap(lab: NetworkLab, server: Server, who: str) -> None:
    """The publisher in the lab sends all three layers; with its uplink capped it stops the top
    one and keeps the lowest (its estimator reads our transport-cc feedback)."""
    uptrack = next(t for t in server.plane.uptracks() if t.kind == "video")
    assert uptrack.twcc_ext, "transport-cc was not negotiated with the publisher"
    assert len(uptrack.layers) == 3

    def live(index: int) -> bool:
        return time.monotonic() - uptrack.layers[index].last_arrival < 1.0

    await until(lambda: all(live(i) for i in range(3)), timeout=30)
    capped = time.monotonic()
    lab.host.cap(UPLINK_CAP, "up")
    await until(lambda: not live(2) and live(0), timeout=30)
    timings.record(
        f"{UPLINK_CAP} kbit/s up: top layer dropped", who, seconds=time.monotonic() - capped
    )


async def test_connection_quality_follows_loss(
    lab: NetworkLab, lab_server: Server, peers: Peers
) -> None:
    url = ws_url(lab_server)
    near = await peers.start("near", url, join_token("cc-quality", "near"))
    await near.wait("published")
    far = await peers.start("far", url, join_token("cc-quality", "far"), lab.host.command())
    await far.wait("first_frame", lambda e: e["kind"] == "video")

    def of_far(qualities: tuple[int, ...]) -> Any:
        return lambda e: e["identity"] == "far" and e["quality"] in qualities

    await far.wait("quality", of_far((EXCELLENT, GOOD)), timeout=20)
    lab.host.drop(0.10, "both", protocol="udp")
    after = len(far.events), len(near.events)
    start = time.monotonic()
    await far.wait("quality", of_far((POOR,)), timeout=30, after=after[0])
    await near.wait("quality", of_far((POOR,)), timeout=30, after=after[1])
    timings.record("10% loss: quality POOR", "sdk far", seconds=time.monotonic() - start)
    assert (await dashboard_quality(lab_server, "cc-quality"))["far"] == "poor"

    lab.host.clear()
    after = len(far.events), len(near.events)
    start = time.monotonic()
    await far.wait("quality", of_far((EXCELLENT, GOOD)), timeout=30, after=after[0])
    await near.wait("quality", of_far((EXCELLENT, GOOD)), timeout=30, after=after[1])
    timings.record("loss gone: quality back", "sdk far", seconds=time.monotonic() - start)
    assert (await dashboard_quality(lab_server, "cc-quality"))["far"] in ("excellent", "good")


async def dashboard_quality(server: Server, room: str) -> dict[str, str | None]:
    """Each participant's connection quality as the dashboard's /stats gives it."""
    grant = VideoGrant(room_list=True, room_admin=True, room=room)
    url = f"http://{server.bind_addresses[0]}:{server.port}/stats"
    async with (
        aiohttp.ClientSession() as session,
        session.get(url, params={"access_token": token(grant)}) as response,
    ):
        assert response.status == 200
        stats: dict[str, Any] = await response.json()
    (listed,) = [r for r in stats["rooms"] if r["name"] == room]
    return {p["identity"]: p["connection_quality"] for p in listed["participants"]}
