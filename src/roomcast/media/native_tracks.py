"""Uptracks and downtracks whose per-packet work runs in the native plane (native/ in C).

A `NativeUpTrack` is an `UpTrack` whose packets never reach Python: the engine's worker
thread receives, parses, caches and forwards them to its `NativeDownTrack`s. The Python objects
stay what the rest of the server reads and controls: layer choice, keyframe requests (PLI),
receiver and sender reports and stats. Python's decisions are pushed to the engine
(`Engine.control`); the engine's counters and rewrite state are pulled back (`sync`) on the
media tick and before every decision that reads them.
"""

from __future__ import annotations

import contextlib
import struct
from collections.abc import Callable
from typing import Any, Protocol

from .codecs import AUDIO, AV1, H264, H265, OTHER_VIDEO, RTX, VP8, VP9, codec_kind
from .downtrack import DownTrack
from .rtcp import build_nack
from .rtp import RtpError, parse_rtp
from .svc_downtrack import SvcDownTrack
from .twcc import HISTORY, TransportWide, TwccRecorder
from .uptrack import CACHE_SIZE_AUDIO, CACHE_SIZE_VIDEO, ReceiveLayer, UpTrack

# codecs.py kinds -> native/plane.h enum pt_kind: what the engine reads of each payload type.
PT_KINDS = {AUDIO: 1, VP8: 2, OTHER_VIDEO: 3, H264: 4, VP9: 5, AV1: 6, H265: 7}
NO_LAYER = -1  # native/: no target / no current layer
KEEP = -2  # Engine.control: leave the engine's current layer as it is
_SENT = struct.Struct("=qdI4x")  # native/plane.h tw_record
_ARRIVAL = struct.Struct("=dII")  # native/plane.h arrival
_LEVEL = struct.Struct("=dIIB7x")  # native/plane.h level_record
_LATEST = 1 << 62  # Engine.transport_sent from here on: no records, only the next number


class Engine(Protocol):
    """`roomcast.media._native.Engine` (native/module.c), as Python uses it."""

    @property
    def event_fd(self) -> int: ...

    def start(self) -> None: ...

    def stop(self) -> None: ...

    def events(self) -> list[tuple[int, int, int, bytes, Any]]: ...

    def counters(self) -> dict[str, int]: ...

    def add_transport(self) -> int: ...

    def key_transport(
        self, transport: int, host: str, port: int, profile: int, local: bytes, remote: bytes
    ) -> None: ...

    def set_address(self, transport: int, host: str, port: int) -> None: ...

    def unkey_transport(self, transport: int) -> None: ...

    def remove_transport(self, transport: int) -> None: ...

    def send_rtp(self, transport: int, packet: bytes) -> bool: ...

    def add_uptrack(
        self, video: bool, layers: int, pt_kinds: bytes, clock_rates: list[int], cache: int
    ) -> int: ...

    def remove_uptrack(self, uptrack: int) -> None: ...

    def bind_ssrc(self, transport: int, ssrc: int, uptrack: int, layer: int) -> None: ...

    def set_uptrack_muted(self, uptrack: int, muted: bool) -> None: ...

    def receive(self, uptrack: int, layer: int, packet: bytes) -> None: ...

    def uptrack_state(
        self, uptrack: int
    ) -> tuple[int, list[tuple[int, int, int, int, int, float, float]]]: ...

    def add_downtrack(
        self,
        uptrack: int,
        transport: int,
        ssrc: int,
        pt_map: bytes,
        ids: bytes,
        tw_id: int = 0,
        rtx_ssrc: int = 0,
        rtx_map: bytes = b"",
        strip_trailer: bool = False,
        dd_ext: int = 0,
    ) -> int: ...

    def remove_downtrack(self, downtrack: int) -> None: ...

    def control(self, downtrack: int, target: int, current: int, muted: bool) -> None: ...

    def downtrack_state(
        self, downtrack: int
    ) -> tuple[int, int, int, int, int, int, int, float, int, int, int, int, int]: ...

    def retransmit(self, downtrack: int, sequences: list[int]) -> tuple[int, int]: ...

    def set_transport_cc(self, transport: int, ext_id: int) -> None: ...

    def number(self, transport: int, packet: bytes) -> bytes: ...

    def transport_sent(self, transport: int, since: int) -> tuple[int, bytes]: ...

    def start_probe(
        self, transport: int, downtrack: int, bps: float, start: float, end: float
    ) -> None: ...

    def stop_probe(self, transport: int) -> None: ...

    def pad(self, downtrack: int, count: int) -> int: ...

    def set_uptrack_nack(self, uptrack: int, nack: bool) -> None: ...

    def set_transport_arrivals(self, transport: int, twcc_id: int) -> None: ...

    def arrivals(self, transport: int) -> bytes: ...

    def set_uptrack_levels(self, uptrack: int, ext_id: int) -> None: ...

    def levels(self, uptrack: int) -> bytes: ...

    def set_uptrack_svc(self, uptrack: int, pt_kind: int, dd_ext: int) -> None: ...

    def svc_stats(self, uptrack: int) -> tuple[float | None, list[float], list[int], list[int]]: ...

    def svc_control(self, downtrack: int, spatial: int, temporal: int, reset: bool) -> None: ...

    def svc_state(self, downtrack: int) -> tuple[int, int, int]: ...

    def check_nacks(self, uptrack: int) -> None: ...


