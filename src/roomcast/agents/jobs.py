"""Jobs and dispatches: what the dispatcher records about agents in rooms
(docs/protocol/14-agents.md §2).

A *dispatch* (``AD_…``) asks for one agent by name in a room; it produces *jobs* (``AJ_…``),
each offered to one worker at a time until one accepts. The ``livekit.Job`` proto that was
offered is kept as the record's source of truth, its ``state`` updated as the worker reports.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from livekit.protocol import agent, agent_dispatch

from roomcast.ids import new_sid

WORKER_PREFIX = "AW_"
JOB_PREFIX = "AJ_"
DISPATCH_PREFIX = "AD_"

JobStatus = agent.JobStatus
ENDED_STATUSES = frozenset({agent.JS_SUCCESS, agent.JS_FAILED, agent.JS_CANCELLED})
JOB_TYPE_NAMES: dict[int, str] = {
    agent.JT_ROOM: "room",
    agent.JT_PUBLISHER: "publisher",
    agent.JT_PARTICIPANT: "participant",
}
JOB_STATUS_NAMES: dict[int, str] = {
    agent.JS_PENDING: "pending",
    agent.JS_RUNNING: "running",
    agent.JS_SUCCESS: "success",
    agent.JS_FAILED: "failed",
    agent.JS_CANCELLED: "cancelled",
}


def now_ns() -> int:
    return time.time_ns()


@dataclass(eq=False)
class JobRecord:
    """One job: the ``Job`` proto as offered, plus where it runs."""

    job: agent.Job
    room_sid: str = ""

    @property
    def id(self) -> str:
        return self.job.id

    @property
    def state(self) -> agent.JobState:
        return self.job.state

    @property
    def ended(self) -> bool:
        return self.job.state.status in ENDED_STATUSES

    @property
    def agent_identity(self) -> str:
        """The identity the agent joins the room with (known once a worker accepted)."""
        return self.job.state.participant_identity

    def set_status(self, status: int, error: str = "", reason: int = 0) -> bool:
        """Move to ``status``; returns False when the job had already ended."""
        if self.ended:
            return False
        state = self.job.state
        stamp = now_ns()
        state.status = status  # type: ignore[assignment]
        state.error = error
        if reason:
            state.reason = reason  # type: ignore[assignment]
        state.updated_at = stamp
        if status in ENDED_STATUSES:
            state.ended_at = stamp
        return True

    def to_proto(self) -> agent.Job:
        copy = agent.Job()
        copy.CopyFrom(self.job)
        return copy


@dataclass(eq=False)
class Dispatch:
    """An ``AgentDispatch`` of a room and the jobs it launched."""

    id: str
    agent_name: str
    room: str
    metadata: str = ""
    restart_policy: int = 0
    deployment: str = ""
    attributes: dict[str, str] = field(default_factory=dict)
    created_at: int = field(default_factory=now_ns)
    deleted_at: int = 0
    jobs: list[JobRecord] = field(default_factory=list)
    # Participants (by sid) that already got their PUBLISHER / PARTICIPANT job from this dispatch.
    publishers: set[str] = field(default_factory=set)
    participants: set[str] = field(default_factory=set)

    @classmethod
    def create(
        cls,
        room: str,
        agent_name: str = "",
        metadata: str = "",
        *,
        restart_policy: int = 0,
        deployment: str = "",
        attributes: dict[str, str] | None = None,
    ) -> Dispatch:
        return cls(
            id=new_sid(DISPATCH_PREFIX),
            agent_name=agent_name,
            room=room,
            metadata=metadata,
            restart_policy=restart_policy,
            deployment=deployment,
            attributes=dict(attributes or {}),
        )

    @classmethod
    def from_room_agent(cls, room: str, spec: agent_dispatch.RoomAgentDispatch) -> Dispatch:
        return cls.create(
            room,
            spec.agent_name,
            spec.metadata,
            restart_policy=spec.restart_policy,
            deployment=spec.deployment,
            attributes=dict(spec.attributes),
        )

    def to_proto(self) -> agent_dispatch.AgentDispatch:
        return agent_dispatch.AgentDispatch(
            id=self.id,
            agent_name=self.agent_name,
            room=self.room,
            metadata=self.metadata,
            restart_policy=self.restart_policy,  # type: ignore[arg-type]
            deployment=self.deployment,
            attributes=self.attributes,
            state=agent_dispatch.AgentDispatchState(
                jobs=[record.to_proto() for record in self.jobs],
                created_at=self.created_at,
                deleted_at=self.deleted_at,
            ),
        )
