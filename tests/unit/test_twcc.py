"""Transport-wide congestion control feedback (draft-holmer-rmcat-transport-wide-cc-extensions-01):
the feedback codec, the publisher-side recorder, and the subscriber-side numbering."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from roomcast.media.rtcp import RtcpError, TransportCC, parse_rtcp
from roomcast.media.twcc import (
    HISTORY,
    TransportWide,
    TwccRecorder,
    build_twcc,
    parse_twcc,
)


def roundtrip(base: int, arrivals: list[int | None]) -> list[int | None]:
    packet = build_twcc(0x11, 0x22, base, 7, arrivals)
    (feedback,) = parse_rtcp(packet)
    assert isinstance(feedback, TransportCC)
    assert (feedback.sender_ssrc, feedback.media_ssrc) == (0x11, 0x22)
    parsed = parse_twcc(feedback.fci)
    assert parsed.base_sequence == base and parsed.feedback_count == 7
    assert len(packet) % 4 == 0
    return parsed.arrivals


def test_small_and_large_deltas_and_losses_survive_a_roundtrip() -> None:
    t = 10_000_000  # µs
    arrivals = [t, t + 250, None, t + 60_000, t + 60_000, None, None, t + 59_000, t + 200_000]
    assert roundtrip(65530, arrivals) == arrivals  # wraps past 65535 too


def test_run_length_chunks_for_long_runs() -> None:
    t = 5_000_000
    arrivals: list[int | None] = [t + 1000 * i for i in range(40)] + [None] * 30 + [t + 90_000]
    assert roundtrip(1, arrivals) == arrivals


def test_deltas_are_rounded_to_250_microseconds_without_drifting() -> None:
    t = 1_000_000
    arrivals: list[int | None] = [t + 333 * i for i in range(100)]
    parsed = roundtrip(0, arrivals)
    assert all(abs(a - b) <= 125 for a, b in zip(parsed, arrivals, strict=True))  # type: ignore[operator]


@settings(max_examples=200, deadline=None)
@given(
    st.integers(0, 0xFFFF),
    st.lists(st.one_of(st.none(), st.integers(0, 3_000_000)), min_size=1, max_size=300),
)
def test_any_feedback_roundtrips(base: int, offsets: list[int | None]) -> None:
    start = 100_000_000
    arrivals: list[int | None] = [start]
    for offset in offsets:
        arrivals.append(None if offset is None else start + offset)
    parsed = roundtrip(base, arrivals)
    assert [a is None for a in parsed] == [a is None for a in arrivals]
    for got, sent in zip(parsed, arrivals, strict=True):
        if sent is not None:
            assert got is not None and abs(got - sent) <= 125


@given(st.binary(max_size=80))
def test_garbage_never_raises_anything_but_rtcp_error(data: bytes) -> None:
    try:
        parse_twcc(data)
    except RtcpError:
        pass


def test_truncated_feedback_is_an_error() -> None:
    fci = parse_rtcp(build_twcc(1, 2, 0, 0, [1_000_000, 1_001_000]))[0]
    assert isinstance(fci, TransportCC)
    with pytest.raises(RtcpError):
        parse_twcc(fci.fci[:9])
    with pytest.raises(RtcpError):
        parse_twcc(b"\x00" * 7)


class Sink:
    def __init__(self) -> None:
        self.packets: list[bytes] = []

    def __call__(self, packet: bytes) -> None:
        self.packets.append(packet)

    def feedback(self) -> list[tuple[int, list[int | None]]]:
        out = []
        for packet in self.packets:
            (fb,) = parse_rtcp(packet)
            assert isinstance(fb, TransportCC)
            parsed = parse_twcc(fb.fci)
            out.append((parsed.base_sequence, parsed.arrivals))
        return out


def test_recorder_reports_every_interval_with_losses_and_counts_feedback() -> None:
    sink = Sink()
    recorder = TwccRecorder(0xAB, sink, interval=0.1)
    now = 50.0
    for seq in (100, 101, 103, 104):
        recorder.record(seq, 0x1234, now)
        now += 0.01
    assert sink.packets == []  # not due yet
    recorder.record(105, 0x1234, 50.1)
    ((base, arrivals),) = sink.feedback()
    assert base == 100
    assert [a is None for a in arrivals] == [False, False, True, False, False, False]
    assert arrivals[1] - arrivals[0] == 10_000  # type: ignore[operator]
    (fb,) = parse_rtcp(sink.packets[0])
    assert isinstance(fb, TransportCC) and fb.media_ssrc == 0x1234
    recorder.record(106, 0x1234, 50.15)
    recorder.flush(50.2)  # the media tick
    assert sink.feedback()[1][0] == 106
    assert parse_twcc(parse_rtcp(sink.packets[1])[0].fci).feedback_count == 1  # type: ignore[union-attr]


def test_recorder_unwraps_and_drops_what_it_already_reported() -> None:
    sink = Sink()
    recorder = TwccRecorder(1, sink, interval=0.1)
    recorder.record(65534, 1, 1.0)
    recorder.record(65535, 1, 1.01)
    recorder.flush(1.05)
    recorder.record(65533, 1, 1.06)  # late, from before the last report: ignored
    recorder.record(0, 1, 1.07)
    recorder.record(1, 1, 1.08)
    recorder.flush(1.2)
    assert sink.feedback() == [
        (65534, [1_000_000, 1_010_000]),
        (0, [1_070_000, 1_080_000]),
    ]


def test_recorder_splits_feedback_the_16_bit_deltas_cannot_span() -> None:
    sink = Sink()
    recorder = TwccRecorder(1, sink, interval=100.0)
    recorder.record(10, 1, 1.0)
    recorder.record(11, 1, 20.0)  # 19 s later
    recorder.flush(20.0)
    assert [base for base, _ in sink.feedback()] == [10, 11]


def test_transport_wide_numbers_unwrap_and_forget_old_packets() -> None:
    tw = TransportWide()
    tw.next = 65534
    assert [tw.take(1.0, 100), tw.take(1.1, 200), tw.take(1.2, 300)] == [65534, 65535, 0]
    assert tw.unwrap(65535) == 65535 and tw.unwrap(0) == 65536
    assert tw.lookup(65536) == (65536, 1.2, 300)
    assert tw.lookup(tw.unwrap(1)) is None  # not sent yet
    for _ in range(HISTORY):
        tw.take(2.0, 1)
    assert tw.lookup(65534) is None  # overwritten


def test_feedback_header_layout() -> None:
    packet = build_twcc(5, 6, 300, 9, [64_000 * 3 + 500])
    assert packet[0] == 0x80 | 15 and packet[1] == 205
    base, count, ref_and_count = struct.unpack_from("!HHI", packet, 12)
    assert (base, count, ref_and_count >> 8, ref_and_count & 0xFF) == (300, 1, 3, 9)
