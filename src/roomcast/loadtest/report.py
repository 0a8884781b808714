"""Figures of a finished (or running) load test, and the tables `roomcast load-test` prints."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

from .participant import LoadParticipant
from .runner import LoadTest


def percentile(values: list[float], pct: float) -> float | None:
    """Nearest-rank percentile (no interpolation); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(pct / 100 * len(ordered)))
    return ordered[rank - 1]


def format_bitrate(bps: float) -> str:
    if bps >= 1e6:
        return f"{bps / 1e6:.2f} Mbps"
    if bps >= 1e3:
        return f"{bps / 1e3:.1f} kbps"
    return f"{bps:.0f} bps"


def format_ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.0f} ms"


@dataclass(slots=True)
class SubscriberRow:
    identity: str
    room: str
    tracks_receiving: int
    tracks_offered: int
    bitrate: float
    packets: int
    expected: int
    lost: int
    join: float | None
    first_media: float | None
    error: str | None

    @property
    def loss(self) -> float:
        return 100 * self.lost / self.expected if self.expected else 0.0


@dataclass(slots=True)
class TrackRow:
    track_sid: str
    kind: str
    publisher: str
    layers: int
    sent_bitrate: float
    sent_packets: int
    subscribers: int
    received_packets: int
    lost: int
    expected: int
    nacks: int
    keyframe_requests: int

    @property
    def loss(self) -> float:
        return 100 * self.lost / self.expected if self.expected else 0.0


@dataclass(slots=True)
class Summary:
    participants: int
    joined: int
    failed: list[tuple[str, str]]  # identity, error
    tracks: int
    subscriptions: int
    bitrate: float  # received by all subscribers
    packets: int
    lost: int
    expected: int
    join_p50: float | None
    join_p95: float | None
    media_p50: float | None
    media_p95: float | None
    subscribers: list[SubscriberRow]
    track_rows: list[TrackRow]

    @property
    def loss(self) -> float:
        return 100 * self.lost / self.expected if self.expected else 0.0


def summarize(test: LoadTest) -> Summary:
    elapsed = max(1e-3, (test.ended or _now(test)) - test.started)
    subscribers = [_subscriber_row(p, elapsed) for p in test.participants if p.role.subscribe]
    tracks = _track_rows(test.participants, elapsed)
    joins = [p.joined_at - p.started_at for p in test.participants if p.joined_at is not None]
    media = [
        p.first_media_at - p.started_at
        for p in test.participants
        if p.role.subscribe and p.first_media_at is not None
    ]
    return Summary(
        participants=len(test.participants),
        joined=test.joined,
        failed=[(p.role.identity, p.error or "") for p in test.failed],
        tracks=len(tracks),
        subscriptions=sum(r.tracks_receiving for r in subscribers),
        bitrate=sum(r.bitrate for r in subscribers),
        packets=sum(r.packets for r in subscribers),
        lost=sum(r.lost for r in subscribers),
        expected=sum(r.expected for r in subscribers),
        join_p50=percentile(joins, 50),
        join_p95=percentile(joins, 95),
        media_p50=percentile(media, 50),
        media_p95=percentile(media, 95),
        subscribers=subscribers,
        track_rows=tracks,
    )


def progress_line(test: LoadTest) -> str:
    summary = summarize(test)
    total = len(test.config.roles())
    elapsed = (test.ended or _now(test)) - test.started
    return (
        f"{elapsed:6.1f}s  joined {summary.joined}/{total}  failed {len(summary.failed)}  "
        f"tracks {summary.tracks}  subscriptions {summary.subscriptions}  "
        f"recv {format_bitrate(summary.bitrate)}  packets {summary.packets}  "
        f"loss {summary.loss:.2f}%"
    )


