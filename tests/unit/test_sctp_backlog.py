"""Send-side data-channel limits (media/sctp_backlog.py; security review M6: a subscriber that
stops acknowledging made the server keep every reliable message sent to it)."""

from __future__ import annotations

import gc
import sys

from roomcast.media.sctp_backlog import (
    LOSSY_BACKLOG,
    RELIABLE_BACKLOG,
    SLOW_READER_BACKLOG,
    SendBacklog,
    SendDecision,
)

from .sctp_pair import SctpPair

SEND, DROP, DISCONNECT = SendDecision.SEND, SendDecision.DROP, SendDecision.DISCONNECT


def test_lossy_is_dropped_above_its_backlog() -> None:
    backlog = SendBacklog()
    assert backlog.decide(reliable=False, size=100, buffered=LOSSY_BACKLOG, now=0) is SEND
    assert backlog.decide(reliable=False, size=100, buffered=LOSSY_BACKLOG + 1, now=0) is DROP


def test_reliable_disconnects_above_its_backlog() -> None:
    backlog = SendBacklog()
    assert backlog.decide(reliable=True, size=10, buffered=RELIABLE_BACKLOG - 10, now=0) is SEND
    assert (
        backlog.decide(reliable=True, size=11, buffered=RELIABLE_BACKLOG - 10, now=0) is DISCONNECT
    )


def test_slow_threshold_drops_for_a_slow_reader_only() -> None:
    """rtc.datachannel_slow_threshold (bits/s): behind and draining slower → dropped."""
    slow = SendBacklog(slow_threshold_bps=1_000_000)  # 125,000 bytes/s
    behind = SLOW_READER_BACKLOG + 100_000
    slow.sent(behind)
    # Unknown rate (no history yet): not called slow.
    assert slow.decide(reliable=True, size=100, buffered=behind, now=0.0) is SEND
    for tick in range(1, 9):  # drains 10,000 bytes/s: slow
        drained = 10_000 * tick // 4
        decision = slow.decide(reliable=True, size=100, buffered=behind - drained, now=tick / 4)
    assert slow.drain_rate() is not None and slow.drain_rate() < 125_000  # type: ignore[operator]
    assert decision is DROP
    fast = SendBacklog(slow_threshold_bps=1_000_000)
    for tick in range(0, 9):  # drains 1 MB/s but the room sends as fast: behind, not slow
        now = tick / 4
        fast.sent(250_000)
        decision = fast.decide(reliable=True, size=100, buffered=behind, now=now)
    assert decision is SEND
    assert fast.decide(reliable=True, size=100, buffered=SLOW_READER_BACKLOG, now=3) is SEND


async def test_a_subscriber_that_never_acknowledges_is_disconnected() -> None:
    """Through the adapter: the client stops reading (no SACK ever), the server keeps sending
    reliable messages. The backlog stays bounded and the association is aborted."""
    pair = SctpPair()
    await pair.connect()
    pair.client_reads = False
    message = b"r" * 15_000
    sent = 0
    highest = 0
    while pair.server.send("_reliable", message):
        sent += 1
        await pair.exchange(rounds=1)
        highest = max(highest, pair.server.buffered)
        assert sent < 1000, "never disconnected"
    assert highest <= RELIABLE_BACKLOG
    await pair.exchange()
    assert pair.server.aborted == "reliable_backlog"
    assert pair.server_side.limits == [("reliable_backlog", True)]
    assert pair.server.send("_lossy", b"x") is False


async def test_an_aborted_association_holds_none_of_its_messages() -> None:
    """The backlog of a peer that never acknowledged is freed with the abort, not at the next
    full garbage collection (aiortc's closed objects refer to each other): in bench/hostile a
    node grew by ~15 MiB a minute under the never-acknowledging subscriber attack."""
    pair = SctpPair()
    await pair.connect()
    pair.client_reads = False
    message = bytes(15_000)
    ours = sys.getrefcount(message)
    most = ours
    gc.disable()  # only reference counting may free them
    try:
        while pair.server.send("_reliable", message):
            await pair.exchange(rounds=1)
            most = max(most, sys.getrefcount(message))
        await pair.exchange()
        assert pair.server.aborted == "reliable_backlog"
        assert most > ours + 100  # queued, many times over
        assert sys.getrefcount(message) == ours
    finally:
        gc.enable()


async def test_lossy_messages_are_dropped_for_a_reader_that_is_behind() -> None:
    pair = SctpPair()
    await pair.connect()
    pair.client_reads = False
    results = [pair.server.send("_lossy", b"l" * 1000) for _ in range(200)]
    await pair.exchange()
    assert results.count(False) > 100
    assert pair.server.buffered <= LOSSY_BACKLOG + 1000
    assert pair.server.aborted is None
    assert ("lossy_backlog", False) in pair.server_side.limits
    assert pair.server.send("_reliable", b"still fine") is True


async def test_with_a_slow_threshold_a_slow_reader_loses_messages_instead() -> None:
    """rtc.datachannel_slow_threshold set: livekit-server's behaviour, drop for a slow reader."""
    pair = SctpPair(backlog=SendBacklog(slow_threshold_bps=100_000))
    await pair.connect()
    pair.client_reads = False
    results = []
    for _ in range(400):
        results.append(pair.server.send("_reliable", b"r" * 15_000))
        pair.now += 0.05
        await pair.exchange(rounds=1)
    assert pair.server.aborted is None
    assert results.count(False) > 200
    assert ("reliable_slow_reader", False) in pair.server_side.limits
    assert pair.server.buffered < RELIABLE_BACKLOG // 4  # drops began once the rate was known


def test_the_livekit_key_is_read() -> None:
    from roomcast.config import Overrides, load_config

    body = "keys:\n  k: a-secret-long-enough\nrtc:\n  datachannel_slow_threshold: 2000000\n"
    config = load_config(Overrides(config_body=body), environ={})
    assert config.rtc.datachannel_slow_threshold == 2_000_000
