"""Agents: real livekit-agents workers, and raw protocol workers, against ``/agent``
(docs/protocol/14-agents.md).

The real workers run ``tests/agents/agent.py start`` from the agents venv (created by
``scripts/agents-venv.sh``; livekit-agents pins its own `livekit` version) and are started
once for this module, against one server: an unnamed ROOM worker (job processes, as
``start`` defaults to), a ROOM worker named ``echo-named`` and a PUBLISHER worker named
``pub-echo`` (job threads). Behaviour the framework cannot be told to show (refusing a job,
reporting load, leaving with jobs running) is driven by raw protobuf workers over aiohttp.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import signal
import socket
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import jwt
import numpy as np
import pytest
import pytest_asyncio
from livekit import api, rtc
from livekit.protocol import agent, models

from roomcast.auth import VideoGrant, create_token
from roomcast.config import Overrides, load_config
from roomcast.server import Server
from tests.conftest import API_KEY, API_SECRET, free_port, token, url_of
from tests.integration.sdk import ROOM_EVENTS, Events, until
from tests.integration.test_media_python import AMPLITUDE, sine_energy
from tests.integration.webhook_receiver import WebhookSink

pytestmark = pytest.mark.asyncio(loop_scope="module")

REPO = Path(__file__).resolve().parents[2]
AGENTS_PYTHON = REPO / os.environ.get("AGENTS_VENV", ".venv-agents") / "bin" / "python"
AGENT_APP = REPO / "tests" / "agents" / "agent.py"
NAMED = "echo-named"
PUBLISHER = "pub-echo"
AGENT_KIND = rtc.ParticipantKind.PARTICIPANT_KIND_AGENT
ACTIVE = models.ParticipantInfo.State.ACTIVE
REGISTER_TIMEOUT = 60.0
EVENT_TIMEOUT = 20.0


# -- module fixtures: one server, one webhook sink, the real workers -----------------------------
@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def sink() -> AsyncIterator[WebhookSink]:
    receiver = WebhookSink()
    await receiver.start()
    yield receiver
    await receiver.stop()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def server(sink: WebhookSink) -> AsyncIterator[Server]:
    body = f"port: 0\nkeys:\n  {API_KEY}: {API_SECRET}\nbind_addresses: [127.0.0.1]\n"
    body += f"rtc:\n  udp_port: {free_port(socket.SOCK_DGRAM)}\n  tcp_port: {free_port()}\n"
    body += "room:\n  departure_timeout: 2\n"
    body += f"webhook:\n  api_key: {API_KEY}\n  urls: [{sink.url}]\n"
    instance = Server(load_config(Overrides(config_body=body), environ={}))
    await instance.start()
    yield instance
    await instance.stop()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def lkapi(server: Server) -> AsyncIterator[api.LiveKitAPI]:
    client = api.LiveKitAPI(url_of(server), API_KEY, API_SECRET)
    yield client
    await client.aclose()


WORKERS: dict[str, dict[str, str]] = {
    "": {"AGENT_IDLE_PROCESSES": "1"},  # job processes, as `start` runs them by default
    NAMED: {"AGENT_EXECUTOR": "thread", "AGENT_IDLE_PROCESSES": "0"},
    PUBLISHER: {"AGENT_EXECUTOR": "thread", "AGENT_IDLE_PROCESSES": "0", "AGENT_TYPE": "publisher"},
}


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def real_workers(
    server: Server, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Path]:
    """``agent.py start`` for each of WORKERS, registered with the server; yields the log dir."""
    if not AGENTS_PYTHON.exists():
        pytest.skip(f"no livekit-agents venv at {AGENTS_PYTHON}: run scripts/agents-venv.sh")
    logs = tmp_path_factory.mktemp("agent-workers")
    processes: list[asyncio.subprocess.Process] = []
    try:
        for name, extra in WORKERS.items():
            env = {
                **{k: v for k, v in os.environ.items() if not k.startswith("LIVEKIT_")},
                "LIVEKIT_URL": url_of(server, "ws"),
                "LIVEKIT_API_KEY": API_KEY,
                "LIVEKIT_API_SECRET": API_SECRET,
                "LIVEKIT_AGENT_NAME": name,
                "LIVEKIT_AGENTS_PRELOAD_LOCAL_INFERENCE": "0",
                "AGENT_HTTP_PORT": "0",
                "AGENT_LOAD": "0",  # the machine's CPU load must not make workers refuse jobs
                **extra,
            }
            with (logs / f"{name or 'unnamed'}.log").open("wb") as log:
                processes.append(
                    await asyncio.create_subprocess_exec(
                        str(AGENTS_PYTHON),
                        str(AGENT_APP),
                        "start",
                        "--drain-timeout",
                        "5",
                        env=env,
                        cwd=str(AGENT_APP.parent),
                        stdout=log,
                        stderr=asyncio.subprocess.STDOUT,
                    )
                )
        try:
            await until(lambda: set(WORKERS) <= registered_names(server), REGISTER_TIMEOUT)
        except TimeoutError:
            pytest.fail(f"workers did not register: {registered_names(server)}\n{tails(logs)}")
        yield logs
    finally:
        server.rooms.close_all()  # ends every job, so the workers drain at once
        for process in processes:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
        for process in processes:
            try:
                await asyncio.wait_for(process.wait(), 15)
            except TimeoutError:
                process.kill()
                await process.wait()


def registered_names(server: Server) -> set[str]:
    return {worker.agent_name for worker in server.agents.workers()}


def tails(logs: Path) -> str:
    return "\n".join(f"--- {p.name}\n{p.read_text()[-3000:]}" for p in sorted(logs.iterdir()))


# -- helpers ------------------------------------------------------------------------------------
def user_token(room: str, identity: str, agents: list[api.RoomAgentDispatch] | None = None) -> str:
    access = (
        api.AccessToken(API_KEY, API_SECRET)
        .with_identity(identity)
        .with_grants(api.VideoGrants(room_join=True, room=room))
    )
    if agents:
        access = access.with_room_config(api.RoomConfiguration(agents=agents))
    return access.to_jwt()


@contextlib.asynccontextmanager
async def user(
    server: Server, room: str, identity: str, agents: list[api.RoomAgentDispatch] | None = None
) -> AsyncIterator[tuple[rtc.Room, Events]]:
    client = rtc.Room()
    events = Events(client, ROOM_EVENTS)
    await client.connect(url_of(server, "ws"), user_token(room, identity, agents))
    try:
        yield client, events
    finally:
        if client.isconnected():
            await client.disconnect()


async def agent_in(client: rtc.Room, events: Events, agent_name: str) -> rtc.RemoteParticipant:
    """The agent participant dispatched for ``agent_name`` (already there, or when it joins)."""

    def matches(p: rtc.RemoteParticipant) -> bool:
        return p.kind == AGENT_KIND and p.attributes.get("lk.agent_name") == agent_name

    for participant in client.remote_participants.values():
        if matches(participant):
            return participant
    (participant,) = await events.wait("participant_connected", matches)
    return participant  # type: ignore[no-any-return]


async def ask(client: rtc.Room, events: Events, to: str, topic: str, payload: bytes) -> bytes:
    """Send ``payload`` to ``to`` on ``topic``; return its answer on that topic."""
    earlier = {id(args[0]) for args in events.all("data_received")}
    await client.local_participant.publish_data(payload, topic=topic, destination_identities=[to])
    (packet,) = await events.wait(
        "data_received",
        lambda pkt: (
            id(pkt) not in earlier
            and pkt.topic == topic
            and pkt.participant is not None
            and pkt.participant.identity == to
        ),
    )
    return bytes(packet.data)


async def job_of(client: rtc.Room, events: Events, identity: str) -> dict[str, Any]:
    return json.loads(await ask(client, events, identity, "job", b"?"))  # type: ignore[no-any-return]


def jobs_for(server: Server, room: str, agent_name: str) -> list[agent.Job]:
    return [job for job in server.agents.jobs(room) if job.agent_name == agent_name]


@contextlib.asynccontextmanager
async def publishing_tone(
    client: rtc.Room, name: str = "mic"
) -> AsyncIterator[rtc.LocalAudioTrack]:
    source = rtc.AudioSource(48000, 1)
    track = rtc.LocalAudioTrack.create_audio_track(name, source)
    await client.local_participant.publish_track(
        track, rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE)
    )

    async def feed() -> None:
        samples = (AMPLITUDE * np.sin(2 * math.pi * 440 * np.arange(480) / 48000)).astype(np.int16)
        while True:
            await source.capture_frame(rtc.AudioFrame(samples.tobytes(), 48000, 1, 480))

    task = asyncio.ensure_future(feed())
    try:
        yield track
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await source.aclose()


def agents_settled(server: Server, room: str) -> bool:
    """Every agent a real worker was assigned to ``room`` is in it, fully connected."""
    live = server.rooms.get(room)
    if live is None:
        return True
    real = {w.id for w in server.agents.workers() if w.version != "raw-test"}
    active = {p.identity for p in live.live_participants() if p.state == ACTIVE}
    return all(
        job.state.participant_identity in active
        for job in server.agents.jobs(room, active=True)
        if job.state.worker_id in real and job.state.participant_identity
    )


@contextlib.asynccontextmanager
async def room_deleted_after(
    server: Server, lkapi: api.LiveKitAPI, name: str
) -> AsyncIterator[None]:
    """Delete the room at the end, once no agent is half-way into it (a room deleted under a
    connecting SDK leaves that SDK waiting for its PeerConnection)."""
    try:
        yield
    finally:
        with contextlib.suppress(TimeoutError):
            await until(lambda: agents_settled(server, name))
        with contextlib.suppress(api.TwirpError):
            await lkapi.room.delete_room(api.DeleteRoomRequest(room=name))


def worker_token(video: VideoGrant | None = None) -> str:
    return create_token(API_KEY, API_SECRET, video=video or VideoGrant(agent=True))


def accept(job: agent.Job) -> agent.AvailabilityResponse:
    return agent.AvailabilityResponse(
        job_id=job.id,
        available=True,
        participant_identity=f"raw-{job.id}",
        participant_name="Raw agent",
        participant_attributes={"lk.agent.name": job.agent_name},
    )


def refuse(job: agent.Job) -> agent.AvailabilityResponse:
    return agent.AvailabilityResponse(job_id=job.id, available=False)


Answer = Callable[[agent.Job], agent.AvailabilityResponse | None]


class RawWorker:
    """A worker speaking the protocol itself: binary protobuf over aiohttp's WebSocket client."""

    def __init__(
        self,
        server: Server,
        agent_name: str,
        answer: Answer | None = accept,
        *,
        job_type: int = agent.JT_ROOM,
        permissions: models.ParticipantPermission | None = None,
    ) -> None:
        self.url = url_of(server, "ws") + "/agent"
        self.request = agent.RegisterWorkerRequest(
            type=job_type,  # type: ignore[arg-type]
            agent_name=agent_name,
            version="raw-test",
            allowed_permissions=permissions
            or models.ParticipantPermission(
                can_subscribe=True, can_publish=True, can_publish_data=True, agent=True
            ),
        )
        self.answer = answer
        self.id = ""
        self.registered = agent.RegisterWorkerResponse()
        self.received: list[tuple[float, agent.ServerMessage]] = []
        self._changed = asyncio.Event()
        self._session: aiohttp.ClientSession | None = None
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._reader: asyncio.Task[None] | None = None

    async def __aenter__(self) -> RawWorker:
        self._session = aiohttp.ClientSession()
        self._ws = await self._session.ws_connect(
            self.url, headers={"Authorization": f"Bearer {worker_token()}"}
        )
        await self.send(agent.WorkerMessage(register=self.request))
        first = agent.ServerMessage.FromString(await self._ws.receive_bytes(timeout=10))
        assert first.WhichOneof("message") == "register"
        self.registered = first.register
        self.id = first.register.worker_id
        self._reader = asyncio.ensure_future(self._read())
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._ws is not None:
            await self._ws.close()
        if self._reader is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        if self._session is not None:
            await self._session.close()

    async def send(self, message: agent.WorkerMessage) -> None:
        assert self._ws is not None
        await self._ws.send_bytes(message.SerializeToString())

    async def _read(self) -> None:
        assert self._ws is not None
        async for frame in self._ws:
            if frame.type != aiohttp.WSMsgType.BINARY:
                continue
            message = agent.ServerMessage.FromString(frame.data)
            self.received.append((time.monotonic(), message))
            self._changed.set()
            if message.WhichOneof("message") == "availability" and self.answer is not None:
                response = self.answer(message.availability.job)
                if response is not None:
                    await self.send(agent.WorkerMessage(availability=response))

    def all(self, which: str) -> list[agent.ServerMessage]:
        return [m for _, m in self.received if m.WhichOneof("message") == which]

    def offered_at(self, job_id: str) -> float | None:
        for at, message in self.received:
            if message.WhichOneof("message") == "availability":
                if message.availability.job.id == job_id:
                    return at
        return None

    async def wait(
        self,
        which: str,
        where: Callable[[agent.ServerMessage], bool] = lambda _: True,
        timeout: float = EVENT_TIMEOUT,
    ) -> agent.ServerMessage:
        async def find() -> agent.ServerMessage:
            while True:
                for message in self.all(which):
                    if where(message):
                        return message
                self._changed.clear()
                await self._changed.wait()

        return await asyncio.wait_for(find(), timeout)


