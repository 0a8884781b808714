"""RTP header parsing, extensions (RFC 8285) and in-place rewriting, fed with real-shaped bytes."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from roomcast.media.rtp import (
    URI_ABS_SEND_TIME,
    URI_AUDIO_LEVEL,
    URI_MID,
    URI_RID,
    ExtensionRewriter,
    RtpError,
    build_extension_block,
    extension_elements,
    find_extension,
    parse_rtp,
    read_audio_level,
    read_string_extension,
    rewrite_header,
    seq_newer,
)


def rtp(
    *,
    pt: int = 96,
    seq: int = 1000,
    ts: int = 90000,
    ssrc: int = 0x11223344,
    marker: bool = False,
    csrcs: tuple[int, ...] = (),
    ext: bytes = b"",
    payload: bytes = b"\x90\xe0\x80\x01\x10\x02\x00\x9d\x01\x2a",
    padding: int = 0,
) -> bytes:
    """An RTP packet; `ext` is a complete extension block (profile + length + elements)."""
    b0 = 0x80 | len(csrcs) | (0x10 if ext else 0) | (0x20 if padding else 0)
    head = struct.pack("!BBHII", b0, (0x80 if marker else 0) | pt, seq, ts, ssrc)
    head += b"".join(struct.pack("!I", c) for c in csrcs)
    pad = b"\x00" * (padding - 1) + bytes([padding]) if padding else b""
    return head + ext + payload + pad


# Chrome's first simulcast packets: one-byte extensions, id 9 sdes:mid "0", id 10 rid "q",
# id 4 transport-cc (2 bytes), then padding to 32 bits.
CHROME_EXT = (
    bytes.fromhex("bede0002") + bytes.fromhex("41002a") + b"\x90" + b"0" + b"\xa0q" + b"\x00"
)


def test_parse_plain_header() -> None:
    data = rtp(marker=True, seq=65535, ts=0xFFFFFFFF, pt=111)
    h = parse_rtp(data)
    assert (h.marker, h.payload_type, h.sequence, h.timestamp, h.ssrc) == (
        True,
        111,
        65535,
        0xFFFFFFFF,
        0x11223344,
    )
    assert h.payload_offset == 12 and h.payload_end == len(data) and h.extension_profile == 0


def test_parse_csrcs_extension_and_padding() -> None:
    data = rtp(csrcs=(1, 2), ext=CHROME_EXT, padding=4, payload=b"abcd")
    h = parse_rtp(data)
    assert h.csrcs(data) == [1, 2]
    assert h.extension_profile == 0xBEDE
    assert h.extension_start == 12 + 8 + 4
    assert h.payload_offset == 12 + 8 + 12
    assert data[h.payload_offset : h.payload_end] == b"abcd"
    assert h.padding == 4


def test_extension_elements_one_byte() -> None:
    data = rtp(ext=CHROME_EXT)
    h = parse_rtp(data)
    elements = extension_elements(data, h.extension_profile, h.extension_start, h.extension_end)
    assert [(i, length) for i, _, length in elements] == [(4, 2), (9, 1), (10, 1)]
    assert read_string_extension(data, h, 9) == "0"
    assert read_string_extension(data, h, 10) == "q"
    assert read_string_extension(data, h, 11) is None
    assert find_extension(data, h, 4) == (h.extension_start + 1, 2)


def test_extension_two_byte_form() -> None:
    # RFC 8285 §4.3: 0x1000 profile, id 1 with a 17-byte value (does not fit one-byte).
    value = b"x" * 17
    block = build_extension_block([(1, value), (20, b"ab")])
    assert block[:2] == b"\x10\x00" and len(block) % 4 == 0
    data = rtp(ext=block)
    h = parse_rtp(data)
    assert find_extension(data, h, 1) == (h.extension_start + 2, 17)
    assert read_string_extension(data, h, 20) == "ab"


def test_one_byte_stop_id_and_padding_bytes() -> None:
    block = build_extension_block([(1, b"\x85")])  # audio level: voice, -5 dBov
    data = rtp(ext=block)
    assert read_audio_level(data, parse_rtp(data), 1) == (True, 5)
    # padding bytes before the element, id 15 stops parsing
    data = rtp(ext=bytes.fromhex("bede0002") + b"\x00\x00\x10\x7f" + b"\xf0\x00\x00\x00")
    h = parse_rtp(data)
    assert read_audio_level(data, h, 1) == (False, 127)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x80\x60\x00",
        b"\x40" + b"\x00" * 11,  # version 1
        rtp()[:11],
        bytes([0x83]) + rtp()[1:12] + b"\x00\x00",  # 3 CSRCs announced, none there
        bytes([0x90]) + rtp()[1:12] + b"\xbe\xde",  # extension header truncated
        bytes([0x90]) + rtp()[1:12] + b"\xbe\xde\x00\x05\x00",  # extension longer than packet
        bytes([0xA0]) + rtp()[1:12] + b"\x00",  # padding 0
        bytes([0xA0]) + rtp()[1:12] + b"\x00\x40",  # padding longer than packet
    ],
)
def test_malformed_raises_rtp_error(data: bytes) -> None:
    with pytest.raises(RtpError):
        parse_rtp(data)


def test_overrunning_element_raises_and_reads_as_absent() -> None:
    data = rtp(ext=bytes.fromhex("bede0001") + b"\x1f\x00\x00\x00")  # id 1 claims 16 bytes
    h = parse_rtp(data)
    with pytest.raises(RtpError):
        extension_elements(data, h.extension_profile, h.extension_start, h.extension_end)
    assert find_extension(data, h, 1) is None


@given(st.binary(max_size=80))
def test_parser_never_raises_other_errors(data: bytes) -> None:
    try:
        h = parse_rtp(data)
    except RtpError:
        return
    for ext_id in (1, 9, 10):
        read_string_extension(data, h, ext_id)
        read_audio_level(data, h, ext_id)
    ExtensionRewriter({9: URI_MID, 1: URI_AUDIO_LEVEL}, {URI_AUDIO_LEVEL: 3}).rewrite(data, h)


def test_rewrite_header_keeps_marker() -> None:
    buf = bytearray(rtp(marker=True, pt=96))
    rewrite_header(buf, 100, 70000, 1 << 33, 0xDEADBEEF)
    h = parse_rtp(buf)
    assert (h.marker, h.payload_type, h.sequence, h.timestamp, h.ssrc) == (
        True,
        100,
        70000 & 0xFFFF,
        0,
        0xDEADBEEF,
    )


def test_rewriter_maps_ids_and_drops_unmapped() -> None:
    publisher = {1: URI_AUDIO_LEVEL, 2: URI_ABS_SEND_TIME, 4: URI_MID, 10: URI_RID}
    block = build_extension_block([(1, b"\x90"), (2, b"\x01\x02\x03"), (4, b"13")])
    data = rtp(ext=block, csrcs=(7,), payload=b"PAYLOAD")
    h = parse_rtp(data)
    # Subscriber negotiated audio level as id 5 and abs-send-time (never forwarded) and mid.
    rw = ExtensionRewriter(publisher, {URI_AUDIO_LEVEL: 5, URI_ABS_SEND_TIME: 2, URI_MID: 1})
    b0, tail, payload_offset = rw.rewrite(data, h)
    out = data[:1].replace(data[:1], bytes([b0])) + data[1:12] + tail
    h2 = parse_rtp(out)
    assert h2.csrcs(out) == [7]
    assert read_audio_level(out, h2, 5) == (True, 16)
    assert find_extension(out, h2, 2) is None and find_extension(out, h2, 1) is None
    assert out[payload_offset:] == b"PAYLOAD" and h2.payload_offset == payload_offset


def test_rewriter_without_mapping_removes_extension_block() -> None:
    data = rtp(ext=CHROME_EXT, payload=b"P")
    rw = ExtensionRewriter({9: URI_MID, 10: URI_RID}, {})
    assert rw.empty
    b0, tail, payload_offset = rw.rewrite(data, parse_rtp(data))
    out = bytes([b0]) + data[1:12] + tail
    h = parse_rtp(out)
    assert h.extension_profile == 0 and payload_offset == 12 and out[12:] == b"P"


def test_seq_newer_wraps() -> None:
    assert seq_newer(1, 65535) and not seq_newer(65535, 1) and not seq_newer(5, 5)


@given(st.lists(st.tuples(st.integers(1, 30), st.binary(min_size=1, max_size=20)), max_size=5))
def test_find_extension_agrees_with_element_list(elements: list[tuple[int, bytes]]) -> None:
    data = rtp(ext=build_extension_block(elements))
    h = parse_rtp(data)
    listed = extension_elements(data, h.extension_profile, h.extension_start, h.extension_end)
    assert [(i, data[o : o + n]) for i, o, n in listed] == elements
    for ext_id, _ in elements:
        found = find_extension(data, h, ext_id)
        first = next(v for i, v in elements if i == ext_id)  # the first element with that id
        assert found is not None and data[found[0] : found[0] + found[1]] == first
