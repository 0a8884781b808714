"""RTP fixed header and header extensions: parse, read, rewrite (RFC 3550 §5.1, RFC 8285).

No I/O, no copies on the read side: `parse_rtp` returns offsets into the caller's buffer.
The plane's hot path inlines the few fields it needs; this module is the readable
reference, the slow path (learning SSRCs, NACK retransmissions) and the extension rewriter.
"""

from __future__ import annotations

import struct

from .packet_trailer import trailer_length

RTP_VERSION = 2
RTP_HEADER_SIZE = 12
EXT_PROFILE_ONE_BYTE = 0xBEDE  # RFC 8285 §4.2
EXT_PROFILE_TWO_BYTE = 0x1000  # RFC 8285 §4.3: 0x100 + 4 "appbits"; masked with 0xFFF0

URI_MID = "urn:ietf:params:rtp-hdrext:sdes:mid"
URI_RID = "urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id"
URI_REPAIRED_RID = "urn:ietf:params:rtp-hdrext:sdes:repaired-rtp-stream-id"
URI_AUDIO_LEVEL = "urn:ietf:params:rtp-hdrext:ssrc-audio-level"
URI_ABS_SEND_TIME = "http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time"
URI_TRANSPORT_CC = "http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01"
URI_DEPENDENCY_DESCRIPTOR = (
    "https://aomediacodec.github.io/av1-rtp-spec/#dependency-descriptor-rtp-header-extension"
)
URI_VIDEO_LAYERS_ALLOCATION = (
    "http://www.webrtc.org/experiments/rtp-hdrext/video-layers-allocation00"
)

# Extensions never forwarded: hop-by-hop transport feedback (we would have to stamp our own),
# and the publisher's stream identification (the subscriber's mid differs; no rids downstream).
NOT_FORWARDED = frozenset(
    {
        URI_MID,
        URI_RID,
        URI_REPAIRED_RID,
        URI_ABS_SEND_TIME,
        URI_TRANSPORT_CC,
        URI_VIDEO_LAYERS_ALLOCATION,
    }
)

_U16 = struct.Struct("!H")
_U32 = struct.Struct("!I")
_SEQ_TS_SSRC = struct.Struct("!HII")
_PT_SEQ_TS_SSRC = struct.Struct("!BHII")


class RtpError(ValueError):
    """A packet that is not a valid RTP packet (too short, wrong version, bad lengths)."""


class RtpHeader:
    """Offsets and fields of one RTP packet; the bytes stay in the caller's buffer."""

    __slots__ = (
        "csrc_count",
        "extension_end",
        "extension_profile",
        "extension_start",
        "marker",
        "padding",
        "payload_end",
        "payload_offset",
        "payload_type",
        "sequence",
        "ssrc",
        "timestamp",
    )

    def __init__(self) -> None:
        self.marker = False
        self.payload_type = 0
        self.sequence = 0
        self.timestamp = 0
        self.ssrc = 0
        self.csrc_count = 0
        self.extension_profile = 0  # 0 = no header extension
        self.extension_start = 0  # first byte of the extension elements
        self.extension_end = 0
        self.payload_offset = 0
        self.payload_end = 0  # excludes padding
        self.padding = 0

    def csrcs(self, data: bytes | bytearray | memoryview) -> list[int]:
        return [_U32.unpack_from(data, 12 + 4 * i)[0] for i in range(self.csrc_count)]


def parse_rtp(data: bytes | bytearray | memoryview, header: RtpHeader | None = None) -> RtpHeader:
    """Parse the fixed header, CSRC list, extension block and padding (RFC 3550 §5.1, §5.3.1).

    Raises `RtpError` (never IndexError/struct.error) for anything malformed.
    """
    n = len(data)
    if n < RTP_HEADER_SIZE:
        raise RtpError(f"RTP packet too short ({n} bytes)")
    b0 = data[0]
    if b0 >> 6 != RTP_VERSION:
        raise RtpError(f"RTP version {b0 >> 6} is not 2")
    h = header if header is not None else RtpHeader()
    h.marker = bool(data[1] & 0x80)
    h.payload_type = data[1] & 0x7F
    h.sequence, h.timestamp, h.ssrc = _SEQ_TS_SSRC.unpack_from(data, 2)
    h.csrc_count = b0 & 0x0F
    offset = RTP_HEADER_SIZE + 4 * h.csrc_count
    if offset > n:
        raise RtpError("CSRC list runs past the end of the packet")
    if b0 & 0x10:  # RFC 3550 §5.3.1: profile (16 bits) + length in 32-bit words (16 bits)
        if offset + 4 > n:
            raise RtpError("header extension runs past the end of the packet")
        h.extension_profile = _U16.unpack_from(data, offset)[0]
        end = offset + 4 + 4 * _U16.unpack_from(data, offset + 2)[0]
        if end > n:
            raise RtpError("header extension runs past the end of the packet")
        h.extension_start = offset + 4
        h.extension_end = offset = end
    else:
        h.extension_profile = 0
        h.extension_start = h.extension_end = offset
    h.payload_offset = offset
    padding = data[n - 1] if b0 & 0x20 else 0  # RFC 3550 §5.1: last octet counts the padding
    if b0 & 0x20 and (padding == 0 or offset + padding > n):
        raise RtpError(f"invalid padding length {padding}")
    h.padding = padding
    h.payload_end = n - padding
    return h


