"""Congestion control in the native engine (native/forward.h, module.c), through the binding on
loopback sockets: transport-wide numbers on forwarded packets and on Python's own (one counter
per transport), the send records Python's estimator reads, RTX retransmissions and probe
padding (RFC 4588 §4), publisher arrivals for transport-cc feedback, NACKs to publishers."""

from __future__ import annotations

import itertools
import select
import struct
import time
from typing import Any

import pytest

from roomcast.media.downlink import MAX_PADDING_BURST, Downlink
from roomcast.media.native_plane import EV_ARRIVALS, EV_NACK, EV_RTP, native_module
from roomcast.media.native_tracks import NativeTransportWide
from roomcast.media.rtp import find_extension, parse_rtp
from roomcast.media.twcc import build_twcc, parse_twcc

from .test_native_engine import (
    PUB_SSRC,
    SUB_PT,
    SUB_SSRC,
    VP8_PT,
    Peer,
    peer,
    vp8_packet,
    wait_events,
)

native, why = native_module()
pytestmark = pytest.mark.skipif(native is None, reason=f"native plane not built: {why}")

TW_ID = 3  # the subscriber's transport-cc id
PUB_TW_ID = 5  # the publisher's
RTX_PT, RTX_SSRC = 101, 0xAAAA0002
RECORD = struct.Struct("=qdI4x")
TW_BLOCK = struct.Struct("!HHBHx")  # a one-byte extension block with one 2-byte element
ARRIVAL = struct.Struct("=dII")


def tw_number(packet: bytes, ext_id: int = TW_ID) -> int:
    found = find_extension(packet, parse_rtp(packet), ext_id)
    assert found is not None and found[1] == 2
    return int.from_bytes(packet[found[0] : found[0] + 2], "big")


def with_tw(packet: bytes, number: int, ext_id: int = PUB_TW_ID) -> bytes:
    """`packet` (no extension) with a one-byte extension block holding a transport-wide number."""
    block = TW_BLOCK.pack(0xBEDE, 1, ext_id << 4 | 1, number)
    return bytes([packet[0] | 0x10]) + packet[1:12] + block + packet[12:]


def cc_track(
    eng: object, publisher: Peer, subscriber: Peer, *, rtx: bool = True, nack: bool = False
) -> tuple[int, int]:
    kinds = bytearray(128)
    kinds[VP8_PT] = 2
    rates = [0] * 128
    rates[VP8_PT] = 90000
    uptrack = eng.add_uptrack(True, 1, bytes(kinds), rates, 512)  # type: ignore[attr-defined]
    eng.set_uptrack_nack(uptrack, nack)  # type: ignore[attr-defined]
    eng.set_transport_arrivals(publisher.transport, PUB_TW_ID)  # type: ignore[attr-defined]
    eng.bind_ssrc(publisher.transport, PUB_SSRC, uptrack, 0)  # type: ignore[attr-defined]
    pt_map = bytearray([255] * 128)
    pt_map[VP8_PT] = SUB_PT
    rtx_map = bytearray([255] * 128)
    if rtx:
        rtx_map[SUB_PT] = RTX_PT
    eng.set_transport_cc(subscriber.transport, TW_ID)  # type: ignore[attr-defined]
    downtrack = eng.add_downtrack(  # type: ignore[attr-defined]
        uptrack, subscriber.transport, SUB_SSRC, bytes(pt_map), bytes(256),
        TW_ID, RTX_SSRC if rtx else 0, bytes(rtx_map),
    )  # fmt: skip
    eng.control(downtrack, 0, -2, False)  # type: ignore[attr-defined]
    return uptrack, downtrack


def records(eng: object, transport: int, since: int) -> tuple[int, list[tuple[int, float, int]]]:
    following, blob = eng.transport_sent(transport, since)  # type: ignore[attr-defined]
    return following, list(RECORD.iter_unpack(blob))


