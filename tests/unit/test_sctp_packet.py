"""SCTP packet parsing and serializing (RFC 9260 §3), checked against aiortc's own codec and
fuzzed with hypothesis: every input parses or raises SctpPacketError."""

from __future__ import annotations

import struct

import pytest
from aiortc import rtcsctptransport as aiortc_sctp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from roomcast.media.sctp_packet import (
    ABORT,
    DATA,
    DATA_FLAG_BEGINNING,
    DATA_FLAG_UNORDERED,
    SACK,
    Chunk,
    DataChunk,
    SctpPacket,
    SctpPacketError,
    data_tsn_and_stream,
    keep_chunks,
    tsn_distance,
)

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def test_round_trip_matches_aiortc() -> None:
    chunks = (
        DataChunk(0xFFFFFFFF, 1, 7, 51, b"hello").to_chunk(),
        Chunk(SACK, 0, struct.pack("!IIHH", 10, 65536, 0, 0)),
        DataChunk(0, 3, 0, 53, b"x" * 3, DATA_FLAG_BEGINNING | DATA_FLAG_UNORDERED).to_chunk(),
    )
    data = SctpPacket(5000, 5001, 0xCAFEBABE, chunks).serialize()
    source, destination, tag, theirs = aiortc_sctp.parse_packet(data)  # checks the CRC32c
    assert (source, destination, tag) == (5000, 5001, 0xCAFEBABE)
    assert isinstance(theirs[0], aiortc_sctp.DataChunk)
    assert (theirs[0].tsn, theirs[0].stream_id, theirs[0].stream_seq) == (0xFFFFFFFF, 1, 7)
    assert theirs[0].user_data == b"hello"
    ours = SctpPacket.parse(data)
    assert ours.chunks == chunks
    assert DataChunk.parse(ours.chunks[2]).user_data == b"xxx"
    assert data_tsn_and_stream(data, 12) == (0xFFFFFFFF, 1)
    kept = keep_chunks(data, [(DATA, 12 + 24 + 16, 12 + 24 + 16 + 19)])
    assert SctpPacket.parse(kept).chunks == (chunks[2],)


def test_parses_aiortc_packets() -> None:
    chunk = aiortc_sctp.DataChunk(flags=3)
    chunk.tsn, chunk.stream_id, chunk.stream_seq, chunk.protocol = 42, 5, 9, 53
    chunk.user_data = b"payload"
    data = aiortc_sctp.serialize_packet(5000, 5000, 1234, chunk)
    packet = SctpPacket.parse(data)
    assert packet.verification_tag == 1234
    assert DataChunk.parse(packet.chunks[0]) == DataChunk(42, 5, 9, 53, b"payload", 3)
    assert packet.serialize() == data


@pytest.mark.parametrize(
    "mangle",
    [
        lambda data: data[:15],  # shorter than header + chunk header
        lambda data: data[:8] + b"\x00\x00\x00\x00" + data[12:],  # checksum zeroed
        lambda data: data[:-1] + bytes([data[-1] ^ 1]),  # body changed, checksum not
    ],
)
def test_rejects_short_and_corrupt(mangle: object) -> None:
    data = SctpPacket(1, 2, 3, (Chunk(ABORT, 0, b""),)).serialize()
    with pytest.raises(SctpPacketError):
        SctpPacket.parse(mangle(data))  # type: ignore[operator]


def _with_checksum(body: bytes) -> bytes:
    """12-byte header (ports 1, 2, tag 3) + `body`, with the right CRC32c."""
    from google_crc32c import value as crc32c

    header = struct.pack("!HHI", 1, 2, 3)
    return header + struct.pack("<I", crc32c(header + b"\x00" * 4 + body)) + body


@pytest.mark.parametrize(
    "body",
    [
        struct.pack("!BBH", ABORT, 0, 3),  # chunk length below its header
        struct.pack("!BBH", DATA, 3, 40) + b"\x00" * 8,  # runs past the end
        struct.pack("!BBH", ABORT, 0, 4) + b"\x01\x02",  # stray bytes after the last chunk
    ],
)
def test_rejects_malformed_chunks(body: bytes) -> None:
    with pytest.raises(SctpPacketError):
        SctpPacket.parse(_with_checksum(body))


def test_data_chunk_without_user_data_is_an_error() -> None:
    chunk = Chunk(DATA, 3, struct.pack("!IHHI", 1, 0, 0, 51))  # §3.3.1: no user data
    with pytest.raises(SctpPacketError):
        DataChunk.parse(chunk)


def test_tsn_distance_wraps() -> None:
    assert tsn_distance(5, 0xFFFFFFFE) == 7
    assert tsn_distance(0xFFFFFFFE, 5) == -7
    assert tsn_distance(10, 10) == 0
    assert tsn_distance(0x80000000, 0) == -(1 << 31)


@FUZZ
@given(st.binary(max_size=300))
def test_garbage_parses_or_raises(data: bytes) -> None:
    try:
        packet = SctpPacket.parse(data, verify_checksum=False)
    except SctpPacketError:
        return
    for chunk in packet.chunks:
        if chunk.type == DATA:
            try:
                DataChunk.parse(chunk)
            except SctpPacketError:
                pass


@FUZZ
@given(
    st.lists(
        st.tuples(st.integers(0, 255), st.integers(0, 255), st.binary(max_size=40)),
        min_size=1,
        max_size=8,
    )
)
def test_serialize_then_parse_is_identity(raw: list[tuple[int, int, bytes]]) -> None:
    packet = SctpPacket(5000, 5000, 99, tuple(Chunk(t, f, v) for t, f, v in raw))
    assert SctpPacket.parse(packet.serialize()) == packet
