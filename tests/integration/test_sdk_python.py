"""The official Python `livekit` rtc SDK against the real server: join, updates, data, RPC."""

from __future__ import annotations

import asyncio
import json

import aiohttp
import pytest
from google.protobuf.message import Message
from livekit import api, rtc
from livekit.protocol import room as room_pb

from roomcast.auth import VideoGrant
from roomcast.server import Server
from tests.conftest import API_KEY, API_SECRET, token, url_of
from tests.integration.sdk import joined, until

pytestmark = pytest.mark.usefixtures("signalling")  # on /rtc/v1 and /rtc


async def twirp_call(
    server: Server, method: str, request: Message, grant: VideoGrant
) -> tuple[int, bytes]:
    headers = {
        "Authorization": f"Bearer {token(grant)}",
        "Content-Type": "application/protobuf",
    }
    url = f"{url_of(server)}/twirp/livekit.RoomService/{method}"
    async with (
        aiohttp.ClientSession() as session,
        session.post(url, data=request.SerializeToString(), headers=headers) as resp,
    ):
        return resp.status, await resp.read()


async def test_two_participants_see_each_other_join_and_leave(server: Server) -> None:
    async with joined(server, "r1", "alice") as (alice, alice_events):
        assert alice.local_participant.sid.startswith("PA_")
        assert (await alice.sid).startswith("RM_")
        async with joined(server, "r1", "bob") as (bob, _):
            (_,) = await alice_events.wait("participant_connected", lambda p: p.identity == "bob")
            assert "alice" in {p.identity for p in bob.remote_participants.values()}
            assert alice.remote_participants["bob"].name == "Bob"
        (gone,) = await alice_events.wait("participant_disconnected", lambda p: p.identity == "bob")
        assert gone.identity == "bob"
        assert "bob" not in alice.remote_participants


async def test_connect_with_auto_subscribe_off(server: Server) -> None:
    options = rtc.RoomOptions(auto_subscribe=False)
    async with (
        joined(server, "r2", "carol", options=options) as (carol, events),
        joined(server, "r2", "dave", options=options),
    ):
        await events.wait("participant_connected", lambda p: p.identity == "dave")
        assert carol.isconnected()


async def test_metadata_name_and_attributes_reach_both_sides(server: Server) -> None:
    async with (
        joined(server, "r3", "erin", can_update_own_metadata=True) as (erin, erin_events),
        joined(server, "r3", "frank") as (frank, frank_events),
    ):
        await erin_events.wait("participant_connected", lambda p: p.identity == "frank")
        await erin.local_participant.set_metadata("erin-meta")
        await erin.local_participant.set_name("Erin E.")
        await erin.local_participant.set_attributes({"team": "blue", "seat": "4"})
        await frank_events.wait(
            "participant_metadata_changed", lambda p, old, new: new == "erin-meta"
        )
        await frank_events.wait("participant_name_changed", lambda p, old, new: new == "Erin E.")
        await frank_events.wait(
            "participant_attributes_changed",
            lambda changed, p: p.attributes == {"team": "blue", "seat": "4"},
        )
        # The participant itself sees its own updated info too
        # (docs/protocol/05-room-and-participant-updates.md §5.1). Its copy is updated by
        # its own ParticipantUpdate, which the SDK applies independently of frank's events.
        await erin_events.wait(
            "participant_name_changed",
            lambda p, old, new: p.identity == "erin" and new == "Erin E.",
        )
        assert erin.local_participant.metadata == "erin-meta"
        assert erin.local_participant.name == "Erin E."
        await erin.local_participant.set_attributes({"seat": ""})  # empty value deletes
        await frank_events.wait(
            "participant_attributes_changed", lambda changed, p: p.attributes == {"team": "blue"}
        )
        assert frank.remote_participants["erin"].attributes == {"team": "blue"}


async def test_publish_data_reliable_lossy_topics_and_destinations(server: Server) -> None:
    async with (
        joined(server, "r4", "gina") as (gina, _),
        joined(server, "r4", "hank") as (hank, hank_events),
        joined(server, "r4", "ivan") as (_, ivan_events),
    ):
        await hank_events.wait("participant_connected", lambda p: p.identity == "ivan")
        await gina.local_participant.publish_data(b"to-all", reliable=True, topic="news")
        await gina.local_participant.publish_data(
            b"to-hank", reliable=True, destination_identities=["hank"], topic="dm"
        )
        (packet,) = await hank_events.wait("data_received", lambda p: p.data == b"to-all")
        assert packet.topic == "news" and packet.participant.identity == "gina"
        assert packet.kind == rtc.DataPacketKind.KIND_RELIABLE
        (packet,) = await hank_events.wait("data_received", lambda p: p.data == b"to-hank")
        assert packet.topic == "dm"
        await ivan_events.wait("data_received", lambda p: p.data == b"to-all")

        # Lossy packets can be lost in principle; on loopback a few tries settle it.
        for _ in range(20):
            await gina.local_participant.publish_data(b"lossy", reliable=False, topic="fast")
            try:
                (packet,) = await hank_events.wait(
                    "data_received", lambda p: p.data == b"lossy", timeout=0.5
                )
                break
            except TimeoutError:
                continue
        else:
            pytest.fail("no lossy packet arrived")
        assert packet.kind == rtc.DataPacketKind.KIND_LOSSY and packet.topic == "fast"

        # Never echoed to the sender, and ivan never got the direct message.
        await hank.local_participant.publish_data(b"marker", reliable=True)
        await ivan_events.wait("data_received", lambda p: p.data == b"marker")
        assert not [a for a in ivan_events.all("data_received") if a[0].data == b"to-hank"]


