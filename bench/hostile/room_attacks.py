"""Attacks on room state by participants with ordinary join tokens (security review H4, M3,
M4, L7, and the per-participant bounds of issue 20 item 3): the attack code of
tests/integration/test_hardening_rooms.py and test_limits.py, paced and repeated."""

from __future__ import annotations

import asyncio
import itertools

from livekit import api
from livekit import rtc as sdk
from livekit.protocol import models, rtc
from tests.conftest import API_KEY, API_SECRET
from tests.integration.sdk import join_token
from tests.integration.test_media_python import sine_audio
from tests.integration.test_signalling import receive, receive_until, send

from bench.hostile.framework import (
    CONTAINMENT,
    CORRECTNESS,
    Attack,
    AttackSucceeded,
    Context,
    Tally,
)
from roomcast.auth import TokenVerifier
from roomcast.rooms.tracks import DEFAULT_MAX_TRACKS, MAX_PENDING_TRACKS

SPAM_FRAMES = 8  # the review's H4: 8 frames of 60 000 made-up track sids (~1 MB each)
SPAM_SIDS = 60_000
METADATA_BURST = 200
REVOKE_DEADLINE = 10.0  # s for a revoked subscriber's media to stop
TRACK_REQUESTS = 200

_sid_serial = itertools.count()


async def subscription_spam(ctx: Context, tally: Tally) -> None:
    """H4: UpdateSubscription for unknown track sids (the old code kept each one)."""
    identity = ctx.identity("mallory-subs")
    url = f"{ctx.node.ws}/rtc?access_token={join_token(ctx.plan.room, identity)}"
    async with ctx.http.ws_connect(url) as ws:
        await receive_until(ws, "join")
        for _ in range(SPAM_FRAMES):
            sids = [f"TR_{next(_sid_serial):012x}" for _ in range(SPAM_SIDS)]
            request = rtc.SignalRequest(subscription=rtc.UpdateSubscription(track_sids=sids))
            await send(ws, request)
            tally.add("MB sent", request.ByteSize() / 1e6)
        await send(ws, rtc.SignalRequest(ping_req=rtc.Ping(timestamp=1)))
        await receive_until(ws, "pong_resp")  # every frame before it was handled


async def metadata_flood(ctx: Context, tally: Tally) -> None:
    """L7: 200 metadata updates at once in the honest room; beyond the update rate the server
    answers LIMIT_EXCEEDED instead of broadcasting each."""
    access = join_token(ctx.plan.room, ctx.identity("mallory-meta"), can_update_own_metadata=True)
    async with ctx.http.ws_connect(f"{ctx.node.ws}/rtc?access_token={access}") as ws:
        await receive_until(ws, "join")
        for i in range(METADATA_BURST):
            update = rtc.UpdateParticipantMetadata(metadata=f"m{i}" * 100, request_id=i + 1)
            await send(ws, rtc.SignalRequest(update_metadata=update))
        reasons: list[int] = []
        while len(reasons) < METADATA_BURST:
            response = await receive(ws)
            if response.WhichOneof("message") == "request_response":
                reasons.append(response.request_response.reason)
    accepted = reasons.count(rtc.RequestResponse.OK)
    tally.add("updates accepted", accepted)
    tally.add("updates refused", METADATA_BURST - accepted)
    if accepted == METADATA_BURST:
        raise AttackSucceeded(f"all {METADATA_BURST} updates were accepted and broadcast")


async def refresh_token_replay(ctx: Context, tally: Tally) -> None:
    """M4: after an admin revokes canPublish, the refresh token (and a reconnect with it)
    must not restore it."""
    room, identity = "hostile-m4", ctx.identity("bob")
    access = join_token(room, identity, can_publish=True, can_subscribe=True)
    async with (
        ctx.http.ws_connect(f"{ctx.node.ws}/rtc?access_token={access}") as ws,
        api.LiveKitAPI(ctx.node.http, API_KEY, API_SECRET) as lk,
    ):
        await receive_until(ws, "join")
        await receive_until(ws, "refresh_token")  # the one sent at join
        revoked = api.ParticipantPermission(can_publish=False, can_subscribe=True)
        await lk.room.update_participant(
            api.UpdateParticipantRequest(room=room, identity=identity, permission=revoked)
        )
        refreshed = (await receive_until(ws, "refresh_token")).refresh_token
    claims = TokenVerifier({API_KEY: API_SECRET}).verify(refreshed)
    if claims.video.can_publish:
        raise AttackSucceeded("the refresh token grants canPublish again")
    async with ctx.http.ws_connect(f"{ctx.node.ws}/rtc?access_token={refreshed}") as ws:
        join = (await receive_until(ws, "join")).join
    if join.participant.permission.can_publish:
        raise AttackSucceeded("a reconnect with the refresh token may publish again")


