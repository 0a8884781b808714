"""Identical synthetic video for every relay in bench/compare.py: a real VP8 bitstream (so the
aiortc relay, which decodes and re-encodes, gets frames it can decode) cut into fixed-size RTP
packets sent at a fixed packet rate.

Each frame is padded with zero bytes to a whole number of packets, so every packet is exactly
`packet_size` bytes; libvpx ignores bytes after a frame's last partition (checked by
`tests/integration/test_bench_compare.py`). Packets follow RFC 7741: a 4-byte payload
descriptor (X, S on a frame's first packet, I with a 15-bit PictureID), marker on the last.
RTP timestamps follow the packet clock, so RTP time and wall time agree at any rate.
"""

from __future__ import annotations

import fractions
import random
import struct
from functools import cache

RTP_HEADER = struct.Struct("!BBHII")
VP8_DESCRIPTOR_SIZE = 4  # X=1 | I=1 (M=1: 15-bit PictureID)
VIDEO_CLOCK = 90000
WIDTH, HEIGHT, FPS = 640, 360, 30


@cache
def vp8_frames(count: int = 300, keyframe_interval: int = 60) -> tuple[tuple[bytes, bool], ...]:
    """`count` frames of a moving pattern with a little noise, encoded by libvpx (PyAV, which
    aiortc depends on): ~2 Mbit/s at 640x360, a keyframe every `keyframe_interval` frames.
    Returns (frame, keyframe) pairs; the first frame is a keyframe, so the stream can loop."""
    import av
    import numpy as np

    encoder = av.CodecContext.create("libvpx", "w")
    encoder.width, encoder.height, encoder.pix_fmt = WIDTH, HEIGHT, "yuv420p"
    encoder.time_base = fractions.Fraction(1, FPS)
    encoder.framerate = FPS
    encoder.bit_rate = 1_700_000
    encoder.gop_size = keyframe_interval
    encoder.options = {"deadline": "realtime", "cpu-used": "8", "lag-in-frames": "0"}
    rng = np.random.default_rng(1)
    rows, cols = np.mgrid[0 : HEIGHT * 3 // 2, 0:WIDTH]
    frames: list[tuple[bytes, bool]] = []
    for index in range(count):
        image = ((((cols + 3 * index) // 8) ^ ((rows + index) // 8)) * 8) & 0xFF
        image = (image + rng.integers(0, 4, image.shape)).astype(np.uint8)
        frame = av.VideoFrame.from_ndarray(image, format="yuv420p")
        frame.pts = index
        frames.extend((bytes(p), bool(p.is_keyframe)) for p in encoder.encode(frame))
    frames.extend((bytes(p), bool(p.is_keyframe)) for p in encoder.encode(None))
    return tuple(frames)


class Vp8RtpSource:
    """Endless RTP packets of `vp8_frames()`, all exactly `packet_size` bytes."""

    def __init__(
        self,
        ssrc: int,
        *,
        rate: float,
        payload_type: int = 96,
        packet_size: int = 1100,
        frames: tuple[tuple[bytes, bool], ...] | None = None,
    ) -> None:
        self.ssrc = ssrc
        self.rate = rate
        self.payload_type = payload_type
        self.chunk = packet_size - RTP_HEADER.size - VP8_DESCRIPTOR_SIZE
        self.frames = frames if frames is not None else vp8_frames()
        self.sequence = random.getrandbits(16)
        self.packets = 0  # packets produced so far (drives the RTP clock)
        self.frames_sent = 0
        self._frame_index = 0
        self._pending: list[bytes] = []

    def next_packet(self) -> bytes:
        if not self._pending:
            self._pending = self._packetize()
        packet = self._pending.pop()
        self.packets += 1
        self.sequence = (self.sequence + 1) & 0xFFFF
        return packet

    def _packetize(self) -> list[bytes]:
        """The next frame's packets, last first (popped from the end)."""
        data, _ = self.frames[self._frame_index % len(self.frames)]
        self._frame_index += 1
        self.frames_sent += 1
        data += bytes(-len(data) % self.chunk)  # trailing bytes libvpx never reads
        picture_id = (self._frame_index - 1) & 0x7FFF
        timestamp = int(self.packets * VIDEO_CLOCK / self.rate) & 0xFFFFFFFF
        count = len(data) // self.chunk
        packets = []
        for i in range(count):
            marker = 0x80 if i == count - 1 else 0
            header = RTP_HEADER.pack(
                0x80,
                marker | self.payload_type,
                (self.sequence + i) & 0xFFFF,
                timestamp,
                self.ssrc,
            )
            # RFC 7741 §4.2: X=1, S=1 on the first packet of the frame, PID 0; I=1, M=1.
            descriptor = struct.pack("!BBH", 0x90 if i == 0 else 0x80, 0x80, 0x8000 | picture_id)
            packets.append(header + descriptor + data[i * self.chunk : (i + 1) * self.chunk])
        packets.reverse()
        return packets