def test_forwarded_and_python_packets_share_one_counter(engine: tuple) -> None:
    eng, sock = engine
    address = sock.getsockname()
    pub, sub = peer(eng), peer(eng)
    cc_track(eng, pub, sub)
    pub.send_rtp(with_tw(vp8_packet(10, 9000, keyframe=True), 40), address)
    first = sub.receive_rtp()
    assert first is not None and tw_number(first) == 1
    # Python's own packet (an audio track of the same subscriber), its number left 0.
    own = struct.pack("!BBHII", 0x90, 111, 1, 2, 0x1234)
    own += TW_BLOCK.pack(0xBEDE, 1, TW_ID << 4 | 1, 0) + b"audio"
    assert eng.send_rtp(sub.transport, own)
    second = sub.receive_rtp()
    assert second is not None and tw_number(second) == 2 and second[-5:] == b"audio"
    pub.send_rtp(with_tw(vp8_packet(11, 12000, keyframe=False), 41), address)
    third = sub.receive_rtp()
    assert third is not None and tw_number(third) == 3
    # The publisher's own number is not forwarded (the subscriber's id maps nothing).
    assert find_extension(third, parse_rtp(third), PUB_TW_ID) is None or PUB_TW_ID == TW_ID
    following, sent = records(eng, sub.transport, 1)
    assert following == 4
    assert [r[0] for r in sent] == [1, 2, 3]
    assert [r[2] for r in sent] == [len(first), len(second), len(third)]
    assert sent[0][1] <= sent[1][1] <= sent[2][1]
    assert records(eng, sub.transport, 3)[1][0][0] == 3  # from a given number on
    # Unkeyed (ICE-TCP): Python numbers its packet through the engine before protecting it.
    assert tw_number(eng.number(sub.transport, own)) == 4


def test_retransmissions_go_on_the_rtx_stream_with_new_numbers(engine: tuple) -> None:
    eng, sock = engine
    address = sock.getsockname()
    pub, sub = peer(eng), peer(eng)
    _, downtrack = cc_track(eng, pub, sub)
    pub.send_rtp(with_tw(vp8_packet(10, 9000, keyframe=True), 1), address)
    media = sub.receive_rtp()
    assert media is not None
    seq = struct.unpack_from("!H", media, 2)[0]
    assert eng.retransmit(downtrack, [seq]) == (1, 0)
    repair = sub.receive_rtp()
    assert repair is not None
    header = parse_rtp(repair)
    assert header.payload_type == RTX_PT and header.ssrc == RTX_SSRC
    assert repair[header.payload_offset : header.payload_offset + 2] == media[2:4]  # OSN
    assert repair[header.payload_offset + 2 :] == media[parse_rtp(media).payload_offset :]
    assert tw_number(repair) == tw_number(media) + 1
    # Probe padding on the same RTX stream, numbered on the same counter.
    assert eng.pad(downtrack, 2) == 2 * 275
    pads = [sub.receive_rtp(), sub.receive_rtp()]
    for i, padding in enumerate(pads):
        assert padding is not None and len(padding) == 275
        h = parse_rtp(padding)
        assert (h.ssrc, h.payload_type, h.padding) == (RTX_SSRC, RTX_PT, 255)
        assert tw_number(padding) == tw_number(media) + 2 + i
        assert (h.sequence - header.sequence) & 0xFFFF == 1 + i
    assert eng.downtrack_state(downtrack)[12] == 2 * 275


def test_without_rtx_retransmissions_are_resent_as_they_were(engine: tuple) -> None:
    eng, sock = engine
    pub, sub = peer(eng), peer(eng)
    _, downtrack = cc_track(eng, pub, sub, rtx=False)
    pub.send_rtp(with_tw(vp8_packet(10, 9000, keyframe=True), 1), sock.getsockname())
    media = sub.receive_rtp()
    assert media is not None
    assert eng.retransmit(downtrack, [struct.unpack_from("!H", media, 2)[0]]) == (1, 0)
    again = sub.receive_raw()  # the same SSRC and sequence: the receiver's replay check
    assert again is not None and parse_rtp(again).ssrc == SUB_SSRC  # (the header is clear)
    assert tw_number(again) == 2 and again[:16] == media[:16]
    assert eng.pad(downtrack, 1) == 0  # no RTX stream: nothing to pad with


