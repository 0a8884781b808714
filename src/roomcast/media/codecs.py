"""Per-codec facts the plane needs from RTP payloads: keyframe starts, VP8 picture ids.

All functions take the packet buffer and the payload's [start, end) offsets, never copy, and
never raise on short or garbage payloads (they answer "not a keyframe" / "no descriptor").
"""

from __future__ import annotations

import struct

# Codec kinds (ints: compared on the hot path).
AUDIO = 0  # opus, RED, PCMU/PCMA, G722, ...: every packet can start decoding
VP8 = 1
VP9 = 2
H264 = 3
AV1 = 4
H265 = 5
OTHER_VIDEO = 6  # no keyframe detection: every packet counts as a start
RTX = 7  # repair stream (RFC 4588): not forwarded

_CODEC_KINDS = {
    "video/vp8": VP8,
    "video/vp9": VP9,
    "video/h264": H264,
    "video/av1": AV1,
    "video/h265": H265,
    "video/rtx": RTX,
    "audio/rtx": RTX,
}

_CLOCK_RATES = {
    "audio/pcmu": 8000,
    "audio/pcma": 8000,
    "audio/g722": 8000,  # RFC 3551 §4.5.2: 8000 although sampled at 16 kHz
    "audio/telephone-event": 8000,
    "audio/cn": 8000,
}

_U16 = struct.Struct("!H")


def codec_kind(mime: str) -> int:
    mime = mime.lower()
    if mime.startswith("audio/"):
        return _CODEC_KINDS.get(mime, AUDIO)
    return _CODEC_KINDS.get(mime, OTHER_VIDEO)


def clock_rate(mime: str) -> int:
    """RTP clock rate of a mime type: video 90 kHz (RFC 3551 §5), opus/RED 48 kHz (RFC 7587)."""
    mime = mime.lower()
    if mime.startswith("video/"):
        return 90000
    return _CLOCK_RATES.get(mime, 48000)


def is_keyframe_start(kind: int, data: bytes, start: int, end: int) -> bool:
    """Whether a decoder can start at this packet (the first packet of a keyframe)."""
    if kind == VP8:
        return vp8_is_keyframe(data, start, end)
    if kind == H264:
        return h264_is_keyframe(data, start, end)
    if kind == VP9:
        return vp9_is_keyframe(data, start, end)
    if kind == AV1:
        return av1_is_keyframe(data, start, end)
    if kind == H265:
        return h265_is_keyframe(data, start, end)
    return kind != RTX


# -- VP8 (RFC 7741) ------------------------------------------------------------------------


class Vp8Descriptor:
    """Offsets into one VP8 payload descriptor (RFC 7741 §4.2); reused, never reallocated."""

    __slots__ = (
        "header_size",
        "keyframe",
        "picture_id",
        "picture_id_offset",
        "picture_id_size",
        "tl0picidx",
        "tl0picidx_offset",
    )

    def __init__(self) -> None:
        self.clear()

    def clear(self) -> None:
        self.header_size = 0  # 0: no valid descriptor
        self.picture_id = -1
        self.picture_id_offset = -1  # absolute offset in the packet
        self.picture_id_size = 0  # 0, 1 (7-bit) or 2 (15-bit, M bit set)
        self.tl0picidx = -1
        self.tl0picidx_offset = -1
        self.keyframe = False

    def parse(self, data: bytes, start: int, end: int) -> bool:
        """Fill from the payload at [start, end); False (and cleared) if it is malformed."""
        self.clear()
        if end - start < 1:
            return False
        b0 = data[start]
        i = start + 1
        if b0 & 0x80:  # X: extension byte follows
            if i >= end:
                return False
            x = data[i]
            i += 1
            if x & 0x80:  # I: picture id
                if i >= end:
                    return False
                if data[i] & 0x80:  # M: 15-bit picture id
                    if i + 2 > end:
                        return False
                    self.picture_id = _U16.unpack_from(data, i)[0] & 0x7FFF
                    self.picture_id_size = 2
                else:
                    self.picture_id = data[i]
                    self.picture_id_size = 1
                self.picture_id_offset = i
                i += self.picture_id_size
            if x & 0x40:  # L: TL0PICIDX
                if i >= end:
                    return False
                self.tl0picidx = data[i]
                self.tl0picidx_offset = i
                i += 1
            if x & 0x30:  # T or K: TID/Y/KEYIDX byte
                i += 1
        if i > end:
            self.clear()
            return False
        self.header_size = i - start
        # Start of partition 0 (S=1, PID=0) and the VP8 payload header's P bit clear
        # (RFC 7741 §4.3: P = 0 for key frames).
        self.keyframe = bool(b0 & 0x10) and (b0 & 0x07) == 0 and i < end and not data[i] & 0x01
        return True


