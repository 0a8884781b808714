"""Dispatch policy: which agent jobs a room's events launch, decided from plain data.

Every room gets its own dispatches once, right after it is created: the ``agents`` of the
CreateRoom request or of a joiner's token ``roomConfig`` that created it, else one implicit
dispatch for unnamed agents (agent name ``""``). A dispatch launches

- a ROOM job when it is added (room creation, or AgentDispatchService.CreateDispatch),
- a PUBLISHER job per participant, on its first published track,
- a PARTICIPANT job per participant, when it becomes active (joins),

never for agents or other dependent participants, and a room created by an agent's own join
gets no dispatches at all. A deleted dispatch launches nothing more.

`DispatchPolicy` keeps the dispatches of each room and answers each event with `Launch`
decisions; it does no I/O and never touches asyncio. The `Dispatcher` turns the decisions into
job offers (``agents/offers.py``).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from google.protobuf import json_format
from livekit.protocol import agent, agent_dispatch, models
from livekit.protocol import room as room_pb

from roomcast.agents.jobs import Dispatch, now_ns
from roomcast.errors import NotFoundError, RoomNotFoundError

log = logging.getLogger(__name__)

State = models.ParticipantInfo.State


@dataclass(frozen=True, slots=True)
class Member:
    """A participant as the policy sees it."""

    identity: str
    sid: str
    state: int = State.JOINING
    dependent: bool = False  # an agent or egress: never the reason for an agent job
    publisher: bool = False  # has published a track
    room_config: Mapping[str, Any] | None = None  # its token's ``roomConfig``

    @property
    def live(self) -> bool:
        return self.state != State.DISCONNECTED

    @property
    def active(self) -> bool:
        return self.state == State.ACTIVE


@dataclass(frozen=True, slots=True)
class RoomView:
    """One instance of a room (its sid) and everyone in it, disconnected ones included."""

    name: str
    sid: str
    members: tuple[Member, ...] = ()


@dataclass(frozen=True, slots=True)
class Launch:
    """Start the jobs of ``dispatch`` of ``job_type`` (for ``participant``, unless a ROOM job)."""

    dispatch: Dispatch
    job_type: int
    participant: Member | None = None


@dataclass(eq=False)
class RoomDispatches:
    """The dispatches of one live room instance."""

    name: str
    sid: str
    dispatches: dict[str, Dispatch] = field(default_factory=dict)
    # The room's own dispatches are added once, right after it is created; API dispatches
    # may come before that.
    initialized: bool = False
    preset: list[agent_dispatch.RoomAgentDispatch] | None = None  # CreateRoom's ``agents``


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


def token_agents(members: Iterable[Member]) -> list[agent_dispatch.RoomAgentDispatch]:
    """The agents of the first member whose token's ``roomConfig`` names any."""
    for member in members:
        agents = room_config_agents(member.room_config)
        if agents:
            return agents
    return []


