"""RFC 4571 framing for ICE over TCP, and the send policy of one connection. No I/O.

ICE-TCP (RFC 6544 §3) carries the same STUN, DTLS and SRTP packets as UDP, each in an RFC 4571
frame: a 16-bit big-endian length, then that many bytes. `FrameDecoder` turns a byte stream back
into those packets, so everything above the connection sees datagrams and an address again.

A TCP connection never drops anything by itself: a reader slower than the media queues it,
without bound. `SendLimits.verdict` bounds that queue per connection: RTP and RTCP are dropped
once it holds `media_bytes` (NACK and keyframe requests recover, as after loss on UDP); STUN and
DTLS records (the handshake, and SCTP for data channels) are never dropped, and one that would
push the queue past `reliable_bytes` closes the connection instead, which the client sees as a
failed path and recovers from with an ICE restart.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

MAX_FRAME_SIZE = 0xFFFF  # RFC 4571 §2: the length is 16 bits
HEADER_SIZE = 2


def frame(packet: bytes) -> bytes:
    """`packet` with its RFC 4571 length prefix; ValueError if it cannot fit one frame."""
    size = len(packet)
    if size > MAX_FRAME_SIZE:
        raise ValueError(f"a {size}-byte packet does not fit an RFC 4571 frame")
    return size.to_bytes(HEADER_SIZE, "big") + packet


class FrameDecoder:
    """Bytes of one TCP stream in, whole packets out (RFC 4571 §2). Holds at most one partial
    frame: 2 + 65535 bytes."""

    __slots__ = ("_buffer",)

    def __init__(self) -> None:
        self._buffer = bytearray()

    @property
    def pending(self) -> int:
        """Bytes of an incomplete frame waiting for the rest."""
        return len(self._buffer)

    def feed(self, data: bytes) -> list[bytes]:
        buffer = self._buffer
        buffer += data
        end = len(buffer)
        packets: list[bytes] = []
        start = 0
        while end - start >= HEADER_SIZE:
            size = (buffer[start] << 8) | buffer[start + 1]
            stop = start + HEADER_SIZE + size
            if stop > end:
                break
            packets.append(bytes(buffer[start + HEADER_SIZE : stop]))
            start = stop
        if start:
            del buffer[:start]
        return packets


class Verdict(enum.Enum):
    SEND = "send"
    DROP = "drop"  # RTP/RTCP behind a slow reader
    CLOSE = "close"  # a reliable record does not fit: give the connection up


@dataclass(frozen=True, slots=True)
class SendLimits:
    """Per-connection bounds on bytes queued for a TCP peer that reads slower than we send.

    `media_bytes`: a keyframe burst, a quarter second of 4 Mbit/s video (on top of the kernel's
    send buffer); beyond it RTP and RTCP are dropped, which leaves `reliable_bytes - media_bytes`
    for STUN and DTLS. SCTP's own windows keep data channels far below that; a reader that lets
    that much DTLS pile up is gone.
    """

    media_bytes: int = 128 * 1024
    reliable_bytes: int = 4 * 1024 * 1024

    def verdict(self, queued: int, size: int, *, droppable: bool) -> Verdict:
        """What to do with a `size`-byte frame when `queued` bytes already wait to be sent."""
        if droppable:
            return Verdict.DROP if queued + size > self.media_bytes else Verdict.SEND
        return Verdict.CLOSE if queued + size > self.reliable_bytes else Verdict.SEND
