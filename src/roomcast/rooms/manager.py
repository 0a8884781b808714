"""RoomManager: creates, finds, updates and closes rooms; closes idle ones
(docs/protocol/11-room-lifecycle.md)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import unicodedata

from livekit.protocol import models, rtc

from roomcast.config import LimitConfig, RoomConfig
from roomcast.errors import InvalidArgumentError, ResourceExhaustedError, RoomNotFoundError
from roomcast.rooms.participant import State
from roomcast.rooms.room import EventSink, Room, RoomSettings

log = logging.getLogger(__name__)

EndReason = models.RoomEndReason
_LEAVE_DISCONNECT = rtc.LeaveRequest.Action.DISCONNECT
# How often idle rooms are looked for; LiveKit checks every second.
IDLE_CHECK_INTERVAL = 0.25


def validate_room_name(name: str, limits: LimitConfig) -> None:
    if not name:
        raise InvalidArgumentError("room name is required")
    if len(name) > limits.max_room_name_length:
        raise InvalidArgumentError(
            f"room name is longer than {limits.max_room_name_length} characters"
        )
    if any(unicodedata.category(ch)[0] == "C" for ch in name):
        raise InvalidArgumentError("room name must not contain control characters")


class RoomManager:
    def __init__(self, room_config: RoomConfig, limits: LimitConfig, emit: EventSink) -> None:
        self._config = room_config
        self._limits = limits
        self._emit = emit
        self._rooms: dict[str, Room] = {}
        self._idle_task: asyncio.Task[None] | None = None

    # -- queries ------------------------------------------------------------------------------
    def get(self, name: str) -> Room | None:
        return self._rooms.get(name)

    def require(self, name: str) -> Room:
        room = self._rooms.get(name)
        if room is None:
            raise RoomNotFoundError(name)
        return room

    def list(self, names: list[str] | None = None) -> list[Room]:
        if names:
            return [self._rooms[n] for n in dict.fromkeys(names) if n in self._rooms]
        return sorted(self._rooms.values(), key=lambda r: r.created_at)

    # -- changes ------------------------------------------------------------------------------
    def check_metadata(self, metadata: str) -> None:
        if len(metadata.encode()) > self._limits.max_metadata_size:
            raise InvalidArgumentError(
                f"metadata is larger than {self._limits.max_metadata_size} bytes"
            )

    def create(
        self,
        name: str,
        *,
        empty_timeout: int = 0,
        departure_timeout: int = 0,
        max_participants: int = 0,
        metadata: str = "",
    ) -> Room:
        """Create the room, or update an existing one with the non-zero fields (idempotent)."""
        validate_room_name(name, self._limits)
        self.check_metadata(metadata)
        room = self._rooms.get(name)
        if room is not None:
            settings = room.settings
            if empty_timeout:
                settings.empty_timeout = empty_timeout
            if departure_timeout:
                settings.departure_timeout = departure_timeout
            if max_participants:
                settings.max_participants = max_participants
            if metadata and metadata != settings.metadata:
                room.set_metadata(metadata)
            return room
        if self._limits.max_rooms and len(self._rooms) >= self._limits.max_rooms:
            raise ResourceExhaustedError(
                f"this node hosts its maximum of {self._limits.max_rooms} rooms (limit.max_rooms)"
            )
        settings = RoomSettings(
            empty_timeout=empty_timeout or self._config.empty_timeout,
            departure_timeout=departure_timeout or self._config.departure_timeout,
            max_participants=max_participants or self._config.max_participants,
            metadata=metadata,
            enabled_codecs=[c["mime"] for c in self._config.enabled_codecs if "mime" in c],
        )
        room = Room(name, settings, self._emit)
        self._rooms[name] = room
        log.info("room started", extra={"room": name, "room_sid": room.sid})
        room.emit("room_started")
        return room

    def update_metadata(self, name: str, metadata: str) -> Room:
        self.check_metadata(metadata)
        room = self.require(name)
        room.set_metadata(metadata)
        return room

    def close(
        self, room: Room, reason: int, end_reason: int, action: int = _LEAVE_DISCONNECT
    ) -> None:
        """Disconnect everyone with ``reason`` and forget the room (emits room_finished)."""
        if room.closed:
            return
        room.closed = True
        for participant in list(room.participants.values()):
            if participant.session is not None:
                participant.session.disconnect(reason, action)
            room.remove_participant(participant, reason)
        self._rooms.pop(room.name, None)
        log.info("room closed", extra={"room": room.name, "room_sid": room.sid})
        room.emit("room_finished", end_reason=end_reason)

    def delete(self, name: str) -> None:
        room = self.require(name)
        self.close(room, models.DisconnectReason.ROOM_DELETED, EndReason.ROOM_END_API_DELETE)

    def close_all(self, action: int = _LEAVE_DISCONNECT) -> None:
        for room in list(self._rooms.values()):
            self.close(
                room,
                models.DisconnectReason.SERVER_SHUTDOWN,
                EndReason.ROOM_END_SERVER_SHUTDOWN,
                action,
            )

    # -- idle rooms ---------------------------------------------------------------------------
    def close_idle_rooms(self, now: float | None = None) -> None:
        now = time.time() if now is None else now
        for room in list(self._rooms.values()):
            deadline = room.idle_deadline()
            if deadline is not None and now >= deadline:
                self.close(
                    room, models.DisconnectReason.ROOM_CLOSED, EndReason.ROOM_END_IDLE_TIMEOUT
                )

    def start(self) -> None:
        self._idle_task = asyncio.get_running_loop().create_task(self._idle_loop())

    async def _idle_loop(self) -> None:
        while True:
            await asyncio.sleep(IDLE_CHECK_INTERVAL)
            try:
                self.close_idle_rooms()
            except Exception:  # keep the loop alive: one bad room must not stop the others
                log.exception("closing idle rooms failed")

    async def stop(self, action: int = _LEAVE_DISCONNECT) -> None:
        """Close every room; ``action`` RECONNECT sends clients to another node (multi-node)."""
        if self._idle_task is not None:
            self._idle_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._idle_task
            self._idle_task = None
        self.close_all(action)


__all__ = ["RoomManager", "State", "validate_room_name"]
