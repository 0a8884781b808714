"""Track publication records: AddTrackRequest → pending TrackInfo → published
(docs/protocol/03-publishing.md).

A track is *pending* from ``add_track`` until the publisher's media for it is matched in an
offer; only then is it listed in ``ParticipantInfo.tracks`` and announced (``track_published``).
Forwarding the media itself is the media plane's job.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable

from livekit.protocol import models, rtc

from roomcast.ids import TRACK_PREFIX, new_sid
from roomcast.rooms.participant import Participant
from roomcast.rooms.room import Room

log = logging.getLogger(__name__)

MAX_PENDING_TRACKS = 20
DEFAULT_MAX_TRACKS = 32  # per participant, when limit.num_tracks is 0
_SOURCE_LETTER: dict[int, str] = {
    models.TrackSource.CAMERA: "C",
    models.TrackSource.MICROPHONE: "M",
    models.TrackSource.SCREEN_SHARE: "S",
    models.TrackSource.SCREEN_SHARE_AUDIO: "s",
}


def new_track_sid(track_type: int, source: int) -> str:
    """``TR_`` + A/V + source letter + random, as LiveKit's setTrackID
    (docs/protocol/02-join-and-transports.md §2.8)."""
    kind = "A" if track_type == models.TrackType.AUDIO else "V"
    return new_sid(TRACK_PREFIX + kind + _SOURCE_LETTER.get(source, "U"), 12)


def may_publish_source(permission: models.ParticipantPermission, source: int) -> bool:
    if not permission.can_publish:
        return False
    allowed = list(permission.can_publish_sources)
    return not allowed or source in allowed


# Codecs whose spatial layers travel in one stream (SVC) unless the client says otherwise.
_SVC_CAPABLE = ("video/vp9", "video/av1")
_QUALITY_RID = ("q", "h", "f")  # LiveKit's rids, lowest quality first


def _sorted_layers(layers: Iterable[models.VideoLayer]) -> list[models.VideoLayer]:
    """Copies, lowest quality first (livekit-server sorts them by quality)."""
    copies = []
    for layer in layers:
        copy = models.VideoLayer()
        copy.CopyFrom(layer)
        copies.append(copy)
    return sorted(copies, key=lambda layer: layer.quality)


def _full_mime(codec: str, track_type: int) -> str:
    if "/" in codec:
        return codec
    return ("audio/" if track_type == models.TrackType.AUDIO else "video/") + codec


def track_info_for(request: rtc.AddTrackRequest) -> models.TrackInfo:
    """The TrackInfo of an AddTrackRequest, every field carried over as livekit-server does:
    layers sorted by quality, features de-duplicated (stereo / no-DTX implied by their flags),
    the stream named after the source when unset, one SimulcastCodecInfo per distinct codec with
    its video_layer_mode (SVC for VP9/AV1 unless the client chose), and `simulcast` true only
    when the primary codec sends one spatial layer per stream with several layers."""
    backup_policy = request.backup_codec_policy
    if (
        request.type == models.TrackType.AUDIO
        and backup_policy != models.BackupCodecPolicy.REGRESSION
    ):
        backup_policy = models.BackupCodecPolicy.SIMULCAST  # audio codecs are simulcast
    audio_features = list(dict.fromkeys(request.audio_features))
    if request.stereo and models.AudioTrackFeature.TF_STEREO not in audio_features:
        audio_features.append(models.AudioTrackFeature.TF_STEREO)
    if request.disable_dtx and models.AudioTrackFeature.TF_NO_DTX not in audio_features:
        audio_features.append(models.AudioTrackFeature.TF_NO_DTX)
    info = models.TrackInfo(
        sid=new_track_sid(request.type, request.source),
        type=request.type,
        name=request.name,
        muted=request.muted,
        width=request.width,
        height=request.height,
        source=request.source,
        layers=_sorted_layers(request.layers),
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
        audio_features=audio_features,
        backup_codec_policy=backup_policy,
        packet_trailer_features=list(dict.fromkeys(request.packet_trailer_features)),
    )
    if not request.simulcast_codecs:
        info.codecs.append(  # the codec is known once the media section is (publish)
            models.SimulcastCodecInfo(
                cid=request.cid,
                layers=_sorted_layers(request.layers),
                video_layer_mode=models.VideoLayer.Mode.ONE_SPATIAL_LAYER_PER_STREAM,
            )
        )
        info.simulcast = request.type == models.TrackType.VIDEO and len(request.layers) > 1
        return info
    seen: set[str] = set()
    for codec in request.simulcast_codecs:
        mime = _full_mime(codec.codec, request.type) if codec.codec else ""
        if not mime or mime.lower() in seen:
            continue
        seen.add(mime.lower())
        mode = codec.video_layer_mode
        if request.type == models.TrackType.VIDEO and mode == models.VideoLayer.Mode.MODE_UNUSED:
            mode = (
                models.VideoLayer.Mode.MULTIPLE_SPATIAL_LAYERS_PER_STREAM
                if mime.lower() in _SVC_CAPABLE
                else models.VideoLayer.Mode.ONE_SPATIAL_LAYER_PER_STREAM
            )
        info.codecs.append(
            models.SimulcastCodecInfo(
                mime_type=mime,
                cid=codec.cid,
                layers=_sorted_layers(codec.layers or request.layers),
                video_layer_mode=mode,
            )
        )
    if info.codecs:
        primary = info.codecs[0]
        info.simulcast = (
            primary.video_layer_mode != models.VideoLayer.Mode.MULTIPLE_SPATIAL_LAYERS_PER_STREAM
            and len(primary.layers) > 1
        )
    return info


class TrackManager:
    """Publication bookkeeping shared by signalling and the server API."""

    def __init__(self, max_tracks: int = 0) -> None:
        self.max_tracks = max_tracks or DEFAULT_MAX_TRACKS

    def limit_reached(self, participant: Participant) -> str | None:
        """The limit one more track of ``participant`` would pass, named as its
        `roomcast_limit_hits_total` label: "num_tracks" (published and pending, limit.num_tracks)
        or "pending_tracks" (MAX_PENDING_TRACKS waiting for their media); None if neither."""
        if len(participant.tracks) + len(participant.pending_tracks) >= self.max_tracks:
            return "num_tracks"
        if len(participant.pending_tracks) >= MAX_PENDING_TRACKS:
            return "pending_tracks"
        return None

    def add_track(
        self, participant: Participant, request: rtc.AddTrackRequest
    ) -> rtc.SignalResponse:
        """The answer to an AddTrackRequest: `track_published` (the track is now pending) or a
        `request_response` that says why not."""

        def refuse(reason: int, message: str) -> rtc.SignalResponse:
            return rtc.SignalResponse(
                request_response=rtc.RequestResponse(
                    reason=reason,  # type: ignore[arg-type]
                    message=message,
                    add_track=request,
                )
            )

        if request.type not in (models.TrackType.AUDIO, models.TrackType.VIDEO):
            return refuse(rtc.RequestResponse.UNSUPPORTED_TYPE, "unsupported track type")
        if not may_publish_source(participant.permission, request.source):
            return refuse(rtc.RequestResponse.NOT_ALLOWED, "does not have permission to publish")
        if request.cid in participant.pending_tracks:
            return refuse(rtc.RequestResponse.DUPLICATE_NAME, "track with this cid is pending")
        match self.limit_reached(participant):
            case "num_tracks":
                message = f"at most {self.max_tracks} tracks"
                return refuse(rtc.RequestResponse.LIMIT_EXCEEDED, message)
            case "pending_tracks":
                return refuse(rtc.RequestResponse.LIMIT_EXCEEDED, "too many pending tracks")
        info = track_info_for(request)
        participant.pending_tracks[request.cid] = info
        return rtc.SignalResponse(
            track_published=rtc.TrackPublishedResponse(cid=request.cid, track=info)
        )

    def publish(
        self,
        room: Room,
        participant: Participant,
        cid: str,
        mid: str,
        mime_type: str,
        streams: int = 1,
    ) -> models.TrackInfo:
        """The publisher's media for ``cid`` was matched: list the track and announce it.
        `streams` is how many RTP streams (simulcast rids) its section sends."""
        info = participant.pending_tracks.pop(cid)
        if streams > 1:
            info.simulcast = True  # whatever the request said: several streams arrive
        info.mid = mid
        if mime_type:
            info.mime_type = mime_type
            if info.codecs:
                codec = next(
                    (c for c in info.codecs if c.mime_type.lower() == mime_type.lower()),
                    info.codecs[0],
                )
                codec.mime_type = mime_type
                codec.mid = mid
        for codec in info.codecs:
            for rank, layer in enumerate(codec.layers):  # lowest first (track_info_for)
                layer.spatial_layer = rank
                layer.rid = _QUALITY_RID[min(rank, len(_QUALITY_RID) - 1)]
        info.version.CopyFrom(models.TimedVersion(unix_micro=int(time.time() * 1e6)))
        participant.tracks[info.sid] = info
        participant.is_publisher = True
        participant.touch()
        room.emit("track_published", participant, info)
        return info

    def unpublish(
        self, room: Room, participant: Participant, track_sid: str, notify_publisher: bool
    ) -> None:
        info = participant.tracks.pop(track_sid, None)
        if info is None:
            return
        if notify_publisher and participant.session is not None:
            participant.session.send_signal(
                rtc.SignalResponse(
                    track_unpublished=rtc.TrackUnpublishedResponse(track_sid=track_sid)
                )
            )
        participant.touch()
        room.emit("track_unpublished", participant, info)

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

    def participant_left(self, participant: Participant) -> None:
        participant.pending_tracks.clear()


__all__ = ["TrackManager", "may_publish_source", "new_track_sid", "track_info_for"]
