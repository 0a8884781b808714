"""The native engine (native/module.c) on loopback sockets: real SRTP (pylibsrtp on the peers'
side, libsrtp2 in the engine), routing, rewrite, retransmission, events, and hostile input
from a keyed address. Waits are socket reads with a timeout, never sleeps."""

from __future__ import annotations

import os
import select
import socket
import struct
from collections.abc import Iterator
from dataclasses import dataclass

import pylibsrtp
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from roomcast.media.native_plane import EV_DATAGRAM, EV_RTCP, EV_RTP, EV_SEND, native_module
from roomcast.media.rtp import parse_rtp

native, why = native_module()
pytestmark = pytest.mark.skipif(native is None, reason=f"native plane not built: {why}")

GCM = pylibsrtp.Policy.SRTP_PROFILE_AEAD_AES_128_GCM
KEY = 28  # AES-128-GCM master key + salt
PUB_SSRC, SUB_SSRC = 0x11112222, 0xAAAA0001
VP8_PT, SUB_PT = 96, 100
TIMEOUT = 5.0


def session(key: bytes, inbound: bool, profile: int = GCM) -> pylibsrtp.Session:
    kind = pylibsrtp.Policy.SSRC_ANY_INBOUND if inbound else pylibsrtp.Policy.SSRC_ANY_OUTBOUND
    policy = pylibsrtp.Policy(key=key, ssrc_type=kind, srtp_profile=profile)
    policy.allow_repeat_tx = True
    return pylibsrtp.Session(policy)


@dataclass
class Peer:
    """One remote peer: its socket and the two SRTP directions."""

    sock: socket.socket
    tx: pylibsrtp.Session
    rx: pylibsrtp.Session
    transport: int

    def send_rtp(self, packet: bytes, to: tuple[str, int]) -> None:
        self.sock.sendto(self.tx.protect(packet), to)

    def receive_raw(self) -> bytes | None:
        ready, _, _ = select.select([self.sock], [], [], TIMEOUT)
        return self.sock.recv(4096) if ready else None

    def receive_rtp(self) -> bytes | None:
        data = self.receive_raw()
        return None if data is None else self.rx.unprotect(data)

    def nothing_pending(self) -> bool:
        ready, _, _ = select.select([self.sock], [], [], 0.2)
        return not ready


def peer(eng: object, keyed: bool = True, theirs: bytes | None = None) -> Peer:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    theirs, ours = theirs or os.urandom(KEY), os.urandom(KEY)
    transport = eng.add_transport()  # type: ignore[attr-defined]
    if keyed:
        host, port = sock.getsockname()
        eng.key_transport(transport, host, port, GCM, ours, theirs)  # type: ignore[attr-defined]
    return Peer(sock, session(theirs, False), session(ours, True), transport)


def vp8_packet(seq: int, ts: int, *, keyframe: bool, picture_id: int = 5) -> bytes:
    header = struct.pack("!BBHII", 0x80, 0x80 | VP8_PT, seq, ts, PUB_SSRC)
    descriptor = bytes([0x90, 0x80, 0x80 | (picture_id >> 8), picture_id & 0xFF])
    first = 0x00 if keyframe else 0x01  # VP8 payload header P bit (RFC 7741 §4.3)
    return header + descriptor + bytes([first]) + b"x" * 100


def wait_events(eng: object, kind: int) -> list[tuple[int, int, int, bytes, object]]:
    found: list[tuple[int, int, int, bytes, object]] = []
    while not found:
        ready, _, _ = select.select([eng.event_fd], [], [], TIMEOUT)  # type: ignore[attr-defined]
        assert ready, "no event from the engine"
        found = [e for e in eng.events() if e[0] == kind]  # type: ignore[attr-defined]
    return found


def video_track(eng: object, publisher: Peer, subscriber: Peer) -> tuple[int, int]:
    kinds = bytearray(128)
    kinds[VP8_PT] = 2
    rates = [0] * 128
    rates[VP8_PT] = 90000
    uptrack = eng.add_uptrack(True, 1, bytes(kinds), rates, 512)  # type: ignore[attr-defined]
    eng.bind_ssrc(publisher.transport, PUB_SSRC, uptrack, 0)  # type: ignore[attr-defined]
    pt_map = bytearray([255] * 128)
    pt_map[VP8_PT] = SUB_PT
    downtrack = eng.add_downtrack(  # type: ignore[attr-defined]
        uptrack, subscriber.transport, SUB_SSRC, bytes(pt_map), bytes(256)
    )
    eng.control(downtrack, 0, -2, False)  # type: ignore[attr-defined]
    return uptrack, downtrack


