"""AgentService: the agents feature as the server holds it (docs/protocol/14-agents.md).

It owns the worker registry and the dispatcher; the server gives it every RoomEvent
(``on_room_event``), and the edge serves the ``/agent`` WebSocket (``edge/agent_endpoint.py``)
and the AgentDispatchService (``edge/agent_dispatch_service.py``) over them. ``workers()``,
``jobs()`` and ``dispatches()`` are read-only views for dashboards and tests.
"""

from __future__ import annotations

from livekit.protocol import agent, agent_dispatch

from roomcast.agents.dispatcher import Dispatcher
from roomcast.agents.workers import WorkerRegistry, WorkerSnapshot
from roomcast.auth import TokenVerifier
from roomcast.rooms.admin import RoomAdmin
from roomcast.rooms.room import RoomEvent


class AgentService:
    def __init__(self, verifier: TokenVerifier, admin: RoomAdmin) -> None:
        self.registry = WorkerRegistry()
        self.dispatcher = Dispatcher(admin, self.registry, verifier)

    def on_room_event(self, event: RoomEvent) -> None:
        self.dispatcher.on_room_event(event)

    # -- read-only views ----------------------------------------------------------------------
    def workers(self) -> list[WorkerSnapshot]:
        """Registered workers, oldest first."""
        return [worker.snapshot() for worker in self.registry.all()]

    def jobs(self, room: str = "", *, active: bool = False) -> list[agent.Job]:
        """Jobs (copies, with their current state), oldest first; recent ended ones included
        unless ``active``."""
        return [
            record.to_proto()
            for record in self.dispatcher.jobs()
            if (not room or record.job.room.name == room) and not (active and record.ended)
        ]

    def dispatches(self, room: str) -> list[agent_dispatch.AgentDispatch]:
        """A live room's dispatches, with their jobs."""
        return [dispatch.to_proto() for dispatch in self.dispatcher.dispatches(room)]

    async def close(self) -> None:
        """Stop offering jobs (the workers' sockets are the edge's to close)."""
        await self.dispatcher.close()
