"""Synthetic media for load tests: opus and VP8 (simulcast) RTP senders, and receive stats.

Senders build RFC 3550 packets with the header extensions a browser sends (sdes:mid and
rtp-stream-id so an SFU can learn SSRCs, RFC 8843 §15 / RFC 8852; audio level, RFC 6464),
answer NACKs from a send cache (RFC 4585 §6.2.1), send a keyframe on PLI/FIR, and send
sender reports (RFC 3550 §6.4.1). VP8 frames are real bitstreams (see vp8.py) with the
RFC 7741 payload descriptor. Everything is driven by `tick(now)` from one scheduler, so a
process with hundreds of senders wakes up once per tick, not once per packet.
"""

from __future__ import annotations

import math
import random
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass

from roomcast.media.rtcp import Fir, Nack, Pli, ReceiverReport, RtcpError, build_sr, parse_rtcp
from roomcast.media.rtp import build_extension_block

from . import vp8

OPUS_PT = 111
VP8_PT = 96
EXT_AUDIO_LEVEL = 1
EXT_MID = 4
EXT_RID = 10
MAX_VP8_CHUNK = 1100  # VP8 bytes per packet: RTP + SRTP stay well under a 1200-byte MTU
CACHE_SIZE = 512  # packets kept per SSRC for NACKs (power of two)
SR_INTERVAL = 1.0  # s between sender reports
KEYFRAME_MIN_GAP = 0.2  # s: PLI/FIR storms produce at most one keyframe per gap
NTP_EPOCH = 2208988800  # seconds from 1900 (NTP) to 1970 (Unix)
_HEADER = struct.Struct("!BBHII")
_VP8_DESCRIPTOR = struct.Struct("!BBH")  # RFC 7741 §4.2: X|S, I, M + 15-bit picture id

SendPacket = Callable[[bytes], None]


@dataclass(frozen=True, slots=True)
class VideoLayer:
    rid: str  # "q", "h", "f" (LiveKit's simulcast rids, low → high)
    width: int
    height: int
    bitrate: int  # bits per second
    fps: int = 30


# lk load-test's --video-resolution, as LiveKit's JS presets (h720/h540/h360 simulcast).
RESOLUTIONS: dict[str, tuple[VideoLayer, ...]] = {
    "high": (
        VideoLayer("q", 320, 180, 160_000, 15),
        VideoLayer("h", 640, 360, 450_000),
        VideoLayer("f", 1280, 720, 1_700_000),
    ),
    "medium": (
        VideoLayer("q", 240, 135, 100_000, 15),
        VideoLayer("h", 480, 270, 300_000),
        VideoLayer("f", 960, 540, 800_000),
    ),
    "low": (
        VideoLayer("q", 160, 90, 60_000, 15),
        VideoLayer("h", 320, 180, 160_000),
        VideoLayer("f", 640, 360, 450_000),
    ),
}


def random_ssrc() -> int:
    return random.getrandbits(32) or 1


class RtpStream:
    """One outgoing SSRC: sequence numbers, timestamps, counters, the NACK cache."""

    __slots__ = (
        "announce",
        "cache",
        "clock_rate",
        "extensions",
        "last_rtp",
        "last_wall",
        "octets",
        "packets",
        "payload_type",
        "resent",
        "seq",
        "ssrc",
        "timestamp",
    )

    def __init__(
        self, payload_type: int, clock_rate: int, extensions: list[tuple[int, bytes]]
    ) -> None:
        self.ssrc = random_ssrc()
        self.payload_type = payload_type
        self.clock_rate = clock_rate
        self.seq = random.getrandbits(16)
        self.timestamp = random.getrandbits(32)
        # Like Chrome: mid/rid until the receiver's first report names this SSRC
        # (docs/protocol/16-media-interop.md §6).
        self.extensions = build_extension_block(extensions)
        self.announce = True
        self.cache: list[bytes | None] = [None] * CACHE_SIZE
        self.packets = 0
        self.octets = 0
        self.resent = 0
        self.last_rtp = self.timestamp
        self.last_wall = 0.0

    def packet(self, payload: bytes, marker: bool, extra: bytes = b"") -> bytes:
        """Build, count and cache one packet; `extra` is an extension block replacing ours."""
        block = extra or (self.extensions if self.announce else b"")
        seq = self.seq
        b0 = 0x90 if block else 0x80
        header = _HEADER.pack(
            b0, self.payload_type | (0x80 if marker else 0), seq, self.timestamp, self.ssrc
        )
        packet = header + block + payload
        self.cache[seq & (CACHE_SIZE - 1)] = packet
        self.seq = (seq + 1) & 0xFFFF
        self.packets += 1
        self.octets += len(payload)
        self.last_rtp = self.timestamp
        return packet

    def cached(self, seq: int) -> bytes | None:
        packet = self.cache[seq & (CACHE_SIZE - 1)]
        if packet is None or (packet[2] << 8 | packet[3]) != seq:
            return None
        return packet

    def sender_report(self, wall: float) -> bytes:
        """RFC 3550 §6.4.1: NTP now, the RTP time of now extrapolated from the last packet."""
        ntp = int((wall + NTP_EPOCH) * (1 << 32))
        rtp = self.last_rtp + int((wall - self.last_wall) * self.clock_rate)
        return build_sr(self.ssrc, ntp, rtp, self.packets, self.octets)


