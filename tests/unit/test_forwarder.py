"""The forwarding plane end to end, without sockets: publisher packets in, subscriber bytes out."""

from __future__ import annotations

import itertools
import struct

from hypothesis import given, settings
from hypothesis import strategies as st

from roomcast.media.codecs import Vp8Descriptor
from roomcast.media.forwarding_plane import ForwardingPlane
from roomcast.media.rtcp import (
    Pli,
    ReceiverReport,
    Remb,
    ReportBlock,
    SenderReport,
    build_fir,
    build_nack,
    build_pli,
    build_remb,
    build_rr,
    build_sr,
    parse_rtcp,
)
from roomcast.media.rtp import (
    URI_ABS_SEND_TIME,
    URI_AUDIO_LEVEL,
    URI_MID,
    URI_REPAIRED_RID,
    URI_RID,
    RtpHeader,
    build_extension_block,
    parse_rtp,
    read_audio_level,
)

PUB = "PA_publisher"
SUB = "PA_subscriber"
AUDIO_SSRC = 0xA0A0A0A0
VIDEO_SSRC = 0xB0B0B0B0
OUR_SSRC = 0x5EED0001


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


class Sink:
    def __init__(self) -> None:
        self.packets: list[bytes] = []

    def __call__(self, data: bytes) -> None:
        assert isinstance(data, bytes)  # pylibsrtp's protect() takes bytes only
        self.packets.append(data)

    def parsed(self) -> list[RtpHeader]:
        return [parse_rtp(p) for p in self.packets]

    def rtcp(self) -> list[object]:
        return [q for p in self.packets for q in parse_rtcp(p)]


def rtp(
    ssrc: int,
    seq: int,
    ts: int,
    *,
    pt: int = 96,
    payload: bytes = b"\x00" * 20,
    marker: bool = False,
    ext: list[tuple[int, bytes]] | None = None,
) -> bytes:
    block = build_extension_block(ext or [])
    b0 = 0x80 | (0x10 if block else 0)
    return (
        struct.pack("!BBHII", b0, (0x80 if marker else 0) | pt, seq & 0xFFFF, ts, ssrc)
        + block
        + payload
    )


def vp8(picture_id: int, tl0: int, *, key: bool, start: bool = True) -> bytes:
    """libwebrtc VP8 descriptor (15-bit picture id, TL0PICIDX, TID byte) + frame header."""
    b0 = 0x90 if start else 0x80
    frame = b"\x10\x02\x00\x9d\x01\x2a" if key else b"\x31\x02\x00\x00\x00\x00"
    return bytes([b0, 0xE0]) + struct.pack("!HBB", 0x8000 | picture_id, tl0, 0x20) + frame


def setup_audio(
    fwd: ForwardingPlane, pub_rtcp: Sink, *, extensions: dict[str, int] | None = None
) -> tuple[Sink, Sink]:
    fwd.add_uptrack(
        "TR_audio",
        "audio",
        codecs={111: "audio/opus", 63: "audio/red"},
        extensions={1: URI_AUDIO_LEVEL, 4: URI_MID},
        rids=[],
        ssrcs={AUDIO_SSRC: None},
        mid="13",
        send_rtcp=pub_rtcp,
        publisher=PUB,
    )
    out, rtcp = Sink(), Sink()
    fwd.add_downtrack(
        "TR_audio",
        SUB,
        ssrc=OUR_SSRC,
        codecs={"audio/opus": 109},
        extensions=extensions or {},
        send_rtp=out,
        send_rtcp=rtcp,
    )
    return out, rtcp


