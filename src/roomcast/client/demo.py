"""A participant that joins a room and (optionally) publishes a demo: what `roomcast room join
--publish-demo` runs. Roomcast's own WebRTC client, so nothing beyond `pip install roomcast`.

The video is the colour-bar pattern of pattern.py (VP8, 640x360, 15 fps, one layer); the audio a
440 Hz tone, real opus packets looped from tone_opus.py, with an RFC 6464 audio level so the
room sees a speaker. What happens in the room (participants joining and leaving, tracks
published, muted, removed) is reported through ``on_event`` as one line each, from the
signalling updates (docs/protocol/05-room-and-participant-updates.md). Data packets are not
received: this client has no data channel.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import aiohttp
from livekit.protocol import models
from livekit.protocol import rtc as proto

from roomcast.media.rtp import URI_AUDIO_LEVEL, URI_MID
from roomcast.media.sdp import Codec, Extmap, SdpError

from . import tone_opus
from .media import (
    EXT_AUDIO_LEVEL,
    EXT_MID,
    OPUS_PT,
    VP8_PT,
    AudioSender,
    LayerState,
    Sender,
    VideoLayer,
    VideoSender,
)
from .pattern import PatternFrames
from .peer import ClientPeer, LocalTrack
from .signal import PUBLISHER, SUBSCRIBER, SignalClient

CONNECT_TIMEOUT = 15.0
TICK = 0.005  # s between sender ticks: the media clock of the demo
VIDEO = VideoLayer("f", 640, 360, 400_000, 15)
TONE_LEVEL = 12  # dBov below full scale: the tone is at about -12 dBFS


class PatternSender(VideoSender):
    """A VideoSender whose frames are the test pattern; a keyframe every second."""

    def __init__(self, send_rtp: Callable[[bytes], None], send_rtcp: Callable[[bytes], None]):
        super().__init__(
            send_rtp, send_rtcp, mid="1", layers=(VIDEO,), simulcast=False, keyframe_interval=1.0
        )
        self.pattern = PatternFrames(VIDEO.width, VIDEO.height)
        self.frames_sent = 0

    def frame_data(self, state: LayerState, key: bool) -> bytes:
        self.frames_sent += 1
        return self.pattern.frame(self.frames_sent, key=key)


def describe_track(track: models.TrackInfo) -> str:
    kind = models.TrackType.Name(track.type).lower()
    source = models.TrackSource.Name(track.source).lower()
    return f"{kind} track {track.sid} ({source}{', muted' if track.muted else ''})"


class DemoParticipant:
    def __init__(
        self,
        url: str,
        token: str,
        session: aiohttp.ClientSession,
        *,
        publish: bool = False,
        auto_subscribe: bool = False,
        on_event: Callable[[str], None] = print,
    ) -> None:
        self.url = url
        self.token = token
        self.publish = publish
        self.auto_subscribe = auto_subscribe
        self.on_event = on_event
        self.signal = SignalClient(session)
        self.subscriber = ClientPeer()
        self.publisher: ClientPeer | None = None
        self.senders: list[Sender] = []
        self.published: list[models.TrackInfo] = []
        self.packets_received = 0
        self._participants: dict[str, models.ParticipantInfo] = {}  # sid → last seen
        self._clock: asyncio.Task[None] | None = None

    async def join(self) -> proto.JoinResponse:
        """Connect (raises signal.SignalError with the server's reason) and publish."""
        await self.subscriber.start()
        self.subscriber.on_rtp = self._on_rtp
        self.signal.on_offer = self._on_subscriber_offer
        self.signal.on_answer = self._on_publisher_answer
        self.signal.on_trickle = self._on_trickle
        self.signal.on_update = self._on_update
        self.signal.on_message = self._on_message
        join = await self.signal.connect(self.url, self.token, auto_subscribe=self.auto_subscribe)
        me = join.participant
        self.on_event(
            f"joined room {join.room.name} ({join.room.sid}) as {me.identity} ({me.sid}), "
            f"server {join.server_info.version or join.server_version or '?'}"
        )
        for other in join.other_participants:
            self._participants[other.sid] = other
            self.on_event(f"in the room: {self._who(other)}")
            for track in other.tracks:
                self.on_event(f"  {other.identity} publishes {describe_track(track)}")
        if self.publish:
            await self._publish()
        self._clock = asyncio.get_running_loop().create_task(self._run_clock())
        return join

    async def _publish(self) -> None:
        peer = self.publisher = ClientPeer()
        await peer.start()
        audio = AudioSender(
            peer.send_rtp, peer.send_rtcp, mid="0", payloads=tone_opus.packets(), level=TONE_LEVEL
        )
        video = PatternSender(peer.send_rtp, peer.send_rtcp)
        stream_id = "roomcast-demo"
        tracks = [
            LocalTrack(
                kind="audio",
                track_id="demo-tone",
                stream_id=stream_id,
                codecs=[Codec(OPUS_PT, "opus", 48000, 2, "minptime=10;useinbandfec=1", ["nack"])],
                extmaps=[Extmap(EXT_AUDIO_LEVEL, URI_AUDIO_LEVEL), Extmap(EXT_MID, URI_MID)],
                ssrcs=[audio.stream.ssrc],
            ),
            LocalTrack(
                kind="video",
                track_id="demo-pattern",
                stream_id=stream_id,
                codecs=[Codec(VP8_PT, "VP8", 90000, None, None, ["nack", "nack pli", "ccm fir"])],
                extmaps=[Extmap(EXT_MID, URI_MID)],
                ssrcs=[video.streams[0].ssrc],
            ),
        ]
        requests = [
            proto.AddTrackRequest(
                cid="demo-tone",
                name="tone",
                type=models.TrackType.AUDIO,
                source=models.TrackSource.MICROPHONE,
            ),
            proto.AddTrackRequest(
                cid="demo-pattern",
                name="test pattern",
                type=models.TrackType.VIDEO,
                source=models.TrackSource.CAMERA,
                width=VIDEO.width,
                height=VIDEO.height,
                layers=[
                    models.VideoLayer(
                        quality=models.VideoQuality.HIGH,
                        width=VIDEO.width,
                        height=VIDEO.height,
                        bitrate=VIDEO.bitrate,
                        ssrc=video.streams[0].ssrc,
                    )
                ],
            ),
        ]
        infos = await asyncio.wait_for(
            asyncio.gather(*(self.signal.add_track(r) for r in requests)), CONNECT_TIMEOUT
        )
        self.signal.send_offer(peer.create_offer(tracks), 1)
        senders: list[Sender] = [audio, video]

        def on_rtcp(packet: bytes) -> None:
            for sender in senders:
                sender.handle_rtcp(packet)

        peer.on_rtcp = on_rtcp
        await peer.wait_connected(CONNECT_TIMEOUT)
        self.senders = senders
        self.published = list(infos)
        for info in infos:
            self.on_event(f"publishing {describe_track(info)}: {_demo_of(info)}")

    async def _run_clock(self) -> None:
        while True:
            now = time.monotonic()
            for sender in self.senders:
                sender.tick(now)
            await asyncio.sleep(TICK)  # the media clock's period, not a wait for state

    async def leave(self) -> None:
        if self._clock is not None:
            self._clock.cancel()
        try:
            await asyncio.wait_for(self.signal.leave(), 5)
        except (TimeoutError, aiohttp.ClientError, OSError):
            pass
        self.subscriber.close()
        if self.publisher is not None:
            self.publisher.close()

    # -- signalling ------------------------------------------------------------------------
    def _on_subscriber_offer(self, offer: proto.SessionDescription) -> None:
        try:
            answer = self.subscriber.answer(offer.sdp)
        except SdpError as exc:
            self.on_event(f"cannot answer the server's offer: {exc}")
            return
        self.signal.send_answer(answer, offer.id)

    def _on_publisher_answer(self, answer: proto.SessionDescription) -> None:
        if self.publisher is not None:
            try:
                self.publisher.set_answer(answer.sdp)
            except SdpError as exc:
                self.on_event(f"bad answer from the server: {exc}")

    def _on_trickle(self, candidate: str, target: int) -> None:
        if target == SUBSCRIBER:
            self.subscriber.add_remote_candidate(candidate)
        elif target == PUBLISHER and self.publisher is not None:
            self.publisher.add_remote_candidate(candidate)

    def _on_update(self, update: proto.ParticipantUpdate) -> None:
        me = self.signal.join.participant.sid if self.signal.join is not None else ""
        for info in update.participants:
            if info.sid == me:
                continue
            before = self._participants.get(info.sid)
            if info.state == models.ParticipantInfo.State.DISCONNECTED:
                if self._participants.pop(info.sid, None) is not None:
                    self.on_event(f"left: {info.identity}")
                continue
            self._participants[info.sid] = info
            if before is None:
                self.on_event(f"joined: {self._who(info)}")
            self._report_tracks(info, before)

    def _report_tracks(
        self, info: models.ParticipantInfo, before: models.ParticipantInfo | None
    ) -> None:
        old = {t.sid: t for t in before.tracks} if before is not None else {}
        new = {t.sid: t for t in info.tracks}
        for sid, track in new.items():
            if sid not in old:
                self.on_event(f"{info.identity} published {describe_track(track)}")
            elif old[sid].muted != track.muted:
                verb = "muted" if track.muted else "unmuted"
                self.on_event(f"{info.identity} {verb} {describe_track(track)}")
        for sid, track in old.items():
            if sid not in new:
                self.on_event(f"{info.identity} unpublished {describe_track(track)}")

    def _on_message(self, response: proto.SignalResponse) -> None:
        which = response.WhichOneof("message")
        if which == "room_update":
            self.on_event(f"room metadata: {response.room_update.room.metadata!r}")
        elif which == "mute":
            state = "muted" if response.mute.muted else "unmuted"
            self.on_event(f"the server {state} our track {response.mute.sid}")
        elif which == "leave":
            reason = models.DisconnectReason.Name(response.leave.reason)
            self.on_event(f"the server closed the session: {reason}")

    def _on_rtp(self, packet: bytes) -> None:
        self.packets_received += 1

    @staticmethod
    def _who(info: models.ParticipantInfo) -> str:
        kind = models.ParticipantInfo.Kind.Name(info.kind).lower()
        name = f" ({info.name})" if info.name and info.name != info.identity else ""
        return f"{info.identity}{name}, {kind}"


def _demo_of(info: models.TrackInfo) -> str:
    if info.type == models.TrackType.VIDEO:
        return f"colour bars, VP8 {VIDEO.width}x{VIDEO.height} at {VIDEO.fps} fps"
    return f"a {tone_opus.TONE_HZ} Hz tone, opus"
