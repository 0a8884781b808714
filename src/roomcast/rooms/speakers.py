"""Active speakers: SpeakersChanged deltas from published audio levels
(docs/protocol/05-room-and-participant-updates.md §5.3).

Levels come from the forwarding plane (the RFC 6464 ssrc-audio-level extension of each audio track).
Every ``UPDATE_INTERVAL`` each participant gets the speakers whose quantised level changed,
limited to participants it is subscribed to (and itself); a former speaker is sent once with
level 0 and active false.
"""

from __future__ import annotations

from collections.abc import Callable

from livekit.protocol import models, rtc

from roomcast.rooms.participant import State
from roomcast.rooms.room import Room

# track sid → its audio level (0..1) while above the speaking threshold, else 0
SpeakingLevel = Callable[[str], float]
# (subscriber sid, publisher sid) → does the subscriber receive any of the publisher's tracks?
IsSubscribed = Callable[[str, str], bool]

UPDATE_INTERVAL = 0.4  # seconds (LiveKit audio.update_interval)
LEVEL_STEPS = 8  # levels are quantised to 1/8 (LiveKit)


class SpeakerDetector:
    def __init__(self, speaking_level: SpeakingLevel) -> None:
        self._speaking_level = speaking_level
        self._last_run: float | None = None
        self._reported: dict[str, dict[str, float]] = {}  # room sid -> participant sid -> level

    def tick(self, rooms: list[Room], is_subscribed: IsSubscribed, now: float) -> None:
        if self._last_run is not None and now - self._last_run < UPDATE_INTERVAL:
            return
        self._last_run = now
        for room in rooms:
            self._update_room(room, is_subscribed)

    def _levels(self, room: Room) -> dict[str, float]:
        levels: dict[str, float] = {}
        for participant in room.live_participants():
            best = 0.0
            for sid, info in participant.tracks.items():
                if info.type != models.TrackType.AUDIO or info.muted:
                    continue
                best = max(best, self._speaking_level(sid))
            if best > 0:
                levels[participant.sid] = round(best * LEVEL_STEPS) / LEVEL_STEPS or 1 / LEVEL_STEPS
        return levels

    def _update_room(self, room: Room, is_subscribed: IsSubscribed) -> None:
        levels = self._levels(room)
        before = self._reported.get(room.sid, {})
        changed = [
            models.SpeakerInfo(sid=sid, level=level, active=True)
            for sid, level in levels.items()
            if before.get(sid) != level
        ]
        changed += [
            models.SpeakerInfo(sid=sid, level=0.0, active=False)
            for sid in before
            if sid not in levels
        ]
        if levels:
            self._reported[room.sid] = levels
        else:
            self._reported.pop(room.sid, None)
        if not changed:
            return
        changed.sort(key=lambda s: s.level, reverse=True)
        for participant in room.live_participants():
            session = participant.session
            if session is None or not session.joined or participant.state != State.ACTIVE:
                continue
            visible = [
                s
                for s in changed
                if s.sid == participant.sid or is_subscribed(participant.sid, s.sid)
            ]
            if visible:
                session.send_signal(
                    rtc.SignalResponse(speakers_changed=rtc.SpeakersChanged(speakers=visible))
                )