def test_forwards_from_a_keyframe_with_rewritten_fields(engine: tuple) -> None:
    eng, sock = engine
    address = sock.getsockname()
    pub, sub = peer(eng), peer(eng)
    uptrack, downtrack = video_track(eng, pub, sub)
    pub.send_rtp(vp8_packet(100, 9000, keyframe=False), address)
    pub.send_rtp(vp8_packet(101, 9000, keyframe=True), address)
    first_raw = sub.receive_raw()
    assert first_raw is not None
    first = sub.rx.unprotect(first_raw)
    pub.send_rtp(vp8_packet(102, 12000, keyframe=False), address)
    second = sub.receive_rtp()
    assert second is not None
    _, b1, seq1, ts1, ssrc1 = struct.unpack_from("!BBHII", first)
    _, _, seq2, ts2, ssrc2 = struct.unpack_from("!BBHII", second)
    assert (b1 & 0x7F, ssrc1, ssrc2) == (SUB_PT, SUB_SSRC, SUB_SSRC)
    assert (seq2 - seq1) & 0xFFFF == 1 and (ts2 - ts1) & 0xFFFFFFFF == 3000
    assert first[12:] == vp8_packet(101, 9000, keyframe=True)[12:]  # payload untouched
    state = eng.downtrack_state(downtrack)
    assert state[0] == 0 and state[1] == 2  # forwarding layer 0, two packets sent
    malformed, layers = eng.uptrack_state(uptrack)
    assert malformed == 0
    assert layers[0][0] == 3 and layers[0][3] == 102  # packets, highest sequence
    # NACK of the first forwarded packet: resent, identical (same index: same SRTP bytes,
    # which a receiver that got the first copy rejects as a replay, as it should).
    sent, dropped = eng.retransmit(downtrack, [seq1])
    assert (sent, dropped) == (1, 0)
    assert sub.receive_raw() == first_raw
    # A layer started: Python is told once.
    assert wait_events(eng, 3)[0][1:3] == (uptrack, 0)


def test_unrouted_ssrc_rtcp_and_stun_go_to_python(engine: tuple) -> None:
    eng, sock = engine
    address = sock.getsockname()
    pub = peer(eng)
    packet = vp8_packet(7, 1, keyframe=True)
    pub.send_rtp(packet, address)
    assert wait_events(eng, EV_RTP)[0][1:4] == (pub.transport, 0, packet)
    rr = struct.pack("!BBHI", 0x80, 201, 1, 0x1234)
    pub.sock.sendto(pub.tx.protect_rtcp(rr), address)
    assert wait_events(eng, EV_RTCP)[0][3] == rr
    stun = b"\x00\x01\x00\x00" + b"\x21\x12\xa4\x42" + os.urandom(12)
    pub.sock.sendto(stun, address)
    event = wait_events(eng, EV_DATAGRAM)[0]
    assert event[3] == stun and event[4] == pub.sock.getsockname()


def test_unkeyed_subscriber_packets_come_back_to_python(engine: tuple) -> None:
    eng, sock = engine
    pub, sub = peer(eng), peer(eng, keyed=False)
    _, downtrack = video_track(eng, pub, sub)
    pub.send_rtp(vp8_packet(1, 1, keyframe=True), sock.getsockname())
    event = wait_events(eng, EV_SEND)[0]
    assert event[1] == downtrack and struct.unpack_from("!I", event[3], 8)[0] == SUB_SSRC


def test_removal_stops_forwarding(engine: tuple) -> None:
    eng, sock = engine
    address = sock.getsockname()
    pub, sub = peer(eng), peer(eng)
    uptrack, downtrack = video_track(eng, pub, sub)
    eng.remove_downtrack(downtrack)
    with pytest.raises(KeyError):
        eng.downtrack_state(downtrack)
    eng.remove_uptrack(uptrack)
    pub.send_rtp(vp8_packet(1, 1, keyframe=True), address)
    assert wait_events(eng, EV_RTP)  # the SSRC routes nowhere now
    assert sub.nothing_pending()
    eng.remove_transport(sub.transport)
    with pytest.raises(KeyError):
        eng.set_address(sub.transport, "127.0.0.1", 9)


