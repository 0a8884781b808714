"""Transport-wide congestion control feedback (draft-holmer-rmcat-transport-wide-cc-extensions-01):
the feedback message's codec, and the receive side that sends it to publishers.

Every packet of a PeerConnection carries a transport-wide sequence number (RTP header extension,
§2); the receiver reports when each one arrived (RTCP RTPFB FMT 15, §3.1) and the sender's
bandwidth estimator works from that. Roomcast is the receiver on publisher PeerConnections
(`TwccRecorder`) and the sender on subscriber ones (media/downlink.py reads the feedback).

No I/O: the recorder hands finished feedback packets to a callback; time is passed in.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass, field

from .rtcp import RTCP_RTPFB, RTCP_RTPFB_TWCC, RtcpError

REFERENCE_UNIT_US = 64_000  # reference time unit (§3.1)
DELTA_UNIT_US = 250  # receive delta unit (§3.1.5)

# Packet status symbols (§3.1.1).
NOT_RECEIVED = 0
SMALL_DELTA = 1  # received, delta 0..63.75 ms in one byte
LARGE_DELTA = 2  # received, delta as a signed 16-bit value

MAX_STATUS_COUNT = 0xFFFF
RUN_LENGTH_MAX = 0x1FFF  # 13 bits
MAX_PACKETS_PER_FEEDBACK = 1000  # keeps one feedback well inside an MTU's worth of deltas

_HEAD = struct.Struct("!HHI")  # base sequence, status count, reference time (24) + fb count (8)
_U16 = struct.Struct("!H")
_I16 = struct.Struct("!h")
_FB = struct.Struct("!BBHII")  # RTCP header + sender SSRC + media SSRC


@dataclass(slots=True)
class TwccFeedback:
    """One feedback message: for each sequence number from `base_sequence` on, the arrival time
    in µs on the receiver's clock, or None when it was not received."""

    base_sequence: int
    feedback_count: int
    reference_time: int  # 24-bit, in REFERENCE_UNIT_US
    arrivals: list[int | None] = field(default_factory=list)


def parse_twcc(fci: bytes) -> TwccFeedback:
    """The FCI of a transport-cc feedback (what follows the two SSRCs, `rtcp.TransportCC.fci`).

    Raises RtcpError when it is truncated or inconsistent."""
    if len(fci) < 8:
        raise RtcpError(f"transport-cc feedback too short ({len(fci)} bytes)")
    base, count, ref_and_count = _HEAD.unpack_from(fci, 0)
    reference = ref_and_count >> 8
    if reference & 0x800000:  # 24-bit signed (§3.1)
        reference -= 1 << 24
    symbols: list[int] = []
    offset = 8
    while len(symbols) < count:
        if offset + 2 > len(fci):
            raise RtcpError("transport-cc packet chunks run past the end")
        chunk = _U16.unpack_from(fci, offset)[0]
        offset += 2
        if not chunk & 0x8000:  # run length chunk (§3.1.3)
            symbol, run = (chunk >> 13) & 0x3, chunk & RUN_LENGTH_MAX
            symbols.extend([symbol] * min(run, count - len(symbols)))
        elif not chunk & 0x4000:  # status vector, 14 one-bit symbols (§3.1.4)
            for bit in range(13, -1, -1):
                symbols.append((chunk >> bit) & 1)
        else:  # status vector, 7 two-bit symbols
            for shift in range(12, -1, -2):
                symbols.append((chunk >> shift) & 0x3)
    del symbols[count:]
    arrivals: list[int | None] = []
    time_us = reference * REFERENCE_UNIT_US
    for symbol in symbols:
        if symbol == NOT_RECEIVED:
            arrivals.append(None)
            continue
        if symbol == SMALL_DELTA:
            if offset + 1 > len(fci):
                raise RtcpError("transport-cc receive deltas run past the end")
            delta = fci[offset]
            offset += 1
        elif symbol == LARGE_DELTA:
            if offset + 2 > len(fci):
                raise RtcpError("transport-cc receive deltas run past the end")
            delta = _I16.unpack_from(fci, offset)[0]
            offset += 2
        else:
            raise RtcpError("transport-cc status symbol 3 is reserved")
        time_us += delta * DELTA_UNIT_US
        arrivals.append(time_us)
    return TwccFeedback(base, ref_and_count & 0xFF, reference & 0xFFFFFF, arrivals)


