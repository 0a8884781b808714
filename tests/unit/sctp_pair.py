"""Two `DataChannels` adapters (server and client roles) joined in memory, no DTLS: the real
aiortc association behind our guard, driven by hand. For the SCTP unit tests."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from roomcast.media.sctp import DataChannels
from roomcast.media.sctp_backlog import SendBacklog
from roomcast.media.sctp_packet import DATA_FLAG_BEGINNING, DATA_FLAG_END, DataChunk, SctpPacket

WEBRTC_BINARY = 53  # RFC 8831 §8: PPID of a binary message


@dataclass
class Side:
    """What one adapter produced: packets for the other side, opens, messages, limits."""

    outbox: list[bytes] = field(default_factory=list)
    opened: list[str] = field(default_factory=list)
    messages: list[tuple[str, bytes]] = field(default_factory=list)
    limits: list[tuple[str, bool]] = field(default_factory=list)


class SctpPair:
    def __init__(self, *, backlog: SendBacklog | None = None, clock: float = 0.0) -> None:
        self.now = clock
        self.server_side, self.client_side = Side(), Side()
        self.server = self._adapter(self.server_side, server=True, backlog=backlog)
        self.client = self._adapter(self.client_side, server=False, backlog=None)
        self.client_reads = True  # False: the client never processes (so never SACKs)

    def _adapter(self, side: Side, *, server: bool, backlog: SendBacklog | None) -> DataChannels:
        return DataChannels(
            side.outbox.append,
            server=server,
            on_open=side.opened.append,
            on_message=lambda label, data: side.messages.append((label, data)),
            on_limit=lambda limit, fatal: side.limits.append((limit, fatal)),
            backlog=backlog,
            clock=lambda: self.now,
        )

    async def exchange(self, rounds: int = 20) -> None:
        """Deliver what each side sent to the other until both are quiet."""
        for _ in range(rounds):
            await asyncio.sleep(0)  # aiortc flushes data channels from tasks
            if not (self.server_side.outbox or self.client_side.outbox):
                await asyncio.sleep(0)
                if not (self.server_side.outbox or self.client_side.outbox):
                    return
            to_server, self.client_side.outbox[:] = list(self.client_side.outbox), []
            to_client, self.server_side.outbox[:] = list(self.server_side.outbox), []
            for packet in to_server:
                await self.server.handle_packet(packet)
            if self.client_reads:
                for packet in to_client:
                    await self.client.handle_packet(packet)

    async def connect(self) -> None:
        self.server.create("_reliable", ordered=True, max_retransmits=None)
        self.server.create("_lossy", ordered=False, max_retransmits=0)
        await self.server.start()
        await self.client.start()
        await self.exchange()
        assert self.server.is_open("_reliable") and self.server.is_open("_lossy")

    @property
    def cumulative_tsn(self) -> int:
        """The server's cumulative TSN for what the client sends (aiortc's state)."""
        tsn = self.server._sctp._last_received_tsn
        assert tsn is not None
        return tsn

    def data_packet(self, chunks: list[DataChunk]) -> bytes:
        """An SCTP packet from the client to the server carrying `chunks` (crafted by hand)."""
        tag = self.server._sctp._local_verification_tag
        return SctpPacket(5000, 5000, tag, tuple(c.to_chunk() for c in chunks)).serialize()

    def message(
        self,
        tsn: int,
        ssn: int = 0,
        payload: bytes = b"x" * 16,
        *,
        stream: int = 1,
        flags: int = DATA_FLAG_BEGINNING | DATA_FLAG_END,
    ) -> DataChunk:
        return DataChunk(tsn % (1 << 32), stream, ssn % 65536, WEBRTC_BINARY, payload, flags)
