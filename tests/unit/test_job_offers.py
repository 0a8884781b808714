"""JobOffers on a fake clock with fake workers: one worker at a time, timeouts, tokens."""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from dataclasses import dataclass, field

import pytest
from livekit.protocol import agent, models

from roomcast.agents.jobs import Dispatch, JobRecord
from roomcast.agents.offers import AGENT_NAME_ATTRIBUTE, JobOffers, pick_worker
from roomcast.agents.workers import WorkerRegistry
from roomcast.auth import TokenVerifier
from tests.unit.agent_fakes import API_KEY, API_SECRET, FakeClock, FakeWorker, run_until

ROOM = models.Room(name="demo", sid="RM_demo")


@dataclass
class Rig:
    """JobOffers with everything around it faked."""

    clock: FakeClock = field(default_factory=FakeClock)
    registry: WorkerRegistry = field(default_factory=WorkerRegistry)
    inbox: asyncio.Queue[tuple[FakeWorker, agent.Job]] = field(default_factory=asyncio.Queue)
    live_rooms: set[tuple[str, str]] = field(default_factory=lambda: {("demo", "RM_demo")})
    offers: JobOffers = field(init=False)

    def __post_init__(self) -> None:
        self.offers = JobOffers(
            self.registry,
            TokenVerifier({API_KEY: API_SECRET}),
            room_is_live=lambda name, sid: (name, sid) in self.live_rooms,
            clock=self.clock,
            rng=random.Random(7),
        )

    def worker(self, worker_id: str, **fields: object) -> FakeWorker:
        worker = FakeWorker(worker_id, self.inbox, **fields)  # type: ignore[arg-type]
        self.registry.add(worker)
        return worker

    def launch(
        self, agent_name: str = "", job_type: int = agent.JT_ROOM
    ) -> tuple[Dispatch, JobRecord]:
        dispatch = Dispatch.create("demo", agent_name)
        participant = (
            models.ParticipantInfo(identity="alice") if job_type != agent.JT_ROOM else None
        )
        (record,) = self.offers.launch(dispatch, job_type, ROOM, participant)
        return dispatch, record

    async def settled(self, dispatch: Dispatch) -> None:
        """Every offer of the dispatch decided (the fake clock never fires on its own)."""
        async with asyncio.timeout(5):  # a safety net against a hang, not a wait
            await self.offers.settle(dispatch.id, 1e9)


@pytest.fixture
def rig() -> Rig:
    return Rig()


async def test_the_accepting_worker_gets_an_assignment_with_an_agent_token(rig: Rig) -> None:
    worker = rig.worker("AW_1")
    dispatch, record = rig.launch()
    offered_to, job = await rig.inbox.get()
    assert offered_to is worker and job.id == record.id and job.room.name == "demo"
    assert record.state.status == agent.JS_PENDING and record.state.worker_id == "AW_1"
    worker.accept(job, identity="helper-bot")
    await rig.settled(dispatch)

    assert record.state.status == agent.JS_RUNNING
    assert record.agent_identity == "helper-bot" and worker.jobs == {record.id: record}
    assert rig.offers.job_of_agent("helper-bot") is record
    (assignment,) = worker.assignments()
    assert assignment.job.id == record.id
    claims = TokenVerifier({API_KEY: API_SECRET}).verify(assignment.token)
    assert claims.identity == "helper-bot" and claims.kind == "agent"
    assert claims.video.room == "demo" and claims.video.room_join and claims.video.agent
    assert claims.video.can_publish and claims.video.can_subscribe
    assert claims.attributes[AGENT_NAME_ATTRIBUTE] == ""
    assert rig.clock.pending == 0  # the availability timer was cancelled


async def test_an_agent_without_a_chosen_identity_is_named_after_its_job(rig: Rig) -> None:
    worker = rig.worker("AW_1")
    dispatch, record = rig.launch()
    _, job = await rig.inbox.get()
    worker.accept(job)
    await rig.settled(dispatch)
    assert record.agent_identity == f"agent-{record.id}"


async def test_one_worker_at_a_time_and_unavailable_passes_to_the_next(rig: Rig) -> None:
    first, second = rig.worker("AW_1"), rig.worker("AW_2")
    dispatch, record = rig.launch()
    asked, job = await rig.inbox.get()
    assert rig.inbox.empty()  # only one offer out at a time
    asked.refuse(job)
    then_asked, same_job = await rig.inbox.get()
    assert {asked, then_asked} == {first, second} and same_job.id == job.id
    then_asked.accept(same_job, "bot")
    await rig.settled(dispatch)
    assert record.state.status == agent.JS_RUNNING and record.state.worker_id == then_asked.id
    assert not asked.assignments() and len(then_asked.assignments()) == 1


