"""RoomService through the official `livekit-api` client (protobuf) and raw JSON as Node sends."""

from __future__ import annotations

import json
import time

import aiohttp
import pytest
from livekit import api
from livekit.protocol import models

from roomcast.auth import VideoGrant
from roomcast.server import Server
from tests.conftest import API_KEY, API_SECRET, token, url_of

ROOMSERVICE = "/twirp/livekit.RoomService/"


async def post_json(
    server: Server,
    method: str,
    body: object,
    grant: VideoGrant | None,
    *,
    content_type: str = "application/json;charset=UTF-8",
    raw: bytes | None = None,
    auth: str | None = None,
) -> tuple[int, str, dict[str, str]]:
    headers = {"Content-Type": content_type}
    if auth is not None:
        headers["Authorization"] = auth
    elif grant is not None:
        headers["Authorization"] = f"Bearer {token(grant)}"
    data = raw if raw is not None else json.dumps(body).encode()
    async with (
        aiohttp.ClientSession() as session,
        session.post(url_of(server) + ROOMSERVICE + method, data=data, headers=headers) as resp,
    ):
        return resp.status, await resp.text(), dict(resp.headers)


ADMIN = VideoGrant(room_create=True, room_list=True)


async def test_create_list_delete_with_official_client(lkapi: api.LiveKitAPI) -> None:
    before = time.time()
    room = await lkapi.room.create_room(
        api.CreateRoomRequest(name="alpha", max_participants=5, metadata="m1")
    )
    assert room.sid.startswith("RM_")
    assert room.name == "alpha"
    assert room.empty_timeout == 300 and room.departure_timeout == 20
    assert room.max_participants == 5 and room.metadata == "m1"
    assert before - 1 <= room.creation_time <= time.time() + 1
    assert abs(room.creation_time_ms / 1000 - room.creation_time) < 1

    again = await lkapi.room.create_room(api.CreateRoomRequest(name="alpha", empty_timeout=42))
    assert again.sid == room.sid and again.empty_timeout == 42 and again.max_participants == 5

    await lkapi.room.create_room(api.CreateRoomRequest(name="beta"))
    listed = await lkapi.room.list_rooms(api.ListRoomsRequest())
    assert [r.name for r in listed.rooms] == ["alpha", "beta"]
    only = await lkapi.room.list_rooms(api.ListRoomsRequest(names=["beta", "nope"]))
    assert [r.name for r in only.rooms] == ["beta"]

    await lkapi.room.delete_room(api.DeleteRoomRequest(room="alpha"))
    listed = await lkapi.room.list_rooms(api.ListRoomsRequest())
    assert [r.name for r in listed.rooms] == ["beta"]
    with pytest.raises(api.TwirpError) as err:
        await lkapi.room.delete_room(api.DeleteRoomRequest(room="alpha"))
    assert err.value.code == "not_found"


async def test_room_metadata_and_participant_methods(lkapi: api.LiveKitAPI) -> None:
    await lkapi.room.create_room(api.CreateRoomRequest(name="gamma"))
    updated = await lkapi.room.update_room_metadata(
        api.UpdateRoomMetadataRequest(room="gamma", metadata="new")
    )
    assert updated.metadata == "new"
    listed = await lkapi.room.list_participants(api.ListParticipantsRequest(room="gamma"))
    assert list(listed.participants) == []
    await lkapi.room.send_data(
        api.SendDataRequest(room="gamma", data=b"hi", kind=models.DataPacket.Kind.RELIABLE)
    )

    not_found_calls = [
        lkapi.room.get_participant(api.RoomParticipantIdentity(room="gamma", identity="x")),
        lkapi.room.remove_participant(api.RoomParticipantIdentity(room="gamma", identity="x")),
        lkapi.room.mute_published_track(
            api.MuteRoomTrackRequest(room="gamma", identity="x", track_sid="TR_x", muted=True)
        ),
        lkapi.room.update_participant(
            api.UpdateParticipantRequest(room="gamma", identity="x", metadata="m")
        ),
        lkapi.room.update_subscriptions(
            api.UpdateSubscriptionsRequest(room="gamma", identity="x", track_sids=["TR_x"])
        ),
        lkapi.room.list_participants(api.ListParticipantsRequest(room="no-such-room")),
        lkapi.room.update_room_metadata(
            api.UpdateRoomMetadataRequest(room="no-such-room", metadata="m")
        ),
        lkapi.room.send_data(api.SendDataRequest(room="no-such-room", data=b"x")),
    ]
    for call in not_found_calls:
        with pytest.raises(api.TwirpError) as err:
            await call
        assert err.value.code == "not_found"
        assert err.value.status == 404


