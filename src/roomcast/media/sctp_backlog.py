"""How much a peer may leave unread in our SCTP send buffer, decided without I/O.

Data channels queue what we send until the peer acknowledges it (aiortc keeps it in its
`bufferedAmount`, W3C WebRTC §6.2). A subscriber that stops acknowledging would make us keep
every reliable message its room-mates publish. `SendBacklog.decide` is asked before each send,
with the bytes buffered on the association:

- lossy (partially reliable) messages are dropped above `LOSSY_BACKLOG`: they would arrive
  stale, and the SDKs expect losses on `_lossy` (docs/protocol/06-data-packets.md);
- reliable messages above `RELIABLE_BACKLOG` end the connection (`DISCONNECT`): dropping one
  silently would break the in-order, no-gap promise that RPC replies and byte/text streams rely
  on, and the SDK cannot learn of the gap. Removing the participant as on a transport failure
  lets its SDK reconnect to a consistent state;
- with livekit-server's `rtc.datachannel_slow_threshold` (bits/s) set, a reliable message to a
  subscriber that is behind (`SLOW_READER_BACKLOG`) and has drained less than the threshold over
  the last `RATE_WINDOW` seconds is dropped instead (`DROP`), as livekit-server drops data for
  a slow reader rather than block the room.
"""

from __future__ import annotations

import enum
from collections import deque

# A lossy message older than what the link drains in a moment is worth nothing: 64 KiB is ~0.5 s
# at 1 Mbit/s, far more than the lossy channel's real-time traffic (speaking flags, cursors).
LOSSY_BACKLOG = 64 * 1024
# Eight maximum-size messages (256 KiB, a=max-message-size), or minutes of typical chat and RPC
# traffic: a subscriber this far behind has stopped reading.
RELIABLE_BACKLOG = 2 * 1024 * 1024
# Where livekit-server's writer would block (its SCTP send buffer is full) and starts asking
# whether the reader is slow: one maximum-size message.
SLOW_READER_BACKLOG = 256 * 1024
RATE_WINDOW = 2.0  # seconds of drain history behind the slow-reader rate


class SendDecision(enum.Enum):
    SEND = "send"
    DROP = "drop"
    DISCONNECT = "disconnect"


class SendBacklog:
    """The send-side limits of one association (see the module doc)."""

    def __init__(
        self,
        *,
        slow_threshold_bps: int = 0,
        lossy_backlog: int = LOSSY_BACKLOG,
        reliable_backlog: int = RELIABLE_BACKLOG,
        slow_reader_backlog: int = SLOW_READER_BACKLOG,
    ) -> None:
        self.slow_threshold_bps = slow_threshold_bps
        self.lossy_backlog = lossy_backlog
        self.reliable_backlog = reliable_backlog
        self.slow_reader_backlog = slow_reader_backlog
        self._queued = 0  # bytes ever handed to the association
        self._drained: deque[tuple[float, int]] = deque()  # (time, bytes that left the buffer)

    def decide(self, *, reliable: bool, size: int, buffered: int, now: float) -> SendDecision:
        """May a message of `size` bytes be sent now, with `buffered` bytes still unsent or
        unacknowledged? Call `sent(size)` after sending one."""
        self._sample(buffered, now)
        if not reliable:
            return SendDecision.DROP if buffered > self.lossy_backlog else SendDecision.SEND
        if self.slow_threshold_bps > 0 and buffered > self.slow_reader_backlog:
            rate = self.drain_rate()
            if rate is not None and rate * 8 < self.slow_threshold_bps:
                return SendDecision.DROP
        if buffered + size > self.reliable_backlog:
            return SendDecision.DISCONNECT
        return SendDecision.SEND

    def sent(self, size: int) -> None:
        self._queued += size

    def drain_rate(self) -> float | None:
        """Bytes per second that left the send buffer over the recorded window; None until
        the window is half full (an unknown rate is not called slow)."""
        samples = self._drained
        if len(samples) < 2:
            return None
        (start, first), (end, last) = samples[0], samples[-1]
        if end - start < RATE_WINDOW / 2:
            return None
        return (last - first) / (end - start)

    def _sample(self, buffered: int, now: float) -> None:
        samples = self._drained
        drained = self._queued - buffered
        if samples and now - samples[-1][0] < RATE_WINDOW / 8:
            return  # a few samples per window are enough
        samples.append((now, drained))
        while len(samples) > 2 and now - samples[1][0] >= RATE_WINDOW:
            samples.popleft()