async def test_every_worker_unavailable_fails_the_job(rig: Rig) -> None:
    rig.worker("AW_1")
    rig.worker("AW_2")
    dispatch, record = rig.launch()
    for _ in range(2):
        worker, job = await rig.inbox.get()
        worker.refuse(job)
    await rig.settled(dispatch)
    assert record.state.status == agent.JS_FAILED
    assert record.state.error == "no worker accepted the job"
    assert record.state.reason == agent.JSR_NO_CAPACITY


async def test_no_answer_within_the_availability_timeout_fails_the_job(rig: Rig) -> None:
    rig.worker("AW_1")
    rig.worker("AW_2")
    dispatch, record = rig.launch()
    await rig.inbox.get()
    rig.clock.advance(rig.offers.availability_timeout - 0.1)
    await asyncio.sleep(0)
    assert record.state.status == agent.JS_PENDING
    rig.clock.advance(0.2)
    await rig.settled(dispatch)
    assert record.state.status == agent.JS_FAILED
    assert record.state.error == "worker did not answer the job offer"
    assert rig.inbox.empty()  # a silent worker is not followed by another offer


async def test_a_worker_that_goes_away_passes_the_job_on(rig: Rig) -> None:
    rig.worker("AW_1")
    rig.worker("AW_2")
    dispatch, record = rig.launch()
    gone, _ = await rig.inbox.get()
    rig.offers.worker_left(gone)
    rig.registry.remove(gone)
    other, job = await rig.inbox.get()
    assert other is not gone
    other.accept(job)
    await rig.settled(dispatch)
    assert record.state.status == agent.JS_RUNNING


async def test_a_worker_answering_terminate_ends_the_job(rig: Rig) -> None:
    worker = rig.worker("AW_1")
    dispatch, record = rig.launch()
    _, job = await rig.inbox.get()
    assert worker.answer(agent.AvailabilityResponse(job_id=job.id, terminate=True))
    await rig.settled(dispatch)
    assert record.state.status == agent.JS_SUCCESS and not worker.assignments()


async def test_why_a_job_finds_no_worker(rig: Rig) -> None:
    # Nobody serves the agent: no job at all (nothing is retried later).
    assert rig.offers.launch(Dispatch.create("demo", "helper"), agent.JT_ROOM, ROOM) == []
    assert rig.offers.jobs() == []
    # Workers serve it but none has room for it.
    rig.worker("AW_full", status=agent.WS_FULL)
    rig.worker("AW_busy", load=1.0)
    dispatch, record = rig.launch()
    await rig.settled(dispatch)
    assert record.state.status == agent.JS_FAILED
    assert record.state.error == "no worker with sufficient capacity"
    assert rig.inbox.empty()


async def test_workers_serve_only_their_agent_name_and_job_type(rig: Rig) -> None:
    rig.worker("AW_named", agent_name="helper")
    rig.worker("AW_publisher", job_type=agent.JT_PUBLISHER)
    assert rig.offers.launch(Dispatch.create("demo"), agent.JT_ROOM, ROOM) == []
    rig.launch("helper", agent.JT_ROOM)
    worker, job = await rig.inbox.get()
    assert worker.id == "AW_named" and job.agent_name == "helper"
    assert rig.offers.launch(Dispatch.create("demo"), agent.JT_PARTICIPANT, ROOM) == []


async def test_one_job_per_namespace(rig: Rig) -> None:
    rig.worker("AW_a", namespace="a")
    rig.worker("AW_b", namespace="b")
    dispatch = Dispatch.create("demo")
    records = rig.offers.launch(dispatch, agent.JT_ROOM, ROOM)
    assert sorted(r.job.namespace for r in records) == ["a", "b"]
    assert dispatch.jobs == records
    offered = {(await rig.inbox.get())[0].namespace for _ in records}
    assert offered == {"a", "b"}


def test_workers_are_chosen_by_spare_capacity() -> None:
    inbox: asyncio.Queue[tuple[FakeWorker, agent.Job]] = asyncio.Queue()
    idle = FakeWorker("AW_idle", inbox, load=0.0)
    half = FakeWorker("AW_half", inbox, load=0.5)
    full = FakeWorker("AW_full", inbox, load=1.0)
    rng = random.Random(1)
    picks = Counter(pick_worker([idle, half, full], rng).id for _ in range(3000))  # type: ignore[union-attr]
    assert picks["AW_full"] == 0
    assert 1.7 < picks["AW_idle"] / picks["AW_half"] < 2.3  # weights 1.0 : 0.5
    assert pick_worker([full], rng) is None
    assert pick_worker([], rng) is None


