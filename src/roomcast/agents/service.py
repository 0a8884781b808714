"""AgentService: the agents feature as the server wires it (reference 14).

It owns the worker registry, the dispatcher and the ``/agent`` endpoint; the server gives it
every RoomEvent (``on_room_event``) and serves its Twirp methods. ``workers()``, ``jobs()``
and ``dispatches()`` are read-only views for dashboards and tests.
"""

from __future__ import annotations

from aiohttp import web
from livekit.protocol import agent, agent_dispatch, models

from roomcast import LIVEKIT_COMPATIBLE_VERSION, PROTOCOL_VERSION, __version__
from roomcast.agents.dispatch_service import twirp_services
from roomcast.agents.dispatcher import Dispatcher
from roomcast.agents.endpoint import WorkerEndpoint
from roomcast.agents.workers import WorkerRegistry, WorkerSnapshot
from roomcast.auth import TokenVerifier
from roomcast.config import Config
from roomcast.edge.roomservice import Method
from roomcast.rooms.admin import RoomAdmin
from roomcast.rooms.room import RoomEvent

AGENT_PROTOCOL = 1  # livekit-server's agent.CurrentProtocol


class AgentService:
    def __init__(
        self, config: Config, verifier: TokenVerifier, admin: RoomAdmin, node_id: str
    ) -> None:
        self.config = config
        self.registry = WorkerRegistry()
        self.dispatcher = Dispatcher(admin, self.registry, verifier)
        server_info = models.ServerInfo(
            edition=models.ServerInfo.Edition.Standard,
            version=LIVEKIT_COMPATIBLE_VERSION,
            protocol=PROTOCOL_VERSION,
            agent_protocol=AGENT_PROTOCOL,
            region=config.region,
            node_id=node_id,
            debug_info=f"roomcast {__version__}",
        )
        self.endpoint = WorkerEndpoint(
            verifier,
            self.registry,
            self.dispatcher,
            server_info,
            config.limit.signal_message_size_limit,
        )

    def add_routes(self, app: web.Application) -> None:
        self.endpoint.add_routes(app)

    def twirp_services(self) -> dict[str, dict[str, Method]]:
        return twirp_services(self.config, self.dispatcher)

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
        """Stop offering jobs and hang up on every worker (their agents stay connected)."""
        await self.dispatcher.close()
        await self.endpoint.close_all()
