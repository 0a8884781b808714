"""Dispatcher: room events in, agent jobs out (docs/protocol/14-agents.md §1.5-1.6, §2).

It reads the live rooms, asks the `DispatchPolicy` (``agents/policy.py``) which jobs an event
launches, and hands them to `JobOffers` (``agents/offers.py``), which offers them to workers.
A job ends when its worker says so, when its dispatch is deleted (its agents are then asked
to leave, and removed if they do not), when its room closes, or when its agent leaves the room.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Callable, Coroutine, Iterable
from typing import Any

from livekit.protocol import agent, agent_dispatch, models

from roomcast.agents.clock import Clock, LoopClock, within
from roomcast.agents.jobs import Dispatch, JobRecord
from roomcast.agents.offers import AVAILABILITY_TIMEOUT, JobOffers
from roomcast.agents.policy import DispatchPolicy, Launch, Member, RoomView
from roomcast.agents.workers import Worker, WorkerRegistry
from roomcast.auth import Claims, TokenVerifier
from roomcast.errors import RoomcastError, RoomNotFoundError
from roomcast.rooms.admin import RoomAdmin
from roomcast.rooms.participant import Participant
from roomcast.rooms.room import Room, RoomEvent

log = logging.getLogger(__name__)

AGENT_LEAVE_TIMEOUT = 3.0  # after a termination, before the agent is removed from the room


def participant_claims(participant: Participant) -> Claims | None:
    """The token claims the participant joined with (None without a signalling session)."""
    return participant.session.claims if participant.session is not None else None


def member_of(participant: Participant) -> Member:
    claims = participant_claims(participant)
    return Member(
        identity=participant.identity,
        sid=participant.sid,
        state=participant.state,
        dependent=participant.is_dependent,
        publisher=participant.is_publisher,
        room_config=claims.room_config if claims is not None else None,
    )


def room_view(room: Room) -> RoomView:
    return RoomView(room.name, room.sid, tuple(member_of(p) for p in room.participants.values()))


class Dispatcher:
    def __init__(
        self,
        admin: RoomAdmin,
        registry: WorkerRegistry,
        verifier: TokenVerifier,
        *,
        availability_timeout: float = AVAILABILITY_TIMEOUT,
        clock: Clock | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self._admin = admin
        self._rooms = admin.rooms
        self._clock = clock or LoopClock()
        self.policy = DispatchPolicy()
        self.offers = JobOffers(
            registry,
            verifier,
            room_is_live=lambda name, sid: self._live_room(name, sid) is not None,
            clock=self._clock,
            rng=rng,
            availability_timeout=availability_timeout,
        )
        self._tasks: set[asyncio.Task[None]] = set()
        self._departed = asyncio.Event()  # set (and replaced) whenever a participant leaves
        # Multi-node: hands a worker's update for a job this node does not know to the job's
        # room node (routing/agents.py); True when it did.
        self.forward_job_update: Callable[[Worker, agent.UpdateJobStatus], bool] = (
            lambda worker, update: False
        )

    # -- views ------------------------------------------------------------------------------
    def jobs(self) -> list[JobRecord]:
        return self.offers.jobs()

    def job(self, job_id: str) -> JobRecord | None:
        return self.offers.job(job_id)

    def dispatches(self, room_name: str) -> list[Dispatch]:
        return self.policy.dispatches(room_name)

    # -- room events ------------------------------------------------------------------------
    def on_room_event(self, event: RoomEvent) -> None:
        name = event.name
        if name == "room_started":
            self._room_started(event.room)
        elif name == "room_finished":
            self._room_finished(event.room)
        elif name == "participant_joined" and event.participant is not None:
            self._participant_event(event.room, event.participant, agent.JT_PARTICIPANT)
        elif name == "track_published" and event.participant is not None:
            self._participant_event(event.room, event.participant, agent.JT_PUBLISHER)
        elif name in ("participant_left", "participant_connection_aborted"):
            if event.participant is not None:
                self._participant_left(event.room.name, event.participant.identity)

    def preset_agents(self, room_name: str, agents: list[agent_dispatch.RoomAgentDispatch]) -> None:
        """The ``agents`` of a CreateRoom request about to create ``room_name``."""
        self.policy.preset_agents(room_name, agents)

    def clear_preset(self, room_name: str) -> None:
        self.policy.clear_preset(room_name)

    def _room_started(self, info: models.Room) -> None:
        self.policy.room_started(info.name, info.sid)
        # The join that creates a room admits its participant right after this event, in the
        # same synchronous step: look at its token once that is done.
        try:
            self._clock.call_soon(lambda: self._init_room(info.name, info.sid))
        except RuntimeError:  # no event loop running
            self._init_room(info.name, info.sid)

    def _init_room(self, name: str, sid: str) -> None:
        room = self._live_room(name, sid)
        if room is not None:
            self._launch(room, self.policy.init_room(room_view(room)))

    def _room_finished(self, info: models.Room) -> None:
        dispatches = self.policy.room_finished(info.name, info.sid)
        self.offers.room_closed(info.sid)
        for dispatch in dispatches:
            self.offers.cancel_launches(dispatch.id)
            # Jobs whose agent was not in the room (yet) would otherwise run on: their agent
            # would even re-create the room by joining it.
            for record in dispatch.jobs:
                if record.state.status == agent.JS_RUNNING:
                    self.offers.terminate(record, room_closed=True)

    def _participant_event(
        self, info: models.Room, who: models.ParticipantInfo, job_type: int
    ) -> None:
        state = self.policy.room(info.name)
        if state is None or not self.policy.is_initialized(state.name, state.sid):
            return
        room = self._live_room(state.name, state.sid)
        participant = room.participants.get(who.identity) if room is not None else None
        if room is None or participant is None or participant.sid != who.sid:
            return
        if participant.is_dependent:
            self._check_agent_room(room, participant)
            return  # agents never start agent jobs
        member = member_of(participant)
        if job_type == agent.JT_PUBLISHER:
            self._launch(room, self.policy.track_published(room.name, room.sid, member))
        else:
            self._launch(room, self.policy.participant_joined(room.name, room.sid, member))

    def _check_agent_room(self, room: Room, participant: Participant) -> None:
        """An agent whose job was for an earlier instance of this room does not stay."""
        record = self.offers.job_of_agent(participant.identity)
        if record is None or not record.room_sid or record.job.room.name != room.name:
            return
        if record.room_sid != room.sid:
            log.info(
                "agent joined after its room had closed, removing it",
                extra={"job_id": record.id, "room": room.name, "identity": participant.identity},
            )
            self.offers.terminate(record, room_closed=True)
            # Told again: the first termination may have reached the worker before the job
            # started there.
            self.offers.send_termination(record)
            with contextlib.suppress(RoomcastError):
                self._admin.remove_participant(room.name, participant.identity)

    def _participant_left(self, room_name: str, identity: str) -> None:
        self._departed.set()  # wakes _end_dispatch waiters
        self._departed = asyncio.Event()
        state = self.policy.room(room_name)
        record = self.offers.agent_left(state.sid, identity) if state is not None else None
        if record is not None and not record.ended:
            room = self._rooms.get(room_name)
            closing = room is None or room.closed
            log.info(
                "agent left the room, terminating its job",
                extra={"job_id": record.id, "room": room_name, "identity": identity},
            )
            self.offers.terminate(record, left_room=not closing, room_closed=closing)

    def _live_room(self, name: str, sid: str) -> Room | None:
        room = self._rooms.get(name)
        if room is None or room.sid != sid or room.closed:
            return None
        return room

    def _launch(self, room: Room, launches: Iterable[Launch]) -> None:
        """Start the jobs the policy decided on, in the order it decided them."""
        for launch in launches:
            participant = None
            if launch.participant is not None:
                present = room.participants.get(launch.participant.identity)
                if present is None:
                    continue
                participant = present.to_proto()
            self.offers.launch(launch.dispatch, launch.job_type, room.to_proto(), participant)

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
        dispatch = Dispatch.create(
            room_name,
            agent_name,
            metadata,
            restart_policy=restart_policy,
            deployment=deployment,
            attributes=attributes,
        )
        self._launch(room, self.policy.add_dispatch(room_view(room), dispatch))
        return dispatch

    def list_dispatches(self, room_name: str, dispatch_id: str = "") -> list[Dispatch]:
        if self._rooms.get(room_name) is None:
            raise RoomNotFoundError(room_name)
        return self.policy.list_dispatches(room_name, dispatch_id)

    def delete_dispatch(self, room_name: str, dispatch_id: str) -> Dispatch:
        """Remove the dispatch now; terminate its jobs and remove its agents in the background."""
        state = self.policy.room(room_name)
        if state is None or self._rooms.get(room_name) is None:
            raise RoomNotFoundError(room_name)
        dispatch = self.policy.delete_dispatch(room_name, dispatch_id)
        self._spawn(self._end_dispatch(state.name, state.sid, dispatch))
        return dispatch

    async def _end_dispatch(self, room_name: str, room_sid: str, dispatch: Dispatch) -> None:
        await self.offers.settle(dispatch.id, self.offers.availability_timeout + 1)
        identities = [record.agent_identity for record in dispatch.jobs if record.agent_identity]
        for record in dispatch.jobs:
            self.offers.terminate(record)
        room = self._live_room(room_name, room_sid)
        if room is None or not identities:
            return
        deadline = self._clock.time() + AGENT_LEAVE_TIMEOUT
        while self._present(room, identities) and self._clock.time() < deadline:
            departed = self._departed
            with contextlib.suppress(TimeoutError):
                await within(departed.wait(), deadline - self._clock.time(), self._clock)
        for identity in self._present(room, identities):
            log.info("removing agent that did not leave", extra={"identity": identity})
            with contextlib.suppress(RoomcastError):
                self._admin.remove_participant(room.name, identity)

    @staticmethod
    def _present(room: Room, identities: Iterable[str]) -> list[str]:
        live = {p.identity for p in room.live_participants()}
        return [identity for identity in identities if identity in live]

    # -- workers ----------------------------------------------------------------------------
    def simulate(self, worker: Worker, request: agent.SimulateJobRequest) -> None:
        """``simulate_job``: a job for this worker only (JT_PUBLISHER if a participant is given)."""
        self.offers.simulate(worker, request)

    def job_update(self, worker: Worker, update: agent.UpdateJobStatus) -> None:
        """``update_job`` from the worker running it (or forwarded from the worker's node)."""
        if not self.offers.job_update(worker, update) and not self.forward_job_update(
            worker, update
        ):
            log.debug("update for an unknown job", extra={"job_id": update.job_id})

    def terminate(
        self, record: JobRecord, *, left_room: bool = False, room_closed: bool = False
    ) -> None:
        self.offers.terminate(record, left_room=left_room, room_closed=room_closed)

    def worker_left(self, worker: Worker) -> None:
        self.offers.worker_left(worker)

    # -- lifecycle --------------------------------------------------------------------------
    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.offers.close()
