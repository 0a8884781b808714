"""The signalling endpoints driven by a raw WebSocket client: validation, framing, bad input."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import aiohttp
import pytest
from livekit.protocol import models, rtc

from roomcast.auth import VideoGrant
from roomcast.rooms.contracts import JoinOptions
from roomcast.server import Server
from tests.conftest import ServerFactory, token, url_of
from tests.fakes import FakeSink
from tests.integration.sdk import join_token, until


@asynccontextmanager
async def raw_signal(
    server: Server, room: str, identity: str, **grant: object
) -> AsyncIterator[aiohttp.ClientWebSocketResponse]:
    url = f"{url_of(server, 'ws')}/rtc?access_token={join_token(room, identity, **grant)}"
    async with aiohttp.ClientSession() as session, session.ws_connect(url) as ws:
        yield ws


async def receive(ws: aiohttp.ClientWebSocketResponse) -> rtc.SignalResponse:
    message = await ws.receive(timeout=10)
    assert message.type == aiohttp.WSMsgType.BINARY, message
    response = rtc.SignalResponse()
    response.ParseFromString(message.data)
    return response


async def receive_until(ws: aiohttp.ClientWebSocketResponse, member: str) -> rtc.SignalResponse:
    while True:
        response = await receive(ws)
        if response.WhichOneof("message") == member:
            return response


async def send(ws: aiohttp.ClientWebSocketResponse, request: rtc.SignalRequest) -> None:
    await ws.send_bytes(request.SerializeToString())


async def test_join_response_first_then_subscriber_offer(server: Server) -> None:
    async with raw_signal(server, "sig", "ann", can_update_own_metadata=True) as ws:
        first = await receive(ws)
        assert first.WhichOneof("message") == "join"
        join = first.join
        assert join.room.name == "sig" and join.room.sid.startswith("RM_")
        assert join.participant.sid.startswith("PA_") and join.participant.identity == "ann"
        assert join.participant.permission.can_publish
        assert join.participant.permission.can_update_metadata
        assert join.server_info.version and join.server_version
        assert join.ping_interval > 0 and join.ping_timeout > 0
        assert join.subscriber_primary
        offer = (await receive_until(ws, "offer")).offer
        assert offer.type == "offer" and "m=application" in offer.sdp
        assert "a=ice-lite" in offer.sdp and "a=setup:actpass" in offer.sdp

        await send(ws, rtc.SignalRequest(ping=123))
        assert (await receive_until(ws, "pong")).pong > 1_600_000_000_000  # milliseconds
        await send(ws, rtc.SignalRequest(ping_req=rtc.Ping(timestamp=42, rtt=3)))
        pong = (await receive_until(ws, "pong_resp")).pong_resp
        assert pong.last_ping_timestamp == 42 and pong.timestamp > 0

        await send(
            ws,
            rtc.SignalRequest(
                add_track=rtc.AddTrackRequest(
                    cid="mic-1",
                    name="mic",
                    type=models.TrackType.AUDIO,
                    source=models.TrackSource.MICROPHONE,
                )
            ),
        )
        published = (await receive_until(ws, "track_published")).track_published
        assert published.cid == "mic-1" and published.track.sid.startswith("TR_")

        await send(
            ws,
            rtc.SignalRequest(
                update_metadata=rtc.UpdateParticipantMetadata(metadata="m", request_id=7)
            ),
        )
        update = (await receive_until(ws, "update")).update
        assert update.participants[0].metadata == "m"
        answer = (await receive_until(ws, "request_response")).request_response
        assert answer.request_id == 7 and answer.reason == rtc.RequestResponse.OK

        async with raw_signal(server, "sig", "bea") as other:  # no canUpdateOwnMetadata
            await receive_until(other, "offer")
            await send(
                other,
                rtc.SignalRequest(
                    update_metadata=rtc.UpdateParticipantMetadata(metadata="nope", request_id=9)
                ),
            )
            refused = (await receive_until(other, "request_response")).request_response
            assert refused.request_id == 9 and refused.reason == rtc.RequestResponse.NOT_ALLOWED
            assert refused.update_metadata.metadata == "nope"

        await send(
            ws,
            rtc.SignalRequest(
                leave=rtc.LeaveRequest(reason=models.DisconnectReason.CLIENT_INITIATED)
            ),
        )
        leave = (await receive_until(ws, "leave")).leave
        assert leave.action == rtc.LeaveRequest.Action.DISCONNECT
        assert (await ws.receive(timeout=10)).type in (
            aiohttp.WSMsgType.CLOSE,
            aiohttp.WSMsgType.CLOSED,
            aiohttp.WSMsgType.CLOSING,
        )


async def test_http_validation_before_upgrade(start_server: ServerFactory) -> None:
    server = await start_server("room:\n  auto_create: false\n")
    base = url_of(server)
    good = join_token("exists", "ann")
    async with aiohttp.ClientSession() as session:

        async def get(path: str, **kwargs: object) -> tuple[int, str, dict[str, str]]:
            async with session.get(base + path, **kwargs) as resp:  # type: ignore[arg-type]
                return resp.status, await resp.text(), dict(resp.headers)

        status, _, headers = await get("/rtc/v1/validate", params={"access_token": good})
        assert status == 404 and headers["Access-Control-Allow-Origin"] == "*"
        assert (await get("/rtc/v1"))[0] == 404
        assert (await get("/rtc", params={"access_token": good}))[0] == 404  # not an upgrade

        status, text, headers = await get("/rtc/validate", params={"access_token": good})
        assert (status, text) == (404, "requested room does not exist")
        assert headers["Access-Control-Allow-Origin"] == "*"
        status, text, _ = await get(
            "/rtc/validate",
            params={
                "access_token": token(
                    VideoGrant(room_join=True, room="exists", room_create=True), identity="ann"
                )
            },
        )
        assert (status, text) == (200, "success")
        status, text, _ = await get("/rtc/validate", params={"access_token": "garbage"})
        assert status == 401 and text.startswith("invalid authorization token")
        assert (await get("/rtc/validate"))[:2] == (401, "permissions denied")
        status, _, _ = await get("/rtc/validate", headers={"Authorization": "Basic abc"})
        assert status == 401
        no_join = token(VideoGrant(room="exists"), identity="ann")
        assert (await get("/rtc/validate", params={"access_token": no_join}))[0] == 401
        no_identity = token(VideoGrant(room_join=True, room="exists", room_create=True))
        status, text, _ = await get("/rtc/validate", params={"access_token": no_identity})
        assert (status, text) == (400, "identity cannot be empty")
        try:
            async with session.ws_connect(
                f"{url_of(server, 'ws')}/rtc", headers={"Authorization": f"Bearer {good}"}
            ):
                raise AssertionError("upgrade should be refused")
        except aiohttp.WSServerHandshakeError as exc:
            assert exc.status == 404


async def test_bad_frames_close_only_that_participant(server: Server) -> None:
    async with raw_signal(server, "bad", "good-one") as good:
        await receive_until(good, "offer")
        cases: list[tuple[str, bytes | str, int]] = [
            ("garbage", b"\xff\xff\xff\xff", 1007),
            ("bad json", "{nope", 1007),
            ("oversized", b"\x0a" + b"\x00" * (2 * 1024 * 1024 + 10), 1009),
        ]
        for identity, frame, code in cases:
            async with raw_signal(server, "bad", identity) as ws:
                await receive_until(ws, "offer")
                if isinstance(frame, str):
                    await ws.send_str(frame)
                else:
                    await ws.send_bytes(frame)
                while (message := await ws.receive(timeout=10)).type == aiohttp.WSMsgType.BINARY:
                    pass
                assert message.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
                assert ws.close_code == code, identity

        # Unknown oneof members (a field number from the future) are ignored.
        async with raw_signal(server, "bad", "future") as ws:
            await receive_until(ws, "offer")
            await ws.send_bytes(b"\xc2\x3e\x03abc" + rtc.SignalRequest(ping=1).SerializeToString())
            assert (await receive_until(ws, "pong")).pong > 0

        # An offer whose SDP does not parse: a full-reconnect leave for that participant only.
        async with raw_signal(server, "bad", "bad-sdp") as ws:
            await receive_until(ws, "offer")
            await send(
                ws,
                rtc.SignalRequest(
                    offer=rtc.SessionDescription(type="offer", sdp="this is not sdp", id=1)
                ),
            )
            leave = (await receive_until(ws, "leave")).leave
            assert leave.reason == models.DisconnectReason.STATE_MISMATCH
            assert leave.action == rtc.LeaveRequest.Action.RECONNECT

        # Messages that make no sense yet (an answer before any offer exchange, a trickle for
        # a PC that does not exist) are ignored.
        async with raw_signal(server, "bad", "early") as ws:
            await receive(ws)  # join
            await send(
                ws,
                rtc.SignalRequest(
                    trickle=rtc.TrickleRequest(
                        candidateInit="{}", target=rtc.SignalTarget.PUBLISHER
                    )
                ),
            )
            await send(
                ws,
                rtc.SignalRequest(
                    trickle=rtc.TrickleRequest(
                        candidateInit="not json", target=rtc.SignalTarget.SUBSCRIBER
                    )
                ),
            )
            await send(ws, rtc.SignalRequest(ping=5))
            assert (await receive_until(ws, "pong")).pong > 0

        await send(good, rtc.SignalRequest(ping=1))
        assert (await receive_until(good, "pong")).pong > 0


async def test_room_full_is_refused_at_the_upgrade(start_server: ServerFactory) -> None:
    server = await start_server("room:\n  max_participants: 1\n")
    async with raw_signal(server, "full", "first") as first:
        assert (await receive(first)).WhichOneof("message") == "join"
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            async with raw_signal(server, "full", "second"):
                pass
        assert refused.value.status == 403


async def test_room_filled_after_the_check_gets_a_join_failure_leave(
    start_server: ServerFactory,
) -> None:
    """The race the check before the upgrade cannot close: a join that passed it while the
    room still had a seat, admitted after another took the seat. It gets
    LeaveRequest{JOIN_FAILURE}, as livekit-server sends for a full room."""
    server = await start_server("room:\n  max_participants: 1\n")
    async with raw_signal(server, "full", "first") as first:
        assert (await receive(first)).WhichOneof("message") == "join"
        late = FakeSink()  # the WebSocket of the join that was checked before "first" came
        claims = server.verifier.verify(join_token("full", "second"))
        assert await server.sessions.connect(claims, JoinOptions(), late) is None
        (leave,) = late.of("leave")
        assert leave.leave.reason == models.DisconnectReason.JOIN_FAILURE
        assert late.closed
        assert list(server.rooms.get("full").participants) == ["first"]  # type: ignore[union-attr]


async def test_resume_of_unknown_session_asks_for_full_reconnect(server: Server) -> None:
    url = (
        f"{url_of(server, 'ws')}/rtc?reconnect=1&sid=PA_nothere"
        f"&access_token={join_token('resume', 'ghost')}"
    )
    async with aiohttp.ClientSession() as session, session.ws_connect(url) as ws:
        response = await receive(ws)
        assert response.WhichOneof("message") == "leave"
        assert response.leave.reason == models.DisconnectReason.STATE_MISMATCH
        assert response.leave.action == rtc.LeaveRequest.Action.RECONNECT


async def test_ping_timeout_closes_a_silent_connection(
    server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A client that stops sending anything (no ping) is cut off after the ping timeout."""
    from roomcast.rooms import session as session_module

    monkeypatch.setattr(session_module, "PING_DEADLINE", 0.5)
    async with raw_signal(server, "quiet", "mute") as ws:
        await receive_until(ws, "join")
        message = await ws.receive(timeout=10)
        while message.type == aiohttp.WSMsgType.BINARY:  # the offer, the refresh token, …
            message = await ws.receive(timeout=10)
        assert message.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED), message
        assert message.extra == "ping timeout" or ws.closed

    def gone() -> bool:
        room = server.rooms.get("quiet")
        return room is None or "mute" not in room.participants

    await until(gone)  # never ACTIVE: removed once its signalling closed


async def test_pings_keep_a_connection_open(
    server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    from roomcast.rooms import session as session_module

    monkeypatch.setattr(session_module, "PING_DEADLINE", 0.5)
    async with raw_signal(server, "chatty", "talker") as ws:
        await receive_until(ws, "join")
        for _ in range(6):  # 1.5 s of pings every 0.25 s: three deadlines' worth
            await send(ws, rtc.SignalRequest(ping=1))
            await receive_until(ws, "pong")
            await asyncio.sleep(0.25)  # the client's ping interval
        assert not ws.closed
