"""The RFC 7983 §7 first-byte table and the RFC 5761 §4 RTP/RTCP split."""

from __future__ import annotations

import struct

import pytest

from roomcast.media.demux import FIRST_BYTE, PacketClass, classify, is_rtcp


@pytest.mark.parametrize(
    ("first", "kind"),
    [
        (0, PacketClass.STUN),
        (3, PacketClass.STUN),
        (4, PacketClass.UNKNOWN),
        (15, PacketClass.UNKNOWN),
        (16, PacketClass.ZRTP),
        (19, PacketClass.ZRTP),
        (20, PacketClass.DTLS),  # change_cipher_spec
        (22, PacketClass.DTLS),  # handshake
        (23, PacketClass.DTLS),  # application_data
        (63, PacketClass.DTLS),
        (64, PacketClass.TURN_CHANNEL),
        (79, PacketClass.TURN_CHANNEL),
        (80, PacketClass.UNKNOWN),
        (127, PacketClass.UNKNOWN),
        (128, PacketClass.RTP),  # version 2, no padding/extension/CSRC
        (191, PacketClass.RTP),
        (192, PacketClass.UNKNOWN),
        (255, PacketClass.UNKNOWN),
    ],
)
def test_first_byte_ranges(first: int, kind: PacketClass) -> None:
    assert classify(first) is kind
    assert FIRST_BYTE[first] is kind


def test_table_covers_every_byte() -> None:
    assert len(FIRST_BYTE) == 256


@pytest.mark.parametrize(
    ("second", "rtcp"),
    [(111, False), (0x80 | 96, False), (200, True), (201, True), (206, True), (0x80 | 63, False)],
)
def test_rtcp_is_told_from_rtp_by_the_payload_type(second: int, rtcp: bool) -> None:
    assert is_rtcp(struct.pack("!BB", 0x80, second) + bytes(10)) is rtcp
