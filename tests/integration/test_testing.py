"""roomcast.testing and the pytest plugin's fixtures, driven with the official SDKs (`livekit` rtc,
`livekit-api`): what an app's test suite gets from `pip install roomcast`."""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator

import jwt
import numpy as np
import pytest
import pytest_asyncio
from livekit import api, rtc

from roomcast.testing import (
    RoomcastServer,
    wait_for_data,
    wait_for_event,
    wait_for_frame,
    wait_for_participant,
    wait_for_track,
)

AUDIO = rtc.TrackKind.KIND_AUDIO


async def feed_video(source: rtc.VideoSource) -> None:
    """A 320x180 frame of solid orange every 33 ms (the source is not paced by itself)."""
    pixels = np.zeros((180, 320, 4), dtype=np.uint8)
    pixels[:, :] = (255, 128, 0, 255)
    frame = rtc.VideoFrame(320, 180, rtc.VideoBufferType.RGBA, pixels.tobytes())
    while True:
        source.capture_frame(frame)
        await asyncio.sleep(1 / 30)  # the frame rate of the fake camera, not a wait for state


async def feed_audio(source: rtc.AudioSource) -> None:
    samples = (8000 * np.sin(2 * math.pi * 400 * np.arange(480) / 48000)).astype(np.int16)
    frame = rtc.AudioFrame(samples.tobytes(), 48000, 1, 480)
    while True:
        await source.capture_frame(frame)  # paced by the source's queue


async def test_participants_tracks_frames_and_data(
    roomcast_server: RoomcastServer, roomcast_room: str
) -> None:
    async with roomcast_server.connect("alice", roomcast_room) as alice:
        bob_joins = wait_for_participant(alice, "bob")  # before Bob exists
        async with roomcast_server.connect("bob", roomcast_room, name="Bob") as bob:
            assert (await bob_joins).name == "Bob"
            present = wait_for_participant(bob, "alice")  # already there: resolved at once
            assert present.done() and present.result().identity == "alice"
            assert (await wait_for_participant(bob)).identity == "alice"

            camera = rtc.VideoSource(320, 180)
            mic = rtc.AudioSource(48000, 1)
            feeds = [
                asyncio.ensure_future(feed(source))
                for feed, source in ((feed_video, camera), (feed_audio, mic))
            ]
            try:
                video_published = wait_for_track(alice, "bob", kind="video", subscribed=False)
                for track, source in (
                    (rtc.LocalVideoTrack.create_video_track("cam", camera), "SOURCE_CAMERA"),
                    (rtc.LocalAudioTrack.create_audio_track("mic", mic), "SOURCE_MICROPHONE"),
                ):
                    options = rtc.TrackPublishOptions(source=rtc.TrackSource.Value(source))
                    await bob.local_participant.publish_track(track, options)
                assert (await video_published).name == "cam"
                video = await wait_for_track(alice, "bob", source="camera")
                audio = await wait_for_track(alice, kind=AUDIO, name="mic")
                frame = await wait_for_frame(video.track)
                assert (frame.width, frame.height) == (320, 180)
                rgba = np.frombuffer(
                    frame.convert(rtc.VideoBufferType.RGBA).data, dtype=np.uint8
                ).reshape(180, 320, 4)
                assert abs(int(rgba[90, 160, 0]) - 255) < 40 and abs(int(rgba[90, 160, 2])) < 40
                sound = await wait_for_frame(audio.track)
                assert sound.sample_rate == 48000
            finally:
                for feed in feeds:
                    feed.cancel()

            # Data: filtered by topic and sender; the listener is on before the send.
            on_topic = wait_for_data(alice, topic="chat", identity="bob")
            await bob.local_participant.publish_data(b"other", topic="noise")
            await bob.local_participant.publish_data(b"hello", topic="chat")
            packet = await on_topic
            assert (packet.data, packet.participant.identity) == (b"hello", "bob")

            from_api = wait_for_data(alice, identity="")  # "" = sent with the server API
            async with roomcast_server.api() as lkapi:
                await lkapi.room.send_data(
                    api.SendDataRequest(room=roomcast_room, data=b"server", topic="ops")
                )
            assert (await from_api).data == b"server"

            left = wait_for_event(alice, "participant_disconnected", lambda p: p.identity == "bob")
        (gone,) = await left
        assert gone.identity == "bob"


