"""RTCP compound parsing and builders (RFC 3550 §6, RFC 4585, RFC 5104, REMB)."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from roomcast.media.rtcp import (
    Bye,
    Fir,
    Nack,
    Pli,
    ReceiverReport,
    Remb,
    ReportBlock,
    RtcpError,
    SenderReport,
    SourceDescription,
    TransportCC,
    UnknownRtcp,
    build_fir,
    build_nack,
    build_pli,
    build_remb,
    build_rr,
    build_sr,
    ntp_middle32,
    parse_rtcp,
)

# libwebrtc publisher compound: SR (no blocks) + SDES CNAME, as observed
# (docs/protocol/16-media-interop.md §2).
SR_SDES = bytes.fromhex(
    "80c80006"
    "2a1b3c4d"
    "e8f1a2b3c4d5e6f7"
    "00015f90"
    "00000064"
    "00001f40"
    "81ca0006"
    "2a1b3c4d"
    "0110" + b"abcdefghijklmnop".hex() + "0000"
)


def test_parse_sr_sdes_compound() -> None:
    sr, sdes = parse_rtcp(SR_SDES)
    assert isinstance(sr, SenderReport)
    assert sr.ssrc == 0x2A1B3C4D and sr.ntp_timestamp == 0xE8F1A2B3C4D5E6F7
    assert (sr.rtp_timestamp, sr.packet_count, sr.octet_count) == (90000, 100, 8000)
    assert isinstance(sdes, SourceDescription)
    assert sdes.chunks == [(0x2A1B3C4D, [(1, b"abcdefghijklmnop")])]


def test_sr_rr_round_trip_with_blocks() -> None:
    block = ReportBlock(0x1234, 25, -3, 0x10005, 77, 0xAABBCCDD, 65536)
    data = build_sr(7, 0x0102030405060708, 3000, 10, 1200, [block])
    (sr,) = parse_rtcp(data)
    assert sr == SenderReport(7, 0x0102030405060708, 3000, 10, 1200, [block])
    (rr,) = parse_rtcp(build_rr(1, [block, ReportBlock(5)]))
    assert rr == ReceiverReport(1, [block, ReportBlock(5)])


def test_pli_fir_wire_format() -> None:
    pli = build_pli(1, 0xCAFEBABE)
    assert pli == bytes.fromhex("81ce0002 00000001 cafebabe".replace(" ", ""))
    assert parse_rtcp(pli) == [Pli(1, 0xCAFEBABE)]
    fir = build_fir(1, 0xCAFEBABE, 3)
    assert parse_rtcp(fir) == [Fir(1, [(0xCAFEBABE, 3)])]
    assert fir[:4] == bytes.fromhex("84ce0004")


def test_nack_bitmask_round_trip() -> None:
    lost = [100, 101, 116, 117, 65535, 0]
    data = build_nack(1, 2, lost)
    (nack,) = parse_rtcp(data)
    assert isinstance(nack, Nack)
    assert sorted(nack.lost) == sorted(lost)


def test_nack_items_are_compact() -> None:
    data = build_nack(1, 2, [100, 101, 116])
    assert len(data) == 16  # RFC 4585 §6.2.1: PID 100, BLP bit 0 (101) and bit 15 (116)
    assert struct.unpack_from("!HH", data, 12) == (100, 0x8001)


def test_remb_round_trip_and_chrome_bytes() -> None:
    (remb,) = parse_rtcp(build_remb(1, 3_000_000, [0x11, 0x22]))
    assert isinstance(remb, Remb) and remb.ssrcs == [0x11, 0x22]
    assert 2_990_000 <= remb.bitrate <= 3_000_000
    # libwebrtc REMB: 355 kbps for one SSRC (exp 1, mantissa 177500)
    chrome = bytes.fromhex("8fce0005 00000001 00000000 52454d42 0106b55c 2a1b3c4d".replace(" ", ""))
    assert parse_rtcp(chrome) == [Remb(1, 0x2B55C << 1, [0x2A1B3C4D])]


def test_bye_twcc_and_unknown() -> None:
    bye = bytes.fromhex("81cb0003 00000009 03627965 00000000".replace(" ", ""))
    assert parse_rtcp(bye) == [Bye([9], b"bye")]
    twcc = bytes.fromhex("8fcd0004 00000001 00000002 00010002 01000000".replace(" ", ""))
    (fb,) = parse_rtcp(twcc)
    assert isinstance(fb, TransportCC) and fb.media_ssrc == 2
    app = bytes.fromhex("80cc0002 00000001 41424344".replace(" ", ""))
    assert parse_rtcp(app) == [UnknownRtcp(204, 0, bytes.fromhex("0000000141424344"))]


def test_padding_on_last_packet() -> None:
    data = bytearray(build_pli(1, 2) + b"\x00\x00\x00\x04")
    data[0] |= 0x20
    struct.pack_into("!H", data, 2, 3)
    assert parse_rtcp(bytes(data)) == [Pli(1, 2)]


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x80\xc9",
        b"\x40\xc9\x00\x01\x00\x00\x00\x01",  # version 1
        b"\x80\xc9\x00\x05\x00\x00\x00\x01",  # length past the end
        b"\x81\xc9\x00\x01\x00\x00\x00\x01",  # RR announcing a block it lacks
        b"\x81\xce\x00\x00",  # PLI without SSRCs
        b"\x81\xcd\x00\x02\x00\x00\x00\x01\x00\x00\x00\x02\x00",  # trailing garbage (header)
        b"\x8f\xce\x00\x03\x00\x00\x00\x01\x00\x00\x00\x00REMB",  # REMB without count/bitrate
        b"\xa1\xce\x00\x02\x00\x00\x00\x01\x00\x00\x00\x00",  # padding byte 0
        b"\x81\xca\x00\x01\x00\x00\x00\x01",  # SDES chunk without items
        build_pli(1, 2) + b"\x80",
    ],
)
def test_malformed_raises_rtcp_error(data: bytes) -> None:
    with pytest.raises(RtcpError):
        parse_rtcp(data)


@given(st.binary(max_size=120))
def test_parser_never_raises_other_errors(data: bytes) -> None:
    try:
        parse_rtcp(data)
    except RtcpError:
        pass


@given(st.binary(min_size=4, max_size=60), st.integers(0, 31), st.integers(200, 206))
def test_parser_on_valid_headers_with_random_bodies(body: bytes, count: int, pt: int) -> None:
    body = body[: len(body) // 4 * 4]
    data = struct.pack("!BBH", 0x80 | count, pt, len(body) // 4) + body
    try:
        parse_rtcp(data)
    except RtcpError:
        pass


def test_ntp_middle32() -> None:
    assert ntp_middle32(0x0102030405060708) == 0x03040506
