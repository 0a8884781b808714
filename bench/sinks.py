"""What one subscriber of a benchmarked relay receives: counted per decrypted RTP packet.

A `Sink` is fed plain RTP (the client peer or a pre-keyed SRTP socket decrypts first). It
counts packets, frames (marker bits) and bytes, and notices gaps in the sequence numbers so a
subscriber can NACK them (RFC 4585 §6.2.1) and report them (RFC 3550 §6.4.1 RR).
"""

from __future__ import annotations

from collections.abc import Callable

from roomcast.media.rtcp import ReportBlock, build_nack, build_rr

MAX_NACK = 64  # larger gaps are not worth repairing (the next keyframe is)


class Sink:
    __slots__ = (
        "base_seq",
        "bytes",
        "cycles",
        "frames",
        "late",
        "max_seq",
        "on_gap",
        "packets",
        "prior_expected",
        "prior_received",
        "sizes",
        "ssrc",
    )

    def __init__(self) -> None:
        self.packets = 0
        self.frames = 0  # packets with the marker bit: the last packet of a video frame
        self.bytes = 0
        self.late = 0  # older than the newest seen (retransmissions, reordering)
        self.sizes: set[int] = set()  # distinct packet sizes (1 for the fixed-size relays)
        self.ssrc = 0
        self.base_seq = -1
        self.max_seq = 0
        self.cycles = 0
        self.prior_expected = 0
        self.prior_received = 0
        # Called with (media ssrc, missing sequence numbers) when a gap appears.
        self.on_gap: Callable[[int, list[int]], None] | None = None

    def on_rtp(self, packet: bytes) -> None:
        self.packets += 1
        size = len(packet)
        self.bytes += size
        if len(self.sizes) < 8:
            self.sizes.add(size)
        if packet[1] & 0x80:
            self.frames += 1
        seq = packet[2] << 8 | packet[3]
        if self.base_seq < 0:
            self.base_seq = self.max_seq = seq
            self.ssrc = int.from_bytes(packet[8:12], "big")
            return
        delta = (seq - self.max_seq) & 0xFFFF
        if delta == 0 or delta >= 0x8000:
            self.late += 1
            return
        if delta > 1 and self.on_gap is not None:
            missing = [(self.max_seq + i) & 0xFFFF for i in range(1, min(delta, MAX_NACK + 1))]
            self.on_gap(self.ssrc, missing)
        if seq < self.max_seq:
            self.cycles += 0x10000
        self.max_seq = seq

    def receiver_report(self, sender_ssrc: int) -> bytes | None:
        """An RR for the stream (RFC 3550 §6.4.1, §A.3), None before the first packet."""
        if self.base_seq < 0:
            return None
        extended = self.cycles + self.max_seq
        expected = extended - self.base_seq + 1
        expected_interval = expected - self.prior_expected
        lost_interval = expected_interval - (self.packets - self.prior_received)
        self.prior_expected, self.prior_received = expected, self.packets
        fraction = (lost_interval << 8) // expected_interval if lost_interval > 0 else 0
        lost = max(0, expected - self.packets)
        block = ReportBlock(self.ssrc, min(fraction, 255), lost, extended, 0, 0, 0)
        return build_rr(sender_ssrc, [block])


def nack_sender(
    send_rtcp: Callable[[bytes], None], sender_ssrc: int
) -> Callable[[int, list[int]], None]:
    """A `Sink.on_gap` that NACKs the missing packets (as libwebrtc does on any gap)."""

    def on_gap(media_ssrc: int, missing: list[int]) -> None:
        send_rtcp(build_nack(sender_ssrc, media_ssrc, missing))

    return on_gap
