"""Send side for scalable video in one stream (VP9 SVC, AV1 with Dependency Descriptors): each
subscriber receives the spatial and temporal layers it asked for.

`SvcDownTrack` is a `DownTrack` whose packets go through a per-subscriber selector first
(`vp9.Vp9Selector`, `av1.DdSelector`): dropped packets leave no hole in the sequence numbers
(`SequenceMunger`), the marker bit moves to the end of the highest kept spatial layer, and AV1's
Dependency Descriptor is rewritten. VP8, H.264 and audio keep the plain `DownTrack`, whose
per-packet path this module does not touch.
"""

from __future__ import annotations

import random
from collections.abc import Callable

from .av1 import DdSelector
from .codecs import AV1
from .downtrack import _FIXED_HEADER, NACK_BURST, NACK_RATE, DownTrack
from .rtp import URI_DEPENDENCY_DESCRIPTOR, RtpHeader, parse_rtp
from .track_sender import PacketInfo
from .uptrack import UpTrack
from .vp9 import Vp9Selector

DEFAULT_SPATIAL = 2  # HIGH, until the subscriber says otherwise (livekit-server's default)
SENT_HISTORY = 512  # packets kept per subscriber for NACKs (power of two)


class SequenceMunger:
    """Output sequence numbers for a stream some packets of which are not sent (RFC 3550 §5.1:
    the receiver must see no gap for them). Forwarded packets are numbered one after the other;
    a gap in the input (loss, reordering) keeps its size in the output, so a late packet gets
    the number reserved for it and a lost one is NACKed as usual."""

    SIZE = 1024  # power of two
    MAX_GAP = 256  # larger jumps (a restarted sender) reserve nothing

    __slots__ = ("highest", "next_out", "reserved", "tags")

    def __init__(self) -> None:
        self.tags = [-1] * self.SIZE  # input sequence number of each reserved slot
        self.reserved = [0] * self.SIZE  # the output number reserved for it
        self.highest = 0
        self.next_out = 0

    def start(self, in_seq: int, out_seq: int) -> None:
        """`in_seq` will be numbered `out_seq` if it is sent."""
        self.highest = (in_seq - 1) & 0xFFFF
        self.next_out = out_seq & 0xFFFF
        self.tags = [-1] * self.SIZE

    def number(self, in_seq: int, send: bool) -> int:
        """The output sequence number of this input packet, or -1 when it is not sent."""
        delta = (in_seq - self.highest) & 0xFFFF
        if 0 < delta < 0x8000:  # newer than any before
            if 1 < delta <= self.MAX_GAP:
                mask = self.SIZE - 1
                for missing in range(self.highest + 1, self.highest + delta):
                    slot = missing & 0xFFFF
                    self.tags[slot & mask] = slot
                    self.reserved[slot & mask] = self.next_out
                    self.next_out = (self.next_out + 1) & 0xFFFF
            self.highest = in_seq
            if not send:
                return -1
            out = self.next_out
            self.next_out = (out + 1) & 0xFFFF
            return out
        slot = in_seq & (self.SIZE - 1)
        if self.tags[slot] != in_seq:
            return -1  # a duplicate, or older than the reservations
        self.tags[slot] = -1
        return self.reserved[slot] if send else -1