def pull_arrivals(engine: Engine, transport: int, twcc: TwccRecorder) -> None:
    """Record the arrivals the engine stamped on a publisher's transport into its recorder
    (`TwccRecorder.before_flush`). The engine's stamps replace any Python took for the same
    packets: it stamped them as they were read, before handing any of them up."""
    try:
        blob = engine.arrivals(transport)
    except KeyError:  # the transport is gone
        return
    for now, sequence, ssrc in _ARRIVAL.iter_unpack(blob):
        twcc.record(sequence, ssrc, now)


def native_transport_id(callback: Callable[[bytes], None]) -> int:
    """The engine's id of the transport a send callback belongs to (`PeerTransport.send_rtp`
    / `send_rtcp`, or a method of an object with that transport as `.transport`), -1 when it
    is not a transport the engine knows."""
    owner = getattr(callback, "__self__", None)
    native_id = getattr(owner, "native_id", None)
    if native_id is None:
        native_id = getattr(getattr(owner, "transport", None), "native_id", -1)
    return native_id if isinstance(native_id, int) else -1


def offloadable(kind: str, codecs: dict[int, str], layers: int) -> bool:
    """Tracks the engine forwards itself: audio, and video in simulcast layers or one stream,
    scalable or not (VP8, H.264, H.265, VP9 and AV1; codecs it cannot read with every packet a
    start), LiveKit's packet trailer cut for the subscribers that need it."""
    kinds = {codec_kind(mime) for mime in codecs.values()} - {RTX}
    if not kinds or not 1 <= layers <= 4:
        return False
    if kind == "audio":
        return kinds == {AUDIO}
    return kind == "video" and AUDIO not in kinds


class NativeTransportWide(TransportWide):
    """A subscriber transport's transport-wide numbers when the engine sends on it: the engine
    numbers every packet (its own and Python's, `Engine.send_rtp`) and keeps what it sent;
    `refresh` reads its next number, `load` copies its send records where the downlink reads
    them (a feedback's range, a probe's), not every packet's on every tick. Python's own
    downtracks on the transport write their numbers into `scratch` (the engine overwrites them
    on the wire)."""

    __slots__ = ("engine", "loaded", "scratch", "transport")

    def __init__(self, engine: Engine, transport: int) -> None:
        super().__init__()
        self.engine = engine
        self.transport = transport
        self.scratch = TransportWide()
        self.loaded = 1  # records copied up to (not including) this number

    def refresh(self) -> None:
        try:
            self.next, _ = self.engine.transport_sent(self.transport, _LATEST)
        except KeyError:  # the transport closed before its subscriber left
            return

    def load(self, since: int) -> None:
        try:
            following, blob = self.engine.transport_sent(self.transport, max(since, self.loaded))
        except KeyError:
            return
        sent = self.sent
        for record in _SENT.iter_unpack(blob):
            sent[record[0] & (HISTORY - 1)] = record
        self.next = self.loaded = following

    def take(self, now: float, size: int) -> int:
        raise RuntimeError("the engine numbers this transport's packets")

    def start_padding(self, pad_from: object, bps: float, start: float, end: float) -> None:
        """The engine pads after each media packet of the transport (`Engine.start_probe`)
        when the padding track is its own; else Python pads on the tick only."""
        if isinstance(pad_from, NativeDownTrack):
            with contextlib.suppress(KeyError):  # the transport closed
                self.engine.start_probe(self.transport, pad_from.native_id, bps, start, end)

    def stop_padding(self) -> None:
        with contextlib.suppress(KeyError):
            self.engine.stop_probe(self.transport)


