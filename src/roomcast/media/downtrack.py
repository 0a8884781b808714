"""Send side of the plane: one `DownTrack` per (published track, subscriber).

Each forwarded packet is rewritten for the subscriber (RFC 3550 §5.1 fields, RFC 8285
extensions by URI, VP8 picture ids per RFC 7741 §4.2) so that the subscriber sees one
continuous stream with our SSRC, whatever layer switches, pauses and mutes happen upstream.

Rebasing works in *epochs*: at the first packet of an epoch (first packet ever, a layer
switch, a resume) the offsets are fixed so that the sequence number continues at last+1, the
timestamp advances by the elapsed wall time and the VP8 picture id/TL0PICIDX continue; inside
an epoch every packet is `value + offset`.
"""

from __future__ import annotations

import random
import struct
from collections.abc import Callable

from .codecs import vp8_write_picture_id
from .rtcp import ReportBlock, build_sr
from .rtp import ExtensionRewriter
from .track_sender import PacketInfo
from .uptrack import UpTrack

_FIXED_HEADER = struct.Struct("!BBHII")  # RFC 3550 §5.1: V/P/X/CC, M/PT, seq, ts, ssrc


# How far behind the newest forwarded packet the epoch's start is kept: a packet further back
# counts as sent before the epoch. Half the sequence space or more and every new packet would
# count so: a stream stopped for good after 32,768 packets (~6 min of 640x360 video).
EPOCH_SPAN = 0x4000

# Retransmissions allowed per downtrack: a sustained rate and a burst (NACK-storm guard).
NACK_RATE = 400.0  # packets per second
NACK_BURST = 200.0