def setup_video(
    fwd: ForwardingPlane,
    pub_rtcp: Sink,
    *,
    ssrcs: dict[int, str | None] | None = None,
    rids: list[str] | None = None,
) -> tuple[Sink, Sink]:
    fwd.add_uptrack(
        "TR_video",
        "video",
        codecs={96: "video/VP8", 97: "video/rtx"},
        extensions={9: URI_MID, 10: URI_RID, 11: URI_REPAIRED_RID, 2: URI_ABS_SEND_TIME},
        rids=rids or [],
        ssrcs={VIDEO_SSRC: None} if ssrcs is None else ssrcs,
        mid="14",
        send_rtcp=pub_rtcp,
        publisher=PUB,
    )
    out, rtcp = Sink(), Sink()
    fwd.add_downtrack(
        "TR_video",
        SUB,
        ssrc=OUR_SSRC,
        codecs={"video/vp8": 100},
        extensions={},
        send_rtp=out,
        send_rtcp=rtcp,
    )
    return out, rtcp


# -- single layer ----------------------------------------------------------------------------


def test_audio_rewrite_seq_ts_ssrc_pt_and_extensions() -> None:
    clock, pub_rtcp = Clock(), Sink()
    fwd = ForwardingPlane(clock=clock)
    out, _ = setup_audio(fwd, pub_rtcp, extensions={URI_AUDIO_LEVEL: 5})
    for i in range(5):
        ext = [(4, b"13"), (1, bytes([0x80 | 20]))]
        fwd.handle_rtp(
            PUB,
            rtp(
                AUDIO_SSRC,
                65533 + i,
                4000000000 + 960 * i,
                pt=111,
                marker=i == 0,
                payload=b"opus%d" % i,
                ext=ext,
            ),
        )
    headers = out.parsed()
    assert len(headers) == 5
    assert all(h.ssrc == OUR_SSRC and h.payload_type == 109 for h in headers)
    assert headers[0].marker and not headers[1].marker
    for a, b in itertools.pairwise(headers):
        assert (b.sequence - a.sequence) & 0xFFFF == 1
        assert (b.timestamp - a.timestamp) & 0xFFFFFFFF == 960
    for data, h in zip(out.packets, headers, strict=True):
        assert read_audio_level(data, h, 5) == (True, 20)  # remapped 1 -> 5
        assert data[h.payload_offset :].startswith(b"opus")
        assert h.extension_end - h.extension_start == 4  # mid dropped, one element + padding
    down = fwd.downtrack("TR_audio", SUB)
    assert down is not None and (down.packets_sent, down.bytes_sent) == (
        5,
        sum(map(len, out.packets)),
    )
    assert pub_rtcp.packets == []  # no keyframe requests for audio


def test_unnegotiated_codec_dropped_red_forwarded_when_negotiated() -> None:
    fwd = ForwardingPlane(clock=Clock())
    out, _ = setup_audio(fwd, Sink())
    fwd.handle_rtp(PUB, rtp(AUDIO_SSRC, 1, 0, pt=63))  # RED: subscriber only has opus
    assert out.packets == []
    red_out = Sink()
    fwd.add_downtrack(
        "TR_audio",
        "PA_other",
        ssrc=7,
        codecs={"audio/red": 63, "audio/opus": 111},
        extensions={},
        send_rtp=red_out,
        send_rtcp=Sink(),
    )
    fwd.handle_rtp(PUB, rtp(AUDIO_SSRC, 2, 960, pt=63, payload=b"redpayload"))
    assert [h.payload_type for h in red_out.parsed()] == [63]
    assert red_out.packets[0].endswith(b"redpayload")


def test_video_pli_on_subscribe_and_wait_for_keyframe() -> None:
    clock, pub_rtcp = Clock(), Sink()
    fwd = ForwardingPlane(clock=clock)
    out, _ = setup_video(fwd, pub_rtcp)
    (pli,) = pub_rtcp.rtcp()
    assert isinstance(pli, Pli) and pli.media_ssrc == VIDEO_SSRC
    fwd.handle_rtp(PUB, rtp(VIDEO_SSRC, 10, 3000, payload=vp8(5, 1, key=False)))
    assert out.packets == []  # delta frame: undecodable, dropped
    fwd.handle_rtp(PUB, rtp(VIDEO_SSRC, 11, 6000, payload=vp8(6, 2, key=True)))
    fwd.handle_rtp(
        PUB, rtp(VIDEO_SSRC, 12, 6000, payload=vp8(6, 2, key=False, start=False), marker=True)
    )
    fwd.handle_rtp(PUB, rtp(VIDEO_SSRC, 13, 9000, payload=vp8(7, 3, key=False)))
    headers = out.parsed()
    assert len(headers) == 3 and [h.payload_type for h in headers] == [100] * 3
    assert headers[1].marker and headers[0].extension_profile == 0
    d = Vp8Descriptor()
    d.parse(out.packets[0], 12, len(out.packets[0]))
    assert d.keyframe and d.picture_id == 6  # first epoch keeps the publisher's picture ids


