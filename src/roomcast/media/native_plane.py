"""The native forwarding plane: the C extension `roomcast.media._native` (sources in native/)
behind the same `ForwardingPlane` interface.

Split of work. The engine (no GIL) owns the UDP socket's receive side and the per-packet path
of offloaded tracks (`native_tracks.offloadable`: audio, and video in simulcast layers or one
stream, scalable or not): recvmmsg, SRTP unprotect (libsrtp2), RTP parse, keyframe starts (VP8,
H.264 and H.265 parameter sets, VP9, AV1), routing by SSRC, rewrite per subscriber (SSRC,
sequence number, timestamp, payload type, extension ids, VP8 picture id / TL0PICIDX, LiveKit's
packet trailer cut for subscribers that do not read it), the NACK cache and retransmissions,
SRTP protect, sendmmsg; it keeps audio levels for Python's speaker detector (`Engine.levels`).
Scalable video in one stream (VP9 SVC, AV1 with its Dependency Descriptor) goes through each
subscriber's selector in the engine (native/svc.h, native/dd.h, native/svc_forward.h: the
twins of vp9.py, av1.py and svc_downtrack.py): its spatial and temporal layers, sequence
numbers without holes, the marker at the end of its top layer, AV1's descriptor rewritten for
it. Python chooses those layers (`Engine.svc_control`) from what the engine counts
(`Engine.svc_stats`).

Threads (`rtc.forwarding_threads`: auto by default, two where there are two cores; overridden
by the ROOMCAST_FORWARDING_THREADS environment variable). One receive thread does recvmmsg,
unprotect, parse, the publisher side (layer statistics, NACK cache and bookkeeping, arrivals)
and routing. With one sender it also rewrites, protects and sends, as the engine always did.
With N > 1 the fan-out is split over N sender threads, so that one room with hundreds of
subscribers uses every core: each subscriber transport belongs to one sender (the one with
fewest transports when it is created), and so do its downtracks; the receive thread copies a
packet once into a refcounted buffer and queues it, with its parsed header, to each sender
owning one of the uptrack's downtracks (a bounded single-producer/single-consumer ring per
sender; full: dropped and counted in `counters()["queue_dropped"]`, the receive thread never
waits). Under light load (a batch of at most two datagrams) it forwards for a sender with
nothing queued itself, under that sender's lock (`counters()["inlined"]`): waking a sender for
every packet cost more than the forwarding at low rates. A transport's SRTP send context,
transport-wide counter and send records, probe, and its downtracks' rewrite and RTX state are
only touched under its sender's lock, which the sender holds while it works. Python's calls on
that state (control, retransmit, pad, send_rtp, number, the state reads) take the same lock and
run synchronously on the owner's send batch, so they return what they did and keep a
transport's packets on one SRTP context and one counter; adding or removing anything takes
every lock, so no sender ever sees a freed object.

Python keeps ICE, DTLS, SCTP, RTCP policy (reports, PLI throttling, layer choice),
and every track the engine does not take (`native_tracks.offloadable`): those run exactly as in
the Python plane, on plain packets the engine hands up. The two talk through events (see
`UdpMux.native_events`) and the calls of `native_tracks.Engine`.

Congestion control (rtc.congestion_control, on by default) runs with offloaded tracks; the
estimator and the allocator stay Python's (downlink.py, bwe.py, allocator.py), the engine
does the per-packet part:
- Subscribers: one transport-wide counter per transport (`Engine.set_transport_cc` gives the
  subscriber's extension id). The engine writes the next number into every RTP packet it sends
  there, forwarded or Python's own (`Engine.send_rtp` finds the element; over ICE-TCP Python
  sends, after `Engine.number`), and keeps (number, send time, size) in a ring of
  twcc.HISTORY; the subscriber's downlink reads it through `NativeTransportWide.refresh` when
  feedback arrives and on the tick. Retransmissions go on the subscriber's RTX stream (RFC 4588
  §4) with new numbers. A probe's padding is paced by the engine after each media packet on
  the transport (`Engine.start_probe`, Downlink.pad's rule) when the padding track is an
  offloaded one, else by Python on the tick only.
- Publishers: the engine records (transport-wide number, arrival) of every RTP packet it
  reads on a publisher's transport, offloaded track or not, before it hands any up to Python;
  `TwccRecorder.before_flush` pulls them before every feedback, so the feedback is built as on
  the Python plane, every TwccRecorder.interval (the engine tells Python, EV_ARRIVALS, when
  arrivals have waited that long). Were Python's own stamps used for the packets it is handed
  (audio, say), a feedback sent while some of them still waited in the event queue would
  report them lost, and the publisher's estimator would back off (Chrome's loss-based one kept
  its top simulcast layer off under load); packets Python reads itself (ICE-TCP) it stamps.
  NACK bookkeeping per layer is the engine's (native/nack.h, nack.py's schedule); due
  requests come up as EV_NACK events and Python sends the RTCP (SRTCP stays Python's).
The allocator's layer ceilings arrive as the downtrack's target through `Engine.control`.

Choice of plane: `rtc.forwarding_plane` (python | native | auto), overridden by the
ROOMCAST_FORWARDING_PLANE environment variable; auto takes the native plane where it was built.
"""

