"""Several Roomcast nodes sharing rooms through a real Redis (issue 8,
docs/protocol/12-config-cli-multinode.md §12.5).

Each node is a real `roomcast serve` process; participants use the official Python SDK and the
API calls go through livekit-api. Placement is by room count with ties to the local node, so
a room created through node A lives on A.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, suppress
from pathlib import Path

import aiohttp
import pytest
import redis.asyncio as aioredis
from livekit import api, rtc
from livekit.protocol import room as room_pb

from roomcast.auth import VideoGrant
from roomcast.routing.records import RoomRecords
from tests.conftest import API_KEY, API_SECRET, token
from tests.integration.cluster import Node, RedisServer
from tests.integration.sdk import Events, join_token, until
from tests.integration.test_media_python import HEIGHT, WIDTH, publishing, video_frame_size
from tests.integration.webhook_receiver import WebhookSink

NODE_EVENTS = [
    "participant_connected",
    "participant_disconnected",
    "data_received",
    "reconnecting",
    "reconnected",
    "disconnected",
    "track_subscribed",
    "participant_metadata_changed",
]


@asynccontextmanager
async def cluster(
    count: int,
    extra_config: str = "",
    *,
    redis: RedisServer | None = None,
    redis_config: str = "",
) -> AsyncIterator[tuple[RedisServer, list[Node]]]:
    """`count` nodes on a fresh redis-server, or on `redis` (which the caller then owns),
    reached as `redis_config` says (the YAML under `redis:`) when given."""
    owned = redis is None
    server = RedisServer() if redis is None else redis
    if owned:
        await server.start()
    nodes = [
        Node(chr(ord("a") + i), server, extra_config, redis_config=redis_config)
        for i in range(count)
    ]
    try:
        await asyncio.gather(*(node.start() for node in nodes))
        yield server, nodes
    except BaseException:
        for node in nodes:
            print(f"----- node {node.name} log -----\n{node.log()}")
        raise
    finally:
        await asyncio.gather(*(node.stop() for node in nodes))
        if owned:
            await server.stop()


def lkapi(node: Node) -> api.LiveKitAPI:
    return api.LiveKitAPI(node.http_url, API_KEY, API_SECRET)


async def join(node: Node, room: str, identity: str) -> tuple[rtc.Room, Events]:
    participant = rtc.Room()
    events = Events(participant, NODE_EVENTS)
    await participant.connect(node.ws_url, join_token(room, identity))
    return participant, events


async def leave(*rooms: rtc.Room) -> None:
    for room in rooms:
        with suppress(Exception):
            await room.disconnect()


async def records_gone(store: aioredis.Redis, room: str) -> bool:
    return not await store.exists(f"roomcast:room:{room}", f"roomcast:room_participants:{room}")


async def until_async(condition: Callable[[], Awaitable[bool]], timeout: float = 10) -> None:
    """Poll state in Redis, which has no event of its own."""
    for _ in range(int(timeout / 0.05)):
        if await condition():
            return
        await asyncio.sleep(0.05)
    raise TimeoutError("condition not reached")


async def node_id_of(node: Node, redis: RedisServer) -> str:
    """A node's id, as registered in Redis (what `roomcast list-nodes` shows)."""
    from roomcast.config import RedisConfig
    from roomcast.routing.registry import list_nodes

    records = await list_nodes(RedisConfig(address=redis.address))
    return next(record.id for record, _ in records if record.http_url == node.http_url)


def identities(room: rtc.Room) -> set[str]:
    return {p.identity for p in room.remote_participants.values()}