def claims_of(agent_token: str) -> dict[str, Any]:
    return jwt.decode(agent_token, API_SECRET, algorithms=["HS256"])  # type: ignore[no-any-return]


def dispatch_request(
    room: str, agent_name: str, metadata: str = ""
) -> api.CreateAgentDispatchRequest:
    return api.CreateAgentDispatchRequest(agent_name=agent_name, room=room, metadata=metadata)


# -- real livekit-agents workers ----------------------------------------------------------------
async def test_unnamed_agent_joins_echoes_and_plays_a_tone(
    server: Server, lkapi: api.LiveKitAPI, sink: WebhookSink, real_workers: Path
) -> None:
    room = "agents-auto"
    async with user(server, room, "alice") as (alice, events):
        helper = await agent_in(alice, events, "")
        assert helper.identity.startswith("agent-AJ_")
        assert helper.attributes["lk.agent.name"] == ""  # set by the framework

        # Data comes back on the echo topic...
        assert await ask(alice, events, helper.identity, "echo", b"hello agent") == b"hello agent"
        # ...and the agent's tone reaches the user (energy of a 440 Hz sine at 0.3 full scale).
        track, _, _ = await events.wait(
            "track_subscribed", lambda t, pub, p: p.identity == helper.identity
        )
        energy = await asyncio.wait_for(sine_energy(track, frames=100), 30)
        expected = 2 * AMPLITUDE / math.pi
        assert abs(energy - expected) / expected < 0.15, (energy, expected)

        # The server's view: one ROOM job, running, and the agent as kind AGENT everywhere.
        (job,) = jobs_for(server, room, "")
        assert job.type == agent.JT_ROOM and job.state.status == agent.JS_RUNNING
        assert job.state.participant_identity == helper.identity
        assert job.state.worker_id in {w.id for w in server.agents.workers()}
        info = await lkapi.room.get_participant(
            api.RoomParticipantIdentity(room=room, identity=helper.identity)
        )
        assert info.kind == models.ParticipantInfo.Kind.AGENT and info.permission.agent
        assert info.attributes["lk.agent_name"] == ""
        (listed,) = (await lkapi.room.list_rooms(api.ListRoomsRequest(names=[room]))).rooms
        assert listed.num_participants == 1  # agents are not counted
        await until(
            lambda: any(
                e.event == "participant_joined"
                and e.room.name == room
                and e.participant.identity == helper.identity
                and e.participant.kind == models.ParticipantInfo.Kind.AGENT
                for e in sink.events
            )
        )

    # When the user has gone the room closes after its departure timeout and the job ends.
    await until(lambda: all(j.state.status == agent.JS_SUCCESS for j in jobs_for(server, room, "")))


