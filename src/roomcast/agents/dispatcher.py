"""Dispatch: which agent jobs start when, which worker gets them (reference 14 §1.5-1.6, §2).

Every room gets its dispatches once, right after it is created: the ``agents`` of the
CreateRoom request or of the first joiner's token ``roomConfig`` that created it, else one
implicit dispatch for unnamed agents. Each dispatch launches

- a ROOM job when it is added (room creation, or AgentDispatchService.CreateDispatch),
- a PUBLISHER job per participant, on its first published track,
- a PARTICIPANT job per participant, when it becomes active,

never for agents or other dependent participants, and only if a worker for that agent name
and job type is registered at that moment (nothing is retried later, as in livekit-server).
A job is offered to one worker at a time; the worker that accepts gets an assignment with a
room token for the agent. The job ends when its worker says so, when the dispatch is deleted,
or when the agent leaves the room.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Coroutine, Iterable, Mapping
from typing import Any

from google.protobuf import json_format
from livekit.protocol import agent, agent_dispatch, models
from livekit.protocol import room as room_pb

from roomcast.agents.jobs import (
    JOB_PREFIX,
    JOB_STATUS_NAMES,
    JOB_TYPE_NAMES,
    Dispatch,
    JobRecord,
    RoomAgents,
    now_ns,
)
from roomcast.agents.workers import Worker, WorkerClosedError, WorkerRegistry
from roomcast.auth import TokenVerifier, VideoGrant, create_token
from roomcast.errors import NotFoundError, RoomcastError, RoomNotFoundError
from roomcast.ids import new_sid
from roomcast.rooms.admin import RoomAdmin
from roomcast.rooms.participant import Participant, State
from roomcast.rooms.room import Room, RoomEvent

log = logging.getLogger(__name__)

AVAILABILITY_TIMEOUT = 10.0  # livekit-server waits this long for a worker's answer
AGENT_LEAVE_TIMEOUT = 3.0  # after a termination, before the agent is removed from the room
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


def room_config_agents(
    room_config: Mapping[str, Any] | None,
) -> list[agent_dispatch.RoomAgentDispatch]:
    """``roomConfig.agents`` of a token (proto JSON, camelCase or snake_case)."""
    if not room_config:
        return []
    config = room_pb.RoomConfiguration()
    try:
        json_format.ParseDict(dict(room_config), config, ignore_unknown_fields=True)
    except (json_format.ParseError, ValueError, TypeError) as exc:
        log.info("ignoring the token's roomConfig: %s", exc)
        return []
    return list(config.agents)


class Dispatcher:
    def __init__(
        self,
        admin: RoomAdmin,
        registry: WorkerRegistry,
        verifier: TokenVerifier,
        *,
        availability_timeout: float = AVAILABILITY_TIMEOUT,
    ) -> None:
        self._admin = admin
        self._rooms = admin.rooms
        self._registry = registry
        self._verifier = verifier
        self.availability_timeout = availability_timeout
        self._state: dict[str, RoomAgents] = {}
        self._preset: dict[str, list[agent_dispatch.RoomAgentDispatch]] = {}
        self._jobs: dict[str, JobRecord] = {}
        self._assigned: dict[str, JobRecord] = {}  # agent identity → its job (latest)
        self._tasks: set[asyncio.Task[Any]] = set()
        self._departed = asyncio.Event()  # set (and replaced) whenever a participant leaves
        # Multi-node: hands a worker's update for a job this node does not know to the job's
        # room node (routing/agents.py); True when it did.
        self.forward_job_update: Callable[[Worker, agent.UpdateJobStatus], bool] = (
            lambda worker, update: False
        )

    # -- views ------------------------------------------------------------------------------
    def jobs(self) -> list[JobRecord]:
        return list(self._jobs.values())

    def job(self, job_id: str) -> JobRecord | None:
        return self._jobs.get(job_id)

    def dispatches(self, room_name: str) -> list[Dispatch]:
        state = self._state.get(room_name)
        return list(state.dispatches.values()) if state is not None else []

    # -- room events ------------------------------------------------------------------------
    def on_room_event(self, event: RoomEvent) -> None:
        name = event.name
        if name == "room_started":
            self._room_started(event.room)
        elif name == "room_finished":
            self._room_finished(event.room)
        elif name == "participant_joined" and event.participant is not None:
            self._participant_event(event, agent.JT_PARTICIPANT)
        elif name == "track_published" and event.participant is not None:
            self._participant_event(event, agent.JT_PUBLISHER)
        elif name in ("participant_left", "participant_connection_aborted"):
            if event.participant is not None:
                self._participant_left(event.room.name, event.participant.identity)

    def preset_agents(self, room_name: str, agents: list[agent_dispatch.RoomAgentDispatch]) -> None:
        """The ``agents`` of a CreateRoom request about to create ``room_name``."""
        self._preset[room_name] = agents

    def clear_preset(self, room_name: str) -> None:
        self._preset.pop(room_name, None)

    def _room_started(self, info: models.Room) -> None:
        state = RoomAgents(info.name, info.sid)
        self._state[info.name] = state
        preset = self._preset.pop(info.name, None)
        # The join that creates a room admits its participant right after this event, in the
        # same synchronous step: look at its token once that is done.
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self._init_room(state, preset)
        else:
            loop.call_soon(self._init_room, state, preset)

    def _init_room(
        self, state: RoomAgents, preset: list[agent_dispatch.RoomAgentDispatch] | None
    ) -> None:
        room = self._live_room(state)
        if room is None or state.initialized:
            return
        state.initialized = True
        joiners = list(room.participants.values())
        if not preset and joiners and all(p.is_dependent for p in joiners):
            # Created by an agent's own join (its room had closed in the meantime): agents
            # never start agent jobs.
            log.debug("room created by an agent: no dispatches", extra={"room": room.name})
            return
        specs = preset or self._token_agents(room)
        dispatches = [Dispatch.from_room_agent(room.name, spec) for spec in specs]
        for dispatch in dispatches or [Dispatch.create(room.name)]:
            self._add(state, room, dispatch)

    @staticmethod
    def _token_agents(room: Room) -> list[agent_dispatch.RoomAgentDispatch]:
        for participant in room.participants.values():
            claims = getattr(participant.session, "claims", None)
            agents = room_config_agents(getattr(claims, "room_config", None))
            if agents:
                return agents
        return []

    def _room_finished(self, info: models.Room) -> None:
        state = self._state.get(info.name)
        if state is None or state.sid != info.sid:
            return
        del self._state[info.name]
        for dispatch in state.dispatches.values():
            for task in list(dispatch.launches):
                task.cancel()
            # Jobs whose agent was not in the room (yet) would otherwise run on: their agent
            # would even re-create the room by joining it.
            for record in dispatch.jobs:
                if record.state.status == agent.JS_RUNNING:
                    self.terminate(record, room_closed=True)

    def _participant_event(self, event: RoomEvent, job_type: int) -> None:
        assert event.participant is not None
        state = self._state.get(event.room.name)
        room = self._live_room(state) if state is not None else None
        if state is None or room is None or not state.initialized:
            return
        participant = room.participants.get(event.participant.identity)
        if participant is None or participant.sid != event.participant.sid:
            return
        if participant.is_dependent:
            self._check_agent_room(room, participant)
            return  # agents never start agent jobs
        for dispatch in list(state.dispatches.values()):
            self._launch(state, room, dispatch, job_type, participant)

    def _check_agent_room(self, room: Room, participant: Participant) -> None:
        """An agent whose job was for an earlier instance of this room does not stay."""
        record = self._assigned.get(participant.identity)
        if record is None or not record.room_sid or record.job.room.name != room.name:
            return
        if record.room_sid != room.sid:
            log.info(
                "agent joined after its room had closed, removing it",
                extra={"job_id": record.id, "room": room.name, "identity": participant.identity},
            )
            self.terminate(record, room_closed=True)
            # Told again: the first termination may have reached the worker before the job
            # started there.
            worker = self._registry.get(record.state.worker_id)
            if worker is not None:
                worker.send(agent.ServerMessage(termination=agent.JobTermination(job_id=record.id)))
            with contextlib.suppress(RoomcastError):
                self._admin.remove_participant(room.name, participant.identity)

    def _participant_left(self, room_name: str, identity: str) -> None:
        self._departed.set()  # wakes _end_dispatch waiters
        self._departed = asyncio.Event()
        state = self._state.get(room_name)
        record = state.agent_jobs.pop(identity, None) if state is not None else None
        if record is not None and not record.ended:
            room = self._rooms.get(room_name)
            closing = room is None or room.closed
            log.info(
                "agent left the room, terminating its job",
                extra={"job_id": record.id, "room": room_name, "identity": identity},
            )
            self.terminate(record, left_room=not closing, room_closed=closing)

    def _live_room(self, state: RoomAgents | None) -> Room | None:
        room = self._rooms.get(state.name) if state is not None else None
        if room is None or state is None or room.sid != state.sid or room.closed:
            return None
        return room

    # -- dispatches -------------------------------------------------------------------------
    def create_dispatch(
        self,
        room_name: str,
        agent_name: str,
        metadata: str = "",
        *,
        restart_policy: int = 0,
        deployment: str = "",
        attributes: dict[str, str] | None = None,
        auto_create: bool = True,
    ) -> Dispatch:
        """AgentDispatchService.CreateDispatch: add a dispatch to a room (created if allowed)."""
        room = self._rooms.get(room_name)
        if room is None:
            if not auto_create:
                raise RoomNotFoundError(room_name)
            room = self._rooms.create(room_name)
        state = self._state.get(room_name)
        if state is None or state.sid != room.sid:
            state = self._state[room_name] = RoomAgents(room.name, room.sid)
        dispatch = Dispatch.create(
            room_name,
            agent_name,
            metadata,
            restart_policy=restart_policy,
            deployment=deployment,
            attributes=attributes,
        )
        self._add(state, room, dispatch)
        return dispatch

    def list_dispatches(self, room_name: str, dispatch_id: str = "") -> list[Dispatch]:
        state = self._state.get(room_name)
        if state is None or self._rooms.get(room_name) is None:
            raise RoomNotFoundError(room_name)
        return [d for d in state.dispatches.values() if not dispatch_id or d.id == dispatch_id]

    def delete_dispatch(self, room_name: str, dispatch_id: str) -> Dispatch:
        """Remove the dispatch now; terminate its jobs and remove its agents in the background."""
        state = self._state.get(room_name)
        if state is None or self._rooms.get(room_name) is None:
            raise RoomNotFoundError(room_name)
        dispatch = state.dispatches.pop(dispatch_id, None)
        if dispatch is None:
            raise NotFoundError("dispatch not found")
        dispatch.deleted_at = now_ns()
        log.info(
            "agent dispatch deleted",
            extra={
                "dispatch_id": dispatch.id,
                "room": room_name,
                "agent_name": dispatch.agent_name,
            },
        )
        self._spawn(self._end_dispatch(state, dispatch))
        return dispatch

    def _add(self, state: RoomAgents, room: Room, dispatch: Dispatch) -> None:
        state.dispatches[dispatch.id] = dispatch
        log.info(
            "agent dispatch created",
            extra={
                "dispatch_id": dispatch.id,
                "room": room.name,
                "agent_name": dispatch.agent_name,
            },
        )
        self._launch(state, room, dispatch, agent.JT_ROOM)
        for participant in list(room.live_participants()):
            if participant.state == State.ACTIVE:
                self._launch(state, room, dispatch, agent.JT_PARTICIPANT, participant)
            if participant.is_publisher:
                self._launch(state, room, dispatch, agent.JT_PUBLISHER, participant)

    async def _end_dispatch(self, state: RoomAgents, dispatch: Dispatch) -> None:
        if dispatch.launches:
            await asyncio.wait(set(dispatch.launches), timeout=self.availability_timeout + 1)
        identities = [record.agent_identity for record in dispatch.jobs if record.agent_identity]
        for record in dispatch.jobs:
            self.terminate(record)
        room = self._live_room(state)
        if room is None or not identities:
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + AGENT_LEAVE_TIMEOUT
        while self._present(room, identities) and loop.time() < deadline:
            departed = self._departed
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(departed.wait(), deadline - loop.time())
        for identity in self._present(room, identities):
            log.info("removing agent that did not leave", extra={"identity": identity})
            with contextlib.suppress(RoomcastError):
                self._admin.remove_participant(room.name, identity)

    @staticmethod
    def _present(room: Room, identities: Iterable[str]) -> list[str]:
        live = {p.identity for p in room.live_participants()}
        return [identity for identity in identities if identity in live]

    # -- jobs -------------------------------------------------------------------------------
    def _launch(
        self,
        state: RoomAgents,
        room: Room,
        dispatch: Dispatch,
        job_type: int,
        participant: Participant | None = None,
    ) -> None:
        if participant is not None:
            if participant.is_dependent:
                return  # agents never trigger agent jobs
            seen = dispatch.publishers if job_type == agent.JT_PUBLISHER else dispatch.participants
            if participant.sid in seen:
                return
            seen.add(participant.sid)
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
            return
        for namespace in namespaces:
            job = agent.Job(
                id=new_sid(JOB_PREFIX),
                dispatch_id=dispatch.id,
                type=job_type,  # type: ignore[arg-type]
                room=room.to_proto(),
                namespace=namespace,
                metadata=dispatch.metadata,
                agent_name=dispatch.agent_name,
                deployment=dispatch.deployment,
                attributes=dispatch.attributes,
                state=agent.JobState(status=agent.JS_PENDING, updated_at=now_ns()),
            )
            if participant is not None:
                job.participant.CopyFrom(participant.to_proto())
            record = JobRecord(job, room_sid=room.sid)
            dispatch.jobs.append(record)
            self._remember(record)
            task = self._spawn(self._offer(record, state))
            dispatch.launches.add(task)
            task.add_done_callback(dispatch.launches.discard)

    def simulate(self, worker: Worker, request: agent.SimulateJobRequest) -> None:
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
        self._spawn(self._offer(record, self._state.get(request.room.name), only=worker))

    async def _offer(
        self, record: JobRecord, state: RoomAgents | None, only: Worker | None = None
    ) -> None:
        """Offer the job to one worker after another until one accepts (reference 14 §1.5)."""
        job = record.job
        tried: list[str] = []
        try:
            while True:
                if only is not None:
                    worker = only if not tried and not only.closed else None
                else:
                    worker = self._registry.choose(
                        job.agent_name, job.type, job.deployment, job.namespace, tried
                    )
                if worker is None:
                    if tried:
                        error = "no worker accepted the job"
                    elif self._registry.serving(job.agent_name, job.type, job.deployment):
                        error = "no worker with sufficient capacity"
                    else:
                        error = "no worker available"
                    record.set_status(agent.JS_FAILED, error, agent.JSR_NO_CAPACITY)
                    log.info(error, extra=self._job_extra(record))
                    return
                tried.append(worker.id)
                job.state.worker_id = worker.id
                log.debug("offering job", extra=self._job_extra(record))
                try:
                    answer = await worker.offer(job, self.availability_timeout)
                except WorkerClosedError:
                    continue
                except TimeoutError:
                    record.set_status(agent.JS_FAILED, "worker did not answer the job offer")
                    log.warning(
                        "worker did not answer the job offer", extra=self._job_extra(record)
                    )
                    return
                if answer.terminate:
                    record.set_status(agent.JS_SUCCESS)
                    log.info("job rejected by the worker", extra=self._job_extra(record))
                    return
                if not answer.available:
                    log.debug("worker not available for job", extra=self._job_extra(record))
                    continue
                self._assign(record, state, worker, answer)
                return
        except asyncio.CancelledError:
            record.set_status(agent.JS_FAILED, "room closed", agent.JSR_ROOM_CLOSED)
            raise

    def _assign(
        self,
        record: JobRecord,
        state: RoomAgents | None,
        worker: Worker,
        answer: agent.AvailabilityResponse,
    ) -> None:
        job = record.job
        if record.room_sid and self._live_room(state) is None:
            record.set_status(agent.JS_FAILED, "room closed", agent.JSR_ROOM_CLOSED)
            log.info("room closed before the job was assigned", extra=self._job_extra(record))
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
        if state is not None and record.room_sid == state.sid:
            state.agent_jobs[identity] = record
        worker.send(agent.ServerMessage(assignment=agent.JobAssignment(job=job, token=token)))
        log.info("job assigned", extra=self._job_extra(record))

    def job_update(self, worker: Worker, update: agent.UpdateJobStatus) -> None:
        """``update_job`` from the worker running it."""
        record = worker.jobs.get(update.job_id)
        if record is None:
            if not self.forward_job_update(worker, update):
                log.debug("update for an unknown job", extra={"job_id": update.job_id})
            return
        if update.status == agent.JS_RUNNING and record.state.status == agent.JS_RUNNING:
            record.state.updated_at = now_ns()
            return
        record.set_status(update.status, update.error)
        log.info("job status", extra=self._job_extra(record))
        if record.ended:
            worker.jobs.pop(record.id, None)

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
        log.info("job terminated", extra=self._job_extra(record))

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

    @staticmethod
    def _job_extra(record: JobRecord) -> dict[str, object]:
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

    # -- lifecycle --------------------------------------------------------------------------
    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