def extension_elements(
    data: bytes | bytearray | memoryview, profile: int, start: int, end: int
) -> list[tuple[int, int, int]]:
    """(id, offset, length) of each element in an extension block (RFC 8285 §4.2, §4.3).

    Unknown profiles yield no elements. Raises `RtpError` if an element overruns the block.
    """
    elements: list[tuple[int, int, int]] = []
    i = start
    if profile == EXT_PROFILE_ONE_BYTE:
        while i < end:
            b = data[i]
            if b == 0:  # padding byte
                i += 1
                continue
            ext_id = b >> 4
            if ext_id == 15:  # RFC 8285 §4.2: stop processing
                break
            length = (b & 0x0F) + 1
            if i + 1 + length > end:
                raise RtpError(f"one-byte extension {ext_id} overruns the extension block")
            elements.append((ext_id, i + 1, length))
            i += 1 + length
    elif profile & 0xFFF0 == EXT_PROFILE_TWO_BYTE:
        while i < end:
            ext_id = data[i]
            if ext_id == 0:
                i += 1
                continue
            if i + 2 > end:
                raise RtpError("two-byte extension header overruns the extension block")
            length = data[i + 1]
            if i + 2 + length > end:
                raise RtpError(f"two-byte extension {ext_id} overruns the extension block")
            elements.append((ext_id, i + 2, length))
            i += 2 + length
    return elements


def find_extension(
    data: bytes | bytearray | memoryview, header: RtpHeader, ext_id: int
) -> tuple[int, int] | None:
    """(offset, length) of extension `ext_id`, or None. Malformed blocks count as absent.
    Scans in place (no element list): it runs for every audio packet (audio level)."""
    profile = header.extension_profile
    if not profile or ext_id <= 0:
        return None
    i, end = header.extension_start, header.extension_end
    if profile == EXT_PROFILE_ONE_BYTE:  # RFC 8285 §4.2
        while i < end:
            b = data[i]
            if b == 0:
                i += 1
                continue
            element_id = b >> 4
            if element_id == 15:
                return None
            length = (b & 0x0F) + 1
            if i + 1 + length > end:
                return None
            if element_id == ext_id:
                return i + 1, length
            i += 1 + length
    elif profile & 0xFFF0 == EXT_PROFILE_TWO_BYTE:  # RFC 8285 §4.3
        while i < end:
            element_id = data[i]
            if element_id == 0:
                i += 1
                continue
            if i + 2 > end or i + 2 + data[i + 1] > end:
                return None
            if element_id == ext_id:
                return i + 2, data[i + 1]
            i += 2 + data[i + 1]
    return None


def read_string_extension(
    data: bytes | bytearray | memoryview, header: RtpHeader, ext_id: int
) -> str | None:
    """sdes:mid, rtp-stream-id, repaired-rtp-stream-id (RFC 8843 §15, RFC 8852 §3): an
    ASCII token. None if absent or not decodable."""
    found = find_extension(data, header, ext_id)
    if found is None:
        return None
    offset, length = found
    try:
        return bytes(data[offset : offset + length]).rstrip(b"\x00").decode("ascii")
    except UnicodeDecodeError:
        return None


def read_audio_level(
    data: bytes | bytearray | memoryview, header: RtpHeader, ext_id: int
) -> tuple[bool, int] | None:
    """RFC 6464 §3: (voice activity, level in -dBov 0..127; 127 = silence), or None."""
    found = find_extension(data, header, ext_id)
    if found is None:
        return None
    b = data[found[0]]
    return bool(b & 0x80), b & 0x7F


