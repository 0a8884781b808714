"""SCTP packets (RFC 9260 §3) without I/O: parse and serialize the common header and chunks.

What the data-channel guard (`sctp_guard.py`) needs in front of the SCTP association: the common
header (§3.1), the chunk list (§3.2), the DATA chunk fields (§3.3.1), and a serializer to hand
on a packet with some chunks removed. The checksum is CRC32c (§6.8, Appendix A); `parse` verifies
it, so a packet we re-serialize was intact when it arrived.

    packet = SctpPacket.parse(data)              # raises SctpPacketError
    for chunk in packet.chunks:
        if chunk.type == DATA:
            data_chunk = DataChunk.parse(chunk)  # tsn, stream_id, ssn, ppid, user_data
    data = packet.serialize()                    # with a fresh checksum
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from google_crc32c import value as crc32c

COMMON_HEADER_LENGTH = 12  # §3.1: ports, verification tag, checksum
CHUNK_HEADER_LENGTH = 4  # §3.2: type, flags, length
DATA_HEADER_LENGTH = 16  # §3.3.1: chunk header + TSN, stream id, SSN, PPID

# Chunk types (RFC 9260 §3.2, RFC 3758 §3.2, RFC 6525 §3.1, RFC 8260 §2)
DATA = 0
INIT = 1
INIT_ACK = 2
SACK = 3
HEARTBEAT = 4
HEARTBEAT_ACK = 5
ABORT = 6
SHUTDOWN = 7
SHUTDOWN_ACK = 8
ERROR = 9
COOKIE_ECHO = 10
COOKIE_ACK = 11
SHUTDOWN_COMPLETE = 14
I_DATA = 64
RE_CONFIG = 130
FORWARD_TSN = 192
I_FORWARD_TSN = 194

# DATA chunk flags (§3.3.1)
DATA_FLAG_END = 0x01  # E: last fragment
DATA_FLAG_BEGINNING = 0x02  # B: first fragment
DATA_FLAG_UNORDERED = 0x04  # U
DATA_FLAG_IMMEDIATE = 0x08  # I (RFC 7053 §3)

TSN_MODULO = 1 << 32

_HEADER = struct.Struct("!HHI")
_CHECKSUM = struct.Struct("<I")  # §6.8: the CRC32c is sent least significant byte first
_CHUNK_HEADER = struct.Struct("!BBH")
_DATA_FIELDS = struct.Struct("!IHHI")
_ZERO_CHECKSUM = b"\x00\x00\x00\x00"


class SctpPacketError(ValueError):
    """The bytes are not an SCTP packet (too short, bad checksum, malformed chunk)."""


def tsn_distance(tsn: int, base: int) -> int:
    """How far `tsn` is ahead of `base` in serial number arithmetic (RFC 1982, as RFC 9260
    §1.6 uses it for TSNs): positive ahead, zero equal, negative behind."""
    delta = (tsn - base) % TSN_MODULO
    return delta - TSN_MODULO if delta >= TSN_MODULO // 2 else delta


@dataclass(frozen=True, slots=True)
class Chunk:
    """One chunk: its type, flags and value (the bytes after the 4-byte header, no padding)."""

    type: int
    flags: int
    value: bytes

    def __bytes__(self) -> bytes:
        length = CHUNK_HEADER_LENGTH + len(self.value)
        padding = b"\x00" * (-length % 4)  # §3.2: chunks are padded to 4 bytes
        return _CHUNK_HEADER.pack(self.type, self.flags, length) + self.value + padding


@dataclass(frozen=True, slots=True)
class SctpPacket:
    source_port: int
    destination_port: int
    verification_tag: int
    chunks: tuple[Chunk, ...]

    @classmethod
    def parse(cls, data: bytes, *, verify_checksum: bool = True) -> SctpPacket:
        """Parse a packet; raises SctpPacketError unless it has a valid header, checksum and at
        least one well-formed chunk (see `chunk_spans`)."""
        spans = chunk_spans(data)
        if verify_checksum:
            verify_checksum_of(data)
        source_port, destination_port, tag = _HEADER.unpack_from(data)
        chunks = tuple(
            Chunk(kind, data[start + 1], data[start + CHUNK_HEADER_LENGTH : end])
            for kind, start, end in spans
        )
        return cls(source_port, destination_port, tag, chunks)

    def serialize(self) -> bytes:
        """The packet's bytes, with its CRC32c checksum (§6.8)."""
        header = _HEADER.pack(self.source_port, self.destination_port, self.verification_tag)
        body = b"".join(bytes(chunk) for chunk in self.chunks)
        checksum = crc32c(header + _ZERO_CHECKSUM + body)
        return header + _CHECKSUM.pack(checksum) + body