def test_learn_ssrc_from_mid_without_sdp_ssrcs() -> None:
    pub_rtcp = Sink()
    fwd = ForwardingPlane(clock=Clock())
    out, _ = setup_video(fwd, pub_rtcp, ssrcs={})
    assert pub_rtcp.packets == []  # SSRC unknown: the PLI is deferred
    fwd.handle_rtp(PUB, rtp(VIDEO_SSRC, 1, 0, payload=vp8(1, 0, key=False), ext=[(9, b"99")]))
    assert out.packets == [] and pub_rtcp.packets == []  # other mid: not ours
    fwd.handle_rtp(PUB, rtp(VIDEO_SSRC, 1, 0, payload=vp8(1, 0, key=False), ext=[(9, b"14")]))
    assert [type(p) for p in pub_rtcp.rtcp()] == [Pli]  # deferred PLI now sent
    fwd.handle_rtp(PUB, rtp(VIDEO_SSRC, 2, 3000, payload=vp8(2, 1, key=True)))  # no mid now
    assert len(out.packets) == 1


def test_rtx_stream_is_not_forwarded() -> None:
    fwd = ForwardingPlane(clock=Clock())
    out, _ = setup_video(fwd, Sink(), ssrcs={})
    fwd.handle_rtp(
        PUB,
        rtp(
            0x777,
            1,
            0,
            pt=97,
            payload=b"\x00\x01" + vp8(1, 0, key=True),
            ext=[(9, b"14"), (11, b"q")],
        ),
    )
    assert out.packets == []


def test_subscriber_pli_throttled_then_flushed_by_tick() -> None:
    clock, pub_rtcp = Clock(), Sink()
    fwd = ForwardingPlane(clock=clock)
    setup_video(fwd, pub_rtcp)
    pub_rtcp.packets.clear()
    clock.t += 0.1
    fwd.handle_subscriber_rtcp(SUB, build_pli(1, OUR_SSRC))
    assert pub_rtcp.packets == []  # within 500 ms of the subscribe PLI
    down = fwd.downtrack("TR_video", SUB)
    assert down is not None and down.plis == 1
    clock.t += 0.5
    fwd.tick()
    assert any(isinstance(p, Pli) and p.media_ssrc == VIDEO_SSRC for p in pub_rtcp.rtcp())


def test_a_stream_longer_than_half_the_sequence_space_keeps_flowing() -> None:
    # One epoch of 70,000 packets (two sequence wraps): after 32,768 every new packet used to
    # count as older than the epoch's start and the video stopped for good (~6 min at 95
    # packets/s, found by bench/hostile).
    fwd = ForwardingPlane(clock=Clock())
    out, _ = setup_video(fwd, Sink())
    count = 70_000
    for i in range(count):
        payload = vp8(i & 0x7FFF, i & 0xFF, key=i == 0)
        fwd.handle_rtp(PUB, rtp(VIDEO_SSRC, 60_000 + i, 3000 * i & 0xFFFFFFFF, payload=payload))
        if i == 10:  # a late packet from before the epoch's keyframe is never sent
            fwd.handle_rtp(PUB, rtp(VIDEO_SSRC, 59_999, 0, payload=vp8(0, 0, key=False)))
    assert len(out.packets) == count
    last = parse_rtp(out.packets[-1]).sequence
    assert (last - parse_rtp(out.packets[0]).sequence) & 0xFFFF == (count - 1) & 0xFFFF
    # Nor one from far behind the newest; NACKs for recent ones still work.
    fwd.handle_rtp(PUB, rtp(VIDEO_SSRC, 60_000 + count - 20_000, 0, payload=vp8(1, 0, key=False)))
    assert len(out.packets) == count
    fwd.handle_subscriber_rtcp(SUB, build_nack(1, OUR_SSRC, [(last - 3) & 0xFFFF]))
    assert out.packets[-1] == out.packets[-5]


