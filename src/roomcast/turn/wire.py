"""TURN's bytes on the wire, besides what aioice.stun parses and builds: ChannelData
(RFC 8656 §12.4), the framing of STUN and ChannelData on a TCP or TLS connection (§12.5), Data
indications built without aioice on the per-packet path (§11.4), and a scan of the raw
attributes of a request (for the ones aioice does not know). No I/O.
"""

from __future__ import annotations

import ipaddress
import struct

from aioice import stun

Address = tuple[str, int]

CHANNEL_MIN, CHANNEL_MAX = 0x4000, 0x4FFF  # RFC 8656 §12: the channel numbers a client may bind
HEADER = struct.Struct("!HH")
STUN_HEADER_SIZE = 20
MAX_STREAM_MESSAGE = STUN_HEADER_SIZE + 0xFFFF  # the largest STUN message a length can describe

# Attribute types (RFC 8656 §18, RFC 8489 §18.3) aioice does not parse, read from the raw scan.
REQUESTED_ADDRESS_FAMILY = 0x0017
EVEN_PORT = 0x0018
DONT_FRAGMENT = 0x001A
RESERVATION_TOKEN = 0x0022
UNKNOWN_ATTRIBUTES = 0x000A
XOR_PEER_ADDRESS = 0x0012
# Comprehension-required types (below 0x8000) a request to this server may carry; any other is
# answered with 420 (Unknown Attribute), RFC 8489 §6.3.1. EVEN-PORT and RESERVATION-TOKEN
# (reserved relay port pairs) are not supported, so they count as unknown.
UNDERSTOOD = frozenset(
    {0x0006, 0x0008, 0x0009, 0x000C, 0x000D, 0x0012, 0x0013, 0x0014, 0x0015, 0x0019, 0x0020,
     0x0024, 0x0025, REQUESTED_ADDRESS_FAMILY, DONT_FRAGMENT}
)  # fmt: skip
FAMILY_IPV4, FAMILY_IPV6 = 0x01, 0x02

_DATA_INDICATION = stun.Method.DATA | stun.Class.INDICATION
_COOKIE = struct.pack("!I", stun.COOKIE)


def is_channel_data(first_byte: int) -> bool:
    """RFC 7983 §7 / RFC 8656 §12: 64-79 (0b01 in the top two bits) is ChannelData."""
    return 0x40 <= first_byte <= 0x4F


def channel_data(channel: int, payload: bytes, *, padded: bool) -> bytes:
    """A ChannelData message; over TCP and TLS padded to a multiple of four (RFC 8656 §12.5)."""
    size = len(payload)
    pad = -size % 4 if padded else 0
    return HEADER.pack(channel, size) + payload + bytes(pad)


def parse_channel_data(data: bytes) -> tuple[int, bytes] | None:
    """(channel number, application data), or None when the length does not fit (§12.4: a
    message shorter than its length field says is dropped; padding after it is ignored)."""
    if len(data) < 4:
        return None
    channel, size = HEADER.unpack_from(data)
    if 4 + size > len(data):
        return None
    return channel, data[4 : 4 + size]


def xor_address(addr: Address, transaction_id: bytes) -> bytes:
    """An XOR-PEER-ADDRESS or XOR-RELAYED-ADDRESS value (RFC 8489 §14.2)."""
    ip = ipaddress.ip_address(addr[0])
    port = addr[1] ^ (stun.COOKIE >> 16)
    mask = _COOKIE + transaction_id
    packed = ip.packed
    xored = bytes(b ^ mask[i] for i, b in enumerate(packed))
    family = FAMILY_IPV4 if ip.version == 4 else FAMILY_IPV6
    return struct.pack("!BBH", 0, family, port) + xored


def data_indication(peer: Address, payload: bytes, transaction_id: bytes) -> bytes:
    """A Data indication (RFC 8656 §11.4) carrying `payload` from `peer`: XOR-PEER-ADDRESS and
    DATA, no FINGERPRINT (§11.4 does not ask for one)."""
    address = xor_address(peer, transaction_id)
    size = len(payload)
    body = (
        HEADER.pack(XOR_PEER_ADDRESS, len(address))
        + address
        + HEADER.pack(0x0013, size)
        + payload
        + bytes(-size % 4)
    )
    return HEADER.pack(_DATA_INDICATION, len(body)) + _COOKIE + transaction_id + body


def raw_attributes(data: bytes) -> list[tuple[int, bytes]]:
    """(type, value) of every attribute of a parsed (so well-formed) STUN message, in order."""
    found = []
    position, end = STUN_HEADER_SIZE, len(data)
    while position + 4 <= end:
        kind, size = HEADER.unpack_from(data, position)
        found.append((kind, data[position + 4 : position + 4 + size]))
        position += 4 + size + (-size % 4)
    return found


def unknown_required(attributes: list[tuple[int, bytes]]) -> list[int]:
    """Comprehension-required attribute types this server does not understand (RFC 8489 §15)."""
    return [kind for kind, _ in attributes if kind < 0x8000 and kind not in UNDERSTOOD]


def with_unknown_attributes(response: bytes, kinds: list[int]) -> bytes:
    """`response` (a 420 error, without FINGERPRINT) with UNKNOWN-ATTRIBUTES appended."""
    value = b"".join(struct.pack("!H", kind) for kind in kinds)
    attribute = HEADER.pack(UNKNOWN_ATTRIBUTES, len(value)) + value + bytes(-len(value) % 4)
    length = len(response) - STUN_HEADER_SIZE + len(attribute)
    return response[:2] + struct.pack("!H", length) + response[4:] + attribute


class StreamDecoder:
    """A TCP or TLS byte stream in, whole STUN messages and ChannelData messages out
    (RFC 8656 §12.5: each carries its own length; ChannelData is padded to four bytes).
    Raises ValueError on anything else: the connection is not speaking TURN."""

    __slots__ = ("_buffer",)

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[bytes]:
        buffer = self._buffer
        buffer += data
        messages: list[bytes] = []
        start, end = 0, len(buffer)
        while end - start >= 4:
            first = buffer[start]
            size = (buffer[start + 2] << 8) | buffer[start + 3]
            if first < 0x40:  # STUN: the top two bits are zero
                total = STUN_HEADER_SIZE + size
            elif first <= 0x4F:
                total = 4 + size + (-size % 4)
            else:
                raise ValueError(f"byte {first:#04x} starts neither STUN nor ChannelData")
            if end - start < total:
                break
            messages.append(bytes(buffer[start : start + total]))
            start += total
        if start:
            del buffer[:start]
        return messages