def chunk_spans(data: bytes) -> list[tuple[int, int, int]]:
    """(type, start, end) of each chunk (end excludes the padding), without copying or
    checking the checksum. Raises SctpPacketError unless there is a header and at least one
    well-formed chunk (§3.2: Chunk Length counts the header but not the padding, and a chunk
    never runs past the end of the packet)."""
    size = len(data)
    if size < COMMON_HEADER_LENGTH + CHUNK_HEADER_LENGTH:
        raise SctpPacketError(f"{size} bytes: shorter than a header and one chunk")
    spans = []
    pos = COMMON_HEADER_LENGTH
    unpack = _CHUNK_HEADER.unpack_from
    while pos + CHUNK_HEADER_LENGTH <= size:
        kind, _, length = unpack(data, pos)
        end = pos + length
        if length < CHUNK_HEADER_LENGTH or end > size:
            raise SctpPacketError(f"chunk type {kind} of length {length} at offset {pos}")
        spans.append((kind, pos, end))
        pos = end + (-length % 4)
    if pos < size and any(data[pos:]):  # at most padding may follow the last chunk
        raise SctpPacketError(f"{size - pos} stray bytes after the last chunk")
    return spans


def verify_checksum_of(data: bytes) -> None:
    """Raises SctpPacketError unless the packet's CRC32c (§6.8) is right."""
    (checksum,) = _CHECKSUM.unpack_from(data, 8)
    if checksum != crc32c(data[:8] + _ZERO_CHECKSUM + data[12:]):
        raise SctpPacketError("bad CRC32c checksum")


def keep_chunks(data: bytes, spans: list[tuple[int, int, int]]) -> bytes:
    """The packet `data` (checksum already verified) with only the chunks at `spans`, and its
    new checksum."""
    parts = [data[:8], _ZERO_CHECKSUM]
    for _, start, end in spans:
        parts.append(data[start:end])
        parts.append(b"\x00" * (-(end - start) % 4))
    body = b"".join(parts)
    return body[:8] + _CHECKSUM.pack(crc32c(body)) + body[12:]


@dataclass(frozen=True, slots=True)
class DataChunk:
    """The fields of a DATA chunk (§3.3.1)."""

    tsn: int
    stream_id: int
    ssn: int
    ppid: int
    user_data: bytes
    flags: int = DATA_FLAG_BEGINNING | DATA_FLAG_END

    @classmethod
    def parse(cls, chunk: Chunk) -> DataChunk:
        """Raises SctpPacketError for a DATA chunk without user data, which §3.3.1 calls a
        protocol violation (the receiver aborts with "No User Data")."""
        value = chunk.value
        if len(value) <= DATA_HEADER_LENGTH - CHUNK_HEADER_LENGTH:
            raise SctpPacketError(f"DATA chunk of {len(value)} value bytes: no user data")
        tsn, stream_id, ssn, ppid = _DATA_FIELDS.unpack_from(value)
        return cls(tsn, stream_id, ssn, ppid, value[12:], chunk.flags)

    def to_chunk(self) -> Chunk:
        fields = _DATA_FIELDS.pack(self.tsn, self.stream_id, self.ssn, self.ppid)
        return Chunk(DATA, self.flags, fields + self.user_data)


_TSN_AND_STREAM = struct.Struct("!IH")


def data_tsn_and_stream(data: bytes, start: int) -> tuple[int, int]:
    """TSN and stream id of the DATA chunk at `start` in a packet, without copying (the
    guard's per-chunk path). The caller has checked that the chunk holds the DATA fields."""
    tsn, stream_id = _TSN_AND_STREAM.unpack_from(data, start + CHUNK_HEADER_LENGTH)
    return tsn, stream_id
