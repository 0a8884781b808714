"""One participant's session: its lifecycle, and the face (`ParticipantSession`) rooms talk to.

Lifecycle (docs/protocol/11-room-lifecycle.md §11.4, docs/protocol/07-reconnect-ping-leave.md):

    start ─► JOINED (JoinResponse sent, subscriber offer out)
      │        └─ no primary transport within JOIN_TIMEOUT ─► removed (JOIN_FAILURE)
      ▼
    primary transport connected ─► ACTIVE (participant_joined)
      │
      ├─ signalling lost, media up    ─► kept until resume, leave, or transport failure
      ├─ signalling lost, media down  ─► removed after SIGNAL_LOST_GRACE unless resumed
      ├─ nothing received for PING_DEADLINE ─► signalling closed (then as above)
      ├─ resume (reconnect=1)         ─► ReconnectResponse, ICE-restart offer
      └─ leave / transport failed / server ends it ─► removed

Timers run on an injected `Scheduler` (an asyncio loop in the server, a fake clock in unit
tests); transports sit behind `SessionTransports`, so the lifecycle is tested without sockets.
Requests from the client are dispatched by `SignalHandler` (rooms/signal_handler.py).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from livekit.protocol import models, rtc

from roomcast.auth import Claims
from roomcast.config import Config
from roomcast.ratelimit import TokenBucket
from roomcast.rooms.admin import RoomAdmin
from roomcast.rooms.contracts import (
    Cancellable,
    JoinOptions,
    Scheduler,
    SessionMetrics,
    SignalSink,
    TrackPublisher,
    TrackSubscriber,
    leave_response,
)
from roomcast.rooms.data import DataExchange
from roomcast.rooms.data_tracks import DataTrackManager
from roomcast.rooms.join_response import PING_TIMEOUT, join_response, reconnect_response
from roomcast.rooms.participant import Participant, State
from roomcast.rooms.room import Room
from roomcast.rooms.subscriptions import SubscriptionManager
from roomcast.rooms.tracks import TrackManager

log = logging.getLogger(__name__)

Reason = models.DisconnectReason
Action = rtc.LeaveRequest.Action

JOIN_TIMEOUT = 60.0  # no ACTIVE within this → removed with JOIN_FAILURE
# A refreshed token every 5 min (docs/protocol/05-room-and-participant-updates.md §5.8).
REFRESH_INTERVAL = 300.0
# No ping (or any request) for this long: the signalling connection is closed as dead, as
# livekit-server does with the ping_timeout it announces in JoinResponse.ping_timeout.
PING_DEADLINE = float(PING_TIMEOUT)
SIGNAL_LOST_GRACE = 15.0  # an ACTIVE participant may resume this long after its WebSocket drops
# Own metadata/name/attribute updates: each is broadcast to the whole room (up to 512 KiB of
# metadata each), so a participant gets this many per second, with this burst; agents update
# their state attributes a few times per second at most.
METADATA_UPDATES_PER_SECOND = 10.0
METADATA_UPDATE_BURST = 20.0


@dataclass(frozen=True)
class SessionServices:
    """What a session uses from its node (SessionManager builds one for all sessions)."""

    config: Config
    node_id: str
    metrics: SessionMetrics
    subscriptions: SubscriptionManager
    tracks: TrackManager
    data: DataExchange
    admin: RoomAdmin
    data_tracks: DataTrackManager
    refresh_token: Callable[[Claims, Participant], str]


class SessionTransports(Protocol):
    """The participant's PeerConnections as the lifecycle sees them (ParticipantTransports)."""

    subscriber_primary: bool

    @property
    def subscriber(self) -> TrackSubscriber: ...

    @property
    def publisher(self) -> TrackPublisher | None: ...

    def bind(
        self,
        send_signal: Callable[[rtc.SignalResponse], None],
        on_primary_state: Callable[[str], None],
    ) -> None: ...

    def primary_connected(self) -> bool: ...

    def send_subscriber_offer(self) -> None: ...

    def restart_subscriber_ice(self) -> None: ...

    def send_data(self, packet: bytes, reliable: bool, *, lossy_allowed: bool) -> bool: ...

    def send_data_track(self, packet: bytes, *, max_backlog: int | None) -> bool: ...

    def close(self) -> None: ...


