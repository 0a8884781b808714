"""Keyframe detection and VP8 descriptor parsing from real-shaped RTP payloads."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from roomcast.media.codecs import (
    AUDIO,
    AV1,
    H264,
    H265,
    OTHER_VIDEO,
    RTX,
    VP8,
    VP9,
    Vp8Descriptor,
    av1_is_keyframe,
    clock_rate,
    codec_kind,
    h264_is_keyframe,
    h265_is_keyframe,
    is_keyframe_start,
    vp8_is_keyframe,
    vp8_write_picture_id,
    vp9_is_keyframe,
)

# libwebrtc VP8 keyframe start: X=1 S=1 PID=0; I=1 L=1 T=1; 15-bit picture id 0x1234;
# TL0PICIDX 7; TID byte; then the VP8 frame header (P=0) and start code 9d 01 2a.
VP8_KEY = bytes.fromhex("90e0923407201002009d012a")
VP8_DELTA = bytes.fromhex("90e0923507203102009d")  # P bit set in the frame header
VP8_CONT = bytes.fromhex("80e092340720aabbcc")  # S=0: continuation of the keyframe


def test_vp8_descriptor_fields() -> None:
    d = Vp8Descriptor()
    assert d.parse(VP8_KEY, 0, len(VP8_KEY))
    assert (d.picture_id, d.picture_id_size, d.picture_id_offset) == (0x1234, 2, 2)
    assert (d.tl0picidx, d.tl0picidx_offset, d.header_size) == (7, 4, 6)
    assert d.keyframe
    assert not vp8_is_keyframe(VP8_DELTA, 0, len(VP8_DELTA))
    assert not vp8_is_keyframe(VP8_CONT, 0, len(VP8_CONT))


def test_vp8_short_picture_id_and_minimal_descriptor() -> None:
    d = Vp8Descriptor()
    data = bytes.fromhex("9080050000")  # X, I, 7-bit picture id 5
    assert d.parse(data, 0, len(data)) and (d.picture_id, d.picture_id_size) == (5, 1)
    assert d.tl0picidx == -1 and d.keyframe
    assert vp8_is_keyframe(b"\x10\x00", 0, 2)  # no X: one-byte descriptor, key frame
    assert not vp8_is_keyframe(b"\x11\x00", 0, 2)  # PID 1: not partition 0


def test_vp8_write_picture_id_keeps_width() -> None:
    buf = bytearray(VP8_KEY)
    vp8_write_picture_id(buf, 2, 2, 0x8001)  # wraps to 15 bits, M bit kept
    assert buf[2:4] == b"\x80\x01"
    buf = bytearray(b"\x90\x80\x05")
    vp8_write_picture_id(buf, 2, 1, 0x80 + 3)
    assert buf[2] == 3


@pytest.mark.parametrize("data", [b"", b"\x90", b"\x90\x80", b"\x90\x80\x80", b"\x90\x40"])
def test_vp8_truncated(data: bytes) -> None:
    d = Vp8Descriptor()
    assert not d.parse(data, 0, len(data)) and not d.keyframe and d.picture_id_size == 0


def test_h264_switch_points_are_where_the_parameter_sets_start() -> None:
    sps = bytes.fromhex("6742c01f")
    idr = bytes.fromhex("65888400")
    non_idr = bytes.fromhex("419a2000")
    assert h264_is_keyframe(sps, 0, 4)
    # An IDR alone is no switch point: without its SPS/PPS a decoder would read it with the
    # parameter sets of the layer it had before (every simulcast layer uses the same ids).
    assert not h264_is_keyframe(idr, 0, 4)
    assert not h264_is_keyframe(non_idr, 0, 4)
    # STAP-A (RFC 6184 §5.7.1) with SPS + PPS, as Chrome sends before an IDR
    stap = bytes.fromhex("1800046742c01f000368ce3c")
    assert h264_is_keyframe(stap, 0, len(stap))
    stap_delta = bytes.fromhex("180002410000024101")
    assert not h264_is_keyframe(stap_delta, 0, len(stap_delta))
    assert not h264_is_keyframe(bytes.fromhex("18000967"), 0, 4)  # truncated
    # FU-A (RFC 6184 §5.8): the IDR's first fragment is no switch point either
    assert not h264_is_keyframe(bytes.fromhex("7c85aa"), 0, 3)
    assert h264_is_keyframe(bytes.fromhex("7c87aa"), 0, 3)  # an SPS's first fragment
    assert not h264_is_keyframe(bytes.fromhex("7c07aa"), 0, 3)  # not the first fragment


def test_h265_switch_points_are_where_the_parameter_sets_start() -> None:
    vps, sps, idr = bytes.fromhex("4001"), bytes.fromhex("4201"), bytes.fromhex("2601")
    assert h265_is_keyframe(vps, 0, 2) and h265_is_keyframe(sps, 0, 2)
    assert not h265_is_keyframe(idr, 0, 2)
    aggregate = bytes.fromhex("6001") + bytes.fromhex("0002") + vps + bytes.fromhex("0002") + idr
    assert h265_is_keyframe(aggregate, 0, len(aggregate))
    assert not h265_is_keyframe(bytes.fromhex("6001") + bytes.fromhex("0002") + idr, 0, 6)
    assert not h265_is_keyframe(bytes.fromhex("620193"), 0, 3)  # FU start of an IDR_W_RADL


def test_vp9() -> None:
    # I=1 (15-bit pid) P=0 L=1 F=0 B=1 E=0 V=1: keyframe in spatial layer 0
    assert vp9_is_keyframe(bytes.fromhex("aa80010005"), 0, 5)
    assert not vp9_is_keyframe(bytes.fromhex("aa80010205"), 0, 5)  # SID 1
    assert not vp9_is_keyframe(bytes.fromhex("ea800100"), 0, 4)  # P set
    assert not vp9_is_keyframe(bytes.fromhex("a2800100"), 0, 4)  # B clear
    assert vp9_is_keyframe(bytes.fromhex("0c00"), 0, 2)  # no L: single layer, B set
    assert not vp9_is_keyframe(bytes.fromhex("a8"), 0, 1)  # truncated


def test_av1() -> None:
    assert av1_is_keyframe(bytes.fromhex("1800"), 0, 2)  # N bit, W=1
    assert av1_is_keyframe(bytes.fromhex("100a0b"), 0, 3)  # W=1, sequence header OBU
    assert av1_is_keyframe(bytes.fromhex("20050a0b"), 0, 4)  # W=2: LEB128 length first
    assert not av1_is_keyframe(bytes.fromhex("103200"), 0, 3)  # frame OBU
    assert not av1_is_keyframe(bytes.fromhex("900a00"), 0, 3)  # Z: continuation


def test_kinds_and_clock_rates() -> None:
    assert codec_kind("audio/opus") == AUDIO and codec_kind("audio/red") == AUDIO
    assert codec_kind("video/VP8") == VP8 and codec_kind("video/vp9") == VP9
    assert codec_kind("video/H264") == H264 and codec_kind("video/AV1") == AV1
    assert codec_kind("video/H265") == H265 and codec_kind("video/rtx") == RTX
    assert codec_kind("video/foo") == OTHER_VIDEO
    assert clock_rate("audio/opus") == 48000 and clock_rate("audio/PCMU") == 8000
    assert clock_rate("video/VP8") == 90000
    assert is_keyframe_start(AUDIO, b"", 0, 0) and not is_keyframe_start(RTX, b"x", 0, 1)


@given(st.binary(max_size=40), st.sampled_from([VP8, VP9, H264, H265, AV1, AUDIO, RTX]))
def test_never_raises(data: bytes, kind: int) -> None:
    is_keyframe_start(kind, data, 0, len(data))
    Vp8Descriptor().parse(data, 0, len(data))
