"""`/rtc/v1` driven by a raw WebSocket client (docs/protocol/19-signalling-v1.md): its validate
endpoint, the checks and limits its `join_request` goes through (the same as `/rtc`'s query),
what a join looks like on one PeerConnection, and resumes that change path."""

from __future__ import annotations

import base64
import gzip

import aiohttp
import pytest
from livekit.protocol import models, rtc

from roomcast.client.peer import ClientPeer, DataSection
from roomcast.client.signal import join_request, wrap_join_request
from roomcast.loadtest.participant import receive_section
from roomcast.server import Server
from tests.conftest import ServerFactory, url_of
from tests.integration.sdk import join_token
from tests.integration.test_signalling import raw_signal, receive, send


def plain_request(**fields: object) -> rtc.JoinRequest:
    request = join_request(auto_subscribe=True, adaptive_stream=False)
    for name, value in fields.items():
        if isinstance(value, dict):
            getattr(request, name).update(value)
        else:
            setattr(request, name, value)
    return request


def v1_url(server: Server, token: str, param: str | None, *, validate: bool = False) -> str:
    """`/rtc/v1` (or its validate endpoint) with `join_request=param` (None: left out)."""
    base = url_of(server, "http" if validate else "ws") + "/rtc/v1"
    base += "/validate" if validate else ""
    query = {"access_token": token} | ({"join_request": param} if param is not None else {})
    return str(aiohttp.client.URL(base).with_query(query))


async def validate(server: Server, token: str, param: str | None) -> tuple[int, str, str]:
    """Status, text and CORS header of `/rtc/v1/validate`."""
    async with (
        aiohttp.ClientSession() as session,
        session.get(v1_url(server, token, param, validate=True)) as resp,
    ):
        return resp.status, await resp.text(), resp.headers.get("Access-Control-Allow-Origin", "")


async def kinds_until(
    ws: aiohttp.ClientWebSocketResponse, member: str
) -> tuple[list[str], rtc.SignalResponse]:
    """The kinds of the responses before the first `member`, and that one."""
    seen = []
    while (response := await receive(ws)).WhichOneof("message") != member:
        seen.append(str(response.WhichOneof("message")))
    return seen, response


async def refused_upgrade(server: Server, token: str, param: str | None) -> int:
    async with aiohttp.ClientSession() as session:
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await session.ws_connect(v1_url(server, token, param))
    return refused.value.status


def gzip_bomb() -> str:
    """A WrappedJoinRequest whose 16 MiB of zeros compress to about 16 KiB."""
    compressed = gzip.compress(bytes(16 * 1024 * 1024), compresslevel=9)
    wrapped = rtc.WrappedJoinRequest(
        compression=rtc.WrappedJoinRequest.GZIP, join_request=compressed
    )
    return base64.urlsafe_b64encode(wrapped.SerializeToString()).decode()


async def test_validate_needs_a_readable_join_request_then_answers_as_on_rtc(
    start_server: ServerFactory,
) -> None:
    server: Server = await start_server("room:\n  auto_create: false\n")
    good = join_token("nowhere", "ann")
    plain = wrap_join_request(plain_request())
    # As livekit-server: the join request is required here, and read only for a valid token.
    assert await validate(server, good, None) == (400, "join_request is required", "*")
    status, text, _ = await validate(server, good, "not base64!")
    assert (status, text) == (400, "cannot base64 decode wrapped join request")
    status, text, _ = await validate(server, good, base64.urlsafe_b64encode(b"\xff\xff").decode())
    assert (status, text) == (400, "cannot unmarshal wrapped join request")
    status, text, _ = await validate(server, "garbage", "not base64!")
    assert status == 401 and text.startswith("invalid authorization token")
    # Then the same answers as /rtc/validate (livekit-client tells a missing room from a
    # missing /rtc/v1 by this text, and falls back to /rtc only for the latter).
    assert await validate(server, good, plain) == (404, "requested room does not exist", "*")
    creator = join_token("nowhere", "ann", room_create=True)
    assert await validate(server, creator, plain) == (200, "success", "*")


async def test_join_request_metadata_needs_the_grant_and_fits_the_limits(
    start_server: ServerFactory,
) -> None:
    server: Server = await start_server(
        "limit:\n  max_metadata_size: 100\n  max_attributes_size: 100\n"
    )
    metadata = wrap_join_request(plain_request(metadata="from the join request"))
    attributes = wrap_join_request(plain_request(participant_attributes={"k": "v"}))
    plain_token = join_token("meta", "ann")
    for param in (metadata, attributes):
        assert (await validate(server, plain_token, param))[:2] == (401, "permissions denied")
        assert await refused_upgrade(server, plain_token, param) == 401
    allowed = join_token("meta", "ann", can_update_own_metadata=True)
    too_big = wrap_join_request(plain_request(metadata="m" * 101))
    assert (await validate(server, allowed, too_big))[:2] == (
        400,
        "metadata is larger than 100 bytes",
    )
    too_many = wrap_join_request(plain_request(participant_attributes={"k": "v" * 100}))
    assert (await validate(server, allowed, too_many))[:2] == (
        400,
        "attributes are larger than 100 bytes",
    )
    # A token over the limits is refused on both paths, as livekit-server starts no session
    # for one.
    big_token = join_token("meta", "bea", metadata="t" * 101)
    assert (await validate(server, big_token, wrap_join_request(plain_request())))[0] == 400
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        async with raw_signal(server, "meta", "bea", metadata="t" * 101):
            pass
    assert refused.value.status == 400
    # However well it compresses, a join request is read up to its bound and no further.
    assert (await validate(server, allowed, gzip_bomb()))[:2] == (400, "join request too large")

    request = plain_request(metadata="from the join request", participant_attributes={"k": "v"})
    async with (
        aiohttp.ClientSession() as session,
        session.ws_connect(v1_url(server, allowed, wrap_join_request(request))) as ws,
    ):
        join = (await receive(ws)).join
        assert join.participant.metadata == "from the join request"
        assert dict(join.participant.attributes) == {"k": "v"}