class Sender:
    """Common part of audio and video senders: the RTCP a publisher answers and sends."""

    kind = ""

    def __init__(self, send_rtp: SendPacket, send_rtcp: SendPacket) -> None:
        self.send_rtp = send_rtp
        self.send_rtcp = send_rtcp
        self.streams: list[RtpStream] = []
        self.next_due = 0.0
        self.next_sr = 0.0
        self.nacks = 0
        self.keyframe_requests = 0

    def tick(self, now: float) -> None:
        raise NotImplementedError

    def request_keyframe(self, stream: RtpStream) -> None:
        """Send a keyframe on this stream next (video only)."""

    def send_reports(self, now: float) -> None:
        if now >= self.next_sr:
            self.next_sr = now + SR_INTERVAL
            wall = time.time()
            for stream in self.streams:
                if stream.packets:
                    self.send_rtcp(stream.sender_report(wall))

    def handle_rtcp(self, data: bytes) -> None:
        """NACK → retransmit from the cache, PLI/FIR → keyframe, RR → stop sending mid/rid."""
        try:
            packets = parse_rtcp(data)
        except RtcpError:
            return
        by_ssrc = {s.ssrc: s for s in self.streams}
        for packet in packets:
            if isinstance(packet, Nack):
                stream = by_ssrc.get(packet.media_ssrc)
                if stream is None:
                    continue
                self.nacks += 1
                for seq in packet.lost:
                    cached = stream.cached(seq)
                    if cached is not None:
                        stream.resent += 1
                        self.send_rtp(cached)
            elif isinstance(packet, Pli):
                stream = by_ssrc.get(packet.media_ssrc)
                if stream is not None:
                    self.request_keyframe(stream)
            elif isinstance(packet, Fir):
                for ssrc, _ in packet.entries:
                    if ssrc in by_ssrc:
                        self.request_keyframe(by_ssrc[ssrc])
            elif isinstance(packet, ReceiverReport):
                for block in packet.reports:
                    stream = by_ssrc.get(block.ssrc)
                    if stream is not None:
                        stream.announce = False


class AudioSender(Sender):
    """Opus, 20 ms packets of a few dozen bytes (RFC 7587), optional RFC 6464 levels."""

    kind = "audio"
    FRAME = 0.02
    SAMPLES = 960  # 20 ms at 48 kHz

    def __init__(
        self,
        send_rtp: SendPacket,
        send_rtcp: SendPacket,
        *,
        mid: str,
        simulate_speaker: bool = False,
        payload_size: int = 40,
        payloads: list[bytes] | None = None,
        level: int | None = None,
    ) -> None:
        """``payloads``: real opus packets of 20 ms to send in a loop (client/tone_opus.py)
        instead of noise; ``level``: an RFC 6464 level (dBov below 0) sent with every packet
        (voice activity on) when not ``simulate_speaker``."""
        super().__init__(send_rtp, send_rtcp)
        self.mid = mid
        self.simulate_speaker = simulate_speaker
        self.level = level
        extensions = [(EXT_MID, mid.encode())]
        self.stream = RtpStream(OPUS_PT, 48000, extensions)
        self.streams = [self.stream]
        # RFC 6716 §3.1 TOC: config 31 (CELT fullband 20 ms), mono, one frame per packet.
        toc = bytes([31 << 3])
        self._payloads = payloads or [toc + random.randbytes(payload_size - 1) for _ in range(16)]
        self._index = 0
        self._speaking = False
        self._switch_at = 0.0
        self._level_blocks: dict[tuple[bool, int], bytes] = {}

    def tick(self, now: float) -> None:
        if self.next_due == 0.0:
            self.next_due = now
        while now >= self.next_due:
            self._send_one(self.next_due)
            self.next_due += self.FRAME
        self.send_reports(now)

    def _send_one(self, now: float) -> None:
        stream = self.stream
        extra = b""
        if self.simulate_speaker:
            if now >= self._switch_at:
                # Talk for 1-4 s, then listen for 2-8 s: speaker changes every few seconds
                # in a room of several audio publishers.
                self._speaking = not self._speaking
                self._switch_at = now + (
                    random.uniform(1, 4) if self._speaking else random.uniform(2, 8)
                )
            level = random.randint(20, 35) if self._speaking else 127
            extra = self._level_block(stream.announce, level)
        elif self.level is not None:
            extra = self._level_block(stream.announce, self.level)
        payload = self._payloads[self._index]
        self._index = (self._index + 1) % len(self._payloads)
        stream.last_wall = time.time()
        self.send_rtp(stream.packet(payload, False, extra))
        stream.timestamp = (stream.timestamp + self.SAMPLES) & 0xFFFFFFFF

    def _level_block(self, announce: bool, level: int) -> bytes:
        key = (announce, level)
        block = self._level_blocks.get(key)
        if block is None:
            voice = 0x80 if level < 127 else 0  # RFC 6464 §3: V bit
            elements = [(EXT_AUDIO_LEVEL, bytes([voice | level]))]
            if announce:
                elements.append((EXT_MID, self.mid.encode()))
            block = self._level_blocks[key] = build_extension_block(elements)
        return block


