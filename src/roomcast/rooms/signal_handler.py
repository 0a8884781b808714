"""Every `SignalRequest` a client sends, dispatched to a typed handler.

The edge (or the multi-node relay) reads the WebSocket and calls `handle_request`; each member
of the `SignalRequest` oneof has one handler below, chosen by an explicit `match`, so a reader
can follow every request and mypy checks every handler. Members we do not act on are listed
too; anything else is ignored, as SDKs tolerate unknown members
(docs/protocol/01-signalling-connection.md §1.5).
"""

from __future__ import annotations

import logging
import time

from livekit.protocol import models, rtc

from roomcast.errors import InvalidArgumentError
from roomcast.media.sdp import SdpError
from roomcast.rooms.admin import apply_participant_update
from roomcast.rooms.contracts import SignalSink, leave_response
from roomcast.rooms.publisher_peer import MatchedSection
from roomcast.rooms.session import Action, Reason, Session
from roomcast.rooms.transport_manager import ParticipantTransports

log = logging.getLogger(__name__)

_KIND_NAME = {models.TrackType.AUDIO: "audio", models.TrackType.VIDEO: "video"}
LIMIT_EXCEEDED = rtc.RequestResponse.LIMIT_EXCEEDED


def _now_ms() -> int:
    return int(time.time() * 1000)