async def test_no_assignment_once_the_room_has_closed(rig: Rig) -> None:
    worker = rig.worker("AW_1")
    dispatch, record = rig.launch()
    _, job = await rig.inbox.get()
    rig.live_rooms.clear()
    worker.accept(job)
    await rig.settled(dispatch)
    assert record.state.status == agent.JS_FAILED and record.state.error == "room closed"
    assert record.state.reason == agent.JSR_ROOM_CLOSED
    assert not worker.assignments()


async def test_cancelled_launches_fail_as_room_closed(rig: Rig) -> None:
    rig.worker("AW_1")
    dispatch, record = rig.launch()
    await rig.inbox.get()
    rig.offers.cancel_launches(dispatch.id)
    await rig.settled(dispatch)
    assert record.state.status == agent.JS_FAILED
    assert record.state.reason == agent.JSR_ROOM_CLOSED


async def test_a_worker_whose_key_was_revoked_gets_no_token(rig: Rig) -> None:
    worker = rig.worker("AW_1", api_key="revoked")
    dispatch, record = rig.launch()
    _, job = await rig.inbox.get()
    worker.accept(job)
    await rig.settled(dispatch)
    assert record.state.status == agent.JS_FAILED and not worker.assignments()


async def test_settle_gives_up_after_its_timeout(rig: Rig) -> None:
    rig.worker("AW_1")
    dispatch, record = rig.launch()
    await rig.inbox.get()
    waiting = asyncio.ensure_future(rig.offers.settle(dispatch.id, 1.0))
    await asyncio.sleep(0)
    rig.clock.advance(1.0)  # before the availability timeout
    await waiting
    assert record.state.status == agent.JS_PENDING
    await rig.offers.close()


async def test_job_updates_from_the_worker_running_it(rig: Rig) -> None:
    worker = rig.worker("AW_1")
    dispatch, record = rig.launch()
    _, job = await rig.inbox.get()
    worker.accept(job, "bot")
    await rig.settled(dispatch)
    before = record.state.updated_at
    assert rig.offers.job_update(
        worker, agent.UpdateJobStatus(job_id=job.id, status=agent.JS_RUNNING)
    )
    assert record.state.updated_at >= before and record.state.status == agent.JS_RUNNING
    stranger = rig.worker("AW_2")
    assert not rig.offers.job_update(stranger, agent.UpdateJobStatus(job_id=job.id))
    done = agent.UpdateJobStatus(job_id=job.id, status=agent.JS_FAILED, error="crashed")
    assert rig.offers.job_update(worker, done)
    assert record.ended and record.state.error == "crashed" and worker.jobs == {}


@pytest.mark.parametrize(
    ("how", "status", "reason", "error"),
    [
        ({}, agent.JS_SUCCESS, agent.JSR_DISPATCH_DELETED, ""),
        ({"left_room": True}, agent.JS_FAILED, 0, "agent worker left the room"),
        ({"room_closed": True}, agent.JS_SUCCESS, agent.JSR_ROOM_CLOSED, ""),
    ],
)
async def test_termination_tells_the_worker_and_records_why(
    rig: Rig, how: dict[str, bool], status: int, reason: int, error: str
) -> None:
    worker = rig.worker("AW_1")
    dispatch, record = rig.launch()
    _, job = await rig.inbox.get()
    worker.accept(job, "bot")
    await rig.settled(dispatch)
    rig.offers.terminate(record, **how)
    assert worker.terminations() == [record.id] and worker.jobs == {}
    assert (record.state.status, record.state.reason, record.state.error) == (status, reason, error)
    rig.offers.terminate(record)  # already ended: nothing more
    assert worker.terminations() == [record.id]


async def test_agents_are_known_per_room_instance(rig: Rig) -> None:
    worker = rig.worker("AW_1")
    dispatch, record = rig.launch()
    _, job = await rig.inbox.get()
    worker.accept(job, "bot")
    await rig.settled(dispatch)
    assert rig.offers.agent_left("RM_other", "bot") is None
    assert rig.offers.agent_left("RM_demo", "bot") is record
    assert rig.offers.agent_left("RM_demo", "bot") is None  # once
    rig.offers.room_closed("RM_demo")


async def test_simulated_jobs_go_to_the_asking_worker_only(rig: Rig) -> None:
    other = rig.worker("AW_other")
    worker = rig.worker("AW_1")
    request = agent.SimulateJobRequest(room=ROOM, participant=models.ParticipantInfo(identity="p"))
    record = rig.offers.simulate(worker, request)
    asked, job = await rig.inbox.get()
    assert asked is worker and job.type == agent.JT_PUBLISHER and not record.room_sid
    worker.refuse(job)  # not passed on to another worker
    await run_until(lambda: record.ended)
    assert record.state.error == "no worker accepted the job" and other.inbox.empty()
