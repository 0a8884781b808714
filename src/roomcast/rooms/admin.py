"""Operations on live rooms and participants that the server API asks for
(docs/protocol/08-server-api.md §8.3).

Signalling performs the same operations for participants acting on themselves, so both go
through the room model here rather than each keeping their own copy of participant state.
"""

from __future__ import annotations

from livekit.protocol import models, rtc

from roomcast.config import Config
from roomcast.errors import (
    FailedPreconditionError,
    InvalidArgumentError,
    TrackNotFoundError,
)
from roomcast.rooms.data import DataExchange
from roomcast.rooms.manager import RoomManager
from roomcast.rooms.participant import Participant

Reason = models.DisconnectReason
# Our cap on a SendData payload, well inside one data channel message to any client
# (livekit-server has none but its API body limit: docs/protocol/06-data-packets.md §6.5).
MAX_DATA_PAYLOAD = 64 * 1024


class RoomAdmin:
    def __init__(self, config: Config, rooms: RoomManager, data: DataExchange) -> None:
        self.config = config
        self.rooms = rooms
        self.data = data

    def participant(self, room_name: str, identity: str) -> Participant:
        return self.rooms.require(room_name).get_participant(identity)

    def remove_participant(self, room_name: str, identity: str) -> None:
        room = self.rooms.require(room_name)
        participant = room.get_participant(identity)
        if participant.session is not None:
            participant.session.disconnect(
                Reason.PARTICIPANT_REMOVED, rtc.LeaveRequest.Action.DISCONNECT
            )
        room.remove_participant(participant, Reason.PARTICIPANT_REMOVED)

    def mute_track(
        self, room_name: str, identity: str, track_sid: str, muted: bool
    ) -> models.TrackInfo:
        participant = self.participant(room_name, identity)
        track = participant.tracks.get(track_sid)
        if track is None:
            raise TrackNotFoundError(track_sid)
        if not muted and not self.config.room.enable_remote_unmute:
            raise FailedPreconditionError("remote unmute not enabled")
        if participant.session is not None:
            participant.session.mute_track(track_sid, muted)
        elif track.muted != muted:
            track.muted = muted
            participant.touch()
        return track

    def check_participant_fields(
        self, metadata: str, name: str, attributes: dict[str, str]
    ) -> None:
        limits = self.config.limit
        if len(metadata.encode()) > limits.max_metadata_size:
            raise InvalidArgumentError(f"metadata is larger than {limits.max_metadata_size} bytes")
        if len(name) > limits.max_participant_name_length:
            raise InvalidArgumentError(
                f"name is longer than {limits.max_participant_name_length} characters"
            )
        size = sum(len(k.encode()) + len(v.encode()) for k, v in attributes.items())
        if size > limits.max_attributes_size:
            raise InvalidArgumentError(
                f"attributes are larger than {limits.max_attributes_size} bytes"
            )

    def update_participant(
        self,
        room_name: str,
        identity: str,
        *,
        metadata: str = "",
        name: str = "",
        attributes: dict[str, str] | None = None,
        permission: models.ParticipantPermission | None = None,
    ) -> Participant:
        """Empty metadata/name mean unchanged; attributes merge (an empty value deletes)."""
        participant = self.participant(room_name, identity)
        self.check_participant_fields(metadata, name, attributes or {})
        changed = apply_participant_update(participant, metadata, name, attributes or {})
        if permission is not None and permission != participant.permission:
            participant.permission = models.ParticipantPermission()
            participant.permission.CopyFrom(permission)
            changed = True
        if changed:
            participant.touch()
        return participant

    def update_subscriptions(
        self, room_name: str, identity: str, track_sids: list[str], subscribe: bool
    ) -> None:
        participant = self.participant(room_name, identity)
        if participant.session is not None:
            participant.session.update_subscriptions(track_sids, subscribe)
        else:
            room = self.rooms.require(room_name)
            for sid in track_sids:
                if room.has_track(sid):  # never keep what a caller makes up (memory)
                    participant.desired_subscriptions[sid] = subscribe

    def send_data(
        self,
        room_name: str,
        *,
        payload: bytes,
        reliable: bool,
        destination_sids: list[str],
        destination_identities: list[str],
        topic: str | None,
        nonce: bytes,
    ) -> None:
        room = self.rooms.require(room_name)
        limit = MAX_DATA_PAYLOAD
        if len(payload) > limit:
            raise InvalidArgumentError(f"data is larger than {limit} bytes")
        if nonce and len(nonce) != 16:
            raise InvalidArgumentError("nonce must be 16 bytes")
        kind = models.DataPacket.Kind.RELIABLE if reliable else models.DataPacket.Kind.LOSSY
        user = models.UserPacket(
            payload=payload,
            destination_sids=destination_sids,
            destination_identities=destination_identities,
            nonce=nonce,
        )
        if topic is not None:
            user.topic = topic
        packet = models.DataPacket(
            kind=kind, user=user, destination_identities=destination_identities
        )
        room.deliver_data(packet, reliable, sender=None)

    async def perform_rpc(
        self, room_name: str, identity: str, method: str, payload: str, timeout_ms: int
    ) -> str:
        participant = self.participant(room_name, identity)
        return await self.data.perform_rpc(participant, method, payload, timeout_ms)


def apply_participant_update(
    participant: Participant, metadata: str, name: str, attributes: dict[str, str]
) -> bool:
    changed = False
    if metadata and metadata != participant.metadata:
        participant.metadata = metadata
        changed = True
    if name and name != participant.name:
        participant.name = name
        changed = True
    for key, value in attributes.items():
        if value:
            if participant.attributes.get(key) != value:
                participant.attributes[key] = value
                changed = True
        elif key in participant.attributes:
            del participant.attributes[key]
            changed = True
    return changed
