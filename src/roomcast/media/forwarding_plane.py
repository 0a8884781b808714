"""The media forwarding plane: routes decrypted RTP from publishers to subscribers, answers
RTCP, and emits the periodic RTCP an SFU owes both sides. No I/O: bytes go out through the
callbacks given at `add_uptrack` / `add_downtrack`; time comes from the injected clock.

Hot path (`handle_rtp`): publisher → SSRC lookup → parse once (`UpTrack`) → per downtrack
rewrite and send (`DownTrack`). Everything else (learning SSRCs from sdes:mid/rid, RTCP,
`tick`) is the slow path. Facts this follows: docs/protocol/13-media.md §13.4 and
docs/protocol/16-media-interop.md §5-§7.

Congestion control: publishers that negotiated transport-wide sequence numbers get their
feedback (`twcc.TwccRecorder`), the others a REMB; each subscriber has a `downlink.Downlink`
that estimates its bandwidth from its feedback and allocates it among its tracks on `tick`.
Connection quality is scored per track every `quality.UPDATE_INTERVAL` seconds.
"""

from __future__ import annotations

import collections
import random
import struct
import time
from collections.abc import Callable
from typing import Any

from .downlink import Downlink
from .downtrack import DownTrack
from .quality import UPDATE_INTERVAL, worst
from .rtcp import (
    MAX_REPORT_BLOCKS,
    Fir,
    Nack,
    Pli,
    ReceiverReport,
    Remb,
    RtcpError,
    SenderReport,
    TransportCC,
    build_remb,
    build_rr,
    parse_rtcp,
)
from .rtp import RtpError, parse_rtp
from .svc_downtrack import SvcDownTrack
from .track_quality import sample_distance, score_downtrack, score_uptrack
from .twcc import TwccRecorder
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

    __slots__ = (
        "by_ssrc",
        "key",
        "on_bind",
        "send_rtcp",
        "twcc",
        "unknown_last",
        "unknown_tokens",
        "uptracks",
    )

    def __init__(
        self,
        key: object,
        send_rtcp: Callable[[bytes], None],
        burst: float,
        on_bind: Callable[[ReceiveLayer, int], None],
        rtcp_ssrc: int,
    ) -> None:
        self.key = key
        self.on_bind = on_bind  # the plane's `_layer_bound`
        self.send_rtcp = send_rtcp
        self.uptracks: list[UpTrack] = []
        self.by_ssrc: dict[int, ReceiveLayer] = {}
        # Transport-wide feedback for the whole PeerConnection (its tracks share the numbers).
        self.twcc = TwccRecorder(rtcp_ssrc, self._send_feedback)
        # Token bucket for packets from SSRCs we do not know yet (each costs a parse and a
        # match against every track): a flood of random SSRCs is dropped after one check.
        self.unknown_tokens = burst
        self.unknown_last = 0.0

    def _send_feedback(self, packet: bytes) -> None:
        self.send_rtcp(packet)

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
        self.on_bind(layer, ssrc)


UNKNOWN_SSRC_RATE = 200.0  # packets/s per publisher PC from not-yet-known SSRCs (limit.*)


