"""Room lifecycle with short timeouts, and signed webhooks verified by the official receiver."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import pytest
from livekit import api

from tests.conftest import API_KEY, API_SECRET, ServerFactory, url_of
from tests.integration.webhook_receiver import WebhookSink


# Request `sink` before `start_server` so the server stops (and flushes) before the sink does.
@pytest.fixture
async def sink() -> AsyncIterator[WebhookSink]:
    receiver = WebhookSink()
    await receiver.start()
    yield receiver
    await receiver.stop()


def webhook_config(sink: WebhookSink) -> str:
    return f"webhook:\n  api_key: {API_KEY}\n  urls: [{sink.url}]\n"


async def test_empty_room_closes_after_empty_timeout(
    sink: WebhookSink, start_server: ServerFactory
) -> None:
    server = await start_server(webhook_config(sink))
    async with api.LiveKitAPI(url_of(server), API_KEY, API_SECRET) as lk:
        created = await lk.room.create_room(api.CreateRoomRequest(name="short", empty_timeout=1))
        await lk.room.create_room(api.CreateRoomRequest(name="long", empty_timeout=300))
        started, other_started, finished = await sink.wait_for(3)
        assert {started.event, other_started.event} == {"room_started"}
        assert finished.event == "room_finished"
        assert finished.room.sid == created.sid and finished.room.name == "short"
        assert finished.created_at - created.creation_time >= 1
        rooms = await lk.room.list_rooms(api.ListRoomsRequest())
        assert [r.name for r in rooms.rooms] == ["long"]
    assert set(sink.content_types) == {"application/webhook+json"}
    assert all(e.id.startswith("EV_") for e in sink.events)
    assert len({e.id for e in sink.events}) == len(sink.events)


async def test_room_defaults_come_from_config(start_server: ServerFactory) -> None:
    server = await start_server("room:\n  empty_timeout: 7\n  departure_timeout: 3\n")
    async with api.LiveKitAPI(url_of(server), API_KEY, API_SECRET) as lk:
        room = await lk.room.create_room(api.CreateRoomRequest(name="defaults"))
    assert (room.empty_timeout, room.departure_timeout) == (7, 3)


async def test_webhook_retried_after_failure_and_order_kept(
    sink: WebhookSink, start_server: ServerFactory
) -> None:
    sink.fail_next = 1
    server = await start_server(webhook_config(sink))
    async with api.LiveKitAPI(url_of(server), API_KEY, API_SECRET) as lk:
        t0 = time.monotonic()
        for name in ("a", "b"):
            await lk.room.create_room(api.CreateRoomRequest(name=name))
        await lk.room.delete_room(api.DeleteRoomRequest(room="a"))
        await lk.room.create_room(api.CreateRoomRequest(name="a"))
        events = await sink.wait_for(4)
    # The first delivery failed once and was retried after the 1 s backoff.
    assert sink.attempts == 5
    assert time.monotonic() - t0 >= 1
    room_a = [(e.event, e.room.sid) for e in events if e.room.name == "a"]
    assert [name for name, _ in room_a] == ["room_started", "room_finished", "room_started"]
    assert room_a[0][1] == room_a[1][1] != room_a[2][1]


async def test_shutdown_closes_rooms_and_flushes_webhooks(
    sink: WebhookSink, start_server: ServerFactory
) -> None:
    server = await start_server(webhook_config(sink))
    async with api.LiveKitAPI(url_of(server), API_KEY, API_SECRET) as lk:
        await lk.room.create_room(api.CreateRoomRequest(name="bye"))
    await sink.wait_for(1)
    await server.stop()
    assert sink.names() == ["room_started", "room_finished"]
    assert sink.events[1].room_end_reason == api.RoomEndReason.ROOM_END_SERVER_SHUTDOWN  # type: ignore[attr-defined]


async def test_join_leave_webhook_sequence(sink: WebhookSink, start_server: ServerFactory) -> None:
    from tests.integration.sdk import joined

    server = await start_server(webhook_config(sink) + "room:\n  departure_timeout: 1\n")
    async with joined(server, "hooks", "wendy") as (wendy, _):
        joined_event = await sink.wait_for(2)
        assert [e.event for e in joined_event] == ["room_started", "participant_joined"]
        assert joined_event[1].participant.identity == "wendy"
        assert joined_event[1].participant.sid == wendy.local_participant.sid
        assert joined_event[1].participant.state == api.ParticipantInfo.State.ACTIVE
    events = await sink.wait_for(4)
    assert [e.event for e in events] == [
        "room_started",
        "participant_joined",
        "participant_left",
        "room_finished",
    ]
    left = events[2]
    assert left.participant.identity == "wendy"
    assert left.participant.disconnect_reason == api.DisconnectReason.CLIENT_INITIATED
    assert len({e.room.sid for e in events}) == 1


async def test_connection_aborted_webhook(sink: WebhookSink, start_server: ServerFactory) -> None:
    import aiohttp

    from tests.integration.sdk import join_token

    server = await start_server(webhook_config(sink))
    url = f"{url_of(server, 'ws')}/rtc?access_token={join_token('aborted', 'xena')}"
    async with aiohttp.ClientSession() as session, session.ws_connect(url) as ws:
        await ws.receive(timeout=10)  # JoinResponse; never answer the offer
    events = await sink.wait_for(2)
    assert [e.event for e in events] == ["room_started", "participant_connection_aborted"]
    assert events[1].participant.identity == "xena"
