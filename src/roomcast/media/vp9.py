"""VP9 scalable video: the payload descriptor (RFC 9628 §4.2, was draft-ietf-payload-vp9) and
the per-subscriber choice of spatial and temporal layers it allows.

One VP9 SVC stream carries, for every picture, one *layer frame* per spatial layer (SID), each
split over packets flagged B (beginning) and E (end); the RTP marker ends the picture
(§4.1). A subscriber that wants fewer layers gets the packets of the layers it keeps, with the
marker moved to the end of its highest kept spatial layer. Switching down is safe at any picture
boundary (lower layers never depend on higher ones); switching up needs a layer frame that does
not depend on earlier pictures of its layer: P = 0 (spatial, a keyframe with L3T3_KEY) or U = 1
(temporal, a switching-up point).
"""

from __future__ import annotations

import struct

_U16 = struct.Struct("!H")

MAX_TEMPORAL = 7  # TID is 3 bits: "every temporal layer"


class Vp9Descriptor:
    """The fields of one VP9 payload descriptor (§4.2); reused, never reallocated."""

    __slots__ = (
        "begin",
        "end",
        "flexible",
        "header_size",
        "inter_layer",
        "inter_picture",
        "keyframe",
        "picture_id",
        "resolutions",
        "spatial_id",
        "switching_up",
        "temporal_id",
        "tl0picidx",
    )

    def __init__(self) -> None:
        self.clear()

    def clear(self) -> None:
        self.header_size = 0  # 0: no valid descriptor
        self.picture_id = -1
        self.inter_picture = False  # P
        self.flexible = False  # F
        self.begin = False  # B
        self.end = False  # E
        self.temporal_id = 0  # TID
        self.switching_up = False  # U
        self.spatial_id = 0  # SID
        self.inter_layer = False  # D
        self.tl0picidx = -1
        self.resolutions: tuple[tuple[int, int], ...] = ()  # scalability structure (V)
        self.keyframe = False

    def parse(self, data: bytes, start: int, end: int) -> bool:
        """Fill from the payload at [start, end); False (and cleared) if it is malformed."""
        self.clear()
        if end - start < 1:
            return False
        b0 = data[start]
        i = start + 1
        self.inter_picture = bool(b0 & 0x40)
        self.flexible = bool(b0 & 0x10)
        self.begin = bool(b0 & 0x08)
        self.end = bool(b0 & 0x04)
        if b0 & 0x80:  # I: picture id, M selects 15 bits
            if i >= end:
                return False
            if data[i] & 0x80:
                if i + 2 > end:
                    return False
                self.picture_id = _U16.unpack_from(data, i)[0] & 0x7FFF
                i += 2
            else:
                self.picture_id = data[i]
                i += 1
        if b0 & 0x20:  # L: layer indices
            if i >= end:
                return False
            layers = data[i]
            i += 1
            self.temporal_id = layers >> 5
            self.switching_up = bool(layers & 0x10)
            self.spatial_id = (layers >> 1) & 0x07
            self.inter_layer = bool(layers & 0x01)
            if not self.flexible:  # TL0PICIDX (non-flexible mode)
                if i >= end:
                    return False
                self.tl0picidx = data[i]
                i += 1
        if self.flexible and self.inter_picture:  # P_DIFFs, N bit says another follows
            for _ in range(3):
                if i >= end:
                    return False
                more = data[i] & 0x01
                i += 1
                if not more:
                    break
        if b0 & 0x02:  # V: scalability structure
            i = self._parse_ss(data, i, end)
            if i < 0:
                self.clear()
                return False
        if i > end:
            self.clear()
            return False
        self.header_size = i - start
        self.keyframe = self.begin and not self.inter_picture and self.spatial_id == 0
        return True

    def _parse_ss(self, data: bytes, i: int, end: int) -> int:
        """§4.2.1 scalability structure: N_S, Y (resolutions), G (picture group)."""
        if i >= end:
            return -1
        b = data[i]
        i += 1
        layers = (b >> 5) + 1
        if b & 0x10:  # Y
            if i + 4 * layers > end:
                return -1
            self.resolutions = tuple(
                (_U16.unpack_from(data, i + 4 * n)[0], _U16.unpack_from(data, i + 4 * n + 2)[0])
                for n in range(layers)
            )
            i += 4 * layers
        if b & 0x08:  # G
            if i >= end:
                return -1
            pictures = data[i]
            i += 1
            for _ in range(pictures):
                if i >= end:
                    return -1
                refs = (data[i] >> 2) & 0x03
                i += 1 + refs
        return i


class Vp9Selector:
    """One subscriber's spatial/temporal layer choice on a VP9 SVC stream.

    `select` sees every packet once, in arrival order, and answers -1 (drop) or the marker bit
    to send (0x80 or 0). A new target takes effect at the next picture, so that every picture
    sent ends with exactly one marker."""

    __slots__ = (
        "current_spatial",
        "current_temporal",
        "limit_spatial",
        "limit_temporal",
        "target_spatial",
        "target_temporal",
    )

    def __init__(self) -> None:
        self.target_spatial = 0
        self.target_temporal = MAX_TEMPORAL
        self.limit_spatial = 0  # the target as of the current picture's start
        self.limit_temporal = MAX_TEMPORAL
        self.current_spatial = -1  # -1: not started (waiting for a keyframe)
        self.current_temporal = -1

    def reset(self) -> None:
        self.current_spatial = self.current_temporal = -1

    @property
    def started(self) -> bool:
        return self.current_spatial >= 0

    def set_target(self, spatial: int, temporal: int = MAX_TEMPORAL) -> None:
        self.target_spatial = spatial
        self.target_temporal = temporal

    def needs_keyframe(self) -> bool:
        """Going up a spatial layer waits for a layer frame without inter-picture prediction,
        which only a keyframe brings with L3T3_KEY and most encoders."""
        return not self.started or self.current_spatial < self.target_spatial

    def select(self, d: Vp9Descriptor, marker: int) -> int:
        sid, tid = d.spatial_id, d.temporal_id
        if d.begin and sid == 0:  # a new picture: the target may change here, not inside one
            self.limit_spatial, self.limit_temporal = self.target_spatial, self.target_temporal
        if not self.started:
            if not d.keyframe:
                return -1
            self.current_spatial = 0
            self.current_temporal = min(tid, self.limit_temporal)
        elif d.begin and sid == 0:  # switching down is safe at any picture
            self.current_spatial = min(self.current_spatial, self.limit_spatial)
            self.current_temporal = min(self.current_temporal, self.limit_temporal)
        if (
            d.begin
            and self.current_temporal < tid <= self.limit_temporal
            and (d.switching_up or not d.inter_picture)
        ):
            self.current_temporal = tid
        if d.begin and self.current_spatial < sid <= self.limit_spatial and not d.inter_picture:
            self.current_spatial = sid
        if sid > self.current_spatial or tid > self.current_temporal:
            return -1
        # The end of the highest kept spatial layer ends the picture for this subscriber,
        # unless a higher layer of a keyframe may still be switched to.
        if (
            d.end
            and sid == self.current_spatial
            and (d.inter_picture or self.current_spatial >= self.limit_spatial)
        ):
            return 0x80
        return marker
