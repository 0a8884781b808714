"""Receive side of the plane: one `UpTrack` per published track, one `ReceiveLayer` per
simulcast layer (SSRC), with receive statistics, a packet cache for NACKs and audio levels.

An UpTrack parses each packet once into a reused `PacketInfo` and hands it to its downtracks,
which it knows only as `track_sender.TrackSender`s; everything per subscriber happens in
`downtrack.py`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from .codecs import AUDIO, AV1, RTX, VP8, VP9, clock_rate, codec_kind, is_keyframe_start
from .nack import NackGenerator
from .quality import QualityScorer
from .rtcp import ReportBlock, build_nack, build_pli, ntp_middle32
from .rtp import (
    URI_AUDIO_LEVEL,
    URI_DEPENDENCY_DESCRIPTOR,
    URI_MID,
    URI_REPAIRED_RID,
    URI_RID,
    URI_TRANSPORT_CC,
    ExtensionRewriter,
    RtpError,
    RtpHeader,
    find_extension,
    parse_rtp,
    read_string_extension,
)
from .svc_layers import SvcLayers
from .track_sender import PacketInfo, TrackSender
from .twcc import TwccRecorder

PLI_INTERVAL = 0.5  # s between keyframe requests per layer (LiveKit rtc.pli_throttle, low)
LAYER_TIMEOUT = 1.0  # s without packets after which a simulcast layer counts as stopped
CACHE_SIZE_VIDEO = 512  # packets kept for NACKs (LiveKit: 500 video / 200 audio)
CACHE_SIZE_AUDIO = 256
RATE_WINDOW = 2.0  # s over which a layer's bitrate is measured
MAX_GAP = 1000  # a larger jump in sequence numbers is a restarted sender, not loss
# bps assumed for a simulcast layer never measured nor declared (LiveKit's 180p/360p/720p).
DEFAULT_LAYER_BPS = (160_000.0, 450_000.0, 1_700_000.0)
DECLARED_MARGIN = 1.25  # a layer costs at most this times the bitrate its publisher announced


class ReceiveLayer:
    """One incoming RTP stream (a simulcast layer, or the only one): RFC 3550 Appendix A.3/A.8
    receive statistics, the last SR, the NACK cache, keyframe-request throttling."""

    def __init__(self, track: UpTrack, index: int, rid: str | None, cache_size: int) -> None:
        self.track = track
        self.index = index
        self.rid = rid
        self.ssrc: int | None = None
        self.packets = 0
        self.bytes = 0
        self.base_seq = 0
        self.max_seq = 0
        self.cycles = 0
        self.expected_prior = 0
        self.received_prior = 0
        self.jitter = 0.0
        self.last_transit: int | None = None
        self.last_arrival = -math.inf
        self.sr_ntp = 0
        self.sr_rtp = 0
        self.sr_arrival: float | None = None
        self.cache: list[bytes | None] = [None] * cache_size
        self.cache_mask = cache_size - 1
        self.last_pli = -math.inf
        self.pli_pending = False
        # NACKs to the publisher, when it negotiated them (media/nack.py).
        self.nacker: NackGenerator | None = None
        # Bitrate: (time, bytes) samples over RATE_WINDOW; the last rate measured while live.
        self.rate_samples: list[tuple[float, int]] = []
        self.bitrate = 0.0
        self.known_bitrate = 0.0
        self.declared_bitrate = 0.0  # what the publisher announced (TrackInfo layers)
        self.padding_bytes = 0  # of `bytes`, in padding-only packets
        self.gaps = 0  # sequence numbers missing when a later one arrived: the network's loss
        self.quality_gaps = 0
        self.quality_expected = 0  # counters at the last quality window (track_quality.py)

    def on_packet(
        self, seq: int, timestamp: int, now: float, size: int, rate: int, padding: bool = False
    ) -> None:
        """Receive statistics and loss tracking; `padding`: a padding-only packet (a sender's
        bandwidth probe), which says nothing of the layer's media, its rate or its timing."""
        late = False
        if self.packets == 0:
            self.base_seq = self.max_seq = seq
        else:
            delta = (seq - self.max_seq) & 0xFFFF
            if 0 < delta < 0x8000:
                if seq < self.max_seq:  # wrapped around
                    self.cycles += 0x10000
                if delta > 1:
                    if delta <= MAX_GAP:
                        self.gaps += delta - 1
                    if self.nacker is not None:
                        self.nacker.on_gap((self.max_seq + 1) & 0xFFFF, delta - 1, now)
                self.max_seq = seq
            elif delta:
                late = True  # a retransmission, or reordered: not a transit time to go by
                if self.nacker is not None:
                    self.nacker.on_late(seq)
        self.packets += 1
        self.bytes += size
        if padding:
            self.padding_bytes += size
            return
        if late:
            return
        # RFC 3550 §A.8 interarrival jitter, in timestamp units.
        transit = int(now * rate) - timestamp
        last = self.last_transit
        if last is not None:
            d = abs(transit - last)
            if d < 0x80000000:  # ignore timestamp wraps
                self.jitter += (d - self.jitter) / 16
        self.last_transit = transit
        self.last_arrival = now

    def on_sender_report(self, ntp: int, rtp: int, now: float) -> None:
        self.sr_ntp, self.sr_rtp, self.sr_arrival = ntp, rtp, now

    def report_block(self, now: float) -> ReportBlock | None:
        """RFC 3550 §6.4.1 / §A.3 reception report for this stream, None before any packet."""
        if self.ssrc is None or not self.packets:
            return None
        extended_max = self.cycles + self.max_seq
        expected = extended_max - self.base_seq + 1
        expected_interval = expected - self.expected_prior
        received_interval = self.packets - self.received_prior
        self.expected_prior, self.received_prior = expected, self.packets
        lost_interval = expected_interval - received_interval
        fraction = (lost_interval << 8) // expected_interval if lost_interval > 0 else 0
        lsr = dlsr = 0
        if self.sr_arrival is not None:
            lsr = ntp_middle32(self.sr_ntp)
            dlsr = int((now - self.sr_arrival) * 65536)
        return ReportBlock(
            self.ssrc,
            min(fraction, 255),
            expected - self.packets,
            extended_max,
            int(self.jitter),
            lsr,
            dlsr,
        )

    def measure(self, now: float, live: bool) -> None:
        """Update `bitrate` from the bytes received over the last RATE_WINDOW (media tick)."""
        samples = self.rate_samples
        media = self.bytes - self.padding_bytes
        samples.append((now, media))
        while len(samples) > 2 and now - samples[1][0] >= RATE_WINDOW:
            del samples[0]
        span = now - samples[0][0]
        if span < RATE_WINDOW / 2:
            self.bitrate = 0.0  # too short to tell (one keyframe would look like a flood)
            return
        self.bitrate = 8 * (media - samples[0][1]) / span
        if live:
            self.known_bitrate = self.bitrate

    def cached(self, seq: int) -> bytes | None:
        packet = self.cache[seq & self.cache_mask]
        if packet is None or (packet[2] << 8 | packet[3]) != seq:
            return None
        return packet


