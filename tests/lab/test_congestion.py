"""Congestion control in the network lab (issue 16, item 6): capped links, the official Python
SDK and Chromium.

"near" (in the root namespace, next to the server) publishes 1280x720 in three simulcast layers
of a pattern cheap enough that each layer stays well below its ceiling (LiveKit's presets: q
320x180 at 15 fps, h 640x360 at 20 fps, f 1280x720); measured here at about 65, 195 and 620
kbit/s, plus about 100 kbit/s of audio (opus in RED). The subscriber sits behind a capped
downlink:

- 500 kbit/s: the allocation settles on a layer below the top within 10 s, then video decodes
  as fast as the publisher sends that layer, with no gap over a second; with the cap lifted,
  probing finds the room and the top layer comes back within 20 s;
- 150 kbit/s (below audio plus the lowest layer): video is paused and the client is told
  (`StreamStateUpdate`, which livekit-client turns into TrackStreamStateChanged), audio goes on;
  with the cap lifted the video resumes.

A publisher whose uplink is capped at 800 kbit/s drops its top layer: its own estimator works
from our transport-wide feedback (no REMB is sent to it). With 10 % random loss both ways a
participant's connection quality falls to POOR; on a clean link it is EXCELLENT or GOOD.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from roomcast.media.downtrack import PAUSED
from roomcast.media.quality import EXCELLENT, GOOD, POOR
from roomcast.server import Server
from tests.browser.conftest import requires_chromium
from tests.integration.sdk import join_token, until
from tests.lab import timings
from tests.lab.chromium import chromium_in, open_page
from tests.lab.conftest import ws_url
from tests.lab.netlab import NetworkLab
from tests.lab.peers import PeerProcess, Peers

pytestmark = pytest.mark.media

PUBLISHER = ("--size", "1280x720", "--fps", "20", "--simulcast", "--pattern", "smooth")
TOP = "1280x720"
SETTLE = 10.0  # s after the first frame within which the allocation fits the link
WINDOW = {"video": 60, "audible": 100}  # frames decoded in the measured window (3 s at 20 fps)
WORST_GAP = 1.0  # s between two decoded video frames
SENT_SHARE = 0.75  # decoded frames per frame the publisher sent on the layers received
RECOVER = 20.0  # s after the cap is lifted within which the top layer comes back


async def publish_near(server: Server, peers: Peers, room: str, *extra: str) -> PeerProcess:
    near = await peers.start("near", ws_url(server), join_token(room, "near"), (), *PUBLISHER)
    await near.wait("published")
    return near


def downtracks_of(server: Server, identity: str, kind: str = "video") -> list[Any]:
    room = next(iter(server.rooms.list()), None)
    participant = room.participants.get(identity) if room is not None else None
    if participant is None:
        return []
    return [
        d for d in server.plane.downtracks() if d.subscriber == participant.sid and d.kind == kind
    ]


def sent_fps(before: dict[str, Any], after: dict[str, Any], seconds: float) -> dict[str, float]:
    """Frames per second the publisher sent on each simulcast layer between two stats."""
    return {
        rid: (layer["frames_sent"] - before["outbound_video"].get(rid, {}).get("frames_sent", 0))
        / seconds
        for rid, layer in after["outbound_video"].items()
    }


SIZE_OF_RID = {"q": "320x180", "h": "640x360", "f": TOP}


async def test_capped_subscriber_settles_below_the_cap_then_climbs_back(
    lab: NetworkLab, lab_server: Server, peers: Peers
) -> None:
    near = await publish_near(lab_server, peers, "cc-cap")
    lab.host.cap(500, "down")
    url = ws_url(lab_server)
    far = await peers.start(
        "far", url, join_token("cc-cap", "far"), lab.host.command(), "--publish", "none"
    )
    first = await far.wait("first_frame", lambda e: e["kind"] == "video", timeout=40)
    started = time.monotonic()

    # Within SETTLE s the allocation is below the top layer; from then on video decodes as
    # fast as the publisher sends the layer received, with no freeze.
    downtrack = await _one(lab_server, "far")
    await until(lambda: downtrack.current is not None and downtrack.current < 2, timeout=SETTLE)
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
    received_rates = [sent[rid] for rid, size in SIZE_OF_RID.items() if size in sizes]
    diagnostics = f"{stats}\nsent fps per layer: {sent}\nfirst frame: {first}"
    assert TOP not in sizes, f"the top layer went through a 500 kbit/s link: {diagnostics}"
    assert stats["worst_video_gap"] < WORST_GAP, diagnostics
    assert fps >= SENT_SHARE * max(received_rates), diagnostics
    assert stats["since_mark"]["audible"] >= 0.9 * stats["since_mark"]["audio"], diagnostics
    timings.record(
        "500 kbit/s down, 3 layers", "sdk far", settled=settled, fps=fps,
        worst_gap=stats["worst_video_gap"], layers=",".join(sorted(sizes)),
    )  # fmt: skip

    lifted = time.monotonic()
    lab.host.clear()
    await far.command("size", size=TOP, frames=10, within=RECOVER, timeout=RECOVER + 5)
    timings.record("cap lifted: top layer back", "sdk far", seconds=time.monotonic() - lifted)


async def _one(server: Server, identity: str) -> Any:
    await until(lambda: len(downtracks_of(server, identity)) == 1, timeout=10)
    return downtracks_of(server, identity)[0]


STREAM_STATES_JS = """
() => {
  window.rc.streamStates = [];
  window.rc.room.on('trackStreamStateChanged', (pub, state, participant) => {
    window.rc.streamStates.push({ identity: participant.identity, kind: pub.kind, state });
  });
}
"""


@requires_chromium
async def test_cap_below_the_lowest_layer_pauses_video_and_tells_the_client(
    lab: NetworkLab, lab_server: Server, peers: Peers, tmp_path: Path
) -> None:
    await publish_near(lab_server, peers, "cc-pause")
    lab.host.cap(150, "down")
    async with chromium_in(lab.host, tmp_path) as context:
        page = await open_page(context, "far")
        await page.join(ws_url(lab_server), join_token("cc-pause", "far"))
        await page.page.evaluate(STREAM_STATES_JS)
        await page.wait_for_tracks("near", ["audio", "video"])
        await page.page.wait_for_function(
            "window.rc.streamStates.some((s) => s.kind === 'video' && s.state === 'paused')",
            timeout=30_000,
        )
        downtrack = await _one(lab_server, "far")
        assert downtrack.allowed == PAUSED
        # Audio keeps playing: its energy keeps growing while the video is paused.
        before = (await page.stats())["audio"][0]["totalAudioEnergy"]
        await page.wait_for_inbound("near", totalAudioEnergy=before + 0.5, timeout_ms=20_000)
        timings.record("150 kbit/s down: video paused", "chromium", audio="continues")

        lab.host.clear()
        lifted = time.monotonic()
        await page.page.wait_for_function(
            "window.rc.streamStates.some((s) => s.kind === 'video' && s.state === 'active')",
            timeout=30_000,
        )
        decoded = max(s["framesDecoded"] for s in (await page.stats())["video"])
        await page.wait_for_inbound("near", framesDecoded=decoded + 20, timeout_ms=20_000)
        timings.record("cap lifted: video resumed", "chromium", seconds=time.monotonic() - lifted)


async def test_capped_publisher_drops_its_top_layer(
    lab: NetworkLab, lab_server: Server, peers: Peers
) -> None:
    url = ws_url(lab_server)
    far = await peers.start(
        "far", url, join_token("cc-up", "far"), lab.host.command(),
        "--size", "1280x720", "--fps", "20", "--simulcast",
    )  # fmt: skip
    await far.wait("published")
    near = await peers.start("near", url, join_token("cc-up", "near"), (), "--publish", "none")
    await near.wait("first_frame", lambda e: e["kind"] == "video")
    uptrack = next(t for t in lab_server.plane.uptracks() if t.kind == "video")
    assert uptrack.twcc_ext, "transport-cc was not negotiated with the publisher"
    assert len(uptrack.layers) == 3

    def live(index: int) -> bool:
        return time.monotonic() - uptrack.layers[index].last_arrival < 1.0

    await until(lambda: all(live(i) for i in range(3)), timeout=30)
    capped = time.monotonic()
    lab.host.cap(800, "up")
    await until(lambda: not live(2) and live(0), timeout=30)
    dropped = time.monotonic() - capped
    stats = await far.command("stats")
    await near.command("mark")
    await near.command("frames", video=20, within=20, timeout=25)
    timings.record(
        "800 kbit/s up: top layer dropped", "sdk far", seconds=dropped,
        layers=",".join(f"{rid}:{round(layer['target_bitrate'] / 1000)}k"
                        for rid, layer in sorted(stats["outbound_video"].items())),
    )  # fmt: skip


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

    lab.host.clear()
    after = len(far.events), len(near.events)
    await far.wait("quality", of_far((EXCELLENT, GOOD)), timeout=30, after=after[0])
    await near.wait("quality", of_far((EXCELLENT, GOOD)), timeout=30, after=after[1])
