"""``GET /agent``: the WebSocket that livekit-agents workers register on
(docs/protocol/14-agents.md §1).

Frames are binary protobuf ``livekit.WorkerMessage`` in and ``livekit.ServerMessage`` out (a text
frame is read as proto JSON and answered in JSON, as livekit-server does). The token needs the
``agent`` grant and no identity. The first message must be ``register`` (a ``ping`` may come
before it) within ``REGISTER_TIMEOUT``; the answer is the first frame the worker gets.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import time

from aiohttp import WSMessage, WSMsgType, web
from google.protobuf import json_format
from google.protobuf.message import DecodeError
from livekit.protocol import agent, models

from roomcast import LIVEKIT_COMPATIBLE_VERSION, PROTOCOL_VERSION, __version__
from roomcast.agents.dispatcher import Dispatcher
from roomcast.agents.jobs import JOB_TYPE_NAMES, WORKER_PREFIX
from roomcast.agents.workers import Worker, WorkerRegistry, validate_register
from roomcast.auth import AuthError, TokenVerifier
from roomcast.edge.api import bearer_token
from roomcast.edge.offload import decode_off_loop
from roomcast.ids import new_sid

log = logging.getLogger(__name__)

AGENT_PROTOCOL = 1  # livekit-server's agent.CurrentProtocol
REGISTER_TIMEOUT = 10.0
WS_HEARTBEAT = 10.0  # our pings find dead workers; the SDK pings too (aiohttp, every 30 s)
CLOSE_NORMAL = 1000
CLOSE_INVALID_PAYLOAD = 1007
CLOSE_POLICY = 1008


def agent_server_info(region: str, node_id: str) -> models.ServerInfo:
    """The ``server_info`` of the ``register`` answer."""
    return models.ServerInfo(
        edition=models.ServerInfo.Edition.Standard,
        version=LIVEKIT_COMPATIBLE_VERSION,
        protocol=PROTOCOL_VERSION,
        agent_protocol=AGENT_PROTOCOL,
        region=region,
        node_id=node_id,
        debug_info=f"roomcast {__version__}",
    )


def pong(ping: agent.WorkerPing) -> agent.ServerMessage:
    return agent.ServerMessage(
        pong=agent.WorkerPong(last_timestamp=ping.timestamp, timestamp=int(time.time() * 1000))
    )


def _decode(frame: WSMessage) -> tuple[agent.WorkerMessage, bool] | None:
    """(message, sent as JSON) for a data frame; None for other frame types."""
    decoded = agent.WorkerMessage()
    if frame.type == WSMsgType.BINARY:
        decoded.ParseFromString(frame.data)
        return decoded, False
    if frame.type == WSMsgType.TEXT:
        json_format.Parse(frame.data, decoded, ignore_unknown_fields=True)
        return decoded, True
    return None


async def _decode_off_loop(frame: WSMessage) -> tuple[agent.WorkerMessage, bool] | None:
    """``_decode``, on the decoding thread for a large frame (edge/offload.py)."""
    size = len(frame.data) if isinstance(frame.data, bytes | str) else 0
    return await decode_off_loop(size, functools.partial(_decode, frame))


_DECODE_ERRORS = (DecodeError, RuntimeError, json_format.ParseError, ValueError, RecursionError)


class WorkerEndpoint:
    def __init__(
        self,
        verifier: TokenVerifier,
        registry: WorkerRegistry,
        dispatcher: Dispatcher,
        server_info: models.ServerInfo,
        max_frame: int,
    ) -> None:
        self._verifier = verifier
        self._registry = registry
        self._dispatcher = dispatcher
        self._server_info = server_info
        self._max_frame = max_frame
        self._sockets: set[web.WebSocketResponse] = set()
        self.register_timeout = REGISTER_TIMEOUT

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get("/agent", self.handle)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        if request.headers.get("Upgrade", "").lower() != "websocket":
            return web.Response(status=404, text="not found")
        header = request.headers.get("Authorization")
        if header is not None and header[:7].lower() != "bearer ":
            return web.Response(
                status=401, text="invalid authorization header. Must start with Bearer "
            )
        try:
            claims = self._verifier.verify(bearer_token(request))
        except AuthError as exc:
            return web.Response(status=401, text=f"invalid authorization token: {exc}")
        if not claims.video.agent:
            return web.Response(status=401, text="permissions denied")
        ws = web.WebSocketResponse(
            heartbeat=WS_HEARTBEAT, max_msg_size=self._max_frame, autoping=True
        )
        await ws.prepare(request)
        self._sockets.add(ws)
        try:
            await self._serve(ws, request, claims.api_key)
        finally:
            self._sockets.discard(ws)
            if not ws.closed:
                with contextlib.suppress(Exception):
                    await ws.close()
        return ws

    async def _serve(self, ws: web.WebSocketResponse, request: web.Request, api_key: str) -> None:
        first = await self._await_register(ws)
        if first is None:
            return
        register, json_mode = first
        problem = validate_register(register)
        if problem is not None:
            log.info("worker registration refused: %s", problem, extra={"remote": request.remote})
            await ws.close(code=CLOSE_POLICY, message=problem.encode()[:120])
            return
        try:
            protocol = int(request.query.get("protocol", "0"))
        except ValueError:
            protocol = 0
        worker = Worker(
            new_sid(WORKER_PREFIX),
            ws,
            api_key,
            register,
            remote=request.remote or "",
            protocol=protocol,
            json_mode=json_mode,
        )
        worker.send(
            agent.ServerMessage(
                register=agent.RegisterWorkerResponse(
                    worker_id=worker.id, server_info=self._server_info
                )
            )
        )
        self._registry.add(worker)
        log.info(
            "worker registered",
            extra={
                "worker_id": worker.id,
                "agent_name": worker.agent_name,
                "job_type": JOB_TYPE_NAMES.get(worker.job_type),
                "version": worker.version,
                "remote": worker.remote,
            },
        )
        try:
            await self._read_loop(ws, worker)
        finally:
            self._registry.remove(worker)
            self._dispatcher.worker_left(worker)
            await worker.close()
            log.info(
                "worker disconnected",
                extra={"worker_id": worker.id, "agent_name": worker.agent_name},
            )

    async def _await_register(
        self, ws: web.WebSocketResponse
    ) -> tuple[agent.RegisterWorkerRequest, bool] | None:
        """The ``register`` request (pings before it are answered), or None to hang up."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.register_timeout
        while True:
            remaining = deadline - loop.time()
            try:
                if remaining <= 0:
                    raise TimeoutError
                frame = await ws.receive(timeout=remaining)
            except TimeoutError:
                log.info("worker did not register in time, closing")
                await ws.close(code=CLOSE_POLICY, message=b"register timeout")
                return None
            if frame.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED):
                return None
            if frame.type == WSMsgType.ERROR:
                return None
            try:
                decoded = await _decode_off_loop(frame)
            except _DECODE_ERRORS as exc:
                await ws.close(
                    code=CLOSE_INVALID_PAYLOAD, message=f"invalid message: {exc}".encode()[:120]
                )
                return None
            if decoded is None:
                continue
            message, json_mode = decoded
            which = message.WhichOneof("message")
            if which == "register":
                return message.register, json_mode
            if which == "ping":
                reply = pong(message.ping)
                if json_mode:
                    await ws.send_str(json.dumps(json_format.MessageToDict(reply)))
                else:
                    await ws.send_bytes(reply.SerializeToString())
                continue
            log.info("worker sent %s before registering, closing", which)
            await ws.close(code=CLOSE_POLICY, message=b"register first")
            return None

    async def _read_loop(self, ws: web.WebSocketResponse, worker: Worker) -> None:
        async for frame in ws:
            if frame.type == WSMsgType.ERROR:
                log.debug("worker websocket error: %s", ws.exception())
                return
            try:
                decoded = await _decode_off_loop(frame)
            except _DECODE_ERRORS as exc:
                await worker.close(CLOSE_INVALID_PAYLOAD, f"invalid WorkerMessage: {exc}")
                return
            if decoded is None:
                continue
            message, worker.json_mode = decoded
            try:
                self._handle(worker, message)
            except Exception:
                log.exception("worker message failed", extra={"worker_id": worker.id})

    def _handle(self, worker: Worker, message: agent.WorkerMessage) -> None:
        which = message.WhichOneof("message")
        if which == "availability":
            if not worker.answer(message.availability):
                log.debug(
                    "availability answer for no pending offer",
                    extra={"worker_id": worker.id, "job_id": message.availability.job_id},
                )
        elif which == "update_worker":
            worker.update(message.update_worker)
        elif which == "update_job":
            self._dispatcher.job_update(worker, message.update_job)
        elif which == "ping":
            worker.send(pong(message.ping))
        elif which == "simulate_job":
            self._dispatcher.simulate(worker, message.simulate_job)
        elif which == "migrate_job":
            log.debug("migrate_job ignored", extra={"worker_id": worker.id})
        elif which == "register":
            log.debug("second register ignored", extra={"worker_id": worker.id})

    async def close_all(self) -> None:
        for ws in list(self._sockets):
            with contextlib.suppress(Exception):
                await ws.close(code=CLOSE_NORMAL)
