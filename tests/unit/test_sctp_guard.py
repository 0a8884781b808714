"""The SCTP receive limits (media/sctp_guard.py), alone on a fake receiver and in front of
aiortc's real association (security review H1: one participant froze the node with DATA past
a TSN gap). The hostile tests perform the attacks through the adapter and bound their time and
memory; without the guard they run for minutes and hold every chunk."""

from __future__ import annotations

import time
import tracemalloc
from dataclasses import dataclass, field

import pytest

from roomcast.media.sctp_guard import (
    MAX_HELD_BYTES,
    MAX_HELD_CHUNKS,
    MAX_INBOUND_STREAMS,
    MAX_REASSEMBLY_CHUNKS,
    TSN_WINDOW,
    ReceiveGuard,
    ReceiveLimits,
    SctpViolation,
)
from roomcast.media.sctp_packet import (
    ABORT,
    DATA,
    SACK,
    Chunk,
    DataChunk,
    SctpPacket,
)

from .sctp_pair import SctpPair

# CPU seconds of this thread (not wall time: a busy machine must not fail the test); generous,
# the guarded adapter needs well under one, the unguarded one tens for the gap flood.
ATTACK_SECONDS = 5.0
ATTACK_MEMORY = 16 * 1024 * 1024  # bytes allocated and still held during an attack


# -- the guard alone ---------------------------------------------------------------------------
@dataclass
class FakeReceiver:
    cumulative_tsn: int | None = 100
    received: set[int] = field(default_factory=set)
    streams: set[int] = field(default_factory=lambda: {1})
    held_bytes: int = 0
    held_chunks: int = 0
    out_of_order: int = 0

    def has_received(self, tsn: int) -> bool:
        return tsn in self.received

    def has_stream(self, stream_id: int) -> bool:
        return stream_id in self.streams

    @property
    def stream_count(self) -> int:
        return len(self.streams)


def packet(*tsns: int, stream: int = 1, extra: tuple[Chunk, ...] = ()) -> bytes:
    chunks = tuple(DataChunk(t % (1 << 32), stream, 0, 53, b"x" * 16).to_chunk() for t in tsns)
    return SctpPacket(5000, 5000, 7, extra + chunks).serialize()


def test_in_window_packets_pass_unchanged() -> None:
    guard = ReceiveGuard()
    data = packet(101, 102, 100 + TSN_WINDOW)
    assert guard.admit(data, FakeReceiver()) is data


def test_data_past_the_window_is_cut_out_and_the_rest_kept() -> None:
    guard = ReceiveGuard()
    sack = Chunk(SACK, 0, b"\x00" * 12)
    admitted = guard.admit(packet(101, 101 + TSN_WINDOW, extra=(sack,)), FakeReceiver())
    assert admitted is not None
    kept = SctpPacket.parse(admitted).chunks  # re-serialized with a valid checksum
    assert [c.type for c in kept] == [SACK, DATA]
    assert DataChunk.parse(kept[1]).tsn == 101
    assert guard.dropped["tsn_window"] == 1
    assert guard.admit(packet(100 + TSN_WINDOW + 1), FakeReceiver()) is None


def test_window_follows_serial_arithmetic_across_the_wrap() -> None:
    guard = ReceiveGuard()
    receiver = FakeReceiver(cumulative_tsn=0xFFFFFFF0)
    assert guard.admit(packet(0xFFFFFFF0 + 5), receiver) is not None
    assert guard.admit(packet(0xFFFFFFF0 + TSN_WINDOW + 1), receiver) is None
    assert guard.admit(packet(0xFFFFFFF0 - 3), receiver) is not None  # a duplicate: passed on


def test_data_before_the_handshake_and_garbage_are_dropped() -> None:
    guard = ReceiveGuard()
    assert guard.admit(packet(1), FakeReceiver(cumulative_tsn=None)) is None
    assert guard.admit(b"\x00" * 40, FakeReceiver()) is None
    assert guard.admit(b"\x00" * 9000, FakeReceiver()) is None
    assert guard.dropped == {"packet_size": 1, "malformed": 1, "tsn_window": 1}


def test_control_packets_pass_before_the_handshake() -> None:
    data = SctpPacket(5000, 5000, 0, (Chunk(1, 0, b"\x00" * 16),)).serialize()  # INIT
    assert ReceiveGuard().admit(data, FakeReceiver(cumulative_tsn=None)) is data