def build_extension_block(elements: list[tuple[int, bytes]]) -> bytes:
    """Header extension (profile, length, elements, zero padding to 32 bits) from (id, value)
    pairs; one-byte form when every id is 1..14 and value 1..16 bytes, else two-byte
    (RFC 8285 §4.2, §4.3). Empty input gives b"" (the caller clears the X bit)."""
    if not elements:
        return b""
    one_byte = all(1 <= i <= 14 and 1 <= len(v) <= 16 for i, v in elements)
    body = bytearray()
    for ext_id, value in elements:
        if one_byte:
            body.append((ext_id << 4) | (len(value) - 1))
        else:
            body += bytes((ext_id, len(value)))
        body += value
    body += b"\x00" * (-len(body) % 4)
    profile = EXT_PROFILE_ONE_BYTE if one_byte else EXT_PROFILE_TWO_BYTE
    return _U16.pack(profile) + _U16.pack(len(body) // 4) + bytes(body)


class ExtensionRewriter:
    """Maps a publisher's extension ids to one subscriber's ids (by URI), dropping the rest.

    Shared by every downtrack of an uptrack with the same mapping; `rewrite` is computed once
    per packet for the group (see `DownTrack`), not once per subscriber.
    """

    __slots__ = (
        "first_byte",
        "ids",
        "key",
        "maps",
        "payload_offset",
        "stamp",
        "strip_trailer",
        "tail",
    )

    def __init__(
        self,
        publisher: dict[int, str],
        subscriber: dict[str, int],
        *,
        strip_trailer: bool = False,
        rewritten: frozenset[str] = frozenset(),
    ) -> None:
        ids = [0] * 256  # publisher id -> subscriber id (0 = drop)
        for pub_id, uri in publisher.items():
            sub_id = subscriber.get(uri, 0)
            if (
                0 < pub_id < 256
                and 0 < sub_id < 256
                and uri not in NOT_FORWARDED
                and uri not in rewritten  # the downtrack writes its own value
            ):
                ids[pub_id] = sub_id
        self.ids = ids
        self.maps = any(ids)
        # Cut LiveKit's packet trailer off frame ends (media/packet_trailer.py).
        self.strip_trailer = strip_trailer
        self.key: tuple[object, ...] = (
            *((i, s) for i, s in enumerate(ids) if s),
            *(("strip",) if strip_trailer else ()),
        )
        # Per-packet cache, filled by the plane: packet stamp, first header byte, the bytes
        # after the 12-byte fixed header (CSRCs, rewritten extensions, payload, padding), and
        # where the payload starts in the rewritten packet.
        self.stamp = -1
        self.first_byte = 0
        self.tail = b""
        self.payload_offset = 0

    @property
    def empty(self) -> bool:
        return not self.maps

    def rewrite(
        self,
        data: bytes,
        header: RtpHeader,
        extra: tuple[int, bytes] | None = None,
        *,
        frame_end: bool | None = None,
    ) -> tuple[int, bytes, int]:
        """(first byte, bytes after the fixed header, payload offset) of the rewritten packet;
        `extra` is one more (subscriber id, value) element to write; `frame_end` says whether
        the packet ends a frame as sent (default: its marker)."""
        if frame_end is None:
            frame_end = header.marker
        if self.strip_trailer and frame_end and not header.padding:
            cut = trailer_length(data, header.payload_offset, header.payload_end)
            if cut:
                data = data[: header.payload_end - cut]
        b0 = data[0]
        if not header.extension_profile and extra is None:
            return b0, data[RTP_HEADER_SIZE:], header.payload_offset
        block = b""
        if self.maps or extra is not None:
            try:
                elements = extension_elements(
                    data, header.extension_profile, header.extension_start, header.extension_end
                )
            except RtpError:
                elements = []
            ids = self.ids
            kept = [
                (ids[i], bytes(data[offset : offset + length]))
                for i, offset, length in elements
                if ids[i] and length
            ]
            if extra is not None:
                kept.append(extra)
            block = build_extension_block(kept)
        csrc_end = RTP_HEADER_SIZE + 4 * header.csrc_count
        payload = data[header.payload_offset :]
        if not block:
            tail = data[RTP_HEADER_SIZE:csrc_end] + payload if csrc_end > 12 else payload
            return b0 & 0xEF, tail, csrc_end
        return b0 | 0x10, data[RTP_HEADER_SIZE:csrc_end] + block + payload, csrc_end + len(block)


def rewrite_header(
    buf: bytearray, payload_type: int, sequence: int, timestamp: int, ssrc: int
) -> None:
    """In place: payload type (marker kept), sequence number, timestamp, SSRC (RFC 3550 §5.1)."""
    _PT_SEQ_TS_SSRC.pack_into(
        buf, 1, (buf[1] & 0x80) | payload_type, sequence & 0xFFFF, timestamp & 0xFFFFFFFF, ssrc
    )


def set_sequence(buf: bytearray, sequence: int) -> None:
    _U16.pack_into(buf, 2, sequence & 0xFFFF)


def set_timestamp(buf: bytearray, timestamp: int) -> None:
    _U32.pack_into(buf, 4, timestamp & 0xFFFFFFFF)


def set_ssrc(buf: bytearray, ssrc: int) -> None:
    _U32.pack_into(buf, 8, ssrc)


def set_payload_type(buf: bytearray, payload_type: int) -> None:
    buf[1] = (buf[1] & 0x80) | payload_type


def seq_newer(a: int, b: int) -> bool:
    """RFC 1982 serial arithmetic on 16-bit sequence numbers: a is after b."""
    return a != b and ((a - b) & 0xFFFF) < 0x8000