class Session:
    """Implements `ParticipantSession` (rooms/contracts.py)."""

    def __init__(
        self,
        services: SessionServices,
        room: Room,
        participant: Participant,
        claims: Claims,
        options: JoinOptions,
        sink: SignalSink,
        transports: SessionTransports,
        scheduler: Scheduler,
    ) -> None:
        self.services = services
        self.room = room
        self.participant = participant
        self.claims = claims
        self.options = options
        self.sink = sink
        self.transports = transports
        self.joined = False
        self.closed = False
        self._scheduler = scheduler
        self._timers: dict[str, Cancellable] = {}
        self._refresh_pending = False
        self._permission = models.ParticipantPermission()
        self._permission.CopyFrom(participant.permission)
        self._metadata_updates = TokenBucket(METADATA_UPDATES_PER_SECOND, METADATA_UPDATE_BURST)
        transports.bind(self.send_signal, self._on_primary_state)

    @property
    def subscriber(self) -> TrackSubscriber:
        return self.transports.subscriber

    @property
    def publisher(self) -> TrackPublisher | None:
        return self.transports.publisher

    # -- start -------------------------------------------------------------------------------
    def start(self) -> None:
        participant = self.participant
        participant.set_state(State.JOINED)  # others learn of the newcomer
        services = self.services
        self.sink.send(
            rtc.SignalResponse(
                join=join_response(
                    services.config,
                    services.node_id,
                    self.room,
                    participant,
                    subscriber_primary=self.transports.subscriber_primary,
                )
            )
        )
        self.joined = True
        self._send_refresh_token()
        self.transports.send_subscriber_offer()
        self._set_timer("join", JOIN_TIMEOUT, self._on_join_timeout)
        self._set_timer("refresh", REFRESH_INTERVAL, self._on_refresh_timer)
        self._set_timer("ping", PING_DEADLINE, self._on_ping_timeout)
        log.info(
            "participant joined",
            extra={
                "room": self.room.name,
                "identity": participant.identity,
                "participant_sid": participant.sid,
            },
        )

    # -- ParticipantSession ------------------------------------------------------------------
    def send_signal(self, message: rtc.SignalResponse) -> None:
        if self.closed:
            return
        self.sink.send(message)
        if message.WhichOneof("message") == "update" and any(
            p.sid == self.participant.sid for p in message.update.participants
        ):
            self._schedule_refresh_token()

    def on_self_changed(self) -> None:
        """Our own info changed (possibly by the server API): apply permission changes now."""
        permission = self.participant.permission
        if permission == self._permission or self.closed:
            return
        before = self._permission
        self._permission = models.ParticipantPermission()
        self._permission.CopyFrom(permission)
        subscriptions = self.services.subscriptions
        if (before.can_publish, list(before.can_publish_sources)) != (
            permission.can_publish,
            list(permission.can_publish_sources),
        ):
            subscriptions.enforce_publish_permission(self.room, self.participant)
        if before.can_subscribe != permission.can_subscribe:
            subscriptions.enforce_subscribe_permission(self.room, self.participant)
            self.services.data_tracks.enforce_subscribe_permission(self.room, self.participant)
        if before.can_publish_data != permission.can_publish_data:
            self.services.data_tracks.enforce_publish_permission(self.room, self.participant)

    def update_subscriptions(self, track_sids: list[str], subscribe: bool) -> None:
        self.services.subscriptions.update_subscription(
            self.room, self.participant, track_sids, subscribe
        )

    def mute_track(self, track_sid: str, muted: bool) -> None:
        """Server-initiated (RoomService MutePublishedTrack): tell the publisher, then apply."""
        self.send_signal(rtc.SignalResponse(mute=rtc.MuteTrackRequest(sid=track_sid, muted=muted)))
        self.set_muted(track_sid, muted)

    def set_muted(self, track_sid: str, muted: bool) -> None:
        self.services.tracks.set_muted(self.participant, track_sid, muted)
        if track_sid in self.participant.tracks:
            self.services.subscriptions.plane.set_muted(track_sid, muted)

    def disconnect(self, reason: int, action: int) -> None:
        """The server ends this session (the caller removes the participant from the room)."""
        if self.closed:
            return
        self.sink.send(leave_response(reason, action))
        self.sink.close()
        self._teardown()

    def send_data(self, packet: bytes, reliable: bool) -> bool:
        if self.closed:
            return False
        # Lossy packets skip participants not ACTIVE yet (docs/protocol/06-data-packets.md).
        lossy_allowed = self.participant.state == State.ACTIVE
        return self.transports.send_data(packet, reliable, lossy_allowed=lossy_allowed)

    def send_data_track(self, packet: bytes, *, max_backlog: int | None = None) -> bool:
        if self.closed:
            return False
        return self.transports.send_data_track(packet, max_backlog=max_backlog)

    # -- transports --------------------------------------------------------------------------
    def _on_primary_state(self, state: str) -> None:
        if self.closed:
            return
        if state == "connected" and self.participant.state == State.JOINED:
            self._cancel_timer("join")
            self.participant.set_state(State.ACTIVE)
            self.room.emit("participant_joined", self.participant)
            self.services.subscriptions.participant_active(self.room, self.participant)
        elif state == "failed":
            log.info("primary transport failed", extra={"identity": self.participant.identity})
            self.leave(Reason.CONNECTION_TIMEOUT)
        elif state == "closed" and self.sink.closed:
            # The peer closed its PeerConnection (DTLS close_notify) after its signalling was
            # already gone: nothing is left to resume.
            log.info("primary transport closed", extra={"identity": self.participant.identity})
            self.leave(Reason.SIGNAL_CLOSE)

    def may_update_metadata(self) -> bool:
        """Rate limit of the participant's own metadata updates (each is broadcast)."""
        return self._metadata_updates.allow(self._scheduler.time())

    # -- signalling --------------------------------------------------------------------------
    def on_request(self) -> None:
        """The client sent something: it is alive (restart the ping deadline)."""
        self._set_timer("ping", PING_DEADLINE, self._on_ping_timeout)

    def _on_ping_timeout(self) -> None:
        if self.closed or self.sink.closed:
            return
        log.info("ping timeout: closing signalling", extra={"identity": self.participant.identity})
        self.sink.close(1000, "ping timeout")

    def resume(self, sink: SignalSink, options: JoinOptions) -> None:
        """Re-attach a new WebSocket to this live session
        (docs/protocol/07-reconnect-ping-leave.md §7.2)."""
        old = self.sink
        self.sink = sink
        old.close()
        self._cancel_timer("signal_lost")
        self._set_timer("ping", PING_DEADLINE, self._on_ping_timeout)
        services = self.services
        sink.send(
            rtc.SignalResponse(
                reconnect=reconnect_response(services.config, services.node_id, self.participant)
            )
        )
        others = [p.to_proto() for p in self.room.live_participants() if not p.hidden]
        sink.send(rtc.SignalResponse(update=rtc.ParticipantUpdate(participants=others)))
        sink.send(rtc.SignalResponse(room_update=rtc.RoomUpdate(room=self.room.to_proto())))
        services.data_tracks.resumed(self.participant)
        self.transports.restart_subscriber_ice()  # the resume offer is an ICE restart
        log.info("participant resumed", extra={"identity": self.participant.identity})

    def on_signal_closed(self, sink: SignalSink) -> None:
        """The WebSocket ended without a leave: wait for a resume, or remove the participant."""
        if self.closed or sink is not self.sink:
            return
        if self.participant.state != State.ACTIVE:
            self.leave(Reason.SIGNAL_CLOSE)
            return
        if self.transports.primary_connected():
            # Media is still up: keep the participant until it resumes, leaves, or its
            # transport times out (consent, RFC 7675), which removes it.
            log.info(
                "signalling lost; kept while its media is up",
                extra={"identity": self.participant.identity},
            )
            return
        self._set_timer("signal_lost", SIGNAL_LOST_GRACE, lambda: self.leave(Reason.SIGNAL_CLOSE))

    # -- ending ------------------------------------------------------------------------------
    def client_left(self) -> None:
        """The client sent a leave: acknowledge it and remove the participant."""
        self.sink.send(leave_response(Reason.CLIENT_INITIATED, Action.DISCONNECT))
        self.leave(Reason.CLIENT_INITIATED)

    def full_reconnect(self) -> None:
        """Tell the client to reconnect from scratch (its state cannot be recovered)."""
        self.sink.send(leave_response(Reason.STATE_MISMATCH, Action.RECONNECT))
        self.leave(Reason.STATE_MISMATCH)

    def drop_without_leave(self, reason: str) -> None:
        """As if the node failed: no leave; a resume then finds nothing and reconnects fully."""
        self.sink.close(1001, reason)
        self._teardown()
        self.room.remove_participant(self.participant, Reason.STATE_MISMATCH)

    def _on_join_timeout(self) -> None:
        if self.participant.state != State.ACTIVE:
            self.sink.send(leave_response(Reason.JOIN_FAILURE, Action.DISCONNECT))
            self.leave(Reason.JOIN_FAILURE)

    def leave(self, reason: int) -> None:
        """End the session from our side and remove the participant from the room."""
        if self.closed:
            return
        self.sink.close()
        self._teardown()
        self.room.remove_participant(self.participant, reason)

    def _teardown(self) -> None:
        self.closed = True
        for handle in self._timers.values():
            handle.cancel()
        self._timers.clear()
        services = self.services
        services.data.cancel_rpcs_for(self.participant)
        services.subscriptions.participant_left(self.room, self.participant)
        services.data_tracks.participant_left(self.room, self.participant)
        services.tracks.participant_left(self.participant)
        self.transports.close()

    # -- tokens and timers -------------------------------------------------------------------
    def _schedule_refresh_token(self) -> None:
        # Several updates in one loop turn get one token.
        if not self._refresh_pending:
            self._refresh_pending = True
            self._scheduler.call_later(0, self._send_refresh_token)

    def _send_refresh_token(self) -> None:
        self._refresh_pending = False
        if not self.closed:
            token = self.services.refresh_token(self.claims, self.participant)
            self.sink.send(rtc.SignalResponse(refresh_token=token))

    def _on_refresh_timer(self) -> None:
        self._send_refresh_token()
        self._set_timer("refresh", REFRESH_INTERVAL, self._on_refresh_timer)

    def _set_timer(self, name: str, delay: float, callback: Callable[[], object]) -> None:
        self._cancel_timer(name)
        self._timers[name] = self._scheduler.call_later(delay, callback)

    def _cancel_timer(self, name: str) -> None:
        handle = self._timers.pop(name, None)
        if handle is not None:
            handle.cancel()
