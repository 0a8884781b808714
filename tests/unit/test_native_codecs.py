"""Tracks the engine forwards besides VP8 (native/codecs.h, forward.h): audio with its levels
for the speaker detector, H.264 simulcast switching at an SPS, and LiveKit's packet trailer cut
for the subscribers that need it. On loopback sockets with real SRTP, as test_native_engine."""

from __future__ import annotations

import itertools
import struct
import time

import pytest

from roomcast.media.codecs import AUDIO, H264
from roomcast.media.forwarding_plane import ForwardingPlane
from roomcast.media.native_plane import NativeForwardingPlane, native_module
from roomcast.media.native_tracks import PT_KINDS, NativeDownTrack, NativeUpTrack
from roomcast.media.packet_trailer import MAGIC
from roomcast.media.rtp import URI_AUDIO_LEVEL, find_extension, parse_rtp

from .test_native_cc import _Transport
from .test_native_engine import PUB_SSRC, SUB_PT, SUB_SSRC, VP8_PT, Peer, peer, vp8_packet

native, why = native_module()
pytestmark = pytest.mark.skipif(native is None, reason=f"native plane not built: {why}")

OPUS_PT, H264_PT, LEVEL_ID = 111, 102, 1
LEVEL_BLOCK = struct.Struct("!HHBB2x")  # one-byte extension block: one 1-byte element


def opus_packet(seq: int, level: int, ssrc: int = PUB_SSRC) -> bytes:
    """An opus packet with an RFC 6464 audio level (voice activity bit set)."""
    header = struct.pack("!BBHII", 0x90, OPUS_PT, seq, 960 * seq, ssrc)
    return header + LEVEL_BLOCK.pack(0xBEDE, 1, LEVEL_ID << 4, 0x80 | level) + b"opus" * 10


def uptrack(eng: object, pt: int, kind: int, layers: int = 1, rate: int = 90000) -> int:
    kinds = bytearray(128)
    kinds[pt] = PT_KINDS[kind]
    rates = [0] * 128
    rates[pt] = rate
    video = kind != AUDIO
    return eng.add_uptrack(video, layers, bytes(kinds), rates, 256)  # type: ignore[attr-defined]


def downtrack(
    eng: object, up: int, sub: Peer, pt: int, *, ids: bytes = bytes(256), strip: bool = False
) -> int:
    pt_map = bytearray([255] * 128)
    pt_map[pt] = SUB_PT
    down: int = eng.add_downtrack(  # type: ignore[attr-defined]
        up, sub.transport, SUB_SSRC, bytes(pt_map), ids, 0, 0, bytes([255] * 128), strip
    )
    return down


def test_audio_is_forwarded_with_its_levels_kept_for_the_speaker_detector(engine: tuple) -> None:
    eng, sock = engine
    address = sock.getsockname()
    pub, sub = peer(eng), peer(eng)
    up = uptrack(eng, OPUS_PT, AUDIO, rate=48000)
    eng.set_uptrack_levels(up, LEVEL_ID)
    eng.bind_ssrc(pub.transport, PUB_SSRC, up, 0)
    ids = bytearray(256)
    ids[LEVEL_ID] = 4  # the subscriber's id of the audio level
    down = downtrack(eng, up, sub, OPUS_PT, ids=bytes(ids))
    eng.control(down, 0, -2, False)
    received = []
    for seq in range(1, 31):
        pub.send_rtp(opus_packet(seq, level=20 + seq % 3), address)
        packet = sub.receive_rtp()
        assert packet is not None
        received.append(packet)
    seqs = [struct.unpack_from("!H", p, 2)[0] for p in received]
    stamps = [struct.unpack_from("!I", p, 4)[0] for p in received]
    assert all((b - a) & 0xFFFF == 1 for a, b in itertools.pairwise(seqs))
    assert all((b - a) & 0xFFFFFFFF == 960 for a, b in itertools.pairwise(stamps))
    first = received[0]
    header = parse_rtp(first)
    assert header.payload_type == SUB_PT and header.ssrc == SUB_SSRC
    found = find_extension(first, header, 4)
    assert found is not None and first[found[0]] == 0x80 | 21  # level forwarded, renumbered
    assert first[header.payload_offset :] == b"opus" * 10
    records = list(struct.iter_unpack("=dIIB7x", eng.levels(up)))
    assert [(ts, rate, level) for _, ts, rate, level in records] == [
        (960 * seq, 48000, 20 + seq % 3) for seq in range(1, 31)
    ]
    assert eng.levels(up) == b""  # handed over once
    # Packets that carry no level, or padding only, leave none.
    pub.send_rtp(struct.pack("!BBHII", 0x80, OPUS_PT, 31, 960 * 31, PUB_SSRC) + b"opus", address)
    assert sub.receive_rtp() is not None
    assert eng.levels(up) == b""


