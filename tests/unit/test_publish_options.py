"""Every AddTrackRequest field reaches the published TrackInfo as livekit-server copies it, and
LiveKit's packet trailer is forwarded to subscribers that read it and cut off for the others."""

from __future__ import annotations

from livekit.protocol import models, rtc

from roomcast.media.forwarding_plane import ForwardingPlane
from roomcast.media.packet_trailer import trailer_length
from roomcast.media.rtp import parse_rtp
from roomcast.rooms.participant import Participant
from roomcast.rooms.room import Room, RoomSettings
from roomcast.rooms.tracks import TrackManager, track_info_for
from tests.unit.test_forwarder import PUB, VIDEO_SSRC, Clock, Sink, rtp, vp8

Mode = models.VideoLayer.Mode
Quality = models.VideoQuality
Feature = models.AudioTrackFeature
Trailer = models.PacketTrailerFeature

# Request fields that do not land in a TrackInfo field of the same name: the client's track id
# (answered in TrackPublishedResponse.cid, and each SimulcastCodecInfo.cid), the sid the
# server assigns itself, and the codecs (SimulcastCodecInfo, checked on their own).
NOT_COPIED_BY_NAME = {"cid", "sid", "simulcast_codecs"}


def layer(quality: int, width: int, height: int) -> models.VideoLayer:
    return models.VideoLayer(quality=quality, width=width, height=height, bitrate=width * 1000)  # type: ignore[arg-type]


LAYERS = [
    layer(Quality.HIGH, 1280, 720),
    layer(Quality.LOW, 320, 180),
    layer(Quality.MEDIUM, 640, 360),
]


def full_video_request() -> rtc.AddTrackRequest:
    """Every field set, to something other than its default."""
    return rtc.AddTrackRequest(
        cid="cam-cid",
        name="camera",
        type=models.TrackType.VIDEO,
        width=1280,
        height=720,
        muted=True,
        disable_dtx=True,
        source=models.TrackSource.CAMERA,
        layers=LAYERS,
        simulcast_codecs=[
            rtc.SimulcastCodec(codec="vp9", cid="cam-cid", layers=LAYERS),
            rtc.SimulcastCodec(codec="video/vp8", cid="cam-backup"),
        ],
        sid="TR_ignored",
        stereo=True,
        disable_red=True,
        encryption=models.Encryption.Type.GCM,
        stream="my-stream",
        backup_codec_policy=models.BackupCodecPolicy.SIMULCAST,
        audio_features=[Feature.TF_AUTO_GAIN_CONTROL, Feature.TF_AUTO_GAIN_CONTROL],
        packet_trailer_features=[
            Trailer.PTF_USER_TIMESTAMP,
            Trailer.PTF_FRAME_ID,
            Trailer.PTF_USER_TIMESTAMP,
        ],
    )


def is_svc(info: models.TrackInfo) -> bool:
    return info.codecs[0].video_layer_mode == Mode.MULTIPLE_SPATIAL_LAYERS_PER_STREAM


def test_the_full_request_sets_every_field() -> None:
    """Guards the test below: a new AddTrackRequest field makes this fail until it is covered."""
    request = full_video_request()
    unset = [f.name for f in request.DESCRIPTOR.fields if not _is_set(request, f.name)]
    assert unset == [], f"set these in full_video_request() and check them: {unset}"


def _is_set(message: object, name: str) -> bool:
    value = getattr(message, name)
    return (
        bool(len(value))
        if hasattr(value, "__len__") and not isinstance(value, str)
        else bool(value)
    )


