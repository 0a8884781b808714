"""RFC 4571 framing of ICE-TCP (media/tcp_framing.py) and the per-connection send policy."""

from __future__ import annotations

import random

import pytest

from roomcast.media.tcp_framing import (
    MAX_FRAME_SIZE,
    FrameDecoder,
    SendLimits,
    Verdict,
    frame,
)


def test_a_frame_is_a_16_bit_length_then_the_packet() -> None:
    assert frame(b"abc") == b"\x00\x03abc"
    assert frame(b"") == b"\x00\x00"
    assert frame(b"x" * MAX_FRAME_SIZE)[:2] == b"\xff\xff"
    with pytest.raises(ValueError, match="does not fit"):
        frame(b"x" * (MAX_FRAME_SIZE + 1))


def test_the_decoder_returns_packets_however_the_stream_is_cut() -> None:
    rng = random.Random(4571)
    packets = [rng.randbytes(rng.choice([0, 1, 20, 1200, 65535])) for _ in range(60)]
    stream = b"".join(frame(p) for p in packets)
    for _ in range(20):
        decoder, out, at = FrameDecoder(), [], 0
        while at < len(stream):
            step = rng.choice([1, 2, 3, 500, 70000])
            out += decoder.feed(stream[at : at + step])
            at += step
        assert out == packets
        assert decoder.pending == 0


def test_the_decoder_holds_only_the_incomplete_frame() -> None:
    decoder = FrameDecoder()
    assert decoder.feed(b"\x00\x05ab") == []
    assert decoder.pending == 4
    assert decoder.feed(b"cde\x00\x01z\x00") == [b"abcde", b"z"]
    assert decoder.pending == 1  # half of the next length
    assert decoder.feed(b"\x00") == [b""]  # a zero-length frame is a (droppable) empty packet


def test_media_is_dropped_behind_a_slow_reader_and_reliable_records_close_it() -> None:
    limits = SendLimits(media_bytes=1000, reliable_bytes=5000)
    assert limits.verdict(0, 1000, droppable=True) is Verdict.SEND
    assert limits.verdict(1, 1000, droppable=True) is Verdict.DROP
    # DTLS (and the SCTP it carries) still goes while media is being dropped …
    assert limits.verdict(3000, 1200, droppable=False) is Verdict.SEND
    # … until it no longer fits: then the connection is given up, never the record.
    assert limits.verdict(4000, 1200, droppable=False) is Verdict.CLOSE
