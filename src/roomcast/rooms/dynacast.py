"""Dynacast: tell publishers which simulcast layers someone watches
(docs/protocol/04-subscribing.md §4.7).

For every simulcast video track the highest layer any subscriber receives or will receive is
the top enabled quality: what it asked for, within what its stream allocation allows
(`DownTrack.goal`, media/allocator.py); layers above it (all of them when nobody watches, or
when every subscriber's link is too slow for any) are disabled with a
``SubscribedQualityUpdate``, so the publisher stops encoding and sending them. Enabling is sent
at once (a new viewer must not wait); disabling only after the need has been gone for
``PAUSE_DELAY`` seconds (livekit-server's ``dynacast_pause_delay``), so brief changes such as a
resize do not make the publisher restart encoders. SDKs act on it when dynacast is on.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from livekit.protocol import models, rtc

from roomcast.media.downtrack import DownTrack

PAUSE_DELAY = 5.0  # seconds (livekit-server video.dynacast_pause_delay)

_QUALITIES = [models.VideoQuality.LOW, models.VideoQuality.MEDIUM, models.VideoQuality.HIGH]

# track sid → (publisher's send_signal, codec name such as "vp8", number of layers)
TrackTarget = tuple[Callable[[rtc.SignalResponse], None], str, int]


@dataclass
class _TrackState:
    sent: int  # highest enabled layer as last sent (-1: none); publishers start with all
    lower_since: float | None = None  # when the wanted layer first dropped below `sent`


class Dynacast:
    def __init__(self, pause_delay: float = PAUSE_DELAY) -> None:
        self.pause_delay = pause_delay
        self._states: dict[str, _TrackState] = {}

    def tick(
        self, now: float, tracks: dict[str, TrackTarget], downtracks: Iterable[DownTrack]
    ) -> None:
        wanted: dict[str, int] = {}
        for downtrack in downtracks:
            layer = downtrack.goal
            if layer is not None and downtrack.track_sid in tracks:
                wanted[downtrack.track_sid] = max(wanted.get(downtrack.track_sid, -1), layer)
        for sid in [sid for sid in self._states if sid not in tracks]:
            del self._states[sid]  # unpublished
        for sid, (send_signal, codec, layers) in tracks.items():
            state = self._states.get(sid)
            if state is None:
                state = self._states[sid] = _TrackState(sent=layers - 1)
            top = min(wanted.get(sid, -1), layers - 1)
            if top > state.sent:
                self._send(send_signal, sid, codec, layers, top, state)
            elif top < state.sent:
                if state.lower_since is None:
                    state.lower_since = now
                elif now - state.lower_since >= self.pause_delay:
                    self._send(send_signal, sid, codec, layers, top, state)
            else:
                state.lower_since = None

    @staticmethod
    def _send(
        send_signal: Callable[[rtc.SignalResponse], None],
        sid: str,
        codec: str,
        layers: int,
        top: int,
        state: _TrackState,
    ) -> None:
        state.sent = top
        state.lower_since = None
        qualities = [
            rtc.SubscribedQuality(quality=quality, enabled=index <= top)
            for index, quality in enumerate(_QUALITIES[:layers])
        ]
        send_signal(
            rtc.SignalResponse(
                subscribed_quality_update=rtc.SubscribedQualityUpdate(
                    track_sid=sid,
                    subscribed_qualities=qualities,
                    subscribed_codecs=[rtc.SubscribedCodec(codec=codec, qualities=qualities)],
                )
            )
        )