async def test_named_agent_only_through_explicit_dispatch(
    server: Server, lkapi: api.LiveKitAPI, real_workers: Path
) -> None:
    room = "agents-explicit"
    async with room_deleted_after(server, lkapi, room):
        await lkapi.room.create_room(api.CreateRoomRequest(name=room))
        # CreateRoom alone: only the implicit dispatch of unnamed agents, nothing for NAMED.
        dispatches = await lkapi.agent_dispatch.list_dispatch(room)
        assert [d.agent_name for d in dispatches] == [""]
        assert not jobs_for(server, room, NAMED)

        async with user(server, room, "bob") as (bob, events):
            created = await lkapi.agent_dispatch.create_dispatch(
                dispatch_request(room, NAMED, metadata="hello named")
            )
            assert created.id.startswith("AD_") and created.state.created_at > 0
            helper = await agent_in(bob, events, NAMED)
            described = await job_of(bob, events, helper.identity)
            assert described["metadata"] == "hello named"
            assert described["dispatch_id"] == created.id
            assert described["agent_name"] == NAMED

            listed = await lkapi.agent_dispatch.get_dispatch(created.id, room)
            assert listed is not None
            (job,) = listed.state.jobs
            assert job.state.participant_identity == helper.identity
            assert job.state.status == agent.JS_RUNNING
            assert sorted(d.agent_name for d in await lkapi.agent_dispatch.list_dispatch(room)) == [
                "",
                NAMED,
            ]

            deleted = await lkapi.agent_dispatch.delete_dispatch(created.id, room)
            assert deleted.id == created.id and deleted.state.deleted_at > 0
            await events.wait("participant_disconnected", lambda p: p.identity == helper.identity)
            (ended,) = jobs_for(server, room, NAMED)
            assert ended.state.status == agent.JS_SUCCESS
            assert ended.state.reason == agent.JSR_DISPATCH_DELETED
            assert [d.agent_name for d in await lkapi.agent_dispatch.list_dispatch(room)] == [""]


