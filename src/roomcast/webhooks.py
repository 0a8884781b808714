"""Signed webhook delivery, ordered per room (docs/protocol/10-webhooks.md).

Each event is serialised once to proto3 JSON (camelCase, defaults omitted, int64 as strings),
hashed, signed into a JWT whose ``sha256`` claim covers those exact bytes, and POSTed with
``Authorization: <jwt>`` (no ``Bearer``). Events of one room go through one queue in order;
rooms are delivered in parallel. Retries follow go-retryablehttp's defaults as LiveKit uses them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

import aiohttp
from google.protobuf import json_format
from livekit.protocol import webhook

from roomcast.auth import body_sha256, create_token
from roomcast.ids import WEBHOOK_EVENT_PREFIX, new_sid
from roomcast.rooms.room import RoomEvent

log = logging.getLogger(__name__)

MAX_QUEUE_DEPTH = 200  # per room, as LiveKit's resource_url_notifier
MAX_EVENT_AGE = 30.0  # seconds; older events are dropped when their turn comes
MAX_ATTEMPTS = 5  # first try + 4 retries (go-retryablehttp RetryMax)
BACKOFF_MIN = 1.0
BACKOFF_MAX = 30.0
REQUEST_TIMEOUT = 10.0
TOKEN_TTL = 300


def serialize_event(event: webhook.WebhookEvent) -> bytes:
    """Proto3 JSON as Go's protojson writes it: camelCase, no defaults, int64 as strings."""
    as_dict = json_format.MessageToDict(event)
    return json.dumps(as_dict, separators=(",", ":")).encode()


def build_event(event: RoomEvent) -> webhook.WebhookEvent:
    message = webhook.WebhookEvent(
        event=event.name,
        room=event.room,
        id=new_sid(WEBHOOK_EVENT_PREFIX),
        created_at=int(event.created_at),
    )
    if event.participant is not None:
        message.participant.CopyFrom(event.participant)
    if event.track is not None:
        message.track.CopyFrom(event.track)
    if event.end_reason:
        message.room_end_reason = event.end_reason  # type: ignore[assignment]
    return message


def should_retry(status: int) -> bool:
    """go-retryablehttp's DefaultRetryPolicy: 429 and 5xx except 501."""
    return status == 429 or (status >= 500 and status != 501)


@dataclass(slots=True)
class _Queued:
    body: bytes
    name: str
    enqueued_at: float


class WebhookNotifier:
    def __init__(self, urls: Sequence[str], api_key: str, api_secret: str) -> None:
        self._urls = list(urls)
        self._api_key = api_key
        self._api_secret = api_secret
        self._queues: dict[str, deque[_Queued]] = {}
        self._workers: dict[str, asyncio.Task[None]] = {}
        self._session: aiohttp.ClientSession | None = None
        self.delivered = 0
        self.failed = 0
        self.dropped = 0

    @property
    def enabled(self) -> bool:
        return bool(self._urls)

    def notify(self, event: RoomEvent) -> None:
        """Queue a room event for delivery (never blocks; drops when the room's queue is full)."""
        if not self._urls:
            return
        key = event.room.name
        queue = self._queues.setdefault(key, deque())
        if len(queue) >= MAX_QUEUE_DEPTH:
            self.dropped += 1
            log.warning("webhook queue full, dropping %s", event.name, extra={"room": key})
            return
        body = serialize_event(build_event(event))
        queue.append(_Queued(body, event.name, time.monotonic()))
        worker = self._workers.get(key)
        if worker is None or worker.done():
            self._workers[key] = asyncio.get_running_loop().create_task(self._drain(key))

    async def _drain(self, key: str) -> None:
        queue = self._queues[key]
        while queue:
            item = queue[0]
            if time.monotonic() - item.enqueued_at > MAX_EVENT_AGE:
                self.dropped += 1
                log.warning("webhook %s too old, dropped", item.name, extra={"room": key})
            else:
                for url in self._urls:
                    await self._deliver(url, item)
            queue.popleft()
        self._queues.pop(key, None)
        self._workers.pop(key, None)

    async def _deliver(self, url: str, item: _Queued) -> None:
        token = create_token(
            self._api_key, self._api_secret, ttl_seconds=TOKEN_TTL, sha256=body_sha256(item.body)
        )
        headers = {
            "Content-Type": "application/webhook+json",
            "Authorization": token,
            "User-Agent": "LiveKit",
        }
        session = self._client()
        delay = BACKOFF_MIN
        for attempt in range(1, MAX_ATTEMPTS + 1):
            try:
                async with session.post(url, data=item.body, headers=headers) as response:
                    await response.read()
                    if 200 <= response.status < 300:
                        self.delivered += 1
                        return
                    if not should_retry(response.status):
                        break
                    failure = f"HTTP {response.status}"
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                failure = f"{type(exc).__name__}: {exc}"
            if attempt < MAX_ATTEMPTS:
                log.debug("webhook %s to %s failed (%s), retrying", item.name, url, failure)
                await asyncio.sleep(delay)
                delay = min(delay * 2, BACKOFF_MAX)
        self.failed += 1
        log.warning("webhook %s to %s failed", item.name, url)

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT)
            )
        return self._session

    async def close(self, flush_timeout: float) -> None:
        """Give queued events up to ``flush_timeout`` seconds, then stop."""
        pending = [w for w in self._workers.values() if not w.done()]
        if pending:
            _, late = await asyncio.wait(pending, timeout=flush_timeout)
            for worker in late:
                worker.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await worker
            if late:
                log.warning(
                    "webhook queue not flushed in %.1fs; %d rooms dropped", flush_timeout, len(late)
                )
        if self._session is not None:
            await self._session.close()
