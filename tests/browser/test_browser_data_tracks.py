"""Data tracks between the official npm `livekit-client` in Chromium and the official Python
SDK, both ways (docs/protocol/17-data-tracks.md): multi-packet frames with user timestamps,
several subscribers and a late one, unpublish mid-stream, refusals (duplicate name, no
`canPublishData`, bad handles), packets with an unknown handle, resume and full reconnect."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from livekit.rtc.participant import PublishDataTrackError

from roomcast.server import Server
from tests.browser.conftest import BrowserPage, NewPage, requires_chromium
from tests.conftest import url_of
from tests.integration.data_track_sdk import (
    TIMESTAMP_BASE,
    Frame,
    FrameReader,
    Pusher,
    dt_joined,
    published_track,
)
from tests.integration.sdk import join_token, until

pytestmark = requires_chromium

HELPERS = Path(__file__).resolve().parent / "page" / "data_tracks.js"
FRAME = 40_000  # three packets (clients cut frames at 16 000 bytes)
INVALID_HANDLE, DUPLICATE_HANDLE = 7, 9  # livekit_rtc.proto RequestResponse.Reason


async def data_track_page(
    new_page: NewPage, server: Server, room: str, identity: str, **grant: Any
) -> BrowserPage:
    page = await new_page(identity)
    await page.page.add_script_tag(path=str(HELPERS))
    await page.join(url_of(server, "ws"), join_token(room, identity, **grant))
    await page.call("dtWatch")
    return page


def check_frames(frames: list[Frame], size: int = FRAME) -> None:
    assert frames and all(f.size == size and f.intact for f in frames), frames[:3]
    assert all(f.user_timestamp == TIMESTAMP_BASE + f.index for f in frames), frames[:3]


def check_page_frames(summary: dict[str, Any], size: int = FRAME) -> None:
    # (The channel is unordered: frames may arrive out of order, and do from Chrome.)
    assert summary["intact"] and summary["timestampsMatch"], summary
    assert summary["sizes"] == [size], summary


async def test_browser_and_python_exchange_data_tracks_both_ways(
    server: Server, new_page: NewPage
) -> None:
    web = await data_track_page(new_page, server, "dt-web", "web")
    async with (
        dt_joined(server, "dt-web", "py1") as (py1, events1),
        dt_joined(server, "dt-web", "py2") as (_, events2),
    ):
        # browser -> two Python subscribers
        published = await web.call("dtPublish", "from-web")
        assert published["ok"] and published["sid"].startswith("DTR_"), published
        await web.call("dtStartPush", "from-web", {"size": FRAME, "intervalMs": 100})
        readers = [
            FrameReader(await published_track(events, "web", "from-web"))
            for events in (events1, events2)
        ]
        local = await py1.local_participant.publish_data_track(name="from-py")
        pusher = Pusher(local, FRAME, interval=0.1)
        try:
            for reader in readers:
                assert reader.track.info.sid == published["sid"]
                check_frames(await reader.wait_frames(5))

            # Python -> browser
            subscribed = await web.call("dtSubscribe", "py1", "from-py")
            assert subscribed["sid"] == local.info.sid
            check_page_frames(await web.call("dtWaitFrames", "py1", "from-py", 5))

            # A late browser subscriber learns of both tracks at join and receives both.
            late = await data_track_page(new_page, server, "dt-web", "late")
            remote = {(t["identity"], t["name"]) for t in await late.call("dtRemote")}
            assert {("web", "from-web"), ("py1", "from-py")} <= remote, remote
            await late.call("dtSubscribe", "web", "from-web")
            await late.call("dtSubscribe", "py1", "from-py")
            check_page_frames(await late.call("dtWaitFrames", "web", "from-web", 5))
            check_page_frames(await late.call("dtWaitFrames", "py1", "from-py", 5))

            # Unpublished mid-stream, from each side: every subscriber is told, streams end.
            await web.call("dtUnpublish", "from-web")
            for events in (events1, events2):
                await events.wait("data_track_unpublished", lambda sid: sid == published["sid"])
            for reader in readers:
                await reader.wait_end()
            await late.call("dtWaitEvent", "DataTrackUnpublished", {"sid": published["sid"]})
            await late.call("dtWaitStreamEnd", "web", "from-web")
            await pusher.stop()
            await local.unpublish()
            await web.call("dtWaitStreamEnd", "py1", "from-py")
            await late.call("dtWaitStreamEnd", "py1", "from-py")
        finally:
            await pusher.stop()
            for reader in readers:
                await reader.close()
    for page in (web, late):
        assert not page.page_errors, await page.diagnostics()


async def test_browser_refusals_and_bad_handles(server: Server, new_page: NewPage) -> None:
    web = await data_track_page(new_page, server, "dt-bad", "web")
    first = await web.call("dtPublish", "sensor")
    assert first["ok"], first
    duplicate = await web.call("dtPublish", "sensor")
    assert not duplicate["ok"] and duplicate["error"] == "DuplicateName", duplicate

    # Handles the client's own allocator would never send, through its signalling client.
    await web.call("dtSignalPublish", 0, "zero")
    assert (await web.call("dtWaitRequestResponse", 0))["reason"] == INVALID_HANDLE
    await web.call("dtSignalPublish", 70000, "too-big")
    assert (await web.call("dtWaitRequestResponse", 70000))["reason"] == INVALID_HANDLE

    muted = await data_track_page(new_page, server, "dt-bad", "muted", can_publish_data=False)
    refused = await muted.call("dtPublish", "sensor")
    assert not refused["ok"] and refused["error"] == "NotAllowed", refused

    # Packets with a handle nobody published are dropped; the real track keeps flowing.
    async with dt_joined(server, "dt-bad", "py") as (_, events):
        reader = FrameReader(await published_track(events, "web", "sensor"))
        try:
            await web.call("dtStartPush", "sensor", {"size": 1000, "intervalMs": 100})
            await reader.wait_frames(2)
            drops = server.metrics.data_track_drops
            before = drops.get("unknown_handle", 0)
            for number in range(1, 6):
                await web.call("dtSendRawPacket", 4242, 60000 + number, "not a track of mine")
            await until(lambda: drops.get("unknown_handle", 0) >= before + 5)
            frames = await reader.wait_frames(len(reader.frames) + 2)
            check_frames(frames, size=1000)
        finally:
            await reader.close()

    # A handle already in use (last: livekit-client drops its own track on any error echoing
    # the handle of an active track).
    doomed = await web.call("dtPublish", "doomed")
    await web.call("dtSignalPublish", doomed["pubHandle"], "another-name")
    response = await web.call("dtWaitRequestResponse", doomed["pubHandle"])
    assert response["reason"] == DUPLICATE_HANDLE, response
    for page in (web, muted):
        assert not page.page_errors, await page.diagnostics()


async def test_browser_resume_and_full_reconnect_keep_the_track(
    server: Server, new_page: NewPage
) -> None:
    web = await data_track_page(new_page, server, "dt-again", "web")
    async with dt_joined(server, "dt-again", "py") as (_, events):
        first = await web.call("dtPublish", "sensor")
        await web.call("dtStartPush", "sensor", {"size": FRAME, "intervalMs": 100})
        reader = FrameReader(await published_track(events, "web", "sensor"))
        try:
            await reader.wait_frames(3)
            # Resume: the client lists its data tracks in SyncState; the server knows them.
            await web.call("dtSimulate", "signal-reconnect")
            await web.call("dtWaitEvent", "Reconnected")
            await reader.wait_frames(len(reader.frames) + 3)
            assert list(server.sessions.data_tracks.publications) == [first["sid"]]

            # Full reconnect: the same handle and name again, under a new SID. (Not pushing
            # meanwhile: in livekit-client 2.23.0 a push while its old PeerConnections close
            # leaves it waiting on the closed publisher PC, and later pushes fail.)
            await web.call("dtStopPush", "sensor")
            await web.call("dtSimulate", "full-reconnect")
            await events.wait("data_track_unpublished", lambda sid: sid == first["sid"], 30)
            (track,) = await events.wait(
                "data_track_published",
                lambda t: t.publisher_identity == "web" and t.info.sid != first["sid"],
                timeout=30,
            )
            (publication,) = server.sessions.data_tracks.publications.values()
            assert publication.sid == track.info.sid and track.info.name == "sensor"
            assert publication.info.pub_handle == first["pubHandle"]
            await web.call("dtWaitLocalSid", "sensor", publication.sid)
            again = FrameReader(track)
            await web.call("dtStartPush", "sensor", {"size": FRAME, "intervalMs": 100})
            try:
                check_frames(await again.wait_frames(3))
            finally:
                await again.close()
        finally:
            await reader.close()
    assert not web.page_errors, await web.diagnostics()


async def test_python_refusal_when_the_name_is_taken_by_the_browser_is_per_publisher(
    server: Server, new_page: NewPage
) -> None:
    """Names are unique per publisher, not per room."""
    web = await data_track_page(new_page, server, "dt-names", "web")
    assert (await web.call("dtPublish", "shared"))["ok"]
    async with dt_joined(server, "dt-names", "py") as (py, _):
        mine = await py.local_participant.publish_data_track(name="shared")
        with pytest.raises(PublishDataTrackError):
            await py.local_participant.publish_data_track(name="shared")
        assert mine.is_published()
