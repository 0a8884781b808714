"""One simulated participant: signalling, its PeerConnections, its senders or receivers.

On `/rtc` (protocol "v0") publishers announce tracks (AddTrackRequest,
docs/protocol/03-publishing.md §3.1), offer them on the publisher PC and send synthetic media
once connected; every participant answers the server's offers on the subscriber PC
(docs/protocol/04-subscribing.md). On `/rtc/v1` (protocol "v1", as the SDKs join,
docs/protocol/19-signalling-v1.md) one PeerConnection does both: the JoinRequest carries the
AddTrackRequests and the first offer (the tracks, then three recvonly audio and three recvonly
video sections), the answer says what the server sends on those, and `MediaSectionsRequirement`
adds sections and another offer. Subscribers count what arrives per SSRC and, with a layout,
tell the server the size each video is shown at (UpdateTrackSettings,
docs/protocol/04-subscribing.md §4.5).
"""

from __future__ import annotations

import asyncio
import logging
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import aiohttp
from livekit.protocol import models
from livekit.protocol import rtc as proto

from roomcast.client.media import (
    EXT_AUDIO_LEVEL,
    EXT_MID,
    EXT_RID,
    OPUS_PT,
    VP8_PT,
    AudioSender,
    ReceiveStats,
    Sender,
    VideoLayer,
    VideoSender,
)
from roomcast.client.peer import ClientPeer, LocalTrack, ReceiveSection, RemoteTrack
from roomcast.client.signal import PUBLISHER, SUBSCRIBER, SignalClient, join_request
from roomcast.media.rtcp import ReportBlock, build_nack, build_rr
from roomcast.media.rtp import URI_AUDIO_LEVEL, URI_MID, URI_RID
from roomcast.media.sdp import Codec, Extmap, SdpError

log = logging.getLogger(__name__)

CONNECT_TIMEOUT = 15.0
RR_INTERVAL = 1.0  # s: receiver reports from subscribers (libwebrtc sends about one per second)
MAX_NACK_GAP = 16  # a larger jump is a layer switch or a restart, not loss worth NACKing
# libwebrtc's sender SSRC for RTCP of a receive-only peer (docs/protocol/16-media-interop.md §6)
RECEIVER_SSRC = 1
_U16_U32 = struct.Struct("!H4xI")  # sequence number, then SSRC 4 bytes later
PROTOCOLS = ("v0", "v1")
RED_PT = 63  # RED around opus in our receive sections, libwebrtc's payload type
INITIAL_RECEIVE_SECTIONS = 3  # of each kind in the first /rtc/v1 offer, as the SDKs


@dataclass(slots=True)
class Role:
    """What a participant does."""

    identity: str
    room: str
    video: bool = False
    audio: bool = False
    subscribe: bool = False
    layers: tuple[VideoLayer, ...] = ()
    simulcast: bool = True
    simulate_speaker: bool = False
    layout: str | None = None  # "speaker" | "3x3" | "4x4" | "5x5"


@dataclass(slots=True)
class TrackReceive:
    """One remote track as one subscriber receives it."""

    track_sid: str
    kind: str
    streams: list[ReceiveStats] = field(default_factory=list)

    @property
    def packets(self) -> int:
        return sum(s.packets for s in self.streams)

    @property
    def bytes(self) -> int:
        return sum(s.bytes for s in self.streams)

    @property
    def expected(self) -> int:
        return sum(s.expected for s in self.streams)

    @property
    def lost(self) -> int:
        return sum(s.lost for s in self.streams)


_HIGH, _MEDIUM, _LOW = (1280, 720), (640, 360), (320, 180)


def _layout_size(layout: str, index: int) -> tuple[int, int] | None:
    if layout == "speaker":
        return _HIGH if index == 0 else _LOW if index <= 5 else None
    if layout == "3x3":
        return _MEDIUM if index < 9 else None
    if layout in ("4x4", "5x5"):
        return _LOW if index < (16 if layout == "4x4" else 25) else None
    return None