async def test_a_v1_join_answers_the_offer_it_carries_and_never_offers(server: Server) -> None:
    peer = ClientPeer()
    await peer.start()
    try:
        sections = [DataSection(), receive_section("audio")]
        offer = rtc.SessionDescription(type="offer", sdp=peer.create_offer(sections), id=1)
        mic = rtc.AddTrackRequest(
            cid="mic", name="mic", type=models.TrackType.AUDIO, source=models.TrackSource.MICROPHONE
        )
        request = join_request(
            auto_subscribe=True, adaptive_stream=False, add_tracks=[mic], offer=offer
        )
        token = join_token("single", "ann")
        async with (
            aiohttp.ClientSession() as session,
            session.ws_connect(v1_url(server, token, wrap_join_request(request))) as ws,
        ):
            first = await receive(ws)
            assert first.WhichOneof("message") == "join"
            # One PeerConnection, the client's: it is the primary one, whatever it subscribes.
            assert not first.join.subscriber_primary
            seen, answer = await kinds_until(ws, "answer")
            assert "track_published" in seen
            assert answer.answer.id == 1 and "a=setup:passive" in answer.answer.sdp
            peer.set_answer(answer.answer.sdp)
            await peer.wait_connected(10)
            # Nothing is sent on the receive section yet: it is inactive, not in the map.
            assert "a=inactive" in answer.answer.sdp and not answer.answer.mid_to_track_id
            # The server never offers on /rtc/v1, connected or not.
            await send(ws, rtc.SignalRequest(ping_req=rtc.Ping(timestamp=5)))
            seen += (await kinds_until(ws, "pong_resp"))[0]
            assert "offer" not in seen, seen
    finally:
        peer.close()


async def test_refused_v1_joins_count_towards_the_address(start_server: ServerFactory) -> None:
    server: Server = await start_server(
        "limit:\n  joins_per_second_per_ip: 0.001\n  join_burst_per_ip: 2\n"
    )
    token = join_token("rate", "ann")
    statuses = [await refused_upgrade(server, token, "not base64!") for _ in range(3)]
    assert statuses == [400, 400, 429]
    async with aiohttp.ClientSession() as session:  # a valid join is still admitted
        param = wrap_join_request(plain_request())
        async with session.ws_connect(v1_url(server, token, param)) as ws:
            assert (await receive(ws)).WhichOneof("message") == "join"


@pytest.mark.parametrize("first", ["v0", "v1"])
async def test_a_session_resumes_only_on_the_path_it_joined(server: Server, first: str) -> None:
    """The SDKs resume on the path they joined on; one PeerConnection cannot become two (or
    the other way round), so a resume on the other path asks for a full reconnect."""
    token = join_token("paths", "ann")
    async with aiohttp.ClientSession() as session:
        if first == "v0":
            joined = await session.ws_connect(f"{url_of(server, 'ws')}/rtc?access_token={token}")
        else:
            joined = await session.ws_connect(
                v1_url(server, token, wrap_join_request(plain_request()))
            )
        sid = (await receive(joined)).join.participant.sid
        if first == "v0":
            resume = wrap_join_request(plain_request(reconnect=True, participant_sid=sid))
            url = v1_url(server, token, resume)
        else:
            url = f"{url_of(server, 'ws')}/rtc?reconnect=1&sid={sid}&access_token={token}"
        async with session.ws_connect(url) as again:
            leave = (await receive(again)).leave
            assert leave.reason == models.DisconnectReason.STATE_MISMATCH
            assert leave.action == rtc.LeaveRequest.Action.RECONNECT
        await joined.close()


def mic(cid: str) -> rtc.AddTrackRequest:
    return rtc.AddTrackRequest(
        cid=cid, name=cid, type=models.TrackType.AUDIO, source=models.TrackSource.MICROPHONE
    )


async def test_track_requests_in_the_join_request_meet_the_same_checks(
    start_server: ServerFactory,
) -> None:
    """The join request's AddTrackRequests are handled as if sent right after the join: the
    track limit and the publish permission apply as on /rtc (tests/integration/test_limits.py)."""
    server: Server = await start_server("limit:\n  num_tracks: 1\n")
    request = join_request(
        auto_subscribe=True, adaptive_stream=False, add_tracks=[mic("one"), mic("two")]
    )
    async with (
        aiohttp.ClientSession() as session,
        session.ws_connect(
            v1_url(server, join_token("tracks", "ann"), wrap_join_request(request))
        ) as ws,
    ):
        assert (await receive(ws)).WhichOneof("message") == "join"
        _, published = await kinds_until(ws, "track_published")
        assert published.track_published.cid == "one"
        _, refused = await kinds_until(ws, "request_response")
        assert refused.request_response.reason == rtc.RequestResponse.LIMIT_EXCEEDED
        assert refused.request_response.add_track.cid == "two"
    listener = join_token("tracks", "bea", can_publish=False)
    request = join_request(auto_subscribe=True, adaptive_stream=False, add_tracks=[mic("three")])
    async with (
        aiohttp.ClientSession() as session,
        session.ws_connect(v1_url(server, listener, wrap_join_request(request))) as ws,
    ):
        assert (await receive(ws)).WhichOneof("message") == "join"
        _, refused = await kinds_until(ws, "request_response")
        assert refused.request_response.reason == rtc.RequestResponse.NOT_ALLOWED
        assert refused.request_response.add_track.cid == "three"
        room = server.rooms.get("tracks")
        assert room is not None and not room.participants["bea"].tracks
