"""Retransmission requests towards a publisher (RFC 4585 §6.2.1 generic NACK), per received
stream: which sequence numbers are missing, when to ask for them (again), when to give up.

A gap in the sequence numbers opens entries; a late packet (the retransmission, or plain
reordering) closes its entry. An entry is NACKed first after `MIN_INTERVAL` (a packet merely
reordered needs no request), then again after a round trip, backing off by `BACKOFF` per try
up to `MAX_INTERVAL`, at most `MAX_TRIES` times, and dropped after `MAX_AGE` (the frame is long
gone by then: the decoder asks for a keyframe instead). livekit-server's NACK queue works the
same way. No I/O: the uptrack asks `due()` and sends the NACK.
"""

from __future__ import annotations

MIN_INTERVAL = 0.02  # s before the first request, and between two requests for one packet
MAX_INTERVAL = 0.4  # s between two requests for one packet, at most
DEFAULT_RTT = 0.07  # s, until a round trip is known
BACKOFF = 1.25  # each retry waits this much longer
MAX_TRIES = 5
MAX_AGE = 1.5  # s after which a missing packet is given up
MAX_MISSING = 256  # entries kept; a larger gap is a restart, not loss
MAX_PER_NACK = 64  # sequence numbers per request (RFC 4585 FCI entries cover 17 each)


class NackGenerator:
    __slots__ = ("given_up", "missing", "next_due", "recovered", "requested", "rtt")

    def __init__(self) -> None:
        # sequence number → [first seen missing, next request time, tries so far]
        self.missing: dict[int, list[float]] = {}
        self.next_due = float("inf")  # earliest next request time (the hot path compares it)
        self.rtt = DEFAULT_RTT  # s, round trip to the publisher
        self.requested = 0  # sequence numbers requested, retries included
        self.recovered = 0  # missing packets that arrived after all
        self.given_up = 0

    def on_gap(self, first: int, count: int, now: float) -> None:
        """`count` sequence numbers from `first` on were skipped."""
        if count > MAX_MISSING:
            return  # the stream jumped (a restart), nothing to recover
        due = now + MIN_INTERVAL
        for offset in range(count):
            self.missing[(first + offset) & 0xFFFF] = [now, due, 0.0]
        while len(self.missing) > MAX_MISSING:
            del self.missing[next(iter(self.missing))]
            self.given_up += 1
        self.next_due = min(self.next_due, due)

    def on_late(self, sequence: int) -> None:
        """An out-of-order packet arrived: a retransmission or a reordered one."""
        if self.missing.pop(sequence, None) is not None:
            self.recovered += 1
            if not self.missing:
                self.next_due = float("inf")

    def due(self, now: float) -> list[int]:
        """Sequence numbers to request now; gives up on those too old or asked too often."""
        lost: list[int] = []
        next_due = float("inf")
        for sequence, entry in list(self.missing.items()):
            first, when, tries = entry
            if tries >= MAX_TRIES or now - first > MAX_AGE:
                del self.missing[sequence]
                self.given_up += 1
                continue
            if when <= now and len(lost) < MAX_PER_NACK:
                lost.append(sequence)
                entry[2] = tries + 1
                wait = min(MAX_INTERVAL, max(MIN_INTERVAL, self.rtt * BACKOFF**tries))
                entry[1] = when = now + wait
            next_due = min(next_due, when)
        self.next_due = next_due
        self.requested += len(lost)
        return lost
