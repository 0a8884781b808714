"""Data tracks when a participant's signalling is relayed by a node that does not host the room
(docs/protocol/12-config-cli-multinode.md §12.5, docs/protocol/17-data-tracks.md): the relay
carries the data-track requests and responses, and the packets go straight to the room's node."""

from __future__ import annotations

from livekit import api

from tests.integration.data_track_sdk import FrameReader, Pusher, dt_joined, published_track
from tests.integration.test_multinode import cluster, lkapi


async def test_data_tracks_work_with_signalling_relayed_through_another_node() -> None:
    async with cluster(2) as (_, (a, b)):
        async with lkapi(a) as api_a:
            await api_a.room.create_room(api.CreateRoomRequest(name="dt"))  # lives on A
        async with (
            dt_joined(a.ws_url, "dt", "local") as (local, local_events),
            dt_joined(b.ws_url, "dt", "relayed") as (relayed, relayed_events),
        ):
            # Published over the relay, received on the room's node; and the other way round.
            from_b = await relayed.local_participant.publish_data_track(name="from-b")
            from_a = await local.local_participant.publish_data_track(name="from-a")
            pushers = [Pusher(from_b, 40_000), Pusher(from_a, 40_000)]
            readers = [
                FrameReader(await published_track(local_events, "relayed", "from-b")),
                FrameReader(await published_track(relayed_events, "local", "from-a")),
            ]
            try:
                for reader in readers:
                    frames = await reader.wait_frames(3)
                    assert all(f.intact and f.size == 40_000 for f in frames), frames[:3]
                async with lkapi(b) as api_b:
                    listed = await api_b.room.list_participants(
                        api.ListParticipantsRequest(room="dt")
                    )
                names = {p.identity: [t.name for t in p.data_tracks] for p in listed.participants}
                assert names == {"local": ["from-a"], "relayed": ["from-b"]}
                for pusher in pushers:
                    await pusher.stop()
                await from_b.unpublish()
                await local_events.wait("data_track_unpublished", lambda s: s == from_b.info.sid)
                await readers[0].wait_end()
            finally:
                for pusher in pushers:
                    await pusher.stop()
                for reader in readers:
                    await reader.close()