def test_held_limits_raise() -> None:
    guard = ReceiveGuard()
    guard.check(
        FakeReceiver(held_bytes=MAX_HELD_BYTES, held_chunks=MAX_HELD_CHUNKS, out_of_order=1024)
    )
    with pytest.raises(SctpViolation) as bytes_error:
        guard.check(FakeReceiver(held_bytes=MAX_HELD_BYTES + 1))
    assert bytes_error.value.limit == "held_bytes"
    with pytest.raises(SctpViolation) as chunks_error:
        guard.check(FakeReceiver(held_chunks=MAX_HELD_CHUNKS + 1))
    assert chunks_error.value.limit == "held_chunks"
    guard.check(FakeReceiver(held_chunks=MAX_HELD_CHUNKS, out_of_order=TSN_WINDOW))
    with pytest.raises(SctpViolation) as waiting_error:
        guard.check(FakeReceiver(held_chunks=MAX_REASSEMBLY_CHUNKS + 1))
    assert waiting_error.value.limit == "reassembly_chunks"


def test_wasted_data_is_counted_per_gap() -> None:
    guard = ReceiveGuard(ReceiveLimits(max_wasted_per_gap=10 * 32))
    receiver = FakeReceiver(received={102})
    for _ in range(5):
        guard.admit(packet(102, 100), receiver)  # two duplicates of 32 bytes each
    with pytest.raises(SctpViolation) as error:
        guard.admit(packet(100 + TSN_WINDOW + 1), receiver)  # one dropped: 11 x 32
    assert error.value.limit == "gap_flood"
    fresh = ReceiveGuard(ReceiveLimits(max_wasted_per_gap=10 * 32))
    for cumulative in range(100, 120):  # the gap moves: the budget starts again
        fresh.admit(packet(cumulative), FakeReceiver(cumulative_tsn=cumulative))


def test_new_streams_are_limited() -> None:
    guard = ReceiveGuard()
    receiver = FakeReceiver(streams=set(range(MAX_INBOUND_STREAMS - 1)))
    assert guard.admit(packet(101, stream=5000), receiver) is not None  # the last one allowed
    two_new = SctpPacket(
        5000,
        5000,
        7,
        (
            DataChunk(102, 6000, 0, 53, b"x").to_chunk(),
            DataChunk(103, 6001, 0, 53, b"x").to_chunk(),
        ),
    ).serialize()
    with pytest.raises(SctpViolation) as error:
        guard.admit(two_new, receiver)
    assert error.value.limit == "streams"


def test_data_without_user_data_is_a_violation() -> None:
    empty = Chunk(DATA, 3, (101).to_bytes(4, "big") + b"\x00" * 8)
    data = SctpPacket(5000, 5000, 7, (empty,)).serialize()
    with pytest.raises(SctpViolation) as error:
        ReceiveGuard().admit(data, FakeReceiver())
    assert error.value.limit == "no_user_data"


# -- attacks through the adapter, on aiortc's real association --------------------------------
async def attack(pair: SctpPair, packets: list[bytes]) -> tuple[float, int]:
    tracemalloc.start()
    base, _ = tracemalloc.get_traced_memory()
    start = time.thread_time()
    try:
        for data in packets:
            await pair.server.handle_packet(data)
            if time.thread_time() - start > ATTACK_SECONDS:
                break
        elapsed = time.thread_time() - start
        current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return elapsed, max(current, peak) - base


def aborted_to_client(pair: SctpPair) -> bool:
    return any(
        chunk.type == ABORT
        for data in pair.server_side.outbox
        for chunk in SctpPacket.parse(data).chunks
    )


async def test_tsn_gap_flood_is_bounded_then_aborted() -> None:
    """The review's repro: 16-byte DATA chunks at TSN next+1+i (never next), 40 per packet,
    ~70,000 of them (the review froze the node for ~10 s with 8,000)."""
    pair = SctpPair()
    await pair.connect()
    first = pair.cumulative_tsn + 2
    chunks = [pair.message(first + i, ssn=i + 1) for i in range(72_000)]
    packets = [pair.data_packet(chunks[i : i + 40]) for i in range(0, len(chunks), 40)]
    elapsed, held = await attack(pair, packets)
    assert elapsed < ATTACK_SECONDS
    assert held < ATTACK_MEMORY
    assert pair.server.aborted == "gap_flood"
    assert ("gap_flood", True) in pair.server_side.limits
    assert pair.server_side.limits.count(("tsn_window", False)) > 60_000
    assert aborted_to_client(pair)
    assert not pair.server.is_open("_reliable")
    assert pair.server.send("_reliable", b"after") is False


