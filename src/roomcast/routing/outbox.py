"""Messages waiting for other nodes' streams, and how much of ours each stream still holds.

The node bus's writer (routing/bus.py) takes batches from here, writes them with XADD, and
reports each stream's length (XLEN) afterwards. A stream's reader trims what it has read, so
its length is what is still unread, and this node's unread entries are at most the newest
``min(length, entries we wrote)`` of ours. That is the backpressure: while our unread entries
in a stream exceed ``stream_max_entries`` or ``stream_max_bytes``, its messages wait here (a
slow reader is not flooded, and a burst is never cut by the stream's MAXLEN), and past
``max_bytes`` in all the oldest waiting message of the longest queue is dropped (``on_drop``).

No I/O and no clock: the bus feeds it what happened.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class _Stream:
    waiting: deque[bytes] = field(default_factory=deque)
    waiting_bytes: int = 0
    sending: list[bytes] = field(default_factory=list)  # taken by the writer, not yet written
    unread: deque[int] = field(default_factory=deque)  # sizes of our entries maybe unread
    unread_bytes: int = 0


class Outbox:
    def __init__(
        self,
        max_bytes: int,
        stream_max_entries: int,
        stream_max_bytes: int,
        on_drop: Callable[[], None],
    ) -> None:
        self.max_bytes = max_bytes
        self.stream_max_entries = stream_max_entries
        self.stream_max_bytes = stream_max_bytes
        self._on_drop = on_drop
        self._streams: dict[str, _Stream] = {}
        self.bytes = 0  # waiting and being sent

    @property
    def empty(self) -> bool:
        return not any(s.waiting or s.sending for s in self._streams.values())

    def add(self, stream: str, data: bytes) -> None:
        """Queue one message (order kept per stream); drop old ones past ``max_bytes``."""
        queue = self._streams.setdefault(stream, _Stream())
        queue.waiting.append(data)
        queue.waiting_bytes += len(data)
        self.bytes += len(data)
        while self.bytes > self.max_bytes:
            longest = max(self._streams.values(), key=lambda s: s.waiting_bytes)
            if not longest.waiting:
                break  # all in flight to Redis right now
            dropped = longest.waiting.popleft()
            longest.waiting_bytes -= len(dropped)
            self.bytes -= len(dropped)
            self._on_drop()

    def take(self, limit: int) -> list[tuple[str, bytes]]:
        """Up to ``limit`` messages that may be written now, in order within each stream."""
        batch: list[tuple[str, bytes]] = []
        for name, queue in self._streams.items():
            entries, size = len(queue.unread), queue.unread_bytes
            while queue.waiting and len(batch) < limit:
                data = queue.waiting[0]
                if entries and (
                    entries >= self.stream_max_entries or size + len(data) > self.stream_max_bytes
                ):
                    break  # the reader is behind: wait (one message always fits an empty stream)
                queue.waiting.popleft()
                queue.waiting_bytes -= len(data)
                queue.sending.append(data)
                batch.append((name, data))
                entries, size = entries + 1, size + len(data)
        return batch

    def blocked(self) -> list[str]:
        """Streams with messages waiting only because their reader is behind."""
        return [n for n, q in self._streams.items() if q.waiting and not q.sending]

    def written(self, lengths: dict[str, int]) -> None:
        """The last ``take()`` is in the streams, whose lengths are now ``lengths``."""
        for queue in self._streams.values():
            for data in queue.sending:
                queue.unread.append(len(data))
                queue.unread_bytes += len(data)
                self.bytes -= len(data)
            queue.sending.clear()
        self.lengths(lengths)

    def failed(self) -> None:
        """The last ``take()`` was not written: it goes back first in line."""
        for queue in self._streams.values():
            queue.waiting.extendleft(reversed(queue.sending))
            queue.waiting_bytes += sum(len(data) for data in queue.sending)
            queue.sending.clear()

    def lengths(self, lengths: dict[str, int]) -> None:
        """Streams' current lengths: entries beyond them have been read."""
        for name, length in lengths.items():
            queue = self._streams.get(name)
            if queue is None:
                continue
            while len(queue.unread) > length:
                queue.unread_bytes -= queue.unread.popleft()
            if not (queue.waiting or queue.sending or queue.unread):
                del self._streams[name]

    def forget(self, stream: str) -> None:
        """Its reader is gone for good: drop what waits for it."""
        queue = self._streams.get(stream)
        if queue is not None and not queue.sending:
            self.bytes -= queue.waiting_bytes
            del self._streams[stream]
