"""One participant's signalling session: JoinResponse, both PeerConnections, every request.

The session owns the participant's two transports (reference 02 §2.3): the *subscriber* PC
where the server offers (and opens ``_reliable``/``_lossy``), and the *publisher* PC where the
client offers. It never blocks: responses are queued on the sink, transports do their own I/O.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections import deque
from typing import TYPE_CHECKING

from livekit.protocol import models, rtc

from roomcast import LIVEKIT_COMPATIBLE_VERSION, PROTOCOL_VERSION, __version__
from roomcast.errors import InvalidArgumentError
from roomcast.media import jsep
from roomcast.media.sdp import SdpError, SessionDescription
from roomcast.media.transport import PeerTransport
from roomcast.rooms.admin import apply_participant_update
from roomcast.rooms.data import LOSSY_LABEL, RELIABLE_LABEL
from roomcast.rooms.participant import Participant, State
from roomcast.rooms.publisher_peer import MatchedSection, PublisherPeer
from roomcast.rooms.room import Room
from roomcast.rooms.session_manager import leave_response as _leave
from roomcast.rooms.subscriber_peer import SubscriberPeer

if TYPE_CHECKING:
    from roomcast.auth import Claims
    from roomcast.rooms.session_manager import JoinOptions, SessionManager, SignalSink

log = logging.getLogger(__name__)

Reason = models.DisconnectReason
Action = rtc.LeaveRequest.Action
Target = rtc.SignalTarget

PING_INTERVAL = 5  # seconds, as LiveKit (must be non-zero for the Rust SDK)
PING_TIMEOUT = 15
JOIN_TIMEOUT = 60.0  # no ACTIVE within this → removed with JOIN_FAILURE (reference 11 §11.4)
REFRESH_INTERVAL = 300.0  # refresh_token every 5 min (reference 05 §5.8)
# No ping (or any request) for this long: the signalling connection is closed as dead, as
# livekit-server does with the ping_timeout it announces (reference 07 §7.1).
PING_DEADLINE = float(PING_TIMEOUT)
SIGNAL_LOST_GRACE = 15.0  # an ACTIVE participant may resume this long after its WebSocket drops
MAX_PENDING_RELIABLE = 100 * 1024  # bytes held until the subscriber's _reliable opens


def _now_ms() -> int:
    return int(time.time() * 1000)


class Session:
    def __init__(
        self,
        manager: SessionManager,
        room: Room,
        participant: Participant,
        claims: Claims,
        options: JoinOptions,
        sink: SignalSink,
    ) -> None:
        self.manager = manager
        self.room = room
        self.participant = participant
        self.claims = claims
        self.options = options
        self.sink = sink
        self.joined = False
        self.closed = False
        self.subscriber: PeerTransport | None = None
        self.publisher: PublisherPeer | None = None
        self.subscriber_primary = participant.permission.can_subscribe
        self._unmatched: dict[str, MatchedSection] = {}  # sending sections without add_track
        self._permission = models.ParticipantPermission()
        self._permission.CopyFrom(participant.permission)
        self._pending_reliable: deque[bytes] = deque()
        self._pending_bytes = 0
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._refresh_pending = False
        self._loop = asyncio.get_running_loop()

    # -- start ------------------------------------------------------------------------------
    def start(self) -> None:
        participant = self.participant
        subscriber = self.manager.mux.create_transport(on_state=self._on_subscriber_state)
        subscriber.on_channel_open = self._on_subscriber_channel_open
        subscriber.on_rtcp = self._on_subscriber_rtcp
        self.subscriber_peer = SubscriberPeer(
            subscriber, self.manager.media.plane, participant.sid, self.send_signal
        )
        # Server-created channels open in-band (DCEP) once SCTP is up (reference 02 §2.4).
        subscriber.create_data_channel(RELIABLE_LABEL, ordered=True)
        subscriber.create_data_channel(LOSSY_LABEL, ordered=False, max_retransmits=0)
        self.subscriber = subscriber

        participant.set_state(State.JOINED)  # others learn of the newcomer
        self.sink.send(rtc.SignalResponse(join=self._join_response()))
        self.joined = True
        self._send_refresh_token()
        self.subscriber_peer.send_offer()
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

    def _join_response(self) -> rtc.JoinResponse:
        config = self.manager.config
        others = [
            p.to_proto()
            for p in self.room.live_participants()
            if p is not self.participant and not p.hidden
        ]
        ice_servers = (
            [rtc.ICEServer(urls=config.rtc.stun_servers)] if config.rtc.stun_servers else []
        )
        return rtc.JoinResponse(
            room=self.room.to_proto(),
            participant=self.participant.to_proto(),
            other_participants=others,
            server_version=LIVEKIT_COMPATIBLE_VERSION,
            server_info=models.ServerInfo(
                edition=models.ServerInfo.Edition.Standard,
                version=LIVEKIT_COMPATIBLE_VERSION,
                protocol=PROTOCOL_VERSION,
                debug_info=f"roomcast {__version__}",
                region=config.region,
                node_id=self.manager.node_id,
            ),
            ice_servers=ice_servers,
            subscriber_primary=self.subscriber_primary,
            ping_interval=PING_INTERVAL,
            ping_timeout=PING_TIMEOUT,
            enabled_publish_codecs=[
                models.Codec(mime=m) for m in self.room.settings.enabled_codecs
            ],
            sif_trailer=secrets.token_bytes(32),
            fast_publish=False,
        )

    # -- ParticipantSession (what the room asks of us) ---------------------------------------
    def send_signal(self, message: object) -> None:
        if not self.closed:
            assert isinstance(message, rtc.SignalResponse)
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
        media = self.manager.media
        if (before.can_publish, list(before.can_publish_sources)) != (
            permission.can_publish,
            list(permission.can_publish_sources),
        ):
            media.enforce_publish_permission(self)
        if before.can_subscribe != permission.can_subscribe:
            media.enforce_subscribe_permission(self)

    def update_subscriptions(self, track_sids: list[str], subscribe: bool) -> None:
        self.manager.media.update_subscription(self, track_sids, subscribe)

    def mute_track(self, track_sid: str, muted: bool) -> None:
        """Server-initiated (RoomService MutePublishedTrack): tell the publisher, then apply."""
        self.send_signal(rtc.SignalResponse(mute=rtc.MuteTrackRequest(sid=track_sid, muted=muted)))
        self._on_mute(rtc.MuteTrackRequest(sid=track_sid, muted=muted))

    def disconnect(self, reason: int, action: int) -> None:
        """The server ends this session (the caller removes the participant from the room)."""
        if self.closed:
            return
        self.sink.send(_leave(reason, action))
        self.sink.close()
        self._teardown()

    def send_data(self, packet: bytes, reliable: bool) -> bool:
        subscriber = self.subscriber
        if self.closed or subscriber is None:
            return False
        if reliable:
            if subscriber.has_channel(RELIABLE_LABEL) and not self._pending_reliable:
                return subscriber.send_data(RELIABLE_LABEL, packet)
            # Not open yet: hold it and replay on open (reference 02 §2.4).
            if self._pending_bytes + len(packet) > MAX_PENDING_RELIABLE:
                return False
            self._pending_reliable.append(packet)
            self._pending_bytes += len(packet)
            return True
        if self.participant.state != State.ACTIVE:
            return False  # lossy sends skip participants that are not ACTIVE (reference 06)
        return subscriber.send_data(LOSSY_LABEL, packet)

    # -- transports --------------------------------------------------------------------------
    def _on_subscriber_state(self, state: str) -> None:
        if self.subscriber_primary:
            self._on_primary_state(state)

    def _on_publisher_state(self, state: str) -> None:
        if not self.subscriber_primary:
            self._on_primary_state(state)

    def _on_primary_state(self, state: str) -> None:
        if self.closed:
            return
        if state == "connected" and self.participant.state == State.JOINED:
            self._cancel_timer("join")
            self.participant.set_state(State.ACTIVE)
            self.room.emit("participant_joined", self.participant)
            self.manager.media.participant_active(self)
        elif state == "failed":
            log.info("primary transport failed", extra={"identity": self.participant.identity})
            self._leave(Reason.CONNECTION_TIMEOUT)
        elif state == "closed" and self.sink.closed:
            # The peer closed its PeerConnection (DTLS close_notify) after its signalling was
            # already gone: nothing is left to resume.
            log.info("primary transport closed", extra={"identity": self.participant.identity})
            self._leave(Reason.SIGNAL_CLOSE)

    def _on_subscriber_channel_open(self, label: str) -> None:
        if label != RELIABLE_LABEL or self.subscriber is None:
            return
        while self._pending_reliable:
            packet = self._pending_reliable.popleft()
            self._pending_bytes -= len(packet)
            self.subscriber.send_data(RELIABLE_LABEL, packet)

    def _on_subscriber_rtcp(self, packet: bytes) -> None:
        self.manager.media.plane.handle_subscriber_rtcp(self.participant.sid, packet)

    def _on_publisher_rtp(self, packet: bytes) -> None:
        self.manager.forward_rtp(self.participant.sid, packet)

    def _on_publisher_rtcp(self, packet: bytes) -> None:
        self.manager.media.plane.handle_publisher_rtcp(self.participant.sid, packet)

    def _on_publisher_data(self, label: str, payload: bytes) -> None:
        if not self.closed:
            self.manager.data.handle_incoming(self.room, self.participant, label, payload)

    # -- requests ----------------------------------------------------------------------------
    def handle_request(self, request: rtc.SignalRequest) -> None:
        if self.closed:
            return
        self._set_timer("ping", PING_DEADLINE, self._on_ping_timeout)
        which = request.WhichOneof("message")
        self.manager.metrics.signal_requests.labels(which or "unknown").inc()
        handler = getattr(self, f"_on_{which}", None) if which else None
        if handler is None:
            # Unknown or not-yet-supported members are tolerated, as SDKs do (reference 01 §1.5).
            log.debug("ignoring signal request %s", which)
            return
        handler(getattr(request, which))

    def _on_ping_timeout(self) -> None:
        if self.closed or self.sink.closed:
            return
        log.info("ping timeout: closing signalling", extra={"identity": self.participant.identity})
        self.sink.close(1000, "ping timeout")

    def _on_ping(self, timestamp: int) -> None:
        self.sink.send(rtc.SignalResponse(pong=_now_ms()))

    def _on_ping_req(self, ping: rtc.Ping) -> None:
        self.sink.send(
            rtc.SignalResponse(
                pong_resp=rtc.Pong(last_ping_timestamp=ping.timestamp, timestamp=_now_ms())
            )
        )

    def _on_offer(self, description: rtc.SessionDescription) -> None:
        """The client's publisher-PC offer: answer it with the same id (reference 02 §2.3)."""
        try:
            offer = SessionDescription.parse(description.sdp)
            if self.publisher is None:
                self.publisher = self._create_publisher()
            self._apply_remote(self.publisher.transport, offer)
            matched, stopped = self.publisher.answer(offer, description.id)
        except SdpError as exc:
            log.info("bad publisher offer: %s", exc, extra={"identity": self.participant.identity})
            self._full_reconnect()
            return
        media = self.manager.media
        for mid in stopped:
            track_sid = self.publisher.published.get(mid)
            if track_sid is not None:
                media.unpublish(self, track_sid, notify_publisher=False)
        for match in matched:
            if match.cid is not None:
                media.publish(self, match)
            elif match.section.mid is not None:
                self._unmatched[match.section.mid] = match

    def _create_publisher(self) -> PublisherPeer:
        transport = self.manager.mux.create_transport(on_state=self._on_publisher_state)
        transport.on_data = self._on_publisher_data
        transport.on_rtp = self._on_publisher_rtp
        transport.on_rtcp = self._on_publisher_rtcp
        return PublisherPeer(transport, self.participant, self.send_signal)

    def _apply_remote(self, transport: PeerTransport, description: SessionDescription) -> None:
        """Take the peer's ICE credentials and DTLS fingerprint from its bundled transport."""
        section = next((m for m in description.media if not m.rejected), None)
        if section is None:
            raise SdpError("no accepted media section")
        ufrag = section.ice_ufrag or description.ice_ufrag
        pwd = section.ice_pwd or description.ice_pwd
        if ufrag and pwd:
            transport.set_remote_ice(ufrag, pwd)
        fingerprints = description.fingerprints_for(section)
        if not fingerprints:
            raise SdpError("no a=fingerprint for the DTLS transport (RFC 8122 §5)")
        # Prefer sha-256 (what every client sends); any listed hash identifies the certificate.
        chosen = next(
            (f for f in fingerprints if f.algorithm.lower() == "sha-256"), fingerprints[0]
        )
        try:
            transport.set_remote_fingerprint(f"{chosen.algorithm} {chosen.value}")
        except ValueError as exc:
            raise SdpError(f"unusable fingerprint: {exc}") from exc

    def _on_answer(self, description: rtc.SessionDescription) -> None:
        """The client's answer to our subscriber offer (its id is not checked: Rust sends 0)."""
        if self.subscriber is None:
            return
        try:
            answer = SessionDescription.parse(description.sdp)
            self._apply_remote(self.subscriber, answer)
            self.subscriber_peer.handle_answer(answer)
        except SdpError as exc:
            log.info(
                "bad subscriber answer: %s", exc, extra={"identity": self.participant.identity}
            )
            self._full_reconnect()

    def _on_trickle(self, trickle: rtc.TrickleRequest) -> None:
        try:
            candidate, _, _ = jsep.parse_candidate_init(trickle.candidateInit)
        except SdpError as exc:
            log.debug("ignoring bad trickle candidate: %s", exc)
            return
        if trickle.target == Target.SUBSCRIBER:
            transport = self.subscriber
        else:
            transport = self.publisher.transport if self.publisher is not None else None
        if transport is not None and candidate:
            try:
                transport.add_remote_candidate(candidate)
            except ValueError as exc:
                log.debug("ignoring bad trickle candidate: %s", exc)

    def _on_leave(self, leave: rtc.LeaveRequest) -> None:
        self.sink.send(_leave(Reason.CLIENT_INITIATED, Action.DISCONNECT))
        self._leave(Reason.CLIENT_INITIATED)

    def _on_add_track(self, request: rtc.AddTrackRequest) -> None:
        if not self.manager.tracks.add_track(self, request):
            return
        # Media may have been offered before its AddTrackRequest (SRV pendingRemoteTracks).
        pending = self.participant.pending_tracks[request.cid]
        for mid, match in list(self._unmatched.items()):
            msid = match.section.msid
            same_kind = match.section.kind == ("audio" if pending.type == 0 else "video")
            if (msid is not None and msid.track_id == request.cid) or same_kind:
                del self._unmatched[mid]
                match.cid = request.cid
                self.manager.media.publish(self, match)
                return

    def _on_mute(self, request: rtc.MuteTrackRequest) -> None:
        self.manager.tracks.set_muted(self.participant, request.sid, request.muted)
        if request.sid in self.participant.tracks:
            self.manager.media.plane.set_muted(request.sid, request.muted)

    def _on_update_metadata(self, request: rtc.UpdateParticipantMetadata) -> None:
        participant = self.participant

        def respond(reason: int, message: str = "") -> None:
            self.sink.send(
                rtc.SignalResponse(
                    request_response=rtc.RequestResponse(
                        request_id=request.request_id,
                        reason=reason,  # type: ignore[arg-type]
                        message=message,
                        update_metadata=request,
                    )
                )
            )

        if not participant.permission.can_update_metadata:
            respond(
                rtc.RequestResponse.NOT_ALLOWED, "does not have permission to update own metadata"
            )
            return
        try:
            self.manager.admin.check_participant_fields(
                request.metadata, request.name, dict(request.attributes)
            )
        except InvalidArgumentError as exc:
            respond(rtc.RequestResponse.LIMIT_EXCEEDED, str(exc))
            return
        if apply_participant_update(
            participant, request.metadata, request.name, dict(request.attributes)
        ):
            participant.touch()
        respond(rtc.RequestResponse.OK)

    def _on_subscription_permission(self, permission: rtc.SubscriptionPermission) -> None:
        self.participant.subscription_permission = permission

    def _on_subscription(self, update: rtc.UpdateSubscription) -> None:
        sids = list(update.track_sids)
        for entry in update.participant_tracks:
            sids.extend(entry.track_sids)
        self.manager.media.update_subscription(self, sids, update.subscribe)

    def _on_track_setting(self, settings: rtc.UpdateTrackSettings) -> None:
        self.manager.media.track_settings(self, settings)

    def _on_sync_state(self, state: rtc.SyncState) -> None:
        # A single node keeps the real state; the client's view only matters for migration.
        log.debug("sync_state received", extra={"identity": self.participant.identity})

    def _on_update_audio_track(self, update: rtc.UpdateLocalAudioTrack) -> None:
        track = self.participant.tracks.get(update.track_sid)
        if track is not None:
            del track.audio_features[:]
            track.audio_features.extend(update.features)
            self.participant.touch()

    def _on_update_video_track(self, update: rtc.UpdateLocalVideoTrack) -> None:
        track = self.participant.tracks.get(update.track_sid)
        if track is not None:
            track.width, track.height = update.width, update.height
            self.participant.touch()

    def _on_simulate(self, scenario: rtc.SimulateScenario) -> None:
        """Test hooks the SDKs' own test suites use, behaving as LiveKit's room.go does."""
        which = scenario.WhichOneof("scenario")
        if which in ("node_failure", "migration"):
            # Drop the participant without a leave: the client's resume then finds no session
            # and is told to reconnect from scratch.
            self.sink.close(1001, f"simulated {which}")
            self._teardown()
            self.room.remove_participant(self.participant, Reason.STATE_MISMATCH)
        elif which == "server_leave":
            self.sink.send(_leave(Reason.SERVER_SHUTDOWN, Action.DISCONNECT))
            self._leave(Reason.SERVER_SHUTDOWN)
        elif which == "leave_request_full_reconnect":
            self._full_reconnect()
        elif which == "speaker_update":
            speaker = models.SpeakerInfo(sid=self.participant.sid, level=0.9, active=True)
            update = rtc.SignalResponse(speakers_changed=rtc.SpeakersChanged(speakers=[speaker]))
            for other in self.room.live_participants():
                if other.session is not None and other.session.joined:
                    other.session.send_signal(update)
        else:
            log.debug("simulate %s: not supported", which)

    def _on_update_layers(self, _: object) -> None:
        """Deprecated; LiveKit ignores it too."""

    # -- resume and end ------------------------------------------------------------------------
    def resume(self, sink: SignalSink, options: JoinOptions) -> None:
        """Re-attach a new WebSocket to this live session (reference 07 §7.2)."""
        old = self.sink
        self.sink = sink
        old.close()
        self._cancel_timer("signal_lost")
        self._set_timer("ping", PING_DEADLINE, self._on_ping_timeout)
        config = self.manager.config
        sink.send(
            rtc.SignalResponse(
                reconnect=rtc.ReconnectResponse(
                    ice_servers=[rtc.ICEServer(urls=config.rtc.stun_servers)]
                    if config.rtc.stun_servers
                    else [],
                    server_info=models.ServerInfo(
                        version=LIVEKIT_COMPATIBLE_VERSION,
                        protocol=PROTOCOL_VERSION,
                        node_id=self.manager.node_id,
                    ),
                    last_message_seq=self.participant.last_data_sequence,
                )
            )
        )
        others = [p.to_proto() for p in self.room.live_participants() if not p.hidden]
        sink.send(rtc.SignalResponse(update=rtc.ParticipantUpdate(participants=others)))
        sink.send(rtc.SignalResponse(room_update=rtc.RoomUpdate(room=self.room.to_proto())))
        if self.subscriber is not None:
            self.subscriber.restart_ice()  # the resume offer is an ICE restart (reference 07)
        self.subscriber_peer.send_offer()
        log.info("participant resumed", extra={"identity": self.participant.identity})

    def on_signal_closed(self, sink: SignalSink) -> None:
        """The WebSocket ended without a leave: wait for a resume, or remove the participant."""
        if self.closed or sink is not self.sink:
            return
        if self.participant.state != State.ACTIVE:
            self._leave(Reason.SIGNAL_CLOSE)
            return
        publisher = self.publisher.transport if self.publisher is not None else None
        primary = self.subscriber if self.subscriber_primary else publisher
        if primary is not None and primary.state == "connected":
            # Media is still up: keep the participant until it resumes, leaves, or its
            # transport times out (consent, RFC 7675), which removes it (reference 07 §7.2).
            log.info(
                "signalling lost; kept while its media is up",
                extra={"identity": self.participant.identity},
            )
            return
        self._set_timer("signal_lost", SIGNAL_LOST_GRACE, lambda: self._leave(Reason.SIGNAL_CLOSE))

    def _full_reconnect(self) -> None:
        self.sink.send(_leave(Reason.STATE_MISMATCH, Action.RECONNECT))
        self._leave(Reason.STATE_MISMATCH)

    def _on_join_timeout(self) -> None:
        if self.participant.state != State.ACTIVE:
            self.sink.send(_leave(Reason.JOIN_FAILURE, Action.DISCONNECT))
            self._leave(Reason.JOIN_FAILURE)

    def _leave(self, reason: int) -> None:
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
        self.manager.data.cancel_rpcs_for(self.participant)
        self.manager.media.participant_left(self)
        self.manager.tracks.participant_left(self)
        publisher = self.publisher.transport if self.publisher is not None else None
        for transport in (self.subscriber, publisher):
            if transport is not None:
                self._loop.create_task(transport.close())

    # -- tokens and timers ---------------------------------------------------------------------
    def _schedule_refresh_token(self) -> None:
        if not self._refresh_pending:
            self._refresh_pending = True
            self._loop.call_soon(self._send_refresh_token)

    def _send_refresh_token(self) -> None:
        self._refresh_pending = False
        if not self.closed:
            token = self.manager.refresh_token(self.claims, self.participant)
            self.sink.send(rtc.SignalResponse(refresh_token=token))

    def _on_refresh_timer(self) -> None:
        self._send_refresh_token()
        self._set_timer("refresh", REFRESH_INTERVAL, self._on_refresh_timer)

    def _set_timer(self, name: str, delay: float, callback: object) -> None:
        self._cancel_timer(name)
        self._timers[name] = self._loop.call_later(delay, callback)  # type: ignore[arg-type]

    def _cancel_timer(self, name: str) -> None:
        handle = self._timers.pop(name, None)
        if handle is not None:
            handle.cancel()
