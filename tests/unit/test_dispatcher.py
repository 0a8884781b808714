"""Dispatcher: real rooms, fake workers, a fake clock — room events in, jobs and removals out."""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass, field

import pytest
from livekit.protocol import agent, models

from roomcast.agents.dispatcher import AGENT_LEAVE_TIMEOUT, Dispatcher, participant_claims
from roomcast.agents.workers import WorkerRegistry
from roomcast.auth import Claims, TokenVerifier
from roomcast.config import Config, LimitConfig, RoomConfig
from roomcast.errors import RoomNotFoundError
from roomcast.rooms.admin import RoomAdmin
from roomcast.rooms.data import DataExchange
from roomcast.rooms.manager import RoomManager
from roomcast.rooms.participant import Participant, State
from roomcast.rooms.room import Room, RoomEvent
from tests.unit.agent_fakes import API_KEY, API_SECRET, FakeClock, FakeWorker, run_until

Kind = models.ParticipantInfo.Kind
Reason = models.DisconnectReason


@dataclass
class Session:
    """A participant's signalling session, as far as the dispatcher looks at it."""

    claims: Claims | None = None
    joined: bool = True
    closed: bool = False

    def disconnect(self, reason: int, action: int) -> None:
        self.closed = True

    def send_signal(self, message: object) -> None: ...
    def send_data(self, packet: bytes, reliable: bool) -> bool:
        return True

    def resume(self, sink: object, options: object) -> None: ...
    def on_self_changed(self) -> None: ...
    def update_subscriptions(self, track_sids: list[str], subscribe: bool) -> None: ...
    def mute_track(self, track_sid: str, muted: bool) -> None: ...


@dataclass
class Rig:
    clock: FakeClock = field(default_factory=FakeClock)
    registry: WorkerRegistry = field(default_factory=WorkerRegistry)
    inbox: asyncio.Queue[tuple[FakeWorker, agent.Job]] = field(default_factory=asyncio.Queue)
    events: list[RoomEvent] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.rooms = RoomManager(RoomConfig(), LimitConfig(), self._on_event)
        admin = RoomAdmin(Config(), self.rooms, DataExchange())
        self.dispatcher = Dispatcher(
            admin,
            self.registry,
            TokenVerifier({API_KEY: API_SECRET}),
            clock=self.clock,
            rng=random.Random(5),
        )

    def _on_event(self, event: RoomEvent) -> None:
        self.events.append(event)
        self.dispatcher.on_room_event(event)

    def worker(self, worker_id: str, **fields: object) -> FakeWorker:
        worker = FakeWorker(worker_id, self.inbox, **fields)  # type: ignore[arg-type]
        self.registry.add(worker)
        return worker

    def room(self, name: str = "demo") -> Room:
        """Create the room and let its own dispatches be added (right after creation)."""
        room = self.rooms.create(name)
        self.clock.advance(0)
        return room

    async def assigned(self, identity: str) -> FakeWorker:
        """The next offer, accepted for an agent joining as ``identity``."""
        worker, job = await self.inbox.get()
        worker.accept(job, identity)
        await run_until(lambda: bool(worker.assignments()))
        return worker


def join(
    room: Room,
    identity: str,
    *,
    agent: bool = False,
    claims: Claims | None = None,
    active: bool = True,
) -> Participant:
    """Admit a participant and make it active (as signalling does once its PC connects)."""
    participant = Participant(identity=identity, kind=Kind.AGENT if agent else Kind.STANDARD)
    participant.session = Session(claims)
    room.add_participant(participant)
    participant.set_state(State.JOINED)
    if active:
        activate(room, participant)
    return participant


def activate(room: Room, participant: Participant) -> None:
    participant.set_state(State.ACTIVE)
    room.emit("participant_joined", participant)


@pytest.fixture
def rig() -> Rig:
    return Rig()


def test_the_claims_accessor() -> None:
    claims = Claims(api_key=API_KEY, identity="alice")
    participant = Participant(identity="alice")
    assert participant_claims(participant) is None  # no session
    participant.session = Session(claims)
    assert participant_claims(participant) is claims


async def test_the_creating_joiner_s_token_names_the_room_s_agents(rig: Rig) -> None:
    rig.worker("AW_helper", agent_name="helper")
    rig.worker("AW_unnamed")
    room = rig.rooms.create("demo")  # the join creates the room, then admits its participant
    config = {"agents": [{"agentName": "helper", "metadata": "from the token"}]}
    claims = Claims(api_key=API_KEY, identity="alice", room_config=config)
    join(room, "alice", claims=claims, active=False)
    rig.clock.advance(0)
    worker, job = await rig.inbox.get()
    assert worker.id == "AW_helper" and job.metadata == "from the token"
    assert [d.agent_name for d in rig.dispatcher.dispatches("demo")] == ["helper"]


async def test_participant_and_publisher_jobs_follow_room_events(rig: Rig) -> None:
    rig.worker("AW_participant", job_type=agent.JT_PARTICIPANT)
    rig.worker("AW_publisher", job_type=agent.JT_PUBLISHER)
    room = rig.room()
    alice = join(room, "alice")
    _, job = await rig.inbox.get()
    assert job.type == agent.JT_PARTICIPANT and job.participant.identity == "alice"
    alice.is_publisher = True
    room.emit("track_published", alice, models.TrackInfo(sid="TR_1"))
    _, job = await rig.inbox.get()
    assert job.type == agent.JT_PUBLISHER and job.participant.identity == "alice"
    room.emit("track_published", alice, models.TrackInfo(sid="TR_2"))  # not the first: no job
    join(room, "bot", agent=True)  # agents never start agent jobs
    await asyncio.sleep(0)
    assert rig.inbox.empty()