async def test_rpc_round_trip_and_error(server: Server) -> None:
    async with (
        joined(server, "r5", "jill") as (jill, jill_events),
        joined(server, "r5", "kyle") as (kyle, _),
    ):
        await jill_events.wait("participant_connected", lambda p: p.identity == "kyle")

        @kyle.local_participant.register_rpc_method("square")
        async def square(data: rtc.RpcInvocationData) -> str:
            return str(int(data.payload) ** 2)

        @kyle.local_participant.register_rpc_method("fail")
        async def fail(data: rtc.RpcInvocationData) -> str:
            raise rtc.RpcError(1599, "nope", "details")

        result = await jill.local_participant.perform_rpc(
            destination_identity="kyle", method="square", payload="12"
        )
        assert result == "144"
        with pytest.raises(rtc.RpcError) as err:
            await jill.local_participant.perform_rpc(
                destination_identity="kyle", method="fail", payload=""
            )
        assert err.value.code == 1599 and err.value.message == "nope"

        # Server-initiated RPC through RoomService.PerformRpc. Neither livekit-api 1.2 nor
        # livekit-server-sdk 2.19 has a client method for it, so this is a Twirp POST of the
        # official PerformRpcRequest message, as their clients would send it.
        status, body = await twirp_call(
            server,
            "PerformRpc",
            room_pb.PerformRpcRequest(
                room="r5", destination_identity="kyle", method="square", payload="7"
            ),
            VideoGrant(room_admin=True, room="r5"),
        )
        assert status == 200
        assert room_pb.PerformRpcResponse.FromString(body).payload == "49"
        status, body = await twirp_call(
            server,
            "PerformRpc",
            room_pb.PerformRpcRequest(room="r5", destination_identity="kyle", method="fail"),
            VideoGrant(room_admin=True, room="r5"),
        )
        error = json.loads(body)
        assert status >= 400 and error["msg"] == "nope" and error["meta"]["rpc_code"] == "1599"
        status, body = await twirp_call(
            server,
            "PerformRpc",
            room_pb.PerformRpcRequest(room="r5", destination_identity="nobody", method="x"),
            VideoGrant(room_admin=True, room="r5"),
        )
        assert status == 404 and json.loads(body)["code"] == "not_found"


async def test_text_and_byte_streams(server: Server) -> None:
    async with (
        joined(server, "r6", "lena") as (lena, lena_events),
        joined(server, "r6", "mike") as (mike, _),
    ):
        await lena_events.wait("participant_connected", lambda p: p.identity == "mike")
        texts: asyncio.Queue[tuple[str, str]] = asyncio.Queue()
        blobs: asyncio.Queue[tuple[str, bytes]] = asyncio.Queue()

        async def read_text(reader: rtc.TextStreamReader, sender: str) -> None:
            await texts.put((sender, await reader.read_all()))

        async def read_bytes(reader: rtc.ByteStreamReader, sender: str) -> None:
            chunks = [chunk async for chunk in reader]
            await blobs.put((sender, b"".join(chunks)))

        tasks: set[asyncio.Task[None]] = set()
        mike.register_text_stream_handler(
            "chat", lambda r, s: tasks.add(asyncio.ensure_future(read_text(r, s)))
        )
        mike.register_byte_stream_handler(
            "files", lambda r, s: tasks.add(asyncio.ensure_future(read_bytes(r, s)))
        )
        long_text = "hello " * 5000  # several chunks
        await lena.local_participant.send_text(long_text, topic="chat")
        assert await asyncio.wait_for(texts.get(), 20) == ("lena", long_text)

        blob = bytes(range(256)) * 600  # 150 KiB
        writer = await lena.local_participant.stream_bytes("blob.bin", topic="files")
        await writer.write(blob)
        await writer.aclose()
        assert await asyncio.wait_for(blobs.get(), 20) == ("lena", blob)