class AudioLevel:
    """LiveKit's active-speaker level (docs/protocol/05-room-and-participant-updates.md §5.3) from
    RFC 6464 levels: active if ≤ 35 -dBov for ≥ 40 % of a 400 ms window; level = 10^(-adjusted/20),
    adjusted by the active share of the window, smoothed by an EMA over 2 windows."""

    ACTIVE_LEVEL = 35
    MIN_PERCENTILE = 40
    OBSERVE_MS = 400
    SMOOTH_FACTOR = 2 / (2 + 1)
    SILENT = 127

    def __init__(self) -> None:
        self.active_threshold = 10 ** (-self.ACTIVE_LEVEL / 20)
        self.min_active_ms = self.OBSERVE_MS * self.MIN_PERCENTILE / 100
        self.observed_ms = 0.0
        self.active_ms = 0.0
        self.loudest = self.SILENT
        self.smoothed = 0.0
        self.last_observed = -math.inf

    def observe(self, level: int, duration_ms: float, now: float) -> None:
        self.last_observed = now
        self.observed_ms += duration_ms
        if level <= self.ACTIVE_LEVEL:
            self.active_ms += duration_ms
            self.loudest = min(self.loudest, level)
        if self.observed_ms >= self.OBSERVE_MS:
            if self.active_ms >= self.min_active_ms:
                weight = 20 * math.log10(self.active_ms / self.OBSERVE_MS)
                linear = 10 ** (-(self.loudest - weight) / 20)
                self.smoothed += (linear - self.smoothed) * self.SMOOTH_FACTOR
            else:
                self.smoothed = 0.0
            self.observed_ms = self.active_ms = 0.0
            self.loudest = self.SILENT

    def level(self, now: float) -> float:
        if now - self.last_observed > 2 * self.OBSERVE_MS / 1000:
            self.smoothed = 0.0  # stale: the publisher stopped sending (muted, left)
        return self.smoothed