async def test_create_room_agents_replace_the_implicit_dispatch(
    server: Server, lkapi: api.LiveKitAPI, real_workers: Path
) -> None:
    room = "agents-create-room"
    async with room_deleted_after(server, lkapi, room):
        spec = api.RoomAgentDispatch(agent_name=NAMED, metadata="from CreateRoom")
        await lkapi.room.create_room(api.CreateRoomRequest(name=room, agents=[spec]))
        (dispatch,) = await lkapi.agent_dispatch.list_dispatch(room)
        assert dispatch.agent_name == NAMED and dispatch.metadata == "from CreateRoom"

        # A ROOM job starts with the room: the agent is there before anyone else.
        async def agents() -> list[models.ParticipantInfo]:
            response = await lkapi.room.list_participants(api.ListParticipantsRequest(room=room))
            return [p for p in response.participants if p.kind == models.ParticipantInfo.Kind.AGENT]

        for _ in range(200):
            if await agents():
                break
            await asyncio.sleep(0.05)
        (present,) = await agents()
        assert present.attributes["lk.agent_name"] == NAMED
        assert not jobs_for(server, room, "")


async def test_token_room_config_dispatches_only_the_named_agent(
    server: Server, lkapi: api.LiveKitAPI, real_workers: Path
) -> None:
    room = "agents-token"
    spec = api.RoomAgentDispatch(agent_name=NAMED, metadata="from the token")
    async with (
        room_deleted_after(server, lkapi, room),
        user(server, room, "cy", [spec]) as (cy, events),
    ):
        helper = await agent_in(cy, events, NAMED)
        assert (await job_of(cy, events, helper.identity))["metadata"] == "from the token"
        assert [j.agent_name for j in server.agents.jobs(room)] == [NAMED]
        assert [p.identity for p in cy.remote_participants.values()] == [helper.identity]
        (dispatch,) = await lkapi.agent_dispatch.list_dispatch(room)
        assert dispatch.agent_name == NAMED and len(dispatch.state.jobs) == 1