async def test_participants_on_different_nodes_share_a_room() -> None:
    hooks = WebhookSink()
    await hooks.start()
    webhook = f"webhook:\n  api_key: {API_KEY}\n  urls: [{hooks.url}]\n"
    async with cluster(2, webhook) as (redis, (a, b)):
        async with lkapi(a) as api_a, lkapi(b) as api_b:
            await api_a.room.create_room(api.CreateRoomRequest(name="shared", metadata="m1"))
            a_id = await node_id_of(a, redis)
            store = aioredis.Redis(host="127.0.0.1", port=redis.port)
            # ListRooms through either node sees the room, which lives on A.
            for client in (api_a, api_b):
                listed = await client.room.list_rooms(api.ListRoomsRequest())
                assert [r.name for r in listed.rooms] == ["shared"]
            # The dashboard's /stats through B shows the room on A, and both nodes.
            admin = token(VideoGrant(room_list=True))
            async with aiohttp.ClientSession() as http:
                async with http.get(f"{b.http_url}/stats?access_token={admin}") as resp:
                    stats = await resp.json()
            assert [(r["name"], r["node"]) for r in stats["rooms"]] == [("shared", a_id)]
            assert len(stats["nodes"]) == 2 and stats["server"]["memory_mib"] > 0
            # A second CreateRoom through B is routed to A: same room, not a copy on B.
            again = await api_b.room.create_room(api.CreateRoomRequest(name="shared"))
            assert again.metadata == "m1"

            alice, alice_events = await join(a, "shared", "alice")
            bob, bob_events = await join(b, "shared", "bob")
            try:
                await until(lambda: identities(alice) == {"bob"} and identities(bob) == {"alice"})
                # Media published on A's transport reaches bob, whose signalling is on B.
                async with publishing(alice):
                    track, _, _ = await bob_events.wait(
                        "track_subscribed", lambda t, p, _: t.kind == rtc.TrackKind.KIND_VIDEO
                    )
                    assert await video_frame_size(track) == (WIDTH, HEIGHT)
                await bob.local_participant.publish_data(b"from bob via B", topic="t")
                packet = (await alice_events.wait("data_received"))[0]
                assert packet.data == b"from bob via B" and packet.participant.identity == "bob"

                # A, the room's node, keeps the room and participant records in Redis.
                people: list[str] = []
                for _ in range(100):
                    infos = await RoomRecords(store, "", 1000).participants("shared")
                    people = sorted(info.identity for info in infos)
                    if people == ["alice", "bob"]:
                        break
                    await asyncio.sleep(0.1)  # records are refreshed every heartbeat (1 s)
                assert people == ["alice", "bob"]
                (recorded,) = await RoomRecords(store, "", 1000).rooms_of({a_id})
                assert recorded.name == "shared" and recorded.metadata == "m1"

                # RoomService calls through B act on the room hosted by A.
                people = await api_b.room.list_participants(
                    api.ListParticipantsRequest(room="shared")
                )
                assert {p.identity for p in people.participants} == {"alice", "bob"}
                await api_b.room.update_participant(
                    api.UpdateParticipantRequest(room="shared", identity="alice", metadata="hi")
                )
                await bob_events.wait(
                    "participant_metadata_changed", lambda p, old, new: new == "hi"
                )
                await api_b.room.send_data(
                    api.SendDataRequest(room="shared", data=b"server says", kind=0, topic="s")
                )
                await alice_events.wait("data_received", lambda p: p.data == b"server says")
                await bob_events.wait("data_received", lambda p: p.data == b"server says")
                # Server-initiated RPC through B to alice on A (a raw Twirp POST: no client
                # library has PerformRpc); the reply comes back the same way.

                @alice.local_participant.register_rpc_method("double")
                async def double(data: rtc.RpcInvocationData) -> str:
                    return str(2 * int(data.payload))

                request = room_pb.PerformRpcRequest(
                    room="shared", destination_identity="alice", method="double", payload="21"
                )
                headers = {
                    "Authorization": f"Bearer {token(VideoGrant(room_admin=True, room='shared'))}",
                    "Content-Type": "application/protobuf",
                }
                url = f"{b.http_url}/twirp/livekit.RoomService/PerformRpc"
                async with (
                    aiohttp.ClientSession() as http,
                    http.post(url, data=request.SerializeToString(), headers=headers) as resp,
                ):
                    assert resp.status == 200, await resp.text()
                    reply = room_pb.PerformRpcResponse.FromString(await resp.read())
                assert reply.payload == "42"
            finally:
                await leave(alice, bob)
            await api_b.room.delete_room(api.DeleteRoomRequest(room="shared"))
            listed = await api_a.room.list_rooms(api.ListRoomsRequest())
            assert listed.rooms == []
            await until_async(lambda: records_gone(store, "shared"))
            await store.aclose()

        # Each event is sent once, by the node hosting the room.
        await until(lambda: "room_finished" in [e.event for e in hooks.events])
        await asyncio.sleep(1)  # a duplicate would arrive right behind the first
        names = [e.event for e in hooks.events]
        assert names.count("room_started") == 1
        assert names.count("room_finished") == 1
        joined = [e.participant.identity for e in hooks.events if e.event == "participant_joined"]
        assert sorted(joined) == ["alice", "bob"]
        left = [e.participant.identity for e in hooks.events if e.event == "participant_left"]
        assert sorted(left) == ["alice", "bob"]
    await hooks.stop()