def svc_codec(codecs: dict[int, str], layers: int, extensions: dict[int, str]) -> int:
    """VP9, or AV1 with its Dependency Descriptor, in one stream: a scalable track whose
    subscribers each get their own spatial/temporal layers (svc_downtrack.py); else 0."""
    kinds = {codec_kind(mime) for mime in codecs.values()} - {RTX}
    if layers == 1 and kinds == {VP9}:
        return VP9
    if layers == 1 and kinds == {AV1} and URI_DEPENDENCY_DESCRIPTOR in extensions.values():
        return AV1
    return 0


@dataclass(slots=True)
class UpTrackStats:
    packets: int
    bytes: int
    layers_seen: list[int]  # indices of layers that received packets
    plis_sent: int
    malformed: int


class UpTrack:
    """A published track: its layers, codecs, extension ids, and the downtracks fed from it."""

    def __init__(
        self,
        track_sid: str,
        kind: str,
        *,
        codecs: dict[int, str],
        extensions: dict[int, str],
        rids: list[str],
        mid: str,
        send_rtcp: Callable[[bytes], None],
        clock: Callable[[], float],
        rtcp_ssrc: int,
        packet_trailer: bool = False,
        nack: bool = False,
        twcc: TwccRecorder | None = None,
    ) -> None:
        self.track_sid = track_sid
        # Frames carry LiveKit's packet trailer (TrackInfo.packet_trailer_features).
        self.packet_trailer = packet_trailer
        self.kind = kind
        self.mid = mid
        self.rids = list(rids)
        self.extensions = dict(extensions)
        self.send_rtcp = send_rtcp
        self.clock = clock
        self._rtcp_ssrc = rtcp_ssrc
        # PT -> (codec kind, clock rate, mime); RTX and unknown PTs are None (not forwarded).
        self.codec_by_pt: list[tuple[int, int, str] | None] = [None] * 128
        self.mime_by_pt: dict[int, str] = {}
        for pt, mime in codecs.items():
            kind_code = codec_kind(mime)
            if 0 <= pt < 128 and kind_code != RTX:
                self.codec_by_pt[pt] = (kind_code, clock_rate(mime), mime.lower())
                self.mime_by_pt[pt] = mime.lower()
        self.clock_rate = next((c[1] for c in self.codec_by_pt if c is not None), 90000)
        by_uri = {uri: ext_id for ext_id, uri in extensions.items()}
        self.mid_ext = by_uri.get(URI_MID, 0)
        self.rid_ext = by_uri.get(URI_RID, 0)
        self.repaired_rid_ext = by_uri.get(URI_REPAIRED_RID, 0)
        self.audio_level_ext = by_uri.get(URI_AUDIO_LEVEL, 0) if kind == "audio" else 0
        # Transport-wide sequence numbers: their arrival goes back as feedback (media/twcc.py).
        self.twcc_ext = by_uri.get(URI_TRANSPORT_CC, 0) if twcc is not None else 0
        self.twcc = twcc
        size = CACHE_SIZE_AUDIO if kind == "audio" else CACHE_SIZE_VIDEO
        self.layers = [
            ReceiveLayer(self, i, rid, size) for i, rid in enumerate(self.rids or [None])
        ]
        if nack:  # the publisher negotiated generic NACK (RFC 4585 §4.2): recover its losses
            for layer in self.layers:
                layer.nacker = NackGenerator()
        self.nacks_sent = 0
        # Stream allocation order (media/allocator.py): screen shares and speakers first.
        self.priority = 0
        self.mime = next(iter(self.mime_by_pt.values()), f"{kind}/unknown")
        self.quality = QualityScorer(self.mime)  # the publisher's side of this track
        # Scalable video in one stream (VP9, or AV1 with its Dependency Descriptor): each
        # subscriber gets its own spatial/temporal layers (svc_downtrack.py).
        dd_ext = by_uri.get(URI_DEPENDENCY_DESCRIPTOR, 0)
        self.svc_codec = svc_codec(codecs, len(self.layers), extensions)
        self.svc = SvcLayers(self.svc_codec, dd_ext) if self.svc_codec else None
        self._svc_kind = self.svc_codec or -1  # never equal to a codec kind when not SVC
        self.downtracks: tuple[TrackSender, ...] = ()
        self._rewriters: dict[tuple[object, ...], ExtensionRewriter] = {}
        self.muted = False
        self.plis_sent = 0
        self.malformed = 0
        self._info = PacketInfo()
        self._scratch = PacketInfo()
        self._stamp = 0
        self._audio = AudioLevel()
        self._last_level_ts: int | None = None

    # -- hot path ----------------------------------------------------------------------------
    def _record_arrival(self, packet: bytes, header: RtpHeader, now: float) -> None:
        """The packet's transport-wide number and arrival, for the publisher's feedback."""
        found = find_extension(packet, header, self.twcc_ext)
        if found is not None and found[1] == 2:
            assert self.twcc is not None
            self.twcc.record(packet[found[0]] << 8 | packet[found[0] + 1], header.ssrc, now)

    def receive(self, layer: ReceiveLayer, packet: bytes, now: float) -> None:
        info = self._info
        if not self._parse_into(info, layer, packet, now):
            return
        first = not layer.packets
        header = info.header
        padding = header.payload_end == header.payload_offset
        layer.on_packet(info.sequence, info.timestamp, now, len(packet), info.clock_rate, padding)
        layer.cache[info.sequence & layer.cache_mask] = packet
        if self.twcc_ext:
            self._record_arrival(packet, header, now)
        nacker = layer.nacker
        if nacker is not None and now >= nacker.next_due:
            self._send_nacks(layer, nacker, now)
        if padding:  # a publisher's bandwidth probe: nothing to forward (RFC 3550 §5.1 P bit)
            for downtrack in self.downtracks:
                downtrack.skip(layer.index, info.sequence)
            return
        if self.audio_level_ext:
            self._observe_level(packet, info, now)
        if first:  # a layer started: re-choose layers, send a deferred keyframe request
            self._layers_changed(now)
        if self.muted:
            return
        for downtrack in self.downtracks:
            downtrack.forward(info)

    def _parse_into(self, info: PacketInfo, layer: ReceiveLayer, packet: bytes, now: float) -> bool:
        header = info.header
        try:
            parse_rtp(packet, header)
        except RtpError:
            self.malformed += 1
            return False
        codec = self.codec_by_pt[header.payload_type]
        if codec is None:
            return False
        kind = codec[0]
        self._stamp += 1
        info.stamp = self._stamp
        info.packet = packet
        info.layer = layer.index
        info.sequence = header.sequence
        info.timestamp = header.timestamp
        info.payload_type = header.payload_type
        info.marker = 0x80 if header.marker else 0
        info.clock_rate = codec[1]
        info.now = now
        if header.payload_end == header.payload_offset:  # padding only: no payload to read
            info.vp8.clear()
            info.keyframe = False
        elif kind == VP8:
            vp8 = info.vp8
            vp8.parse(packet, header.payload_offset, header.payload_end)
            info.keyframe = vp8.keyframe
        elif kind == self._svc_kind:
            info.vp8.picture_id_size = 0
            info.vp8.tl0picidx = -1
            assert self.svc is not None
            info.keyframe = self.svc.parse(info, packet, now)
        else:
            info.vp8.picture_id_size = 0
            info.vp8.tl0picidx = -1
            info.keyframe = kind == AUDIO or is_keyframe_start(
                kind, packet, header.payload_offset, header.payload_end
            )
        return True

    def _send_nacks(self, layer: ReceiveLayer, nacker: NackGenerator, now: float) -> None:
        """RFC 4585 §6.2.1: ask the publisher again for what is still missing."""
        lost = nacker.due(now)
        if lost and layer.ssrc is not None:
            self.nacks_sent += len(lost)
            self.send_rtcp(build_nack(self._rtcp_ssrc, layer.ssrc, lost))

    def _observe_level(self, packet: bytes, info: PacketInfo, now: float) -> None:
        found = find_extension(packet, info.header, self.audio_level_ext)
        if found is not None:
            self._observe(packet[found[0]] & 0x7F, info.timestamp, info.clock_rate, now)

    def _observe(self, level: int, timestamp: int, rate: int, now: float) -> None:
        """One packet's RFC 6464 level, lasting since the previous packet's timestamp."""
        last, self._last_level_ts = self._last_level_ts, timestamp
        duration = 20.0
        if last is not None:
            delta = (timestamp - last) & 0xFFFFFFFF
            duration = min(delta * 1000 / rate, 200.0) if delta < 0x80000000 else 0
        self._audio.observe(level, duration, now)

    # -- slow paths --------------------------------------------------------------------------
    def match(self, packet: bytes, header: RtpHeader) -> tuple[ReceiveLayer | None, bool]:
        """The layer an unknown SSRC belongs to, from the sdes:mid / rid extensions
        (RFC 8843 §15, RFC 8852 §3). Returns (layer, whether the packet carried a mid)."""
        mid = read_string_extension(packet, header, self.mid_ext) if self.mid_ext else None
        has_mid = mid is not None
        if mid != self.mid:
            return None, has_mid
        if self.repaired_rid_ext and find_extension(packet, header, self.repaired_rid_ext):
            return None, True  # RTX repair stream (RFC 8852 §3.2): not forwarded
        if self.codec_by_pt[header.payload_type] is None:
            return None, True
        if len(self.layers) == 1:
            return self.layers[0], True
        rid = read_string_extension(packet, header, self.rid_ext) if self.rid_ext else None
        if rid is None or rid not in self.rids:
            return None, True
        return self.layers[self.rids.index(rid)], True

    def parse_cached(self, layer_index: int, seq: int, now: float) -> PacketInfo | None:
        """A cached packet parsed into a scratch PacketInfo, for a NACK retransmission."""
        if not 0 <= layer_index < len(self.layers):
            return None
        if self.svc_codec == AV1:
            return None  # descriptors are read once, in order (SVC downtracks keep their sends)
        layer = self.layers[layer_index]
        packet = layer.cached(seq)
        if packet is None or not self._parse_into(self._scratch, layer, packet, now):
            return None
        return self._scratch

    def rewriter(
        self,
        subscriber_extensions: dict[str, int],
        *,
        strip_trailer: bool = False,
        rewritten: frozenset[str] = frozenset(),
    ) -> ExtensionRewriter:
        """The shared extension rewriter for a subscriber's extension map (one per mapping)."""
        candidate = ExtensionRewriter(
            self.extensions,
            subscriber_extensions,
            strip_trailer=strip_trailer and self.packet_trailer,
            rewritten=rewritten,
        )
        return self._rewriters.setdefault(candidate.key, candidate)

    def add_downtrack(self, downtrack: TrackSender) -> None:
        self.downtracks = (*self.downtracks, downtrack)
        downtrack.set_target(self.best_layer(downtrack.goal, self.clock()))

    def remove_downtrack(self, downtrack: TrackSender) -> None:
        self.downtracks = tuple(d for d in self.downtracks if d is not downtrack)

    def best_layer(self, wanted: int | None, now: float) -> int | None:
        """The highest live layer ≤ wanted, else the lowest live one above it, else wanted
        (nothing live yet: wait for it)."""
        if wanted is None or len(self.layers) == 1:
            return None if wanted is None else 0
        wanted = max(0, min(wanted, len(self.layers) - 1))
        live = [now - layer.last_arrival < LAYER_TIMEOUT for layer in self.layers]
        for index in range(wanted, -1, -1):
            if live[index]:
                return index
        for index in range(wanted + 1, len(self.layers)):
            if live[index]:
                return index
        return wanted

    def _layers_changed(self, now: float) -> None:
        if len(self.layers) > 1:
            for downtrack in self.downtracks:
                downtrack.set_target(self.best_layer(downtrack.goal, now))
        self.flush_keyframe_requests(now)

    def tick(self, now: float) -> None:
        if self.svc is not None:
            self.svc.tick(now)
        for layer in self.layers:
            layer.measure(now, now - layer.last_arrival < LAYER_TIMEOUT)
            if layer.nacker is not None and now >= layer.nacker.next_due:
                self._send_nacks(layer, layer.nacker, now)
        if len(self.layers) > 1 or self.svc_codec:
            for downtrack in self.downtracks:
                downtrack.set_target(self.best_layer(downtrack.goal, now))
        if self.kind == "video":
            for downtrack in self.downtracks:  # still waiting for a keyframe: ask again
                if downtrack.waiting_for_keyframe():
                    self.request_keyframe(downtrack.target)
        self.flush_keyframe_requests(now)

    def set_muted(self, muted: bool) -> None:
        """Publisher mute: forward nothing; on unmute every downtrack restarts on a keyframe."""
        if self.muted == muted:
            return
        self.muted = muted
        if not muted:
            for downtrack in self.downtracks:
                downtrack.restart()

    # -- keyframes ---------------------------------------------------------------------------
    def request_keyframe(self, layer: int | None = None) -> None:
        """PLI upstream (RFC 4585 §6.3.1) for one layer, or every layer a downtrack uses;
        throttled to one per PLI_INTERVAL per layer, deferred until the layer's SSRC is known."""
        if self.kind != "video":
            return
        if layer is None:
            wanted = {d.target for d in self.downtracks} | {d.current for d in self.downtracks}
            indices = [i for i in wanted if i is not None] or [
                layer.index for layer in self.layers if layer.ssrc is not None
            ]
        else:
            indices = [layer] if 0 <= layer < len(self.layers) else []
        now = self.clock()
        for index in indices:
            self.layers[index].pli_pending = True
        self.flush_keyframe_requests(now)

    def flush_keyframe_requests(self, now: float) -> None:
        for layer in self.layers:
            if (
                layer.pli_pending
                and layer.ssrc is not None
                and now - layer.last_pli >= PLI_INTERVAL
            ):
                layer.pli_pending = False
                layer.last_pli = now
                self.plis_sent += 1
                self.send_rtcp(build_pli(self._rtcp_ssrc, layer.ssrc))

    # -- reading -----------------------------------------------------------------------------
    def layer_costs(self) -> list[float]:
        """bps to forward each layer (simulcast) or each spatial layer with those below it
        (SVC): measured, else last measured, else announced, else LiveKit's preset rates."""
        if self.svc is not None:
            return self.svc.spatial_costs()
        costs = []
        for layer in self.layers:
            cost = layer.bitrate if layer.bitrate > 0 else layer.known_bitrate
            declared = layer.declared_bitrate
            if declared > 0:  # a layer (re)starting overshoots for a moment: not its cost
                cost = min(cost, DECLARED_MARGIN * declared) if cost > 0 else declared
            if cost <= 0:
                cost = DEFAULT_LAYER_BPS[min(layer.index, len(DEFAULT_LAYER_BPS) - 1)]
            costs.append(cost)
        return costs

    def audio_level(self) -> float:
        """0..1 (1 loudest), LiveKit's smoothed level; 0 when silent, stale or not audio."""
        return self._audio.level(self.clock())

    def is_speaking(self) -> bool:
        return self.audio_level() >= self._audio.active_threshold

    def stats(self) -> UpTrackStats:
        return UpTrackStats(
            packets=sum(layer.packets for layer in self.layers),
            bytes=sum(layer.bytes for layer in self.layers),
            layers_seen=[layer.index for layer in self.layers if layer.packets],
            plis_sent=self.plis_sent,
            malformed=self.malformed,
        )
