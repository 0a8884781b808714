"""What compare.py needs from a running relay, whichever it is."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from bench.sinks import Sink


class RelayUnavailable(Exception):
    """The relay cannot run on this machine (a missing compiler or library): the reason."""


@dataclass
class Relay:
    name: str
    pid: int  # the process whose CPU time is measured (with its children)
    send: Callable[[bytes], None]  # the publisher: plain RTP in, protected and sent here
    sinks: list[Sink]
    close: Callable[[], Awaitable[None]]
    # Periodic upkeep (RTCP receiver reports from subscribers), called about once a second.
    tick: Callable[[], None] = lambda: None
    notes: list[str] = field(default_factory=list)  # counters the relay reported at exit
