"""Node-to-node messages over Redis streams: ordered one-way messages and request/response.

Each node reads its own stream ``roomcast:node:<id>`` (XREAD from the last id it saw, so a
reader that reconnects misses nothing the stream still holds, unlike pub/sub). Messages are
small JSON objects (binary payloads such as SignalRequest/SignalResponse protobufs travel
base64-encoded); ``t`` names the kind.

Redis holds a message only until its reader has it: the reader trims what it has read (XTRIM
MINID, one reader per stream). A writer keeps at most ``STREAM_MAX_ENTRIES`` and
``STREAM_MAX_BYTES`` of its own unread messages in a stream; beyond that, messages wait in its
outbox (routing/outbox.py, bounded in bytes) until the reader catches up, so a stalled reader
costs Redis little and a burst is delayed, not cut. A stream expires when its node stops
reading, so a dead node's stream goes away. Messages over ``MAX_MESSAGE_BYTES`` are refused.

Order matters for signalling relay: every message this node sends goes through one queue and
one writer task, and a stream keeps the order of its entries. Both loops survive a Redis
restart: they retry until it is back.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from roomcast.routing.outbox import Outbox

log = logging.getLogger(__name__)

CHANNEL_PREFIX = "roomcast:node:"
# Per writer and stream: its messages the reader has not read yet. Past either, the writer
# waits (checking the stream's length every BACKPRESSURE_POLL seconds).
STREAM_MAX_ENTRIES = 1000
STREAM_MAX_BYTES = 8 * 1024 * 1024
BACKPRESSURE_POLL = 0.005
# A backstop for writers that do not hold back (approximate trim); never reached otherwise,
# as it would cut messages a slow reader has not read.
STREAM_MAXLEN = 10_000
STREAM_TTL = 30  # seconds a stream outlives its last reader/writer activity
READ_BLOCK_MS = 1000
READ_COUNT = 100  # entries per XREAD: bounds one reply to READ_COUNT * MAX_MESSAGE_BYTES
WRITE_BATCH = 256  # XADDs per pipeline
RETRY_DELAY = 0.5  # seconds between attempts while Redis is unreachable
# Encoded messages waiting (Redis unreachable, or readers behind); the oldest are dropped past
# this, from the longest queue.
OUTBOX_MAX_BYTES = 64 * 1024 * 1024
# One encoded message, whatever it carries: larger ones are refused when published and
# dropped unparsed when read. Relayed SignalRequests have a tighter bound (routing/relay.py).
MAX_MESSAGE_BYTES = 4 * 1024 * 1024

Message = dict[str, Any]
Handler = Callable[[Message], None]
RpcHandler = Callable[[Message], Awaitable[Message]]
LimitCounter = Callable[[str], None]  # called with the name of the limit that was hit


def _ignore_limit(limit: str) -> None:
    pass


class BusError(Exception):
    """A request to another node failed (timeout, node gone, or its handler raised)."""


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def unb64(text: str) -> bytes:
    return base64.b64decode(text, validate=True)


def channel_of(node_id: str) -> str:
    return CHANNEL_PREFIX + node_id


def after(entry_id: str) -> str:
    """The smallest stream id greater than ``entry_id`` (``ms-seq``): XTRIM MINID's bound."""
    ms, _, seq = entry_id.partition("-")
    return f"{ms}-{int(seq or 0) + 1}"


