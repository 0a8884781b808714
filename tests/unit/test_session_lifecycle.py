"""A participant's session lifecycle on a fake clock: join → active → signal lost → resume or
timeout → leave, with fake transports and a fake signalling connection."""

from __future__ import annotations

from livekit.protocol import models, rtc

from roomcast.auth import VideoGrant
from roomcast.config import Config
from roomcast.media.forwarding_plane import ForwardingPlane
from roomcast.rooms.admin import RoomAdmin
from roomcast.rooms.contracts import JoinOptions, Publication
from roomcast.rooms.data import DataExchange
from roomcast.rooms.data_tracks import DataTrackLimits, DataTrackManager
from roomcast.rooms.manager import RoomManager
from roomcast.rooms.participant import Participant, State
from roomcast.rooms.room import Room, RoomEvent
from roomcast.rooms.session import (
    JOIN_TIMEOUT,
    PING_DEADLINE,
    REFRESH_INTERVAL,
    SIGNAL_LOST_GRACE,
    Session,
    SessionServices,
)
from roomcast.rooms.subscriptions import SubscriptionManager
from roomcast.rooms.tracks import TrackManager
from roomcast.telemetry import Metrics
from tests.fakes import FakeScheduler, FakeSink, FakeTransports, claims_for

Reason = models.DisconnectReason
Action = rtc.LeaveRequest.Action


class Node:
    """The node-level services a session uses, all real and I/O-free."""

    def __init__(self) -> None:
        self.config = Config(keys={"devkey": "secret"})
        self.events: list[RoomEvent] = []
        self.rooms = RoomManager(self.config.room, self.config.limit, self.events.append)
        data = DataExchange()
        metrics = Metrics()
        self.services = SessionServices(
            config=self.config,
            node_id="ND_test",
            metrics=metrics,
            subscriptions=SubscriptionManager(ForwardingPlane(clock=lambda: 0.0), TrackManager()),
            tracks=TrackManager(),
            data=data,
            admin=RoomAdmin(self.config, self.rooms, data),
            data_tracks=DataTrackManager(DataTrackLimits(), metrics),
            refresh_token=lambda claims, participant: f"token-for-{participant.identity}",
        )
        self.clock = FakeScheduler()
        self.room: Room = self.rooms.create("r")

    def join(self, identity: str = "alice", **grant: object) -> tuple[Session, FakeSink]:
        claims = claims_for(identity, **grant)
        participant = Participant.from_claims(claims)
        self.room.add_participant(participant)
        sink = FakeSink()
        transports = FakeTransports(participant_sid=participant.sid)
        session = Session(
            self.services,
            self.room,
            participant,
            claims,
            JoinOptions(),
            sink,
            transports,
            self.clock,
        )
        participant.session = session
        session.start()
        self.clock.advance()  # the coalesced refresh token goes out
        return session, sink

    def names(self) -> list[str]:
        return [e.name for e in self.events]


def transports_of(session: Session) -> FakeTransports:
    assert isinstance(session.transports, FakeTransports)
    return session.transports


def keep_alive(node: Node, session: Session, seconds: float) -> None:
    """Let time pass while the client pings every second, as SDKs do."""
    for _ in range(int(seconds)):
        node.clock.advance(1)
        session.on_request()


def left_with(sink: FakeSink) -> list[tuple[int, int]]:
    return [(r.leave.reason, r.leave.action) for r in sink.of("leave")]


def test_join_sends_the_join_response_first_then_a_token_and_the_subscriber_offer() -> None:
    node = Node()
    session, sink = node.join()
    assert sink.kinds()[0] == "join"
    join = sink.sent[0].join
    assert join.participant.identity == "alice" and join.room.name == "r"
    assert join.ping_interval > 0 and join.ping_timeout > 0
    assert join.server_info.node_id == "ND_test"
    assert sink.of("refresh_token")[0].refresh_token == "token-for-alice"
    assert transports_of(session).offers == 1
    assert session.joined and session.participant.state == State.JOINED


def test_primary_transport_connected_makes_the_participant_active_once() -> None:
    node = Node()
    session, sink = node.join()
    transports_of(session).primary_state("connected")
    assert session.participant.state == State.ACTIVE
    transports_of(session).primary_state("connected")
    assert node.names() == ["room_started", "participant_joined"]
    node.clock.advance(JOIN_TIMEOUT + 1)  # the join timer was cancelled
    assert not session.closed and left_with(sink) == []


def test_no_connection_within_the_join_timeout_removes_the_participant() -> None:
    node = Node()
    session, sink = node.join()
    keep_alive(node, session, JOIN_TIMEOUT - 1)  # pinging, but its transport never connects
    assert not session.closed
    node.clock.advance(1)
    assert left_with(sink) == [(Reason.JOIN_FAILURE, Action.DISCONNECT)]
    assert session.closed and sink.closed and transports_of(session).closed
    assert "alice" not in node.room.participants
    assert node.names()[-1] == "participant_connection_aborted"
    assert node.clock.pending() == 0  # every timer is gone