def test_nack_retransmits_the_same_bytes() -> None:
    fwd = ForwardingPlane(clock=Clock())
    out, _ = setup_video(fwd, Sink())
    for i in range(5):
        fwd.handle_rtp(PUB, rtp(VIDEO_SSRC, 100 + i, 3000 * i, payload=vp8(i, 0, key=i == 0)))
    lost = [parse_rtp(out.packets[2]).sequence, parse_rtp(out.packets[4]).sequence]
    fwd.handle_subscriber_rtcp(SUB, build_nack(1, OUR_SSRC, [*lost, (lost[1] + 1) & 0xFFFF]))
    assert out.packets[5:] == [out.packets[2], out.packets[4]]  # future seq ignored
    down = fwd.downtrack("TR_video", SUB)
    assert down is not None and (down.nacks, down.retransmits) == (3, 2)


def test_tick_sends_rr_remb_upstream_and_sr_downstream() -> None:
    clock, pub_rtcp = Clock(), Sink()
    fwd = ForwardingPlane(clock=clock)
    out, sub_rtcp = setup_video(fwd, pub_rtcp)
    fwd.handle_publisher_rtcp(PUB, build_sr(VIDEO_SSRC, 0xE000123456780000, 90000, 1, 100))
    for i in (0, 1, 3):  # seq 2 lost
        fwd.handle_rtp(PUB, rtp(VIDEO_SSRC, i, 90000 + 3000 * i, payload=vp8(i, 0, key=i == 0)))
    pub_rtcp.packets.clear()
    clock.t += 0.25
    fwd.tick()
    rr, remb = pub_rtcp.rtcp()
    assert isinstance(rr, ReceiverReport) and isinstance(remb, Remb)
    (block,) = rr.reports
    assert (block.ssrc, block.highest_sequence, block.packets_lost) == (VIDEO_SSRC, 3, 1)
    assert block.fraction_lost == 64 and block.lsr == 0x12345678
    assert 0.24 < block.dlsr / 65536 < 0.26
    assert remb.ssrcs == [VIDEO_SSRC] and remb.bitrate > 2_900_000
    (sr,) = sub_rtcp.rtcp()
    assert isinstance(sr, SenderReport)
    assert (sr.ssrc, sr.packet_count) == (OUR_SSRC, 3)
    first = parse_rtp(out.packets[0])
    assert sr.octet_count == sum(len(p) - 12 for p in out.packets)
    # publisher SR said RTP 90000 at NTP 0xE000...; 0.25 s later → +22500 in our domain
    assert (sr.rtp_timestamp - first.timestamp) & 0xFFFFFFFF == 22500
    assert sr.ntp_timestamp == 0xE000123456780000 + (1 << 30)
    # next tick within the intervals sends nothing
    pub_rtcp.packets.clear()
    sub_rtcp.packets.clear()
    clock.t += 0.25
    fwd.tick()
    assert sub_rtcp.packets == [] and pub_rtcp.packets == []
    clock.t += 0.25
    fwd.tick()
    assert sub_rtcp.packets == [] and len(pub_rtcp.packets) == 1  # RR + REMB every 0.5 s