_scratch_vp8 = Vp8Descriptor()


def vp8_is_keyframe(data: bytes, start: int, end: int) -> bool:
    return _scratch_vp8.parse(data, start, end) and _scratch_vp8.keyframe


def vp8_write_picture_id(buf: bytearray, offset: int, size: int, picture_id: int) -> None:
    """Overwrite a picture id in place, keeping its width (M bit for 15-bit ids)."""
    if size == 2:
        _U16.pack_into(buf, offset, 0x8000 | (picture_id & 0x7FFF))
    elif size == 1:
        buf[offset] = picture_id & 0x7F


# -- H.264 (RFC 6184) -----------------------------------------------------------------------

_H264_SPS = 7
_H264_STAP_A = 24
_H264_FU_A = 28


# A switch point is where the parameter sets start, not the IDR slice: every simulcast layer
# of a WebRTC encoder uses the same SPS/PPS ids, so a subscriber switched onto an IDR whose
# SPS/PPS were lost (or arrived late, by NACK) would decode the new layer with the old layer's
# SPS — garbage at the old size, and no error that makes it ask for a keyframe. Publishers
# (RFC 6184 §8.4, WebRTC encoders) send SPS and PPS in-band before every IDR.
def h264_is_keyframe(data: bytes, start: int, end: int) -> bool:
    """An SPS, in a single NAL, STAP-A (§5.7.1) or FU-A start (§5.8)."""
    if end - start < 1:
        return False
    nal = data[start] & 0x1F
    if nal == _H264_SPS:
        return True
    if nal == _H264_STAP_A:
        i = start + 1
        while i + 2 < end:
            size = _U16.unpack_from(data, i)[0]
            if size == 0 or i + 2 + size > end:
                return False
            if data[i + 2] & 0x1F == _H264_SPS:
                return True
            i += 2 + size
        return False
    if nal == _H264_FU_A:
        if end - start < 2:
            return False
        fu = data[start + 1]
        return bool(fu & 0x80) and fu & 0x1F == _H264_SPS
    return False


_H265_PARAMETER_SETS = (32, 33)  # VPS, SPS


def h265_is_keyframe(data: bytes, start: int, end: int) -> bool:
    """RFC 7798 §1.1.4: a VPS (32) or SPS (33), in a single NAL, AP (48) or FU start (49);
    as for H.264, the parameter sets before an IRAP picture are the switch point."""
    if end - start < 2:
        return False
    nal = (data[start] >> 1) & 0x3F
    if nal == 49:
        return (
            end - start >= 3
            and bool(data[start + 2] & 0x80)
            and (data[start + 2] & 0x3F) in _H265_PARAMETER_SETS
        )
    if nal == 48:
        i = start + 2
        while i + 2 < end:
            size = _U16.unpack_from(data, i)[0]
            if size == 0 or i + 2 + size > end:
                return False
            if (data[i + 2] >> 1) & 0x3F in _H265_PARAMETER_SETS:
                return True
            i += 2 + size
        return False
    return nal in _H265_PARAMETER_SETS


# -- VP9 (RFC 9628, was draft-ietf-payload-vp9) -----------------------------------------------


def vp9_is_keyframe(data: bytes, start: int, end: int) -> bool:
    """§4.2: start of a frame (B) that is not inter-predicted (P = 0) in spatial layer 0."""
    if end - start < 1:
        return False
    b0 = data[start]
    if b0 & 0x40 or not b0 & 0x08:  # P set, or not the beginning of a frame
        return False
    if not b0 & 0x20:  # L: no layer indices: single layer
        return True
    i = start + 1
    if b0 & 0x80:  # I: picture id, 7 or 15 bits
        if i >= end:
            return False
        i += 2 if data[i] & 0x80 else 1
    if i >= end:
        return False
    return (data[i] >> 1) & 0x07 == 0  # SID


# -- AV1 (AV1 RTP spec §4.4) ----------------------------------------------------------------

_OBU_SEQUENCE_HEADER = 1


def av1_is_keyframe(data: bytes, start: int, end: int) -> bool:
    """N bit (first packet of a coded video sequence), or a sequence header OBU first."""
    if end - start < 2:
        return False
    agg = data[start]
    if agg & 0x08:  # N
        return True
    if agg & 0x80:  # Z: first element continues an OBU from the previous packet
        return False
    i = start + 1
    if (agg >> 4) & 0x03 != 1:  # W != 1: the first element has a LEB128 length
        for _ in range(8):
            if i >= end:
                return False
            more = data[i] & 0x80
            i += 1
            if not more:
                break
    return i < end and (data[i] >> 3) & 0x0F == _OBU_SEQUENCE_HEADER