async def test_full_room_on_another_node_is_refused_before_the_upgrade() -> None:
    """The edge asks the room's node (over the bus) whether the room is full, so the SDK
    connected to another node gets the same HTTP 403 and reason as on the room's node."""
    full = "room has exceeded its max participants (1)"
    async with cluster(2) as (_, (a, b)):
        async with lkapi(a) as api_a:
            await api_a.room.create_room(api.CreateRoomRequest(name="solo", max_participants=1))
        alice, _ = await join(a, "solo", "alice")  # the room and its one seat are on A
        try:
            async with aiohttp.ClientSession() as http:
                validate = f"{b.http_url}/rtc/validate?access_token={join_token('solo', 'bob')}"
                async with http.get(validate) as resp:
                    assert (resp.status, await resp.text()) == (403, full)
            with pytest.raises(rtc.ConnectError) as refused:
                await rtc.Room().connect(b.ws_url, join_token("solo", "bob"))
            assert full in str(refused.value), refused.value
        finally:
            await leave(alice)
        # The seat is free again once A has seen alice leave.
        async with aiohttp.ClientSession() as http:

            async def seat_free() -> bool:
                async with http.get(validate) as resp:
                    return resp.status == 200

            await until_async(seat_free)
        bob, _ = await join(b, "solo", "bob")  # relayed to A
        await leave(bob)


async def test_killed_node_participants_reconnect_to_a_live_node() -> None:
    async with cluster(3) as (_, (a, b, c)):
        async with lkapi(a) as api_a:
            await api_a.room.create_room(api.CreateRoomRequest(name="failover"))
        alice, alice_events = await join(b, "failover", "alice")
        bob, bob_events = await join(c, "failover", "bob")
        try:
            await until(lambda: identities(alice) == {"bob"} and identities(bob) == {"alice"})
            await a.kill()  # the room's node dies mid-call
            await alice_events.wait("reconnected", timeout=30)
            await bob_events.wait("reconnected", timeout=30)
            await until(lambda: identities(alice) == {"bob"} and identities(bob) == {"alice"})
            # The room now lives on a live node, and data flows again.
            async with lkapi(b) as api_b:
                people = await api_b.room.list_participants(
                    api.ListParticipantsRequest(room="failover")
                )
                assert {p.identity for p in people.participants} == {"alice", "bob"}
            await alice.local_participant.publish_data(b"after failover")
            await bob_events.wait("data_received", lambda p: p.data == b"after failover")
        finally:
            await leave(alice, bob)


