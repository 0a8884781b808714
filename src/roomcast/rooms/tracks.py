"""Track publication records: AddTrackRequest → pending TrackInfo → published (reference 03).

A track is *pending* from ``add_track`` until the publisher's media for it is matched in an
offer; only then is it listed in ``ParticipantInfo.tracks`` and announced (``track_published``).
Forwarding the media itself is the media plane's job.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from livekit.protocol import models, rtc

from roomcast.ids import TRACK_PREFIX, new_sid
from roomcast.rooms.participant import Participant

if TYPE_CHECKING:
    from roomcast.rooms.session import Session

log = logging.getLogger(__name__)

MAX_PENDING_TRACKS = 20
DEFAULT_MAX_TRACKS = 32  # per participant, when limit.num_tracks is 0
_SOURCE_LETTER: dict[int, str] = {
    models.TrackSource.CAMERA: "C",
    models.TrackSource.MICROPHONE: "M",
    models.TrackSource.SCREEN_SHARE: "S",
    models.TrackSource.SCREEN_SHARE_AUDIO: "s",
}
_DEFAULT_MIME: dict[int, str] = {
    models.TrackType.AUDIO: "audio/opus",
    models.TrackType.VIDEO: "video/VP8",
}


def new_track_sid(track_type: int, source: int) -> str:
    """``TR_`` + A/V + source letter + random, as LiveKit's setTrackID (reference 02 §2.8)."""
    kind = "A" if track_type == models.TrackType.AUDIO else "V"
    return new_sid(TRACK_PREFIX + kind + _SOURCE_LETTER.get(source, "U"), 12)


def may_publish_source(permission: models.ParticipantPermission, source: int) -> bool:
    if not permission.can_publish:
        return False
    allowed = list(permission.can_publish_sources)
    return not allowed or source in allowed


def track_info_for(request: rtc.AddTrackRequest) -> models.TrackInfo:
    info = models.TrackInfo(
        sid=new_track_sid(request.type, request.source),
        type=request.type,
        name=request.name,
        muted=request.muted,
        width=request.width,
        height=request.height,
        source=request.source,
        layers=list(request.layers),
        disable_dtx=request.disable_dtx,
        disable_red=request.disable_red,
        stereo=request.stereo,
        encryption=request.encryption,
        stream=request.stream
        or (
            "screen"
            if request.source
            in (models.TrackSource.SCREEN_SHARE, models.TrackSource.SCREEN_SHARE_AUDIO)
            else "camera"
        ),
        audio_features=list(dict.fromkeys(request.audio_features)),
        backup_codec_policy=request.backup_codec_policy,
    )
    if request.simulcast_codecs:
        for codec in request.simulcast_codecs:
            mime = (
                codec.codec
                if "/" in codec.codec
                else (
                    ("audio/" if request.type == models.TrackType.AUDIO else "video/") + codec.codec
                )
            )
            info.codecs.append(
                models.SimulcastCodecInfo(mime_type=mime, cid=codec.cid, layers=list(codec.layers))
            )
    else:
        info.codecs.append(
            models.SimulcastCodecInfo(
                mime_type=_DEFAULT_MIME.get(request.type, ""),
                cid=request.cid,
                layers=list(request.layers),
            )
        )
    info.simulcast = request.type == models.TrackType.VIDEO and len(request.layers) > 1
    return info


class TrackManager:
    """Publication bookkeeping shared by signalling and the server API."""

    def __init__(self, max_tracks: int = 0) -> None:
        self.max_tracks = max_tracks or DEFAULT_MAX_TRACKS

    def add_track(self, session: Session, request: rtc.AddTrackRequest) -> bool:
        """Answer an AddTrackRequest; True when the track is now pending."""
        participant = session.participant

        def refuse(reason: int, message: str) -> None:
            session.send_signal(
                rtc.SignalResponse(
                    request_response=rtc.RequestResponse(
                        reason=reason,  # type: ignore[arg-type]
                        message=message,
                        add_track=request,
                    )
                )
            )

        if request.type not in (models.TrackType.AUDIO, models.TrackType.VIDEO):
            refuse(rtc.RequestResponse.UNSUPPORTED_TYPE, "unsupported track type")
            return False
        if not may_publish_source(participant.permission, request.source):
            refuse(rtc.RequestResponse.NOT_ALLOWED, "does not have permission to publish")
            return False
        if request.cid in participant.pending_tracks:
            refuse(rtc.RequestResponse.DUPLICATE_NAME, "track with this cid is pending")
            return False
        if len(participant.tracks) + len(participant.pending_tracks) >= self.max_tracks:
            refuse(rtc.RequestResponse.LIMIT_EXCEEDED, f"at most {self.max_tracks} tracks")
            return False
        if len(participant.pending_tracks) >= MAX_PENDING_TRACKS:
            refuse(rtc.RequestResponse.LIMIT_EXCEEDED, "too many pending tracks")
            return False
        info = track_info_for(request)
        participant.pending_tracks[request.cid] = info
        session.send_signal(
            rtc.SignalResponse(
                track_published=rtc.TrackPublishedResponse(cid=request.cid, track=info)
            )
        )
        return True

    def publish(self, session: Session, cid: str, mid: str, mime_type: str) -> models.TrackInfo:
        """The publisher's media for ``cid`` was matched: list the track and announce it."""
        participant = session.participant
        info = participant.pending_tracks.pop(cid)
        info.mid = mid
        if mime_type:
            info.mime_type = mime_type
            if info.codecs:
                info.codecs[0].mime_type = mime_type
                info.codecs[0].mid = mid
        info.version.CopyFrom(models.TimedVersion(unix_micro=int(time.time() * 1e6)))
        participant.tracks[info.sid] = info
        participant.is_publisher = True
        participant.touch()
        session.room.emit("track_published", participant, info)
        return info

    def unpublish(self, session: Session, track_sid: str, notify_publisher: bool) -> None:
        participant = session.participant
        info = participant.tracks.pop(track_sid, None)
        if info is None:
            return
        if notify_publisher:
            session.send_signal(
                rtc.SignalResponse(
                    track_unpublished=rtc.TrackUnpublishedResponse(track_sid=track_sid)
                )
            )
        participant.touch()
        session.room.emit("track_unpublished", participant, info)

    def set_muted(self, participant: Participant, track_sid: str, muted: bool) -> None:
        track = participant.tracks.get(track_sid)
        if track is None:
            for pending in participant.pending_tracks.values():
                if pending.sid == track_sid:
                    pending.muted = muted
            return
        if track.muted != muted:
            track.muted = muted
            participant.touch()

    def participant_left(self, session: Session) -> None:
        session.participant.pending_tracks.clear()


__all__ = ["TrackManager", "may_publish_source", "new_track_sid"]