def test_probe_pads_after_media_up_to_its_rate(engine: tuple) -> None:
    eng, sock = engine
    address = sock.getsockname()
    pub, sub = peer(eng), peer(eng)
    _, downtrack = cc_track(eng, pub, sub)
    pub.send_rtp(with_tw(vp8_packet(10, 9000, keyframe=True), 1), address)
    assert sub.receive_rtp() is not None
    start = time.monotonic() - 1.0  # a probe that began a second ago owes a second of padding
    eng.start_probe(sub.transport, downtrack, 8 * 275 * 100, start, start + 10)
    pub.send_rtp(with_tw(vp8_packet(11, 12000, keyframe=False), 2), address)
    got = [sub.receive_rtp() for _ in range(1 + MAX_PADDING_BURST)]  # media, then a burst
    assert all(p is not None for p in got)
    padding = sum(1 for p in got if p is not None and parse_rtp(p).ssrc == RTX_SSRC)
    assert padding == MAX_PADDING_BURST
    eng.stop_probe(sub.transport)
    pub.send_rtp(with_tw(vp8_packet(12, 15000, keyframe=False), 3), address)
    last = sub.receive_rtp()
    assert last is not None and parse_rtp(last).ssrc == SUB_SSRC
    assert sub.nothing_pending()


def test_publisher_arrivals_are_recorded(engine: tuple) -> None:
    eng, sock = engine
    address = sock.getsockname()
    pub, sub = peer(eng), peer(eng)
    cc_track(eng, pub, sub)
    for i, number in enumerate((700, 701, 703)):
        pub.send_rtp(with_tw(vp8_packet(10 + i, 9000, keyframe=True), number), address)
        assert sub.receive_rtp() is not None
    arrivals = list(ARRIVAL.iter_unpack(eng.arrivals(pub.transport)))
    assert [(a[1], a[2]) for a in arrivals] == [(700, PUB_SSRC), (701, PUB_SSRC), (703, PUB_SSRC)]
    assert arrivals[0][0] <= arrivals[1][0] <= arrivals[2][0]
    assert eng.arrivals(pub.transport) == b""  # taken


def test_arrivals_of_packets_handed_up_to_python_are_recorded_before_they_are(
    engine: tuple,
) -> None:
    """A publisher's audio (a track Python forwards) is stamped as the engine reads it, in
    order with the offloaded video: a feedback Python sends while the audio still waits in
    the event queue must not report it lost."""
    eng, sock = engine
    address = sock.getsockname()
    pub, sub = peer(eng), peer(eng)
    cc_track(eng, pub, sub)
    audio = struct.pack("!BBHII", 0x80, 111, 1, 960, 0xA0D10)  # an SSRC the engine has no route for
    pub.send_rtp(with_tw(audio + b"opus", 800), address)
    pub.send_rtp(with_tw(vp8_packet(10, 9000, keyframe=True), 801), address)
    assert sub.receive_rtp() is not None  # the video was read after the audio
    arrivals = list(ARRIVAL.iter_unpack(eng.arrivals(pub.transport)))
    assert [(a[1], a[2]) for a in arrivals] == [(800, 0xA0D10), (801, PUB_SSRC)]
    handed_up = wait_events(eng, EV_RTP)
    assert handed_up[0][1] == pub.transport and handed_up[0][3].endswith(b"opus")


