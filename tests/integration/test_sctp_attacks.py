"""Data-channel attacks by a participant with a normal join token, against a real server, while
an honest pair on the official Python SDK exchanges data (security review H1 and M6).

The attacker is Roomcast's own client with aiortc's SCTP on its subscriber PeerConnection
(tests/integration/sctp_client.py), or on its one PeerConnection on `/rtc/v1`: every test runs
on both signalling paths, the honest pair's too. A probe measures `GET /` all along: before the
limits, the TSN-gap flood froze the event loop for seconds (the review measured 3.8 s with 8,000
chunks) and the never-acknowledging subscriber made the server keep everything sent to it.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import aiohttp

from roomcast.media.sctp_backlog import RELIABLE_BACKLOG
from roomcast.media.transport import PeerTransport
from roomcast.server import Server
from tests.conftest import url_of
from tests.integration.sctp_client import SctpParticipant
from tests.integration.sdk import join_token, joined

STALL_LIMIT = 0.5  # seconds: ~15x what the guarded server shows (~30 ms); the old one ~1 s


class Probe:
    """`GET /` every 20 ms; the worst latency seen (a request waits for the event loop)."""

    def __init__(self, session: aiohttp.ClientSession, url: str) -> None:
        self.worst = 0.0
        self.count = 0
        self._session, self._url = session, url

    async def run(self) -> None:
        while True:
            start = time.perf_counter()
            async with self._session.get(self._url) as response:
                assert response.status == 200
                await response.read()
            self.worst = max(self.worst, time.perf_counter() - start)
            self.count += 1
            await asyncio.sleep(0.02)


@contextlib.asynccontextmanager
async def probing(server: Server) -> AsyncIterator[Probe]:
    async with aiohttp.ClientSession() as session:
        probe = Probe(session, url_of(server) + "/")
        task = asyncio.create_task(probe.run())
        try:
            yield probe
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


@contextlib.asynccontextmanager
async def attacker(server: Server, room: str, protocol: str) -> AsyncIterator[SctpParticipant]:
    async with aiohttp.ClientSession() as session:
        client = SctpParticipant(session, protocol)
        await client.join(url_of(server, "ws"), join_token(room, "mallory"))
        try:
            yield client
        finally:
            await client.close()


async def metric(server: Server, limit: str) -> float:
    """roomcast_limit_hits_total{limit="data_channel_<limit>"} (read in-process)."""
    return float(server.metrics.limit_hits.labels(f"data_channel_{limit}")._value.get())


def unsent_bytes(transports: list[PeerTransport]) -> int:
    """The most any one transport's data channels hold unsent (W3C bufferedAmount)."""
    return max(
        sum(channel.bufferedAmount for channel in t._channels._channels.values())
        for t in transports
    )


async def chat(sender: object, count: int, interval: float) -> None:
    for i in range(count):
        await sender.local_participant.publish_data(b"chat %d" % i, reliable=True)  # type: ignore[attr-defined]
        await asyncio.sleep(interval)


@dataclass
class Flood:
    """The attacker's side of the TSN-gap flood, run on its own thread and event loop (as a
    remote client would be: it must not wait for the server's loop to send)."""

    url: str
    token: str
    probe: Probe
    protocol: str
    joined: threading.Event = field(default_factory=threading.Event)
    sent: int = 0
    stalled: float = 0.0  # seconds the server took to catch up with one burst, if too long
    aborted: bool = False  # the server aborted our association
    removed: bool = False  # ... and then closed our signalling (we never left)

    def run(self) -> None:
        asyncio.run(self._run())

    async def _run(self) -> None:
        async with aiohttp.ClientSession() as session:
            mallory = SctpParticipant(session, self.protocol)
            await mallory.join(self.url, self.token)
            self.joined.set()
            try:
                await self._flood(mallory)
                if self.aborted:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(mallory.signal.closed.wait(), 10)
                    self.removed = mallory.signal.closed.is_set()
            finally:
                await mallory.close()

    async def _flood(self, mallory: SctpParticipant) -> None:
        # The review's repro (SctpParticipant.send_gap_burst): 8,000 chunks at once (the
        # review's 3.8 s stall), then bursts of 2,000, each once the server has answered
        # `GET /` twice since the last; up to 150,000.
        for burst in [8000] + [2000] * 71:  # until aborted: UDP may lose some
            mallory.send_gap_burst(burst)
            self.sent = mallory.gap_chunks_sent
            answered, start = self.probe.count, time.perf_counter()
            while self.probe.count < answered + 2:
                if mallory.aborted:
                    self.aborted = True
                    return
                if time.perf_counter() - start > 3 * STALL_LIMIT:
                    self.stalled = time.perf_counter() - start
                    return
                await asyncio.sleep(0.005)


async def test_tsn_gap_flood_keeps_the_node_responsive_and_removes_the_attacker(
    server: Server, signalling: str
) -> None:
    async with (
        joined(server, "sctp", "alice") as (alice, alice_events),
        joined(server, "sctp", "bob") as (_, bob_events),
        probing(server) as probe,
    ):
        flood = Flood(url_of(server, "ws"), join_token("sctp", "mallory"), probe, signalling)
        attack = asyncio.get_running_loop().run_in_executor(None, flood.run)
        await asyncio.to_thread(flood.joined.wait, 30)
        await alice_events.wait("participant_connected", lambda p: p.identity == "mallory")
        talk = asyncio.create_task(chat(alice, 40, 0.05))
        await attack
        assert not flood.stalled, f"the server needed {flood.stalled:.1f} s for one burst"
        assert probe.worst < STALL_LIMIT, f"GET / waited {probe.worst:.2f} s ({flood.sent})"
        assert flood.aborted and flood.removed
        await alice_events.wait("participant_disconnected", lambda p: p.identity == "mallory")
        await talk
        await bob_events.wait("data_received", lambda p: p.data == b"chat 39")
        assert probe.worst < STALL_LIMIT, f"GET / waited {probe.worst:.2f} s"
        assert len(bob_events.all("data_received")) == 40  # every message, during the attack
        assert await metric(server, "gap_flood") == 1
        assert await metric(server, "tsn_window") > 60_000


async def test_a_subscriber_that_never_acknowledges_is_removed(
    server: Server, signalling: str
) -> None:
    async with (
        joined(server, "sctp-slow", "alice") as (alice, alice_events),
        joined(server, "sctp-slow", "bob") as (_, bob_events),
        attacker(server, "sctp-slow", signalling) as mallory,
    ):
        await alice_events.wait("participant_connected", lambda p: p.identity == "mallory")
        mallory.reading = False  # from now on it never acknowledges (no SACK)
        transports = list(server.mux._routes)
        worst = 0
        payload = b"p" * 10_000
        sent = 0
        removed = False
        while not removed and sent < 600:  # 6 MB: three times the backlog limit
            await alice.local_participant.publish_data(payload + b"%d" % sent, reliable=True)
            sent += 1
            await asyncio.sleep(0.002)
            worst = max(worst, unsent_bytes(transports))
            removed = any(
                p.identity == "mallory" for (p,) in alice_events.all("participant_disconnected")
            )
        assert worst <= RELIABLE_BACKLOG, f"{worst} bytes queued for a reader that never acks"
        await alice_events.wait("participant_disconnected", lambda p: p.identity == "mallory")
        assert await metric(server, "reliable_backlog") == 1
        last = payload + b"%d" % (sent - 1)
        await bob_events.wait("data_received", lambda p: p.data == last)
        assert len(bob_events.all("data_received")) == sent  # the honest reader lost nothing