async def test_endless_fragmented_message_is_aborted() -> None:
    """One message that never ends: contiguous TSNs, no E flag, 1,000-byte fragments."""
    pair = SctpPair()
    await pair.connect()
    tsn = pair.cumulative_tsn + 1
    chunks = [pair.message(tsn, payload=b"f" * 1000, flags=0x02)]
    chunks += [pair.message(tsn + i, payload=b"f" * 1000, flags=0) for i in range(1, 4000)]
    packets = [pair.data_packet(chunks[i : i + 4]) for i in range(0, len(chunks), 4)]
    elapsed, held = await attack(pair, packets)
    assert elapsed < ATTACK_SECONDS
    assert held < ATTACK_MEMORY
    assert pair.server.aborted == "reassembly_chunks"
    assert aborted_to_client(pair)


async def test_large_chunks_past_a_gap_are_aborted_on_held_bytes() -> None:
    """Out-of-order data past the advertised receive window (7,000-byte chunks)."""
    pair = SctpPair()
    await pair.connect()
    first = pair.cumulative_tsn + 2
    chunks = [pair.message(first + i, ssn=i + 2, payload=b"b" * 7000) for i in range(400)]
    elapsed, held = await attack(pair, [pair.data_packet([chunk]) for chunk in chunks])
    assert elapsed < ATTACK_SECONDS
    assert held < ATTACK_MEMORY
    assert pair.server.aborted == "held_bytes"


async def test_tiny_fragments_are_aborted() -> None:
    """Unordered middle fragments (no B flag: never deliverable) cost aiortc a scan each."""
    pair = SctpPair()
    await pair.connect()
    tsn = pair.cumulative_tsn + 1
    chunks = [pair.message(tsn + i, payload=b"f", flags=0x04) for i in range(20_000)]
    packets = [pair.data_packet(chunks[i : i + 40]) for i in range(0, len(chunks), 40)]
    elapsed, held = await attack(pair, packets)
    assert elapsed < ATTACK_SECONDS
    assert held < ATTACK_MEMORY
    assert pair.server.aborted == "reassembly_chunks"


async def test_ssn_blocked_messages_are_aborted_on_held_chunks() -> None:
    """Ordered messages that wait for a stream sequence number that never comes."""
    pair = SctpPair()
    await pair.connect()
    tsn = pair.cumulative_tsn + 1
    chunks = [pair.message(tsn + i, ssn=i + 5) for i in range(20_000)]
    packets = [pair.data_packet(chunks[i : i + 40]) for i in range(0, len(chunks), 40)]
    elapsed, _ = await attack(pair, packets)
    assert elapsed < ATTACK_SECONDS
    assert pair.server.aborted == "reassembly_chunks"


async def test_many_streams_are_aborted() -> None:
    pair = SctpPair()
    await pair.connect()
    tsn = pair.cumulative_tsn + 1
    chunks = [pair.message(tsn + i, stream=100 + i) for i in range(MAX_INBOUND_STREAMS + 10)]
    for i in range(0, len(chunks), 20):
        await pair.server.handle_packet(pair.data_packet(chunks[i : i + 20]))
    assert pair.server.aborted == "streams"
    assert len(pair.server._sctp._inbound_streams) <= MAX_INBOUND_STREAMS


# -- well-behaved peers are unaffected ----------------------------------------------------------
async def test_out_of_order_within_the_window_is_delivered_in_order() -> None:
    pair = SctpPair()
    await pair.connect()
    tsn = pair.cumulative_tsn + 1
    chunks = [pair.message(tsn + i, ssn=i, payload=b"%d" % i) for i in range(TSN_WINDOW)]
    for i in range(40, len(chunks), 40):  # the first packet is "lost"...
        await pair.server.handle_packet(pair.data_packet(chunks[i : i + 40]))
    assert pair.server_side.messages == []
    await pair.server.handle_packet(pair.data_packet(chunks[:40]))  # ...then retransmitted
    assert [data for _, data in pair.server_side.messages] == [b"%d" % i for i in range(1024)]
    assert pair.server.aborted is None
    assert pair.server_side.limits == []


async def test_real_client_messages_flow_both_ways() -> None:
    pair = SctpPair()
    await pair.connect()
    for i in range(300):
        pair.client.send("_reliable", b"up %d" % i)
        pair.server.send("_reliable", b"down %d" % i)
    pair.client.send("_reliable", b"m" * 200_000)  # fragmented into ~170 chunks
    for _ in range(50):
        await pair.exchange()
        if len(pair.server_side.messages) == 301 and len(pair.client_side.messages) == 300:
            break
    assert [data for _, data in pair.server_side.messages[:300]] == [
        b"up %d" % i for i in range(300)
    ]
    assert pair.server_side.messages[300] == ("_reliable", b"m" * 200_000)
    assert len(pair.client_side.messages) == 300
    assert pair.server_side.limits == [] and pair.client_side.limits == []
