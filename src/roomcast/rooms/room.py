"""A room: its settings, its participants, and the events it emits
(docs/protocol/11-room-lifecycle.md)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from livekit.protocol import models

from roomcast.errors import ParticipantNotFoundError, RoomFullError
from roomcast.ids import ROOM_PREFIX, new_sid
from roomcast.rooms.participant import Participant, State


@dataclass(frozen=True, slots=True)
class RoomEvent:
    """Something webhooks and telemetry care about, with protos snapshotted at emit time."""

    name: str  # webhook event name: room_started, participant_joined, ...
    room: models.Room
    participant: models.ParticipantInfo | None = None
    track: models.TrackInfo | None = None
    end_reason: int = 0
    created_at: float = field(default_factory=time.time)


EventSink = Callable[[RoomEvent], None]


@dataclass
class RoomSettings:
    empty_timeout: int
    departure_timeout: int
    max_participants: int = 0
    metadata: str = ""
    enabled_codecs: list[str] = field(default_factory=list)


class Room:
    def __init__(self, name: str, settings: RoomSettings, emit: EventSink) -> None:
        self.name = name
        self.sid = new_sid(ROOM_PREFIX)
        self.settings = settings
        self.created_at = time.time()
        self.version = 1
        self.participants: dict[str, Participant] = {}
        self.last_left_at: float | None = None
        self.closed = False
        self._emit = emit
        # Called when a participant's info changes, to broadcast it (set by signalling).
        self.on_participant_changed: Callable[[Room, Participant], None] | None = None
        self.on_room_updated: Callable[[Room], None] | None = None

    # -- views ------------------------------------------------------------------------------
    @property
    def metadata(self) -> str:
        return self.settings.metadata

    def live_participants(self) -> Iterable[Participant]:
        return (p for p in self.participants.values() if p.state != State.DISCONNECTED)

    @property
    def num_participants(self) -> int:
        return sum(1 for p in self.live_participants() if not p.is_dependent)

    @property
    def num_publishers(self) -> int:
        return sum(1 for p in self.live_participants() if p.is_publisher)

    def to_proto(self, *, brief: bool = False) -> models.Room:
        if brief:
            return models.Room(sid=self.sid, name=self.name)
        created_ms = int(self.created_at * 1000)
        return models.Room(
            sid=self.sid,
            name=self.name,
            empty_timeout=self.settings.empty_timeout,
            departure_timeout=self.settings.departure_timeout,
            max_participants=self.settings.max_participants,
            creation_time=created_ms // 1000,
            creation_time_ms=created_ms,
            metadata=self.settings.metadata,
            num_participants=self.num_participants,
            num_publishers=self.num_publishers,
            active_recording=any(p.permission.recorder for p in self.live_participants()),
            enabled_codecs=[models.Codec(mime=m) for m in self.settings.enabled_codecs],
            version=models.TimedVersion(unix_micro=int(time.time() * 1e6), ticks=self.version),
        )

    # -- events -----------------------------------------------------------------------------
    def emit(
        self,
        name: str,
        participant: Participant | None = None,
        track: models.TrackInfo | None = None,
        end_reason: int = 0,
    ) -> None:
        brief = track is not None
        self._emit(
            RoomEvent(
                name=name,
                room=self.to_proto(brief=brief),
                participant=participant.to_proto(identity_only=brief) if participant else None,
                track=track,
                end_reason=end_reason,
            )
        )

    def has_track(self, track_sid: str) -> bool:
        """Is this track published in this room (by a live participant)?"""
        return any(track_sid in p.tracks for p in self.live_participants())

    # -- participants -----------------------------------------------------------------------
    def get_participant(self, identity: str) -> Participant:
        participant = self.participants.get(identity)
        if participant is None or participant.state == State.DISCONNECTED:
            raise ParticipantNotFoundError(self.name, identity)
        return participant

    def check_capacity(self, newcomer: Participant) -> None:
        limit = self.settings.max_participants
        if not limit or newcomer.is_dependent:
            return
        others = sum(
            1
            for p in self.live_participants()
            if not p.is_dependent and p.identity != newcomer.identity
        )
        if others >= limit:
            raise RoomFullError(self.name, limit)

    def add_participant(self, participant: Participant) -> None:
        """Admit a participant; an older session with the same identity must be gone first."""
        self.check_capacity(participant)
        participant.on_changed = self._participant_changed
        self.participants[participant.identity] = participant

    def remove_participant(self, participant: Participant, reason: int) -> None:
        """Mark the participant DISCONNECTED, tell everyone, and forget it."""
        if self.participants.get(participant.identity) is not participant:
            return  # a stale session (replaced by a newer one with the same identity)
        was_active = participant.state == State.ACTIVE
        participant.disconnect_reason = reason
        for track in list(participant.tracks.values()):
            self.emit("track_unpublished", participant, track)
        participant.set_state(State.DISCONNECTED)
        del self.participants[participant.identity]
        if not participant.is_dependent:
            self.last_left_at = time.time()
        self.emit(
            "participant_left" if was_active else "participant_connection_aborted", participant
        )

    def _participant_changed(self, participant: Participant) -> None:
        if self.on_participant_changed is not None:
            self.on_participant_changed(self, participant)

    def deliver_data(
        self, packet: models.DataPacket, reliable: bool, sender: Participant | None
    ) -> int:
        """Send a data packet to its destinations (everyone but the sender when none are named).

        Returns how many participants it was handed to (docs/protocol/06-data-packets.md §6.3).
        """
        identities = set(packet.destination_identities)
        sids = set(packet.user.destination_sids) if packet.HasField("user") else set()
        wire = packet.SerializeToString()
        delivered = 0
        for participant in self.live_participants():
            if participant is sender or participant.session is None:
                continue
            if (identities or sids) and not (
                participant.identity in identities or participant.sid in sids
            ):
                continue
            if not participant.permission.can_subscribe:
                continue
            if participant.session.send_data(wire, reliable):
                delivered += 1
        return delivered

    def set_metadata(self, metadata: str) -> None:
        self.settings.metadata = metadata
        self.version += 1
        if self.on_room_updated is not None:
            self.on_room_updated(self)

    # -- lifecycle --------------------------------------------------------------------------
    def idle_deadline(self) -> float | None:
        """When the room should close if nothing changes, or None while someone is in it."""
        if any(not p.is_dependent for p in self.live_participants()):
            return None
        if self.last_left_at is not None:
            return self.last_left_at + self.settings.departure_timeout
        return self.created_at + self.settings.empty_timeout