class DownTrack:
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
        self.uptrack = uptrack
        self.track_sid = uptrack.track_sid
        self.subscriber = subscriber
        self.kind = uptrack.kind
        self.ssrc = ssrc
        self.send_rtp = send_rtp
        self.send_rtcp = send_rtcp
        lowered = {mime.lower(): pt for mime, pt in codecs.items()}
        # Publisher PT -> subscriber PT for the same mime; -1: not negotiated, dropped.
        self.pt_map = [-1] * 128
        for pt, mime in uptrack.mime_by_pt.items():
            sub_pt = lowered.get(mime, -1)
            self.pt_map[pt] = sub_pt if 0 <= sub_pt < 128 else -1
        self.rewriter: ExtensionRewriter = uptrack.rewriter(extensions, strip_trailer=strip_trailer)
        self.wanted: int | None = len(uptrack.layers) - 1  # highest layer until told otherwise
        self.target: int | None = None
        self.current: int | None = None  # layer being forwarded; None = waiting / paused
        self.muted = False
        # Rewrite state.
        self.started = False
        self.seq_offset = 0
        self.ts_offset = 0
        self.picture_id_offset = 0
        self.tl0_offset = 0
        # Publisher sequence number of the epoch's first packet, or EPOCH_SPAN before the
        # newest one forwarded, whichever is later.
        self.epoch_seq = 0
        self.epoch_layer = 0
        self.max_seq = 0  # newest publisher sequence number forwarded in this epoch
        self.last_seq = 0  # subscriber-side values of that packet
        self.last_ts = 0
        self.last_picture_id = -1
        self.last_tl0 = -1
        self.last_time = 0.0
        # Stats.
        self.packets_sent = 0
        self.bytes_sent = 0
        self.payload_octets = 0  # RFC 3550 §6.4.1 sender's octet count
        self.nacks = 0  # sequence numbers NACKed by the subscriber
        self.nacks_dropped = 0  # NACKed sequences refused by the storm guard
        self._nack_tokens = float(NACK_BURST)
        self._nack_refill = 0.0
        self.retransmits = 0
        self.plis = 0  # PLI/FIR received from the subscriber
        self.fraction_lost = 0  # from the subscriber's receiver reports
        self.packets_lost = 0
        self.jitter = 0
        self.rtt: float | None = None
        self.remb_bitrate: int | None = None
        self.sr_sent: list[tuple[int, float]] = []  # (NTP middle 32 bits, local time) of our SRs

    # -- hot path ----------------------------------------------------------------------------
    def forward(self, p: PacketInfo) -> None:
        if p.layer != self.current:
            if p.layer != self.target or not p.keyframe or self.muted:
                return
            self._start_epoch(p)
        elif (p.sequence - self.epoch_seq) & 0xFFFF >= 0x8000:
            return  # older than the epoch start (late packet from before a switch)
        pt = self.pt_map[p.payload_type]
        if pt < 0:
            return
        rewriter = self.rewriter
        if rewriter.stamp != p.stamp:  # once per packet per extension mapping, not per subscriber
            rewriter.first_byte, rewriter.tail, rewriter.payload_offset = rewriter.rewrite(
                p.packet, p.header
            )
            rewriter.stamp = p.stamp
        seq = (p.sequence + self.seq_offset) & 0xFFFF
        ts = (p.timestamp + self.ts_offset) & 0xFFFFFFFF
        data = _FIXED_HEADER.pack(rewriter.first_byte, p.marker | pt, seq, ts, self.ssrc)
        data += rewriter.tail
        if (self.picture_id_offset or self.tl0_offset) and p.vp8.header_size:
            data = self._munge_vp8(data, p, rewriter.payload_offset)
        self.send_rtp(data)
        self.packets_sent += 1
        size = len(data)
        self.bytes_sent += size
        self.payload_octets += size - rewriter.payload_offset - p.header.padding
        if (p.sequence - self.max_seq) & 0xFFFF < 0x8000:  # newest so far
            self.max_seq = p.sequence
            if (p.sequence - self.epoch_seq) & 0xFFFF > EPOCH_SPAN:
                self.epoch_seq = (p.sequence - EPOCH_SPAN) & 0xFFFF
            self.last_seq = seq
            self.last_ts = ts
            self.last_time = p.now
            vp8 = p.vp8
            if vp8.picture_id_size:
                self.last_picture_id = (vp8.picture_id + self.picture_id_offset) & 0x7FFF
            if vp8.tl0picidx >= 0:
                self.last_tl0 = (vp8.tl0picidx + self.tl0_offset) & 0xFF

    def _rewrite(self, p: PacketInfo, pt: int) -> bytes:
        """`forward`'s rewrite without its bookkeeping (NACK retransmissions)."""
        rewriter = self.rewriter
        if rewriter.stamp != p.stamp:
            rewriter.first_byte, rewriter.tail, rewriter.payload_offset = rewriter.rewrite(
                p.packet, p.header
            )
            rewriter.stamp = p.stamp
        seq = (p.sequence + self.seq_offset) & 0xFFFF
        ts = (p.timestamp + self.ts_offset) & 0xFFFFFFFF
        data = _FIXED_HEADER.pack(rewriter.first_byte, p.marker | pt, seq, ts, self.ssrc)
        data += rewriter.tail
        if (self.picture_id_offset or self.tl0_offset) and p.vp8.header_size:
            data = self._munge_vp8(data, p, rewriter.payload_offset)
        return data

    def _munge_vp8(self, data: bytes, p: PacketInfo, payload_offset: int) -> bytes:
        """RFC 7741 §4.2: keep PictureID and TL0PICIDX continuous across epochs."""
        vp8 = p.vp8
        shift = payload_offset - p.header.payload_offset
        out = bytearray(data)
        if vp8.picture_id_size:
            vp8_write_picture_id(
                out,
                vp8.picture_id_offset + shift,
                vp8.picture_id_size,
                vp8.picture_id + self.picture_id_offset,
            )
        if vp8.tl0picidx >= 0:
            out[vp8.tl0picidx_offset + shift] = (vp8.tl0picidx + self.tl0_offset) & 0xFF
        return bytes(out)

    def _start_epoch(self, p: PacketInfo) -> None:
        vp8 = p.vp8
        if not self.started:  # RFC 3550 §5.1: random initial sequence number and timestamp
            self.started = True
            seq = random.getrandbits(16)
            ts = random.getrandbits(32)
            self.picture_id_offset = self.tl0_offset = 0
        else:
            seq = self.last_seq + 1
            elapsed = max(0.0, p.now - self.last_time)
            ts = self.last_ts + max(1, round(elapsed * p.clock_rate))
            if vp8.picture_id_size and self.last_picture_id >= 0:
                self.picture_id_offset = (self.last_picture_id + 1 - vp8.picture_id) & 0x7FFF
            if vp8.tl0picidx >= 0 and self.last_tl0 >= 0:
                self.tl0_offset = (self.last_tl0 + 1 - vp8.tl0picidx) & 0xFF
        self.seq_offset = (seq - p.sequence) & 0xFFFF
        self.ts_offset = (ts - p.timestamp) & 0xFFFFFFFF
        self.epoch_seq = self.max_seq = p.sequence
        self.current = self.epoch_layer = p.layer

    # -- control -----------------------------------------------------------------------------
    def set_target_layer(self, index: int | None, fps: float = 0.0) -> None:
        """The layer the subscriber wants (None = paused). The layer actually forwarded is the
        best live one ≤ index; a switch happens on a keyframe of that layer. (`fps` picks
        temporal layers of SVC streams only: svc_downtrack.py.)"""
        self.wanted = index
        self.set_target(self.uptrack.best_layer(index, self.uptrack.clock()))

    def set_target(self, layer: int | None) -> None:
        if layer == self.target:
            return
        self.target = layer
        if layer is None:
            self.current = None  # pause now; resume continues seq/ts
        elif layer != self.current and not self.muted:
            self.uptrack.request_keyframe(layer)

    def set_muted(self, muted: bool) -> None:
        """Muted: forward nothing. Unmuted: resume on the next keyframe with continuous seq/ts."""
        if muted == self.muted:
            return
        self.muted = muted
        if muted:
            self.current = None
        else:
            self.restart()

    def restart(self) -> None:
        """Start a new epoch at the next keyframe of the target layer, and ask for one."""
        self.current = None
        if self.target is not None and not self.muted:
            self.uptrack.request_keyframe(self.target)

    def waiting_for_keyframe(self) -> bool:
        return not self.muted and self.target is not None and self.current != self.target

    def request_keyframe(self) -> None:
        """The subscriber sent PLI/FIR: ask the publisher for a keyframe of what we forward."""
        self.plis += 1
        layer = self.current if self.current is not None else self.target
        if layer is not None:
            self.uptrack.request_keyframe(layer)

    # -- RTCP --------------------------------------------------------------------------------
    def retransmit(self, sequences: list[int], now: float) -> None:
        """RFC 4585 §6.2.1 NACK: resend cached packets of the current epoch, rewritten."""
        self.nacks += len(sequences)
        if self.current is None:
            return
        # NACK-storm guard: a token bucket of retransmissions per downtrack, so a hostile or
        # broken subscriber cannot turn us into an amplifier.
        self._nack_tokens = min(
            NACK_BURST, self._nack_tokens + (now - self._nack_refill) * NACK_RATE
        )
        self._nack_refill = now
        for out_seq in sequences:
            if self._nack_tokens < 1:
                self.nacks_dropped += 1
                continue
            seq = (out_seq - self.seq_offset) & 0xFFFF
            if (seq - self.epoch_seq) & 0xFFFF >= 0x8000 or (self.max_seq - seq) & 0xFFFF >= 0x8000:
                continue  # not sent in this epoch
            info = self.uptrack.parse_cached(self.current, seq, now)
            if info is None:
                continue
            pt = self.pt_map[info.payload_type]
            if pt < 0:
                continue
            data = self._rewrite(info, pt)
            self._nack_tokens -= 1
            self.retransmits += 1
            self.send_rtp(data)

    def on_receiver_report(self, block: ReportBlock, now: float) -> None:
        """RFC 3550 §6.4.1: loss, jitter; RTT = now - LSR - DLSR when LSR is one of our SRs."""
        self.fraction_lost = block.fraction_lost
        self.packets_lost = block.packets_lost
        self.jitter = block.jitter
        if block.lsr:
            for middle, sent_at in self.sr_sent:
                if middle == block.lsr:
                    self.rtt = max(0.0, now - sent_at - block.dlsr / 65536)
                    break

    def sender_report(self, now: float, ntp_now: int) -> bytes | None:
        """RFC 3550 §6.4.1 SR in our timestamp domain. With the publisher's SR for the layer,
        keep its NTP timeline (A/V sync between a publisher's tracks); else use ours."""
        if not self.packets_sent:
            return None
        layer = self.uptrack.layers[self.epoch_layer]
        rate = self.uptrack.clock_rate
        if layer.sr_arrival is not None:
            since = now - layer.sr_arrival
            ntp = layer.sr_ntp + int(since * (1 << 32))
            rtp = layer.sr_rtp + self.ts_offset + int(since * rate)
        else:
            ntp = ntp_now
            rtp = self.last_ts + int((now - self.last_time) * rate)
        self.sr_sent = [*self.sr_sent[-3:], ((ntp >> 16) & 0xFFFFFFFF, now)]
        return build_sr(self.ssrc, ntp, rtp, self.packets_sent, self.payload_octets)