def build_twcc(
    sender_ssrc: int,
    media_ssrc: int,
    base_sequence: int,
    feedback_count: int,
    arrivals: list[int | None],
) -> bytes:
    """A complete transport-cc RTCP packet (§3.1) for `arrivals` (µs, or None when not
    received) of the sequence numbers from `base_sequence` on. The first arrival must not be
    None, and consecutive arrivals at most ±8 s apart (the caller splits otherwise)."""
    first = next(a for a in arrivals if a is not None)
    reference = first // REFERENCE_UNIT_US
    symbols: list[int] = []
    deltas = bytearray()
    previous = reference * REFERENCE_UNIT_US
    for arrival in arrivals:
        if arrival is None:
            symbols.append(NOT_RECEIVED)
            continue
        delta = round((arrival - previous) / DELTA_UNIT_US)
        previous += delta * DELTA_UNIT_US  # keep rounding errors from adding up
        if 0 <= delta <= 0xFF:
            symbols.append(SMALL_DELTA)
            deltas.append(delta)
        else:
            symbols.append(LARGE_DELTA)
            deltas += _I16.pack(max(-0x8000, min(0x7FFF, delta)))
    body = bytearray(
        _HEAD.pack(
            base_sequence & 0xFFFF,
            len(symbols),
            (reference & 0xFFFFFF) << 8 | (feedback_count & 0xFF),
        )
    )
    for chunk in _chunks(symbols):
        body += _U16.pack(chunk)
    body += deltas
    body += b"\x00" * (-len(body) % 4)
    words = (len(body) + 8) // 4
    header = _FB.pack(0x80 | RTCP_RTPFB_TWCC, RTCP_RTPFB, words, sender_ssrc, media_ssrc)
    return header + bytes(body)


def _chunks(symbols: list[int]) -> list[int]:
    """Packet chunks for the symbols: runs of 7 or more as run length chunks, the rest as
    status vectors (one-bit when they hold only "not received" and "small delta")."""
    chunks: list[int] = []
    i, n = 0, len(symbols)
    while i < n:
        run = 1
        while i + run < n and symbols[i + run] == symbols[i] and run < RUN_LENGTH_MAX:
            run += 1
        if run >= 7 or i + run == n:
            chunks.append(symbols[i] << 13 | run)
            i += run
            continue
        window = symbols[i : i + 14]
        if len(window) == 14 and max(window) <= SMALL_DELTA:
            chunk = 0x8000
            for bit, symbol in enumerate(window):
                chunk |= symbol << (13 - bit)
            i += 14
        else:
            window = symbols[i : i + 7]
            chunk = 0xC000
            for index, symbol in enumerate(window):
                chunk |= symbol << (12 - 2 * index)
            i += 7
        chunks.append(chunk)
    return chunks


