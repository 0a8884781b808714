"""RTCP: parse compound packets and build the ones an SFU sends (RFC 3550 §6, RFC 4585 §6,
RFC 5104 §4.3.1, draft-alvestrand-rmcat-remb).

`parse_rtcp` raises `RtcpError` for malformed input (never IndexError or struct.error);
packet types we do not know are returned as `UnknownRtcp`.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

RTCP_SR = 200
RTCP_RR = 201
RTCP_SDES = 202
RTCP_BYE = 203
RTCP_APP = 204
RTCP_RTPFB = 205  # RFC 4585 §6.1: transport-layer feedback
RTCP_PSFB = 206  # RFC 4585 §6.1: payload-specific feedback

RTCP_RTPFB_NACK = 1  # RFC 4585 §6.2.1
RTCP_RTPFB_TWCC = 15  # draft-holmer-rmcat-transport-wide-cc-extensions-01 §3.1
RTCP_PSFB_PLI = 1  # RFC 4585 §6.3.1
RTCP_PSFB_FIR = 4  # RFC 5104 §4.3.1
RTCP_PSFB_APP = 15  # RFC 4585 §6.4; REMB is an application layer feedback message

REMB_ID = b"REMB"
MAX_REPORT_BLOCKS = 31  # 5-bit count

_HEADER = struct.Struct("!BBH")
_U32 = struct.Struct("!I")
_SR_INFO = struct.Struct("!IQIII")  # sender ssrc, NTP, RTP ts, packet count, octet count
_REPORT_BLOCK = struct.Struct("!IIIIII")
_FB_SSRCS = struct.Struct("!II")
_NACK_ITEM = struct.Struct("!HH")
_FIR_ITEM = struct.Struct("!IB3x")


class RtcpError(ValueError):
    """Malformed RTCP (truncated, wrong version, lengths that do not add up)."""


@dataclass(slots=True)
class ReportBlock:
    """RFC 3550 §6.4.1 reception report block."""

    ssrc: int
    fraction_lost: int = 0  # 8-bit fixed point, lost/expected * 256
    packets_lost: int = 0  # cumulative, signed 24 bits
    highest_sequence: int = 0  # extended highest sequence number received
    jitter: int = 0  # in timestamp units
    lsr: int = 0  # middle 32 bits of the last SR's NTP timestamp
    dlsr: int = 0  # delay since that SR, 1/65536 s

    def serialize(self) -> bytes:
        lost = max(-0x800000, min(0x7FFFFF, self.packets_lost)) & 0xFFFFFF
        return _REPORT_BLOCK.pack(
            self.ssrc,
            (self.fraction_lost & 0xFF) << 24 | lost,
            self.highest_sequence & 0xFFFFFFFF,
            self.jitter & 0xFFFFFFFF,
            self.lsr & 0xFFFFFFFF,
            self.dlsr & 0xFFFFFFFF,
        )

    @classmethod
    def parse(cls, data: bytes, offset: int) -> ReportBlock:
        ssrc, lost, highest, jitter, lsr, dlsr = _REPORT_BLOCK.unpack_from(data, offset)
        packets_lost = lost & 0xFFFFFF
        if packets_lost & 0x800000:
            packets_lost -= 0x1000000
        return cls(ssrc, lost >> 24, packets_lost, highest, jitter, lsr, dlsr)


@dataclass(slots=True)
class SenderReport:
    """RFC 3550 §6.4.1."""

    ssrc: int
    ntp_timestamp: int  # 64-bit NTP format
    rtp_timestamp: int
    packet_count: int
    octet_count: int
    reports: list[ReportBlock] = field(default_factory=list)

    def serialize(self) -> bytes:
        body = _SR_INFO.pack(
            self.ssrc,
            self.ntp_timestamp & 0xFFFFFFFFFFFFFFFF,
            self.rtp_timestamp & 0xFFFFFFFF,
            self.packet_count & 0xFFFFFFFF,
            self.octet_count & 0xFFFFFFFF,
        )
        return _packet(RTCP_SR, len(self.reports), body + _blocks(self.reports))


@dataclass(slots=True)
class ReceiverReport:
    """RFC 3550 §6.4.2."""

    ssrc: int
    reports: list[ReportBlock] = field(default_factory=list)

    def serialize(self) -> bytes:
        return _packet(RTCP_RR, len(self.reports), _U32.pack(self.ssrc) + _blocks(self.reports))


@dataclass(slots=True)
class SourceDescription:
    """RFC 3550 §6.5: chunks of (ssrc, [(item type, value)])."""

    chunks: list[tuple[int, list[tuple[int, bytes]]]] = field(default_factory=list)


@dataclass(slots=True)
class Bye:
    """RFC 3550 §6.6."""

    ssrcs: list[int]
    reason: bytes = b""


@dataclass(slots=True)
class Nack:
    """Generic NACK, RFC 4585 §6.2.1: lost sequence numbers of media source `media_ssrc`."""

    sender_ssrc: int
    media_ssrc: int
    lost: list[int]

    def serialize(self) -> bytes:
        items = b"".join(_NACK_ITEM.pack(pid, blp) for pid, blp in _nack_items(self.lost))
        return _packet(
            RTCP_RTPFB, RTCP_RTPFB_NACK, _FB_SSRCS.pack(self.sender_ssrc, self.media_ssrc) + items
        )


@dataclass(slots=True)
class TransportCC:
    """Transport-wide congestion control feedback: recognised, not decoded."""

    sender_ssrc: int
    media_ssrc: int
    fci: bytes = b""


@dataclass(slots=True)
class Pli:
    """Picture Loss Indication, RFC 4585 §6.3.1 (no FCI)."""

    sender_ssrc: int
    media_ssrc: int

    def serialize(self) -> bytes:
        return _packet(RTCP_PSFB, RTCP_PSFB_PLI, _FB_SSRCS.pack(self.sender_ssrc, self.media_ssrc))


@dataclass(slots=True)
class Fir:
    """Full Intra Request, RFC 5104 §4.3.1: (media ssrc, command sequence number) entries;
    the common header's media source SSRC is 0."""

    sender_ssrc: int
    entries: list[tuple[int, int]]

    def serialize(self) -> bytes:
        fci = b"".join(_FIR_ITEM.pack(ssrc, seq & 0xFF) for ssrc, seq in self.entries)
        return _packet(RTCP_PSFB, RTCP_PSFB_FIR, _FB_SSRCS.pack(self.sender_ssrc, 0) + fci)