async def test_redis_restart_keeps_live_rooms() -> None:
    async with cluster(2) as (redis, (a, b)):
        async with lkapi(a) as api_a:
            await api_a.room.create_room(api.CreateRoomRequest(name="steady"))
        alice, alice_events = await join(b, "steady", "alice")  # relayed to A
        try:
            await redis.stop()
            await asyncio.sleep(1.5)
            await redis.start()  # empty: nodes must re-register and re-take their leases
            async with lkapi(b) as api_b:
                for _ in range(100):
                    with suppress(api.TwirpError):
                        listed = await api_b.room.list_rooms(api.ListRoomsRequest())
                        if [r.name for r in listed.rooms] == ["steady"]:
                            break
                    await asyncio.sleep(0.1)
                else:
                    raise AssertionError("the room did not come back in ListRooms")
            carol, _ = await join(b, "steady", "carol")
            try:
                await until(lambda: identities(carol) == {"alice"})
                await carol.local_participant.publish_data(b"still here")
                await alice_events.wait("data_received", lambda p: p.data == b"still here")
                assert not alice_events.all("disconnected")
            finally:
                await leave(carol)
        finally:
            await leave(alice)


async def test_serve_workers_share_one_port() -> None:
    """`roomcast serve --workers 2`: two processes, one port, rooms spread over both."""
    import signal

    from tests.integration.test_cli import start_dev_server

    config = "limit:\n  joins_per_second_per_ip: 0\nnode_selector:\n  sort_by: rooms\n"
    proc, port = await start_dev_server(
        "--workers", "2", "--config-body", config, stderr=asyncio.subprocess.PIPE
    )
    url = f"http://127.0.0.1:{port}"
    try:
        async with api.LiveKitAPI(url, API_KEY, API_SECRET) as client:
            names = [f"w{i}" for i in range(6)]
            for name in names:
                await client.room.create_room(api.CreateRoomRequest(name=name))
            # Every worker answers ListRooms with every room, whichever worker hosts it.
            for _ in range(4):
                listed = await client.room.list_rooms(api.ListRoomsRequest())
                assert sorted(r.name for r in listed.rooms) == names
            rooms = []
            for identity in ("ann", "ben", "cat"):
                rooms.append(await join_url(f"ws://127.0.0.1:{port}", "w0", identity))
            try:
                await until(lambda: all(len(r[0].remote_participants) == 2 for r in rooms))
                await rooms[0][0].local_participant.publish_data(b"hello workers")
                for _, events in rooms[1:]:
                    await events.wait("data_received", lambda p: p.data == b"hello workers")
            finally:
                await leave(*(r for r, _ in rooms))
        proc.send_signal(signal.SIGTERM)
        _, stderr = await asyncio.wait_for(proc.communicate(), 20)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode == 0, stderr.decode()[-3000:]
    log = stderr.decode()
    # Where the private Redis is, for `roomcast list-nodes --redis-host unix://…`.
    socket_path = re.search(r"\[supervisor\] .*private Redis on (unix://\S+/redis\.sock)", log)
    assert socket_path is not None, log[-3000:]
    # Each worker's lines carry its node id and index; its start-up line says where Redis is.
    started = [line for line in log.splitlines() if "roomcast started" in line]
    assert len(started) == 2
    tags = set()
    for line in started:
        tag = re.search(r"\[(ND_\w+) w([01])\] roomcast\.server:", line)
        assert tag is not None, line
        assert line.endswith(
            f"via Redis at {socket_path.group(1)}, node id {tag.group(1)}, worker {tag.group(2)}"
        )
        tags.add(tag.group(2))
    assert tags == {"0", "1"}
    assert log.count("playground: open") == 1  # announced once, not once per worker


async def join_url(url: str, room: str, identity: str) -> tuple[rtc.Room, Events]:
    participant = rtc.Room()
    events = Events(participant, NODE_EVENTS)
    await participant.connect(url, join_token(room, identity))
    return participant, events