class DispatchPolicy:
    def __init__(self) -> None:
        self._rooms: dict[str, RoomDispatches] = {}
        self._preset: dict[str, list[agent_dispatch.RoomAgentDispatch]] = {}

    # -- views ------------------------------------------------------------------------------
    def room(self, name: str) -> RoomDispatches | None:
        """The room's dispatch state (read it, do not change it)."""
        return self._rooms.get(name)

    def dispatches(self, room_name: str) -> list[Dispatch]:
        state = self._rooms.get(room_name)
        return list(state.dispatches.values()) if state is not None else []

    def list_dispatches(self, room_name: str, dispatch_id: str = "") -> list[Dispatch]:
        """AgentDispatchService.ListDispatch: all of the room's, or the one with that id."""
        state = self._rooms.get(room_name)
        if state is None:
            raise RoomNotFoundError(room_name)
        return [d for d in state.dispatches.values() if not dispatch_id or d.id == dispatch_id]

    # -- room lifecycle ---------------------------------------------------------------------
    def preset_agents(self, room_name: str, agents: list[agent_dispatch.RoomAgentDispatch]) -> None:
        """The ``agents`` of a CreateRoom request about to create ``room_name``."""
        self._preset[room_name] = agents

    def clear_preset(self, room_name: str) -> None:
        self._preset.pop(room_name, None)

    def room_started(self, name: str, sid: str) -> None:
        self._rooms[name] = RoomDispatches(name, sid, preset=self._preset.pop(name, None))

    def init_room(self, room: RoomView) -> list[Launch]:
        """The room's own dispatches, once: CreateRoom's agents, else the token's, else the
        implicit one; none when an agent's own join created the room."""
        state = self._current(room.name, room.sid)
        if state is None or state.initialized:
            return []
        state.initialized = True
        preset, state.preset = state.preset, None
        if not preset and room.members and all(m.dependent for m in room.members):
            # Created by an agent's own join (its room had closed in the meantime): agents
            # never start agent jobs.
            log.debug("room created by an agent: no dispatches", extra={"room": room.name})
            return []
        specs = preset or token_agents(room.members)
        dispatches = [Dispatch.from_room_agent(room.name, spec) for spec in specs]
        launches: list[Launch] = []
        for dispatch in dispatches or [Dispatch.create(room.name)]:
            launches += self._add(state, room, dispatch)
        return launches

    def room_finished(self, name: str, sid: str) -> list[Dispatch]:
        """Forget the room instance; returns its dispatches (their jobs must end)."""
        state = self._current(name, sid)
        if state is None:
            return []
        del self._rooms[name]
        return list(state.dispatches.values())

    def is_initialized(self, name: str, sid: str) -> bool:
        """Whether participant events of this room instance may launch jobs yet."""
        state = self._current(name, sid)
        return state is not None and state.initialized

    # -- participants -----------------------------------------------------------------------
    def participant_joined(self, room_name: str, room_sid: str, member: Member) -> list[Launch]:
        """A PARTICIPANT job per dispatch, the first time ``member`` becomes active."""
        return self._participant_event(room_name, room_sid, member, agent.JT_PARTICIPANT)

    def track_published(self, room_name: str, room_sid: str, member: Member) -> list[Launch]:
        """A PUBLISHER job per dispatch, on ``member``'s first published track."""
        return self._participant_event(room_name, room_sid, member, agent.JT_PUBLISHER)

    def _participant_event(
        self, room_name: str, room_sid: str, member: Member, job_type: int
    ) -> list[Launch]:
        state = self._current(room_name, room_sid)
        if state is None or not state.initialized:
            return []
        launches: list[Launch] = []
        for dispatch in state.dispatches.values():
            launches += _for_participant(dispatch, job_type, member)
        return launches

    # -- dispatches -------------------------------------------------------------------------
    def add_dispatch(self, room: RoomView, dispatch: Dispatch) -> list[Launch]:
        """AgentDispatchService.CreateDispatch: its ROOM job, and the jobs of those present."""
        state = self._current(room.name, room.sid)
        if state is None:
            state = self._rooms[room.name] = RoomDispatches(room.name, room.sid)
        return self._add(state, room, dispatch)

    def delete_dispatch(self, room_name: str, dispatch_id: str) -> Dispatch:
        """Remove the dispatch: it launches nothing more (its jobs are the caller's to end)."""
        state = self._rooms.get(room_name)
        if state is None:
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
        return dispatch

    def _add(self, state: RoomDispatches, room: RoomView, dispatch: Dispatch) -> list[Launch]:
        state.dispatches[dispatch.id] = dispatch
        log.info(
            "agent dispatch created",
            extra={
                "dispatch_id": dispatch.id,
                "room": room.name,
                "agent_name": dispatch.agent_name,
            },
        )
        launches = [Launch(dispatch, agent.JT_ROOM)]
        for member in room.members:
            if not member.live:
                continue
            if member.active:
                launches += _for_participant(dispatch, agent.JT_PARTICIPANT, member)
            if member.publisher:
                launches += _for_participant(dispatch, agent.JT_PUBLISHER, member)
        return launches

    def _current(self, name: str, sid: str) -> RoomDispatches | None:
        state = self._rooms.get(name)
        return state if state is not None and state.sid == sid else None


def _for_participant(dispatch: Dispatch, job_type: int, member: Member) -> list[Launch]:
    """One job per participant per dispatch and job type; agents never trigger agent jobs."""
    if member.dependent:
        return []
    seen = dispatch.publishers if job_type == agent.JT_PUBLISHER else dispatch.participants
    if member.sid in seen:
        return []
    seen.add(member.sid)
    return [Launch(dispatch, job_type, member)]
