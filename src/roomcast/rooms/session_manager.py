"""SessionManager: validates joins, admits participants, resumes sessions, fans out updates.

The join sequence follows docs/protocol/02-join-and-transports.md §2.1: validate → create the room
if needed → replace a session holding the same identity (DUPLICATE_IDENTITY) → JoinResponse first →
subscriber offer.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from typing import Any

from livekit.protocol import models, rtc

from roomcast.auth import Claims, create_token
from roomcast.config import Config
from roomcast.errors import (
    InvalidArgumentError,
    PermissionDeniedError,
    RoomFullError,
    RoomNotFoundError,
)
from roomcast.media.udp_mux import UdpMux
from roomcast.rooms.admin import RoomAdmin
from roomcast.rooms.contracts import (
    JoinOptions,
    Scheduler,
    SessionMetrics,
    SignalSink,
    leave_response,
)
from roomcast.rooms.data import DataExchange
from roomcast.rooms.data_tracks import DataTrackLimits, DataTrackManager
from roomcast.rooms.manager import RoomManager, validate_room_name
from roomcast.rooms.participant import Participant, State
from roomcast.rooms.room import Room
from roomcast.rooms.session import Session, SessionServices
from roomcast.rooms.signal_handler import SignalHandler
from roomcast.rooms.subscriptions import SubscriptionManager
from roomcast.rooms.tracks import TrackManager
from roomcast.rooms.transport_manager import MediaTaps, ParticipantTransports

log = logging.getLogger(__name__)

Reason = models.DisconnectReason
Action = rtc.LeaveRequest.Action
REFRESH_TOKEN_MIN_TTL = 600.0


class SessionManager:
    def __init__(
        self,
        config: Config,
        admin: RoomAdmin,
        mux: UdpMux,
        media: SubscriptionManager,
        node_id: str,
        metrics: SessionMetrics,
    ) -> None:
        self.config = config
        self.admin = admin
        self.rooms: RoomManager = admin.rooms
        self.data: DataExchange = admin.data
        self.mux = mux
        self.media = media
        self.tracks: TrackManager = media.tracks
        self.node_id = node_id
        self.metrics = metrics
        # The RTP entry point, with a sampled latency measurement around it.
        self.forward_rtp = metrics.timed_forward(media.plane.handle_rtp)
        self._signing_key, self._signing_secret = next(iter(config.keys.items()))
        self.data_tracks = DataTrackManager(DataTrackLimits.from_config(config), metrics)
        self.services = SessionServices(
            config=config,
            node_id=node_id,
            metrics=metrics,
            subscriptions=media,
            tracks=media.tracks,
            data=admin.data,
            admin=admin,
            data_tracks=self.data_tracks,
            refresh_token=self.refresh_token,
        )
        self._taps = MediaTaps(mux, media.plane, self.forward_rtp, admin.data, self.data_tracks)

    # -- validation (before the WebSocket upgrade) -------------------------------------------
    def validate_join(self, claims: Claims, room_exists: bool | None = None) -> None:
        """Refuse joins the token or limits do not allow.

        ``room_exists`` comes from the routing store in multi-node mode (the room may be on
        another node); otherwise this node's rooms are asked.
        """
        grant = claims.video
        if not grant.room_join:
            raise PermissionDeniedError()
        if not grant.room:
            raise InvalidArgumentError("no room name")
        validate_room_name(grant.room, self.config.limit)
        if not claims.identity:
            raise InvalidArgumentError("identity cannot be empty")
        if len(claims.identity.encode()) > self.config.limit.max_participant_identity_length:
            raise InvalidArgumentError("identity is too long")
        if len(claims.name.encode()) > self.config.limit.max_participant_name_length:
            raise InvalidArgumentError("name is too long")
        if room_exists is None:
            room_exists = self.rooms.get(grant.room) is not None
        if not room_exists and not self.config.room.auto_create and not grant.room_create:
            raise RoomNotFoundError(grant.room)

    # -- connecting ---------------------------------------------------------------------------
    async def connect(
        self, claims: Claims, options: JoinOptions, sink: SignalSink
    ) -> SignalHandler | None:
        """Admit a participant (or resume its session); None when refused (the sink is told)."""
        room_name = claims.video.room
        if options.reconnect:
            return self._resume(claims, options, sink)
        room = self.rooms.get(room_name)
        if room is None:
            room = self._create_room_for(claims)
        self._wire(room)
        participant = Participant.from_claims(claims, options.client_info.client_protocol)
        participant.capabilities = list(options.client_info.capabilities)
        try:
            room.check_capacity(participant)
        except RoomFullError as exc:
            log.info("join refused: %s", exc, extra={"room": room_name})
            sink.send(leave_response(Reason.JOIN_FAILURE, Action.DISCONNECT))
            sink.close()
            return None
        existing = room.participants.get(claims.identity)
        if existing is not None:
            self.replace(room, existing)
        room.add_participant(participant)
        transports = ParticipantTransports(
            self._taps,
            room,
            participant,
            subscriber_primary=participant.permission.can_subscribe,
        )
        session = Session(
            self.services,
            room,
            participant,
            claims,
            options,
            sink,
            transports,
            self._scheduler(),
        )
        participant.session = session
        session.start()
        return SignalHandler(session, transports)

    def _resume(
        self, claims: Claims, options: JoinOptions, sink: SignalSink
    ) -> SignalHandler | None:
        room = self.rooms.get(claims.video.room)
        participant = room.participants.get(claims.identity) if room is not None else None
        session = participant.session if participant is not None else None
        if not isinstance(session, Session) or session.closed:
            # Unknown or closed session: the client must do a full reconnect.
            sink.send(leave_response(Reason.STATE_MISMATCH, Action.RECONNECT))
            sink.close()
            return None
        session.resume(sink, options)
        assert isinstance(session.transports, ParticipantTransports)
        return SignalHandler(session, session.transports)

    @staticmethod
    def _scheduler() -> Scheduler:
        return asyncio.get_running_loop()

    def _create_room_for(self, claims: Claims) -> Room:
        config: Mapping[str, Any] = claims.room_config or {}

        def number(key: str) -> int:
            value = config.get(key, 0)
            return int(value) if isinstance(value, int | str) and str(value).isdigit() else 0

        metadata = config.get("metadata", "")
        return self.rooms.create(
            claims.video.room,
            empty_timeout=number("emptyTimeout") or number("empty_timeout"),
            departure_timeout=number("departureTimeout") or number("departure_timeout"),
            max_participants=number("maxParticipants") or number("max_participants"),
            metadata=metadata if isinstance(metadata, str) else "",
        )

    def replace(self, room: Room, old: Participant) -> None:
        """A new join with an identity already present removes the old session first."""
        log.info("duplicate identity, replacing session", extra={"identity": old.identity})
        if old.session is not None:
            old.session.disconnect(Reason.DUPLICATE_IDENTITY, Action.DISCONNECT)
        room.remove_participant(old, Reason.DUPLICATE_IDENTITY)

    # -- fan-out ------------------------------------------------------------------------------
    def _wire(self, room: Room) -> None:
        if room.on_participant_changed is None:
            room.on_participant_changed = self.broadcast_participant
            room.on_room_updated = self.broadcast_room

    def broadcast_participant(self, room: Room, changed: Participant) -> None:
        """Full-snapshot update to everyone who has had its JoinResponse
        (docs/protocol/05-room-and-participant-updates.md §5.1)."""
        info = changed.to_proto()
        update = rtc.SignalResponse(update=rtc.ParticipantUpdate(participants=[info]))
        disconnected = changed.state == State.DISCONNECTED
        for other in list(room.participants.values()):
            session = other.session
            if session is None or not session.joined:
                continue
            if other is changed:
                if not disconnected:
                    session.send_signal(update)
                    session.on_self_changed()
                continue
            if changed.hidden:
                continue
            # A replaced identity is not announced as gone: the new SID replaces it.
            if disconnected and changed.disconnect_reason == Reason.DUPLICATE_IDENTITY:
                continue
            session.send_signal(update)

    def broadcast_room(self, room: Room) -> None:
        update = rtc.SignalResponse(room_update=rtc.RoomUpdate(room=room.to_proto()))
        for participant in list(room.participants.values()):
            session = participant.session
            if session is not None and session.joined:
                session.send_signal(update)

    # -- tokens -------------------------------------------------------------------------------
    def refresh_token(self, claims: Claims, participant: Participant) -> str:
        """A fresh token with the participant's current state
        (docs/protocol/05-room-and-participant-updates.md §5.8)."""
        remaining = claims.expires_at - time.time()
        return create_token(
            self._signing_key,
            self._signing_secret,
            identity=participant.identity,
            name=participant.name,
            metadata=participant.metadata,
            attributes=participant.attributes,
            video=claims.video.with_permission(participant.permission),
            kind=claims.kind if claims.kind != "standard" else "",
            ttl_seconds=max(REFRESH_TOKEN_MIN_TTL, remaining),
            room_config=claims.room_config,
        )