async def test_stopping_node_sends_its_participants_to_a_live_node() -> None:
    async with cluster(2) as (_, (a, b)):
        async with lkapi(a) as api_a:
            await api_a.room.create_room(api.CreateRoomRequest(name="rolling"))
        alice, alice_events = await join(b, "rolling", "alice")  # relayed to A
        bob, bob_events = await join(b, "rolling", "bob")
        try:
            await until(lambda: identities(alice) == {"bob"})
            await a.stop()  # SIGTERM: A leaves the cluster, then sends RECONNECT
            await alice_events.wait("reconnected", timeout=30)
            await bob_events.wait("reconnected", timeout=30)
            await until(lambda: identities(alice) == {"bob"} and identities(bob) == {"alice"})
            await bob.local_participant.publish_data(b"moved")
            await alice_events.wait("data_received", lambda p: p.data == b"moved")
            assert not alice_events.all("disconnected")
        finally:
            await leave(alice, bob)


async def test_signalling_resumes_through_another_node() -> None:
    """The WebSocket's node changes mid-call (as behind a load balancer): the session resumes."""
    from tests.integration.tcp_proxy import TcpProxy

    async with cluster(3) as (_, (a, b, c)):
        async with lkapi(a) as api_a:
            await api_a.room.create_room(api.CreateRoomRequest(name="resume"))
        balancer = TcpProxy(b.port)
        await balancer.start()
        alice = rtc.Room()
        alice_events = Events(alice, NODE_EVENTS)
        await alice.connect(f"ws://127.0.0.1:{balancer.port}", join_token("resume", "alice"))
        bob, bob_events = await join(a, "resume", "bob")
        try:
            await until(lambda: identities(alice) == {"bob"})
            sid = alice.local_participant.sid
            balancer.target_port = c.port  # the next connection lands on node C
            balancer.cut()
            await alice_events.wait("reconnected", timeout=30)
            assert alice.local_participant.sid == sid  # resumed, not rejoined
            await alice.local_participant.publish_data(b"resumed via C")
            await bob_events.wait("data_received", lambda p: p.data == b"resumed via C")
            assert not bob_events.all("participant_disconnected")
        finally:
            await leave(alice, bob)
            await balancer.close()


