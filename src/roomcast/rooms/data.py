"""Data packets: stamping and routing of client packets, and server-initiated RPC
(docs/protocol/06-data-packets.md).

The kind of a packet is the channel it arrived on, never its (deprecated) ``kind`` field: the
Rust SDK writes that field inverted (docs/protocol/15-interop-findings.md §2). The sender's SID and
identity are always stamped by the server; browsers leave them empty.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from dataclasses import dataclass, field

from google.protobuf.message import DecodeError
from livekit.protocol import models

from roomcast.errors import (
    DeadlineExceededError,
    InvalidArgumentError,
    RoomcastError,
    UnavailableError,
)
from roomcast.rooms.participant import Participant, State
from roomcast.rooms.room import Room

log = logging.getLogger(__name__)

RELIABLE_LABEL = "_reliable"
LOSSY_LABEL = "_lossy"
DATA_TRACK_LABEL = "_data_track"
MAX_DATA_PACKET = 256 * 1024  # our SCTP max-message-size

RPC_ACK_TIMEOUT = 2.0  # seconds (docs/protocol/06-data-packets.md §6.4)
RPC_DEFAULT_RESPONSE_TIMEOUT_MS = 10_000
RPC_MAX_PAYLOAD = 15 * 1024
# RpcError codes (docs/protocol/06-data-packets.md §6.4)
RPC_CONNECTION_TIMEOUT = 1501
RPC_RESPONSE_TIMEOUT = 1502
RPC_RECIPIENT_DISCONNECTED = 1503


class RpcFailedError(RoomcastError):
    """The callee answered with an RpcError; surfaced as a Twirp error carrying its code."""

    code = "unknown"

    def __init__(self, rpc_code: int, message: str, data: str = "") -> None:
        super().__init__(message)
        self.rpc_code = rpc_code
        self.data = data
        self.meta = {"rpc_code": str(rpc_code), "rpc_data": data}


@dataclass
class _PendingRpc:
    destination: Participant
    acked: asyncio.Event = field(default_factory=asyncio.Event)
    response: asyncio.Future[models.RpcResponse] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


class DataExchange:
    def __init__(self, max_packet_size: int = MAX_DATA_PACKET) -> None:
        self.max_packet_size = max_packet_size
        self._pending_rpcs: dict[str, _PendingRpc] = {}
        self.packets_in = 0
        self.packets_dropped = 0

    def handle_incoming(self, room: Room, sender: Participant, label: str, payload: bytes) -> None:
        """A DataPacket arrived on one of the sender's publisher-PC channels."""
        if label not in (RELIABLE_LABEL, LOSSY_LABEL):
            return  # not a DataPacket channel (`_data_track` goes to rooms/data_tracks.py)
        self.packets_in += 1
        if len(payload) > self.max_packet_size:
            self.packets_dropped += 1
            return
        if sender.state == State.DISCONNECTED or not sender.permission.can_publish_data:
            self.packets_dropped += 1
            return
        packet = models.DataPacket()
        try:
            packet.ParseFromString(payload)
        except (DecodeError, RuntimeError):
            self.packets_dropped += 1
            log.debug("undecodable data packet", extra={"identity": sender.identity})
            return
        reliable = label == RELIABLE_LABEL
        packet.kind = models.DataPacket.Kind.RELIABLE if reliable else models.DataPacket.Kind.LOSSY
        if reliable and packet.sequence > 0:
            # Duplicates after a resume (docs/protocol/06-data-packets.md §6.3 rule 3).
            if packet.sequence <= sender.last_data_sequence:
                return
            sender.last_data_sequence = packet.sequence
        if self._consume_rpc_reply(packet):
            return
        self.route(room, sender, packet, reliable)

    def route(
        self, room: Room, sender: Participant, packet: models.DataPacket, reliable: bool
    ) -> None:
        identity = "" if sender.hidden else sender.identity
        packet.participant_sid = sender.sid
        which = packet.WhichOneof("value")
        is_agent = sender.kind == models.ParticipantInfo.Kind.AGENT or sender.permission.agent
        keep_identity = False
        if which == "user":
            user = packet.user
            user.participant_sid = sender.sid
            user.participant_identity = identity
            if packet.destination_identities:
                del user.destination_identities[:]
                user.destination_identities.extend(packet.destination_identities)
            else:
                packet.destination_identities.extend(user.destination_identities)
        elif which == "transcription" and not is_agent:
            return  # only agents may publish transcriptions
        elif which in ("chat_message", "stream_header") and is_agent:
            keep_identity = bool(packet.participant_identity) and (
                packet.participant_identity != sender.identity
            )
            if which == "chat_message" and keep_identity:
                packet.chat_message.generated = True
        elif which == "metrics":
            return  # metrics aggregation is not implemented; never forwarded as data
        if not keep_identity:
            packet.participant_identity = identity
        room.deliver_data(packet, reliable, sender)

    # -- server-initiated RPC (RoomService.PerformRpc, docs/protocol/06-data-packets.md §6.6) ------
    def _consume_rpc_reply(self, packet: models.DataPacket) -> bool:
        which = packet.WhichOneof("value")
        if which == "rpc_ack":
            pending = self._pending_rpcs.get(packet.rpc_ack.request_id)
            if pending is not None:
                pending.acked.set()
                return True
        elif which == "rpc_response":
            pending = self._pending_rpcs.get(packet.rpc_response.request_id)
            if pending is not None:
                if not pending.response.done():
                    pending.response.set_result(packet.rpc_response)
                return True
        return False

    async def perform_rpc(
        self,
        destination: Participant,
        method: str,
        payload: str,
        response_timeout_ms: int,
    ) -> str:
        if len(payload.encode()) > RPC_MAX_PAYLOAD:
            raise InvalidArgumentError(f"payload is larger than {RPC_MAX_PAYLOAD} bytes")
        session = destination.session
        if session is None or destination.state == State.DISCONNECTED:
            raise UnavailableError("participant is not connected")
        timeout_ms = response_timeout_ms or RPC_DEFAULT_RESPONSE_TIMEOUT_MS
        request_id = str(uuid.uuid4())
        packet = models.DataPacket(
            kind=models.DataPacket.Kind.RELIABLE,
            participant_identity=request_id,
            destination_identities=[destination.identity],
            rpc_request=models.RpcRequest(
                id=request_id,
                method=method,
                payload=payload,
                response_timeout_ms=timeout_ms,
                version=1,
            ),
        )
        pending = _PendingRpc(destination)
        self._pending_rpcs[request_id] = pending
        try:
            if not session.send_data(packet.SerializeToString(), True):
                raise UnavailableError("participant's data channel is not open")
            try:
                await asyncio.wait_for(pending.acked.wait(), RPC_ACK_TIMEOUT)
            except TimeoutError as exc:
                raise DeadlineExceededError("rpc: connection timeout (no ack)") from exc
            try:
                response = await asyncio.wait_for(pending.response, timeout_ms / 1000)
            except TimeoutError as exc:
                raise DeadlineExceededError("rpc: response timeout") from exc
        finally:
            self._pending_rpcs.pop(request_id, None)
            if not pending.response.done():
                pending.response.cancel()
        if response.HasField("error"):
            error = response.error
            raise RpcFailedError(error.code, error.message, error.data)
        if response.HasField("compressed_payload"):
            raise RpcFailedError(1400, "compressed RPC payloads are not supported")
        return response.payload

    def cancel_rpcs_for(self, participant: Participant) -> None:
        for pending in self._pending_rpcs.values():
            if pending.destination is participant and not pending.response.done():
                error = models.RpcError(
                    code=RPC_RECIPIENT_DISCONNECTED, message="recipient disconnected"
                )
                with contextlib.suppress(asyncio.InvalidStateError):
                    pending.response.set_result(models.RpcResponse(error=error))