@dataclass(slots=True)
class Remb:
    """Receiver Estimated Max Bitrate (draft-alvestrand-rmcat-remb-03 §2.2)."""

    sender_ssrc: int
    bitrate: int  # bits per second
    ssrcs: list[int]

    def serialize(self) -> bytes:
        exponent, mantissa = 0, max(0, int(self.bitrate))
        while mantissa > 0x3FFFF:  # 18-bit mantissa, 6-bit exponent
            mantissa >>= 1
            exponent += 1
        fci = (
            REMB_ID
            + bytes((len(self.ssrcs), exponent << 2 | mantissa >> 16))
            + struct.pack("!H", mantissa & 0xFFFF)
            + b"".join(_U32.pack(s) for s in self.ssrcs)
        )
        return _packet(RTCP_PSFB, RTCP_PSFB_APP, _FB_SSRCS.pack(self.sender_ssrc, 0) + fci)


@dataclass(slots=True)
class UnknownRtcp:
    packet_type: int
    count: int  # the 5-bit count/FMT field
    body: bytes


RtcpPacket = (
    SenderReport
    | ReceiverReport
    | SourceDescription
    | Bye
    | Nack
    | TransportCC
    | Pli
    | Fir
    | Remb
    | UnknownRtcp
)


def parse_rtcp(data: bytes) -> list[RtcpPacket]:
    """Split a compound RTCP packet (RFC 3550 §6.1) and parse each part."""
    packets: list[RtcpPacket] = []
    offset, n = 0, len(data)
    if n < 4:
        raise RtcpError(f"RTCP packet too short ({n} bytes)")
    while offset < n:
        if offset + 4 > n:
            raise RtcpError("truncated RTCP header")
        b0, packet_type, words = _HEADER.unpack_from(data, offset)
        if b0 >> 6 != 2:
            raise RtcpError(f"RTCP version {b0 >> 6} is not 2")
        end = offset + 4 + 4 * words
        if end > n:
            raise RtcpError(f"RTCP packet type {packet_type} runs past the end ({end} > {n})")
        body_end = end
        if b0 & 0x20:  # padding: only the last packet of a compound may have it
            padding = data[end - 1]
            if padding == 0 or offset + 4 + padding > end:
                raise RtcpError(f"invalid RTCP padding {padding}")
            body_end = end - padding
        packets.append(_parse_one(bytes(data[offset + 4 : body_end]), packet_type, b0 & 0x1F))
        offset = end
    return packets


