"""Media-plane attacks by participants with ordinary join tokens (security review H1, M6, M2):
the attack code of tests/integration/test_sctp_attacks.py and test_consent_per_address.py,
paced and repeated."""

from __future__ import annotations

import asyncio

import aiohttp
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


ATTACKS = [
    Attack("H1 SCTP TSN-gap flood", CONTAINMENT, 1.0, 120, sctp_gap_flood),
    Attack(
        "M6 never-acknowledging subscriber", CONTAINMENT, 5.0, 120, never_acknowledging_subscriber
    ),
    Attack("M2 spoofed ICE consent", CORRECTNESS, 60.0, 90, spoofed_consent),
]