def test_signal_lost_while_media_is_up_keeps_the_participant_until_its_transport_fails() -> None:
    node = Node()
    session, sink = node.join()
    transports = transports_of(session)
    transports.primary_state("connected")
    sink.close()
    session.on_signal_closed(sink)
    node.clock.advance(10 * SIGNAL_LOST_GRACE)
    assert not session.closed and "alice" in node.room.participants
    transports.primary_state("failed")  # consent expired (RFC 7675)
    assert session.closed and "alice" not in node.room.participants
    assert node.room.participants == {} and node.names()[-1] == "participant_left"


def test_signal_lost_without_media_gives_a_grace_period_to_resume() -> None:
    node = Node()
    session, sink = node.join()
    transports = transports_of(session)
    transports.primary_state("connected")
    transports.connected = False  # media went down with the signalling
    sink.close()
    session.on_signal_closed(sink)
    node.clock.advance(SIGNAL_LOST_GRACE - 1)
    assert not session.closed
    node.clock.advance(1)
    assert session.closed and "alice" not in node.room.participants


def test_resume_within_the_grace_period_reattaches_and_restarts_ice() -> None:
    node = Node()
    session, sink = node.join()
    transports = transports_of(session)
    transports.primary_state("connected")
    transports.connected = False
    sink.close()
    session.on_signal_closed(sink)
    node.clock.advance(SIGNAL_LOST_GRACE / 2)
    new_sink = FakeSink()
    session.resume(new_sink, JoinOptions(reconnect=True))
    assert new_sink.kinds()[:3] == ["reconnect", "update", "room_update"]
    assert [p.identity for p in new_sink.sent[1].update.participants] == ["alice"]
    assert transports.ice_restarts == 1
    node.clock.advance(SIGNAL_LOST_GRACE)
    assert not session.closed
    session.on_signal_closed(sink)  # the old connection's late close changes nothing
    assert not session.closed


def test_signal_closed_before_active_removes_at_once() -> None:
    node = Node()
    session, sink = node.join()
    sink.close()
    session.on_signal_closed(sink)
    assert session.closed and node.names()[-1] == "participant_connection_aborted"


def test_silence_past_the_ping_deadline_closes_the_signalling_connection() -> None:
    node = Node()
    session, sink = node.join()
    transports_of(session).primary_state("connected")
    node.clock.advance(PING_DEADLINE - 1)
    session.on_request()  # a ping: the deadline restarts
    node.clock.advance(PING_DEADLINE - 1)
    assert not sink.closed
    node.clock.advance(1)
    assert sink.closed and sink.close_message == "ping timeout"
    assert not session.closed  # only the connection: the session may still resume


def test_a_fresh_token_every_refresh_interval_and_after_own_updates() -> None:
    node = Node()
    session, sink = node.join()
    transports_of(session).primary_state("connected")
    keep_alive(node, session, 2 * REFRESH_INTERVAL)
    assert len(sink.of("refresh_token")) == 3
    session.participant.metadata = "m"
    session.participant.touch()  # the update is broadcast to alice herself…
    update = rtc.SignalResponse(
        update=rtc.ParticipantUpdate(participants=[session.participant.to_proto()])
    )
    session.send_signal(update)
    session.send_signal(update)
    node.clock.advance()
    assert len(sink.of("refresh_token")) == 4  # …and both get one token


def test_client_leave_and_server_disconnect() -> None:
    node = Node()
    alice, alice_sink = node.join("alice")
    transports_of(alice).primary_state("connected")
    alice.client_left()
    assert left_with(alice_sink) == [(Reason.CLIENT_INITIATED, Action.DISCONNECT)]
    assert alice.closed and "alice" not in node.room.participants
    bob, bob_sink = node.join("bob")
    bob.disconnect(Reason.PARTICIPANT_REMOVED, Action.DISCONNECT)
    assert left_with(bob_sink) == [(Reason.PARTICIPANT_REMOVED, Action.DISCONNECT)]
    assert bob.closed and bob_sink.closed
    bob.send_signal(rtc.SignalResponse(pong=1))  # nothing is sent after the end
    assert bob_sink.kinds()[-1] == "leave"


def test_lossy_data_waits_for_active_reliable_data_does_not() -> None:
    node = Node()
    session, _ = node.join()
    assert session.send_data(b"r", reliable=True)
    assert not session.send_data(b"l", reliable=False)
    transports_of(session).primary_state("connected")
    assert session.send_data(b"l", reliable=False)
    assert transports_of(session).data == [(b"r", True), (b"l", False)]


def test_revoking_can_subscribe_drops_subscriptions_through_the_session() -> None:
    node = Node()
    alice, _ = node.join("alice")
    bob, _ = node.join("bob")
    for session in (alice, bob):
        transports_of(session).primary_state("connected")
    bob.subscriber.subscribe(Publication("TR_x", "PA_x", "x", "audio", []))
    assert bob.subscriber.subscribed() == ["TR_x"]
    bob.participant.permission.can_subscribe = False
    bob.on_self_changed()
    assert bob.subscriber.subscribed() == []
    assert alice.participant.grant == VideoGrant(room_join=True, room="r")
