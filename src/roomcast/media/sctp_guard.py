"""Limits on what a peer can make our SCTP receiver hold or do, checked before it sees a packet.

aiortc's receiver (behind `sctp.DataChannels`) accepts DATA at any TSN, keeps every chunk until
the association dies, and does work proportional to the chunks it holds for each chunk it
receives; one participant could freeze the node with a few hundred KiB of DATA past a TSN gap.
`ReceiveGuard` sits in front of it, without I/O: it parses each packet (`sctp_packet`), reads
the receiver's state through `ReceiverView`, and

- drops packets larger than `MAX_PACKET_SIZE` and DATA more than `TSN_WINDOW` TSNs past the
  cumulative TSN (RFC 9260 §6.2 lets a receiver drop DATA it has no room for; pion/sctp, which
  livekit-server uses, drops DATA beyond its window the same way). Dropped DATA is not
  acknowledged, so a well-behaved sender retransmits it once the window moves;
- raises `SctpViolation` (the owner then aborts the association, RFC 9260 §9.1) when the receiver
  holds more than `MAX_HELD_BYTES`, `MAX_HELD_CHUNKS` or `MAX_REASSEMBLY_CHUNKS` (chunks of
  incomplete messages), when the peer opens more than `MAX_INBOUND_STREAMS` streams, when it
  sends a DATA chunk without user data (§3.3.1), or when, while one TSN gap stays open, it
  sends more than `MAX_WASTED_PER_GAP` of DATA that is dropped or duplicated: a sender that
  respects our advertised receive window (§6.1 rule A) never does.

Every value below is what a well-behaved peer stays under with a margin; the cost figures are
in docs/architecture.md ("Data channels").
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from .sctp_packet import (
    DATA,
    DATA_HEADER_LENGTH,
    SctpPacketError,
    chunk_spans,
    data_tsn_and_stream,
    keep_chunks,
    tsn_distance,
    verify_checksum_of,
)

# The receive window we advertise (a_rwnd in INIT, RFC 9260 §3.3.2): aiortc's 1 MiB. A sender
# that respects it never has more than this much unacknowledged data outstanding.
RECEIVE_WINDOW_BYTES = 1024 * 1024
# Chrome/libwebrtc, Firefox, pion and aiortc keep SCTP packets under ~1,200 bytes (one DTLS
# record within the path MTU, RFC 8261 §5); pion reads at most 8 KiB. Larger ones are dropped.
MAX_PACKET_SIZE = 8192
# DATA this far past the cumulative TSN is dropped. A whole receive window of full-size DATA
# chunks (1 MiB / ~1,150 bytes ≈ 900 TSNs) fits, so a bulk sender that loses one packet keeps
# all its later chunks; small messages beyond it are retransmitted. aiortc's receiver does work
# linear in the chunks it holds per chunk received, so this also bounds a hostile chunk's cost
# (measured: ~10 µs per in-order chunk, at most ~150 µs per chunk at this window).
TSN_WINDOW = 1024
# Held = received but not yet delivered (out of order, or fragments of an incomplete message).
# Bytes: the advertised window plus room for the one packet a sender may always have in flight
# (§6.1 rule A). Chunks: the window of out-of-order TSNs plus the fragments of one
# maximum-size message (256 KiB, a=max-message-size, / ~1,150 bytes ≈ 230).
MAX_HELD_BYTES = RECEIVE_WINDOW_BYTES + 64 * 1024
MAX_HELD_CHUNKS = TSN_WINDOW + 256
# Held chunks that no missing TSN explains (fragments waiting for the rest of their message):
# a sender fragments a message into consecutive TSNs (§6.9), so a well-behaved one has at most
# one incomplete message there, ~230 chunks. aiortc rescans them for every chunk it receives.
MAX_REASSEMBLY_CHUNKS = 512
# LiveKit's SDKs use three data channels (`_reliable`, `_lossy`, `_data_track`) per
# PeerConnection, each on one SCTP stream; aiortc keeps state for every stream id it sees.
MAX_INBOUND_STREAMS = 256
# DATA dropped past the window or received twice, counted (user data + 16-byte chunk header)
# while the cumulative TSN does not move. A sender counts everything we have not acknowledged
# against our window, so it stops after one window: twice that is a peer that ignores it.
MAX_WASTED_PER_GAP = 2 * RECEIVE_WINDOW_BYTES


class SctpViolation(Exception):
    """The peer broke a limit that a well-behaved one never reaches: abort the association.
    `limit` is a short label for logs and metrics."""

    def __init__(self, limit: str, detail: str) -> None:
        super().__init__(f"{limit}: {detail}")
        self.limit = limit


class ReceiverView(Protocol):
    """What the guard reads from the SCTP receiver it protects."""

    @property
    def cumulative_tsn(self) -> int | None:
        """The peer's cumulative TSN we acknowledge; None before the handshake set it."""

    def has_received(self, tsn: int) -> bool:
        """Was this TSN past the cumulative TSN received already (out of order)?"""

    @property
    def out_of_order(self) -> int:
        """How many TSNs past the cumulative TSN were received."""

    def has_stream(self, stream_id: int) -> bool: ...

    @property
    def stream_count(self) -> int: ...

    @property
    def held_bytes(self) -> int: ...

    @property
    def held_chunks(self) -> int: ...