class SignalHandler:
    """The signalling side of one session; what the edge holds while a WebSocket is open."""

    def __init__(self, session: Session, transports: ParticipantTransports) -> None:
        self.session = session
        self.transports = transports
        self._services = session.services

    def on_signal_closed(self, sink: SignalSink) -> None:
        self.session.on_signal_closed(sink)

    def handle_request(self, request: rtc.SignalRequest) -> None:
        session = self.session
        if session.closed:
            return
        session.on_request()
        which = request.WhichOneof("message")
        self._services.metrics.count_signal_request(which or "unknown")
        match which:
            case "ping":
                session.sink.send(rtc.SignalResponse(pong=_now_ms()))
            case "ping_req":
                self._ping_req(request.ping_req)
            case "offer":
                self._offer(request.offer)
            case "answer":
                self._answer(request.answer)
            case "trickle":
                self.transports.add_candidate(request.trickle)
            case "leave":
                session.client_left()
            case "add_track":
                self._add_track(request.add_track)
            case "mute":
                session.set_muted(request.mute.sid, request.mute.muted)
            case "update_metadata":
                self._update_metadata(request.update_metadata)
            case "subscription_permission":
                session.participant.subscription_permission = request.subscription_permission
                self._services.subscriptions.subscription_permission_changed(
                    session.room, session.participant
                )
                self._services.data_tracks.subscription_permission_changed(
                    session.room, session.participant
                )
            case "subscription":
                self._subscription(request.subscription)
            case "track_setting":
                self._services.subscriptions.track_settings(
                    session.room, session.participant, request.track_setting
                )
            case "update_audio_track":
                self._update_audio_track(request.update_audio_track)
            case "update_video_track":
                self._update_video_track(request.update_video_track)
            case "simulate":
                self._simulate(request.simulate)
            case "sync_state":
                # A single node keeps the real state; the client's view only matters when a
                # session moves between nodes, which Roomcast does by full reconnect.
                log.debug("sync_state received", extra={"identity": session.participant.identity})
                if not self._services.data_tracks.sync_state_matches(
                    session.participant, request.sync_state
                ):
                    session.full_reconnect()  # it publishes data tracks we do not know
            case "publish_data_track_request":
                self._services.data_tracks.publish(
                    session.room, session.participant, request.publish_data_track_request
                )
            case "unpublish_data_track_request":
                self._services.data_tracks.unpublish(
                    session.room, session.participant, request.unpublish_data_track_request
                )
            case "update_data_subscription":
                self._services.data_tracks.update_subscription(
                    session.room, session.participant, request.update_data_subscription
                )
            case "update_layers":
                pass  # deprecated; livekit-server ignores it too
            case _:
                log.debug("ignoring signal request %s", which)

    # -- liveness ----------------------------------------------------------------------------
    def _ping_req(self, ping: rtc.Ping) -> None:
        self.session.sink.send(
            rtc.SignalResponse(
                pong_resp=rtc.Pong(last_ping_timestamp=ping.timestamp, timestamp=_now_ms())
            )
        )

    # -- negotiation -------------------------------------------------------------------------
    def _offer(self, description: rtc.SessionDescription) -> None:
        """The client's publisher-PC offer: answer it with the same id."""
        session = self.session
        try:
            matched, stopped = self.transports.apply_offer(description)
        except SdpError as exc:
            log.info(
                "bad publisher offer: %s", exc, extra={"identity": session.participant.identity}
            )
            session.full_reconnect()
            return
        subscriptions = self._services.subscriptions
        publisher = self.transports.publisher
        assert publisher is not None  # created by apply_offer
        for mid in stopped:
            track_sid = publisher.published.get(mid)
            if track_sid is not None:
                subscriptions.unpublish(
                    session.room, session.participant, track_sid, notify_publisher=False
                )
        for match in matched:
            if match.cid is not None:
                self._publish(match)
            else:
                self.transports.hold_unmatched(match)

    def _publish(self, match: MatchedSection) -> None:
        publisher = self.transports.publisher
        assert publisher is not None
        session = self.session
        self._services.subscriptions.publish(session.room, session.participant, publisher, match)

    def _answer(self, description: rtc.SessionDescription) -> None:
        try:
            self.transports.apply_answer(description)
        except SdpError as exc:
            log.info(
                "bad subscriber answer: %s",
                exc,
                extra={"identity": self.session.participant.identity},
            )
            self.session.full_reconnect()

    # -- tracks ------------------------------------------------------------------------------
    def _add_track(self, request: rtc.AddTrackRequest) -> None:
        session = self.session
        limit = self._services.tracks.limit_reached(session.participant)
        response = self._services.tracks.add_track(session.participant, request)
        session.send_signal(response)
        if not response.HasField("track_published"):
            if limit is not None and response.request_response.reason == LIMIT_EXCEEDED:
                self._services.metrics.count_limit_hit(limit)
            return
        # Media may have been offered before its AddTrackRequest.
        kind = _KIND_NAME.get(request.type, "")
        match = self.transports.take_unmatched(request.cid, kind)
        if match is not None:
            self._publish(match)

    def _subscription(self, update: rtc.UpdateSubscription) -> None:
        sids = list(update.track_sids)
        for entry in update.participant_tracks:
            sids.extend(entry.track_sids)
        self.session.update_subscriptions(sids, update.subscribe)

    def _update_audio_track(self, update: rtc.UpdateLocalAudioTrack) -> None:
        participant = self.session.participant
        track = participant.tracks.get(update.track_sid)
        if track is not None:
            del track.audio_features[:]
            track.audio_features.extend(update.features)
            participant.touch()

    def _update_video_track(self, update: rtc.UpdateLocalVideoTrack) -> None:
        participant = self.session.participant
        track = participant.tracks.get(update.track_sid)
        if track is not None:
            track.width, track.height = update.width, update.height
            participant.touch()

    # -- participant -------------------------------------------------------------------------
    def _update_metadata(self, request: rtc.UpdateParticipantMetadata) -> None:
        participant = self.session.participant

        def respond(reason: int, message: str = "") -> None:
            self.session.sink.send(
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
        if not self.session.may_update_metadata():
            self._services.metrics.count_limit_hit("metadata_update_rate")
            respond(rtc.RequestResponse.LIMIT_EXCEEDED, "too many updates: slow down")
            return
        try:
            self._services.admin.check_participant_fields(
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

    def _simulate(self, scenario: rtc.SimulateScenario) -> None:
        """Test hooks the SDKs' own test suites use, behaving as livekit-server does."""
        session = self.session
        which = scenario.WhichOneof("scenario")
        match which:
            case "node_failure" | "migration":
                session.drop_without_leave(f"simulated {which}")
            case "server_leave":
                session.sink.send(leave_response(Reason.SERVER_SHUTDOWN, Action.DISCONNECT))
                session.leave(Reason.SERVER_SHUTDOWN)
            case "leave_request_full_reconnect":
                session.full_reconnect()
            case "speaker_update":
                speaker = models.SpeakerInfo(sid=session.participant.sid, level=0.9, active=True)
                update = rtc.SignalResponse(
                    speakers_changed=rtc.SpeakersChanged(speakers=[speaker])
                )
                for other in session.room.live_participants():
                    if other.session is not None and other.session.joined:
                        other.session.send_signal(update)
            case _:
                log.debug("simulate %s: not supported", which)
