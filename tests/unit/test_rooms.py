"""Room-model state machines without sockets: participants, rooms, lifecycle, data routing."""

from __future__ import annotations

import pytest
from livekit.protocol import models, rtc

from roomcast.auth import VideoGrant
from roomcast.config import LimitConfig, RoomConfig
from roomcast.errors import InvalidArgumentError, RoomFullError, RoomNotFoundError
from roomcast.rooms.data import DataExchange
from roomcast.rooms.manager import RoomManager
from roomcast.rooms.participant import Participant, State
from roomcast.rooms.room import RoomEvent
from tests.fakes import FakeSession

Reason = models.DisconnectReason


def manager(events: list[RoomEvent], **room: object) -> RoomManager:
    return RoomManager(RoomConfig(**room), LimitConfig(), events.append)  # type: ignore[arg-type]


def join(room: object, identity: str, **grant: object) -> tuple[Participant, FakeSession]:
    participant = Participant(identity=identity, grant=VideoGrant(**grant))  # type: ignore[arg-type]
    session = FakeSession(participant_sid=participant.sid)
    participant.session = session
    room.add_participant(participant)  # type: ignore[attr-defined]
    participant.set_state(State.JOINED)
    participant.set_state(State.ACTIVE)
    return participant, session


def test_participant_states_only_move_forward_and_bump_version() -> None:
    p = Participant(identity="a")
    assert p.state == State.JOINING and p.version == 1
    assert p.set_state(State.JOINED) and p.version == 2
    assert p.set_state(State.ACTIVE) and p.version == 3
    assert not p.set_state(State.JOINED) and p.state == State.ACTIVE and p.version == 3
    assert p.set_state(State.DISCONNECTED)
    assert not p.set_state(State.ACTIVE)


def test_create_is_idempotent_and_validates() -> None:
    events: list[RoomEvent] = []
    rooms = manager(events)
    first = rooms.create("r", max_participants=3)
    again = rooms.create("r", empty_timeout=9)
    assert first is again and again.settings.empty_timeout == 9
    assert again.settings.max_participants == 3
    assert [e.name for e in events] == ["room_started"]
    for bad in ("", "x" * 257, "tab\there"):
        with pytest.raises(InvalidArgumentError):
            rooms.create(bad)
    with pytest.raises(RoomNotFoundError):
        rooms.delete("missing")


def test_idle_rooms_close_after_empty_and_departure_timeouts() -> None:
    events: list[RoomEvent] = []
    rooms = manager(events, empty_timeout=10, departure_timeout=5)
    room = rooms.create("r")
    rooms.close_idle_rooms(now=room.created_at + 9)
    assert rooms.get("r") is room
    participant, _ = join(room, "a")
    rooms.close_idle_rooms(now=room.created_at + 100)  # occupied: never idle
    assert rooms.get("r") is room
    room.remove_participant(participant, Reason.CLIENT_INITIATED)
    assert room.last_left_at is not None
    rooms.close_idle_rooms(now=room.last_left_at + 4)
    assert rooms.get("r") is room
    rooms.close_idle_rooms(now=room.last_left_at + 5)
    assert rooms.get("r") is None
    assert [e.name for e in events] == ["room_started", "participant_left", "room_finished"]


def test_agents_do_not_keep_a_room_open_or_count() -> None:
    events: list[RoomEvent] = []
    rooms = manager(events, empty_timeout=1, max_participants=1)
    room = rooms.create("r")
    agent = Participant(identity="bot", kind=models.ParticipantInfo.Kind.AGENT)
    room.add_participant(agent)
    join(room, "human")
    with pytest.raises(RoomFullError):
        room.check_capacity(Participant(identity="second"))
    assert room.num_participants == 1


def test_delete_disconnects_everyone_with_room_deleted() -> None:
    events: list[RoomEvent] = []
    rooms = manager(events)
    room = rooms.create("r")
    _, a = join(room, "a")
    _, b = join(room, "b")
    rooms.delete("r")
    assert a.left == b.left == [(Reason.ROOM_DELETED, rtc.LeaveRequest.Action.DISCONNECT)]
    assert [e.name for e in events].count("participant_left") == 2
    assert events[-1].name == "room_finished"


def test_data_routing_stamps_sender_and_honours_destinations() -> None:
    rooms = manager([])
    room = rooms.create("r")
    sender, sender_session = join(room, "alice")
    _, bob = join(room, "bob")
    _, carol = join(room, "carol")
    router = DataExchange()
    packet = models.DataPacket(
        kind=models.DataPacket.Kind.LOSSY,  # wrong on purpose: the channel decides
        participant_identity="mallory",
        sequence=1,
        user=models.UserPacket(payload=b"hi", topic="t", destination_identities=["bob"]),
    )
    router.handle_incoming(room, sender, "_reliable", packet.SerializeToString())
    assert not carol.data and not sender_session.data
    ((got, reliable),) = bob.data
    assert reliable and got.kind == models.DataPacket.Kind.RELIABLE
    assert got.participant_identity == "alice" and got.participant_sid == sender.sid
    assert got.user.participant_identity == "alice" and list(got.destination_identities) == ["bob"]
    # A duplicate reliable sequence (after a resume) is dropped.
    router.handle_incoming(room, sender, "_reliable", packet.SerializeToString())
    assert len(bob.data) == 1
    # Garbage and unknown channels are dropped without harm.
    router.handle_incoming(room, sender, "_reliable", b"\xff\xff")
    router.handle_incoming(room, sender, "_data_track", b"x")
    assert len(bob.data) == 1 and router.packets_dropped == 1


def test_data_without_permission_or_from_hidden_sender() -> None:
    room = manager([]).create("r")
    mute, _ = join(room, "mute", can_publish_data=False)
    ghost, _ = join(room, "ghost", hidden=True)
    _, listener = join(room, "listener")
    router = DataExchange()
    wire = models.DataPacket(user=models.UserPacket(payload=b"x")).SerializeToString()
    router.handle_incoming(room, mute, "_lossy", wire)
    assert not listener.data
    router.handle_incoming(room, ghost, "_lossy", wire)
    ((got, reliable),) = listener.data
    assert not reliable and got.participant_identity == "" and got.participant_sid == ghost.sid


def test_transcriptions_only_from_agents() -> None:
    room = manager([]).create("r")
    human, _ = join(room, "human")
    _, listener = join(room, "listener")
    wire = models.DataPacket(
        transcription=models.Transcription(transcribed_participant_identity="human")
    ).SerializeToString()
    router = DataExchange()
    router.handle_incoming(room, human, "_reliable", wire)
    assert not listener.data
    agent, _ = join(room, "agent", agent=True)
    router.handle_incoming(room, agent, "_reliable", wire)
    assert len(listener.data) == 1