def test_arrivals_kept_for_a_feedback_interval_are_announced(engine: tuple) -> None:
    eng, sock = engine
    address = sock.getsockname()
    pub, sub = peer(eng), peer(eng)
    cc_track(eng, pub, sub)
    announced: list[tuple[int, int, int, bytes, object]] = []
    deadline = time.monotonic() + 5
    seq = 0
    while not announced and time.monotonic() < deadline:  # a packet every few ms until told
        seq += 1
        pub.send_rtp(with_tw(vp8_packet(seq, 9000, keyframe=True), seq), address)
        assert sub.receive_rtp() is not None
        announced = [e for e in eng.events() if e[0] == EV_ARRIVALS]
    assert announced and announced[0][1] == pub.transport
    arrivals = list(ARRIVAL.iter_unpack(eng.arrivals(pub.transport)))
    assert arrivals[-1][0] - arrivals[0][0] >= 0.1  # twcc.py TwccRecorder.interval


def test_gaps_become_nack_events(engine: tuple) -> None:
    eng, sock = engine
    address = sock.getsockname()
    pub, sub = peer(eng), peer(eng)
    uptrack, _ = cc_track(eng, pub, sub, nack=True)
    pub.send_rtp(with_tw(vp8_packet(10, 9000, keyframe=True), 1), address)
    pub.send_rtp(with_tw(vp8_packet(13, 9000, keyframe=False), 2), address)  # 11, 12 missing
    for _ in range(2):
        assert sub.receive_rtp() is not None
    deadline = time.monotonic() + 0.02  # the first request waits MIN_INTERVAL (nack.py)
    while time.monotonic() < deadline:
        pass
    eng.check_nacks(uptrack)
    event = wait_events(eng, EV_NACK)[0]
    assert event[1:3] == (uptrack, 0)
    assert list(struct.unpack(f"!{len(event[3]) // 2}H", event[3])) == [11, 12]
    pub.send_rtp(with_tw(vp8_packet(11, 9000, keyframe=False), 3), address)  # recovered
    assert sub.receive_rtp() is not None


def test_the_downlink_matches_feedback_with_the_engines_send_records(engine: tuple) -> None:
    """NativeTransportWide: the subscriber's estimator sees what the engine sent."""
    eng, _ = engine
    sub = peer(eng)
    eng.set_transport_cc(sub.transport, TW_ID)
    tw = NativeTransportWide(eng, sub.transport)
    downlink = Downlink("sub", {}, transport_wide=tw)
    numbers = []
    for seq in range(5):
        own = struct.pack("!BBHII", 0x90, 111, seq, 2, 0x1234)
        own += TW_BLOCK.pack(0xBEDE, 1, TW_ID << 4 | 1, 0) + b"audio"
        assert eng.send_rtp(sub.transport, own)
        received = sub.receive_rtp()
        assert received is not None
        numbers.append(tw_number(received))
    assert numbers == [1, 2, 3, 4, 5]
    now = time.monotonic()
    # The subscriber got 1, 2, 4 and 5: its feedback (draft-holmer-rmcat-transport-wide-cc-
    # extensions-01 §3.1), as Downlink.on_transport_feedback reads it.
    arrivals = [1000, 2000, None, 4000, 5000]
    fci = build_twcc(1, 2, 1, 0, arrivals)[12:]
    assert parse_twcc(fci).arrivals == arrivals
    downlink.on_transport_feedback(fci, now)
    assert (downlink.reported, downlink.lost) == (5, 1)
    assert tw.next == 6 and tw.lookup(3) is not None and tw.lookup(3)[2] == len(own)
    with pytest.raises(RuntimeError):
        tw.take(now, 100)  # the engine numbers this transport, never Python


class _Transport:
    """What native_transport_id reads of a PeerTransport: its engine id and send callbacks."""

    def __init__(self, native_id: int) -> None:
        self.native_id = native_id
        self.sent: list[bytes] = []  # RTP and RTCP, in order
        self.rtp: list[bytes] = []

    def send_rtp(self, packet: bytes) -> None:
        self.sent.append(packet)
        self.rtp.append(packet)

    def send_rtcp(self, packet: bytes) -> None:
        self.sent.append(packet)