async def test_publisher_agent_starts_on_the_first_published_track(
    server: Server, lkapi: api.LiveKitAPI, real_workers: Path
) -> None:
    room = "agents-publisher"
    spec = api.RoomAgentDispatch(agent_name=PUBLISHER)
    async with (
        room_deleted_after(server, lkapi, room),
        user(server, room, "dee", [spec]) as (dee, events),
    ):
        await asyncio.sleep(0.3)
        assert not server.agents.jobs(room)  # no job until dee publishes
        assert not dee.remote_participants

        async with publishing_tone(dee, "first"):
            helper = await agent_in(dee, events, PUBLISHER)
            described = await job_of(dee, events, helper.identity)
            assert described["type"] == agent.JT_PUBLISHER and described["participant"] == "dee"

            # A second track of the same publisher starts nothing more...
            async with publishing_tone(dee, "second"):
                live = server.rooms.require(room)
                await until(lambda: len(live.participants["dee"].tracks) == 2)
                await asyncio.sleep(0.1)
                assert len(server.agents.jobs(room)) == 1

                # ...but another publisher gets its own job.
                async with user(server, room, "eve") as (eve, _), publishing_tone(eve, "eve-mic"):
                    await until(lambda: len(server.agents.jobs(room)) == 2)
                    participants = sorted(j.participant.identity for j in server.agents.jobs(room))
                    assert participants == ["dee", "eve"]