def test_subscriber_rr_and_remb_update_stats() -> None:
    clock = Clock()
    fwd = ForwardingPlane(clock=clock)
    _out, sub_rtcp = setup_video(fwd, Sink())
    fwd.handle_rtp(PUB, rtp(VIDEO_SSRC, 1, 0, payload=vp8(1, 0, key=True)))
    fwd.tick()
    (sr,) = sub_rtcp.rtcp()
    assert isinstance(sr, SenderReport)
    clock.t += 0.2
    block = ReportBlock(OUR_SSRC, 12, 3, 1, 40, (sr.ntp_timestamp >> 16) & 0xFFFFFFFF, 6553)
    fwd.handle_subscriber_rtcp(SUB, build_rr(1, [block]) + build_remb(1, 500_000, [OUR_SSRC]))
    down = fwd.downtrack("TR_video", SUB)
    assert down is not None
    assert (down.fraction_lost, down.packets_lost, down.jitter) == (12, 3, 40)
    assert down.rtt is not None and abs(down.rtt - 0.1) < 0.001
    assert down.remb_bitrate is not None and 490_000 < down.remb_bitrate <= 500_000


# -- simulcast -------------------------------------------------------------------------------

Q, H, F = 0x1111, 0x2222, 0x3333


def sim_packet(
    ssrc: int, seq: int, ts: int, pid: int, tl0: int, key: bool, rid: bytes = b""
) -> bytes:
    ext = [(9, b"14"), (10, rid)] if rid else None
    return rtp(ssrc, seq, ts, payload=vp8(pid, tl0, key=key), ext=ext)


def test_simulcast_learn_rids_switch_on_keyframe_with_continuity() -> None:
    clock, pub_rtcp = Clock(), Sink()
    fwd = ForwardingPlane(clock=clock)
    out, _ = setup_video(fwd, pub_rtcp, ssrcs={}, rids=["q", "h", "f"])
    assert pub_rtcp.packets == []  # no layer SSRC known yet: PLI deferred
    # Chrome: each layer's first packet carries mid+rid and is a keyframe. q arrives first
    # (the downtrack takes it: best live layer), then f (the wanted one): switch up.
    fwd.handle_rtp(PUB, sim_packet(Q, 500, 1000, 40, 4, True, b"q"))
    fwd.handle_rtp(PUB, sim_packet(F, 9000, 777000, 300, 30, True, b"f"))
    assert len(out.packets) == 2
    for i in range(1, 4):
        clock.t += 0.05
        fwd.handle_rtp(PUB, sim_packet(Q, 500 + i, 1000 + 4500 * i, 40 + i, 4 + i, False))
        fwd.handle_rtp(PUB, sim_packet(F, 9000 + i, 777000 + 4500 * i, 300 + i, 30 + i, False))
    assert len(out.packets) == 5  # q keyframe, then f only
    # Switch down to q: continue f until a q keyframe comes.
    pub_rtcp.packets.clear()
    clock.t += 0.5  # past the PLI throttle (q got one when it started)
    fwd.set_target_layer("TR_video", SUB, 0)
    assert [(type(p), getattr(p, "media_ssrc", 0)) for p in pub_rtcp.rtcp()] == [(Pli, Q)]
    clock.t += 0.05
    fwd.handle_rtp(PUB, sim_packet(Q, 504, 1000 + 4500 * 4, 44, 8, False))  # delta: not yet
    fwd.handle_rtp(PUB, sim_packet(F, 9004, 777000 + 4500 * 4, 304, 34, False))
    assert len(out.packets) == 6
    clock.t += 0.05
    fwd.handle_rtp(PUB, sim_packet(F, 9005, 777000 + 4500 * 5, 305, 35, False))
    fwd.handle_rtp(PUB, sim_packet(Q, 505, 1000 + 4500 * 5, 45, 9, True))  # q keyframe: switch
    fwd.handle_rtp(PUB, sim_packet(F, 9006, 777000 + 4500 * 6, 306, 36, False))  # now ignored
    fwd.handle_rtp(PUB, sim_packet(Q, 504, 1000 + 4500 * 4, 44, 8, False))  # before switch
    headers = out.parsed()
    assert len(headers) == 8
    assert all((b.sequence - a.sequence) & 0xFFFF == 1 for a, b in itertools.pairwise(headers))
    f5, q5 = headers[6], headers[7]
    assert (q5.timestamp - f5.timestamp) & 0xFFFFFFFF == 1  # same arrival time: +1 tick
    d5, dq = Vp8Descriptor(), Vp8Descriptor()
    d5.parse(out.packets[6], f5.payload_offset, len(out.packets[6]))
    dq.parse(out.packets[7], q5.payload_offset, len(out.packets[7]))
    assert dq.keyframe and dq.picture_id == d5.picture_id + 1
    assert dq.tl0picidx == d5.tl0picidx + 1
    # the first switch (q -> f) munged too: picture ids continue across it
    pids = []
    for data, h in zip(out.packets, headers, strict=True):
        d = Vp8Descriptor()
        d.parse(data, h.payload_offset, len(data))
        pids.append(d.picture_id)
    assert pids == list(range(40, 48))
    # next q packet keeps the munged offsets
    clock.t += 0.05
    fwd.handle_rtp(PUB, sim_packet(Q, 506, 1000 + 4500 * 6, 46, 10, False))
    q6 = parse_rtp(out.packets[-1])
    d6 = Vp8Descriptor()
    d6.parse(out.packets[-1], q6.payload_offset, len(out.packets[-1]))
    assert q6.sequence == (q5.sequence + 1) & 0xFFFF and d6.picture_id == 48
    assert (q6.timestamp - q5.timestamp) & 0xFFFFFFFF == 4500
    track = fwd.uptrack("TR_video")
    assert track is not None and track.stats().layers_seen == [0, 2]