def publish(plane: object, publisher: _Transport, kind: str, codecs: dict, ssrc: int) -> Any:
    """A track of `publisher` on the plane, transport-cc negotiated, one SSRC."""
    from roomcast.media.rtp import URI_TRANSPORT_CC

    return plane.add_uptrack(  # type: ignore[attr-defined]
        f"TR_{kind}",
        kind,
        codecs=codecs,
        ssrcs={ssrc: None},
        extensions={PUB_TW_ID: URI_TRANSPORT_CC},
        rids=[],
        mid="0",
        send_rtcp=publisher.send_rtcp,
        publisher=publisher,
        nack=True,
    )


def only_feedback(publisher: _Transport) -> Any:
    """The one transport-cc feedback the publisher was sent, parsed."""
    from roomcast.media.rtcp import TransportCC, parse_rtcp

    (feedback,) = [p for sent in publisher.sent for p in parse_rtcp(sent)]
    assert isinstance(feedback, TransportCC)
    return parse_twcc(feedback.fci)


def test_the_plane_offloads_vp8_with_congestion_control_on(engine: tuple) -> None:
    from roomcast.media.native_plane import NativeForwardingPlane
    from roomcast.media.native_tracks import NativeDownTrack, NativeUpTrack
    from roomcast.media.rtp import URI_TRANSPORT_CC

    eng, _ = engine
    plane = NativeForwardingPlane(lambda: eng, congestion_control=True)
    publisher, subscriber = _Transport(eng.add_transport()), _Transport(eng.add_transport())
    common = {
        "extensions": {PUB_TW_ID: URI_TRANSPORT_CC},
        "rids": [],
        "mid": "0",
        "send_rtcp": publisher.send_rtcp,
        "publisher": publisher,
        "nack": True,
    }
    video = plane.add_uptrack("TR_v", "video", codecs={VP8_PT: "video/VP8"}, ssrcs={}, **common)
    audio = plane.add_uptrack("TR_a", "audio", codecs={111: "audio/opus"}, ssrcs={}, **common)
    # A video section carrying opus is no track the engine takes: a Python one on the same
    # transport.
    odd = plane.add_uptrack("TR_s", "video", codecs={98: "audio/opus"}, ssrcs={}, **common)
    assert isinstance(video, NativeUpTrack) and isinstance(audio, NativeUpTrack)
    assert not isinstance(odd, NativeUpTrack)
    assert video.twcc is not None and video.twcc.before_flush is not None
    assert all(layer.nacker is None for layer in video.layers)  # the engine's bookkeeping
    sub = {
        "codecs": {"video/vp8": SUB_PT, "audio/opus": 111},
        "extensions": {URI_TRANSPORT_CC: TW_ID},
        "send_rtp": subscriber.send_rtp,
        "send_rtcp": subscriber.send_rtcp,
        "rtx": {SUB_PT: RTX_PT},
        "rtx_ssrc": RTX_SSRC,
    }
    down_video = plane.add_downtrack("TR_v", "sub", ssrc=SUB_SSRC, **sub)
    down_audio = plane.add_downtrack("TR_a", "sub", ssrc=0x5555, **sub)
    down_odd = plane.add_downtrack("TR_s", "sub", ssrc=0x6666, **sub)
    assert isinstance(down_video, NativeDownTrack) and down_video.can_pad()
    assert isinstance(down_audio, NativeDownTrack) and not down_audio.can_pad()  # no RTX
    downlink = plane.downlink("sub")
    assert downlink is not None and isinstance(downlink.tw, NativeTransportWide)
    # Python's own downtrack numbers into a scratch counter: the engine writes the real one.
    assert down_odd.tw is downlink.tw.scratch
    plane.tick()
    plane.remove_subscriber("sub")
    plane.remove_uptrack("TR_v")