from __future__ import annotations

import contextlib
import logging
import os
import struct
from collections.abc import Callable
from types import ModuleType
from typing import Any, Protocol, TypedDict

from .downlink import Downlink
from .downtrack import DownTrack
from .forwarding_plane import UNKNOWN_SSRC_RATE, ForwardingPlane
from .native_tracks import (
    Engine,
    NativeDownTrack,
    NativeSvcDownTrack,
    NativeTransportWide,
    NativeUpTrack,
    native_transport_id,
    offloadable,
    pull_arrivals,
)
from .twcc import TwccRecorder
from .uptrack import ReceiveLayer, UpTrack

logger = logging.getLogger(__name__)

PLANES = ("python", "native", "auto")
ENV_VARIABLE = "ROOMCAST_FORWARDING_PLANE"
THREADS_VARIABLE = "ROOMCAST_FORWARDING_THREADS"
MAX_THREADS = 8  # native/plane.h MAX_SENDERS
HOW_TO_BUILD = (
    "the native forwarding plane is not built (%s): the Python plane runs. To get it, install "
    "gcc and the headers of Python, libsrtp2 and OpenSSL (Debian: gcc python3-dev "
    "libsrtp2-dev libssl-dev), then "
    "reinstall roomcast (pip install -e .)"
)
_said_so = False

EV_DATAGRAM, EV_RTP, EV_RTCP, EV_LAYER_STARTED, EV_SEND, EV_NACK, EV_ARRIVALS = range(7)
# (native/plane.h enum event_kind)


def native_module() -> tuple[ModuleType | None, str]:
    """The extension module, or None and why not."""
    try:
        from . import _native  # type: ignore[attr-defined]
    except ImportError as exc:
        return None, str(exc)
    return _native, ""


def choose_plane(configured: str) -> str:
    """'python' or 'native': the configured plane (or the environment's), auto resolved.
    Logs once when the native plane was wanted but is not built."""
    global _said_so
    wanted = os.environ.get(ENV_VARIABLE, "").strip().lower() or configured
    if wanted not in PLANES:
        raise ValueError(f"forwarding plane {wanted!r}: expected one of {', '.join(PLANES)}")
    if wanted == "python":
        return "python"
    module, reason = native_module()
    if module is None:
        if not _said_so:
            _said_so = True
            logger.warning(HOW_TO_BUILD, reason)
        if wanted == "native":
            raise RuntimeError(f"rtc.forwarding_plane is native but it is not built: {reason}")
        return "python"
    return "native"


def forwarding_threads(configured: str) -> int:
    """The engine's sender threads: `rtc.forwarding_threads` (or the environment's), auto
    resolved to two where there are at least two cores, else one."""
    wanted = os.environ.get(THREADS_VARIABLE, "").strip().lower() or str(configured)
    if wanted == "auto":
        return min(2, os.cpu_count() or 1)
    if not wanted.isdigit() or not 1 <= int(wanted) <= MAX_THREADS:
        raise ValueError(f"forwarding threads {wanted!r}: expected auto or 1 to {MAX_THREADS}")
    return int(wanted)


class MuxOptions(TypedDict):
    native: bool
    native_threads: int