def test_simulcast_falls_back_to_live_layer_and_pauses() -> None:
    clock, pub_rtcp = Clock(), Sink()
    fwd = ForwardingPlane(clock=clock)
    out, _ = setup_video(fwd, pub_rtcp, ssrcs={}, rids=["q", "h", "f"])
    fwd.handle_rtp(PUB, sim_packet(H, 1, 0, 1, 1, True, b"h"))  # no f yet: take h
    assert len(out.packets) == 1
    fwd.set_target_layer("TR_video", SUB, None)
    fwd.handle_rtp(PUB, sim_packet(H, 2, 3000, 2, 2, True))
    assert len(out.packets) == 1  # paused
    clock.t += 2.0
    fwd.set_target_layer("TR_video", SUB, 1)
    fwd.handle_rtp(PUB, sim_packet(H, 3, 6000, 3, 3, True))
    first, resumed = out.parsed()
    assert resumed.sequence == (first.sequence + 1) & 0xFFFF
    assert (resumed.timestamp - first.timestamp) & 0xFFFFFFFF == 180000  # 2 s at 90 kHz


# -- mute, removal, audio levels, robustness -------------------------------------------------


def test_downtrack_mute_and_unmute_resumes_continuously() -> None:
    clock, pub_rtcp = Clock(), Sink()
    fwd = ForwardingPlane(clock=clock)
    out, _ = setup_audio(fwd, pub_rtcp)
    fwd.handle_rtp(PUB, rtp(AUDIO_SSRC, 1, 960, pt=111))
    fwd.set_subscriber_muted("TR_audio", SUB, True)
    fwd.handle_rtp(PUB, rtp(AUDIO_SSRC, 2, 1920, pt=111))
    clock.t += 1.0
    fwd.set_subscriber_muted("TR_audio", SUB, False)
    fwd.handle_rtp(PUB, rtp(AUDIO_SSRC, 60, 48960, pt=111))
    a, b = out.parsed()
    assert b.sequence == (a.sequence + 1) & 0xFFFF
    assert (b.timestamp - a.timestamp) & 0xFFFFFFFF == 48000


