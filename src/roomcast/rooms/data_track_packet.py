"""The packets of a data track on the `_data_track` channel, read and patched without I/O
(docs/protocol/17-data-tracks.md §3.2).

One SCTP message is one packet: a 12-byte header (version, frame marker, extension flag,
16-bit track handle, sequence number, frame number, 90 kHz timestamp), an optional extension
block, then the payload. The server reads the header to find the track and where the packet
sits in its frame, and rewrites only the handle for each subscriber (`with_handle`): the rest
travels as the publisher wrote it, so extension encodings the server does not know pass through.
`build_packet` and `read_extensions` write and read whole packets for tests and the bench.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass

HEADER_SIZE = 12
SUPPORTED_VERSION = 0
MAX_HANDLE = 0xFFFF
_HEADER = struct.Struct("!BxHHHI")  # flags, reserved, handle, sequence, frame number, timestamp
_EXTENSION_WORDS = struct.Struct("!H")
_HANDLE = struct.Struct("!H")
_VERSION_SHIFT = 5
_MARKER_SHIFT = 3
_EXTENSION_FLAG = 1 << 2

# Extension ids (livekit_models.proto DataTrackExtensionID): 0 pads, 1 end-to-end encryption
# (key index and IV), 2 the publisher's user timestamp (u64).
EXTENSION_E2EE = 1
EXTENSION_USER_TIMESTAMP = 2


class Marker(enum.IntEnum):
    """Where a packet sits in its frame (two bits of byte 0)."""

    INTER = 0  # neither first nor last
    FINAL = 1
    START = 2
    SINGLE = 3  # the whole frame in one packet


class PacketError(ValueError):
    """Not a packet a client could have sent; the server drops it."""


@dataclass(frozen=True, slots=True)
class PacketHeader:
    marker: Marker
    handle: int
    sequence: int
    frame_number: int
    timestamp: int
    extensions: bytes  # the extension block after its length field (padding included)
    size: int  # header bytes, extensions included: the payload starts here

    @property
    def starts_frame(self) -> bool:
        return self.marker in (Marker.START, Marker.SINGLE)

    @property
    def ends_frame(self) -> bool:
        return self.marker in (Marker.FINAL, Marker.SINGLE)


def parse_header(packet: bytes) -> PacketHeader:
    """The header of one packet; raises PacketError for what receivers reject (too short, a
    newer version, handle 0, an extension block running past the end)."""
    if len(packet) < HEADER_SIZE:
        raise PacketError(f"{len(packet)} bytes: shorter than the {HEADER_SIZE}-byte header")
    flags, handle, sequence, frame_number, timestamp = _HEADER.unpack_from(packet)
    version = flags >> _VERSION_SHIFT
    if version > SUPPORTED_VERSION:
        raise PacketError(f"unsupported version {version}")
    if handle == 0:
        raise PacketError("track handle 0 is reserved")
    size = HEADER_SIZE
    extensions = b""
    if flags & _EXTENSION_FLAG:
        if len(packet) < HEADER_SIZE + _EXTENSION_WORDS.size:
            raise PacketError("extension flag set without an extension length")
        (words,) = _EXTENSION_WORDS.unpack_from(packet, HEADER_SIZE)
        # The length counts 32-bit words minus one, its own two bytes included.
        block = (words + 1) * 4
        size = HEADER_SIZE + block
        if size > len(packet):
            raise PacketError(f"extension block of {block} bytes runs past the packet")
        extensions = bytes(packet[HEADER_SIZE + _EXTENSION_WORDS.size : size])
    marker = Marker((flags >> _MARKER_SHIFT) & 0b11)
    return PacketHeader(marker, handle, sequence, frame_number, timestamp, extensions, size)


def with_handle(packet: bytes, handle: int) -> bytes:
    """A copy of `packet` addressed to `handle` (a subscriber's handle for the track)."""
    return b"".join((packet[:2], _HANDLE.pack(handle), memoryview(packet)[4:]))  # one copy


def read_extensions(block: bytes) -> dict[int, bytes]:
    """Extension payloads by id; id 0 is padding (a 0 length byte may follow it), unknown ids
    are kept. Raises PacketError when an extension runs past the block."""
    found: dict[int, bytes] = {}
    index = 0
    while len(block) - index >= 2:
        tag, length = block[index], block[index + 1]
        index += 2
        if tag == 0:
            continue
        if index + length > len(block):
            raise PacketError(f"extension {tag} runs past the extension block")
        found[tag] = block[index : index + length]
        index += length
    return found


def build_packet(
    *,
    marker: Marker,
    handle: int,
    sequence: int,
    frame_number: int,
    timestamp: int,
    payload: bytes,
    extensions: dict[int, bytes] | None = None,
) -> bytes:
    """One packet as the clients write it (extensions in id order, zero padding to a word)."""
    if not 0 < handle <= MAX_HANDLE:
        raise ValueError(f"handle {handle} is not in 1..{MAX_HANDLE}")
    body = b"".join(
        bytes((tag, len(value))) + value for tag, value in sorted((extensions or {}).items())
    )
    flags = (SUPPORTED_VERSION << _VERSION_SHIFT) | (int(marker) << _MARKER_SHIFT)
    header = bytearray()
    if body:
        flags |= _EXTENSION_FLAG
        words = -(-(_EXTENSION_WORDS.size + len(body)) // 4)
        padding = words * 4 - _EXTENSION_WORDS.size - len(body)
        header = bytearray(_EXTENSION_WORDS.pack(words - 1) + body + bytes(padding))
    fixed = _HEADER.pack(
        flags, handle, sequence & 0xFFFF, frame_number & 0xFFFF, timestamp & 0xFFFFFFFF
    )
    return fixed + bytes(header) + payload