async def test_waits_fail_saying_what_they_waited_for(
    roomcast_server: RoomcastServer, roomcast_room: str
) -> None:
    async with roomcast_server.connect("alone", roomcast_room) as alone:
        with pytest.raises(TimeoutError, match=r"no participant 'ghost' within 0\.2 s"):
            await wait_for_participant(alone, "ghost", timeout=0.2)
        with pytest.raises(TimeoutError, match="no subscribed audio track of 'ghost'"):
            await wait_for_track(alone, "ghost", kind="audio", timeout=0.2)
        with pytest.raises(TimeoutError, match="no data packet on topic 'x' from 'ghost'"):
            await wait_for_data(alone, topic="x", identity="ghost", timeout=0.2)
        with pytest.raises(ZeroDivisionError):
            waiting = wait_for_event(alone, "room_metadata_changed", lambda *_: 1 / 0)
            async with roomcast_server.api() as lkapi:
                await lkapi.room.update_room_metadata(
                    api.UpdateRoomMetadataRequest(room=roomcast_room, metadata="m")
                )
            await waiting


async def test_server_api_and_tokens(roomcast_server: RoomcastServer, roomcast_room: str) -> None:
    async with roomcast_server.api() as lkapi:
        room = await lkapi.room.create_room(api.CreateRoomRequest(name=roomcast_room))
        assert room.name == roomcast_room
        async with roomcast_server.connect("viewer", roomcast_room, can_publish=False) as viewer:
            listed = await lkapi.room.list_participants(
                api.ListParticipantsRequest(room=roomcast_room)
            )
            (info,) = listed.participants
            assert info.identity == "viewer" and not info.permission.can_publish
            assert viewer.local_participant.permissions.can_subscribe

    claims = jwt.decode(
        roomcast_server.token(
            "agent-1", "r", kind="agent", attributes={"a": "1"}, hidden=True, ttl=60
        ),
        roomcast_server.api_secret,
        algorithms=["HS256"],
    )
    assert claims["video"] == {"roomJoin": True, "room": "r", "hidden": True}
    assert claims["kind"] == "agent" and claims["attributes"] == {"a": "1"}
    assert claims["exp"] - claims["nbf"] == 60
    with pytest.raises(TypeError, match=r"unknown grant.*can_fly"):
        roomcast_server.token("x", "r", can_fly=True)
    assert len(roomcast_server.api_secret) >= 32  # no short-secret warning in the user's log


def test_sync_tests_get_the_same_server(roomcast_server: RoomcastServer) -> None:
    assert roomcast_server.url == roomcast_server.http_url.replace("http://", "ws://")
    assert roomcast_server.env["LIVEKIT_URL"] == roomcast_server.url
    assert roomcast_server.call(lambda server: server.port) == roomcast_server.port
    names = {roomcast_server.new_room(), roomcast_server.new_room()}
    assert len(names) == 2


def test_the_fresh_room_is_deleted_after_the_test(
    roomcast_server: RoomcastServer, roomcast_room: str
) -> None:
    async def create() -> None:
        async with roomcast_server.api() as lkapi:
            await lkapi.room.create_room(api.CreateRoomRequest(name=roomcast_room))

    asyncio.run(create())
    assert roomcast_server.call(lambda s: s.rooms.get(roomcast_room) is not None)
    assert roomcast_server.delete_room(roomcast_room)
    assert not roomcast_server.delete_room(roomcast_room)


# One room shared by a module-scoped loop: the session server serves every loop scope.
@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def module_room(roomcast_server: RoomcastServer) -> AsyncIterator[tuple[rtc.Room, str]]:
    name = roomcast_server.new_room("module")
    async with roomcast_server.connect("resident", name) as resident:
        yield resident, name


@pytest.mark.asyncio(loop_scope="module")
@pytest.mark.parametrize("visitor", ["first", "second"])
async def test_module_loop_scope(
    roomcast_server: RoomcastServer, module_room: tuple[rtc.Room, str], visitor: str
) -> None:
    resident, name = module_room
    arrives = wait_for_participant(resident, visitor)
    async with roomcast_server.connect(visitor, name):
        assert (await arrives).identity == visitor


async def test_standalone_server_with_its_own_config() -> None:
    config = "keys:\n  mykey: " + "s" * 32 + "\nroom:\n  max_participants: 1\n"
    async with RoomcastServer(config) as server:
        assert (server.api_key, server.api_secret) == ("mykey", "s" * 32)
        async with server.connect("first", "tiny"):
            with pytest.raises(rtc.ConnectError):
                async with server.connect("second", "tiny"):
                    pass
    with pytest.raises(RuntimeError, match="not running"):
        _ = server.url
    with RoomcastServer() as sync_server:
        assert sync_server.port > 0
    with pytest.raises(ValueError, match="YAML mapping"):
        RoomcastServer("- a list")
