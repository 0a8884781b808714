"""Data tracks with the official Python SDK (docs/protocol/17-data-tracks.md): publish, push
multi-packet frames with user timestamps, subscribe from several participants, late joiners,
unpublish mid-stream, refusals, permissions, leaving, resume and full reconnect."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest
from livekit import api, rtc
from livekit.protocol import rtc as rtc_proto
from livekit.rtc.participant import PublishDataTrackError

from roomcast.rooms.session import Session
from roomcast.rooms.transport_manager import DATA_TRACK_BACKLOG, ParticipantTransports
from roomcast.server import Server
from tests.conftest import ServerFactory, free_port, url_of
from tests.integration.data_track_sdk import (
    TIMESTAMP_BASE,
    Frame,
    FrameReader,
    Pusher,
    dt_joined,
    published_track,
)
from tests.integration.sctp_client import SctpParticipant
from tests.integration.sdk import Events, join_token, until
from tests.integration.test_metrics import scrape

FRAME = 40_000  # three packets: clients cut frames into packets of at most 16 000 bytes


def check_frames(frames: list[Frame], size: int = FRAME) -> None:
    """Whole, unaltered frames with their user timestamps (in any order: the channel is
    unordered)."""
    assert frames, "no frames"
    assert all(f.size == size and f.intact for f in frames), frames[:3]
    assert all(f.user_timestamp == TIMESTAMP_BASE + f.index for f in frames), frames[:3]


async def test_frames_reach_several_subscribers_and_a_late_one(server: Server) -> None:
    async with (
        dt_joined(server, "dt", "sub1") as (_, events1),
        dt_joined(server, "dt", "sub2") as (_, events2),
        dt_joined(server, "dt", "pub") as (pub, _),
    ):
        local = await pub.local_participant.publish_data_track(name="sensor")
        assert local.info.sid.startswith("DTR_") and local.info.name == "sensor"
        assert not local.info.uses_e2ee
        pusher = Pusher(local, FRAME)
        readers = [
            FrameReader(await published_track(events, "pub", "sensor"))
            for events in (events1, events2)
        ]
        try:
            for reader in readers:
                assert reader.track.info.sid == local.info.sid
                check_frames(await reader.wait_frames(5))
            async with dt_joined(server, "dt", "late") as (_, late_events):
                # The late joiner learns of the track from its JoinResponse.
                late = FrameReader(await published_track(late_events, "pub", "sensor"))
                readers.append(late)
                check_frames(await late.wait_frames(5))
                # Each subscriber has its own handle for the track.
                publication = server.sessions.data_tracks.publications[local.info.sid]
                assert len(publication.subscribers) == 3

                # Unpublished mid-stream: every subscriber's stream ends and each is told.
                await pusher.stop()
                await local.unpublish()
                for events in (events1, events2, late_events):
                    await events.wait("data_track_unpublished", lambda sid: sid == local.info.sid)
                for reader in readers:
                    await reader.wait_end()
                assert not local.is_published()
                assert server.sessions.data_tracks.publications == {}
        finally:
            await pusher.stop()
            for reader in readers:
                await reader.close()


async def test_publish_refusals_answer_at_once(server: Server) -> None:
    async with dt_joined(server, "refuse", "pub") as (pub, _):
        # (The SDK unpublishes a LocalDataTrack when the object goes: keep it.)
        kept = await pub.local_participant.publish_data_track(name="x")
        with pytest.raises(PublishDataTrackError):
            await asyncio.wait_for(pub.local_participant.publish_data_track(name="x"), 5)
        assert kept.is_published()
        other = await pub.local_participant.publish_data_track(name="y")  # another name is fine
        assert other.info.sid != kept.info.sid
    async with dt_joined(server, "refuse", "mute", can_publish_data=False) as (mute, _):
        with pytest.raises(PublishDataTrackError):
            await asyncio.wait_for(mute.local_participant.publish_data_track(name="x"), 5)
    # Without canPublishData in the token, canPublish decides (livekit_models.proto).
    async with dt_joined(server, "refuse", "viewer", can_publish=False) as (viewer, _):
        with pytest.raises(PublishDataTrackError):
            await asyncio.wait_for(viewer.local_participant.publish_data_track(name="x"), 5)


async def test_the_data_track_limit_says_what_it_is(start_server: ServerFactory) -> None:
    server: Server = await start_server("limit:\n  max_data_tracks_per_participant: 1\n")
    async with dt_joined(server, "limited", "pub") as (pub, _):
        kept = await pub.local_participant.publish_data_track(name="one")
        with pytest.raises(PublishDataTrackError, match="at most 1 data track per participant"):
            await asyncio.wait_for(pub.local_participant.publish_data_track(name="two"), 5)
        assert kept.is_published()


async def test_disabled_data_tracks_refuse_publishing(start_server: ServerFactory) -> None:
    server: Server = await start_server("enable_data_tracks: false\n")
    async with dt_joined(server, "off", "pub") as (pub, _):
        with pytest.raises(PublishDataTrackError):
            await asyncio.wait_for(pub.local_participant.publish_data_track(name="x"), 5)


async def test_tracks_go_when_the_publisher_leaves_or_loses_can_publish_data(
    server: Server,
) -> None:
    async with dt_joined(server, "gone", "watcher") as (_, events):
        async with dt_joined(server, "gone", "pub") as (pub, _):
            first = await pub.local_participant.publish_data_track(name="a")
            await published_track(events, "pub", "a")
            # The RoomService lists data tracks with the participant.
            async with api.LiveKitAPI(url_of(server), "devkey", "secret") as lk:
                listed = await lk.room.list_participants(api.ListParticipantsRequest(room="gone"))
                (info,) = [p for p in listed.participants if p.identity == "pub"]
                assert [(t.name, t.sid) for t in info.data_tracks] == [("a", first.info.sid)]
                await lk.room.update_participant(
                    api.UpdateParticipantRequest(
                        room="gone",
                        identity="pub",
                        permission=api.ParticipantPermission(
                            can_subscribe=True, can_publish=True, can_publish_data=False
                        ),
                    )
                )
            await events.wait("data_track_unpublished", lambda sid: sid == first.info.sid)
            await until(lambda: not first.is_published())
            with pytest.raises(PublishDataTrackError):
                await asyncio.wait_for(pub.local_participant.publish_data_track(name="b"), 5)
        async with dt_joined(server, "gone", "pub2") as (pub2, _):
            second = await pub2.local_participant.publish_data_track(name="c")
            await published_track(events, "pub2", "c")
        await events.wait("data_track_unpublished", lambda sid: sid == second.info.sid)


async def test_the_publishers_subscription_permission_covers_data_tracks(server: Server) -> None:
    async with (
        dt_joined(server, "perm", "sub") as (_, events),
        dt_joined(server, "perm", "pub") as (pub, _),
    ):
        local = await pub.local_participant.publish_data_track(name="private")
        pusher = Pusher(local, 1000)
        reader = FrameReader(await published_track(events, "pub", "private"))
        try:
            await reader.wait_frames(3)
            pub.local_participant.set_track_subscription_permissions(allow_all_participants=False)
            publication = server.sessions.data_tracks.publications[local.info.sid]
            await until(lambda: not publication.subscribers)
            stopped_at = len(reader.frames)
            # Allowed again: the server subscribes it anew and frames flow again.
            pub.local_participant.set_track_subscription_permissions(allow_all_participants=True)
            await until(lambda: bool(publication.subscribers))
            frames = await reader.wait_frames(stopped_at + 3)
            assert all(f.intact for f in frames)
        finally:
            await pusher.stop()
            await reader.close()


async def test_resume_keeps_the_track_and_full_reconnect_republishes_it(server: Server) -> None:
    async with (
        dt_joined(server, "again", "sub") as (_, events),
        dt_joined(server, "again", "pub") as (pub, _),
    ):
        local = await pub.local_participant.publish_data_track(name="sensor")
        first_sid = local.info.sid
        handle = server.sessions.data_tracks.publications[first_sid].info.pub_handle
        pusher = Pusher(local, FRAME)
        reader = FrameReader(await published_track(events, "pub", "sensor"))
        try:
            await reader.wait_frames(3)
            reconnected = Events(pub, ["reconnected"])
            await pub.simulate_scenario(rtc.SimulateScenarioKind.SIMULATE_SIGNAL_RECONNECT)
            await reconnected.wait("reconnected", timeout=30)
            count = len(reader.frames)
            await reader.wait_frames(count + 3)  # same track, same subscription
            assert list(server.sessions.data_tracks.publications) == [first_sid]

            await pub.simulate_scenario(rtc.SimulateScenarioKind.SIMULATE_FULL_RECONNECT)

            def republished() -> bool:
                publications = server.sessions.data_tracks.publications.values()
                return any(p.sid != first_sid for p in publications)

            await until(republished, timeout=30)
            (publication,) = server.sessions.data_tracks.publications.values()
            assert publication.info.name == "sensor" and publication.info.pub_handle == handle
            assert publication.sid.startswith("DTR_") and publication.sid != first_sid
            # The subscriber is told the old SID went and the new one came, and receives from it.
            await events.wait("data_track_unpublished", lambda sid: sid == first_sid)
            (track,) = await events.wait(
                "data_track_published", lambda t: t.info.sid == publication.sid, timeout=30
            )
            assert (track.publisher_identity, track.info.name) == ("pub", "sensor")
            again = FrameReader(track)
            try:
                check_frames(await again.wait_frames(3))
            finally:
                await again.close()
        finally:
            await pusher.stop()
            await reader.close()


async def test_metrics_count_data_track_packets(start_server: ServerFactory) -> None:
    prometheus_port = free_port()
    server: Server = await start_server(f"prometheus:\n  port: {prometheus_port}\n")
    async with (
        dt_joined(server, "count", "sub") as (_, events),
        dt_joined(server, "count", "pub") as (pub, _),
    ):
        local = await pub.local_participant.publish_data_track(name="m")
        pusher = Pusher(local, FRAME)
        reader = FrameReader(await published_track(events, "pub", "m"))
        try:
            await reader.wait_frames(3)
        finally:
            await pusher.stop()
            await reader.close()
    values = await scrape(f"http://127.0.0.1:{prometheus_port}/metrics")
    packets_in = values["roomcast_data_track_packets_total,direction=in"]
    packets_out = values["roomcast_data_track_packets_total,direction=out"]
    assert packets_in >= 9 and packets_out >= 9  # three packets a frame
    assert values["roomcast_data_track_bytes_total,direction=out"] >= 3 * FRAME
    assert values["roomcast_signal_requests_total,type=publish_data_track_request"] == 1


async def test_a_stalled_subscriber_holds_up_nobody(server: Server) -> None:
    """A subscriber that stops acknowledging SCTP loses whole frames at the server, which
    keeps only a bounded backlog for it; the other subscriber keeps receiving."""
    async with (
        aiohttp.ClientSession() as http,
        dt_joined(server, "stall", "healthy") as (_, events),
        dt_joined(server, "stall", "pub") as (pub, _),
    ):
        stalled = SctpParticipant(http)
        await stalled.join(url_of(server, "ws"), join_token("stall", "stalled"))
        local = await pub.local_participant.publish_data_track(name="feed")
        pusher = Pusher(local, FRAME, interval=0.2)
        reader = FrameReader(await published_track(events, "pub", "feed"))
        try:
            update = rtc_proto.UpdateDataSubscription.Update(
                track_sid=local.info.sid, subscribe=True
            )
            stalled.signal.send(
                rtc_proto.SignalRequest(
                    update_data_subscription=rtc_proto.UpdateDataSubscription(updates=[update])
                )
            )
            publication = server.sessions.data_tracks.publications[local.info.sid]
            await until(lambda: len(publication.subscribers) == 2)
            (stalled_sub,) = [
                s for s in publication.subscribers.values() if s.subscriber.identity == "stalled"
            ]
            await until(lambda: stalled_sub.forwarded > 0)  # its channel works
            stalled.reading = False  # from now on it acknowledges nothing
            count = len(reader.frames)
            check_frames(await reader.wait_frames(count + 10))
            await until(lambda: stalled_sub.dropped > 0)
            room = server.rooms.get("stall")
            assert room is not None
            session = room.participants["stalled"].session
            assert isinstance(session, Session)
            transports = session.transports
            assert isinstance(transports, ParticipantTransports)
            assert transports.subscriber.transport.data_buffered <= DATA_TRACK_BACKLOG
        finally:
            await pusher.stop()
            await reader.close()
            await stalled.close()