async def test_agent_worker_on_one_node_serves_rooms_on_another() -> None:
    """A livekit-agents worker connected to node B gets the job of a room hosted by node A."""
    import json
    import os
    import signal

    from livekit.protocol import agent as agent_pb

    from tests.integration.test_agents import AGENT_APP, AGENTS_PYTHON

    async with cluster(2) as (_, (a, b)):
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("LIVEKIT_")},
            "LIVEKIT_URL": b.ws_url,
            "LIVEKIT_API_KEY": API_KEY,
            "LIVEKIT_API_SECRET": API_SECRET,
            "LIVEKIT_AGENT_NAME": "helper",
            "LIVEKIT_AGENTS_PRELOAD_LOCAL_INFERENCE": "0",
            "AGENT_HTTP_PORT": "0",
            "AGENT_LOAD": "0",
            "AGENT_EXECUTOR": "thread",
            "AGENT_IDLE_PROCESSES": "0",
        }
        worker = await asyncio.create_subprocess_exec(
            str(AGENTS_PYTHON), str(AGENT_APP), "start", "--drain-timeout", "2",
            env=env, cwd=str(AGENT_APP.parent),
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        try:
            async with lkapi(a) as api_a:
                await api_a.room.create_room(api.CreateRoomRequest(name="agents-x"))
                alice, alice_events = await join(a, "agents-x", "alice")
                try:
                    created = None
                    for _ in range(300):  # until B's worker is known cluster-wide
                        created = await api_a.agent_dispatch.create_dispatch(
                            api.CreateAgentDispatchRequest(
                                agent_name="helper", room="agents-x", metadata="across"
                            )
                        )
                        await asyncio.sleep(0.2)
                        listed = await api_a.agent_dispatch.get_dispatch(created.id, "agents-x")
                        jobs = list(listed.state.jobs) if listed is not None else []
                        if jobs and jobs[0].state.status == agent_pb.JS_RUNNING:
                            break
                        await api_a.agent_dispatch.delete_dispatch(created.id, "agents-x")
                    else:
                        raise AssertionError("the job was never assigned to B's worker")
                    agent_args = await alice_events.wait(
                        "participant_connected",
                        lambda p: p.kind == rtc.ParticipantKind.PARTICIPANT_KIND_AGENT,
                        timeout=30,
                    )
                    helper = agent_args[0]
                    await alice.local_participant.publish_data(
                        b"describe", topic="job", destination_identities=[helper.identity]
                    )
                    reply = await alice_events.wait(
                        "data_received", lambda p: p.topic == "job", timeout=30
                    )
                    described = json.loads(reply[0].data)
                    assert described["metadata"] == "across"
                    assert described["dispatch_id"] == created.id
                    await api_a.agent_dispatch.delete_dispatch(created.id, "agents-x")
                    await alice_events.wait(
                        "participant_disconnected", lambda p: p.identity == helper.identity
                    )
                finally:
                    await leave(alice)
        finally:
            worker.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(worker.wait(), 15)
            except TimeoutError:
                worker.kill()
                await worker.wait()


async def test_list_nodes_shows_every_live_node() -> None:
    import sys

    async with cluster(2) as (redis, nodes):
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "roomcast", "list-nodes", "--redis-host", redis.address,
            stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, _ = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0
    lines = out.decode().splitlines()[1:]
    assert len(lines) == 2 and all(line.split()[-1] == "yes" for line in lines)
    assert {node.http_url for node in nodes} == {line.split()[2] for line in lines}


async def test_nodes_find_redis_through_sentinel_with_a_password() -> None:
    import sys

    from tests.integration.cluster import RedisSentinel

    redis = RedisServer(password="s3cret-redis")
    await redis.start()
    sentinel = RedisSentinel(redis)
    await sentinel.start()
    config = (
        f"  sentinel_addresses: [127.0.0.1:{sentinel.port}]\n"
        "  sentinel_master_name: mymaster\n"
        "  password: s3cret-redis\n"
    )
    try:
        async with cluster(2, redis=redis, redis_config=config) as (_, (a, b)):
            async with lkapi(a) as api_a, lkapi(b) as api_b:
                await api_a.room.create_room(api.CreateRoomRequest(name="guarded"))
                listed = await api_b.room.list_rooms(api.ListRoomsRequest())
                assert [r.name for r in listed.rooms] == ["guarded"]
            alice, _ = await join(a, "guarded", "alice")
            bob, bob_events = await join(b, "guarded", "bob")  # relayed to A
            try:
                await alice.local_participant.publish_data(b"via sentinel")
                await bob_events.wait("data_received", lambda p: p.data == b"via sentinel")
            finally:
                await leave(alice, bob)
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "roomcast", "list-nodes",
                "--config-body", f"redis:\n{config}",
                stdout=asyncio.subprocess.PIPE,
            )  # fmt: skip
            out, _ = await asyncio.wait_for(proc.communicate(), 30)
            assert proc.returncode == 0 and len(out.decode().splitlines()) == 3
    finally:
        await sentinel.stop()
        await redis.stop()


async def test_nodes_reach_redis_over_tls(tmp_path: Path) -> None:
    from tests.integration.cluster import make_tls_files

    tls = make_tls_files(tmp_path / "tls")
    redis = RedisServer(tls=tls)
    await redis.start()
    config = (
        f"  address: {redis.address}\n  use_tls: true\n  tls:\n    ca_cert_file: {tls / 'ca.pem'}\n"
    )
    try:
        async with cluster(2, redis=redis, redis_config=config) as (_, (a, b)):
            async with lkapi(a) as api_a, lkapi(b) as api_b:
                await api_a.room.create_room(api.CreateRoomRequest(name="encrypted"))
                listed = await api_b.room.list_rooms(api.ListRoomsRequest())
                assert [r.name for r in listed.rooms] == ["encrypted"]
                people = await api_b.room.list_participants(
                    api.ListParticipantsRequest(room="encrypted")
                )
                assert list(people.participants) == []
    finally:
        await redis.stop()