def test_a_feedback_reports_packets_still_waiting_for_python_as_received(engine: tuple) -> None:
    """A publisher of a track the engine does not forward (opus in a video section): the engine
    hands its packets up, and the feedback built before Python has taken them from the event
    queue reports them received, at the engine's stamps."""
    from roomcast.media.native_plane import NativeForwardingPlane
    from roomcast.media.native_tracks import NativeUpTrack

    eng, sock = engine
    plane = NativeForwardingPlane(lambda: eng, congestion_control=True)
    pub = peer(eng)
    publisher = _Transport(pub.transport)
    odd = publish(plane, publisher, "video", {111: "audio/opus"}, 0xA0D10)
    assert odd.twcc is not None and not isinstance(odd, NativeUpTrack)
    for number in (30, 31, 32):
        packet = struct.pack("!BBHII", 0x80, 111, number, 960 * number, 0xA0D10) + b"opus"
        pub.send_rtp(with_tw(packet, number), sock.getsockname())
    handed_up: list[tuple[int, int, int, bytes, object]] = []
    while len(handed_up) < 3:  # read by the engine, not by Python
        handed_up += wait_events(eng, EV_RTP)
    read_by = time.monotonic()
    odd.twcc.flush(read_by)
    parsed = only_feedback(publisher)
    assert parsed.base_sequence == 30 and len(parsed.arrivals) == 3
    assert all(a is not None for a in parsed.arrivals), parsed.arrivals
    plane.remove_uptrack("TR_video")


def test_send_records_follow_the_numbers_in_time(engine: tuple) -> None:
    """Forwarded packets and Python's own, interleaved on one subscriber: the record of each
    number is no earlier than the one before it (a sender thread stamps when it sends, not
    when the packet was read), else the estimator sees packets sent back in time."""
    eng, sock = engine
    address = sock.getsockname()
    pub, sub = peer(eng), peer(eng)
    cc_track(eng, pub, sub, rtx=False)
    own = struct.pack("!BBHII", 0x90, 111, 1, 2, 0x1234)
    own += TW_BLOCK.pack(0xBEDE, 1, TW_ID << 4 | 1, 0) + b"audio"
    pub.send_rtp(with_tw(vp8_packet(1, 9000, keyframe=True), 1), address)
    assert sub.receive_rtp() is not None
    for seq in range(2, 1500):
        pub.send_rtp(with_tw(vp8_packet(seq, 9000, keyframe=False), seq), address)
        eng.send_rtp(sub.transport, own)
        while select.select([sub.sock], [], [], 0)[0]:
            sub.sock.recv(4096)
    _, sent = records(eng, sub.transport, 1)
    times = [record[1] for record in sent]
    backwards = [(a, b) for a, b in itertools.pairwise(times) if b < a]
    assert not backwards, f"{len(backwards)} of {len(times)} records earlier than the one before"


def test_a_feedback_reports_packets_python_read_itself(engine: tuple) -> None:
    """ICE-TCP: Python reads an offloaded track's packets and hands them to the engine, which
    read none of them: their arrivals are recorded all the same."""
    from roomcast.media.native_plane import NativeForwardingPlane
    from roomcast.media.native_tracks import NativeUpTrack

    eng, _ = engine
    plane = NativeForwardingPlane(lambda: eng, congestion_control=True)
    publisher = _Transport(eng.add_transport())  # not keyed: nothing reaches the engine by UDP
    video = publish(plane, publisher, "video", {VP8_PT: "video/VP8"}, PUB_SSRC)
    assert isinstance(video, NativeUpTrack) and video.twcc is not None
    for number in (50, 51, 52):
        plane.handle_rtp(publisher, with_tw(vp8_packet(number, 9000, keyframe=True), number))
    video.twcc.flush(time.monotonic())
    parsed = only_feedback(publisher)
    assert parsed.base_sequence == 50 and len(parsed.arrivals) == 3
    assert all(a is not None for a in parsed.arrivals), parsed.arrivals
    plane.remove_uptrack("TR_video")