def test_publisher_mute_drops_and_unmute_requests_keyframe() -> None:
    clock, pub_rtcp = Clock(), Sink()
    fwd = ForwardingPlane(clock=clock)
    out, _ = setup_video(fwd, pub_rtcp)
    fwd.handle_rtp(PUB, rtp(VIDEO_SSRC, 1, 0, payload=vp8(1, 0, key=True)))
    fwd.set_muted("TR_video", True)
    fwd.handle_rtp(PUB, rtp(VIDEO_SSRC, 2, 3000, payload=vp8(2, 0, key=True)))
    assert len(out.packets) == 1
    pub_rtcp.packets.clear()
    clock.t += 1
    fwd.set_muted("TR_video", False)
    assert [type(p) for p in pub_rtcp.rtcp()] == [Pli]
    fwd.handle_rtp(PUB, rtp(VIDEO_SSRC, 3, 93000, payload=vp8(3, 0, key=False)))
    assert len(out.packets) == 1  # waits for the keyframe


def test_remove_uptrack_detaches_downtracks() -> None:
    fwd = ForwardingPlane(clock=Clock())
    out, _ = setup_audio(fwd, Sink())
    fwd.remove_uptrack("TR_audio")
    assert fwd.uptrack("TR_audio") is None and fwd.downtrack("TR_audio", SUB) is None
    fwd.handle_rtp(PUB, rtp(AUDIO_SSRC, 1, 0, pt=111))
    fwd.handle_subscriber_rtcp(SUB, build_pli(1, OUR_SSRC))
    fwd.tick()
    assert out.packets == []


def test_audio_level_and_speaking() -> None:
    clock = Clock()
    fwd = ForwardingPlane(clock=clock)
    setup_audio(fwd, Sink())
    track = fwd.uptrack("TR_audio")
    assert track is not None and not track.is_speaking() and track.audio_level() == 0
    for i in range(60):  # 1.2 s of speech at -20 dBov
        clock.t += 0.02
        fwd.handle_rtp(PUB, rtp(AUDIO_SSRC, i, 960 * i, pt=111, ext=[(1, bytes([0x80 | 20]))]))
    assert track.is_speaking()
    assert 0.09 < track.audio_level() <= 0.1  # 10^(-20/20) smoothed towards 0.1
    for i in range(60, 100):  # silence
        clock.t += 0.02
        fwd.handle_rtp(PUB, rtp(AUDIO_SSRC, i, 960 * i, pt=111, ext=[(1, bytes([127]))]))
    assert not track.is_speaking() and track.audio_level() == 0
    clock.t += 5
    assert track.audio_level() == 0
    stats = track.stats()
    assert stats.packets == 100 and stats.layers_seen == [0]


@settings(max_examples=300)
@given(st.binary(max_size=64))
def test_garbage_never_raises(data: bytes) -> None:
    fwd = ForwardingPlane(clock=Clock())
    setup_video(fwd, Sink(), ssrcs={})
    fwd.handle_rtp(PUB, data)
    fwd.handle_rtp(
        PUB,
        struct.pack("!I", 0x80600001) + b"\x00\x00\x00\x00" + struct.pack("!I", VIDEO_SSRC) + data,
    )
    fwd.handle_publisher_rtcp(PUB, data)
    fwd.handle_subscriber_rtcp(SUB, data)
    fwd.tick()


def test_subscribers_with_different_extension_maps_get_their_own_rewrite() -> None:
    fwd = ForwardingPlane(clock=Clock())
    out_a, _ = setup_audio(fwd, Sink(), extensions={URI_AUDIO_LEVEL: 5})
    out_b, out_c = Sink(), Sink()
    for name, sink, ext in (("PA_b", out_b, {URI_AUDIO_LEVEL: 12}), ("PA_c", out_c, {})):
        fwd.add_downtrack(
            "TR_audio",
            name,
            ssrc=hash(name) & 0xFFFF,
            codecs={"audio/opus": 111},
            extensions=ext,
            send_rtp=sink,
            send_rtcp=Sink(),
        )
    for i in range(3):
        fwd.handle_rtp(
            PUB, rtp(AUDIO_SSRC, i, 960 * i, pt=111, ext=[(4, b"13"), (1, bytes([30 + i]))])
        )
    for sink, ext_id in ((out_a, 5), (out_b, 12)):
        levels = [
            read_audio_level(d, h, ext_id) for d, h in zip(sink.packets, sink.parsed(), strict=True)
        ]
        assert levels == [(False, 30), (False, 31), (False, 32)]
    assert [h.extension_profile for h in out_c.parsed()] == [0, 0, 0]
    assert all(p.endswith(b"\x00" * 20) for p in out_a.packets + out_b.packets + out_c.packets)