# -- raw protocol workers -----------------------------------------------------------------------
async def test_agent_endpoint_requires_the_agent_grant(server: Server) -> None:
    url = url_of(server, "ws") + "/agent"
    join_only = token(VideoGrant(room_join=True, room="r"), identity="u")
    async with aiohttp.ClientSession() as session:
        for headers in (
            {},
            {"Authorization": f"Bearer {join_only}"},
            {"Authorization": "Bearer not-a-jwt"},
        ):
            with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                await session.ws_connect(url, headers=headers)
            assert refused.value.status == 401
        async with session.get(url_of(server) + "/agent") as plain:
            assert plain.status == 404  # not a WebSocket upgrade


async def test_register_ping_load_and_disconnect(server: Server) -> None:
    async with RawWorker(server, "handshake", None) as worker:
        assert worker.id.startswith("AW_")
        info = worker.registered.server_info
        assert info.agent_protocol == 1 and info.node_id == server.node_id
        assert info.edition == models.ServerInfo.Edition.Standard

        await worker.send(agent.WorkerMessage(ping=agent.WorkerPing(timestamp=1234)))
        pong = await worker.wait("pong")
        assert pong.pong.last_timestamp == 1234 and pong.pong.timestamp > 0

        update = agent.UpdateWorkerStatus(status=agent.WS_FULL, load=0.25, job_count=2)
        await worker.send(agent.WorkerMessage(update_worker=update))

        def mine() -> list[Any]:
            return [w for w in server.agents.workers() if w.id == worker.id]

        await until(lambda: bool(mine()) and mine()[0].load == 0.25)
        (snapshot,) = mine()
        assert snapshot.status == "full" and snapshot.job_count == 2
        assert snapshot.agent_name == "handshake" and snapshot.job_type == "room"
        assert snapshot.version == "raw-test"
    await until(lambda: not mine())  # a worker that disconnects is forgotten

    # Anything but ping or register first: the server hangs up.
    async with aiohttp.ClientSession() as session:
        ws = await session.ws_connect(
            url_of(server, "ws") + "/agent", headers={"Authorization": f"Bearer {worker_token()}"}
        )
        hello = agent.WorkerMessage(update_worker=agent.UpdateWorkerStatus(load=0.1))
        await ws.send_bytes(hello.SerializeToString())
        frame = await ws.receive(timeout=10)
        assert frame.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
        await ws.close()

        # Proto JSON in a text frame is answered in JSON.
        ws = await session.ws_connect(
            url_of(server, "ws") + "/agent", headers={"Authorization": f"Bearer {worker_token()}"}
        )
        await ws.send_str(json.dumps({"register": {"type": "JT_ROOM", "agentName": "json"}}))
        answer = json.loads(await ws.receive_str(timeout=10))
        assert answer["register"]["workerId"].startswith("AW_")
        await ws.close()