async def test_json_requests_as_node_sends_them(server: Server) -> None:
    status, text, headers = await post_json(
        server,
        "CreateRoom",
        {"name": "json-room", "emptyTimeout": 60, "maxParticipants": 3},
        ADMIN,
    )
    assert status == 200, text
    assert headers["Content-Type"].startswith("application/json")
    room = json.loads(text)
    # Twirp defaults: proto field names, unpopulated fields included.
    assert room["empty_timeout"] == 60 and room["max_participants"] == 3
    assert room["metadata"] == "" and room["num_participants"] == 0
    assert room["sid"].startswith("RM_")

    status, text, _ = await post_json(
        server, "CreateRoom", {"name": "snake", "departure_timeout": 7}, ADMIN
    )
    assert status == 200 and json.loads(text)["departure_timeout"] == 7

    status, text, _ = await post_json(server, "ListRooms", {}, ADMIN)
    assert status == 200
    assert sorted(r["name"] for r in json.loads(text)["rooms"]) == ["json-room", "snake"]

    admin = VideoGrant(room_admin=True, room="json-room")
    status, text, _ = await post_json(
        server,
        "SendData",
        {"room": "json-room", "data": "aGk=", "kind": "RELIABLE", "topic": "chat"},
        admin,
    )
    assert status == 200 and json.loads(text) == {}
    status, text, _ = await post_json(server, "DeleteRoom", {"room": "json-room"}, ADMIN)
    assert status == 200 and text == "{}"


@pytest.mark.parametrize(
    ("auth", "message"),
    [
        ("Bearer not-a-jwt", "invalid token: "),
        ("Bearer " + token(ADMIN).rsplit(".", 1)[0] + ".c2lnbmF0dXJl", "invalid token: "),
        ("Basic ZGV2a2V5OnNlY3JldA==", "invalid authorization header: it must start with Bearer"),
        ("Bearer ", "permissions denied: no authorization token"),
    ],
)
async def test_refused_tokens_get_twirp_json_errors(
    server: Server, auth: str, message: str
) -> None:
    """Every refusal is a Twirp error body, so the server SDKs can show its message
    (livekit-server answers a bad token in plain text; tests/integration/test_client_errors.py
    shows what the SDKs make of it)."""
    status, text, headers = await post_json(server, "ListRooms", {}, None, auth=auth)
    assert status == 401
    assert headers["Content-Type"] == "application/json"
    body = json.loads(text)
    assert body["code"] == "unauthenticated" and body["msg"].startswith(message), body
    sent = auth.split(" ", 1)[1]
    assert not sent or sent not in body["msg"]  # never echoes the token


async def test_token_validity_rules(server: Server) -> None:
    from roomcast.auth import create_token

    cases = {
        "unknown key": create_token("otherkey", API_SECRET, video=ADMIN),
        "wrong secret": create_token(API_KEY, "not-the-secret", video=ADMIN),
        "expired": create_token(
            API_KEY, API_SECRET, video=ADMIN, now=time.time() - 7200, ttl_seconds=3600
        ),
        "not yet valid": create_token(API_KEY, API_SECRET, video=ADMIN, now=time.time() + 600),
    }
    messages = {}
    for label, bad in cases.items():
        status, text, _ = await post_json(server, "ListRooms", {}, None, auth=f"Bearer {bad}")
        assert status == 401, label
        body = json.loads(text)
        assert body["code"] == "unauthenticated", label
        messages[label] = body["msg"]
    assert messages == {
        "unknown key": "invalid API key",
        "wrong secret": "invalid token: Signature verification failed",
        "expired": "token is expired",
        "not yet valid": "token is not valid yet",
    }
    status, text, _ = await post_json(server, "ListRooms", {}, None)  # no token at all
    assert status == 401
    assert json.loads(text) == {
        "code": "unauthenticated",
        "msg": "permissions denied: no authorization token",
    }


async def test_missing_grants_are_denied(server: Server) -> None:
    cases = [
        ("CreateRoom", {"name": "x"}, VideoGrant(room_list=True)),
        ("ListRooms", {}, VideoGrant(room_create=True)),
        ("DeleteRoom", {"room": "x"}, VideoGrant(room_admin=True, room="x")),
        ("ListParticipants", {"room": "x"}, VideoGrant(room_admin=True, room="other")),
        ("UpdateRoomMetadata", {"room": "x"}, VideoGrant(room_join=True, room="x")),
        ("SendData", {"room": "x"}, VideoGrant(room_admin=True)),
    ]
    for method, body, grant in cases:
        status, text, headers = await post_json(server, method, body, grant)
        assert status == 401, method
        assert headers["Content-Type"] == "application/json"
        assert json.loads(text) == {"code": "unauthenticated", "msg": "permissions denied"}


