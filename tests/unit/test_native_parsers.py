"""The native plane's parsers (native/rtp.h) against the Python plane's, through the binding:
Hypothesis feeds both the same bytes, structured RTP and garbage alike. They must agree on
every field and on the rewritten packet, and no input may crash the process."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from roomcast.media import native_tracks
from roomcast.media.codecs import AV1, H264, H265, VP9, Vp8Descriptor, is_keyframe_start
from roomcast.media.native_plane import native_module
from roomcast.media.packet_trailer import trailer_length
from roomcast.media.rtp import URI_TRANSPORT_CC, ExtensionRewriter, RtpError, parse_rtp

native, why = native_module()
pytestmark = pytest.mark.skipif(native is None, reason=f"native plane not built: {why}")

URIS = [f"urn:test:ext{i}" for i in range(1, 20)]


def python_view(
    packet: bytes, ids: list[int], tw_id: int = 0
) -> tuple[int, int, int, int, int, int, tuple[int, bytes, int]] | None:
    try:
        header = parse_rtp(packet)
    except RtpError:
        return None
    publisher = {i: URIS[i % len(URIS)] + f"/{i}" for i in range(1, 256) if ids[i]}
    subscriber = {publisher[i]: ids[i] for i in publisher}
    if tw_id:  # the subscriber's transport-wide number: first in the block, its value 0
        subscriber[URI_TRANSPORT_CC] = tw_id
    rewriter = ExtensionRewriter(publisher, subscriber)
    first, tail, offset = rewriter.rewrite(packet, header)
    return (
        header.payload_type,
        header.sequence,
        header.timestamp,
        header.ssrc,
        header.payload_offset,
        header.payload_end,
        (first, bytes(tail), offset),
    )


def vp8_view(packet: bytes) -> tuple[int, int, int, int, int, int, int] | None:
    try:
        header = parse_rtp(packet)
    except RtpError:
        return None
    vp8 = Vp8Descriptor()
    valid = vp8.parse(packet, header.payload_offset, header.payload_end)
    return (
        int(valid),
        vp8.header_size,
        vp8.picture_id,
        vp8.picture_id_size,
        vp8.tl0picidx,
        int(vp8.keyframe),
        vp8.picture_id_offset,
    )


def one_byte_block(elements: list[tuple[int, bytes]]) -> bytes:
    body = b"".join(bytes([(i << 4) | (len(v) - 1)]) + v for i, v in elements)
    body += b"\x00" * (-len(body) % 4)
    return struct.pack("!HH", 0xBEDE, len(body) // 4) + body


def two_byte_block(elements: list[tuple[int, bytes]]) -> bytes:
    body = b"".join(bytes([i, len(v)]) + v for i, v in elements)
    body += b"\x00" * (-len(body) % 4)
    return struct.pack("!HH", 0x1000, len(body) // 4) + body


@st.composite
def rtp_packets(draw: st.DrawFn) -> bytes:
    """Mostly well-formed RTP (CSRCs, one- or two-byte extensions, VP8 descriptors, padding),
    with a chance of a corrupted byte or a cut."""
    csrcs = draw(st.integers(0, 3))
    elements = draw(
        st.lists(st.tuples(st.integers(1, 14), st.binary(min_size=1, max_size=16)), max_size=4)
    )
    form = draw(st.sampled_from(["none", "one", "two"]))
    block = b""
    if form == "one" and elements:
        block = one_byte_block(elements)
    elif form == "two":
        block = two_byte_block(elements)
    b0 = 0x80 | csrcs | (0x10 if block else 0)
    payload = draw(st.binary(min_size=0, max_size=40))
    padding = draw(st.integers(0, 8))
    if padding:
        b0 |= 0x20
        payload += b"\x00" * (padding - 1) + bytes([padding])
    header = struct.pack(
        "!BBHII",
        b0,
        draw(st.integers(0, 255)),
        draw(st.integers(0, 0xFFFF)),
        draw(st.integers(0, 0xFFFFFFFF)),
        draw(st.integers(0, 0xFFFFFFFF)),
    )
    packet = bytearray(header + b"\x01\x02\x03\x04" * csrcs + block + payload)
    if draw(st.booleans()) and packet:
        packet[draw(st.integers(0, len(packet) - 1))] = draw(st.integers(0, 255))
    if draw(st.integers(0, 9)) == 0:
        packet = packet[: draw(st.integers(0, len(packet)))]
    return bytes(packet)


ids_maps = st.lists(st.integers(0, 20), min_size=256, max_size=256).map(lambda ids: [0, *ids[1:]])
tw_ids = st.sampled_from([0, 0, 1, 3, 14, 15, 200, 255])


@settings(max_examples=600)
@given(packet=rtp_packets(), ids=ids_maps, tw_id=tw_ids)
def test_parse_and_rewrite_match_python(packet: bytes, ids: list[int], tw_id: int) -> None:
    assert native is not None
    ours = native.parse(packet, bytes(ids), True, tw_id)
    theirs = python_view(packet, ids, tw_id)
    if theirs is None:
        assert ours is None
        return
    assert ours is not None
    assert ours[:7] == theirs
    assert ours[7] == vp8_view(packet)


@settings(max_examples=600)
@given(packet=st.binary(max_size=200), ids=ids_maps, tw_id=tw_ids)
def test_garbage_never_crashes_and_matches_python(
    packet: bytes, ids: list[int], tw_id: int
) -> None:
    assert native is not None
    ours = native.parse(packet, bytes(ids), True, tw_id)
    theirs = python_view(packet, ids, tw_id)
    assert (ours is None) == (theirs is None)
    if theirs is not None and ours is not None:
        assert ours[:7] == theirs


def test_vp8_descriptor_fields() -> None:
    """RFC 7741 §4.2: X, I with a 15-bit picture id, L (TL0PICIDX), a keyframe start."""
    assert native is not None
    rtp = struct.pack("!BBHII", 0x80, 96, 1, 2, 3)
    descriptor = bytes([0x90, 0xC0, 0x80 | 0x12, 0x34, 0x07])
    payload = bytes([0x00]) + b"frame"  # P bit clear: keyframe
    result = native.parse(rtp + descriptor + payload, bytes(256), True)
    assert result[7] == (1, 5, 0x1234, 2, 7, 1, 14)


# -- payloads of the other codecs the engine forwards (native/codecs.h vs codecs.py) ----------

KEYFRAME_KINDS = {  # native/plane.h enum pt_kind -> codecs.py kind
    native_tracks.PT_KINDS[kind]: kind for kind in (H264, H265, VP9, AV1)
}


@st.composite
def aggregates(draw: st.DrawFn, header: bytes) -> bytes:
    """An H.264 STAP-A or H.265 AP: `header`, then NAL units with 16-bit sizes (some lying)."""
    out = bytearray(header)
    for nal in draw(st.lists(st.binary(min_size=1, max_size=12), max_size=4)):
        size = draw(st.sampled_from([len(nal), len(nal), 0, len(nal) + 1]))
        out += struct.pack("!H", size) + nal
    return bytes(out)


payloads = st.one_of(
    st.binary(max_size=40),
    st.tuples(st.sampled_from([7, 0x67, 24, 0x78, 28, 0x7C, 5, 0x65]), st.binary(max_size=20)).map(
        lambda t: bytes([t[0]]) + t[1]
    ),
    st.tuples(st.integers(0, 255), st.sampled_from([0x87, 0x07, 0x85, 0xA1, 0x41])).map(bytes),
    aggregates(bytes([24])),
    aggregates(bytes([0x60, 0x01])),  # H.265 AP: type 48
    st.tuples(st.sampled_from([0x64, 0x66, 0x62]), st.integers(0, 255), st.binary(max_size=4)).map(
        lambda t: bytes([t[0], 0x01, t[1]]) + t[2]  # H.265 VPS/SPS/FU start
    ),
    st.tuples(
        st.sampled_from([0x08, 0x28, 0xA8, 0x88, 0x48, 0x18, 0x10, 0x80]), st.binary(max_size=6)
    ).map(
        lambda t: bytes([t[0]]) + t[1]  # AV1 aggregation headers, VP9 descriptors
    ),
)


@settings(max_examples=1500)
@given(kind=st.sampled_from(sorted(KEYFRAME_KINDS)), payload=payloads)
def test_keyframe_starts_match_python(kind: int, payload: bytes) -> None:
    assert native is not None
    keyframe, _ = native.payload_facts(kind, payload)
    assert bool(keyframe) == is_keyframe_start(KEYFRAME_KINDS[kind], payload, 0, len(payload))


def test_keyframe_starts_of_each_codec() -> None:
    """One switch point and one non-switch point per codec, so the Hypothesis test cannot pass
    on two parsers that both always say no."""
    assert native is not None
    cases = {
        H264: (bytes([0x67, 0x42]), bytes([0x65, 0x88])),  # SPS / IDR slice alone
        H265: (bytes([0x42, 0x01, 0x01]), bytes([0x26, 0x01, 0xAF])),  # SPS / IDR alone
        VP9: (bytes([0x08, 0x00]), bytes([0x48, 0x00])),  # B, not inter / P
        AV1: (bytes([0x18, 0x0A]), bytes([0x10, 0x32])),  # N bit / a frame OBU
    }
    for codec, (start, other) in cases.items():
        kind = native_tracks.PT_KINDS[codec]
        assert native.payload_facts(kind, start)[0] == 1, codec
        assert native.payload_facts(kind, other)[0] == 0, codec


trailers = st.tuples(st.binary(max_size=30), st.integers(0, 255), st.booleans()).map(
    lambda t: t[0] + bytes([t[1]]) + (b"LKTS" if t[2] else b"LKTX")
)


@settings(max_examples=600)
@given(payload=st.one_of(st.binary(max_size=40), trailers))
def test_packet_trailer_length_matches_python(payload: bytes) -> None:
    assert native is not None
    assert native.payload_facts(0, payload)[1] == trailer_length(payload, 0, len(payload))
