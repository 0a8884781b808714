"""Security review M2, performed: one spoofed ICE nomination must not reflect a subscriber's
media to a victim address (RFC 7675 §5.1: consent is per address, not per transport).

The attacker is a subscriber (Roomcast's own load-test participant) in a room where a publisher
sends audio and video. A second local socket stands in for the victim whose address the
attacker spoofs: it sends one authenticated Binding request with USE-CANDIDATE, signed with
the credentials from the server's offer. The attacker's client then stops nominating and keeps
sending its consent checks from its real socket, as in the review. Before the fix the victim
got all of the subscriber's media for as long as those checks went on.
"""

from __future__ import annotations

import asyncio
import collections

from aioice import stun

from roomcast.loadtest.participant import LoadParticipant
from roomcast.loadtest.runner import LoadTest
from roomcast.media.demux import PacketClass, classify
from roomcast.server import Server
from tests.integration.test_loadtest import config_for, load_test

WINDOW = 7.0  # s after the spoofed check: more than one consent interval (RFC 7675 §5.1: 4-6 s)


class Victim(asyncio.DatagramProtocol):
    """A UDP socket that only counts what it is sent, by RFC 7983 class."""

    def __init__(self) -> None:
        self.received: collections.Counter[PacketClass] = collections.Counter()
        self.udp: asyncio.DatagramTransport | None = None

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        if data:
            self.received[classify(data[0])] += 1


def spoofed_nomination(server_ufrag: str, server_pwd: str) -> bytes:
    request = stun.Message(stun.Method.BINDING, stun.Class.REQUEST)
    request.attributes["USERNAME"] = f"{server_ufrag}:mallory"
    request.attributes["PRIORITY"] = 1853824767
    request.attributes["ICE-CONTROLLING"] = 0x0102030405060708
    request.attributes["USE-CANDIDATE"] = None
    request.add_message_integrity(server_pwd.encode())
    return bytes(request)


def packets_received(participant: LoadParticipant) -> int:
    return sum(track.packets for track in participant.received.values())


async def subscriber_with_media(test: LoadTest, timeout: float = 20.0) -> LoadParticipant:
    """The subscriber, once it receives audio and video (the load test drives them)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        subscriber = next((p for p in test.participants if p.role.subscribe), None)
        if subscriber is not None:
            assert subscriber.error is None, subscriber.error
            if packets_received(subscriber) >= 100 and len(subscriber.received) == 2:
                return subscriber
        assert loop.time() < deadline, f"no media after {timeout:g} s"
        await asyncio.sleep(0.05)


async def test_spoofed_nomination_does_not_reflect_media_to_a_victim(server: Server) -> None:
    config = config_for(
        server,
        room="refl",
        video_publishers=1,
        audio_publishers=1,
        subscribers=1,
        simulcast=False,
    )
    loop = asyncio.get_running_loop()
    victim = Victim()
    udp, _ = await loop.create_datagram_endpoint(lambda: victim, local_addr=("127.0.0.1", 0))
    try:
        async with load_test(config) as test:
            mallory = await subscriber_with_media(test)
            ice = mallory.subscriber.ice
            assert ice.selected is not None and ice.remote_ufrag and ice.remote_pwd
            # From here on Mallory's consent checks carry no USE-CANDIDATE (ICE-CONTROLLED
            # instead, which an ICE-lite server answers all the same).
            ice.controlling = False
            udp.sendto(spoofed_nomination(ice.remote_ufrag, ice.remote_pwd), ice.selected)
            before = packets_received(mallory)
            await asyncio.sleep(WINDOW)  # Mallory's client keeps checking from its socket
            after = packets_received(mallory)
            assert mallory.error is None and mallory.subscriber.connected
    finally:
        udp.close()
    # The victim's address never answered the server's own check, so it got no media and no
    # DTLS at all: only the answer to the spoofed check and the one request that asked it.
    assert victim.received[PacketClass.RTP] == 0, victim.received
    assert victim.received[PacketClass.DTLS] == 0, victim.received
    assert victim.received[PacketClass.STUN] <= 2, victim.received
    # Media kept flowing to the address that did prove itself: audio alone is 50 packets/s.
    assert after - before > 40 * WINDOW * 0.5, (before, after)
