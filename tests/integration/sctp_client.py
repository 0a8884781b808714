"""A participant that runs SCTP itself, for the data-channel attack tests.

Roomcast's own client (signalling + `ClientPeer`: ICE and DTLS) with aiortc's SCTP, through
the same `DataChannels` adapter the server uses, bolted onto its subscriber PeerConnection
(`ClientPeer` accepts the data section but never runs SCTP). It can also hand-craft SCTP
packets (`send_packet`) and stop reading SCTP altogether (`reading = False`: no SACK is ever
sent again), which is what a hostile or stalled client does.

`protocol` "v0" joins `/rtc`, where the server offers the subscriber PeerConnection and opens
the data channels; "v1" joins `/rtc/v1` as the SDKs do (docs/protocol/19-signalling-v1.md): our
one PeerConnection's first offer (the data section) travels in the join request, we open
`_reliable` and `_lossy`, and add receive sections when the server asks for them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import aiohttp
from livekit.protocol import rtc as proto

from roomcast.client.peer import ClientPeer, DataSection, TransportState
from roomcast.client.sdp import OfferSection
from roomcast.client.signal import SUBSCRIBER, SignalClient, join_request
from roomcast.loadtest.participant import receive_section
from roomcast.media.sctp import DataChannels
from roomcast.media.sctp_packet import DataChunk, SctpPacket

WEBRTC_BINARY = 53  # RFC 8831 §8


class SctpParticipant:
    def __init__(self, session: aiohttp.ClientSession, protocol: str = "v0") -> None:
        self.protocol = protocol
        self.signal = SignalClient(session)
        self.peer = ClientPeer()
        self.opened: list[str] = []
        self.messages: list[tuple[str, bytes]] = []
        self.reading = True
        self.established = asyncio.Event()
        self.gap_chunks_sent = 0  # DATA chunks sent past the TSN gap (send_gap_burst)
        self._gap = self._gap_stream = 0
        self._inbox: asyncio.Queue[bytes] = asyncio.Queue()
        self._pump: asyncio.Task[None] | None = None
        self.channels = DataChannels(
            self._send_record,
            server=False,  # the server is always the DTLS server
            on_open=self._on_open,
            on_message=lambda label, data: self.messages.append((label, data)),
        )
        # /rtc/v1: our offers' sections, the offer waiting for its answer, one more to make.
        self._sections: list[OfferSection] = [DataSection()]
        self._offer_id = 0
        self._awaiting: int | None = None
        self._offer_again = False

    async def join(self, url: str, token: str) -> None:
        await self.peer.start()
        self.peer.on_state = self._on_state
        self.signal.on_trickle = self._on_trickle
        if self.protocol == "v1":
            self.signal.on_answer = self._on_answer
            self.signal.on_media_sections = self._on_media_sections
            offer = self._next_offer()
            request = join_request(auto_subscribe=True, adaptive_stream=False, offer=offer)
            await self.signal.connect(url, token, join_request=request)
        else:
            self.signal.on_offer = self._on_offer
            await self.signal.connect(url, token, auto_subscribe=True)
        await self.peer.wait_connected(15)
        await asyncio.wait_for(self.established.wait(), 15)

    def send_packet(self, chunks: list[DataChunk]) -> None:
        """One hand-made SCTP packet to the server's association, over our DTLS."""
        sctp = self.channels._sctp
        packet = SctpPacket(
            5000, 5000, sctp._remote_verification_tag, tuple(chunk.to_chunk() for chunk in chunks)
        )
        self._send_record(packet.serialize())

    def send_gap_burst(self, chunks: int, label: str = "_reliable") -> None:
        """The TSN-gap flood (security review H1): 16-byte DATA chunks at TSN `next+1+i`, never
        `next` itself, 40 to a packet, continuing where the previous burst stopped. Before the
        receive guard, a server kept every chunk and did work growing with their number for
        each new one."""
        if not self.gap_chunks_sent:
            self._gap, self._gap_stream = self.next_tsn, self.stream_of(label)
        for _ in range(chunks // 40):
            first, stream = self._gap + self.gap_chunks_sent + 1, self._gap_stream
            tsns = [(first + i) % (1 << 32) for i in range(40)]
            self.send_packet([DataChunk(tsn, stream, 1, WEBRTC_BINARY, b"x" * 16) for tsn in tsns])
            self.gap_chunks_sent += 40

    @property
    def aborted(self) -> bool:
        """Whether our association is closed (the server aborted it)."""
        return bool(self.channels._sctp.state == "closed")

    @property
    def next_tsn(self) -> int:
        """The TSN our association would use next: the server's cumulative TSN + 1."""
        return self.channels._sctp._local_tsn

    def stream_of(self, label: str) -> int:
        channel = self.channels._channels[label]
        assert channel.id is not None
        return channel.id

    async def close(self) -> None:
        if self._pump is not None:
            self._pump.cancel()
        await self.channels.close()
        self.peer.close()
        await self.signal.close()

    # -- internals --------------------------------------------------------------------------
    def _on_offer(self, offer: proto.SessionDescription) -> None:
        answer = self.peer.answer(offer.sdp)
        self.signal.send_answer(answer, offer.id)
        self._tap_channel()

    def _next_offer(self) -> proto.SessionDescription:
        self._offer_id += 1
        self._awaiting, self._offer_again = self._offer_id, False
        sdp = self.peer.create_offer(self._sections)
        return proto.SessionDescription(type="offer", sdp=sdp, id=self._offer_id)

    def _on_answer(self, answer: proto.SessionDescription) -> None:
        if answer.id != self._awaiting:
            return
        self._awaiting = None
        self.peer.set_answer(answer.sdp)
        self._tap_channel()
        if self._offer_again:
            self.signal.send(proto.SignalRequest(offer=self._next_offer()))

    def _on_media_sections(self, audios: int, videos: int) -> None:
        self._sections += [receive_section("audio") for _ in range(audios)]
        self._sections += [receive_section("video") for _ in range(videos)]
        if self._awaiting is not None:
            self._offer_again = True  # one offer at a time (RFC 8829 §4.1.8)
        else:
            self.signal.send(proto.SignalRequest(offer=self._next_offer()))

    def _tap_channel(self) -> None:
        channel = self.peer._channel
        if channel is not None and not getattr(channel, "_sctp_tapped", False):
            channel._sctp_tapped = True  # type: ignore[attr-defined]
            channel.receive = self._tap(channel.receive)  # type: ignore[method-assign]

    def _tap(
        self, receive: Callable[[bytes, float], list[bytes]]
    ) -> Callable[[bytes, float], list[bytes]]:
        """Take the decrypted records (SCTP packets) that ClientPeer would count and drop."""

        def tapped(datagram: bytes, now: float) -> list[bytes]:
            records = receive(datagram, now)
            if self.reading:
                for record in records:
                    self._inbox.put_nowait(record)
            return records

        return tapped

    def _on_trickle(self, candidate: str, target: int) -> None:
        if target == SUBSCRIBER or self.protocol == "v1":
            self.peer.add_remote_candidate(candidate)

    def _on_state(self, state: TransportState) -> None:
        if state is TransportState.CONNECTED and self._pump is None:
            self._pump = asyncio.get_running_loop().create_task(self._run_sctp())

    async def _run_sctp(self) -> None:
        await self.channels.start()
        if self.protocol == "v1":  # the client opens the data channels (RFC 8832 §6)
            self.channels.create("_reliable", ordered=True, max_retransmits=None)
            self.channels.create("_lossy", ordered=False, max_retransmits=0)
        while True:
            record = await self._inbox.get()
            if self.reading:
                await self.channels.handle_packet(record)

    def _on_open(self, label: str) -> None:
        self.opened.append(label)
        if "_reliable" in self.opened:
            self.established.set()

    def _send_record(self, data: bytes) -> None:
        channel = self.peer._channel
        if channel is not None and channel.send_record(data):
            self.peer._flush_dtls()