def test_every_request_field_reaches_the_track_info() -> None:
    request = full_video_request()
    info = track_info_for(request)
    same_name = {f.name for f in models.TrackInfo.DESCRIPTOR.fields}
    for field in request.DESCRIPTOR.fields:
        if field.name in NOT_COPIED_BY_NAME:
            continue
        assert field.name in same_name, f"AddTrackRequest.{field.name} has no TrackInfo field"
    # Copied as they are.
    assert (info.type, info.name, info.width, info.height, info.muted) == (
        request.type,
        request.name,
        1280,
        720,
        True,
    )
    assert (info.source, info.disable_dtx, info.disable_red, info.stereo) == (
        request.source,
        True,
        True,
        True,
    )
    assert (info.encryption, info.stream, info.backup_codec_policy) == (
        models.Encryption.Type.GCM,
        "my-stream",
        models.BackupCodecPolicy.SIMULCAST,
    )
    # Layers lowest quality first; features de-duplicated, the flags' features implied.
    assert [(x.quality, x.width, x.height, x.bitrate) for x in info.layers] == [
        (Quality.LOW, 320, 180, 320_000),
        (Quality.MEDIUM, 640, 360, 640_000),
        (Quality.HIGH, 1280, 720, 1_280_000),
    ]
    assert list(info.audio_features) == [
        Feature.TF_AUTO_GAIN_CONTROL,
        Feature.TF_STEREO,
        Feature.TF_NO_DTX,
    ]
    assert list(info.packet_trailer_features) == [Trailer.PTF_USER_TIMESTAMP, Trailer.PTF_FRAME_ID]
    # One codec entry per codec, mime completed; SVC for VP9, the backup codec's layers
    # taken from the request's.
    vp9, vp8 = info.codecs
    assert (vp9.mime_type, vp9.cid, vp9.video_layer_mode) == (
        "video/vp9",
        "cam-cid",
        Mode.MULTIPLE_SPATIAL_LAYERS_PER_STREAM,
    )
    assert (vp8.mime_type, vp8.cid, vp8.video_layer_mode) == (
        "video/vp8",
        "cam-backup",
        Mode.ONE_SPATIAL_LAYER_PER_STREAM,
    )
    assert [x.width for x in vp9.layers] == [x.width for x in vp8.layers] == [320, 640, 1280]
    # Simulcast means several streams: an SVC primary codec is not simulcast.
    assert not info.simulcast and is_svc(info)
    assert info.sid.startswith("TR_VC") and info.sid != request.sid


def test_simulcast_codec_layer_modes_and_the_simulcast_flag() -> None:
    def info_for(codec: str, mode: int = Mode.MODE_UNUSED) -> models.TrackInfo:
        return track_info_for(
            rtc.AddTrackRequest(
                cid="c",
                type=models.TrackType.VIDEO,
                layers=LAYERS,
                simulcast_codecs=[rtc.SimulcastCodec(codec=codec, cid="c", video_layer_mode=mode)],  # type: ignore[arg-type]
            )
        )

    assert info_for("vp8").simulcast and not is_svc(info_for("vp8"))
    assert info_for("h264").codecs[0].video_layer_mode == Mode.ONE_SPATIAL_LAYER_PER_STREAM
    assert is_svc(info_for("av1")) and not info_for("av1").simulcast
    # A client that asks for VP9 simulcast (one spatial layer per stream) gets it.
    vp9_simulcast = info_for("vp9", Mode.ONE_SPATIAL_LAYER_PER_STREAM)
    assert vp9_simulcast.simulcast and not is_svc(vp9_simulcast)
    # Duplicate and empty codecs are skipped.
    info = track_info_for(
        rtc.AddTrackRequest(
            type=models.TrackType.VIDEO,
            simulcast_codecs=[
                rtc.SimulcastCodec(codec="vp8"),
                rtc.SimulcastCodec(codec="video/VP8"),
                rtc.SimulcastCodec(codec=""),
            ],
        )
    )
    assert [c.mime_type for c in info.codecs] == ["video/vp8"]


