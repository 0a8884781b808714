"""Per-subscriber flow control of data tracks, decided without I/O
(docs/protocol/17-data-tracks.md §2.8, §3.4).

A data track travels unordered and unreliable, and a receiver loses a whole frame when one of
its packets is lost. So a subscriber that cannot keep up loses whole frames: when a frame
starts, it is sent only if the subscriber's channel holds less than the track's latency budget
(the track's byte rate times livekit-server's `rtc.datachannel_data_track_target_latency`,
within `MIN_BUDGET`..`MAX_BUDGET`); once started, the rest of the frame follows, and a packet
that cannot be sent drops the rest of its frame. Sends never wait, so a slow subscriber holds
up nobody else.
"""

from __future__ import annotations

from roomcast.rooms.data_track_packet import PacketHeader

# A few client packets (16 000 bytes each): a subscriber with this much queued is behind.
MIN_BUDGET = 64 * 1024
# A fast track's budget stays below one maximum frame (128 packets): more would be seconds
# of queue on a slow link.
MAX_BUDGET = 2 * 1024 * 1024
RATE_WINDOW = 1.0  # seconds over which a track's byte rate is measured


class TrackRate:
    """Bytes per second a track carries, measured over windows of RATE_WINDOW."""

    __slots__ = ("_bytes", "_start", "bytes_per_second")

    def __init__(self, now: float) -> None:
        self._start = now
        self._bytes = 0
        self.bytes_per_second = 0.0

    def add(self, size: int, now: float) -> None:
        self._bytes += size
        elapsed = now - self._start
        if elapsed >= RATE_WINDOW:
            self.bytes_per_second = self._bytes / elapsed
            self._start, self._bytes = now, 0


def frame_budget(bytes_per_second: float, target_latency: float) -> int | None:
    """Bytes a subscriber may have queued when a frame starts; None when unbounded
    (a target latency of 0, as livekit-server reads it)."""
    if target_latency <= 0:
        return None
    return int(min(MAX_BUDGET, max(MIN_BUDGET, bytes_per_second * target_latency)))


class FrameGate:
    """One subscription's send decisions: whole frames or nothing."""

    __slots__ = ("_frame", "sending")

    def __init__(self) -> None:
        self._frame = -1
        self.sending = False

    def enter(self, header: PacketHeader) -> bool:
        """Account for one packet; True when it begins a frame for this subscriber (the caller
        then sends it only within the budget). A packet of another frame than the one in
        progress begins one too: its first packet was lost or reordered."""
        if header.starts_frame or header.frame_number != self._frame:
            self._frame = header.frame_number
            self.sending = True
            return True
        return False

    def drop_frame(self) -> None:
        """A packet of the current frame was not sent: the rest of the frame is useless."""
        self.sending = False
