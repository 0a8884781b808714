"""A small RoomService client: Twirp over aiohttp with livekit-protocol's messages.

What `roomcast room …` uses, so the commands work from a plain `pip install roomcast` (the
official `livekit-api` is only a test dependency). Requests and responses are protobuf
(``application/protobuf``); errors come back as Twirp's JSON ``{"code", "msg"}``
(docs/protocol/08-server-api.md §8.2) and are raised as `ApiError` with that code. Each call
signs a short-lived token with the grant the method needs, as the server SDKs do (§8.3):
roomCreate to create and delete rooms, roomList to list them, roomAdmin of the room otherwise.
"""

from __future__ import annotations

import errno
import json
import socket
from collections.abc import Sequence
from types import TracebackType
from typing import TypeVar
from urllib.parse import urlsplit, urlunsplit

import aiohttp
from google.protobuf.message import DecodeError, Message
from livekit.protocol import models
from livekit.protocol import room as room_pb

from roomcast.auth import VideoGrant, create_token

SERVICE = "livekit.RoomService"
PROTOBUF = "application/protobuf"
TOKEN_TTL = 600  # seconds: one call, with room for a slow server
M = TypeVar("M", bound=Message)


class ApiError(Exception):
    """A refused or failed call. ``code`` is Twirp's ("not_found", "unauthenticated",
    "permission_denied" …) or "unreachable" when no server answered; ``status`` the HTTP
    status (0 without an answer)."""

    def __init__(self, code: str, message: str, status: int = 0) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status


def http_url(url: str) -> str:
    """``ws://host:port`` (a LiveKit URL) → ``http://host:port``; http(s) URLs unchanged."""
    parts = urlsplit(url if "://" in url else f"http://{url}")
    scheme = {"ws": "http", "wss": "https"}.get(parts.scheme, parts.scheme)
    if scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"not a LiveKit server URL: {url!r} (expected ws://host:port)")
    return urlunsplit((scheme, parts.netloc, parts.path.rstrip("/"), "", ""))