def mux_options(plane: str, threads: str) -> MuxOptions:
    """`UdpMux`'s arguments for `rtc.forwarding_plane` and `rtc.forwarding_threads`."""
    native = choose_plane(plane) == "native"
    return {"native": native, "native_threads": forwarding_threads(threads)}


def new_engine(fd: int, threads: int = 1) -> Engine:
    module, reason = native_module()
    if module is None:
        raise RuntimeError(reason)
    engine: Engine = module.Engine(fd, threads)
    return engine


class NativeForwardingPlane(ForwardingPlane):
    """`ForwardingPlane` with eligible tracks forwarded by the engine. `engine` gives the
    running engine (None before the UDP mux started, or after it stopped: then every track
    is a Python one)."""

    def __init__(
        self,
        engine: Callable[[], Engine | None],
        *,
        unknown_ssrc_rate: float = UNKNOWN_SSRC_RATE,
        **kwargs: Any,
    ) -> None:
        super().__init__(unknown_ssrc_rate=unknown_ssrc_rate, **kwargs)
        self._engine = engine
        self._native_up: dict[int, NativeUpTrack] = {}
        self._native_down: dict[int, NativeDownTrack] = {}
        # Publishers whose arrivals the engine records: transport → recorder, track → transport.
        self._recorders: dict[int, TwccRecorder] = {}
        self._recorded_by: dict[str, int] = {}

    # -- construction ------------------------------------------------------------------------
    def _new_uptrack(self, track_sid: str, kind: str, **kwargs: Any) -> UpTrack:
        engine = self._engine()
        transport = native_transport_id(kwargs["send_rtcp"])
        if engine is None or transport < 0:
            return super()._new_uptrack(track_sid, kind, **kwargs)
        layers = max(1, len(kwargs["rids"]))
        track: UpTrack
        if offloadable(kind, kwargs["codecs"], layers):
            native = NativeUpTrack(track_sid, kind, **kwargs)
            native.attach(engine)
            native.transport_id = transport
            self._native_up[native.native_id] = native
            track = native
        else:
            track = super()._new_uptrack(track_sid, kind, **kwargs)
        if track.twcc is not None and track.twcc_ext:
            self._record_arrivals(engine, transport, track_sid, track.twcc, track.twcc_ext)
        return track

    def _record_arrivals(
        self, engine: Engine, transport: int, track_sid: str, twcc: TwccRecorder, ext_id: int
    ) -> None:
        """The engine stamps the publisher's packets on `transport`; `twcc` pulls them."""
        try:
            engine.set_transport_arrivals(transport, ext_id)
        except KeyError:  # a transport already closed
            return
        self._recorders[transport] = twcc
        self._recorded_by[track_sid] = transport
        twcc.before_flush = lambda: pull_arrivals(engine, transport, twcc)

    def add_downtrack(self, track_sid: str, subscriber: str, **kwargs: Any) -> DownTrack:
        """As the Python plane's; a subscriber on a transport the engine knows gets a downlink
        on the engine's transport-wide numbers (created here, before its first downtrack)."""
        engine, transport = self._engine(), native_transport_id(kwargs["send_rtp"])
        if engine is None or transport < 0 or track_sid not in self._uptracks:
            return super().add_downtrack(track_sid, subscriber, **kwargs)
        downlink = self._downlinks.get(subscriber)
        if downlink is None:
            self._downlinks[subscriber] = Downlink(
                subscriber,
                self._by_subscriber.setdefault(subscriber, {}),
                enabled=self.congestion_control,
                allow_pause=self._allow_pause.get(subscriber, self.allow_pause),
                transport_wide=NativeTransportWide(engine, transport),
            )
        elif isinstance(downlink.tw, NativeTransportWide) and downlink.tw.transport != transport:
            downlink.tw = NativeTransportWide(engine, transport)  # a new PeerConnection
            downlink.tw.pad = downlink.pad
        return super().add_downtrack(track_sid, subscriber, **kwargs)

    def _new_downtrack(self, track: UpTrack, subscriber: str, **kwargs: Any) -> DownTrack:
        engine = self._engine()
        tw = kwargs["transport_wide"]
        if isinstance(tw, NativeTransportWide):
            kwargs["transport_wide"] = tw.scratch  # the engine numbers this transport
        if engine is None or not isinstance(track, NativeUpTrack):
            downtrack = super()._new_downtrack(track, subscriber, **kwargs)
        else:
            kind = NativeSvcDownTrack if track.svc_codec else NativeDownTrack
            downtrack = kind(track, subscriber, **kwargs)
            downtrack.attach(engine, native_transport_id(kwargs["send_rtp"]))
            self._native_down[downtrack.native_id] = downtrack
        if isinstance(tw, NativeTransportWide) and downtrack.tw is not None:
            with contextlib.suppress(KeyError):  # a transport already closed
                tw.engine.set_transport_cc(tw.transport, downtrack.rewriter.tw_id)
        return downtrack

    def _layer_bound(self, layer: ReceiveLayer, ssrc: int) -> None:
        track = layer.track
        if isinstance(track, NativeUpTrack):
            track.bind(track.transport_id, layer.index, ssrc)

    def remove_downtrack(self, track_sid: str, subscriber: str) -> None:
        downtrack = self.downtrack(track_sid, subscriber)
        if isinstance(downtrack, NativeDownTrack):
            downtrack.sync()  # final counters for totals()
        super().remove_downtrack(track_sid, subscriber)
        if isinstance(downtrack, NativeDownTrack):
            self._native_down.pop(downtrack.native_id, None)
            downtrack.engine.remove_downtrack(downtrack.native_id)

    def remove_uptrack(self, track_sid: str) -> None:
        track = self.uptrack(track_sid)
        if isinstance(track, NativeUpTrack):
            track.sync()
        transport = self._recorded_by.pop(track_sid, None)
        if transport is not None and transport not in self._recorded_by.values():
            self._recorders.pop(transport, None)
        super().remove_uptrack(track_sid)
        if isinstance(track, NativeUpTrack):
            self._native_up.pop(track.native_id, None)
            track.engine.remove_uptrack(track.native_id)

    # -- reading and timers -----------------------------------------------------------------
    def sync(self) -> None:
        """Pull the engine's counters into the Python tracks."""
        for track in self._native_up.values():
            track.sync()
        for downtrack in self._native_down.values():
            downtrack.sync()

    def tick(self) -> None:
        self.sync()
        super().tick()

    def totals(self) -> Any:
        self.sync()
        return super().totals()

    # -- engine events (UdpMux.native_events hands them here) -------------------------------
    def on_engine_event(self, kind: int, native_id: int, arg: int, data: bytes) -> None:
        if kind == EV_SEND:  # a downtrack whose transport the engine does not send on
            downtrack = self._native_down.get(native_id)
            if downtrack is not None:
                downtrack.send_rtp(data)
        elif kind == EV_LAYER_STARTED:
            track = self._native_up.get(native_id)
            if track is not None:
                track.started_layer(self._clock())
        elif kind == EV_ARRIVALS:  # a publisher's feedback is due (TwccRecorder.interval)
            twcc = self._recorders.get(native_id)
            if twcc is not None:
                twcc.flush(self._clock())
        elif kind == EV_NACK:
            track = self._native_up.get(native_id)
            if track is not None:
                track.send_nack(arg, list(struct.unpack(f"!{len(data) // 2}H", data)))


class EngineHost(Protocol):
    """What the native plane needs of the UDP mux (media/udp_mux.py `UdpMux`)."""

    native: bool
    engine: Engine | None
    on_engine_event: Callable[[int, int, int, bytes], None]


def new_forwarding_plane(
    mux: EngineHost,
    *,
    unknown_ssrc_rate: float,
    congestion_control: bool,
    allow_pause: bool,
) -> ForwardingPlane:
    """The plane for `mux`: the native one when the mux runs the engine, else Python's."""
    if not mux.native:
        return ForwardingPlane(
            unknown_ssrc_rate=unknown_ssrc_rate,
            congestion_control=congestion_control,
            allow_pause=allow_pause,
        )
    native = NativeForwardingPlane(
        lambda: mux.engine,
        unknown_ssrc_rate=unknown_ssrc_rate,
        congestion_control=congestion_control,
        allow_pause=allow_pause,
    )
    mux.on_engine_event = native.on_engine_event
    return native