class Hostile:
    """One engine with a keyed publisher and subscriber for the whole Hypothesis run."""

    def __init__(self, threads: int) -> None:
        assert native is not None
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.setblocking(False)
        self.engine = native.Engine(self.sock.fileno(), threads)
        self.engine.start()
        self.pub_key = os.urandom(KEY)
        self.pub, self.sub = peer(self.engine, theirs=self.pub_key), peer(self.engine)
        self.uptrack, self.downtrack = video_track(self.engine, self.pub, self.sub)
        self.seq = 1000

    def close(self) -> None:
        self.engine.stop()
        self.sock.close()


@pytest.fixture(scope="module", params=[1, 2], ids=["1-sender", "2-senders"])
def hostile(request: pytest.FixtureRequest) -> Iterator[Hostile]:
    h = Hostile(request.param)
    yield h
    h.close()


@settings(max_examples=300, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    garbage=st.binary(max_size=1600),
    as_srtp=st.booleans(),
    nacks=st.lists(st.integers(0, 0xFFFF), max_size=40),
)
def test_hostile_input_never_crashes(
    hostile: Hostile, garbage: bytes, as_srtp: bool, nacks: list[int]
) -> None:
    """Garbage from a keyed address, raw or validly encrypted (so the parsers see it), and
    random NACKs: the engine drops what it must and still forwards the next good packet."""
    address = hostile.sock.getsockname()
    if as_srtp and len(garbage) >= 12:
        # Version 2, this track's SSRC, the next sequence number: it reaches the parsers.
        hostile.seq += 1
        rtp = bytes([0x80 | (garbage[0] & 0x3F), garbage[1] & 0x7F])
        rtp += struct.pack("!H", hostile.seq & 0xFFFF) + garbage[4:8]
        rtp += struct.pack("!I", PUB_SSRC) + garbage[12:]
        sender = session(hostile.pub_key, False)  # its own index state: any order is fine
        try:
            hostile.pub.sock.sendto(sender.protect(rtp), address)
        except pylibsrtp.Error:  # libsrtp refuses to protect a header it cannot read
            hostile.pub.sock.sendto(rtp, address)
    else:
        hostile.pub.sock.sendto(garbage or b"\x80", address)
    hostile.engine.retransmit(hostile.downtrack, nacks)
    hostile.seq += 1
    good = vp8_packet(hostile.seq & 0xFFFF, hostile.seq * 3000, keyframe=True)
    hostile.pub.sock.sendto(session(hostile.pub_key, False).protect(good), address)
    deadline_reads = 0
    while True:  # the good packet arrives, after any resent or forwarded garbage
        raw = hostile.sub.receive_raw()
        assert raw is not None, "the engine stopped forwarding"
        try:
            packet = hostile.sub.rx.unprotect(raw)
        except pylibsrtp.Error:  # a retransmission of what we already received
            continue
        if packet[12:] == vp8_packet(hostile.seq, 0, keyframe=True)[12:]:
            break
        deadline_reads += 1
        assert deadline_reads < 200
    hostile.engine.events()  # drain


PROFILES = {
    pylibsrtp.Policy.SRTP_PROFILE_AEAD_AES_128_GCM: 28,
    pylibsrtp.Policy.SRTP_PROFILE_AEAD_AES_256_GCM: 44,
    pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_80: 30,
}


@settings(max_examples=60)
@given(
    profile=st.sampled_from(sorted(PROFILES)),
    start=st.integers(0, 0xFFFF),
    steps=st.lists(st.integers(-40, 300), min_size=1, max_size=300),
    extension=st.booleans(),
    ssrcs=st.lists(st.integers(1, 0xFFFFFFFF), min_size=1, max_size=3),
)
def test_send_side_srtp_matches_libsrtp(
    profile: int, start: int, steps: list[int], extension: bool, ssrcs: list[int]
) -> None:
    """The engine's own AES-GCM sender (native/srtp_gcm.h; other profiles: libsrtp2) gives the
    bytes pylibsrtp gives for the same packets in the same order: session keys, IVs, rollover
    counters across wraps, and retransmissions of older packets alike."""
    assert native is not None
    key = os.urandom(PROFILES[profile])
    reference = session(key, False, profile)
    packets, seq = [], start
    for i, step in enumerate(steps):
        seq = (seq + step) & 0xFFFF
        b0 = 0x90 | 1 if extension else 0x81  # one CSRC, maybe a one-byte extension
        packet = struct.pack("!BBHII", b0, 96, seq, i * 3000, ssrcs[i % len(ssrcs)])
        packet += b"\x00\x00\x00\x07"
        if extension:
            packet += b"\xbe\xde\x00\x01\x10\xff\x00\x00"
        packets.append(packet + bytes([i & 0xFF]) * 50)
    expected = []
    for packet in packets:
        try:
            expected.append(reference.protect(packet))
        except pylibsrtp.Error:  # libsrtp refuses an index far behind: we send it anyway
            expected.append(None)
    ours = native.protect_sequence(profile, key, packets)
    for mine, theirs in zip(ours, expected, strict=True):
        if theirs is not None:
            assert mine == theirs