@dataclass(frozen=True, slots=True)
class ReceiveLimits:
    tsn_window: int = TSN_WINDOW
    max_packet_size: int = MAX_PACKET_SIZE
    max_held_bytes: int = MAX_HELD_BYTES
    max_held_chunks: int = MAX_HELD_CHUNKS
    max_reassembly_chunks: int = MAX_REASSEMBLY_CHUNKS
    max_inbound_streams: int = MAX_INBOUND_STREAMS
    max_wasted_per_gap: int = MAX_WASTED_PER_GAP


class ReceiveGuard:
    """Admit SCTP packets to one association's receiver (see the module doc).

        packet = guard.admit(data, receiver)   # the bytes to hand on, or None; may raise
        ... hand `packet` to the receiver ...
        guard.check(receiver)                  # after each packet; may raise SctpViolation

    `dropped` counts what was dropped, by limit ("packet_size", "malformed", "tsn_window"),
    and `on_drop(limit)` hears each drop.
    """

    def __init__(
        self,
        limits: ReceiveLimits | None = None,
        *,
        on_drop: Callable[[str], None] | None = None,
    ) -> None:
        self.limits = limits or ReceiveLimits()
        self.dropped: dict[str, int] = {"packet_size": 0, "malformed": 0, "tsn_window": 0}
        self._on_drop = on_drop
        self._gap_at: int | None = None  # the cumulative TSN while `_wasted` accumulates
        self._wasted = 0

    def admit(self, data: bytes, receiver: ReceiverView) -> bytes | None:
        """The packet to hand to the receiver: `data` itself, a copy without the DATA chunks
        past the window, or None when nothing is left. Raises SctpViolation. (The receiver
        checks the checksum of what it is handed; a copy is only made of a checked packet.)"""
        limits = self.limits
        if len(data) > limits.max_packet_size:
            self._drop("packet_size")
            return None
        try:
            spans = chunk_spans(data)
        except SctpPacketError:
            self._drop("malformed")  # the receiver would drop it too
            return None
        if not any(kind == DATA for kind, _, _ in spans):
            return data
        cumulative = receiver.cumulative_tsn
        if cumulative is None:  # DATA before the handshake: nothing can take it yet
            self._drop("tsn_window")
            return None
        if cumulative != self._gap_at:
            self._gap_at, self._wasted = cumulative, 0
        kept = []
        new_streams: set[int] = set()
        for span in spans:
            kind, start, end = span
            if kind != DATA:
                kept.append(span)
                continue
            if end - start <= DATA_HEADER_LENGTH:
                raise SctpViolation("no_user_data", "DATA chunk without user data")
            tsn, stream_id = data_tsn_and_stream(data, start)
            ahead = tsn_distance(tsn, cumulative)
            if ahead > limits.tsn_window:
                self._drop("tsn_window")
                self._waste(end - start)
                continue
            if ahead <= 0 or receiver.has_received(tsn):
                self._waste(end - start)  # a duplicate: the receiver only reports it
            elif not receiver.has_stream(stream_id) and stream_id not in new_streams:
                new_streams.add(stream_id)
                if receiver.stream_count + len(new_streams) > limits.max_inbound_streams:
                    raise SctpViolation(
                        "streams", f"more than {limits.max_inbound_streams} inbound streams"
                    )
            kept.append(span)
        if len(kept) == len(spans):
            return data
        try:
            verify_checksum_of(data)
        except SctpPacketError:
            self._drop("malformed")
            return None
        return keep_chunks(data, kept) if kept else None

    def check(self, receiver: ReceiverView) -> None:
        """After the receiver took a packet: raise SctpViolation if it now holds too much."""
        limits = self.limits
        held = receiver.held_bytes
        if held > limits.max_held_bytes:
            raise SctpViolation("held_bytes", f"{held} bytes held (limit {limits.max_held_bytes})")
        chunks = receiver.held_chunks
        if chunks > limits.max_held_chunks:
            raise SctpViolation(
                "held_chunks", f"{chunks} chunks held (limit {limits.max_held_chunks})"
            )
        # A lower bound: out-of-order TSNs may have been delivered already.
        waiting = chunks - receiver.out_of_order
        if waiting > limits.max_reassembly_chunks:
            raise SctpViolation(
                "reassembly_chunks",
                f"{waiting} chunks wait for reassembly (limit {limits.max_reassembly_chunks})",
            )

    def _drop(self, limit: str) -> None:
        self.dropped[limit] += 1
        if self._on_drop is not None:
            self._on_drop(limit)

    def _waste(self, cost: int) -> None:
        self._wasted += cost
        if self._wasted > self.limits.max_wasted_per_gap:
            raise SctpViolation(
                "gap_flood",
                f"{self._wasted} bytes of DATA dropped or repeated while one gap stayed open",
            )
