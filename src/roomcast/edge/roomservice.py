"""RoomService handlers: one function per Twirp method, each with its grant check
(docs/protocol/08-server-api.md).

Handlers take the verified claims and the decoded request and return the response message;
domain errors are mapped to Twirp codes by the dispatcher in ``edge.api``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from google.protobuf.message import Message
from livekit.protocol import models
from livekit.protocol import room as room_pb

from roomcast.auth import Claims
from roomcast.errors import InvalidArgumentError, PermissionDeniedError, UnimplementedError
from roomcast.rooms.admin import RoomAdmin

Handler = Callable[[RoomAdmin, Claims, Any], Awaitable[Message]]


@dataclass(frozen=True, slots=True)
class Method:
    request_type: type[Message]
    handler: Handler


def _require_create(claims: Claims) -> None:
    if not claims.video.room_create:
        raise PermissionDeniedError()


def _require_list(claims: Claims) -> None:
    if not claims.video.room_list:
        raise PermissionDeniedError()


def _require_admin(claims: Claims, room: str) -> None:
    if not claims.video.is_admin_of(room):
        raise PermissionDeniedError()


def _require_field(value: str, name: str) -> None:
    if not value:
        raise InvalidArgumentError(f"{name} is required")


async def create_room(admin: RoomAdmin, claims: Claims, req: room_pb.CreateRoomRequest) -> Message:
    _require_create(claims)
    room = admin.rooms.create(
        req.name,
        empty_timeout=req.empty_timeout,
        departure_timeout=req.departure_timeout,
        max_participants=req.max_participants,
        metadata=req.metadata,
    )
    return room.to_proto()


async def list_rooms(admin: RoomAdmin, claims: Claims, req: room_pb.ListRoomsRequest) -> Message:
    _require_list(claims)
    rooms = admin.rooms.list(list(req.names))
    return room_pb.ListRoomsResponse(rooms=[r.to_proto() for r in rooms])


async def delete_room(admin: RoomAdmin, claims: Claims, req: room_pb.DeleteRoomRequest) -> Message:
    # DeleteRoom needs roomCreate, not roomAdmin (docs/protocol/08-server-api.md §8.3)
    _require_create(claims)
    _require_field(req.room, "room")
    admin.rooms.delete(req.room)
    return room_pb.DeleteRoomResponse()


async def update_room_metadata(
    admin: RoomAdmin, claims: Claims, req: room_pb.UpdateRoomMetadataRequest
) -> Message:
    _require_admin(claims, req.room)
    return admin.rooms.update_metadata(req.room, req.metadata).to_proto()


async def list_participants(
    admin: RoomAdmin, claims: Claims, req: room_pb.ListParticipantsRequest
) -> Message:
    _require_admin(claims, req.room)
    room = admin.rooms.require(req.room)
    return room_pb.ListParticipantsResponse(
        participants=[p.to_proto() for p in room.live_participants()]
    )


async def get_participant(
    admin: RoomAdmin, claims: Claims, req: room_pb.RoomParticipantIdentity
) -> Message:
    _require_admin(claims, req.room)
    return admin.rooms.require(req.room).get_participant(req.identity).to_proto()


async def remove_participant(
    admin: RoomAdmin, claims: Claims, req: room_pb.RoomParticipantIdentity
) -> Message:
    _require_admin(claims, req.room)
    admin.remove_participant(req.room, req.identity)
    return room_pb.RemoveParticipantResponse()


async def mute_published_track(
    admin: RoomAdmin, claims: Claims, req: room_pb.MuteRoomTrackRequest
) -> Message:
    _require_admin(claims, req.room)
    track = admin.mute_track(req.room, req.identity, req.track_sid, req.muted)
    return room_pb.MuteRoomTrackResponse(track=track)


async def update_participant(
    admin: RoomAdmin, claims: Claims, req: room_pb.UpdateParticipantRequest
) -> Message:
    _require_admin(claims, req.room)
    participant = admin.update_participant(
        req.room,
        req.identity,
        metadata=req.metadata,
        name=req.name,
        attributes=dict(req.attributes),
        permission=req.permission if req.HasField("permission") else None,
    )
    return participant.to_proto()


async def update_subscriptions(
    admin: RoomAdmin, claims: Claims, req: room_pb.UpdateSubscriptionsRequest
) -> Message:
    _require_admin(claims, req.room)
    track_sids = list(req.track_sids)
    for entry in req.participant_tracks:
        track_sids.extend(entry.track_sids)
    admin.update_subscriptions(req.room, req.identity, track_sids, req.subscribe)
    return room_pb.UpdateSubscriptionsResponse()


async def send_data(admin: RoomAdmin, claims: Claims, req: room_pb.SendDataRequest) -> Message:
    _require_admin(claims, req.room)
    admin.send_data(
        req.room,
        payload=req.data,
        reliable=req.kind == models.DataPacket.Kind.RELIABLE,
        destination_sids=list(req.destination_sids),
        destination_identities=list(req.destination_identities),
        topic=req.topic if req.HasField("topic") else None,
        nonce=req.nonce,
    )
    return room_pb.SendDataResponse()


async def perform_rpc(admin: RoomAdmin, claims: Claims, req: room_pb.PerformRpcRequest) -> Message:
    _require_admin(claims, req.room)
    _require_field(req.destination_identity, "destination_identity")
    _require_field(req.method, "method")
    payload = await admin.perform_rpc(
        req.room,
        req.destination_identity,
        req.method,
        req.payload,
        req.response_timeout_ms,
    )
    return room_pb.PerformRpcResponse(payload=payload)


async def not_implemented(admin: RoomAdmin, claims: Claims, req: Any) -> Message:
    _require_admin(claims, req.room)
    # Cloud-only in LiveKit too (docs/protocol/08-server-api.md §8.3).
    raise UnimplementedError("not implemented")


METHODS: dict[str, Method] = {
    "CreateRoom": Method(room_pb.CreateRoomRequest, create_room),
    "ListRooms": Method(room_pb.ListRoomsRequest, list_rooms),
    "DeleteRoom": Method(room_pb.DeleteRoomRequest, delete_room),
    "UpdateRoomMetadata": Method(room_pb.UpdateRoomMetadataRequest, update_room_metadata),
    "ListParticipants": Method(room_pb.ListParticipantsRequest, list_participants),
    "GetParticipant": Method(room_pb.RoomParticipantIdentity, get_participant),
    "RemoveParticipant": Method(room_pb.RoomParticipantIdentity, remove_participant),
    "MutePublishedTrack": Method(room_pb.MuteRoomTrackRequest, mute_published_track),
    "UpdateParticipant": Method(room_pb.UpdateParticipantRequest, update_participant),
    "UpdateSubscriptions": Method(room_pb.UpdateSubscriptionsRequest, update_subscriptions),
    "SendData": Method(room_pb.SendDataRequest, send_data),
    "PerformRpc": Method(room_pb.PerformRpcRequest, perform_rpc),
    "ForwardParticipant": Method(room_pb.ForwardParticipantRequest, not_implemented),
    "MoveParticipant": Method(room_pb.MoveParticipantRequest, not_implemented),
}