class ForwardingPlane:
    def __init__(
        self,
        *,
        clock: Callable[[], float] = time.monotonic,
        unknown_ssrc_rate: float = UNKNOWN_SSRC_RATE,
        congestion_control: bool = True,
        allow_pause: bool = False,
    ) -> None:
        self._clock = clock
        self.congestion_control = congestion_control  # rtc.congestion_control.enabled
        self.allow_pause = allow_pause
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
        self._allow_pause: dict[str, bool] = {}  # subscribers' own word on pauses
        self._by_subscriber: dict[str, dict[int, DownTrack]] = {}  # subscriber -> our SSRC -> dt
        self._downlinks: dict[str, Downlink] = {}  # subscriber -> its downlink, while it is here
        self._last_rr = -1e18
        self._last_sr = -1e18
        self._last_quality = clock()
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
        nack: bool = False,
        layer_bitrates: list[int] | None = None,
    ) -> UpTrack:
        """Publish a track; `publisher` identifies the peer connection its RTP arrives on (the
        key later given to `handle_rtp`); several uptracks share one publisher. `nack`: the
        publisher negotiated NACK, so its losses are requested again; `layer_bitrates`: what
        it announced per layer, lowest first (a guess until measured)."""
        if track_sid in self._uptracks:
            self.remove_uptrack(track_sid)
        pub = self._publishers.get(publisher)
        if pub is None:
            pub = self._publishers[publisher] = _Publisher(
                publisher, send_rtcp, self._unknown_burst, self._layer_bound, self._rtcp_ssrc
            )
        pub.send_rtcp = send_rtcp
        track = self._new_uptrack(
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
            nack=nack,
            twcc=pub.twcc,
        )
        for layer, bitrate in zip(track.layers, layer_bitrates or [], strict=False):
            layer.declared_bitrate = float(bitrate)
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
        rtx: dict[int, int] | None = None,
        rtx_ssrc: int = 0,
    ) -> DownTrack:
        """Subscribe; video starts at the next keyframe, requested upstream right away.
        `rtx`: the subscriber's RTX payload types by the payload type they repair (apt, RFC
        4588 §8.6), sent with SSRC `rtx_ssrc`."""
        track = self._uptracks.get(track_sid)
        if track is None:
            raise KeyError(f"no published track {track_sid}")
        self.remove_downtrack(track_sid, subscriber)
        by_ssrc = self._by_subscriber.setdefault(subscriber, {})
        downlink = self._downlinks.get(subscriber)
        if downlink is None:
            downlink = self._downlinks[subscriber] = Downlink(
                subscriber,
                by_ssrc,
                enabled=self.congestion_control,
                allow_pause=self._allow_pause.get(subscriber, self.allow_pause),
            )
        downtrack = self._new_downtrack(
            track,
            subscriber,
            ssrc=ssrc,
            codecs=codecs,
            extensions=extensions,
            send_rtp=send_rtp,
            send_rtcp=send_rtcp,
            strip_trailer=subscriber not in self._reads_trailer,
            rtx=rtx,
            rtx_ssrc=rtx_ssrc,
            transport_wide=downlink.tw,
        )
        if track.kind == "video" and downlink.enabled and downlink.estimator.estimate is not None:
            downtrack.set_allowed(0)  # a constrained link: start low, the next tick allocates
        self._downtracks[(track_sid, subscriber)] = downtrack
        by_ssrc[ssrc] = downtrack
        track.add_downtrack(downtrack)  # chooses the layer and requests its keyframe (PLI)
        return downtrack

    # -- what a native plane replaces (media/native_plane.py) --------------------------------
    def _new_uptrack(self, track_sid: str, kind: str, **kwargs: Any) -> UpTrack:
        return UpTrack(track_sid, kind, **kwargs)

    def _new_downtrack(self, track: UpTrack, subscriber: str, **kwargs: Any) -> DownTrack:
        kind = SvcDownTrack if track.svc_codec else DownTrack
        return kind(track, subscriber, **kwargs)

    def _layer_bound(self, layer: ReceiveLayer, ssrc: int) -> None:
        """A layer's SSRC became known (signalled, or learnt from its first packet)."""

    def remove_downtrack(self, track_sid: str, subscriber: str) -> None:
        downtrack = self._downtracks.pop((track_sid, subscriber), None)
        if downtrack is None:
            return
        self._retired.update(_downtrack_counts(downtrack))
        downtrack.uptrack.remove_downtrack(downtrack)
        by_ssrc = self._by_subscriber.get(subscriber)
        if by_ssrc is not None and by_ssrc.get(downtrack.ssrc) is downtrack:
            del by_ssrc[downtrack.ssrc]  # the downlink keeps the (emptied) map

    def remove_subscriber(self, subscriber: str) -> None:
        """The subscriber left: its downtracks and its downlink go."""
        for track_sid, sub in list(self._downtracks):
            if sub == subscriber:
                self.remove_downtrack(track_sid, subscriber)
        self._by_subscriber.pop(subscriber, None)
        self._downlinks.pop(subscriber, None)
        self._allow_pause.pop(subscriber, None)

    def downlink(self, subscriber: str) -> Downlink | None:
        return self._downlinks.get(subscriber)

    def set_priority(self, track_sid: str, priority: int) -> None:
        """Where the track comes in its subscribers' allocations (higher first)."""
        track = self._uptracks.get(track_sid)
        if track is not None:
            track.priority = priority

    def take_stream_states(self) -> list[tuple[str, str, bool]]:
        """(subscriber, track sid, paused) for every track the allocator paused or resumed
        since the last call: the subscribers are told (StreamStateUpdate)."""
        changes = []
        for subscriber, downlink in self._downlinks.items():
            changes += [(subscriber, sid, paused) for sid, paused in downlink.changes]
            downlink.changes.clear()
        return changes

    def connection_quality(self, participant: str) -> tuple[int, float]:
        """A participant's quality (media/quality.py values) and MOS: the worst of the tracks
        it publishes and receives."""
        scores = []
        pub = self._publishers.get(participant)
        if pub is not None:
            scores += [track.quality.score for track in pub.uptracks]
        by_ssrc = self._by_subscriber.get(participant)
        if by_ssrc is not None:
            scores += [downtrack.quality.score for downtrack in by_ssrc.values()]
        return worst(scores)

    def set_reads_packet_trailer(self, subscriber: str, reads: bool) -> None:
        """Whether this subscriber's SDK parses LiveKit's packet trailer; without it the
        trailer is cut off the frames it receives (media/packet_trailer.py). Applies to
        downtracks added afterwards."""
        if reads:
            self._reads_trailer.add(subscriber)
        else:
            self._reads_trailer.discard(subscriber)

    def set_allow_pause(self, subscriber: str, allow: bool | None) -> None:
        """The subscriber's own choice on congestion pauses (ConnectionSettings
        subscriber_allow_pause); None: the plane's default."""
        if allow is None:
            self._allow_pause.pop(subscriber, None)
        else:
            self._allow_pause[subscriber] = allow
        downlink = self._downlinks.get(subscriber)
        if downlink is not None:
            downlink.allocator.allow_pause = self._allow_pause.get(subscriber, self.allow_pause)

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
            elif isinstance(p, TransportCC):
                downlink = self._downlinks.get(subscriber)
                if downlink is not None:
                    downlink.on_transport_feedback(p.fci, now)

    # -- timers ------------------------------------------------------------------------------
    def tick(self) -> None:
        """Call every ~250 ms: RR (+ REMB) upstream every 500 ms, SR downstream every 1 s,
        layer re-selection, pending keyframe requests and NACKs, each subscriber's
        allocation, connection quality every UPDATE_INTERVAL."""
        now = self._clock()
        for pub in self._publishers.values():
            pub.twcc.flush(now)
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
        for downlink in self._downlinks.values():
            downlink.tick(now)
        for downtrack in self._downtracks.values():
            sample_distance(downtrack, now)
        if now - self._last_quality >= UPDATE_INTERVAL:
            self._last_quality = now
            for track in self._uptracks.values():
                score_uptrack(track, now)
            for subscriber, by_ssrc in self._by_subscriber.items():
                link = self._downlinks.get(subscriber)
                loss = link.take_loss() if link is not None else 0.0
                for downtrack in by_ssrc.values():
                    score_downtrack(downtrack, loss)

    def _send_receiver_reports(self, pub: _Publisher, now: float) -> None:
        blocks = []
        video_ssrcs = []
        for track in pub.uptracks:
            for layer in track.layers:
                block = layer.report_block(now)
                if block is not None:
                    blocks.append(block)
                    if track.kind == "video" and not track.twcc_ext:
                        video_ssrcs.append(block.ssrc)  # REMB only without transport-cc
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
        "nacks_sent": track.nacks_sent,
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
        "padding_bytes": downtrack.padding_sent,
    }