def _parse_one(body: bytes, packet_type: int, count: int) -> RtcpPacket:
    try:
        if packet_type == RTCP_SR:
            ssrc, ntp, rtp, packets, octets = _SR_INFO.unpack_from(body, 0)
            return SenderReport(ssrc, ntp, rtp, packets, octets, _parse_blocks(body, 24, count))
        if packet_type == RTCP_RR:
            return ReceiverReport(_U32.unpack_from(body, 0)[0], _parse_blocks(body, 4, count))
        if packet_type == RTCP_SDES:
            return _parse_sdes(body, count)
        if packet_type == RTCP_BYE:
            ssrcs = [_U32.unpack_from(body, 4 * i)[0] for i in range(count)]
            rest = body[4 * count :]
            reason = rest[1 : 1 + rest[0]] if rest else b""
            return Bye(ssrcs, reason)
        if packet_type == RTCP_RTPFB:
            sender, media = _FB_SSRCS.unpack_from(body, 0)
            if count == RTCP_RTPFB_NACK:
                return Nack(sender, media, _parse_nack(body))
            if count == RTCP_RTPFB_TWCC:
                return TransportCC(sender, media, body[8:])
        elif packet_type == RTCP_PSFB:
            sender, media = _FB_SSRCS.unpack_from(body, 0)
            if count == RTCP_PSFB_PLI:
                return Pli(sender, media)
            if count == RTCP_PSFB_FIR:
                if (len(body) - 8) % 8:
                    raise RtcpError("FIR FCI is not a multiple of 8 bytes")
                entries = [_FIR_ITEM.unpack_from(body, i) for i in range(8, len(body), 8)]
                return Fir(sender, [(ssrc, seq) for ssrc, seq in entries])
            if count == RTCP_PSFB_APP and body[8:12] == REMB_ID:
                return _parse_remb(body, sender)
    except (struct.error, IndexError) as exc:
        raise RtcpError(f"truncated RTCP packet type {packet_type}: {exc}") from None
    return UnknownRtcp(packet_type, count, body)


def _parse_blocks(body: bytes, offset: int, count: int) -> list[ReportBlock]:
    if offset + 24 * count > len(body):
        raise RtcpError(f"{count} report blocks do not fit in {len(body)} bytes")
    return [ReportBlock.parse(body, offset + 24 * i) for i in range(count)]


def _parse_sdes(body: bytes, count: int) -> SourceDescription:
    """RFC 3550 §6.5: each chunk is an SSRC, items, a null item, padding to 32 bits."""
    chunks: list[tuple[int, list[tuple[int, bytes]]]] = []
    offset = 0
    for _ in range(count):
        ssrc = _U32.unpack_from(body, offset)[0]
        offset += 4
        items: list[tuple[int, bytes]] = []
        while True:
            item_type = body[offset]
            if item_type == 0:
                offset = (offset + 4) & ~3  # skip the null octet(s) up to the next word
                break
            length = body[offset + 1]
            if offset + 2 + length > len(body):
                raise RtcpError("SDES item runs past the end of the packet")
            items.append((item_type, body[offset + 2 : offset + 2 + length]))
            offset += 2 + length
        chunks.append((ssrc, items))
    return SourceDescription(chunks)