class LoadParticipant:
    def __init__(
        self,
        role: Role,
        url: str,
        token: str,
        session: aiohttp.ClientSession,
        protocol: str = "v1",
    ) -> None:
        if protocol not in PROTOCOLS:
            raise ValueError(f"protocol must be one of {PROTOCOLS}, not {protocol!r}")
        self.role = role
        self.url = url
        self.token = token
        self.protocol = protocol
        self.signal = SignalClient(session)
        self.subscriber = ClientPeer()  # on v1 the one PeerConnection, publishing too
        self.publisher: ClientPeer | None = None
        self.senders: list[Sender] = []
        self.track_sids: dict[str, str] = {}  # cid → TR_ sid
        self.received: dict[str, TrackReceive] = {}  # track sid → what arrived
        self.error: str | None = None
        self.started_at = 0.0  # token minted (monotonic)
        self.joined_at: float | None = None  # JoinResponse
        self.first_media_at: float | None = None  # first RTP on the subscriber PC
        self.nacks_sent = 0
        self.early_packets = 0  # v1: RTP before the answer announcing its SSRC (dropped)
        self.stopped = False
        self._by_ssrc: dict[int, ReceiveStats] = {}
        self._track_of_ssrc: dict[int, TrackReceive] = {}
        self._tiles: list[str] = []  # video track sids in the order they arrived (layout)
        self._next_rr = 0.0
        self._offer_id = 0
        # /rtc/v1: the sections of our offers, in m-line order, and the offer/answer state.
        self._sections: list[LocalTrack | ReceiveSection] = []
        self._awaiting_answer = False
        self._offer_again = False

    # -- lifecycle ---------------------------------------------------------------------------
    async def join(self, started_at: float) -> None:
        """Connect, publish, and wait for media to flow; sets `error` instead of raising."""
        self.started_at = started_at
        try:
            await self._join()
        except Exception as exc:  # SignalError, PeerError, timeouts, socket errors: report
            self.error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            log.debug("participant %s failed", self.role.identity, exc_info=True)

    async def _join(self) -> None:
        if self.protocol == "v1":
            await self._join_single()
            return
        role = self.role
        await self.subscriber.start()
        self.subscriber.on_rtp = self._on_rtp
        self.signal.on_offer = self._on_subscriber_offer
        self.signal.on_trickle = self._on_trickle
        self.signal.on_answer = self._on_publisher_answer
        await self.signal.connect(
            self.url,
            self.token,
            auto_subscribe=role.subscribe,
            adaptive_stream=role.layout is not None,
        )
        self.joined_at = time.monotonic()
        if role.video or role.audio:
            await self._publish()
        await self.subscriber.wait_connected(CONNECT_TIMEOUT)

    async def _publish(self) -> None:
        peer = self.publisher = ClientPeer()
        await peer.start()
        tracks, requests, senders = self._local_media(peer)
        infos = await asyncio.wait_for(
            asyncio.gather(*(self.signal.add_track(r) for r in requests)), CONNECT_TIMEOUT
        )
        for track, info in zip(tracks, infos, strict=True):
            self.track_sids[track.track_id] = info.sid
        self._offer_id += 1
        self.signal.send_offer(peer.create_offer(tracks), self._offer_id)
        peer.on_rtcp = _feed_rtcp(senders)
        await peer.wait_connected(CONNECT_TIMEOUT)
        self.senders = senders

    def _local_media(
        self, peer: ClientPeer
    ) -> tuple[list[LocalTrack], list[proto.AddTrackRequest], list[Sender]]:
        """The role's tracks (numbered "0", "1", … in this order by build_offer), their
        AddTrackRequests and their senders."""
        role = self.role
        stream_id = f"{role.identity}-stream"
        tracks: list[LocalTrack] = []
        requests: list[proto.AddTrackRequest] = []
        senders: list[Sender] = []
        if role.audio:
            audio = AudioSender(
                peer.send_rtp,
                peer.send_rtcp,
                mid=str(len(tracks)),
                simulate_speaker=role.simulate_speaker,
            )
            track = _audio_track(f"{role.identity}-audio", stream_id, audio.stream.ssrc)
            senders.append(audio)
            tracks.append(track)
            requests.append(
                proto.AddTrackRequest(
                    cid=track.track_id,
                    name="audio",
                    type=models.TrackType.AUDIO,
                    source=models.TrackSource.MICROPHONE,
                )
            )
        if role.video:
            layers = role.layers if role.simulcast else role.layers[-1:]
            video = VideoSender(
                peer.send_rtp,
                peer.send_rtcp,
                mid=str(len(tracks)),
                layers=layers,
                simulcast=role.simulcast,
            )
            ssrcs = [s.ssrc for s in video.streams]
            track = _video_track(f"{role.identity}-video", stream_id, layers, role.simulcast, ssrcs)
            senders.append(video)
            tracks.append(track)
            requests.append(_add_video_request(track.track_id, layers, ssrcs, role.simulcast))
        return tracks, requests, senders

    # -- /rtc/v1: one PeerConnection ---------------------------------------------------------
    async def _join_single(self) -> None:
        role = self.role
        peer = self.subscriber
        await peer.start()
        peer.on_rtp = self._on_rtp
        tracks, requests, senders = self._local_media(peer)
        if tracks:
            self.publisher = peer
        kinds = ["audio"] * INITIAL_RECEIVE_SECTIONS + ["video"] * INITIAL_RECEIVE_SECTIONS
        self._sections = [*tracks, *(receive_section(kind) for kind in kinds)]
        self._offer_id = 1
        self._awaiting_answer = True
        offer = proto.SessionDescription(
            type="offer", sdp=peer.create_offer(self._sections), id=self._offer_id
        )
        published = [self.signal.expect_published(r.cid) for r in requests]
        self.signal.on_answer = self._on_single_answer
        self.signal.on_trickle = lambda candidate, _: peer.add_remote_candidate(candidate)
        self.signal.on_media_sections = self._on_media_sections
        request = join_request(
            auto_subscribe=role.subscribe,
            adaptive_stream=role.layout is not None,
            add_tracks=requests,
            offer=offer,
        )
        await self.signal.connect(self.url, self.token, join_request=request)
        self.joined_at = time.monotonic()
        infos = await asyncio.wait_for(asyncio.gather(*published), CONNECT_TIMEOUT)
        for track, info in zip(tracks, infos, strict=True):
            self.track_sids[track.track_id] = info.sid
        peer.on_rtcp = _feed_rtcp(senders)
        await peer.wait_connected(CONNECT_TIMEOUT)
        self.senders = senders

    def _on_single_answer(self, answer: proto.SessionDescription) -> None:
        if answer.id != self._offer_id:
            return  # an answer to an offer we have replaced
        self._awaiting_answer = False
        try:
            self.subscriber.set_answer(answer.sdp)
        except SdpError as exc:
            self.error = f"bad answer: {exc}"
            return
        for track in self.subscriber.remote_tracks.values():
            self._track_arrived(track)
        if self._offer_again:
            self._send_single_offer()

    def _on_media_sections(self, audios: int, videos: int) -> None:
        """The server needs more receive sections, or just another offer (0, 0)."""
        kinds = ["audio"] * audios + ["video"] * videos
        self._sections.extend(receive_section(kind) for kind in kinds)
        if self._awaiting_answer:
            self._offer_again = True  # one offer at a time (JSEP §4.1.8)
        else:
            self._send_single_offer()

    def _send_single_offer(self) -> None:
        self._offer_again = False
        self._awaiting_answer = True
        self._offer_id += 1
        self.signal.send_offer(self.subscriber.create_offer(self._sections), self._offer_id)

    async def leave(self) -> None:
        self.stopped = True
        try:
            await asyncio.wait_for(self.signal.leave(), 5)
        except (TimeoutError, aiohttp.ClientError, OSError):
            pass
        self.subscriber.close()
        if self.publisher is not None:
            self.publisher.close()  # the same peer on v1: closing twice is harmless

    # -- driven by the scheduler -------------------------------------------------------------
    def tick(self, now: float) -> None:
        if self.stopped:
            return
        for sender in self.senders:
            sender.tick(now)
        if self._by_ssrc and now >= self._next_rr:
            self._next_rr = now + RR_INTERVAL
            self._send_receiver_reports()

    # -- signalling callbacks ----------------------------------------------------------------
    def _on_subscriber_offer(self, offer: proto.SessionDescription) -> None:
        try:
            answer = self.subscriber.answer(offer.sdp)
        except SdpError as exc:
            self.error = f"cannot answer the subscriber offer: {exc}"
            return
        self.signal.send_answer(answer, offer.id)
        for track in self.subscriber.remote_tracks.values():
            self._track_arrived(track)

    def _track_arrived(self, track: RemoteTrack) -> None:
        sid = track.track_id
        if sid and sid not in self.received:
            self.received[sid] = TrackReceive(sid, track.kind)
            if track.kind == "video" and self.role.layout is not None:
                self._tiles.append(sid)
                self._apply_layout(sid, len(self._tiles) - 1)

    def _on_publisher_answer(self, answer: proto.SessionDescription) -> None:
        if self.publisher is None:
            return
        try:
            self.publisher.set_answer(answer.sdp)
        except SdpError as exc:
            self.error = f"bad publisher answer: {exc}"

    def _on_trickle(self, candidate: str, target: int) -> None:
        if target == SUBSCRIBER:
            self.subscriber.add_remote_candidate(candidate)
        elif target == PUBLISHER and self.publisher is not None:
            self.publisher.add_remote_candidate(candidate)

    def _apply_layout(self, track_sid: str, index: int) -> None:
        """The index-th video's size in the layout, as lk load-test asks for it (README.md,
        `--layout`: speaker = one 1280x720 and five 320x180; 3x3 = nine 640x360; 4x4 and
        5x5 = 16 / 25 at 320x180); videos beyond the layout are disabled."""
        size = _layout_size(self.role.layout or "", index)
        if size is None:
            self.signal.update_track_settings([track_sid], disabled=True)
        else:
            self.signal.update_track_settings([track_sid], width=size[0], height=size[1])

    # -- media callbacks ---------------------------------------------------------------------
    def _on_rtp(self, packet: bytes) -> None:
        if len(packet) < 12:
            return
        seq, ssrc = _U16_U32.unpack_from(packet, 2)
        stats = self._by_ssrc.get(ssrc)
        if stats is None:
            if self.protocol == "v1" and self.subscriber.track_by_ssrc(ssrc) is None:
                # The server sends once its answer is out; this packet beat the answer here.
                # A browser drops it too (its SSRC is not signalled yet).
                self.early_packets += 1
                return
            stats = self._new_stream(ssrc, seq)
        gap = stats.on_packet(seq, len(packet))
        if 0 < gap <= MAX_NACK_GAP:
            lost = [(seq - i) & 0xFFFF for i in range(gap, 0, -1)]
            self.subscriber.send_rtcp(build_nack(RECEIVER_SSRC, ssrc, lost))
            self.nacks_sent += 1

    def _new_stream(self, ssrc: int, seq: int) -> ReceiveStats:
        now = time.monotonic()
        if self.first_media_at is None:
            self.first_media_at = now
        stats = self._by_ssrc[ssrc] = ReceiveStats(ssrc, seq, now)
        remote = self.subscriber.track_by_ssrc(ssrc)
        sid = remote.track_id if remote is not None and remote.track_id else f"ssrc-{ssrc}"
        track = self.received.get(sid)
        if track is None:
            track = self.received[sid] = TrackReceive(sid, remote.kind if remote else "?")
        track.streams.append(stats)
        return stats

    def _send_receiver_reports(self) -> None:
        blocks = [
            ReportBlock(s.ssrc, 0, s.lost, s.cycles + s.max_seq)
            for s in list(self._by_ssrc.values())[:31]
        ]
        self.subscriber.send_rtcp(build_rr(RECEIVER_SSRC, blocks))