class VideoSender(Sender):
    """VP8, one stream per simulcast layer (rids q/h/f, like Chrome) or a single stream."""

    kind = "video"

    def __init__(
        self,
        send_rtp: SendPacket,
        send_rtcp: SendPacket,
        *,
        mid: str,
        layers: tuple[VideoLayer, ...],
        simulcast: bool,
        keyframe_interval: float = 3.0,
    ) -> None:
        super().__init__(send_rtp, send_rtcp)
        self.layers = layers
        self.keyframe_interval = keyframe_interval
        self.layer_state: list[LayerState] = []
        for layer in layers:
            extensions = [(EXT_MID, mid.encode())]
            if simulcast:
                extensions.append((EXT_RID, layer.rid.encode()))
            stream = RtpStream(VP8_PT, 90000, extensions)
            self.layer_state.append(LayerState(layer, stream))
            self.streams.append(stream)

    def tick(self, now: float) -> None:
        for state in self.layer_state:
            if state.next_frame == 0.0:
                state.next_frame = now
                state.next_keyframe = now  # the first frame of every layer is a keyframe
            while now >= state.next_frame:
                key = state.force_key or now >= state.next_keyframe
                if key:
                    state.force_key = False
                    state.last_key = now
                    state.next_keyframe = now + self.keyframe_interval
                self._send_frame(state, key)
                state.next_frame += 1 / state.layer.fps
        self.send_reports(now)

    def request_keyframe(self, stream: RtpStream) -> None:
        self.keyframe_requests += 1
        for state in self.layer_state:
            if state.stream is stream and time.monotonic() - state.last_key >= KEYFRAME_MIN_GAP:
                state.force_key = True

    def frame_data(self, state: LayerState, key: bool) -> bytes:
        """The next VP8 frame of a layer: flat grey, padded to the layer's bitrate."""
        layer = state.layer
        size = state.frame_bytes * (3 if key else 1)
        data = state.frames.get((key, size))
        if data is None:
            data = state.frames[(key, size)] = vp8.frame(
                layer.width, layer.height, key=key, size=size
            )
        return data

    def _send_frame(self, state: LayerState, key: bool) -> None:
        layer, stream = state.layer, state.stream
        data = self.frame_data(state, key)
        chunks = max(1, math.ceil(len(data) / MAX_VP8_CHUNK))
        picture_id = state.picture_id
        stream.last_wall = time.time()
        send = self.send_rtp
        for i in range(chunks):
            chunk = data[i * MAX_VP8_CHUNK : (i + 1) * MAX_VP8_CHUNK]
            # X=1, S=1 on the frame's first packet, PID 0; I=1; M=1 for a 15-bit picture id.
            descriptor = _VP8_DESCRIPTOR.pack(0x90 if i == 0 else 0x80, 0x80, 0x8000 | picture_id)
            send(stream.packet(descriptor + chunk, i == chunks - 1))
        state.picture_id = (picture_id + 1) & 0x7FFF
        stream.timestamp = (stream.timestamp + 90000 // layer.fps) & 0xFFFFFFFF


class LayerState:
    __slots__ = (
        "force_key",
        "frame_bytes",
        "frames",
        "last_key",
        "layer",
        "next_frame",
        "next_keyframe",
        "picture_id",
        "stream",
    )

    def __init__(self, layer: VideoLayer, stream: RtpStream) -> None:
        self.layer = layer
        self.stream = stream
        self.frame_bytes = max(1, layer.bitrate // 8 // layer.fps)
        self.frames: dict[tuple[bool, int], bytes] = {}
        self.picture_id = random.getrandbits(15)
        self.next_frame = 0.0
        self.next_keyframe = 0.0
        self.last_key = -math.inf
        self.force_key = False


class ReceiveStats:
    """Per-SSRC receive counters for loss from sequence gaps (RFC 3550 §A.3)."""

    __slots__ = ("base", "bytes", "cycles", "first_at", "max_seq", "packets", "ssrc")

    def __init__(self, ssrc: int, seq: int, now: float) -> None:
        self.ssrc = ssrc
        self.base = seq
        self.max_seq = seq
        self.cycles = 0
        self.packets = 0
        self.bytes = 0
        self.first_at = now

    def on_packet(self, seq: int, size: int) -> int:
        """Count a packet; returns how many sequence numbers it skipped (0 in order)."""
        self.packets += 1
        self.bytes += size
        delta = (seq - self.max_seq) & 0xFFFF
        if 0 < delta < 0x8000:
            if seq < self.max_seq:
                self.cycles += 0x10000
            self.max_seq = seq
            return delta - 1
        return 0

    @property
    def expected(self) -> int:
        return self.cycles + self.max_seq - self.base + 1

    @property
    def lost(self) -> int:
        return max(0, self.expected - self.packets)
