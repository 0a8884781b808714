"""Every configurable limit, with a clear error when it is hit."""

from __future__ import annotations

import aiohttp
import pytest
from livekit import api
from livekit.protocol import models, rtc

from roomcast.server import Server
from tests.conftest import API_KEY, API_SECRET, ServerFactory, url_of
from tests.integration.sdk import join_token, joined, until
from tests.integration.test_signalling import raw_signal, receive_until, send


async def test_rooms_per_node(start_server: ServerFactory) -> None:
    server = await start_server("limit:\n  max_rooms: 2\n")
    async with api.LiveKitAPI(url_of(server), API_KEY, API_SECRET) as lk:
        await lk.room.create_room(api.CreateRoomRequest(name="one"))
        await lk.room.create_room(api.CreateRoomRequest(name="two"))
        await lk.room.create_room(api.CreateRoomRequest(name="two"))  # existing: fine
        with pytest.raises(api.TwirpError) as err:
            await lk.room.create_room(api.CreateRoomRequest(name="three"))
        assert err.value.code == "resource_exhausted" and "max_rooms" in err.value.message


async def test_join_rates_per_identity_and_refused_joins_per_ip(
    start_server: ServerFactory,
) -> None:
    server = await start_server(
        "limit:\n  joins_per_second_per_ip: 0.001\n  join_burst_per_ip: 2\n"
        "  joins_per_second_per_identity: 0.001\n  join_burst_per_identity: 2\n"
    )
    url = f"{url_of(server, 'ws')}/rtc?access_token="
    async with aiohttp.ClientSession() as session:
        for identity in ("a", "a", "b"):
            ws = await session.ws_connect(url + join_token("rate", identity))
            await ws.close()
        with pytest.raises(aiohttp.WSServerHandshakeError) as err:
            await session.ws_connect(url + join_token("rate", "a"))  # a's third join
        assert err.value.status == 429
        statuses = []
        for _ in range(3):
            with pytest.raises(aiohttp.WSServerHandshakeError) as err:
                await session.ws_connect(url + "garbage")
            statuses.append(err.value.status)
        assert statuses == [401, 401, 429]
        ws = await session.ws_connect(url + join_token("rate", "c"))  # valid: still admitted
        await ws.close()


async def test_tracks_per_participant(start_server: ServerFactory) -> None:
    server = await start_server("limit:\n  num_tracks: 1\n")
    async with raw_signal(server, "tracks", "ann") as ws:
        await receive_until(ws, "offer")
        for cid in ("one", "two"):
            await send(
                ws,
                rtc.SignalRequest(
                    add_track=rtc.AddTrackRequest(
                        cid=cid, type=models.TrackType.AUDIO, source=models.TrackSource.MICROPHONE
                    )
                ),
            )
        assert (await receive_until(ws, "track_published")).track_published.cid == "one"
        refused = (await receive_until(ws, "request_response")).request_response
        assert refused.reason == rtc.RequestResponse.LIMIT_EXCEEDED
        assert refused.add_track.cid == "two"
    assert server.metrics.limit_hits.labels("num_tracks")._value.get() == 1


async def test_oversized_data_packets_are_dropped(start_server: ServerFactory) -> None:
    server: Server = await start_server("limit:\n  max_data_packet_size: 2000\n")
    async with (
        joined(server, "data", "big") as (big, big_events),
        joined(server, "data", "small") as (_, small_events),
    ):
        await big_events.wait("participant_connected", lambda p: p.identity == "small")
        dropped = server.admin.data.packets_dropped
        await big.local_participant.publish_data(b"x" * 5000, topic="t")
        await until(lambda: server.admin.data.packets_dropped > dropped)
        await big.local_participant.publish_data(b"fits", topic="t")
        await small_events.wait("data_received", lambda p: p.data == b"fits")
        assert not [a for a in small_events.all("data_received") if len(a[0].data) == 5000]