def _feed_rtcp(senders: list[Sender]) -> Callable[[bytes], None]:
    def on_rtcp(packet: bytes) -> None:
        for sender in senders:
            sender.handle_rtcp(packet)

    return on_rtcp


def receive_section(kind: str) -> ReceiveSection:
    """A recvonly section for what the server sends (/rtc/v1): the codecs and extension ids
    our own tracks use, so each payload type means one thing across the bundle. Audio also
    takes RED around opus (RFC 2198), as libwebrtc offers it: the SDKs publish audio as RED
    when they can, and the server forwards it as published."""
    if kind == "audio":
        return ReceiveSection(
            kind="audio",
            codecs=[
                Codec(OPUS_PT, "opus", 48000, 2, "minptime=10;useinbandfec=1"),
                Codec(RED_PT, "red", 48000, 2, f"{OPUS_PT}/{OPUS_PT}"),
            ],
            extmaps=[Extmap(EXT_AUDIO_LEVEL, URI_AUDIO_LEVEL), Extmap(EXT_MID, URI_MID)],
        )
    feedback = ["nack", "nack pli", "ccm fir", "goog-remb"]
    return ReceiveSection(
        kind="video",
        codecs=[Codec(VP8_PT, "VP8", 90000, None, None, feedback)],
        extmaps=[Extmap(EXT_MID, URI_MID)],
    )