class NodeBus:
    def __init__(
        self, client: aioredis.Redis, node_id: str, count_limit_hit: LimitCounter = _ignore_limit
    ) -> None:
        self._client = client
        self.node_id = node_id
        self.count_limit_hit = count_limit_hit
        self._handlers: dict[str, Handler] = {}
        self._rpc_handlers: dict[str, RpcHandler] = {}
        self._outbox = Outbox(
            OUTBOX_MAX_BYTES, STREAM_MAX_ENTRIES, STREAM_MAX_BYTES, self._outbox_dropped
        )
        self._outbox_overflowing = False  # logged once per outage, not once per message
        self._oversized_kinds: set[str] = set()  # logged once per kind
        self._outbox_ready = asyncio.Event()
        self._pending: dict[str, asyncio.Future[Message]] = {}
        self._ids = itertools.count(1)
        self._tasks: list[asyncio.Task[None]] = []
        self._rpc_tasks: set[asyncio.Task[None]] = set()
        self.subscribed = asyncio.Event()
        self._drained = asyncio.Event()  # set whenever the outbox is empty
        self._closing = False

    # -- registration -------------------------------------------------------------------------
    def on(self, kind: str, handler: Handler) -> None:
        """Handle one-way messages of ``kind``, called in arrival order (never concurrently)."""
        self._handlers[kind] = handler

    def on_request(self, kind: str, handler: RpcHandler) -> None:
        """Answer requests of ``kind``; the handler's result (a dict) is the reply."""
        self._rpc_handlers[kind] = handler

    # -- lifecycle ----------------------------------------------------------------------------
    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._read_loop()), loop.create_task(self._write_loop())]
        await asyncio.wait_for(self.subscribed.wait(), timeout=10)

    async def close(self, flush_timeout: float = 2.0) -> None:
        """Deliver what is queued (within ``flush_timeout``), then stop."""
        if not self._outbox.empty:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._drained.wait(), flush_timeout)
        self._closing = True
        tasks = [*self._tasks, *self._rpc_tasks]
        for task in tasks:
            task.cancel()
        if tasks:
            # asyncio.wait: a task that is slow to stop (a Redis call finishing its blocking
            # read) is left behind after the timeout, and our own cancellation still works.
            _, pending = await asyncio.wait(tasks, timeout=flush_timeout)
            if pending:
                log.debug("bus: %d task(s) still stopping at close", len(pending))
        for future in self._pending.values():
            if not future.done():
                future.set_exception(BusError("node shutting down"))

    # -- sending ------------------------------------------------------------------------------
    def publish(self, node_id: str, message: Message) -> bool:
        """Queue a one-way message to a node; never blocks, order preserved.

        False if the message is over ``MAX_MESSAGE_BYTES``: it is not sent.
        """
        message["from"] = self.node_id
        data = json.dumps(message).encode()
        if len(data) > MAX_MESSAGE_BYTES:
            self.count_limit_hit("bus_message_size")
            kind = str(message.get("kind") or message.get("t"))
            if kind not in self._oversized_kinds:
                self._oversized_kinds.add(kind)
                log.warning(
                    "bus: not sending a %s message of %d bytes (limit %d)",
                    kind,
                    len(data),
                    MAX_MESSAGE_BYTES,
                )
            return False
        self._outbox.add(channel_of(node_id), data)
        self._drained.clear()
        self._outbox_ready.set()
        return True

    def forget(self, node_id: str) -> None:
        """The node is gone: drop the messages still waiting for it."""
        self._outbox.forget(channel_of(node_id))

    def _outbox_dropped(self) -> None:
        self.count_limit_hit("bus_outbox_bytes")
        if not self._outbox_overflowing:
            self._outbox_overflowing = True
            log.warning("bus outbox full (Redis or a node unreachable): dropping old messages")

    async def request(self, node_id: str, kind: str, body: Message, timeout: float) -> Message:
        """Send a request to a node and wait for its reply (``BusError`` on failure)."""
        request_id = f"{self.node_id}-{next(self._ids)}"
        message = {"t": "rpc", "kind": kind, "id": request_id, "body": body}
        if not self.publish(node_id, message):
            raise BusError(f"{kind} request too large for the node bus")
        future: asyncio.Future[Message] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = future
        try:
            async with asyncio.timeout(timeout):
                reply = await future
        except TimeoutError as exc:
            raise BusError(f"node {node_id} did not answer {kind} within {timeout} s") from exc
        finally:
            self._pending.pop(request_id, None)
        if "error" in reply:
            raise BusError(str(reply["error"]))
        body = reply.get("body", {})
        return body if isinstance(body, dict) else {}

    # -- loops --------------------------------------------------------------------------------
    async def _write_loop(self) -> None:
        while True:
            await self._outbox_ready.wait()
            self._outbox_ready.clear()
            while not self._outbox.empty:
                batch = self._outbox.take(WRITE_BATCH)
                written = list(dict.fromkeys(stream for stream, _ in batch))
                waiting = [s for s in self._outbox.blocked() if s not in written]
                try:
                    async with self._client.pipeline(transaction=False) as pipe:
                        for stream, data in batch:
                            pipe.xadd(stream, {"m": data}, maxlen=STREAM_MAXLEN, approximate=True)
                        for stream in written:
                            pipe.expire(stream, STREAM_TTL)
                        for stream in (*written, *waiting):
                            pipe.xlen(stream)
                        replies = await pipe.execute()
                except (RedisError, OSError) as exc:
                    self._outbox.failed()
                    log.warning("bus publish failed, retrying: %s", exc)
                    await asyncio.sleep(RETRY_DELAY)
                    continue
                checked = (*written, *waiting)
                lengths = dict(zip(checked, replies[len(replies) - len(checked) :], strict=True))
                self._outbox.written(lengths)
                if not batch:
                    await asyncio.sleep(BACKPRESSURE_POLL)  # every reader we wait for is behind
            self._outbox_overflowing = False
            self._drained.set()

    async def _read_loop(self) -> None:
        stream = channel_of(self.node_id)
        last_id = "$"  # only what arrives from now on
        trimmed_to = ""  # the last id already trimmed away
        while not self._closing:
            try:
                if last_id == "$":
                    # Pin the starting point, so messages sent while we connect are not missed.
                    info: Any = (
                        await self._client.xinfo_stream(stream)
                        if await self._client.exists(stream)
                        else None
                    )
                    last_id = trimmed_to = info["last-generated-id"].decode() if info else "0-0"
                self.subscribed.set()
                while not self._closing:
                    # One round trip: forget what was handled, stay alive, wait for more.
                    async with self._client.pipeline(transaction=False) as pipe:
                        if last_id != trimmed_to:
                            pipe.xtrim(stream, minid=after(last_id), approximate=False)
                        pipe.expire(stream, STREAM_TTL)
                        pipe.xread({stream: last_id}, count=READ_COUNT, block=READ_BLOCK_MS)
                        replies = await pipe.execute()
                    trimmed_to = last_id
                    result: Any = replies[-1]
                    for _, entries in result or []:
                        for entry_id, fields in entries:
                            last_id = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
                            self._dispatch(fields.get(b"m"))
            except (RedisError, OSError) as exc:
                if self._closing:
                    return  # the client may turn our cancellation into a connection error
                log.warning("bus read failed, retrying: %s", exc)
            await asyncio.sleep(RETRY_DELAY)

    def _dispatch(self, data: object) -> None:
        if not isinstance(data, bytes) or len(data) > MAX_MESSAGE_BYTES:
            return  # never published by a node of ours
        try:
            message = json.loads(data)
        except ValueError:
            log.warning("bus: dropping a message that is not JSON")
            return
        if not isinstance(message, dict):
            return
        kind = message.get("t")
        try:
            if kind == "rpc":
                self._start_rpc(message)
            elif kind == "reply":
                future = self._pending.get(str(message.get("id")))
                if future is not None and not future.done():
                    future.set_result(message)
            elif isinstance(kind, str) and kind in self._handlers:
                self._handlers[kind](message)
        except Exception:  # one bad message must not stop the bus
            log.exception("bus: handling %s failed", kind)

    def _start_rpc(self, message: Message) -> None:
        task = asyncio.get_running_loop().create_task(self._answer(message))
        self._rpc_tasks.add(task)
        task.add_done_callback(self._rpc_tasks.discard)

    async def _answer(self, message: Message) -> None:
        sender = str(message.get("from", ""))
        reply: Message = {"t": "reply", "id": message.get("id")}
        handler = self._rpc_handlers.get(str(message.get("kind")))
        if handler is None:
            reply["error"] = f"unknown request {message.get('kind')!r}"
        else:
            try:
                reply["body"] = await handler(message.get("body") or {})
            except Exception as exc:
                log.exception("bus: request %s failed", message.get("kind"))
                reply["error"] = f"{type(exc).__name__}: {exc}"
        if sender and not self.publish(sender, reply):
            # Too large to send: the caller gets an error now rather than a timeout.
            too_large = f"reply to {message.get('kind')!r} too large for the node bus"
            self.publish(sender, {"t": "reply", "id": message.get("id"), "error": too_large})