async def test_bad_input_gets_twirp_errors_and_server_keeps_serving(server: Server) -> None:
    async def expect(code: str, status: int, **kwargs: object) -> None:
        got_status, text, headers = await post_json(server, **kwargs)  # type: ignore[arg-type]
        assert got_status == status, text
        if code:
            assert headers["Content-Type"] == "application/json"
            assert json.loads(text)["code"] == code

    await expect("malformed", 400, method="CreateRoom", body=None, grant=ADMIN, raw=b"{not json")
    await expect(
        "malformed",
        400,
        method="CreateRoom",
        body=None,
        grant=ADMIN,
        raw=b"\xff\xff\xff",
        content_type="application/protobuf",
    )
    await expect(
        "malformed", 400, method="CreateRoom", body={"name": 5, "emptyTimeout": "x"}, grant=ADMIN
    )
    await expect("malformed", 400, method="CreateRoom", body={"emptyTimeout": -1}, grant=ADMIN)
    await expect("bad_route", 404, method="NoSuchMethod", body={}, grant=ADMIN)
    await expect(
        "bad_route", 404, method="CreateRoom", body={}, grant=ADMIN, content_type="text/plain"
    )
    await expect("invalid_argument", 400, method="CreateRoom", body={"name": ""}, grant=ADMIN)
    await expect(
        "invalid_argument", 400, method="CreateRoom", body={"name": "x" * 257}, grant=ADMIN
    )
    await expect(
        "invalid_argument", 400, method="CreateRoom", body={"name": "bad\nname"}, grant=ADMIN
    )
    await expect(
        "invalid_argument",
        400,
        method="CreateRoom",
        body={"name": "big", "metadata": "m" * (512 * 1024 + 1)},
        grant=ADMIN,
    )
    await expect(
        "resource_exhausted",
        413,
        method="CreateRoom",
        body=None,
        grant=ADMIN,
        raw=b"{" + b" " * (10 * 1024 * 1024 + 10) + b"}",
    )

    async with aiohttp.ClientSession() as session:
        async with session.get(url_of(server) + ROOMSERVICE + "ListRooms") as resp:
            assert resp.status == 404
            assert (await resp.json())["code"] == "bad_route"
        async with session.get(url_of(server) + "/") as resp:
            assert resp.status == 200
    status, _, _ = await post_json(server, "CreateRoom", {"name": "still-fine"}, ADMIN)
    assert status == 200


async def test_cors_preflight_and_headers(server: Server) -> None:
    async with aiohttp.ClientSession() as session:
        async with session.options(
            url_of(server) + ROOMSERVICE + "ListRooms",
            headers={"Origin": "http://example.test", "Access-Control-Request-Method": "POST"},
        ) as resp:
            assert resp.status == 204
            assert resp.headers["Access-Control-Allow-Origin"] == "*"
        async with session.get(url_of(server) + "/") as resp:
            assert resp.headers["Access-Control-Allow-Origin"] == "*"


async def test_unimplemented_cloud_methods(lkapi: api.LiveKitAPI, server: Server) -> None:
    grant = VideoGrant(room_admin=True, room="r", destination_room="d")
    status, text, _ = await post_json(
        server, "MoveParticipant", {"room": "r", "identity": "a", "destinationRoom": "d"}, grant
    )
    assert status == 501 and json.loads(text)["code"] == "unimplemented"


def test_official_token_is_accepted_shape() -> None:
    """The official AccessToken writes claims our verifier reads the same way."""
    from roomcast.auth import TokenVerifier

    jwt_text = (
        api.AccessToken(API_KEY, API_SECRET)
        .with_identity("alice")
        .with_name("Alice")
        .with_metadata("meta")
        .with_attributes({"k": "v"})
        .with_grants(api.VideoGrants(room_join=True, room="r", can_publish_sources=["camera"]))
        .to_jwt()
    )
    claims = TokenVerifier({API_KEY: API_SECRET}).verify(jwt_text)
    assert claims.identity == "alice" and claims.name == "Alice"
    assert claims.metadata == "meta" and dict(claims.attributes) == {"k": "v"}
    assert claims.video.room_join and claims.video.room == "r"
    permission = claims.video.to_permission()
    assert permission.can_publish and permission.can_subscribe and permission.can_publish_data
    assert list(permission.can_publish_sources) == [models.TrackSource.CAMERA]
    assert not permission.can_update_metadata
