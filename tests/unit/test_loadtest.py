"""Load-test client parts without sockets: VP8 bitstreams, ICE checks, offers, RTP, flags."""

from __future__ import annotations

import av
import numpy as np
import pytest

from roomcast.client import vp8
from roomcast.client.ice import IceAgent
from roomcast.client.media import RESOLUTIONS, ReceiveStats, RtpStream, VideoSender
from roomcast.client.sdp import LocalTrack, build_answer, build_offer
from roomcast.loadtest.cli import UsageError, parse_duration
from roomcast.loadtest.report import percentile
from roomcast.media.codecs import VP8, Vp8Descriptor, is_keyframe_start
from roomcast.media.jsep import TransportParams
from roomcast.media.publisher_answer import build_answer as server_answer
from roomcast.media.rtcp import build_nack, build_pli, parse_rtcp
from roomcast.media.rtp import URI_MID, URI_RID, parse_rtp, read_string_extension
from roomcast.media.sdp import Codec, Extmap, SessionDescription
from roomcast.media.stun import IceLiteResponder, parse_stun
from roomcast.rooms.publisher_peer import plan_for


@pytest.mark.parametrize(("width", "height"), [(1280, 720), (320, 180), (170, 94)])
def test_vp8_frames_decode_to_flat_grey_pictures(width: int, height: int) -> None:
    """A real decoder (libavcodec) reads every frame, at the announced size, and every pixel
    is what intra DC prediction without residual gives: 128. A wrong probability table or
    bool-coder bug would desynchronise it and show up as other values or errors."""
    decoder = av.CodecContext.create("vp8", "r")
    for index in range(8):
        data = vp8.frame(width, height, key=index % 4 == 0, size=5000)
        assert len(data) == max(5000, len(vp8.frame_prefix(width, height, key=index % 4 == 0)))
        (picture,) = decoder.decode(av.Packet(data))
        assert (picture.width, picture.height) == (width, height)
        pixels = picture.to_ndarray(format="yuv420p")
        assert int(pixels.min()) == int(pixels.max()) == 128


def test_vp8_keyframe_header() -> None:
    data = vp8.frame(640, 360, key=True)
    assert data[0] & 1 == 0 and data[3:6] == b"\x9d\x01\x2a"  # RFC 6386 §9.1
    assert int.from_bytes(data[6:8], "little") == 640
    assert int.from_bytes(data[8:10], "little") == 360
    assert vp8.frame(640, 360, key=False)[0] & 1 == 1
    with pytest.raises(ValueError):
        vp8.frame(0, 10, key=True)


def test_video_packets_carry_descriptor_mid_rid_and_keyframes() -> None:
    sent: list[bytes] = []
    reports: list[bytes] = []
    sender = VideoSender(
        sent.append, reports.append, mid="1", layers=RESOLUTIONS["low"], simulcast=True
    )
    sender.tick(100.0)  # first frame of every layer: a keyframe
    by_ssrc: dict[int, list[bytes]] = {}
    for packet in sent:
        header = parse_rtp(packet)
        by_ssrc.setdefault(header.ssrc, []).append(packet)
    assert len(by_ssrc) == 3
    for stream in sender.streams:
        packets = by_ssrc[stream.ssrc]
        first = parse_rtp(packets[0])
        assert read_string_extension(packets[0], first, 4) == "1"  # sdes:mid id 4
        assert read_string_extension(packets[0], first, 10) in ("q", "h", "f")
        assert is_keyframe_start(VP8, packets[0], first.payload_offset, first.payload_end)
        descriptor = Vp8Descriptor()
        assert descriptor.parse(packets[0], first.payload_offset, first.payload_end)
        assert descriptor.picture_id_size == 2
        assert parse_rtp(packets[-1]).marker
    # The receiver's report stops mid/rid; a NACK resends from the cache; a PLI asks for a key.
    stream = sender.streams[0]
    lost_seq = parse_rtp(by_ssrc[stream.ssrc][0]).sequence
    sent.clear()
    sender.handle_rtcp(build_nack(1, stream.ssrc, [lost_seq]))
    assert sent == [by_ssrc[stream.ssrc][0]] and stream.resent == 1
    sender.handle_rtcp(build_pli(1, stream.ssrc))
    assert sender.keyframe_requests == 1