def _publish_audio(plane: ForwardingPlane, transport: object) -> object:
    return plane.add_uptrack(
        "TR_mic",
        "audio",
        codecs={OPUS_PT: "audio/opus"},
        ssrcs={PUB_SSRC: None},
        extensions={LEVEL_ID: URI_AUDIO_LEVEL},
        rids=[],
        mid="0",
        send_rtcp=transport.send_rtcp,  # type: ignore[attr-defined]
        publisher=transport,
    )


def test_an_offloaded_microphone_speaks_as_loud_as_on_the_python_plane(engine: tuple) -> None:
    """The speaker detector's level of an offloaded audio track, from the engine's records,
    equals the Python plane's from the same packets."""
    eng, sock = engine
    pub = peer(eng)
    plane = NativeForwardingPlane(lambda: eng)
    mic = _publish_audio(plane, _Transport(pub.transport))
    assert isinstance(mic, NativeUpTrack)
    sub = peer(eng)
    listener = _Transport(sub.transport)
    plane.add_downtrack(
        "TR_mic", "ear", ssrc=SUB_SSRC, codecs={"audio/opus": OPUS_PT}, extensions={},
        send_rtp=listener.send_rtp, send_rtcp=listener.send_rtcp,
    )  # fmt: skip
    reference = _publish_audio(ForwardingPlane(), _Transport(-1))
    assert not isinstance(reference, NativeUpTrack)
    for seq in range(1, 51):  # 1 s of speech at about -25 dBov
        packet = opus_packet(seq, level=25 if seq % 4 else 60)
        pub.send_rtp(packet, sock.getsockname())
        reference.receive(reference.layers[0], packet, time.monotonic())  # type: ignore[attr-defined]
    for _ in range(50):  # forwarded, so read and their levels kept
        assert sub.receive_raw() is not None
    level = mic.audio_level()
    assert level > 0 and mic.is_speaking()
    assert level == pytest.approx(reference.audio_level())  # type: ignore[attr-defined]
    plane.remove_uptrack("TR_mic")


def h264_packet(seq: int, payload: bytes, ssrc: int, marker: bool = True) -> bytes:
    header = struct.pack("!BBHII", 0x80, (0x80 if marker else 0) | H264_PT, seq, 3000 * seq, ssrc)
    return header + payload


SPS, PPS, IDR, SLICE = (
    bytes([0x67, 0x42, 0xE0]),
    bytes([0x68, 0xCE]),
    bytes([0x65, 0x88]),
    bytes([0x41, 0x9A]),
)
STAP_A = bytes([24]) + b"".join(struct.pack("!H", len(n)) + n for n in (SPS, PPS))