def test_audio_requests() -> None:
    plain = track_info_for(rtc.AddTrackRequest(cid="m", type=models.TrackType.AUDIO))
    # livekit-server makes audio codecs simulcast unless the client asks for regression.
    assert plain.backup_codec_policy == models.BackupCodecPolicy.SIMULCAST
    assert (plain.stream, list(plain.audio_features)) == ("camera", [])
    regression = track_info_for(
        rtc.AddTrackRequest(
            type=models.TrackType.AUDIO,
            backup_codec_policy=models.BackupCodecPolicy.REGRESSION,
            source=models.TrackSource.SCREEN_SHARE_AUDIO,
            simulcast_codecs=[
                rtc.SimulcastCodec(codec="opus", cid="m"),
                rtc.SimulcastCodec(codec="red"),
            ],
        )
    )
    assert regression.backup_codec_policy == models.BackupCodecPolicy.REGRESSION
    assert regression.stream == "screen"
    assert [c.mime_type for c in regression.codecs] == ["audio/opus", "audio/red"]
    assert [c.video_layer_mode for c in regression.codecs] == [Mode.MODE_UNUSED] * 2
    assert not regression.simulcast


def test_publishing_names_the_codec_and_numbers_its_layers() -> None:
    tracks = TrackManager()
    events: list[object] = []
    room = Room("r", RoomSettings(empty_timeout=300, departure_timeout=20), events.append)
    alice = Participant(identity="alice")
    room.add_participant(alice)
    request = full_video_request()
    tracks.add_track(alice, request)
    # The backup codec won, sent as three simulcast streams.
    info = tracks.publish(room, alice, "cam-cid", "3", "video/VP8", streams=3)
    assert (info.mid, info.mime_type, info.simulcast) == ("3", "video/VP8", True)
    vp9, vp8 = info.codecs
    assert (vp9.mid, vp8.mid, vp8.mime_type) == ("", "3", "video/VP8")
    assert [(x.spatial_layer, x.rid) for x in vp9.layers] == [(0, "q"), (1, "h"), (2, "f")]
    assert alice.tracks[info.sid] is info


# -- packet trailer --------------------------------------------------------------------------

TRAILER = bytes([0x01, 0x02, 0x03, 0x04]) + bytes([9 ^ 0xFF]) + b"LKTS"  # 4 bytes + envelope


def test_trailer_length() -> None:
    frame = b"\x00" * 30 + TRAILER
    assert trailer_length(frame, 0, len(frame)) == 9
    assert trailer_length(frame, 0, len(frame) - 1) == 0  # no magic at the end
    bad = b"\x00" * 30 + bytes([2 ^ 0xFF]) + b"LKTS"  # shorter than its own envelope
    assert trailer_length(bad, 0, len(bad)) == 0
    assert trailer_length(TRAILER, 2, len(TRAILER)) == 0  # longer than the payload


def test_trailer_reaches_readers_and_is_cut_for_the_others() -> None:
    plane = ForwardingPlane(clock=Clock())
    plane.add_uptrack(
        "TR_video",
        "video",
        codecs={96: "video/VP8"},
        extensions={},
        rids=[],
        ssrcs={VIDEO_SSRC: None},
        mid="1",
        send_rtcp=Sink(),
        publisher=PUB,
        packet_trailer=True,
    )
    plane.set_reads_packet_trailer("reader", True)
    sinks = {name: Sink() for name in ("reader", "other")}
    for name, sink in sinks.items():
        plane.add_downtrack(
            "TR_video",
            name,
            ssrc=1,
            codecs={"video/vp8": 96},
            extensions={},
            send_rtp=sink,
            send_rtcp=Sink(),
        )
    first = vp8(1, 0, key=True) + TRAILER  # not the end of the frame: never touched
    last = vp8(1, 0, key=False, start=False) + TRAILER
    plane.handle_rtp(PUB, rtp(VIDEO_SSRC, 10, 0, payload=first))
    plane.handle_rtp(PUB, rtp(VIDEO_SSRC, 11, 0, payload=last, marker=True))

    def payloads(sink: Sink) -> list[bytes]:
        return [p[parse_rtp(p).payload_offset :] for p in sink.packets]

    assert payloads(sinks["reader"]) == [first, last]
    assert payloads(sinks["other"]) == [first, last[: -len(TRAILER)]]
    # Retransmissions are cut the same way.
    other = plane.downtrack("TR_video", "other")
    assert other is not None
    other.retransmit([parse_rtp(sinks["other"].packets[1]).sequence], 0.0)
    assert payloads(sinks["other"])[2] == last[: -len(TRAILER)]