class RoomServiceClient:
    """``async with RoomServiceClient(url, key, secret) as rooms: await rooms.list_rooms()``."""

    def __init__(
        self,
        url: str,
        api_key: str,
        api_secret: str,
        *,
        session: aiohttp.ClientSession | None = None,
        timeout: float = 10.0,
    ) -> None:
        self.url = http_url(url)
        self._key = api_key
        self._secret = api_secret
        self._session = session
        self._own_session = session is None
        self._timeout = aiohttp.ClientTimeout(total=timeout)

    async def __aenter__(self) -> RoomServiceClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        if self._own_session and self._session is not None:
            await self._session.close()
        self._session = None

    # -- rooms -------------------------------------------------------------------------------
    async def create_room(self, request: room_pb.CreateRoomRequest) -> models.Room:
        return await self._call("CreateRoom", request, models.Room(), VideoGrant(room_create=True))

    async def list_rooms(self, names: Sequence[str] = ()) -> list[models.Room]:
        request = room_pb.ListRoomsRequest(names=list(names))
        response = await self._call(
            "ListRooms", request, room_pb.ListRoomsResponse(), VideoGrant(room_list=True)
        )
        return list(response.rooms)

    async def delete_room(self, room: str) -> None:
        request = room_pb.DeleteRoomRequest(room=room)
        await self._call(
            "DeleteRoom", request, room_pb.DeleteRoomResponse(), VideoGrant(room_create=True)
        )

    async def update_room_metadata(self, room: str, metadata: str) -> models.Room:
        request = room_pb.UpdateRoomMetadataRequest(room=room, metadata=metadata)
        return await self._call("UpdateRoomMetadata", request, models.Room(), _admin(room))

    # -- participants ------------------------------------------------------------------------
    async def list_participants(self, room: str) -> list[models.ParticipantInfo]:
        request = room_pb.ListParticipantsRequest(room=room)
        response = await self._call(
            "ListParticipants", request, room_pb.ListParticipantsResponse(), _admin(room)
        )
        return list(response.participants)

    async def get_participant(self, room: str, identity: str) -> models.ParticipantInfo:
        request = room_pb.RoomParticipantIdentity(room=room, identity=identity)
        return await self._call("GetParticipant", request, models.ParticipantInfo(), _admin(room))

    async def remove_participant(self, room: str, identity: str) -> None:
        request = room_pb.RoomParticipantIdentity(room=room, identity=identity)
        await self._call(
            "RemoveParticipant", request, room_pb.RemoveParticipantResponse(), _admin(room)
        )

    async def update_participant(
        self, request: room_pb.UpdateParticipantRequest
    ) -> models.ParticipantInfo:
        return await self._call(
            "UpdateParticipant", request, models.ParticipantInfo(), _admin(request.room)
        )

    async def mute_published_track(
        self, room: str, identity: str, track_sid: str, muted: bool
    ) -> models.TrackInfo:
        request = room_pb.MuteRoomTrackRequest(
            room=room, identity=identity, track_sid=track_sid, muted=muted
        )
        response = await self._call(
            "MutePublishedTrack", request, room_pb.MuteRoomTrackResponse(), _admin(room)
        )
        return response.track

    async def update_subscriptions(
        self, room: str, identity: str, track_sids: Sequence[str], subscribe: bool
    ) -> None:
        request = room_pb.UpdateSubscriptionsRequest(
            room=room, identity=identity, track_sids=list(track_sids), subscribe=subscribe
        )
        await self._call(
            "UpdateSubscriptions", request, room_pb.UpdateSubscriptionsResponse(), _admin(room)
        )

    async def send_data(self, request: room_pb.SendDataRequest) -> None:
        await self._call("SendData", request, room_pb.SendDataResponse(), _admin(request.room))

    # -- transport ---------------------------------------------------------------------------
    async def _call(self, method: str, request: Message, response: M, grant: VideoGrant) -> M:
        token = create_token(self._key, self._secret, video=grant, ttl_seconds=TOKEN_TTL)
        if self._session is None:
            self._session = aiohttp.ClientSession()
        target = f"{self.url}/twirp/{SERVICE}/{method}"
        headers = {"Authorization": f"Bearer {token}", "Content-Type": PROTOBUF}
        try:
            async with self._session.post(
                target, data=request.SerializeToString(), headers=headers, timeout=self._timeout
            ) as reply:
                body = await reply.read()
                status = reply.status
        except TimeoutError:
            raise ApiError("unreachable", f"{self.url} did not answer {method} in time") from None
        except aiohttp.ClientConnectorError as exc:
            reason = _reason(exc.os_error)
            raise ApiError("unreachable", f"cannot reach {self.url} ({reason})") from None
        except (aiohttp.ClientError, OSError) as exc:
            raise ApiError("unreachable", f"cannot reach {self.url} ({exc})") from None
        if status != 200:
            raise _error_of(status, body)
        try:
            response.ParseFromString(body)
        except DecodeError as exc:
            raise ApiError("malformed", f"{method}: the answer does not decode: {exc}") from None
        return response


def _reason(error: OSError) -> str:
    if error.errno == errno.ECONNREFUSED:
        return "connection refused"
    if isinstance(error, socket.gaierror):
        return f"unknown host: {error.strerror}"
    return error.strerror or str(error)


def _admin(room: str) -> VideoGrant:
    return VideoGrant(room_admin=True, room=room)


def _error_of(status: int, body: bytes) -> ApiError:
    """Twirp's JSON error, or what an answer from something else (a proxy) said."""
    text = body.decode("utf-8", "replace").strip()
    try:
        error = json.loads(text)
    except ValueError:
        error = None
    if isinstance(error, dict) and isinstance(error.get("msg"), str):
        return ApiError(str(error.get("code") or "unknown"), error["msg"], status)
    return ApiError("unknown", f"HTTP {status}: {text[:200] or 'no body'}", status)
