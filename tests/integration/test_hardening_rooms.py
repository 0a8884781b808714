"""Attacks on room state by participants holding ordinary join tokens (security review H4, M3,
M4, L7), each performed against the real server; they must leave the node unchanged."""

from __future__ import annotations

import asyncio
import secrets

from livekit import api
from livekit import rtc as sdk
from livekit.protocol import rtc

from roomcast.auth import TokenVerifier
from roomcast.server import Server
from tests.conftest import API_KEY, API_SECRET
from tests.integration.sdk import joined, until
from tests.integration.test_media_python import publishing, subscribed_track
from tests.integration.test_signalling import raw_signal, receive, receive_until, send


async def test_subscription_spam_for_unknown_tracks_keeps_nothing(server: Server) -> None:
    """H4: UpdateSubscription with 8 x 60 000 made-up track sids (≈8 MB): the old code kept
    every sid for the whole session (≈8 MiB of memory per MB sent)."""
    async with raw_signal(server, "spam", "mallory") as ws:
        await receive_until(ws, "join")
        for _ in range(8):
            sids = [f"TR_{secrets.token_hex(6)}" for _ in range(60_000)]
            await send(ws, rtc.SignalRequest(subscription=rtc.UpdateSubscription(track_sids=sids)))
        await send(ws, rtc.SignalRequest(ping_req=rtc.Ping(timestamp=1)))
        await receive_until(ws, "pong_resp")  # every frame before it was handled
        room = server.rooms.get("spam")
        assert room is not None
        assert room.participants["mallory"].desired_subscriptions == {}


async def test_refreshed_token_does_not_restore_revoked_permissions(server: Server) -> None:
    """M4: the refresh token after UpdateParticipant(can_publish=false) must not carry
    canPublish; the old code signed the original join grant again."""
    async with (
        raw_signal(server, "revoke", "bob", can_publish=True, can_subscribe=True) as ws,
        api.LiveKitAPI(f"http://127.0.0.1:{server.port}", API_KEY, API_SECRET) as lk,
    ):
        await receive_until(ws, "join")
        await receive_until(ws, "refresh_token")  # the one sent at join
        revoked = api.ParticipantPermission(can_publish=False, can_subscribe=True)
        await lk.room.update_participant(
            api.UpdateParticipantRequest(room="revoke", identity="bob", permission=revoked)
        )
        refreshed = (await receive_until(ws, "refresh_token")).refresh_token
    claims = TokenVerifier({API_KEY: API_SECRET}).verify(refreshed)
    assert claims.video.can_publish is False
    assert claims.video.can_subscribe is True
    assert claims.identity == "bob" and claims.video.room == "revoke"


async def test_revoked_subscription_permission_unsubscribes_current_subscribers(
    server: Server,
) -> None:
    """M3: a publisher withdraws everyone's permission; the old code kept forwarding its
    audio and video to existing subscribers."""
    async with (
        joined(server, "perm", "alice") as (alice, _),
        joined(server, "perm", "bob") as (_, bob_events),
        publishing(alice),
    ):
        await subscribed_track(bob_events, sdk.TrackKind.KIND_AUDIO, "alice")
        room = server.rooms.get("perm")
        assert room is not None
        bob = room.participants["bob"]

        def forwarded_to_bob() -> int:
            return sum(d.subscriber == bob.sid for d in server.plane.downtracks())

        await until(lambda: forwarded_to_bob() == 2)
        alice.local_participant.set_track_subscription_permissions(allow_all_participants=False)
        await until(lambda: forwarded_to_bob() == 0)
        publications = list(server.media.publications.values())
        assert all(bob.sid not in p.subscribers for p in publications)
        assert all(bob.sid in p.denied for p in publications)  # told: not allowed
        # Granting it back subscribes bob again (he still auto-subscribes).
        alice.local_participant.set_track_subscription_permissions(allow_all_participants=True)
        await until(lambda: forwarded_to_bob() == 2)
        assert all(not p.denied for p in server.media.publications.values())


async def test_metadata_update_flood_is_rate_limited(server: Server) -> None:
    """L7: 200 metadata updates in a burst are each broadcast to the whole room by the old
    code; now the participant gets LIMIT_EXCEEDED beyond the rate, and watchers see few."""
    async with (
        raw_signal(server, "flood", "watcher") as watcher,
        raw_signal(server, "flood", "mallory", can_update_own_metadata=True) as ws,
    ):
        await receive_until(watcher, "join")
        await receive_until(ws, "join")
        for i in range(200):
            update = rtc.UpdateParticipantMetadata(metadata=f"m{i}" * 100, request_id=i + 1)
            await send(ws, rtc.SignalRequest(update_metadata=update))
        reasons = []
        while len(reasons) < 200:
            response = await receive(ws)
            if response.WhichOneof("message") == "request_response":
                reasons.append(response.request_response.reason)
        accepted = reasons.count(rtc.RequestResponse.OK)
        refused = reasons.count(rtc.RequestResponse.LIMIT_EXCEEDED)
        assert accepted + refused == 200
        assert 20 <= accepted <= 40  # the burst, plus what the rate refilled meanwhile
        assert server.metrics.limit_hits.labels("metadata_update_rate")._value.get() == refused
        # The watcher saw at most one update per accepted change.
        await send(watcher, rtc.SignalRequest(ping_req=rtc.Ping(timestamp=1)))
        seen = 0
        while True:
            response = await asyncio.wait_for(receive(watcher), 10)
            which = response.WhichOneof("message")
            if which == "pong_resp":
                break
            if which == "update":
                seen += sum(p.identity == "mallory" for p in response.update.participants)
        assert seen <= accepted + 2  # + mallory's own join and active announcements