async def test_an_agent_leaving_its_room_ends_its_job(rig: Rig) -> None:
    rig.worker("AW_1")
    room = rig.room()
    worker = await rig.assigned("bot")
    bot = join(room, "bot", agent=True)
    room.remove_participant(bot, Reason.CLIENT_INITIATED)
    (record,) = rig.dispatcher.jobs()
    assert record.state.status == agent.JS_FAILED
    assert record.state.error == "agent worker left the room"
    assert worker.terminations() == [record.id]


async def test_deleting_a_dispatch_removes_agents_that_do_not_leave(rig: Rig) -> None:
    rig.worker("AW_1")
    room = rig.room()
    worker = await rig.assigned("bot")
    bot = join(room, "bot", agent=True)
    (dispatch,) = rig.dispatcher.list_dispatches("demo")
    assert rig.dispatcher.delete_dispatch("demo", dispatch.id) is dispatch
    assert rig.dispatcher.list_dispatches("demo") == []
    (record,) = rig.dispatcher.jobs()
    await run_until(lambda: record.ended)
    assert record.state.reason == agent.JSR_DISPATCH_DELETED
    assert worker.terminations() == [record.id]
    await run_until(lambda: rig.clock.pending > 0)  # waiting for the agent to leave
    rig.clock.advance(AGENT_LEAVE_TIMEOUT - 0.1)
    await asyncio.sleep(0)
    assert "bot" in room.participants
    rig.clock.advance(0.1)
    await run_until(lambda: "bot" not in room.participants)
    assert isinstance(bot.session, Session) and bot.session.closed  # told to leave


async def test_an_agent_that_leaves_by_itself_after_the_delete_is_not_removed(rig: Rig) -> None:
    rig.worker("AW_1")
    room = rig.room()
    await rig.assigned("bot")
    bot = join(room, "bot", agent=True)
    (dispatch,) = rig.dispatcher.list_dispatches("demo")
    rig.dispatcher.delete_dispatch("demo", dispatch.id)
    await run_until(lambda: rig.clock.pending > 0)
    room.remove_participant(bot, Reason.CLIENT_INITIATED)
    await run_until(lambda: rig.clock.pending == 0)  # woken by the departure, not the timer
    assert isinstance(bot.session, Session) and not bot.session.closed  # not removed by us
    (record,) = rig.dispatcher.jobs()
    assert record.state.reason == agent.JSR_DISPATCH_DELETED  # not "left the room"


async def test_closing_the_room_ends_its_jobs(rig: Rig) -> None:
    rig.worker("AW_1")
    rig.worker("AW_helper", agent_name="helper")
    room = rig.room()
    worker = await rig.assigned("bot")
    rig.dispatcher.create_dispatch("demo", "helper")
    await rig.inbox.get()  # offered, never answered
    running, pending = rig.dispatcher.jobs()
    rig.rooms.close(room, Reason.ROOM_DELETED, models.RoomEndReason.ROOM_END_API_DELETE)
    assert running.state.status == agent.JS_SUCCESS
    assert running.state.reason == agent.JSR_ROOM_CLOSED
    assert worker.terminations() == [running.id]
    await run_until(lambda: pending.ended)
    assert pending.state.status == agent.JS_FAILED
    assert pending.state.reason == agent.JSR_ROOM_CLOSED
    assert rig.dispatcher.dispatches("demo") == []


async def test_an_agent_joining_a_later_instance_of_its_room_is_removed(rig: Rig) -> None:
    rig.worker("AW_1")
    room = rig.room()
    worker = await rig.assigned("bot")
    (record,) = rig.dispatcher.jobs()
    rig.rooms.close(room, Reason.ROOM_DELETED, models.RoomEndReason.ROOM_END_API_DELETE)
    # The agent's own join re-creates the room: no dispatches, and the agent is sent away.
    again = rig.rooms.create("demo")
    bot = join(again, "bot", agent=True, active=False)
    rig.clock.advance(0)
    assert rig.dispatcher.dispatches("demo") == []
    activate(again, bot)
    assert "bot" not in again.participants
    assert worker.terminations() == [record.id, record.id]  # told again


async def test_dispatch_api_errors(rig: Rig) -> None:
    with pytest.raises(RoomNotFoundError):
        rig.dispatcher.create_dispatch("nowhere", "helper", auto_create=False)
    with pytest.raises(RoomNotFoundError):
        rig.dispatcher.list_dispatches("nowhere")
    with pytest.raises(RoomNotFoundError):
        rig.dispatcher.delete_dispatch("nowhere", "AD_x")


async def test_updates_for_jobs_run_elsewhere_are_forwarded(rig: Rig) -> None:
    worker = rig.worker("AW_1")
    forwarded: list[str] = []
    rig.dispatcher.forward_job_update = lambda w, update: bool(forwarded.append(update.job_id))
    rig.dispatcher.job_update(worker, agent.UpdateJobStatus(job_id="AJ_elsewhere"))
    assert forwarded == ["AJ_elsewhere"]
