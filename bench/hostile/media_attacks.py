"""Media-plane attacks (security review H1, M6, M2, and hostile datagrams): the attack code of
tests/integration/test_sctp_attacks.py, test_consent_per_address.py and (as datagrams sent to a
running node) tests/unit/test_hostile_input.py, paced and repeated."""

from __future__ import annotations

import asyncio
import os
import random
import socket

import aiohttp
from aioice import stun
from livekit import rtc as sdk
from tests.conftest import API_KEY, API_SECRET
from tests.integration.hostile_client import reflect_media
from tests.integration.sctp_client import SctpParticipant
from tests.integration.sdk import Events, join_token

from bench.hostile.framework import (
    CONTAINMENT,
    CORRECTNESS,
    Attack,
    AttackSucceeded,
    Context,
    Tally,
)
from roomcast.loadtest.runner import LoadTestConfig
from roomcast.media.demux import PacketClass

GAP_BURST = 4000  # DATA chunks past the TSN gap, sent at once (100 packets of 40)
GAP_INTERVAL = 1.0  # s between bursts
GAP_BURSTS = 60  # the server aborts after ~66 000 received (twice its window of waste)
REMOVAL = 15.0  # s for an aborted or stalled attacker to be removed from its room
FEED_MESSAGE = 10_000  # bytes of each reliable message the accomplice publishes
FEED_RATE = 30.0  # messages/s: the 2 MiB backlog of a subscriber that never acks in ~7 s
SILENT_DEADLINE = 60.0  # s a never-acknowledging subscriber may stay
CONSENT_WINDOW = 7.0  # s after the spoofed check: more than one consent interval (4-6 s)
GARBAGE_SOURCES = 8  # source ports: each a new address to the node
GARBAGE_DATAGRAMS = 4000  # per cycle, in bursts
GARBAGE_BURST = 100
GARBAGE_PAUSE = 0.025  # s between bursts: ~4,000 datagrams/s while a cycle lasts
GARBAGE_QUIET = 1.0  # s to listen for an answer after the last datagram


async def sctp_gap_flood(ctx: Context, tally: Tally) -> None:
    """H1: DATA chunks past a TSN gap from a participant of the honest room; the server must
    abort the association and remove the participant."""
    identity = ctx.identity("mallory-sctp")
    async with aiohttp.ClientSession() as session:
        mallory = SctpParticipant(session)
        try:
            await mallory.join(ctx.node.ws, join_token(ctx.plan.room, identity))
            for _ in range(GAP_BURSTS):
                mallory.send_gap_burst(GAP_BURST)
                tally.add("chunks", GAP_BURST)
                await asyncio.sleep(GAP_INTERVAL)
                # The server's ABORT travels over UDP and may be lost; being removed from the
                # room (signalling closed) shows the abort as well.
                if mallory.aborted or mallory.signal.closed.is_set():
                    break
            else:
                raise AttackSucceeded(f"{mallory.gap_chunks_sent} chunks past a gap, no abort")
            try:
                await asyncio.wait_for(mallory.signal.closed.wait(), REMOVAL)
            except TimeoutError:
                raise AttackSucceeded("aborted, but still in the room") from None
        finally:
            await mallory.close()


async def never_acknowledging_subscriber(ctx: Context, tally: Tally) -> None:
    """M6: a subscriber that stops acknowledging SCTP while an accomplice (official SDK)
    publishes reliable data to its room; the server must not queue it all, and removes it."""
    room = "hostile-m6"
    mallory_identity = ctx.identity("mallory-silent")
    accomplice = sdk.Room()
    events = Events(accomplice, ["participant_connected", "participant_disconnected"])
    async with aiohttp.ClientSession() as session:
        mallory = SctpParticipant(session)
        try:
            await accomplice.connect(ctx.node.ws, join_token(room, ctx.identity("feeder")))
            await mallory.join(ctx.node.ws, join_token(room, mallory_identity))
            await events.wait("participant_connected", lambda p: p.identity == mallory_identity)
            mallory.reading = False  # from now on it never acknowledges (no SACK)
            loop = asyncio.get_running_loop()
            deadline = loop.time() + SILENT_DEADLINE
            payload = b"p" * FEED_MESSAGE
            while not any(
                p.identity == mallory_identity for (p,) in events.all("participant_disconnected")
            ):
                if loop.time() > deadline:
                    raise AttackSucceeded(f"not removed after {SILENT_DEADLINE:g} s")
                await accomplice.local_participant.publish_data(payload, reliable=True)
                tally.add("MB published", FEED_MESSAGE / 1e6)
                await asyncio.sleep(1 / FEED_RATE)
        finally:
            await mallory.close()
            if accomplice.isconnected():
                await accomplice.disconnect()