def render(summary: Summary, *, max_rows: int = 50) -> str:
    out: list[str] = []
    if summary.track_rows:
        out.append(
            _table(
                [
                    "Track",
                    "Kind",
                    "Publisher",
                    "Layers",
                    "Sent",
                    "Sent pkts",
                    "Subs",
                    "Recv pkts",
                    "Loss",
                    "NACKs",
                    "PLIs",
                ],
                [
                    [
                        r.track_sid,
                        r.kind,
                        r.publisher,
                        str(r.layers),
                        format_bitrate(r.sent_bitrate),
                        str(r.sent_packets),
                        str(r.subscribers),
                        str(r.received_packets),
                        f"{r.loss:.2f}%",
                        str(r.nacks),
                        str(r.keyframe_requests),
                    ]
                    for r in summary.track_rows[:max_rows]
                ],
            )
        )
        if len(summary.track_rows) > max_rows:
            out.append(f"… {len(summary.track_rows) - max_rows} more tracks")
        out.append("")
    if summary.subscribers:
        out.append(
            _table(
                [
                    "Subscriber",
                    "Room",
                    "Tracks",
                    "Bitrate",
                    "Packets",
                    "Lost",
                    "Loss",
                    "Join",
                    "First media",
                ],
                [
                    [
                        r.identity,
                        r.room,
                        f"{r.tracks_receiving}/{r.tracks_offered}",
                        format_bitrate(r.bitrate),
                        str(r.packets),
                        str(r.lost),
                        f"{r.loss:.2f}%",
                        format_ms(r.join),
                        format_ms(r.first_media),
                    ]
                    for r in summary.subscribers[:max_rows]
                ],
            )
        )
        if len(summary.subscribers) > max_rows:
            out.append(f"… {len(summary.subscribers) - max_rows} more subscribers")
        out.append("")
    out.append(
        _table(
            [
                "Total",
                "Participants",
                "Tracks",
                "Subscriptions",
                "Bitrate",
                "Packets",
                "Loss",
                "Join p50/p95",
                "First media p50/p95",
            ],
            [
                [
                    "",
                    f"{summary.joined}/{summary.participants}",
                    str(summary.tracks),
                    str(summary.subscriptions),
                    format_bitrate(summary.bitrate),
                    str(summary.packets),
                    f"{summary.loss:.2f}% ({summary.lost})",
                    f"{format_ms(summary.join_p50)} / {format_ms(summary.join_p95)}",
                    f"{format_ms(summary.media_p50)} / {format_ms(summary.media_p95)}",
                ]
            ],
        )
    )
    for identity, error in summary.failed[:10]:
        out.append(f"failed: {identity}: {error}")
    if len(summary.failed) > 10:
        out.append(f"… {len(summary.failed) - 10} more failures")
    return "\n".join(out)


def _table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    lines = [" | ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)).rstrip()]
    lines.append("-+-".join("-" * w for w in widths))
    for row in rows:
        lines.append(" | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
    return "\n".join(lines)


def _subscriber_row(p: LoadParticipant, elapsed: float) -> SubscriberRow:
    tracks = list(p.received.values())
    return SubscriberRow(
        identity=p.role.identity,
        room=p.role.room,
        tracks_receiving=sum(1 for t in tracks if t.packets),
        tracks_offered=len(tracks),
        bitrate=sum(t.bytes for t in tracks) * 8 / elapsed,
        packets=sum(t.packets for t in tracks),
        expected=sum(t.expected for t in tracks),
        lost=sum(t.lost for t in tracks),
        join=None if p.joined_at is None else p.joined_at - p.started_at,
        first_media=None if p.first_media_at is None else p.first_media_at - p.started_at,
        error=p.error,
    )


def _track_rows(participants: list[LoadParticipant], elapsed: float) -> list[TrackRow]:
    rows: dict[str, TrackRow] = {}
    for p in participants:
        for cid, sid in p.track_sids.items():
            sender = next(
                (s for s in p.senders if s.kind == ("audio" if cid.endswith("audio") else "video")),
                None,
            )
            streams = sender.streams if sender is not None else []
            rows[sid] = TrackRow(
                track_sid=sid,
                kind="audio" if cid.endswith("audio") else "video",
                publisher=p.role.identity,
                layers=len(streams),
                sent_bitrate=sum(s.octets for s in streams) * 8 / elapsed,
                sent_packets=sum(s.packets for s in streams),
                subscribers=0,
                received_packets=0,
                lost=0,
                expected=0,
                nacks=sender.nacks if sender is not None else 0,
                keyframe_requests=sender.keyframe_requests if sender is not None else 0,
            )
    for p in participants:
        for sid, received in p.received.items():
            row = rows.get(sid)
            if row is None or not received.packets:
                continue
            row.subscribers += 1
            row.received_packets += received.packets
            row.lost += received.lost
            row.expected += received.expected
    return list(rows.values())


def _now(test: LoadTest) -> float:
    return time.monotonic()