async def test_two_workers_get_exactly_one_job_per_dispatch(
    server: Server, lkapi: api.LiveKitAPI
) -> None:
    room = "agents-two-workers"
    async with (
        room_deleted_after(server, lkapi, room),
        RawWorker(server, "dup") as first,
        RawWorker(server, "dup") as second,
    ):
        await lkapi.room.create_room(api.CreateRoomRequest(name=room))
        created = [
            (await lkapi.agent_dispatch.create_dispatch(dispatch_request(room, "dup"))).id
            for _ in range(4)
        ]
        await until(lambda: len(first.all("assignment") + second.all("assignment")) == 4)
        await asyncio.sleep(0.2)
        offers = first.all("availability") + second.all("availability")
        assert sorted(m.availability.job.dispatch_id for m in offers) == sorted(created)
        assignments = first.all("assignment") + second.all("assignment")
        assert sorted(m.assignment.job.dispatch_id for m in assignments) == sorted(created)

        # The assignment carries the agent's room token, signed with the worker's key.
        assignment = assignments[0].assignment
        claims = claims_of(assignment.token)
        assert claims["sub"] == f"raw-{assignment.job.id}" and claims["kind"] == "agent"
        assert claims["video"]["roomJoin"] and claims["video"]["agent"]
        assert claims["video"]["room"] == room and claims["name"] == "Raw agent"
        assert claims["attributes"] == {"lk.agent.name": "dup", "lk.agent_name": "dup"}
        assert claims["exp"] - claims["nbf"] == 3600
        assert not assignment.HasField("url")  # the worker uses its own LIVEKIT_URL

        # Job status updates reach the dispatch's job list.
        owner = first if first.all("assignment") else second
        update = agent.UpdateJobStatus(job_id=assignment.job.id, status=agent.JS_SUCCESS)
        await owner.send(agent.WorkerMessage(update_job=update))
        await until(
            lambda: any(
                j.id == assignment.job.id and j.state.status == agent.JS_SUCCESS
                for j in server.agents.jobs(room)
            )
        )
        for dispatch in await lkapi.agent_dispatch.list_dispatch(room):
            if dispatch.agent_name == "dup":
                (job,) = dispatch.state.jobs
                assert job.state.worker_id in (first.id, second.id)


async def test_unavailable_worker_passes_the_job_to_the_next(
    server: Server, lkapi: api.LiveKitAPI
) -> None:
    room = "agents-unavailable"
    async with (
        room_deleted_after(server, lkapi, room),
        RawWorker(server, "picky", refuse) as picky,
        RawWorker(server, "picky") as willing,
    ):
        await lkapi.room.create_room(api.CreateRoomRequest(name=room))
        # The first worker is chosen at random: dispatch until the refusing one was asked first.
        for _ in range(20):
            created = await lkapi.agent_dispatch.create_dispatch(dispatch_request(room, "picky"))
            message = await willing.wait(
                "assignment", lambda m, d=created.id: m.assignment.job.dispatch_id == d
            )
            job_id = message.assignment.job.id
            refused_at = picky.offered_at(job_id)
            if refused_at is not None:
                accepted_at = willing.offered_at(job_id)
                assert accepted_at is not None and refused_at < accepted_at
                break
        else:
            pytest.fail("the refusing worker was never offered a job")
        assert not picky.all("assignment")
        assert all(j.state.worker_id == willing.id for j in jobs_for(server, room, "picky"))


async def test_workers_are_chosen_by_load_and_status(server: Server, lkapi: api.LiveKitAPI) -> None:
    room = "agents-load"
    async with (
        room_deleted_after(server, lkapi, room),
        RawWorker(server, "weighted") as busy,
        RawWorker(server, "weighted") as full,
        RawWorker(server, "weighted") as idle,
    ):
        await busy.send(agent.WorkerMessage(update_worker=agent.UpdateWorkerStatus(load=1.0)))
        full_status = agent.UpdateWorkerStatus(status=agent.WS_FULL, load=0.0)
        await full.send(agent.WorkerMessage(update_worker=full_status))
        await until(
            lambda: (
                {(w.load, w.status) for w in server.agents.workers() if w.agent_name == "weighted"}
                == {(1.0, "available"), (0.0, "full"), (0.0, "available")}
            )
        )
        await lkapi.room.create_room(api.CreateRoomRequest(name=room))
        for _ in range(5):
            await lkapi.agent_dispatch.create_dispatch(dispatch_request(room, "weighted"))
        await until(lambda: len(idle.all("assignment")) == 5)
        assert not busy.all("availability") and not full.all("availability")

        # Without the idle worker nobody has capacity: the job fails instead of waiting.
        await idle.close()
        await until(lambda: idle.id not in {w.id for w in server.agents.workers()})
        await lkapi.agent_dispatch.create_dispatch(dispatch_request(room, "weighted"))
        await until(lambda: jobs_for(server, room, "weighted")[-1].state.status == agent.JS_FAILED)
        assert not busy.all("availability") and not full.all("availability")