def _qualities(count: int) -> list[models.VideoQuality]:
    """VideoQuality per layer, low → high (docs/protocol/03-publishing.md §3.5)."""
    all_qualities = [models.VideoQuality.LOW, models.VideoQuality.MEDIUM, models.VideoQuality.HIGH]
    return all_qualities[-count:] if count < 3 else all_qualities


def _audio_track(cid: str, stream_id: str, ssrc: int) -> LocalTrack:
    return LocalTrack(
        kind="audio",
        track_id=cid,
        stream_id=stream_id,
        codecs=[Codec(OPUS_PT, "opus", 48000, 2, "minptime=10;useinbandfec=1", ["nack"])],
        extmaps=[Extmap(EXT_AUDIO_LEVEL, URI_AUDIO_LEVEL), Extmap(EXT_MID, URI_MID)],
        ssrcs=[ssrc],
    )


def _video_track(
    cid: str, stream_id: str, layers: tuple[VideoLayer, ...], simulcast: bool, ssrcs: list[int]
) -> LocalTrack:
    extmaps = [Extmap(EXT_MID, URI_MID)]
    if simulcast:
        extmaps.append(Extmap(EXT_RID, URI_RID))
    return LocalTrack(
        kind="video",
        track_id=cid,
        stream_id=stream_id,
        codecs=[Codec(VP8_PT, "VP8", 90000, None, None, ["nack", "nack pli", "ccm fir"])],
        extmaps=extmaps,
        rids=[layer.rid for layer in layers] if simulcast else [],
        ssrcs=ssrcs,
    )


def _add_video_request(
    cid: str, layers: tuple[VideoLayer, ...], ssrcs: list[int], simulcast: bool
) -> proto.AddTrackRequest:
    """A camera track as LiveKit's JS SDK announces it (docs/protocol/03-publishing.md §3.3,
    docs/protocol/16-media-interop.md §7)."""
    top = layers[-1]
    return proto.AddTrackRequest(
        cid=cid,
        name="video",
        type=models.TrackType.VIDEO,
        source=models.TrackSource.CAMERA,
        width=top.width,
        height=top.height,
        layers=[
            models.VideoLayer(
                quality=quality,
                width=layer.width,
                height=layer.height,
                bitrate=layer.bitrate,
                ssrc=ssrc,
                rid=layer.rid if simulcast else "",
            )
            for layer, quality, ssrc in zip(layers, _qualities(len(layers)), ssrcs, strict=True)
        ],
        simulcast_codecs=[proto.SimulcastCodec(codec="vp8", cid=cid)],
    )
