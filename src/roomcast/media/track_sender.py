"""What an `UpTrack` knows of the tracks it feeds: the packet view and the sender's face.

`uptrack.py` depends on this leaf module, and `downtrack.py` implements it, so the receive
side never imports the send side.
"""

from __future__ import annotations

from typing import Protocol

from .av1 import DdPacket
from .codecs import Vp8Descriptor
from .rtp import RtpHeader
from .vp9 import Vp9Descriptor


class PacketInfo:
    """One received packet as every downtrack sees it; reused for each packet (no allocation)."""

    __slots__ = (
        "clock_rate",
        "dd",
        "header",
        "keyframe",
        "layer",
        "marker",
        "now",
        "packet",
        "payload_type",
        "sequence",
        "stamp",
        "timestamp",
        "vp8",
        "vp9",
    )

    def __init__(self) -> None:
        self.header = RtpHeader()
        self.vp8 = Vp8Descriptor()
        self.vp9 = Vp9Descriptor()  # parsed for VP9 SVC tracks only
        self.dd = DdPacket()  # AV1 Dependency Descriptor, for AV1 SVC tracks only
        self.packet = b""
        self.stamp = 0  # unique per parsed packet: keys the per-group rewrite cache
        self.layer = 0
        self.sequence = 0
        self.timestamp = 0
        self.payload_type = 0
        self.marker = 0  # 0x80 or 0
        self.keyframe = False
        self.clock_rate = 90000
        self.now = 0.0


class TrackSender(Protocol):
    """One subscriber's copy of a published track, as the `UpTrack` feeding it sees it."""

    subscriber: str  # who receives it
    wanted: int | None  # the layer the subscriber asked for (None = paused)
    target: int | None  # the best live layer ≤ wanted, switched to on its next keyframe
    current: int | None  # the layer being forwarded; None = waiting for a keyframe / paused

    def forward(self, p: PacketInfo) -> None:
        """Hot path: one received packet, parsed once for every sender of the track."""

    def set_target(self, layer: int | None) -> None: ...

    def restart(self) -> None:
        """Start again on the next keyframe (after a publisher unmute)."""

    def waiting_for_keyframe(self) -> bool: ...
