"""Twirp ``livekit.AgentDispatchService`` handlers, and CreateRoom's ``agents``
(docs/protocol/14-agents.md §2.3).

All three methods need ``roomAdmin`` for the request's room, as livekit-api signs them.
``CreateRoom`` is the RoomService handler, wrapped so that the ``agents`` of a request that
creates the room become that room's dispatches.
"""

from __future__ import annotations

from google.protobuf.message import Message
from livekit.protocol import agent_dispatch
from livekit.protocol import room as room_pb

from roomcast.agents.dispatcher import Dispatcher
from roomcast.agents.workers import validate_deployment
from roomcast.auth import Claims
from roomcast.config import Config
from roomcast.edge import roomservice
from roomcast.edge.roomservice import Method
from roomcast.errors import InvalidArgumentError, PermissionDeniedError
from roomcast.rooms.admin import RoomAdmin
from roomcast.rooms.manager import validate_room_name

AGENT_DISPATCH_SERVICE = "livekit.AgentDispatchService"
ROOM_SERVICE = "livekit.RoomService"


def _require_admin(claims: Claims, room: str) -> None:
    if not claims.video.is_admin_of(room):
        raise PermissionDeniedError()


def _check_dispatch_fields(config: Config, req: agent_dispatch.CreateAgentDispatchRequest) -> None:
    validate_room_name(req.room, config.limit)
    problem = validate_deployment(req.deployment)
    if problem is not None:
        raise InvalidArgumentError(problem)
    limits = config.limit
    if len(req.metadata.encode()) > limits.max_metadata_size:
        raise InvalidArgumentError(f"metadata is larger than {limits.max_metadata_size} bytes")
    size = sum(len(k.encode()) + len(v.encode()) for k, v in req.attributes.items())
    if size > limits.max_attributes_size:
        raise InvalidArgumentError(f"attributes are larger than {limits.max_attributes_size} bytes")


def twirp_services(config: Config, dispatcher: Dispatcher) -> dict[str, dict[str, Method]]:
    """Methods to serve, by Twirp service name (added to, or overriding, the RoomService ones)."""

    async def create_dispatch(
        admin: RoomAdmin, claims: Claims, req: agent_dispatch.CreateAgentDispatchRequest
    ) -> Message:
        _require_admin(claims, req.room)
        _check_dispatch_fields(config, req)
        dispatch = dispatcher.create_dispatch(
            req.room,
            req.agent_name,
            req.metadata,
            restart_policy=req.restart_policy,
            deployment=req.deployment,
            attributes=dict(req.attributes),
            auto_create=config.room.auto_create,
        )
        return dispatch.to_proto()

    async def delete_dispatch(
        admin: RoomAdmin, claims: Claims, req: agent_dispatch.DeleteAgentDispatchRequest
    ) -> Message:
        _require_admin(claims, req.room)
        if not req.dispatch_id:
            raise InvalidArgumentError("dispatch_id is required")
        return dispatcher.delete_dispatch(req.room, req.dispatch_id).to_proto()

    async def list_dispatch(
        admin: RoomAdmin, claims: Claims, req: agent_dispatch.ListAgentDispatchRequest
    ) -> Message:
        _require_admin(claims, req.room)
        dispatches = dispatcher.list_dispatches(req.room, req.dispatch_id)
        return agent_dispatch.ListAgentDispatchResponse(
            agent_dispatches=[d.to_proto() for d in dispatches]
        )

    async def create_room(
        admin: RoomAdmin, claims: Claims, req: room_pb.CreateRoomRequest
    ) -> Message:
        if not req.agents or admin.rooms.get(req.name) is not None:
            return await roomservice.create_room(admin, claims, req)
        dispatcher.preset_agents(req.name, list(req.agents))
        try:
            return await roomservice.create_room(admin, claims, req)
        finally:
            dispatcher.clear_preset(req.name)

    return {
        AGENT_DISPATCH_SERVICE: {
            "CreateDispatch": Method(agent_dispatch.CreateAgentDispatchRequest, create_dispatch),
            "DeleteDispatch": Method(agent_dispatch.DeleteAgentDispatchRequest, delete_dispatch),
            "ListDispatch": Method(agent_dispatch.ListAgentDispatchRequest, list_dispatch),
        },
        ROOM_SERVICE: {"CreateRoom": Method(room_pb.CreateRoomRequest, create_room)},
    }