async def spoofed_consent(ctx: Context, tally: Tally) -> None:
    """M2: one spoofed ICE nomination must not redirect a subscriber's media to a victim."""
    config = LoadTestConfig(
        url=ctx.node.ws,
        api_key=API_KEY,
        api_secret=API_SECRET,
        room=ctx.identity("hostile-m2"),
        video_publishers=1,
        audio_publishers=1,
        subscribers=1,
        simulcast=False,
        resolution="low",
        num_per_second=20,
    )
    result = await reflect_media(config, CONSENT_WINDOW)
    if result.error is not None:
        raise RuntimeError(result.error)
    media = result.victim[PacketClass.RTP] + result.victim[PacketClass.DTLS]
    tally.add("packets to the victim", sum(result.victim.values()))
    if media:
        raise AttackSucceeded(f"the victim got {media} media/DTLS packets")


def garbage(rng: random.Random, kind: int) -> bytes:
    """One hostile datagram for a media port, by RFC 7983 class: random bytes, a STUN Binding
    request for a username nobody was given (signed with a made-up password), a STUN header
    over random attributes, a DTLS record, an RTP or an RTCP packet from no session."""
    body = rng.randbytes(rng.randint(1, 1200))
    match kind:
        case 0:
            return body
        case 1:
            request = stun.Message(stun.Method.BINDING, stun.Class.REQUEST)
            request.attributes["USERNAME"] = f"{rng.randbytes(4).hex()}:{rng.randbytes(4).hex()}"
            request.attributes["PRIORITY"] = rng.getrandbits(32)
            request.attributes["USE-CANDIDATE"] = None
            request.add_message_integrity(rng.randbytes(22))
            return bytes(request)
        case 2:
            length = (len(body) // 4) * 4
            header = b"\x00\x01" + length.to_bytes(2, "big") + b"\x21\x12\xa4\x42"
            return header + rng.randbytes(12) + body[:length]
        case 3:
            return b"\x16\xfe\xfd" + body  # a DTLS 1.2 handshake record header, then noise
        case 4:
            return bytes([0x80, 96 + rng.randint(0, 31)]) + body
        case _:
            return bytes([0x80, rng.randint(200, 206)]) + body


class Answers(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.count = 0

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.count += 1


_garbage_pool: list[bytes] = []


async def hostile_datagrams(ctx: Context, tally: Tally) -> None:
    """Garbage at the node's media port from several source ports: the node drops it all and
    answers nothing (an answer would make it a reflector)."""
    if not _garbage_pool:
        rng = random.Random(int.from_bytes(os.urandom(8), "big"))
        _garbage_pool.extend(garbage(rng, kind % 6) for kind in range(600))
    loop = asyncio.get_running_loop()
    target = ("127.0.0.1", ctx.node.udp_port)
    endpoints = [
        await loop.create_datagram_endpoint(
            Answers, local_addr=("127.0.0.1", 0), family=socket.AF_INET
        )
        for _ in range(GARBAGE_SOURCES)
    ]
    try:
        for sent in range(0, GARBAGE_DATAGRAMS, GARBAGE_BURST):
            transport = endpoints[(sent // GARBAGE_BURST) % GARBAGE_SOURCES][0]
            for i in range(sent, sent + GARBAGE_BURST):
                datagram = _garbage_pool[i % len(_garbage_pool)]
                transport.sendto(datagram, target)
                tally.add("MB sent", len(datagram) / 1e6)
            tally.add("datagrams", GARBAGE_BURST)
            await asyncio.sleep(GARBAGE_PAUSE)
        await asyncio.sleep(GARBAGE_QUIET)
    finally:
        for transport, _ in endpoints:
            transport.close()
    answers = sum(answers.count for _, answers in endpoints)
    if answers:
        raise AttackSucceeded(f"the media port answered {answers} garbage datagrams")


ATTACKS = [
    Attack("H1 SCTP TSN-gap flood", CONTAINMENT, 1.0, 120, sctp_gap_flood),
    Attack(
        "M6 never-acknowledging subscriber", CONTAINMENT, 5.0, 120, never_acknowledging_subscriber
    ),
    Attack("M2 spoofed ICE consent", CORRECTNESS, 60.0, 90, spoofed_consent),
    Attack("UDP hostile datagrams", CORRECTNESS, 3.0, 30, hostile_datagrams),
]