def test_fir_from_subscriber_becomes_pli_upstream() -> None:
    clock, pub_rtcp = Clock(), Sink()
    fwd = ForwardingPlane(clock=clock)
    setup_video(fwd, pub_rtcp)
    pub_rtcp.packets.clear()
    clock.t += 1
    fwd.handle_subscriber_rtcp(SUB, build_fir(1, OUR_SSRC, 1))
    assert [(type(p), getattr(p, "media_ssrc", 0)) for p in pub_rtcp.rtcp()] == [(Pli, VIDEO_SSRC)]


def test_unknown_publisher_and_subscriber_are_ignored() -> None:
    fwd = ForwardingPlane(clock=Clock())
    out, _ = setup_audio(fwd, Sink())
    fwd.handle_rtp("PA_nobody", rtp(AUDIO_SSRC, 1, 0, pt=111))
    fwd.handle_subscriber_rtcp("PA_nobody", build_pli(1, OUR_SSRC))
    fwd.handle_publisher_rtcp("PA_nobody", build_sr(1, 0, 0, 0, 0))
    assert out.packets == []


def test_nack_storm_is_bounded() -> None:
    from roomcast.media.downtrack import NACK_BURST

    clock = Clock()
    fwd = ForwardingPlane(clock=clock)
    out, _ = setup_video(fwd, Sink())
    for i in range(5):
        fwd.handle_rtp(PUB, rtp(VIDEO_SSRC, 100 + i, 3000 * i, payload=vp8(i, 0, key=i == 0)))
    seq = parse_rtp(out.packets[2]).sequence
    sent_before = len(out.packets)
    for _ in range(int(NACK_BURST) * 3):  # a flood of NACKs for one packet, at one instant
        fwd.handle_subscriber_rtcp(SUB, build_nack(1, OUR_SSRC, [seq]))
    assert len(out.packets) - sent_before == int(NACK_BURST)
    down = fwd.downtrack("TR_video", SUB)
    assert down is not None and down.nacks_dropped == int(NACK_BURST) * 2
    clock.t += 1.0  # the budget refills with time
    fwd.handle_subscriber_rtcp(SUB, build_nack(1, OUR_SSRC, [seq]))
    assert len(out.packets) - sent_before == int(NACK_BURST) + 1


def test_unknown_ssrc_flood_is_rate_limited_and_known_media_still_flows() -> None:
    clock = Clock()
    fwd = ForwardingPlane(clock=clock, unknown_ssrc_rate=10)  # burst 20
    out, _ = setup_video(fwd, Sink(), ssrcs={})
    flood = [rtp(0x1000 + i, i, 0, ext=[(9, b"99")]) for i in range(500)]
    for packet in flood:
        fwd.handle_rtp(PUB, packet)
    assert fwd.totals()["unknown_ssrc_dropped"] == 500 - 20
    # The budget is spent, so our own stream's first packet waits for a refill …
    keyframe = rtp(VIDEO_SSRC, 1, 0, payload=vp8(1, 0, key=True), ext=[(9, b"14")])
    fwd.handle_rtp(PUB, keyframe)
    assert out.packets == []
    clock.t += 0.2  # … of two tokens
    fwd.handle_rtp(PUB, keyframe)
    assert len(out.packets) == 1  # learned once, then forwarded without the bucket
    for seq in range(2, 200):
        fwd.handle_rtp(PUB, rtp(VIDEO_SSRC, seq, 0, payload=vp8(seq, 0, key=False)))
    assert len(out.packets) == 199
    assert fwd.totals()["unknown_ssrc_dropped"] == 500 - 20 + 1
