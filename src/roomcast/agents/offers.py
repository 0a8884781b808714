"""Job offers: the jobs a dispatch launches, offered to one worker at a time until one accepts.

A worker is chosen at random among the available ones that serve the job's agent name, job type,
deployment and namespace and were not tried yet, weighted by its spare capacity ``1 - load``. It
gets ``availability{job}`` and has ``availability_timeout`` seconds to answer: *unavailable*
(or a worker that goes away) passes the job to the next one; *terminate* ends the job; no answer
fails it. The worker that accepts gets an assignment with a room token for its agent, minted
here with the worker's API key (kind ``agent``, the worker's registered permissions).

Every deadline runs on the injected `Clock` (``agents/clock.py``), so unit tests drive the
offers on a fake clock with fake workers.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

from livekit.protocol import agent, models

from roomcast.agents.clock import Clock, LoopClock, within
from roomcast.agents.jobs import (
    JOB_PREFIX,
    JOB_STATUS_NAMES,
    JOB_TYPE_NAMES,
    Dispatch,
    JobRecord,
    now_ns,
)
from roomcast.agents.workers import Worker, WorkerClosedError, WorkerRegistry
from roomcast.auth import TokenVerifier, VideoGrant, create_token
from roomcast.ids import new_sid

log = logging.getLogger(__name__)

AVAILABILITY_TIMEOUT = 10.0  # livekit-server waits this long for a worker's answer
AGENT_TOKEN_TTL = 3600
MAX_KEPT_JOBS = 1000  # ended jobs are forgotten past this many (jobs() stays bounded)
AGENT_NAME_ATTRIBUTE = "lk.agent_name"

_SOURCE_NAMES = {
    models.TrackSource.CAMERA: "camera",
    models.TrackSource.MICROPHONE: "microphone",
    models.TrackSource.SCREEN_SHARE: "screen_share",
    models.TrackSource.SCREEN_SHARE_AUDIO: "screen_share_audio",
}


def agent_grant(room: str, permissions: models.ParticipantPermission) -> VideoGrant:
    """The agent's room grant: join + agent, the rest from the worker's registered permissions."""
    return VideoGrant(
        room_join=True,
        room=room,
        agent=True,
        can_subscribe=permissions.can_subscribe,
        can_publish=permissions.can_publish,
        can_publish_data=permissions.can_publish_data,
        can_publish_sources=tuple(
            _SOURCE_NAMES[s] for s in permissions.can_publish_sources if s in _SOURCE_NAMES
        ),
        can_update_own_metadata=permissions.can_update_metadata,
        can_subscribe_metrics=permissions.can_subscribe_metrics,
        hidden=permissions.hidden,
    )


def pick_worker(candidates: Sequence[Worker], rng: random.Random) -> Worker | None:
    """One of ``candidates`` at random, weighted by spare capacity; None if none has any."""
    weights = [worker.weight for worker in candidates]
    if not candidates or sum(weights) <= 0:
        return None
    return rng.choices(candidates, weights=weights)[0]


class JobOffers:
    """Creates, offers, assigns and ends jobs; knows which agent runs which job."""

    def __init__(
        self,
        registry: WorkerRegistry,
        verifier: TokenVerifier,
        *,
        room_is_live: Callable[[str, str], bool],
        clock: Clock | None = None,
        rng: random.Random | None = None,
        availability_timeout: float = AVAILABILITY_TIMEOUT,
    ) -> None:
        self._registry = registry
        self._verifier = verifier
        # (room name, room sid) → that room instance is still open: no assignment otherwise.
        self._room_is_live = room_is_live
        self._clock = clock or LoopClock()
        self._rng = rng or random.Random()
        self.availability_timeout = availability_timeout
        self._jobs: dict[str, JobRecord] = {}
        self._assigned: dict[str, JobRecord] = {}  # agent identity → its job (latest)
        # Room sid → agent identity → its job, to end the job when the agent leaves.
        self._room_agents: dict[str, dict[str, JobRecord]] = {}
        # Dispatch id → its offers still in flight (DeleteDispatch waits for them).
        self._launches: dict[str, set[asyncio.Task[None]]] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    # -- views ------------------------------------------------------------------------------
    def jobs(self) -> list[JobRecord]:
        return list(self._jobs.values())

    def job(self, job_id: str) -> JobRecord | None:
        return self._jobs.get(job_id)

    def job_of_agent(self, identity: str) -> JobRecord | None:
        """The latest job assigned to an agent joining as ``identity``."""
        return self._assigned.get(identity)

    # -- launching --------------------------------------------------------------------------
    def launch(
        self,
        dispatch: Dispatch,
        job_type: int,
        room: models.Room,
        participant: models.ParticipantInfo | None = None,
    ) -> list[JobRecord]:
        """One job per namespace served for the dispatch's agent, each offered in the
        background; none when no such worker is registered now (nothing is retried later)."""
        namespaces = self._registry.namespaces(dispatch.agent_name, job_type, dispatch.deployment)
        if not namespaces:
            if job_type == agent.JT_ROOM or dispatch.agent_name:
                log.debug(
                    "no worker registered for this agent, not dispatching",
                    extra={
                        "room": room.name,
                        "agent_name": dispatch.agent_name,
                        "job_type": JOB_TYPE_NAMES.get(job_type),
                    },
                )
            return []
        records: list[JobRecord] = []
        for namespace in namespaces:
            job = agent.Job(
                id=new_sid(JOB_PREFIX),
                dispatch_id=dispatch.id,
                type=job_type,  # type: ignore[arg-type]
                room=room,
                namespace=namespace,
                metadata=dispatch.metadata,
                agent_name=dispatch.agent_name,
                deployment=dispatch.deployment,
                attributes=dispatch.attributes,
                state=agent.JobState(status=agent.JS_PENDING, updated_at=now_ns()),
            )
            if participant is not None:
                job.participant.CopyFrom(participant)
            record = JobRecord(job, room_sid=room.sid)
            dispatch.jobs.append(record)
            self._remember(record)
            in_flight = self._launches.setdefault(dispatch.id, set())
            task = self._spawn(self._offer(record))
            in_flight.add(task)
            task.add_done_callback(lambda done: self._launch_done(dispatch.id, done))
            records.append(record)
        return records

    def simulate(self, worker: Worker, request: agent.SimulateJobRequest) -> JobRecord:
        """``simulate_job``: a job for this worker only (JT_PUBLISHER if a participant is given)."""
        job = agent.Job(
            id=new_sid(JOB_PREFIX),
            type=agent.JT_PUBLISHER if request.HasField("participant") else agent.JT_ROOM,
            room=request.room,
            agent_name=worker.agent_name,
            namespace=worker.namespace,
            state=agent.JobState(status=agent.JS_PENDING, updated_at=now_ns()),
        )
        if request.HasField("participant"):
            job.participant.CopyFrom(request.participant)
        record = JobRecord(job)
        self._remember(record)
        self._spawn(self._offer(record, only=worker))
        return record

    def cancel_launches(self, dispatch_id: str) -> None:
        """Stop offering the dispatch's jobs (its room closed): they fail with ROOM_CLOSED."""
        for task in list(self._launches.get(dispatch_id, ())):
            task.cancel()

    async def settle(self, dispatch_id: str, timeout: float) -> None:
        """Wait (at most ``timeout``) until every offer of the dispatch is decided."""
        in_flight = self._launches.get(dispatch_id)
        if in_flight:
            try:
                await within(asyncio.wait(set(in_flight)), timeout, self._clock)
            except TimeoutError:
                pass

    def _launch_done(self, dispatch_id: str, task: asyncio.Task[None]) -> None:
        in_flight = self._launches.get(dispatch_id)
        if in_flight is not None:
            in_flight.discard(task)
            if not in_flight:
                del self._launches[dispatch_id]

    # -- offering ---------------------------------------------------------------------------
    def _next_worker(self, job: agent.Job, tried: list[str]) -> Worker | None:
        candidates = [
            worker
            for worker in self._registry.serving(job.agent_name, job.type, job.deployment)
            if worker.namespace == job.namespace
            and worker.id not in tried
            and worker.status == agent.WS_AVAILABLE
        ]
        return pick_worker(candidates, self._rng)

    async def _offer(self, record: JobRecord, only: Worker | None = None) -> None:
        """Offer the job to one worker after another until one accepts (or none is left)."""
        job = record.job
        tried: list[str] = []
        try:
            while True:
                if only is not None:
                    worker = only if not tried and not only.closed else None
                else:
                    worker = self._next_worker(job, tried)
                if worker is None:
                    if tried:
                        error = "no worker accepted the job"
                    elif self._registry.serving(job.agent_name, job.type, job.deployment):
                        error = "no worker with sufficient capacity"
                    else:
                        error = "no worker available"
                    record.set_status(agent.JS_FAILED, error, agent.JSR_NO_CAPACITY)
                    log.info(error, extra=job_extra(record))
                    return
                tried.append(worker.id)
                job.state.worker_id = worker.id
                log.debug("offering job", extra=job_extra(record))
                timeout = self.availability_timeout
                try:
                    # The worker's own timer serves offers relayed for other nodes; ours decides.
                    answer = await within(worker.offer(job, timeout), timeout, self._clock)
                except WorkerClosedError:
                    continue
                except TimeoutError:
                    record.set_status(agent.JS_FAILED, "worker did not answer the job offer")
                    log.warning("worker did not answer the job offer", extra=job_extra(record))
                    return
                if answer.terminate:
                    record.set_status(agent.JS_SUCCESS)
                    log.info("job rejected by the worker", extra=job_extra(record))
                    return
                if not answer.available:
                    log.debug("worker not available for job", extra=job_extra(record))
                    continue
                self._assign(record, worker, answer)
                return
        except asyncio.CancelledError:
            record.set_status(agent.JS_FAILED, "room closed", agent.JSR_ROOM_CLOSED)
            raise

    def _assign(
        self, record: JobRecord, worker: Worker, answer: agent.AvailabilityResponse
    ) -> None:
        job = record.job
        if record.room_sid and not self._room_is_live(job.room.name, record.room_sid):
            record.set_status(agent.JS_FAILED, "room closed", agent.JSR_ROOM_CLOSED)
            log.info("room closed before the job was assigned", extra=job_extra(record))
            return
        secret = self._verifier.secret_for(worker.api_key)
        if secret is None:
            record.set_status(agent.JS_FAILED, "the worker's API key is no longer valid")
            return
        identity = answer.participant_identity or f"agent-{job.id}"
        attributes = dict(answer.participant_attributes)
        attributes[AGENT_NAME_ATTRIBUTE] = job.agent_name
        token = create_token(
            worker.api_key,
            secret,
            identity=identity,
            name=answer.participant_name,
            metadata=answer.participant_metadata,
            attributes=attributes,
            video=agent_grant(job.room.name, worker.permissions),
            kind="agent",
            ttl_seconds=AGENT_TOKEN_TTL,
        )
        stamp = now_ns()
        job.state.status = agent.JS_RUNNING
        job.state.participant_identity = identity
        job.state.worker_id = worker.id
        job.state.started_at = stamp
        job.state.updated_at = stamp
        worker.jobs[job.id] = record
        self._assigned[identity] = record
        if record.room_sid:
            self._room_agents.setdefault(record.room_sid, {})[identity] = record
        worker.send(agent.ServerMessage(assignment=agent.JobAssignment(job=job, token=token)))
        log.info("job assigned", extra=job_extra(record))

    # -- running jobs -----------------------------------------------------------------------
    def job_update(self, worker: Worker, update: agent.UpdateJobStatus) -> bool:
        """``update_job`` from the worker running it; False for a job it does not run here."""
        record = worker.jobs.get(update.job_id)
        if record is None:
            return False
        if update.status == agent.JS_RUNNING and record.state.status == agent.JS_RUNNING:
            record.state.updated_at = now_ns()
            return True
        record.set_status(update.status, update.error)
        log.info("job status", extra=job_extra(record))
        if record.ended:
            worker.jobs.pop(record.id, None)
        return True

    def terminate(
        self, record: JobRecord, *, left_room: bool = False, room_closed: bool = False
    ) -> None:
        """End a job: tell its worker (``termination``) and record why.

        The reasons are livekit-server's: the dispatch was deleted (success) or the agent left
        the room (failed); an agent that leaves because its room closed ended normally.
        """
        if record.ended:
            return
        worker = self._registry.get(record.state.worker_id)
        if worker is not None and worker.jobs.pop(record.id, None) is not None:
            worker.send(agent.ServerMessage(termination=agent.JobTermination(job_id=record.id)))
        if room_closed:
            record.set_status(agent.JS_SUCCESS, reason=agent.JSR_ROOM_CLOSED)
        elif left_room:
            record.set_status(agent.JS_FAILED, "agent worker left the room")
        else:
            record.set_status(agent.JS_SUCCESS, reason=agent.JSR_DISPATCH_DELETED)
        log.info("job terminated", extra=job_extra(record))

    def send_termination(self, record: JobRecord) -> None:
        """Tell the job's worker (again) that the job is over."""
        worker = self._registry.get(record.state.worker_id)
        if worker is not None:
            worker.send(agent.ServerMessage(termination=agent.JobTermination(job_id=record.id)))

    def agent_left(self, room_sid: str, identity: str) -> JobRecord | None:
        """The job of the agent that left this room instance, if it had one."""
        agents = self._room_agents.get(room_sid)
        return agents.pop(identity, None) if agents is not None else None

    def room_closed(self, room_sid: str) -> None:
        self._room_agents.pop(room_sid, None)

    def worker_left(self, worker: Worker) -> None:
        """Forget a worker; its agents stay in their rooms (livekit-server does the same)."""
        worker.mark_closed()
        if worker.jobs:
            log.info(
                "worker left with running jobs; their agents stay in their rooms",
                extra={"worker_id": worker.id, "jobs": ",".join(worker.jobs)},
            )
        worker.jobs.clear()

    def _remember(self, record: JobRecord) -> None:
        self._jobs[record.id] = record
        if len(self._jobs) > MAX_KEPT_JOBS:
            for job_id in [j for j, r in self._jobs.items() if r.ended][: len(self._jobs) // 10]:
                forgotten = self._jobs.pop(job_id)
                if self._assigned.get(forgotten.agent_identity) is forgotten:
                    del self._assigned[forgotten.agent_identity]

    # -- lifecycle --------------------------------------------------------------------------
    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def close(self) -> None:
        """Stop every offer in flight."""
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)


def job_extra(record: JobRecord) -> dict[str, object]:
    """Log fields for a job."""
    job = record.job
    extra: dict[str, object] = {
        "job_id": job.id,
        "job_type": JOB_TYPE_NAMES.get(job.type, job.type),
        "room": job.room.name,
        "agent_name": job.agent_name,
        "status": JOB_STATUS_NAMES.get(job.state.status, job.state.status),
    }
    if job.state.worker_id:
        extra["worker_id"] = job.state.worker_id
    if job.state.participant_identity:
        extra["identity"] = job.state.participant_identity
    if job.HasField("participant"):
        extra["participant"] = job.participant.identity
    if job.state.error:
        extra["error"] = job.state.error
    return extra
