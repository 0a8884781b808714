"""The media forwarding plane: routes decrypted RTP from publishers to subscribers, answers
RTCP, and emits the periodic RTCP an SFU owes both sides. No I/O: bytes go out through the
callbacks given at `add_uptrack` / `add_downtrack`; time comes from the injected clock.

Hot path (`handle_rtp`): publisher → SSRC lookup → parse once (`UpTrack`) → per downtrack
rewrite and send (`DownTrack`). Everything else (learning SSRCs from sdes:mid/rid, RTCP,
`tick`) is the slow path. Facts this follows: docs/protocol/13-media.md §13.4 and
docs/protocol/16-media-interop.md §5-§7.
"""

from __future__ import annotations

import collections
import random
import struct
import time
from collections.abc import Callable

from .downtrack import DownTrack
from .rtcp import (
    MAX_REPORT_BLOCKS,
    Fir,
    Nack,
    Pli,
    ReceiverReport,
    Remb,
    RtcpError,
    SenderReport,
    build_remb,
    build_rr,
    parse_rtcp,
)
from .rtp import RtpError, parse_rtp
from .svc_downtrack import SvcDownTrack
from .uptrack import ReceiveLayer, UpTrack

__all__ = ["DownTrack", "ForwardingPlane", "UpTrack"]

# Seconds between RR + REMB to publishers: Chrome's top simulcast layer needs them
# (docs/protocol/16-media-interop.md §7).
RR_INTERVAL = 0.5
SR_INTERVAL = 1.0  # s: SR to subscribers
REMB_BITRATE = 3_000_000  # bps announced to publishers
NTP_EPOCH_OFFSET = 2208988800  # seconds from 1900-01-01 (NTP) to 1970-01-01 (Unix)

_U32 = struct.Struct("!I")


class _Publisher:
    """One publisher peer connection: RTP for all its tracks arrives here, routed by SSRC."""

    __slots__ = ("by_ssrc", "key", "send_rtcp", "unknown_last", "unknown_tokens", "uptracks")

    def __init__(self, key: object, send_rtcp: Callable[[bytes], None], burst: float) -> None:
        self.key = key
        self.send_rtcp = send_rtcp
        self.uptracks: list[UpTrack] = []
        self.by_ssrc: dict[int, ReceiveLayer] = {}
        # Token bucket for packets from SSRCs we do not know yet (each costs a parse and a
        # match against every track): a flood of random SSRCs is dropped after one check.
        self.unknown_tokens = burst
        self.unknown_last = 0.0

    def allow_unknown(self, now: float, rate: float, burst: float) -> bool:
        if rate <= 0:
            return True
        tokens = min(burst, self.unknown_tokens + (now - self.unknown_last) * rate)
        self.unknown_last = now
        if tokens < 1:
            self.unknown_tokens = tokens
            return False
        self.unknown_tokens = tokens - 1
        return True

    def learn(self, packet: bytes) -> ReceiveLayer | None:
        """Map an unknown SSRC to a layer from its sdes:mid / rtp-stream-id extensions; without
        a mid, to the only single-layer track of this payload type whose SSRC is unknown."""
        try:
            header = parse_rtp(packet)
        except RtpError:
            return None
        layer: ReceiveLayer | None = None
        has_mid = False
        for track in self.uptracks:
            layer, carries_mid = track.match(packet, header)
            has_mid = has_mid or carries_mid
            if layer is not None:
                break
        if layer is None and not has_mid:
            candidates = [
                t.layers[0]
                for t in self.uptracks
                if len(t.layers) == 1
                and t.layers[0].ssrc is None
                and t.codec_by_pt[header.payload_type] is not None
            ]
            if len(candidates) == 1:
                layer = candidates[0]
        if layer is None:
            return None
        self.bind(layer, header.ssrc)
        return layer

    def bind(self, layer: ReceiveLayer, ssrc: int) -> None:
        if layer.ssrc is not None and self.by_ssrc.get(layer.ssrc) is layer:
            del self.by_ssrc[layer.ssrc]  # the stream restarted with a new SSRC
        layer.ssrc = ssrc
        self.by_ssrc[ssrc] = layer


UNKNOWN_SSRC_RATE = 200.0  # packets/s per publisher PC from not-yet-known SSRCs (limit.*)


