"""Waiting on an official-SDK `livekit.rtc.Room` without sleeping: for a participant, a track, a
data packet, a frame, or any event.

Each helper starts listening when it is *called* and returns an `asyncio.Future`, so a test can
start waiting before it acts and await afterwards, without missing a fast answer::

    reply = wait_for_data(alice, topic="chat")       # listening from here on
    await bob.local_participant.publish_data(b"hi", topic="chat")
    packet = await reply

Or simply ``await wait_for_participant(alice, "bob")`` when the thing may already be there:
helpers that wait for state (participants, tracks) resolve at once if it is present. Every wait
is bounded (``timeout`` seconds) and fails with a TimeoutError that says what it waited for.
The `livekit` package is imported only when a helper is used.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

DEFAULT_TIMEOUT = 20.0

Predicate = Callable[..., bool]


def wait_for_event(
    emitter: Any,
    event: str,
    predicate: Predicate | None = None,
    *,
    timeout: float = DEFAULT_TIMEOUT,
    what: str = "",
) -> asyncio.Future[tuple[Any, ...]]:
    """The arguments of the first ``event`` (from now on) for which ``predicate(*args)`` holds.

    ``emitter`` is anything with livekit's ``on(event, callback)`` / ``off(event, callback)``:
    an `rtc.Room`, a participant … ``what`` names the wait in the TimeoutError."""
    loop = asyncio.get_running_loop()
    found: asyncio.Future[tuple[Any, ...]] = loop.create_future()

    def on_event(*args: Any) -> None:
        if found.done():
            return
        try:
            if predicate is None or predicate(*args):
                found.set_result(args)
        except Exception as exc:  # a broken predicate fails the wait, not the SDK's dispatch
            found.set_exception(exc)

    emitter.on(event, on_event)

    async def bounded() -> tuple[Any, ...]:
        try:
            return await asyncio.wait_for(found, timeout)
        except TimeoutError:
            raise TimeoutError(f"no {what or repr(event)} within {timeout:g} s") from None
        finally:
            emitter.off(event, on_event)

    return asyncio.ensure_future(bounded())


def _resolved(value: Any) -> asyncio.Future[Any]:
    future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    future.set_result(value)
    return future


def _then(future: asyncio.Future[tuple[Any, ...]], pick: Callable[..., Any]) -> asyncio.Future[Any]:
    async def picked() -> Any:
        return pick(*await future)

    return asyncio.ensure_future(picked())


def _enum_value(enum: Any, prefix: str, value: int | str) -> int:
    """``"audio"`` → ``TrackKind.KIND_AUDIO``; ints pass through."""
    if isinstance(value, int):
        return value
    return int(enum.Value(prefix + value.upper()))


def wait_for_participant(
    room: Any,
    identity: str | None = None,
    *,
    kind: int | str | None = None,
    timeout: float = DEFAULT_TIMEOUT,
) -> asyncio.Future[Any]:
    """The remote participant ``identity`` (or the first one, or the first of ``kind``:
    "agent", "standard", "sip", "ingress", "egress"), already in ``room`` or when it joins."""
    from livekit import rtc

    wanted_kind = (
        None if kind is None else _enum_value(rtc.ParticipantKind, "PARTICIPANT_KIND_", kind)
    )

    def matches(participant: Any) -> bool:
        return (identity is None or participant.identity == identity) and (
            wanted_kind is None or participant.kind == wanted_kind
        )

    for participant in room.remote_participants.values():
        if matches(participant):
            return _resolved(participant)
    what = f"participant {identity!r}" if identity else "participant"
    joined = wait_for_event(room, "participant_connected", matches, timeout=timeout, what=what)
    return _then(joined, lambda participant: participant)


def wait_for_track(
    room: Any,
    identity: str | None = None,
    *,
    kind: int | str | None = None,
    source: int | str | None = None,
    name: str | None = None,
    subscribed: bool = True,
    timeout: float = DEFAULT_TIMEOUT,
) -> asyncio.Future[Any]:
    """A remote track publication (`rtc.RemoteTrackPublication`) matching ``identity``,
    ``kind`` ("audio", "video"), ``source`` ("camera", "microphone", "screen_share" …) and
    ``name``; with ``subscribed`` (the default) once its track is subscribed, so
    ``publication.track`` can be read (`rtc.AudioStream(publication.track)`)."""
    from livekit import rtc

    wanted_kind = None if kind is None else _enum_value(rtc.TrackKind, "KIND_", kind)
    wanted_source = None if source is None else _enum_value(rtc.TrackSource, "SOURCE_", source)

    def matches(publication: Any, participant: Any) -> bool:
        return (
            (identity is None or participant.identity == identity)
            and (wanted_kind is None or publication.kind == wanted_kind)
            and (wanted_source is None or publication.source == wanted_source)
            and (name is None or publication.name == name)
        )

    for participant in room.remote_participants.values():
        for publication in participant.track_publications.values():
            ready = publication.track is not None or not subscribed
            if ready and matches(publication, participant):
                return _resolved(publication)
    what = " ".join(
        part
        for part in (
            "subscribed" if subscribed else "published",
            kind if isinstance(kind, str) else None,
            "track",
            f"of {identity!r}" if identity else None,
        )
        if part
    )
    if subscribed:
        event = wait_for_event(
            room,
            "track_subscribed",
            lambda _track, pub, participant: matches(pub, participant),
            timeout=timeout,
            what=what,
        )
        return _then(event, lambda _track, publication, _participant: publication)
    event = wait_for_event(room, "track_published", matches, timeout=timeout, what=what)
    return _then(event, lambda publication, _participant: publication)


def wait_for_data(
    room: Any,
    *,
    topic: str | None = None,
    identity: str | None = None,
    timeout: float = DEFAULT_TIMEOUT,
) -> asyncio.Future[Any]:
    """The next data packet (`rtc.DataPacket`: ``.data``, ``.topic``, ``.participant``)
    received from now on, on ``topic`` and from ``identity`` if given ("" = sent by the
    server API, which has no participant)."""

    def matches(packet: Any) -> bool:
        sender = packet.participant.identity if packet.participant is not None else ""
        return (topic is None or packet.topic == topic) and (identity is None or sender == identity)

    what = "data packet" + (f" on topic {topic!r}" if topic is not None else "")
    if identity is not None:
        what += f" from {identity!r}" if identity else " from the server API"
    packet = wait_for_event(room, "data_received", matches, timeout=timeout, what=what)
    return _then(packet, lambda data_packet: data_packet)


async def wait_for_frame(track: Any, *, timeout: float = DEFAULT_TIMEOUT) -> Any:
    """The next decoded frame of a subscribed remote track: an `rtc.VideoFrame` (``.width``,
    ``.height``, ``.convert(...)``) or an `rtc.AudioFrame` (``.data``, ``.sample_rate``)."""
    from livekit import rtc

    video = track.kind == rtc.TrackKind.KIND_VIDEO
    stream = rtc.VideoStream(track) if video else rtc.AudioStream(track)
    try:
        async with asyncio.timeout(timeout):
            async for event in stream:
                return event.frame
    except TimeoutError:
        raise TimeoutError(
            f"no {'video' if video else 'audio'} frame within {timeout:g} s"
        ) from None
    finally:
        await stream.aclose()
    raise EOFError("the track ended before a frame arrived")