async def test_agent_permissions_capacity_and_worker_loss(
    server: Server, lkapi: api.LiveKitAPI
) -> None:
    room = "agents-stay"
    listen_only = models.ParticipantPermission(
        can_subscribe=True, can_publish=False, can_publish_data=True, agent=True
    )
    await lkapi.room.create_room(api.CreateRoomRequest(name=room, max_participants=1))
    async with room_deleted_after(server, lkapi, room), user(server, room, "fay") as (_, events):
        async with RawWorker(server, "stays", permissions=listen_only) as worker:
            created = await lkapi.agent_dispatch.create_dispatch(dispatch_request(room, "stays"))
            message = await worker.wait("assignment")
            assert message.assignment.job.dispatch_id == created.id
            assert claims_of(message.assignment.token)["video"]["canPublish"] is False

            # The test plays the job: it joins with the token the worker was given.
            identity = message.assignment.job.state.participant_identity
            assert identity == f"raw-{message.assignment.job.id}"
            job_room = rtc.Room()
            await job_room.connect(url_of(server, "ws"), message.assignment.token)
            try:
                (participant,) = await events.wait(
                    "participant_connected", lambda p: p.identity == identity
                )
                assert participant.kind == AGENT_KIND  # and max_participants=1 let it in
                info = await lkapi.room.get_participant(
                    api.RoomParticipantIdentity(room=room, identity=identity)
                )
                assert info.kind == models.ParticipantInfo.Kind.AGENT
                assert not info.permission.can_publish and info.permission.can_subscribe
            except BaseException:
                await job_room.disconnect()
                raise
        # The worker is gone and forgotten; its agent stays in the room.
        await until(lambda: worker.id not in {w.id for w in server.agents.workers()})
        await asyncio.sleep(0.2)
        response = await lkapi.room.list_participants(api.ListParticipantsRequest(room=room))
        assert identity in [p.identity for p in response.participants]
        await job_room.disconnect()
        # The agent leaving ends its job.
        await until(
            lambda: [j.state.status for j in jobs_for(server, room, "stays")] == [agent.JS_FAILED]
        )


async def test_agent_dispatch_service_over_json_twirp(server: Server) -> None:
    room = "agents-json"
    url = url_of(server) + "/twirp/livekit.AgentDispatchService/"
    admin = {"Authorization": f"Bearer {token(VideoGrant(room_admin=True, room=room))}"}
    async with aiohttp.ClientSession() as session:

        async def call(method: str, body: dict[str, Any], headers: dict[str, str]) -> Any:
            async with session.post(url + method, json=body, headers=headers) as response:
                return response.status, await response.json()

        status, created = await call(
            "CreateDispatch", {"agentName": "json-agent", "room": room, "metadata": "j"}, admin
        )
        assert status == 200 and created["id"].startswith("AD_")
        assert created["agent_name"] == "json-agent" and created["metadata"] == "j"

        status, listed = await call("ListDispatch", {"room": room}, admin)
        assert status == 200
        names = sorted(d["agent_name"] for d in listed["agent_dispatches"])
        assert names == ["", "json-agent"]  # CreateDispatch created the room: implicit one too

        status, only = await call(
            "ListDispatch", {"room": room, "dispatchId": created["id"]}, admin
        )
        assert [d["id"] for d in only["agent_dispatches"]] == [created["id"]]

        status, deleted = await call(
            "DeleteDispatch", {"dispatch_id": created["id"], "room": room}, admin
        )
        assert status == 200 and deleted["id"] == created["id"]
        status, error = await call(
            "DeleteDispatch", {"dispatch_id": created["id"], "room": room}, admin
        )
        assert status == 404 and error["code"] == "not_found"

        other = {"Authorization": f"Bearer {token(VideoGrant(room_admin=True, room='elsewhere'))}"}
        status, error = await call("ListDispatch", {"room": room}, other)
        assert status == 401
        bad = {"agentName": "x", "room": room, "deployment": "has_underscore"}
        status, error = await call("CreateDispatch", bad, admin)
        assert status == 400 and error["code"] == "invalid_argument"
    with contextlib.suppress(TimeoutError):
        await until(lambda: agents_settled(server, room))
    server.rooms.delete(room)