class NativeUpTrack(UpTrack):
    """An `UpTrack` whose receive path is the engine's; see the module docstring."""

    engine: Engine
    native_id: int
    transport_id: int  # the publisher's transport in the engine

    def attach(self, engine: Engine) -> None:
        """Create the engine's twin (call once, right after construction)."""
        self.engine = engine
        kinds = bytearray(128)
        rates = [0] * 128
        for pt, codec in enumerate(self.codec_by_pt):
            if codec is not None:
                kinds[pt] = PT_KINDS[codec[0]]
                rates[pt] = codec[1]
        cache = CACHE_SIZE_VIDEO if self.kind == "video" else CACHE_SIZE_AUDIO
        self.native_id = engine.add_uptrack(
            self.kind == "video", len(self.layers), bytes(kinds), rates, cache
        )
        if self.audio_level_ext:  # the speaker detector's input (audio_level pulls it)
            engine.set_uptrack_levels(self.native_id, self.audio_level_ext)
        if self.svc is not None:  # its layers read by the engine (svc_stats)
            engine.set_uptrack_svc(self.native_id, PT_KINDS[self.svc_codec], self.svc.dd_ext)
        # The engine keeps the NACK bookkeeping (EV_NACK events) of every layer.
        nack = any(layer.nacker is not None for layer in self.layers)
        engine.set_uptrack_nack(self.native_id, nack)
        for layer in self.layers:
            layer.nacker = None

    def send_nack(self, layer_index: int, sequences: list[int]) -> None:
        """EV_NACK: the engine's NACK bookkeeping wants these requested (UpTrack._send_nacks)."""
        if 0 <= layer_index < len(self.layers):
            layer = self.layers[layer_index]
            if layer.ssrc is not None and sequences:
                self.nacks_sent += len(sequences)
                self.send_rtcp(build_nack(self._rtcp_ssrc, layer.ssrc, sequences))

    def tick(self, now: float) -> None:
        self.engine.check_nacks(self.native_id)  # a layer that stalled after a gap
        super().tick(now)

    def bind(self, transport: int, layer_index: int, ssrc: int) -> None:
        self.engine.bind_ssrc(transport, ssrc, self.native_id, layer_index)

    def receive(self, layer: ReceiveLayer, packet: bytes, now: float) -> None:
        """A packet Python routed: one whose SSRC it just learnt (the engine handed it up), or
        one Python read itself (ICE-TCP). Forwarded by the engine like the rest; its arrival
        recorded here, where the engine read none (a stamp of the engine's replaces this)."""
        if self.twcc_ext:
            with contextlib.suppress(RtpError):
                self._record_arrival(packet, parse_rtp(packet), now)
        self.engine.receive(self.native_id, layer.index, packet)

    def set_muted(self, muted: bool) -> None:
        self.engine.set_uptrack_muted(self.native_id, muted)
        super().set_muted(muted)

    def audio_level(self) -> float:
        """As UpTrack's, on the levels the engine read since the last call."""
        if self.audio_level_ext:
            with contextlib.suppress(KeyError):  # removed: nothing more to read
                for now, timestamp, rate, level in _LEVEL.iter_unpack(
                    self.engine.levels(self.native_id)
                ):
                    self._observe(level, timestamp, rate, now)
        return super().audio_level()

    def sync(self) -> None:
        """Receive statistics from the engine (for reports, layer liveness and stats)."""
        malformed, layers = self.engine.uptrack_state(self.native_id)
        self.malformed = malformed
        for layer, state in zip(self.layers, layers, strict=False):
            packets, size, base, max_seq, cycles, jitter, last_arrival = state
            layer.packets, layer.bytes, layer.base_seq, layer.max_seq = packets, size, base, max_seq
            layer.cycles, layer.jitter, layer.last_arrival = cycles, jitter, last_arrival
        svc = self.svc
        if svc is not None:  # what SvcLayers.parse would have counted since the last sync
            started, seen, frames, sizes = self.engine.svc_stats(self.native_id)
            if svc.started is None:
                svc.started = started
            for i, (at, count, size) in enumerate(zip(seen, frames, sizes, strict=True)):
                svc.spatial_seen[i] = max(svc.spatial_seen[i], at)
                svc.frames[i] += count
                svc.spatial_bytes[i] += size

    def started_layer(self, now: float) -> None:
        """The engine saw a layer's first packet (UpTrack.receive's `first`)."""
        self.sync()
        self._layers_changed(now)


