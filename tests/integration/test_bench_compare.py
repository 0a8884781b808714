"""Smoke runs of bench/compare.py: each relay forwards the synthetic VP8 stream to two
subscribers for ~2 s at a low rate, with nothing lost. Correctness only, never timing."""

from __future__ import annotations

import argparse
import itertools
from pathlib import Path

import pytest
from bench.compare import run_one
from bench.relays import c as c_relay
from bench.relays import janus as janus_relay
from bench.vp8_source import Vp8RtpSource, vp8_frames

from roomcast.media.native_plane import native_module

pytestmark = pytest.mark.media

FANOUT = 2


def _args() -> argparse.Namespace:
    return argparse.Namespace(rate=120.0, duration=2.0, warmup=15.0, profile=None)


def test_padded_vp8_frames_decode_like_the_originals() -> None:
    """vp8_source pads frames to whole packets; libvpx must ignore the padding."""
    import av

    plain, padded = av.CodecContext.create("libvpx", "r"), av.CodecContext.create("libvpx", "r")
    source = Vp8RtpSource(1, rate=100)
    for data, _ in vp8_frames()[:30]:
        extra = bytes(-len(data) % source.chunk)
        a = plain.decode(av.Packet(data))
        b = padded.decode(av.Packet(data + extra))
        assert len(a) == len(b) == 1
        assert (a[0].to_ndarray() == b[0].to_ndarray()).all()


def test_source_packets_are_fixed_size_rtp_vp8() -> None:
    source = Vp8RtpSource(0xABCD, rate=100)
    packets = [source.next_packet() for _ in range(200)]
    assert {len(p) for p in packets} == {1100}
    seqs = [p[2] << 8 | p[3] for p in packets]
    assert all((b - a) & 0xFFFF == 1 for a, b in itertools.pairwise(seqs))
    assert packets[0][12] & 0x10  # S bit: the stream starts at a frame (a keyframe)
    assert source.frames_sent >= sum(p[1] >> 7 for p in packets)


@pytest.mark.parametrize("kind", ["roomcast", "native", "c", "janus", "aiortc"])
async def test_relay_forwards_everything_at_low_rate(kind: str, tmp_path: Path) -> None:
    if kind == "native" and native_module()[0] is None:
        pytest.skip(f"the native forwarding plane is not built: {native_module()[1]}")
    if kind == "janus" and (janus_relay.unavailable() is not None):
        pytest.skip(janus_relay.unavailable())  # CI installs janus and runs as root
    result = await run_one(kind, FANOUT, _args(), tmp_path)
    if kind == "c" and result.error in (c_relay.MISSING_GCC, c_relay.MISSING_LIBSRTP):
        pytest.skip(result.error)  # CI installs both (scripts/install-test-deps.sh)
    assert result.error is None, result.error
    assert 240 <= result.sent < 240 + 40  # 2 s at 120/s, then to the end of a frame
    assert result.frames_sent > 0
    if kind == "aiortc":  # re-encoded: every frame reaches every subscriber
        assert result.frames_received == result.frames_sent * FANOUT, result.notes
    else:  # forwarded as is: every packet, at its size
        assert result.received == result.sent * FANOUT, result.notes
        assert result.frames_received == result.frames_sent * FANOUT
    assert result.loss == 0
    assert result.cpu >= 0  # measured (the C relay can round to 0 ticks at this rate)