class SvcDownTrack(DownTrack):
    def __init__(
        self,
        uptrack: UpTrack,
        subscriber: str,
        *,
        ssrc: int,
        codecs: dict[str, int],
        extensions: dict[str, int],
        send_rtp: Callable[[bytes], None],
        send_rtcp: Callable[[bytes], None],
        strip_trailer: bool = False,
    ) -> None:
        super().__init__(
            uptrack,
            subscriber,
            ssrc=ssrc,
            codecs=codecs,
            extensions=extensions,
            send_rtp=send_rtp,
            send_rtcp=send_rtcp,
            strip_trailer=strip_trailer,
        )
        self.dd_selector: DdSelector | None = None
        self.vp9_selector: Vp9Selector | None = None
        self.dd_ext = 0
        selector: DdSelector | Vp9Selector
        if uptrack.svc_codec == AV1:
            self.dd_selector = selector = DdSelector()
            self.dd_ext = extensions.get(URI_DEPENDENCY_DESCRIPTOR, 0)
            # The descriptor is written per subscriber, not copied.
            self.rewriter = uptrack.rewriter(
                extensions,
                strip_trailer=strip_trailer,
                rewritten=frozenset({URI_DEPENDENCY_DESCRIPTOR}),
            )
        else:
            self.vp9_selector = selector = Vp9Selector()
        self.selector = selector
        self.wanted = DEFAULT_SPATIAL
        self.wanted_fps = 0.0
        self.munger = SequenceMunger()
        # Per number sent (slot = number mod SENT_HISTORY): the number itself, the publisher's
        # number of the packet, our timestamp, the marker and descriptor sent with it.
        self.sent_seq = [-1] * SENT_HISTORY
        self.sent_from = [0] * SENT_HISTORY
        self.sent_ts = [0] * SENT_HISTORY
        self.sent_marker = [0] * SENT_HISTORY
        self.sent_descriptor: list[bytes | None] = [None] * SENT_HISTORY
        self.dropped = 0  # packets of layers this subscriber does not receive
        self._nack_header = RtpHeader()

    # -- hot path ----------------------------------------------------------------------------
    def forward(self, p: PacketInfo) -> None:
        if self.current is None:
            if self.target is None or self.muted or not p.keyframe:
                return
            self._start_svc_epoch(p)
        pt = self.pt_map[p.payload_type]
        if pt < 0:
            return
        dd_selector = self.dd_selector
        if dd_selector is not None:
            marker = dd_selector.select(p.dd, p.marker, p.timestamp)
        else:
            assert self.vp9_selector is not None
            marker = self.vp9_selector.select(p.vp9, p.marker)
        seq = self.munger.number(p.sequence, marker >= 0)
        if seq < 0:
            self.dropped += 1
            return
        descriptor = dd_selector.descriptor_bytes(p.dd) if dd_selector and self.dd_ext else None
        first_byte, tail, payload_offset = self._tail(p, marker, descriptor)
        ts = (p.timestamp + self.ts_offset) & 0xFFFFFFFF
        data = _FIXED_HEADER.pack(first_byte, marker | pt, seq, ts, self.ssrc) + tail
        slot = seq & (SENT_HISTORY - 1)  # what NACKs need to send it again
        self.sent_seq[slot] = seq
        self.sent_from[slot] = p.sequence
        self.sent_ts[slot] = ts
        self.sent_marker[slot] = marker
        self.sent_descriptor[slot] = descriptor
        self.send_rtp(data)
        self.packets_sent += 1
        size = len(data)
        self.bytes_sent += size
        self.payload_octets += size - payload_offset - p.header.padding
        if (seq - self.last_seq) & 0xFFFF < 0x8000:  # newest so far
            self.last_seq = seq
            self.last_ts = ts
            self.last_time = p.now

    def _tail(self, p: PacketInfo, marker: int, descriptor: bytes | None) -> tuple[int, bytes, int]:
        """First byte, bytes after the fixed header and payload offset of the packet as this
        subscriber gets it, shared with the others when they get the same."""
        rewriter = self.rewriter
        if marker and not p.marker and rewriter.strip_trailer:
            # This subscriber's frame ends here: its trailer goes too (media/packet_trailer.py).
            extra = None if descriptor is None else (self.dd_ext, descriptor)
            return rewriter.rewrite(p.packet, p.header, extra, frame_end=True)
        if descriptor is not None:
            tails = p.dd.tails
            key = (rewriter.key, self.dd_ext, descriptor)
            rewritten = tails.get(key)
            if rewritten is None:  # once per packet per (mapping, descriptor)
                rewritten = tails[key] = rewriter.rewrite(
                    p.packet, p.header, (self.dd_ext, descriptor)
                )
            return rewritten
        if rewriter.stamp != p.stamp:  # once per packet per extension mapping
            rewriter.first_byte, rewriter.tail, rewriter.payload_offset = rewriter.rewrite(
                p.packet, p.header
            )
            rewriter.stamp = p.stamp
        return rewriter.first_byte, rewriter.tail, rewriter.payload_offset

    def _start_svc_epoch(self, p: PacketInfo) -> None:
        """A keyframe (re)starts the stream: sequence numbers and timestamps continue from the
        last ones sent, the selector starts over."""
        if not self.started:  # RFC 3550 §5.1: random initial sequence number and timestamp
            self.started = True
            seq = random.getrandbits(16)
            ts = random.getrandbits(32)
        else:
            seq = self.last_seq + 1
            elapsed = max(0.0, p.now - self.last_time)
            ts = self.last_ts + max(1, round(elapsed * p.clock_rate))
        self.ts_offset = (ts - p.timestamp) & 0xFFFFFFFF
        self.last_seq = (seq - 1) & 0xFFFF
        self.munger.start(p.sequence, seq)
        self.selector.reset()
        self.current = self.epoch_layer = p.layer

    # -- control -----------------------------------------------------------------------------
    def set_target_layer(self, index: int | None, fps: float = 0.0) -> None:
        """The spatial layer the subscriber wants (None = paused), and the frame rate it needs
        (0: all; UpdateTrackSettings.fps), which picks the temporal layer."""
        self.wanted = index
        self.wanted_fps = fps
        self.set_target(None if index is None else 0)

    def set_target(self, layer: int | None) -> None:
        """Stream 0 or None (paused); also re-chooses the spatial layer among those the
        publisher sends (the uptrack calls this on every tick)."""
        if layer is None:
            self.target = self.current = None
            return
        resumed = self.target is None
        self.target = 0
        going_up = self._update_selector(self.uptrack.clock())
        if (resumed or going_up) and not self.muted:
            self.uptrack.request_keyframe(0)  # starting, and some switches, wait for a keyframe

    def _update_selector(self, now: float) -> bool:
        """Point the selector at the best spatial layer ≤ wanted; True if that changed it and
        the new layer waits for a keyframe."""
        if self.wanted is None:
            return False
        layers = self.uptrack.svc
        assert layers is not None
        spatial = layers.best_spatial(self.wanted, now)
        was = self.selector.target_spatial
        self.selector.set_target(spatial, layers.temporal_for_fps(self.wanted_fps))
        return spatial != was and self.selector.needs_keyframe()

    def restart(self) -> None:
        self.current = None
        self.selector.reset()
        if self.target is not None and not self.muted:
            self.uptrack.request_keyframe(0)

    def set_muted(self, muted: bool) -> None:
        if muted == self.muted:
            return
        self.muted = muted
        if muted:
            self.current = None
        else:
            self.restart()

    def waiting_for_keyframe(self) -> bool:
        if self.muted or self.target is None:
            return False
        return self.current is None or self.selector.needs_keyframe()

    # -- RTCP --------------------------------------------------------------------------------
    def retransmit(self, sequences: list[int], now: float) -> None:
        """RFC 4585 §6.2.1 NACK: resend what we sent under those numbers."""
        self.nacks += len(sequences)
        self._nack_tokens = min(
            NACK_BURST, self._nack_tokens + (now - self._nack_refill) * NACK_RATE
        )
        self._nack_refill = now
        layer = self.uptrack.layers[0]
        for seq in sequences:
            slot = seq & (SENT_HISTORY - 1)
            if self.sent_seq[slot] != seq:
                continue
            packet = layer.cached(self.sent_from[slot])
            if packet is None:
                continue
            if self._nack_tokens < 1:
                self.nacks_dropped += 1
                continue
            header = parse_rtp(packet, self._nack_header)  # cached packets parsed before
            pt = self.pt_map[header.payload_type]
            if pt < 0:
                continue
            marker, descriptor = self.sent_marker[slot], self.sent_descriptor[slot]
            extra = None if descriptor is None else (self.dd_ext, descriptor)
            frame_end = bool(marker) if self.rewriter.strip_trailer else None
            first_byte, tail, _ = self.rewriter.rewrite(packet, header, extra, frame_end=frame_end)
            self._nack_tokens -= 1
            self.retransmits += 1
            self.send_rtp(
                _FIXED_HEADER.pack(first_byte, marker | pt, seq, self.sent_ts[slot], self.ssrc)
                + tail
            )