async def test_permissions_change_through_update_participant(server: Server) -> None:
    async with (
        joined(server, "r7", "nina") as (nina, nina_events),
        joined(server, "r7", "otto") as (_, otto_events),
        api.LiveKitAPI(url_of(server), API_KEY, API_SECRET) as lk,
    ):
        await nina_events.wait("participant_connected", lambda p: p.identity == "otto")
        info = await lk.room.update_participant(
            api.UpdateParticipantRequest(
                room="r7",
                identity="nina",
                metadata="set-by-admin",
                permission=api.ParticipantPermission(
                    can_subscribe=True, can_publish=True, can_publish_data=False
                ),
            )
        )
        assert not info.permission.can_publish_data and info.metadata == "set-by-admin"
        await nina_events.wait("participant_permissions_changed")
        await otto_events.wait(
            "participant_metadata_changed", lambda p, old, new: new == "set-by-admin"
        )
        assert not nina.local_participant.permissions.can_publish_data
        # The revoked permission takes effect at once: nina's data no longer arrives.
        await nina.local_participant.publish_data(b"blocked", reliable=True)
        async with joined(server, "r7", "pete") as (pete, _):
            await pete.local_participant.publish_data(b"allowed", reliable=True)
            await otto_events.wait("data_received", lambda p: p.data == b"allowed")
        assert not [a for a in otto_events.all("data_received") if a[0].data == b"blocked"]


async def test_participant_without_can_publish_data_cannot_send(server: Server) -> None:
    async with (
        joined(server, "r8", "quin", can_publish_data=False) as (quin, quin_events),
        joined(server, "r8", "rita") as (_, rita_events),
    ):
        await quin_events.wait("participant_connected", lambda p: p.identity == "rita")
        assert not quin.local_participant.permissions.can_publish_data
        dropped = server.admin.data.packets_dropped
        # The SDK sends it; the server must drop it (docs/protocol/06-data-packets.md §6.3 rule 1).
        await quin.local_participant.publish_data(b"forbidden", reliable=True)
        await until(lambda: server.admin.data.packets_dropped > dropped)
        assert not [a for a in rita_events.all("data_received") if a[0].data == b"forbidden"]


async def test_remove_participant_and_delete_room_disconnect_with_reason(server: Server) -> None:
    async with (
        joined(server, "r9", "sam") as (_, sam_events),
        joined(server, "r9", "tess") as (_, tess_events),
        api.LiveKitAPI(url_of(server), API_KEY, API_SECRET) as lk,
    ):
        listed = await lk.room.list_participants(api.ListParticipantsRequest(room="r9"))
        assert sorted(p.identity for p in listed.participants) == ["sam", "tess"]
        got = await lk.room.get_participant(api.RoomParticipantIdentity(room="r9", identity="sam"))
        assert got.sid.startswith("PA_") and got.state == api.ParticipantInfo.State.ACTIVE

        await lk.room.remove_participant(api.RoomParticipantIdentity(room="r9", identity="sam"))
        (reason,) = await sam_events.wait("disconnected")
        assert reason == rtc.DisconnectReason.PARTICIPANT_REMOVED
        await tess_events.wait("participant_disconnected", lambda p: p.identity == "sam")

        await lk.room.delete_room(api.DeleteRoomRequest(room="r9"))
        (reason,) = await tess_events.wait("disconnected")
        assert reason == rtc.DisconnectReason.ROOM_DELETED


async def test_duplicate_identity_replaces_old_session(server: Server) -> None:
    async with joined(server, "r10", "uma") as (first, first_events):
        old_sid = first.local_participant.sid
        async with joined(server, "r10", "uma") as (second, _):
            (reason,) = await first_events.wait("disconnected")
            assert reason == rtc.DisconnectReason.DUPLICATE_IDENTITY
            assert second.local_participant.sid != old_sid
            async with api.LiveKitAPI(url_of(server), API_KEY, API_SECRET) as lk:
                listed = await lk.room.list_participants(api.ListParticipantsRequest(room="r10"))
            assert [(p.identity, p.sid) for p in listed.participants] == [
                ("uma", second.local_participant.sid)
            ]


async def test_hidden_participant_is_invisible_and_room_metadata_updates(server: Server) -> None:
    async with (
        joined(server, "r11", "vera") as (vera, vera_events),
        joined(server, "r11", "watcher", hidden=True) as (watcher, _),
        api.LiveKitAPI(url_of(server), API_KEY, API_SECRET) as lk,
    ):
        assert "vera" in watcher.remote_participants
        listed = await lk.room.list_participants(api.ListParticipantsRequest(room="r11"))
        assert sorted(p.identity for p in listed.participants) == ["vera", "watcher"]
        await lk.room.update_room_metadata(
            api.UpdateRoomMetadataRequest(room="r11", metadata="room-meta")
        )
        await vera_events.wait("room_metadata_changed", lambda old, new: new == "room-meta")
        assert vera.metadata == "room-meta"
        assert "watcher" not in vera.remote_participants
        assert not vera_events.all("participant_connected")