async def audio_packets_in(room: sdk.Room) -> int:
    """RTP packets received on the subscriber PeerConnection (its inbound-rtp stats)."""
    stats = await room.get_rtc_stats()
    return sum(
        s.inbound_rtp.received.packets_received
        for s in stats.subscriber_stats
        if s.WhichOneof("stats") == "inbound_rtp"
    )


async def revoked_subscription(ctx: Context, tally: Tally) -> None:
    """M3: a publisher withdraws everyone's subscription permission; its current subscriber's
    media must stop (the official SDK's inbound RTP counters stop growing)."""
    room = "hostile-m3"
    alice, bob = sdk.Room(), sdk.Room()
    try:
        await alice.connect(ctx.node.ws, join_token(room, ctx.identity("alice")))
        await bob.connect(ctx.node.ws, join_token(room, ctx.identity("bob")))
        async with sine_audio(alice):
            for _ in range(80):  # 20 s for bob's first audio
                if await audio_packets_in(bob) >= 50:
                    break
                await asyncio.sleep(0.25)
            else:
                raise RuntimeError("the subscriber got no audio")
            alice.local_participant.set_track_subscription_permissions(allow_all_participants=False)
            loop = asyncio.get_running_loop()
            deadline = loop.time() + REVOKE_DEADLINE
            last = await audio_packets_in(bob)
            while loop.time() < deadline:
                await asyncio.sleep(1.0)
                now = await audio_packets_in(bob)
                if now <= last:
                    return
                last = now
            raise AttackSucceeded(f"media still flows {REVOKE_DEADLINE:g} s after revocation")
    finally:
        for participant in (alice, bob):
            if participant.isconnected():
                await participant.disconnect()


async def pending_track_spam(ctx: Context, tally: Tally) -> None:
    """Issue 20 item 3: 200 AddTrackRequests, never followed by media, from a participant of
    the honest room; at most 20 are held pending, the rest refused with LIMIT_EXCEEDED."""
    access = join_token(ctx.plan.room, ctx.identity("mallory-tracks"))
    async with ctx.http.ws_connect(f"{ctx.node.ws}/rtc?access_token={access}") as ws:
        await receive_until(ws, "join")
        for i in range(TRACK_REQUESTS):
            request = rtc.AddTrackRequest(
                cid=f"spam-{i}", type=models.TrackType.AUDIO, source=models.TrackSource.MICROPHONE
            )
            await send(ws, rtc.SignalRequest(add_track=request))
        held = refused = 0
        while held + refused < TRACK_REQUESTS:
            response = await receive(ws)
            kind = response.WhichOneof("message")
            if kind == "track_published":
                held += 1
            elif kind == "request_response" and response.request_response.HasField("add_track"):
                refused += 1
    tally.add("tracks held", held)
    tally.add("refused", refused)
    if held > min(MAX_PENDING_TRACKS, DEFAULT_MAX_TRACKS):
        raise AttackSucceeded(f"{held} of {TRACK_REQUESTS} pending tracks held")


ATTACKS = [
    Attack("H4 subscription spam", CONTAINMENT, 5.0, 60, subscription_spam),
    Attack("I3 pending-track spam", CONTAINMENT, 10.0, 60, pending_track_spam),
    Attack("L7 metadata update flood", CONTAINMENT, 10.0, 60, metadata_flood),
    Attack("M4 refresh-token replay", CORRECTNESS, 15.0, 60, refresh_token_replay),
    Attack("M3 revoked subscription permission", CORRECTNESS, 30.0, 60, revoked_subscription),
]
