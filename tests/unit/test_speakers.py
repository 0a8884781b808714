"""Active-speaker updates without a server: SpeakerDetector on a room of fake sessions."""

from __future__ import annotations

from livekit.protocol import models

from roomcast.config import LimitConfig, RoomConfig
from roomcast.rooms.manager import RoomManager
from roomcast.rooms.participant import Participant, State
from roomcast.rooms.room import Room
from roomcast.rooms.speakers import UPDATE_INTERVAL, SpeakerDetector
from tests.fakes import FakeSession


class Levels:
    """Audio levels per track sid, as the forwarding plane would report them."""

    def __init__(self) -> None:
        self.by_track: dict[str, float] = {}

    def __call__(self, track_sid: str) -> float:
        return self.by_track.get(track_sid, 0.0)


def room_with(*identities: str) -> tuple[Room, dict[str, tuple[Participant, FakeSession]]]:
    room = RoomManager(RoomConfig(), LimitConfig(), lambda event: None).create("r")
    people = {}
    for identity in identities:
        participant = Participant(identity=identity)
        session = FakeSession(participant_sid=participant.sid)
        participant.session = session
        room.add_participant(participant)
        participant.set_state(State.JOINED)
        participant.set_state(State.ACTIVE)
        people[identity] = (participant, session)
    return room, people


def microphone(participant: Participant, sid: str, *, muted: bool = False) -> None:
    participant.tracks[sid] = models.TrackInfo(sid=sid, type=models.TrackType.AUDIO, muted=muted)


def speakers(session: FakeSession) -> list[list[tuple[str, float, bool]]]:
    return [
        [(s.sid, s.level, s.active) for s in update.speakers_changed.speakers]
        for update in session.signals_of("speakers_changed")
    ]


def test_speakers_are_reported_to_themselves_and_their_subscribers_only() -> None:
    room, people = room_with("alice", "bob", "carol")
    alice, alice_session = people["alice"]
    _, bob_session = people["bob"]
    _, carol_session = people["carol"]
    microphone(alice, "TR_a")
    levels = Levels()
    levels.by_track["TR_a"] = 0.6
    detector = SpeakerDetector(levels)
    # bob receives alice's tracks, carol does not.
    detector.tick([room], lambda sub, pub: sub == people["bob"][0].sid, now=0.0)
    level = round(0.6 * 8) / 8
    assert speakers(alice_session) == [[(alice.sid, level, True)]]
    assert speakers(bob_session) == [[(alice.sid, level, True)]]
    assert speakers(carol_session) == []


def test_only_changes_are_sent_and_a_silent_speaker_is_sent_once_as_inactive() -> None:
    room, people = room_with("alice", "bob")
    alice, alice_session = people["alice"]
    microphone(alice, "TR_a")
    levels = Levels()
    detector = SpeakerDetector(levels)
    always = lambda sub, pub: True  # noqa: E731
    levels.by_track["TR_a"] = 0.5
    detector.tick([room], always, now=0.0)
    detector.tick([room], always, now=UPDATE_INTERVAL)  # same level: nothing new
    assert len(speakers(alice_session)) == 1
    levels.by_track["TR_a"] = 0.0
    detector.tick([room], always, now=2 * UPDATE_INTERVAL)
    detector.tick([room], always, now=3 * UPDATE_INTERVAL)
    assert speakers(alice_session)[1:] == [[(alice.sid, 0.0, False)]]


def test_updates_are_rate_limited_and_muted_tracks_do_not_speak() -> None:
    room, people = room_with("alice", "bob")
    alice, alice_session = people["alice"]
    bob, bob_session = people["bob"]
    microphone(alice, "TR_a", muted=True)
    microphone(bob, "TR_b")
    levels = Levels()
    levels.by_track.update({"TR_a": 0.9, "TR_b": 0.3})
    detector = SpeakerDetector(levels)
    always = lambda sub, pub: True  # noqa: E731
    detector.tick([room], always, now=10.0)
    levels.by_track["TR_b"] = 0.9
    detector.tick([room], always, now=10.0 + UPDATE_INTERVAL / 2)  # too soon: skipped
    assert speakers(bob_session) == [[(bob.sid, round(0.3 * 8) / 8, True)]]
    assert speakers(alice_session) == [[(bob.sid, round(0.3 * 8) / 8, True)]]
    detector.tick([room], always, now=10.0 + UPDATE_INTERVAL)
    assert speakers(bob_session)[-1] == [(bob.sid, round(0.9 * 8) / 8, True)]


def test_loudest_first_and_quiet_speakers_keep_a_minimum_level() -> None:
    room, people = room_with("alice", "bob")
    alice, alice_session = people["alice"]
    bob, _ = people["bob"]
    microphone(alice, "TR_a")
    microphone(bob, "TR_b")
    levels = Levels()
    levels.by_track.update({"TR_a": 0.01, "TR_b": 0.8})
    SpeakerDetector(levels).tick([room], lambda sub, pub: True, now=0.0)
    [update] = speakers(alice_session)
    assert update == [(bob.sid, round(0.8 * 8) / 8, True), (alice.sid, 1 / 8, True)]