def test_rtp_stream_sender_report() -> None:
    stream = RtpStream(111, 48000, [])
    stream.packet(b"\xf8" + bytes(10), False)
    (report,) = parse_rtcp(stream.sender_report(1_700_000_000.0))
    assert getattr(report, "ssrc", None) == stream.ssrc
    assert getattr(report, "packet_count", None) == 1


def test_ice_agent_checks_an_ice_lite_responder() -> None:
    server = IceLiteResponder("srvufrag", "s" * 24)
    agent = IceAgent(controlling=True)
    agent.set_remote_credentials("srvufrag", "s" * 24)
    assert agent.add_remote_candidate("candidate:1 1 udp 2130706431 127.0.0.1 7882 typ host")
    assert not agent.add_remote_candidate("candidate:1 1 tcp 1 127.0.0.1 7882 typ host")
    ((check, addr),) = agent.poll(0.0)
    assert addr == ("127.0.0.1", 7882)
    request = parse_stun(check)
    assert request is not None
    result = server.handle(request, ("127.0.0.1", 5000))
    assert result.authenticated and result.use_candidate  # controlling: nominates (RFC 8445)
    assert result.remote_ufrag == agent.local_ufrag
    assert result.response is not None
    response = parse_stun(result.response)
    assert response is not None
    events = agent.handle(response, addr, 0.01)
    assert events.selected and agent.selected == addr
    # A forged response (wrong integrity key) is ignored.
    stranger = IceAgent()
    stranger.set_remote_credentials("srvufrag", "x" * 24)
    stranger.add_remote_candidate("candidate:1 1 udp 1 127.0.0.1 7882 typ host")
    ((check, _),) = stranger.poll(0.0)
    forged = IceLiteResponder("srvufrag", "s" * 24).handle(parse_stun(check), addr)  # type: ignore[arg-type]
    assert not forged.authenticated


def test_ice_agent_fails_without_answers() -> None:
    agent = IceAgent()
    agent.set_remote_credentials("u", "p" * 22)
    agent.add_remote_candidate("candidate:1 1 udp 1 127.0.0.1 9 typ host")
    assert len(agent.poll(0.0)) == 1
    assert agent.poll(0.01) == []  # retransmission not due yet
    assert len(agent.poll(0.06)) == 1
    agent.poll(11.0)
    assert agent.failed


def _ice() -> TransportParams:
    return TransportParams(
        "cliufrag",
        "c" * 24,
        "sha-256 " + ":".join(["AB"] * 32),
        ["candidate:1 1 udp 2130706431 127.0.0.1 5000 typ host"],
    )


def test_simulcast_offer_is_answered_by_roomcast() -> None:
    video = LocalTrack(
        kind="video",
        track_id="cid-v",
        stream_id="s",
        codecs=[Codec(96, "VP8", 90000, None, None, ["nack", "nack pli"])],
        extmaps=[Extmap(4, URI_MID), Extmap(10, URI_RID)],
        rids=["q", "h", "f"],
        ssrcs=[1, 2, 3],
    )
    audio = LocalTrack(
        kind="audio",
        track_id="cid-a",
        stream_id="s",
        codecs=[Codec(111, "opus", 48000, 2, "minptime=10;useinbandfec=1")],
        ssrcs=[7],
    )
    offer = SessionDescription.parse(build_offer(_ice(), [audio, video], session_id="1", version=1))
    assert [m.mid for m in offer.media] == ["0", "1"]
    assert offer.media[1].simulcast is not None and not offer.media[1].ssrcs
    assert offer.media[0].ssrcs[0].ssrc == 7
    ice = TransportParams("srvufrag", "s" * 24, "sha-256 " + ":".join(["CD"] * 32))
    answer = SessionDescription.parse(server_answer(offer, ice, plan_for))
    assert [m.direction for m in answer.media] == ["recvonly", "recvonly"]
    assert answer.media[1].simulcast is not None
    assert answer.media[1].simulcast.rids("recv") == ["q", "h", "f"]
    assert answer.media[0].setup == "passive"