def _parse_nack(body: bytes) -> list[int]:
    """RFC 4585 §6.2.1: PID + 16-bit bitmask of following lost packets."""
    if (len(body) - 8) % 4:
        raise RtcpError("NACK FCI is not a multiple of 4 bytes")
    lost: list[int] = []
    for offset in range(8, len(body), 4):
        pid, blp = _NACK_ITEM.unpack_from(body, offset)
        lost.append(pid)
        for bit in range(16):
            if blp & (1 << bit):
                lost.append((pid + bit + 1) & 0xFFFF)
    return lost


def _parse_remb(body: bytes, sender: int) -> Remb:
    count = body[12]
    exponent = body[13] >> 2
    mantissa = (body[13] & 0x03) << 16 | body[14] << 8 | body[15]
    if 16 + 4 * count > len(body):
        raise RtcpError(f"REMB lists {count} SSRCs but has {len(body) - 16} bytes for them")
    ssrcs = [_U32.unpack_from(body, 16 + 4 * i)[0] for i in range(count)]
    return Remb(sender, mantissa << exponent, ssrcs)


def _nack_items(lost: list[int]) -> list[tuple[int, int]]:
    items: list[tuple[int, int]] = []
    for seq in sorted(set(s & 0xFFFF for s in lost)):
        if items:
            pid, blp = items[-1]
            diff = (seq - pid) & 0xFFFF
            if 1 <= diff <= 16:
                items[-1] = (pid, blp | 1 << (diff - 1))
                continue
        items.append((seq, 0))
    return items


def _blocks(reports: list[ReportBlock]) -> bytes:
    if len(reports) > MAX_REPORT_BLOCKS:
        raise ValueError(f"at most {MAX_REPORT_BLOCKS} report blocks per packet")
    return b"".join(r.serialize() for r in reports)


def _packet(packet_type: int, count: int, body: bytes) -> bytes:
    """RFC 3550 §6.4.1 common header; length is in 32-bit words minus one."""
    return _HEADER.pack(0x80 | count, packet_type, len(body) // 4) + body


# -- builders (what the plane sends) ------------------------------------------------------


def build_pli(sender_ssrc: int, media_ssrc: int) -> bytes:
    return Pli(sender_ssrc, media_ssrc).serialize()


def build_fir(sender_ssrc: int, media_ssrc: int, sequence: int) -> bytes:
    return Fir(sender_ssrc, [(media_ssrc, sequence)]).serialize()


def build_nack(sender_ssrc: int, media_ssrc: int, lost: list[int]) -> bytes:
    return Nack(sender_ssrc, media_ssrc, lost).serialize()


def build_rr(sender_ssrc: int, reports: list[ReportBlock]) -> bytes:
    return ReceiverReport(sender_ssrc, reports).serialize()


def build_sr(
    ssrc: int,
    ntp_timestamp: int,
    rtp_timestamp: int,
    packet_count: int,
    octet_count: int,
    reports: list[ReportBlock] | None = None,
) -> bytes:
    return SenderReport(
        ssrc, ntp_timestamp, rtp_timestamp, packet_count, octet_count, reports or []
    ).serialize()


def build_remb(sender_ssrc: int, bitrate: int, ssrcs: list[int]) -> bytes:
    return Remb(sender_ssrc, bitrate, ssrcs).serialize()


def ntp_middle32(ntp_timestamp: int) -> int:
    """The LSR field of a report block (RFC 3550 §6.4.1): middle 32 bits of an NTP time."""
    return (ntp_timestamp >> 16) & 0xFFFFFFFF
