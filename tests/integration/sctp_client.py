"""A participant that runs SCTP itself, for the data-channel attack tests.

Roomcast's own client (signalling + `ClientPeer`: ICE and DTLS) with aiortc's SCTP, through
the same `DataChannels` adapter the server uses, bolted onto its subscriber PeerConnection
(`ClientPeer` accepts the data section but never runs SCTP). It can also hand-craft SCTP
packets (`send_packet`) and stop reading SCTP altogether (`reading = False`: no SACK is ever
sent again), which is what a hostile or stalled client does.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import aiohttp
from livekit.protocol import rtc as proto

from roomcast.client.peer import ClientPeer, TransportState
from roomcast.client.signal import SUBSCRIBER, SignalClient
from roomcast.media.sctp import DataChannels
from roomcast.media.sctp_packet import DataChunk, SctpPacket

WEBRTC_BINARY = 53  # RFC 8831 §8


class SctpParticipant:
    def __init__(self, session: aiohttp.ClientSession) -> None:
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

    async def join(self, url: str, token: str) -> None:
        await self.peer.start()
        self.peer.on_state = self._on_state
        self.signal.on_offer = self._on_offer
        self.signal.on_trickle = self._on_trickle
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
        if target == SUBSCRIBER:
            self.peer.add_remote_candidate(candidate)

    def _on_state(self, state: TransportState) -> None:
        if state is TransportState.CONNECTED and self._pump is None:
            self._pump = asyncio.get_running_loop().create_task(self._run_sctp())

    async def _run_sctp(self) -> None:
        await self.channels.start()
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