def test_h264_simulcast_switches_layers_at_an_sps(engine: tuple) -> None:
    """A layer switch waits for the new layer's SPS (codecs.py h264_is_keyframe), never a
    bare IDR, and the subscriber sees one continuous stream."""
    eng, sock = engine
    address = sock.getsockname()
    pub, sub = peer(eng), peer(eng)
    up = uptrack(eng, H264_PT, H264, layers=2)
    low, high = PUB_SSRC, PUB_SSRC + 1
    eng.bind_ssrc(pub.transport, low, up, 0)
    eng.bind_ssrc(pub.transport, high, up, 1)
    down = downtrack(eng, up, sub, H264_PT)
    eng.control(down, 1, -2, False)  # the high layer
    pub.send_rtp(h264_packet(10, IDR, high), address)  # an IDR alone: not a switch point
    pub.send_rtp(h264_packet(11, SLICE, high), address)
    assert sub.nothing_pending()
    pub.send_rtp(h264_packet(12, STAP_A, high, marker=False), address)
    pub.send_rtp(h264_packet(13, IDR, high), address)
    got = [sub.receive_rtp() for _ in range(2)]
    assert all(p is not None for p in got)
    assert [p[12:] for p in got if p] == [STAP_A, IDR]
    last_seq = struct.unpack_from("!H", got[-1] or b"", 2)[0]
    eng.control(down, 0, -2, False)  # down to the low layer
    pub.send_rtp(h264_packet(500, bytes([0x7C, 0x85]) + b"fu", low), address)  # FU-A IDR start
    pub.send_rtp(h264_packet(14, SLICE, high), address)  # still the high layer until then
    packet = sub.receive_rtp()
    assert packet is not None and packet[12:] == SLICE
    pub.send_rtp(h264_packet(501, bytes([0x7C, 0x87]) + b"fu", low), address)  # FU-A SPS start
    packet = sub.receive_rtp()
    assert packet is not None and packet[12:] == bytes([0x7C, 0x87]) + b"fu"
    assert struct.unpack_from("!H", packet, 2)[0] == (last_seq + 2) & 0xFFFF
    assert eng.downtrack_state(down)[0] == 0


def test_packet_trailer_is_cut_only_for_subscribers_that_need_it(engine: tuple) -> None:
    """LiveKit's trailer ends a frame's last packet (marker): cut for a subscriber that did
    not announce it reads it, kept for one that did; other packets are never touched."""
    eng, sock = engine
    address = sock.getsockname()
    pub, cut, keep = peer(eng), peer(eng), peer(eng)
    up = uptrack(eng, VP8_PT, 1)  # codecs.py VP8
    eng.bind_ssrc(pub.transport, PUB_SSRC, up, 0)
    downs = [downtrack(eng, up, cut, VP8_PT, strip=True), downtrack(eng, up, keep, VP8_PT)]
    for down in downs:
        eng.control(down, 0, -2, False)
    trailer = b"\x01\x08frame-id" + bytes([(10 + 5) ^ 0xFF]) + MAGIC
    assert len(trailer) == 15
    middle = vp8_packet(1, 9000, keyframe=True) + trailer  # no marker: not a frame's end
    middle = middle[:1] + bytes([middle[1] & 0x7F]) + middle[2:]
    last = vp8_packet(2, 9000, keyframe=False) + trailer  # marker set
    for packet in (middle, last):
        pub.send_rtp(packet, address)
    got_cut = [cut.receive_rtp() for _ in range(2)]
    got_keep = [keep.receive_rtp() for _ in range(2)]
    assert [p[12:] if p else None for p in got_keep] == [middle[12:], last[12:]]
    assert [p[12:] if p else None for p in got_cut] == [middle[12:], last[12 : -len(trailer)]]
    assert eng.downtrack_state(downs[0])[2] == eng.downtrack_state(downs[1])[2] - len(trailer)


def test_the_plane_gives_each_downtrack_its_trailer_choice(engine: tuple) -> None:
    """`ForwardingPlane.set_reads_packet_trailer` reaches the engine's downtrack."""
    eng, _ = engine
    pub, sub = _Transport(eng.add_transport()), _Transport(eng.add_transport())
    plane = NativeForwardingPlane(lambda: eng)
    plane.add_uptrack(
        "TR_cam", "video", codecs={VP8_PT: "video/VP8"}, ssrcs={}, extensions={}, rids=[],
        mid="0", send_rtcp=pub.send_rtcp, publisher=pub, packet_trailer=True,
    )  # fmt: skip
    kwargs = {"codecs": {"video/vp8": SUB_PT}, "extensions": {}, "send_rtcp": sub.send_rtcp}
    plane.set_reads_packet_trailer("reads", True)
    reads = plane.add_downtrack("TR_cam", "reads", ssrc=1, send_rtp=sub.send_rtp, **kwargs)
    other = plane.add_downtrack("TR_cam", "other", ssrc=2, send_rtp=sub.send_rtp, **kwargs)
    assert isinstance(reads, NativeDownTrack) and isinstance(other, NativeDownTrack)
    assert (reads.rewriter.strip_trailer, other.rewriter.strip_trailer) == (False, True)
