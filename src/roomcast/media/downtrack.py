"""Send side of the plane: one `DownTrack` per (published track, subscriber).

Each forwarded packet is rewritten for the subscriber (RFC 3550 §5.1 fields, RFC 8285
extensions by URI, VP8 picture ids per RFC 7741 §4.2) so that the subscriber sees one
continuous stream with our SSRC, whatever layer switches, pauses and mutes happen upstream.

Rebasing works in *epochs*: at the first packet of an epoch (first packet ever, a layer
switch, a resume) the offsets are fixed so that the sequence number continues at last+1, the
timestamp advances by the elapsed wall time and the VP8 picture id/TL0PICIDX continue; inside
an epoch every packet is `value + offset`. Padding-only packets (libwebrtc pads on the media
SSRC when it has no RTX) are not forwarded: each one moves the sequence offset down by one
(`skip`), and a late packet from before it is numbered as it would have been (`_out_seq`).
"""

from __future__ import annotations

import random
import struct
from collections.abc import Callable

from .codecs import vp8_write_picture_id
from .quality import QualityScorer
from .rtcp import ReportBlock, build_sr
from .rtp import ExtensionRewriter, tw_struct
from .track_sender import PacketInfo
from .twcc import HISTORY, TransportWide
from .uptrack import UpTrack

_FIXED_HEADER = struct.Struct("!BBHII")  # RFC 3550 §5.1: V/P/X/CC, M/PT, seq, ts, ssrc
_U32 = struct.Struct("!I")
_TW_MASK = HISTORY - 1
# A padding-only packet on the RTX stream (probes): fixed header, a one-word extension block
# holding the transport-wide sequence number (RFC 8285 §4.2), the padding.
_PADDING_HEADER = struct.Struct("!BBHIIHHBHx")
PADDING_SIZE = 255  # bytes of padding in one packet (its count is one byte, RFC 3550 §5.1)
_PADDING_BODY = bytes(PADDING_SIZE - 1) + bytes([PADDING_SIZE])

ALL_LAYERS = 1 << 16  # `allowed` when the allocator holds nothing back
PAUSED = -1  # `allowed` when the allocator paused the track (media/allocator.py PAUSED)


# How far behind the newest forwarded packet the epoch's start is kept: a packet further back
# counts as sent before the epoch. Half the sequence space or more and every new packet would
# count so: a stream stopped for good after 32,768 packets (~6 min of 640x360 video).
EPOCH_SPAN = 0x4000