def test_padding_and_late_packets_leave_a_layer_as_it_was(engine: tuple) -> None:
    """A publisher pads a layer it paused (its bandwidth probes, RFC 3550 §5.1 P bit): as in
    ReceiveLayer.on_packet, such a packet, or a late one, is counted but keeps the layer's
    last arrival and jitter, so a paused layer is not taken for a live one."""
    eng, sock = engine
    address = sock.getsockname()
    pub, sub = peer(eng), peer(eng)
    uptrack, _ = video_track(eng, pub, sub)
    pub.send_rtp(vp8_packet(100, 9000, keyframe=True), address)
    assert sub.receive_rtp() is not None
    media = eng.uptrack_state(uptrack)[1][0]
    pub.send_rtp(vp8_packet(99, 6000, keyframe=False), address)  # late: not forwarded
    pub.send_rtp(padding_packet(101), address)
    pub.sock.sendto(b"\x00\x01", address)  # handed up once the engine has read the padding
    wait_events(eng, EV_DATAGRAM)
    layer = eng.uptrack_state(uptrack)[1][0]
    assert layer[0] == 3 and layer[3] == 101  # counted; the highest sequence moved on
    assert layer[-2:] == media[-2:]  # jitter and last arrival as after the media packet


def padding_packet(seq: int, ts: int = 9000) -> bytes:
    """A publisher's padding-only packet (its bandwidth probe: RFC 3550 §5.1 P bit)."""
    return struct.pack("!BBHII", 0xA0, VP8_PT, seq, ts, PUB_SSRC) + bytes(199) + b"\xc8"


def test_publisher_padding_is_left_out_without_a_gap(engine: tuple) -> None:
    """As DownTrack.skip: a publisher's padding-only packets are not sent on and their numbers
    not used; a late packet from before one gets the number it would have had; a NACK for a
    number sent after one resends the packet sent under it."""
    eng, sock = engine
    address = sock.getsockname()
    pub, sub = peer(eng), peer(eng)
    _, downtrack = video_track(eng, pub, sub)
    sent: dict[int, bytes] = {}

    def forwarded() -> tuple[int, int]:
        packet = sub.receive_rtp()
        assert packet is not None
        header = parse_rtp(packet)
        sent[header.sequence] = packet
        return header.sequence, header.timestamp

    pub.send_rtp(vp8_packet(100, 9000, keyframe=True), address)
    first, ts0 = forwarded()
    pub.send_rtp(padding_packet(101), address)
    pub.send_rtp(vp8_packet(102, 12000, keyframe=False), address)
    assert forwarded() == ((first + 1) & 0xFFFF, ts0 + 3000)  # no gap where the padding was
    pub.send_rtp(vp8_packet(103, 15000, keyframe=False), address)
    assert forwarded()[0] == (first + 2) & 0xFFFF
    pub.send_rtp(padding_packet(105), address)
    pub.send_rtp(vp8_packet(104, 18000, keyframe=False), address)  # late, from before it
    assert forwarded() == ((first + 3) & 0xFFFF, ts0 + 9000)
    pub.send_rtp(vp8_packet(106, 21000, keyframe=False), address)
    assert forwarded() == ((first + 4) & 0xFFFF, ts0 + 12000)
    assert sub.nothing_pending()
    # NACKs: each number resends what went out under it (no RTX here: the same packet).
    wanted = [(first + i) & 0xFFFF for i in (1, 3, 4)]
    assert eng.retransmit(downtrack, wanted)[0] == 3  # type: ignore[attr-defined]
    for number in wanted:  # the same SSRC and number: compared in the clear header
        again = sub.receive_raw()
        assert again is not None and again[:12] == sent[number][:12]