class ForwardingPlane:
    def __init__(
        self,
        *,
        clock: Callable[[], float] = time.monotonic,
        unknown_ssrc_rate: float = UNKNOWN_SSRC_RATE,
    ) -> None:
        self._clock = clock
        self._unknown_rate = unknown_ssrc_rate
        self._unknown_burst = max(1.0, 2 * unknown_ssrc_rate)
        # Wall clock for NTP timestamps, anchored once so the injected clock drives it.
        self._wall_offset = time.time() - clock()
        self._rtcp_ssrc = random.getrandbits(32) or 1  # sender SSRC of our RR/PLI/REMB
        self._publishers: dict[object, _Publisher] = {}
        self._uptracks: dict[str, UpTrack] = {}
        self._publisher_of: dict[str, _Publisher] = {}
        self._downtracks: dict[tuple[str, str], DownTrack] = {}
        # Subscribers that read LiveKit's packet trailer (ClientInfo CAP_PACKET_TRAILER).
        self._reads_trailer: set[str] = set()
        self._by_subscriber: dict[str, dict[int, DownTrack]] = {}  # subscriber -> our SSRC -> dt
        self._last_rr = -1e18
        self._last_sr = -1e18
        # Counts of removed tracks, so totals() only ever grows (Prometheus counters).
        self._retired: collections.Counter[str] = collections.Counter()

    # -- tracks ------------------------------------------------------------------------------
    def add_uptrack(
        self,
        track_sid: str,
        kind: str,
        *,
        codecs: dict[int, str],
        extensions: dict[int, str],
        rids: list[str],
        ssrcs: dict[int, str | None],
        mid: str,
        send_rtcp: Callable[[bytes], None],
        publisher: object,
        packet_trailer: bool = False,
    ) -> UpTrack:
        """Publish a track; `publisher` identifies the peer connection its RTP arrives on (the
        key later given to `handle_rtp`); several uptracks share one publisher."""
        if track_sid in self._uptracks:
            self.remove_uptrack(track_sid)
        pub = self._publishers.get(publisher)
        if pub is None:
            pub = self._publishers[publisher] = _Publisher(
                publisher, send_rtcp, self._unknown_burst
            )
        pub.send_rtcp = send_rtcp
        track = UpTrack(
            track_sid,
            kind,
            codecs=codecs,
            extensions=extensions,
            rids=rids,
            mid=mid,
            send_rtcp=send_rtcp,
            clock=self._clock,
            rtcp_ssrc=self._rtcp_ssrc,
            packet_trailer=packet_trailer,
        )
        for ssrc, rid in ssrcs.items():
            if rid is None:
                index = 0 if len(track.layers) == 1 else -1
            else:
                index = track.rids.index(rid) if rid in track.rids else -1
            if index >= 0:
                pub.bind(track.layers[index], ssrc)
        pub.uptracks.append(track)
        self._uptracks[track_sid] = track
        self._publisher_of[track_sid] = pub
        return track

    def remove_uptrack(self, track_sid: str) -> None:
        track = self._uptracks.pop(track_sid, None)
        if track is None:
            return
        self._retired.update(_uptrack_counts(track))
        for downtrack in track.downtracks:
            self.remove_downtrack(track_sid, downtrack.subscriber)
        pub = self._publisher_of.pop(track_sid)
        pub.uptracks.remove(track)
        for layer in track.layers:
            if layer.ssrc is not None and pub.by_ssrc.get(layer.ssrc) is layer:
                del pub.by_ssrc[layer.ssrc]
        if not pub.uptracks:
            del self._publishers[pub.key]

    def uptrack(self, track_sid: str) -> UpTrack | None:
        return self._uptracks.get(track_sid)

    def uptracks(self) -> list[UpTrack]:
        return list(self._uptracks.values())

    def downtracks(self) -> list[DownTrack]:
        return list(self._downtracks.values())

    def totals(self) -> collections.Counter[str]:
        """Packets, bytes, NACKs, PLIs and losses since start, live and removed tracks alike."""
        totals = collections.Counter(self._retired)
        for track in self._uptracks.values():
            totals.update(_uptrack_counts(track))
        for downtrack in self._downtracks.values():
            totals.update(_downtrack_counts(downtrack))
        return totals

    def add_downtrack(
        self,
        track_sid: str,
        subscriber: str,
        *,
        ssrc: int,
        codecs: dict[str, int],
        extensions: dict[str, int],
        send_rtp: Callable[[bytes], None],
        send_rtcp: Callable[[bytes], None],
    ) -> DownTrack:
        """Subscribe; video starts at the next keyframe, requested upstream right away."""
        track = self._uptracks.get(track_sid)
        if track is None:
            raise KeyError(f"no published track {track_sid}")
        self.remove_downtrack(track_sid, subscriber)
        kind = SvcDownTrack if track.svc_codec else DownTrack
        downtrack = kind(
            track,
            subscriber,
            ssrc=ssrc,
            codecs=codecs,
            extensions=extensions,
            send_rtp=send_rtp,
            send_rtcp=send_rtcp,
            strip_trailer=subscriber not in self._reads_trailer,
        )
        self._downtracks[(track_sid, subscriber)] = downtrack
        self._by_subscriber.setdefault(subscriber, {})[ssrc] = downtrack
        track.add_downtrack(downtrack)  # chooses the layer and requests its keyframe (PLI)
        return downtrack

    def remove_downtrack(self, track_sid: str, subscriber: str) -> None:
        downtrack = self._downtracks.pop((track_sid, subscriber), None)
        if downtrack is None:
            return
        self._retired.update(_downtrack_counts(downtrack))
        downtrack.uptrack.remove_downtrack(downtrack)
        by_ssrc = self._by_subscriber.get(subscriber)
        if by_ssrc is not None and by_ssrc.get(downtrack.ssrc) is downtrack:
            del by_ssrc[downtrack.ssrc]
            if not by_ssrc:
                del self._by_subscriber[subscriber]

    def set_reads_packet_trailer(self, subscriber: str, reads: bool) -> None:
        """Whether this subscriber's SDK parses LiveKit's packet trailer; without it the
        trailer is cut off the frames it receives (media/packet_trailer.py). Applies to
        downtracks added afterwards."""
        if reads:
            self._reads_trailer.add(subscriber)
        else:
            self._reads_trailer.discard(subscriber)

    def downtrack(self, track_sid: str, subscriber: str) -> DownTrack | None:
        return self._downtracks.get((track_sid, subscriber))

    def set_target_layer(
        self, track_sid: str, subscriber: str, layer: int | None, fps: float = 0.0
    ) -> None:
        """A subscriber's wanted layer (None = paused) and frame rate (0 = all)."""
        downtrack = self._downtracks.get((track_sid, subscriber))
        if downtrack is not None:
            downtrack.set_target_layer(layer, fps)

    def set_muted(self, track_sid: str, muted: bool) -> None:
        """The publisher muted/unmuted its track (MuteTrackRequest)."""
        track = self._uptracks.get(track_sid)
        if track is not None:
            track.set_muted(muted)

    def set_subscriber_muted(self, track_sid: str, subscriber: str, muted: bool) -> None:
        downtrack = self._downtracks.get((track_sid, subscriber))
        if downtrack is not None:
            downtrack.set_muted(muted)

    # -- packets -----------------------------------------------------------------------------
    def handle_rtp(self, publisher_key: object, packet: bytes) -> None:
        """Every decrypted RTP packet of a publisher PC (hot path)."""
        pub = self._publishers.get(publisher_key)
        if pub is None or len(packet) < 12:
            return
        layer = pub.by_ssrc.get(_U32.unpack_from(packet, 8)[0])
        if layer is None:
            if not pub.allow_unknown(self._clock(), self._unknown_rate, self._unknown_burst):
                self._retired["unknown_ssrc_dropped"] += 1
                return
            layer = pub.learn(packet)
            if layer is None:
                return
        layer.track.receive(layer, packet, self._clock())

    def handle_publisher_rtcp(self, publisher_key: object, packet: bytes) -> None:
        """Sender reports give each layer's NTP↔RTP mapping (for our SRs, RR LSR/DLSR)."""
        pub = self._publishers.get(publisher_key)
        if pub is None:
            return
        try:
            packets = parse_rtcp(packet)
        except RtcpError:
            return
        now = self._clock()
        for p in packets:
            if isinstance(p, SenderReport):
                layer = pub.by_ssrc.get(p.ssrc)
                if layer is not None:
                    layer.on_sender_report(p.ntp_timestamp, p.rtp_timestamp, now)

    def handle_subscriber_rtcp(self, subscriber: str, packet: bytes) -> None:
        """PLI/FIR → keyframe upstream; NACK → retransmit; RR → stats; REMB → recorded."""
        by_ssrc = self._by_subscriber.get(subscriber)
        if by_ssrc is None:
            return
        try:
            packets = parse_rtcp(packet)
        except RtcpError:
            return
        now = self._clock()
        for p in packets:
            if isinstance(p, Pli):
                downtrack = by_ssrc.get(p.media_ssrc)
                if downtrack is not None:
                    downtrack.request_keyframe()
            elif isinstance(p, Fir):
                for ssrc, _ in p.entries:
                    downtrack = by_ssrc.get(ssrc)
                    if downtrack is not None:
                        downtrack.request_keyframe()
            elif isinstance(p, Nack):
                downtrack = by_ssrc.get(p.media_ssrc)
                if downtrack is not None:
                    downtrack.retransmit(p.lost, now)
            elif isinstance(p, ReceiverReport | SenderReport):
                for block in p.reports:
                    downtrack = by_ssrc.get(block.ssrc)
                    if downtrack is not None:
                        downtrack.on_receiver_report(block, now)
            elif isinstance(p, Remb):
                for ssrc in p.ssrcs:
                    downtrack = by_ssrc.get(ssrc)
                    if downtrack is not None:
                        downtrack.remb_bitrate = p.bitrate

    # -- timers ------------------------------------------------------------------------------
    def tick(self) -> None:
        """Call every ~250 ms: RR + REMB upstream every 500 ms, SR downstream every 1 s,
        layer re-selection and pending keyframe requests."""
        now = self._clock()
        if now - self._last_rr >= RR_INTERVAL:
            self._last_rr = now
            for pub in self._publishers.values():
                self._send_receiver_reports(pub, now)
        if now - self._last_sr >= SR_INTERVAL:
            self._last_sr = now
            ntp_now = self.ntp_time(now)
            for downtrack in self._downtracks.values():
                report = downtrack.sender_report(now, ntp_now)
                if report is not None:
                    downtrack.send_rtcp(report)
        for track in self._uptracks.values():
            track.tick(now)

    def _send_receiver_reports(self, pub: _Publisher, now: float) -> None:
        blocks = []
        video_ssrcs = []
        for track in pub.uptracks:
            for layer in track.layers:
                block = layer.report_block(now)
                if block is not None:
                    blocks.append(block)
                    if track.kind == "video":
                        video_ssrcs.append(block.ssrc)
        if not blocks:
            return
        for start in range(0, len(blocks), MAX_REPORT_BLOCKS):
            compound = build_rr(self._rtcp_ssrc, blocks[start : start + MAX_REPORT_BLOCKS])
            if start == 0 and video_ssrcs:  # draft-alvestrand-rmcat-remb: one REMB per PC
                compound += build_remb(self._rtcp_ssrc, REMB_BITRATE, video_ssrcs)
            pub.send_rtcp(compound)

    def ntp_time(self, now: float) -> int:
        """64-bit NTP timestamp (RFC 5905 §6) for a clock() reading."""
        return int((now + self._wall_offset + NTP_EPOCH_OFFSET) * (1 << 32))


def _uptrack_counts(track: UpTrack) -> dict[str, int]:
    return {
        "packets_in": sum(layer.packets for layer in track.layers),
        "bytes_in": sum(layer.bytes for layer in track.layers),
        "plis_sent": track.plis_sent,
        "malformed_in": track.malformed,
    }


def _downtrack_counts(downtrack: DownTrack) -> dict[str, int]:
    return {
        "packets_out": downtrack.packets_sent,
        "bytes_out": downtrack.bytes_sent,
        "nacks": downtrack.nacks,
        "retransmits": downtrack.retransmits,
        "nacks_dropped": downtrack.nacks_dropped,
        "plis_received": downtrack.plis,
        "packets_lost": max(0, downtrack.packets_lost),
    }
