"""The `_data_track` packet codec (docs/protocol/17-data-tracks.md §3.2), and the per-subscriber
frame gate (rooms/data_track_gate.py), without I/O."""

from __future__ import annotations

import pytest

from roomcast.rooms.data_track_gate import (
    MAX_BUDGET,
    MIN_BUDGET,
    RATE_WINDOW,
    FrameGate,
    TrackRate,
    frame_budget,
)
from roomcast.rooms.data_track_packet import (
    EXTENSION_E2EE,
    EXTENSION_USER_TIMESTAMP,
    HEADER_SIZE,
    Marker,
    PacketError,
    PacketHeader,
    build_packet,
    parse_header,
    read_extensions,
    with_handle,
)

# A single-packet frame, handle 0x1234, sequence 7, frame 3, timestamp 0x01020304, user
# timestamp 1713691951104, payload "hi" (docs/protocol/17-data-tracks.md §3.2).
VECTOR = bytes.fromhex("1c00 1234 0007 0003 01020304 0002 0208 0000018f00000000 6869")


def test_the_reference_vector_parses_and_round_trips() -> None:
    header = parse_header(VECTOR)
    assert header.marker is Marker.SINGLE and header.starts_frame and header.ends_frame
    assert (header.handle, header.sequence, header.frame_number) == (0x1234, 7, 3)
    assert header.timestamp == 0x01020304
    assert header.size == 24 and VECTOR[header.size :] == b"hi"
    extensions = read_extensions(header.extensions)
    assert int.from_bytes(extensions[EXTENSION_USER_TIMESTAMP], "big") == 1713691951104
    rebuilt = build_packet(
        marker=Marker.SINGLE,
        handle=0x1234,
        sequence=7,
        frame_number=3,
        timestamp=0x01020304,
        payload=b"hi",
        extensions={EXTENSION_USER_TIMESTAMP: (1713691951104).to_bytes(8, "big")},
    )
    assert rebuilt == VECTOR


@pytest.mark.parametrize(
    ("marker", "first_byte"),
    [(Marker.SINGLE, 0x18), (Marker.START, 0x10), (Marker.FINAL, 0x08), (Marker.INTER, 0x00)],
)
def test_markers_without_extensions(marker: Marker, first_byte: int) -> None:
    packet = build_packet(
        marker=marker, handle=1, sequence=0, frame_number=0, timestamp=0, payload=b"x"
    )
    assert packet[0] == first_byte and len(packet) == HEADER_SIZE + 1
    header = parse_header(packet)
    assert header.marker is marker and header.extensions == b"" and header.size == HEADER_SIZE
    assert header.starts_frame == (marker in (Marker.START, Marker.SINGLE))
    assert header.ends_frame == (marker in (Marker.FINAL, Marker.SINGLE))


def test_extensions_are_padded_to_words_and_read_back() -> None:
    iv = bytes(range(12))
    packet = build_packet(
        marker=Marker.START,
        handle=9,
        sequence=65535,
        frame_number=65536 + 4,  # wraps to 4
        timestamp=2**32 + 5,  # wraps to 5
        payload=b"payload",
        extensions={EXTENSION_E2EE: b"\x03" + iv, EXTENSION_USER_TIMESTAMP: bytes(8)},
    )
    header = parse_header(packet)
    assert (header.sequence, header.frame_number, header.timestamp) == (65535, 4, 5)
    assert (header.size - HEADER_SIZE) % 4 == 0
    assert packet[header.size :] == b"payload"
    found = read_extensions(header.extensions)
    assert found == {EXTENSION_E2EE: b"\x03" + iv, EXTENSION_USER_TIMESTAMP: bytes(8)}


def test_padding_between_extensions_and_unknown_ids_are_read_as_clients_do() -> None:
    # id 0 pads (its length byte follows); an unknown id is kept for whoever knows it.
    block = bytes([0, 0, 7, 2, 0xAA, 0xBB, 2, 1, 0x05, 0])
    assert read_extensions(block) == {7: b"\xaa\xbb", 2: b"\x05"}
    with pytest.raises(PacketError):
        read_extensions(bytes([2, 8, 0, 0]))


@pytest.mark.parametrize(
    ("packet", "why"),
    [
        (VECTOR[:11], "shorter"),
        (bytes([0x20]) + VECTOR[1:], "version"),  # version 1
        (VECTOR[:2] + b"\x00\x00" + VECTOR[4:], "handle 0"),
        (VECTOR[:13], "without an extension length"),
        (VECTOR[:12] + b"\x00\x09" + VECTOR[14:], "runs past"),  # 40 bytes of extensions
    ],
)
def test_packets_receivers_reject_are_refused(packet: bytes, why: str) -> None:
    with pytest.raises(PacketError, match=why):
        parse_header(packet)


def test_with_handle_changes_only_the_handle() -> None:
    rewritten = with_handle(VECTOR, 0xBEEF)
    assert rewritten[2:4] == b"\xbe\xef" and len(rewritten) == len(VECTOR)
    assert rewritten[:2] == VECTOR[:2] and rewritten[4:] == VECTOR[4:]
    assert parse_header(rewritten).handle == 0xBEEF


def test_build_refuses_handles_clients_never_use() -> None:
    for handle in (0, 65536):
        with pytest.raises(ValueError):
            build_packet(
                marker=Marker.SINGLE,
                handle=handle,
                sequence=0,
                frame_number=0,
                timestamp=0,
                payload=b"",
            )


# -- the frame gate ----------------------------------------------------------------------------
def header(marker: Marker, frame: int) -> PacketHeader:
    return parse_header(
        build_packet(
            marker=marker, handle=1, sequence=0, frame_number=frame, timestamp=0, payload=b""
        )
    )


def test_a_frame_is_decided_at_its_first_packet_and_dropped_whole() -> None:
    gate = FrameGate()
    assert gate.enter(header(Marker.START, 1)) and gate.sending
    assert not gate.enter(header(Marker.INTER, 1)) and gate.sending
    gate.drop_frame()  # one packet could not be sent
    assert not gate.enter(header(Marker.FINAL, 1)) and not gate.sending
    # The next frame is decided afresh, also when its first packet went missing.
    assert gate.enter(header(Marker.INTER, 2)) and gate.sending
    assert gate.enter(header(Marker.SINGLE, 3)) and gate.sending
    assert gate.enter(header(Marker.SINGLE, 3))  # each single packet is a frame


def test_track_rate_is_measured_per_window() -> None:
    rate = TrackRate(now=10.0)
    rate.add(1000, 10.2)
    assert rate.bytes_per_second == 0.0  # the first window is not over
    rate.add(1000, 10.0 + RATE_WINDOW)
    assert rate.bytes_per_second == pytest.approx(2000 / RATE_WINDOW)
    rate.add(500, 10.0 + 3 * RATE_WINDOW)
    assert rate.bytes_per_second == pytest.approx(500 / (2 * RATE_WINDOW))


def test_budget_is_the_target_latency_of_the_track_within_bounds() -> None:
    assert frame_budget(0.0, 0.1) == MIN_BUDGET
    assert frame_budget(10_000_000.0, 0.1) == 1_000_000
    assert frame_budget(1e9, 0.1) == MAX_BUDGET
    assert frame_budget(1e6, 0.0) is None  # 0 s: unbounded, as livekit-server reads it