class NativeDownTrack(DownTrack):
    """A `DownTrack` whose forwarding, rewrite and retransmissions run in the engine."""

    engine: Engine
    native_id: int

    def attach(self, engine: Engine, transport: int) -> None:
        """Create the engine's twin; `transport` -1 hands each packet back to `send_rtp`."""
        assert isinstance(self.uptrack, NativeUpTrack)
        self.engine = engine
        pt_map = bytes(pt if 0 <= pt < 128 else 255 for pt in self.pt_map)
        ids = bytes(self.rewriter.ids)
        tw_id = self.rewriter.tw_id if self.tw is not None else 0
        rtx_map = bytes(pt if 0 <= pt < 128 else 255 for pt in self.rtx_pt)
        dd_ext = self.dd_ext if isinstance(self, SvcDownTrack) else 0
        self.native_id = engine.add_downtrack(
            self.uptrack.native_id, transport, self.ssrc, pt_map, ids, tw_id, self.rtx_ssrc,
            rtx_map, self.rewriter.strip_trailer, dd_ext,
        )  # fmt: skip
        self._push(KEEP)

    def _push(self, current: int) -> None:
        target = NO_LAYER if self.target is None else self.target
        self.engine.control(self.native_id, target, current, self.muted)

    def sync(self) -> None:
        (
            current,
            self.packets_sent,
            self.bytes_sent,
            self.payload_octets,
            self.retransmits,
            self.nacks_dropped,
            self.last_ts,
            self.last_time,
            self.ts_offset,
            self.epoch_layer,
            self.seq_offset,
            started,
            self.padding_sent,
        ) = self.engine.downtrack_state(self.native_id)
        self.current = None if current < 0 else current
        self.started = bool(started)

    # -- control: Python decides, the engine carries out ------------------------------------
    def set_target(self, layer: int | None) -> None:
        self.sync()
        super().set_target(layer)
        self._push(NO_LAYER if self.current is None else KEEP)

    def set_muted(self, muted: bool) -> None:
        self.sync()
        super().set_muted(muted)
        self._push(NO_LAYER if self.current is None else KEEP)

    def restart(self) -> None:
        super().restart()
        self._push(NO_LAYER)

    def waiting_for_keyframe(self) -> bool:
        self.sync()
        return super().waiting_for_keyframe()

    def request_keyframe(self) -> None:
        self.sync()
        super().request_keyframe()

    def retransmit(self, sequences: list[int], now: float) -> None:
        self.nacks += len(sequences)
        self.engine.retransmit(self.native_id, sequences)

    def send_padding(self, now: float) -> int:
        """One probe padding packet, sent by the engine on our RTX stream (its sequence
        numbers are the engine's)."""
        try:
            size = self.engine.pad(self.native_id, 1)
        except KeyError:  # removed while a probe still named it: no padding
            return 0
        self.padding_sent += size
        return size

    def sender_report(self, now: float, ntp_now: int) -> bytes | None:
        self.sync()
        return super().sender_report(now, ntp_now)


class NativeSvcDownTrack(NativeDownTrack, SvcDownTrack):
    """A subscriber's layers of a scalable stream (VP9 SVC, AV1 with its Dependency
    Descriptor), selected, renumbered and rewritten in the engine (native/svc_forward.h).
    Python chooses the layers as `SvcDownTrack` does and pushes them (`Engine.svc_control`);
    the selector whose state counts is the engine's (`self.selector` keeps the target only)."""

    def _update_selector(self, now: float) -> bool:
        if self.goal is None:
            return False
        layers = self.uptrack.svc
        assert layers is not None
        spatial = layers.best_spatial(self.goal, now)
        temporal = layers.temporal_for_fps(self.wanted_fps)
        was = self.selector.target_spatial
        self.selector.set_target(spatial, temporal)
        self.engine.svc_control(self.native_id, spatial, temporal, False)
        return spatial != was and self._needs_keyframe()

    def _needs_keyframe(self) -> bool:
        _, needs, self.dropped = self.engine.svc_state(self.native_id)
        return bool(needs)

    def restart(self) -> None:
        super().restart()
        target = self.selector
        self.engine.svc_control(self.native_id, target.target_spatial, target.target_temporal, True)

    def waiting_for_keyframe(self) -> bool:
        self.sync()
        if self.muted or self.target is None:
            return False
        return self.current is None or self._needs_keyframe()

    def sync(self) -> None:
        super().sync()
        _, _, self.dropped = self.engine.svc_state(self.native_id)
