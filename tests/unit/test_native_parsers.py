"""The native plane's parsers (native/rtp.h) against the Python plane's, through the binding:
Hypothesis feeds both the same bytes, structured RTP and garbage alike. They must agree on
every field and on the rewritten packet, and no input may crash the process."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from roomcast.media.codecs import Vp8Descriptor
from roomcast.media.native_plane import native_module
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