# Retransmissions allowed per downtrack: a sustained rate and a burst (NACK-storm guard).
NACK_RATE = 400.0  # packets per second
NACK_BURST = 200.0
MAX_SKIPS = 64  # padding packets remembered per epoch (to number late packets before them)


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
        rtx: dict[int, int] | None = None,
        rtx_ssrc: int = 0,
        transport_wide: TransportWide | None = None,
    ) -> None:
        self.uptrack = uptrack
        self.track_sid = uptrack.track_sid
        self.subscriber = subscriber
        self.kind = uptrack.kind
        self.ssrc = ssrc
        self.send_rtp = send_rtp
        self.send_rtcp = send_rtcp
        lowered = {mime.lower(): pt for mime, pt in codecs.items()}
        self.pt_map = [-1] * 128  # publisher PT -> subscriber PT of its mime; -1: dropped
        for pt, mime in uptrack.mime_by_pt.items():
            sub_pt = lowered.get(mime, -1)
            self.pt_map[pt] = sub_pt if 0 <= sub_pt < 128 else -1
        # RFC 4588 retransmissions: subscriber PT -> its RTX PT (-1: none), when the subscriber
        # negotiated RTX for the codec (apt) and we gave the stream an SSRC.
        self.rtx_pt = [-1] * 128
        self.rtx_ssrc = rtx_ssrc
        if rtx and rtx_ssrc:
            for sub_pt in self.pt_map:
                if sub_pt >= 0:
                    self.rtx_pt[sub_pt] = rtx.get(sub_pt, -1)
        self.padding_pt = next((pt for pt in self.rtx_pt if pt >= 0), -1)
        self.rtx_seq = random.getrandbits(16)
        self.rewriter: ExtensionRewriter = uptrack.rewriter(extensions, strip_trailer=strip_trailer)
        # Transport-wide sequence numbers (shared by the subscriber's downtracks), when the
        # subscriber negotiated them: its feedback drives the estimate (media/downlink.py).
        self.tw = transport_wide if self.rewriter.tw_id else None
        self.wanted: int | None = len(uptrack.layers) - 1  # highest layer until told otherwise
        # The allocator's ceiling (media/allocator.py): ALL_LAYERS, a layer, or PAUSED.
        self.allowed = ALL_LAYERS
        self.goal: int | None = self.wanted  # min(wanted, allowed); None: paused
        self.target: int | None = None
        self.current: int | None = None  # layer being forwarded; None = waiting / paused
        self.muted = False
        # Rewrite state.
        self.started = False
        self.seq_offset = 0
        self.skips: list[int] = []  # publisher sequence numbers of padding left out, oldest first
        self.ts_offset = 0
        self.picture_id_offset = 0
        self.tl0_offset = 0
        self.epoch_seq = 0  # the epoch's first publisher seq, or EPOCH_SPAN behind the newest
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
        self.padding_sent = 0  # probe padding bytes
        self.plis = 0  # PLI/FIR received from the subscriber
        self.fraction_lost = 0  # from the subscriber's receiver reports
        self.packets_lost = 0
        self.jitter = 0
        self.rtt: float | None = None
        self.remb_bitrate: int | None = None
        self.sr_sent: list[tuple[int, float]] = []  # (NTP middle 32 bits, local time) of our SRs
        # Connection quality (media/quality.py, track_quality.py): the subscriber's side.
        self.quality = QualityScorer(uptrack.mime, include_rtt=True, include_jitter=True)
        self.quality_sent = 0
        self.quality_lost = 0
        self.distance_sum = 0.0
        self.distance_samples = 0

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
        skips = self.skips
        if skips and (p.sequence - skips[-1]) & 0xFFFF >= 0x8000:
            seq = self._out_seq(p.sequence)  # late, from before a padding packet left out
            if seq < 0:
                return
        else:
            seq = (p.sequence + self.seq_offset) & 0xFFFF
        rewriter = self.rewriter
        if rewriter.stamp != p.stamp:  # once per packet per extension mapping, not per subscriber
            (rewriter.first_byte, rewriter.prefix, rewriter.tail, rewriter.payload_offset) = (
                rewriter.rewrite_split(p.packet, p.header)
            )
            rewriter.tw_struct = tw_struct(len(rewriter.prefix))
            rewriter.stamp = p.stamp
        ts = (p.timestamp + self.ts_offset) & 0xFFFFFFFF
        tw = self.tw
        if tw is None:
            data = _FIXED_HEADER.pack(rewriter.first_byte, p.marker | pt, seq, ts, self.ssrc)
            data += rewriter.tail
        else:
            n = tw.next
            tw.next = n + 1
            data = rewriter.tw_struct.pack(
                rewriter.first_byte, p.marker | pt, seq, ts, self.ssrc, rewriter.prefix, n & 0xFFFF
            )
            data += rewriter.tail
            tw.sent[n & _TW_MASK] = (n, p.now, len(data))
        if (self.picture_id_offset or self.tl0_offset) and p.vp8.header_size:
            data = self._munge_vp8(data, p, rewriter.payload_offset)
        self.send_rtp(data)
        if tw is not None and tw.padding:
            tw.pad(p.now)
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

    def _rewrite(self, p: PacketInfo, pt: int, now: float) -> tuple[bytes, int]:
        """`forward`'s rewrite without its bookkeeping (NACK retransmissions): the packet and
        where its payload starts."""
        first_byte, prefix, tail, payload_offset = self.rewriter.rewrite_split(p.packet, p.header)
        seq = self._out_seq(p.sequence)
        ts = (p.timestamp + self.ts_offset) & 0xFFFFFFFF
        data = self.assemble(first_byte, p.marker | pt, seq, ts, prefix, tail, now)
        if (self.picture_id_offset or self.tl0_offset) and p.vp8.header_size:
            data = self._munge_vp8(data, p, payload_offset)
        return data, payload_offset

    def assemble(
        self, first_byte: int, marker_pt: int, seq: int, ts: int, prefix: bytes, tail: bytes,
        now: float,
    ) -> bytes:  # fmt: skip
        """A packet of ours from `ExtensionRewriter.rewrite_split` parts, numbered on the
        transport when it is (slow paths: retransmissions)."""
        tw = self.tw
        if tw is None:
            return _FIXED_HEADER.pack(first_byte, marker_pt, seq, ts, self.ssrc) + prefix + tail
        size = 12 + len(prefix) + 2 + len(tail)
        number = tw.take(now, size)
        return (
            tw_struct(len(prefix)).pack(first_byte, marker_pt, seq, ts, self.ssrc, prefix, number)
            + tail
        )

    def send_repair(self, data: bytes, payload_offset: int, pt: int) -> None:
        """Resend `data` (a packet as first sent): in an RTX packet (RFC 4588 §4: our RTX SSRC
        and sequence, the original sequence number before the payload) when the subscriber
        negotiated RTX for its codec, else as it was."""
        rtx_pt = self.rtx_pt[pt] if 0 <= pt < 128 else -1
        if rtx_pt < 0:
            self.send_rtp(data)
            return
        self.rtx_seq = (self.rtx_seq + 1) & 0xFFFF
        header = _FIXED_HEADER.pack(
            data[0], (data[1] & 0x80) | rtx_pt, self.rtx_seq, _U32.unpack_from(data, 4)[0],
            self.rtx_ssrc,
        )  # fmt: skip
        self.send_rtp(header + data[12:payload_offset] + data[2:4] + data[payload_offset:])

    def can_pad(self) -> bool:
        """Whether probe padding can go out on this track (an RTX stream, transport-wide
        numbers)."""
        tw_id = self.rewriter.tw_id  # padding packets use the one-byte form: ids 1-14
        return self.tw is not None and 0 < tw_id <= 14 and self.padding_pt >= 0

    def send_padding(self, now: float) -> int:
        """One padding-only packet on the RTX stream (what libwebrtc probes with); its size."""
        tw, pt = self.tw, self.padding_pt
        if tw is None or pt < 0:
            return 0
        size = 12 + 8 + PADDING_SIZE
        number = tw.take(now, size)
        self.rtx_seq = (self.rtx_seq + 1) & 0xFFFF
        header = _PADDING_HEADER.pack(
            0xB0, pt, self.rtx_seq, self.last_ts, self.rtx_ssrc,
            0xBEDE, 1, self.rewriter.tw_id << 4 | 1, number,
        )  # fmt: skip
        self.send_rtp(header + _PADDING_BODY)
        self.padding_sent += size
        return size

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

    def skip(self, layer: int, sequence: int) -> None:
        """A padding-only packet of the publisher: not forwarded, and its number not used, so
        the subscriber sees no gap. Only in-order ones of the forwarded layer matter (a late
        one is forwarded as usual: it fills the number kept for it)."""
        delta = (sequence - self.max_seq) & 0xFFFF
        if layer != self.current or delta == 0 or delta >= 0x8000:
            return
        self.seq_offset = (self.seq_offset - 1) & 0xFFFF
        self.max_seq = sequence
        self.skips.append(sequence)
        if len(self.skips) > MAX_SKIPS:
            del self.skips[0]

    def _out_seq(self, sequence: int) -> int:
        """Our number for a publisher sequence number of this epoch, -1 for a padding packet
        left out (or one from before the padding we still remember)."""
        later = 0
        for skipped in self.skips:
            delta = (skipped - sequence) & 0xFFFF
            if delta == 0:
                return -1
            if delta < 0x8000:
                later += 1
        if later == MAX_SKIPS:
            return -1  # older than what we remember: its number is unknown
        return (sequence + self.seq_offset + later) & 0xFFFF

    def _in_seq(self, out_seq: int) -> int | None:
        """The publisher sequence number we sent as `out_seq` in this epoch, if any."""
        base = out_seq - self.seq_offset
        for later in range(len(self.skips) + 1):
            sequence = (base - later) & 0xFFFF
            if self._out_seq(sequence) == out_seq:
                return sequence
        return None

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
        self.skips = []
        self.ts_offset = (ts - p.timestamp) & 0xFFFFFFFF
        self.epoch_seq = self.max_seq = p.sequence
        self.current = self.epoch_layer = p.layer

    # -- control -----------------------------------------------------------------------------
    def set_target_layer(self, index: int | None, fps: float = 0.0) -> None:
        """The layer the subscriber wants (None = paused). The layer actually forwarded is the
        best live one ≤ index; a switch happens on a keyframe of that layer. (`fps` picks
        temporal layers of SVC streams only: svc_downtrack.py.)"""
        self.wanted = index
        self._update_goal()

    def set_allowed(self, allowed: int) -> None:
        """The allocator's ceiling: a layer index, ALL_LAYERS, or PAUSED."""
        if allowed == self.allowed:
            return
        self.allowed = allowed
        self._update_goal()

    def _update_goal(self) -> None:
        wanted, allowed = self.wanted, self.allowed
        self.goal = None if wanted is None or allowed < 0 else min(wanted, allowed)
        self.set_target(self.uptrack.best_layer(self.goal, self.uptrack.clock()))

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
            seq = (out_seq - self.seq_offset) & 0xFFFF if not self.skips else self._in_seq(out_seq)
            if seq is None:
                continue
            if (seq - self.epoch_seq) & 0xFFFF >= 0x8000 or (self.max_seq - seq) & 0xFFFF >= 0x8000:
                continue  # not sent in this epoch
            info = self.uptrack.parse_cached(self.current, seq, now)
            if info is None:
                continue
            pt = self.pt_map[info.payload_type]
            if pt < 0:
                continue
            data, payload_offset = self._rewrite(info, pt, now)
            self._nack_tokens -= 1
            self.retransmits += 1
            self.send_repair(data, payload_offset, pt)

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