def test_answer_to_a_subscriber_offer() -> None:
    offer = SessionDescription.parse(
        "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0 1\r\n"
        "a=ice-lite\r\n"
        "m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\nc=IN IP4 0.0.0.0\r\n"
        "a=ice-ufrag:srv1\r\na=ice-pwd:ssssssssssssssssssssssss\r\n"
        f"a=fingerprint:sha-256 {':'.join(['CD'] * 32)}\r\na=setup:actpass\r\na=mid:0\r\n"
        "a=sctp-port:5000\r\na=candidate:1 1 udp 2130706431 127.0.0.1 7882 typ host\r\n"
        "m=video 9 UDP/TLS/RTP/SAVPF 96\r\nc=IN IP4 0.0.0.0\r\n"
        "a=ice-ufrag:srv1\r\na=ice-pwd:ssssssssssssssssssssssss\r\n"
        f"a=fingerprint:sha-256 {':'.join(['CD'] * 32)}\r\na=setup:actpass\r\na=mid:1\r\n"
        "a=sendonly\r\na=msid:PA_x|TR_y TR_y\r\na=rtcp-mux\r\na=rtpmap:96 VP8/90000\r\n"
        "a=ssrc:99 cname:c\r\na=ssrc:99 msid:PA_x|TR_y TR_y\r\n"
    )
    sdp, tracks = build_answer(offer, _ice(), session_id="5", version=1)
    answer = SessionDescription.parse(sdp)
    assert [m.port for m in answer.media] == [9, 9]  # Roomcast needs the data section accepted
    assert [m.setup for m in answer.media] == ["active", "active"]
    assert answer.media[1].direction == "recvonly"
    assert answer.bundle_group() is not None
    (track,) = tracks
    assert (track.track_id, track.ssrcs, track.kind) == ("TR_y", [99], "video")
    rejected, _ = build_answer(offer, _ice(), session_id="5", version=2, accept_data=False)
    assert SessionDescription.parse(rejected).media[0].port == 0


def test_receive_stats_count_gaps_across_wraparound() -> None:
    stats = ReceiveStats(1, 65534, 0.0)
    assert stats.on_packet(65534, 100) == 0
    assert stats.on_packet(65535, 100) == 0
    assert stats.on_packet(1, 100) == 1  # 0 missing
    assert (stats.expected, stats.packets, stats.lost) == (4, 3, 1)
    assert stats.on_packet(0, 100) == 0  # late arrival (a retransmission)
    assert stats.lost == 0


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("30s", 30), ("2m", 120), ("1m30s", 90), ("500ms", 0.5), ("45", 45), ("1h", 3600)],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "soon", "10x", "-5", "1m soon"])
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(UsageError):
        parse_duration(text)


def test_percentile_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == 50 and percentile(values, 95) == 95
    assert percentile([], 50) is None
    assert percentile([3.0], 95) == 3.0
    assert np.isclose(percentile([1.0, 2.0], 50) or 0, 1.0)


def test_layouts_ask_for_lks_tile_sizes() -> None:
    from roomcast.loadtest.participant import _layout_size

    assert [_layout_size("speaker", i) for i in range(7)] == [(1280, 720)] + [(320, 180)] * 5 + [
        None
    ]
    assert _layout_size("3x3", 8) == (640, 360) and _layout_size("3x3", 9) is None
    assert _layout_size("4x4", 15) == (320, 180) and _layout_size("4x4", 16) is None
    assert _layout_size("5x5", 24) == (320, 180) and _layout_size("5x5", 25) is None