class TwccRecorder:
    """The arrival times of one publisher PeerConnection's packets, sent back as feedback every
    `interval` seconds (libwebrtc's receivers send every 50-250 ms, 100 ms by default)."""

    __slots__ = (
        "_arrivals",
        "_count",
        "_due",
        "_highest",
        "_next_base",
        "_send",
        "before_flush",
        "interval",
        "media_ssrc",
        "sender_ssrc",
    )

    def __init__(
        self, sender_ssrc: int, send: Callable[[bytes], None], interval: float = 0.1
    ) -> None:
        self.sender_ssrc = sender_ssrc
        self.media_ssrc = 0  # one SSRC of the publisher (libwebrtc ignores it)
        self.interval = interval
        self._send = send
        self._arrivals: dict[int, int] = {}  # unwrapped sequence → arrival (µs)
        self._highest = -1  # highest unwrapped sequence received
        self._next_base = -1  # first sequence the next feedback reports
        self._count = 0
        self._due = 0.0
        # Called when a feedback is due, before it is built: the native plane records the
        # arrivals its engine kept (media/native_plane.py).
        self.before_flush: Callable[[], None] | None = None

    def record(self, sequence: int, ssrc: int, now: float) -> None:
        """A packet with transport-wide sequence number `sequence` arrived (hot path)."""
        highest = self._highest
        if highest < 0:
            unwrapped = sequence
            self._next_base = sequence
            self._due = now + self.interval
        else:
            delta = (sequence - highest) & 0xFFFF
            unwrapped = highest + delta if delta < 0x8000 else highest + delta - 0x10000
            if unwrapped < self._next_base:
                return  # already reported (a late packet)
        if unwrapped > highest:
            self._highest = unwrapped
        self._arrivals[unwrapped] = int(now * 1_000_000)
        self.media_ssrc = ssrc
        if now >= self._due:
            self.flush(now)

    def flush(self, now: float) -> None:
        """Send what arrived since the last feedback (also called by the media tick)."""
        self._due = now + self.interval
        if self.before_flush is not None:
            self.before_flush()
        if not self._arrivals:
            return
        arrivals = self._arrivals
        base = self._next_base
        if self._highest - base >= 0x4000:  # a restarted sender: report from its new numbers
            base = min(arrivals)
        while base <= self._highest:
            end = min(self._highest + 1, base + MAX_PACKETS_PER_FEEDBACK)
            while base < end and base not in arrivals:
                base += 1  # a feedback starts with a received packet
            if base >= end:
                break
            times: list[int | None] = []
            previous = arrivals[base]
            stop = base
            for sequence in range(base, end):
                arrival = arrivals.get(sequence)
                if arrival is not None:
                    if abs(arrival - previous) > 8_000_000:
                        break  # the next feedback starts here (16-bit deltas)
                    previous = arrival
                times.append(arrival)
                stop = sequence + 1
            while times and times[-1] is None:
                times.pop()
                stop -= 1
            self._send(build_twcc(self.sender_ssrc, self.media_ssrc, base, self._count, times))
            self._count = (self._count + 1) & 0xFF
            base = stop
        self._next_base = self._highest + 1
        self._arrivals = {}


HISTORY = 8192  # packets remembered for feedback (power of two): seconds at any real rate


def _no_padding(now: float) -> None:
    """Padding callback until a downlink installs its own."""


class TransportWide:
    """The transport-wide sequence numbers of one subscriber PeerConnection (§2) and what was
    sent under each: every downtrack of the subscriber numbers its packets here.

    `sent[n % HISTORY]` is (n, send time, size) with n unwrapped. While `padding` is set (a
    probe runs, media/downlink.py), senders call `pad(now)` after each media packet."""

    __slots__ = ("next", "pad", "padding", "sent")

    def __init__(self) -> None:
        self.next = 1  # unwrapped; libwebrtc starts at 1 too
        self.sent: list[tuple[int, float, int] | None] = [None] * HISTORY
        self.padding = False
        self.pad: Callable[[float], None] = _no_padding

    def refresh(self) -> None:
        """Bring `next` up to date (the native plane's numbers are the engine's)."""

    def load(self, since: int) -> None:
        """Bring `sent` up to date from unwrapped number `since` on (the native plane's records
        are the engine's, copied only where feedback or a probe reads them)."""

    def start_padding(self, pad_from: object, bps: float, start: float, end: float) -> None:
        """A probe starts: senders pad (`pad`) after media packets until `stop_padding`."""
        self.padding = True

    def stop_padding(self) -> None:
        self.padding = False

    def take(self, now: float, size: int) -> int:
        """The next number (16 bits) for a packet of `size` bytes sent now (slow paths; the
        forwarding hot path inlines this)."""
        n = self.next
        self.next = n + 1
        self.sent[n & (HISTORY - 1)] = (n, now, size)
        return n & 0xFFFF

    def unwrap(self, sequence: int) -> int:
        """The unwrapped number of a recently sent 16-bit one."""
        return self.next - ((self.next - sequence) & 0xFFFF)

    def lookup(self, unwrapped: int) -> tuple[int, float, int] | None:
        entry = self.sent[unwrapped & (HISTORY - 1)]
        return entry if entry is not None and entry[0] == unwrapped else None
