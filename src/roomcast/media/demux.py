"""What one datagram on a WebRTC 5-tuple carries, from its first byte (RFC 7983 §7).

ICE (STUN), DTLS and SRTP/SRTCP share one UDP port. RFC 7983 §7 tells them apart by the
first byte alone:

    0-3      STUN (ICE checks and their answers)
    16-19    ZRTP
    20-63    DTLS
    64-79    TURN ChannelData
    128-191  RTP or RTCP (SRTP/SRTCP once keyed); `is_rtcp` splits them (RFC 5761 §4)
    anything else: not ours, drop it

The server's UDP mux, the client peer and the test clients all demultiplex with this module.
On the per-packet path index `FIRST_BYTE` directly (a tuple lookup costs what the two range
comparisons cost; a call to `classify` would add a Python frame per packet).
"""

from __future__ import annotations

import enum
from typing import Final


class PacketClass(enum.IntEnum):
    UNKNOWN = 0
    STUN = 1
    ZRTP = 2
    DTLS = 3
    TURN_CHANNEL = 4
    RTP = 5  # RTP or RTCP


def _class_of(first_byte: int) -> PacketClass:
    if first_byte < 4:
        return PacketClass.STUN
    if 16 <= first_byte < 20:
        return PacketClass.ZRTP
    if 20 <= first_byte < 64:
        return PacketClass.DTLS
    if 64 <= first_byte < 80:
        return PacketClass.TURN_CHANNEL
    if 128 <= first_byte < 192:
        return PacketClass.RTP
    return PacketClass.UNKNOWN


# The RFC 7983 §7 table, one entry per possible first byte.
FIRST_BYTE: Final[tuple[PacketClass, ...]] = tuple(_class_of(byte) for byte in range(256))


def classify(first_byte: int) -> PacketClass:
    """The protocol a datagram starting with `first_byte` (0-255) belongs to."""
    return FIRST_BYTE[first_byte]


def is_rtcp(datagram: bytes) -> bool:
    """RTCP rather than RTP on an rtcp-mux'd port (RFC 5761 §4): RTCP packet types 192-223
    read as an RTP marker bit plus payload type 64-95, which RTP must not use. Needs at least
    two bytes."""
    return 63 < (datagram[1] & 0x7F) < 96
