"""What the congestion-control lab tests share (tests/lab/test_congestion.py with the Python SDK,
tests/lab/test_browser_congestion.py with Chromium): the publisher, the server's view of a
subscriber's downtracks, the StreamStateUpdates a subscriber was sent, and a sampler of what
Chromium decodes.

The publisher, "near", is an official Python SDK participant next to the server (no cap) that
publishes 1280x720 in three simulcast layers of a pattern cheap enough that each layer stays
well below its ceiling. Measured here (tests/lab/sdk_peer.py "smooth", the Python SDK's own
layers): q 320x180 at 15 fps ≈ 45 kbit/s, h 640x360 at 20 fps ≈ 180 kbit/s, f 1280x720 at 20
fps ≈ 940 kbit/s, plus ≈ 100 kbit/s of audio (opus in RED). So at 500 kbit/s h fits and f is
far from fitting, and at 150 kbit/s not even q fits next to the audio.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

from livekit.protocol import rtc

from roomcast.server import Server
from tests.integration.sdk import join_token, until
from tests.lab.conftest import running_server, ws_url
from tests.lab.netlab import NetworkLab
from tests.lab.peers import PeerProcess, Peers

PUBLISHER = ("--size", "1280x720", "--fps", "20", "--simulcast", "--pattern", "smooth")
TOP = "1280x720"
SIZE_OF_RID = {"q": "320x180", "h": "640x360", "f": TOP}
SETTLE = 10.0  # s after the first frame within which the allocation fits the link
WORST_GAP = 1.0  # s between two decoded video frames
MIN_FPS = 20.0  # decoded once settled: every frame of the 20 fps layer (issue 16, item 6)
# ... of what the publisher actually sent on that layer, when a busy machine made it send less
SENT_SHARE = 0.95
RECOVER = 20.0  # s after the cap is lifted within which the top layer comes back
CAP, PAUSE_CAP, UPLINK_CAP = 500, 150, 800  # kbit/s


@contextlib.asynccontextmanager
async def pausing_server(lab: NetworkLab) -> AsyncIterator[Server]:
    """Roomcast with `rtc.congestion_control.allow_pause` on (livekit-server's default is off;
    neither the Python SDK nor livekit-client 2.23 can ask for it themselves)."""
    async with running_server(lab, rtc_yaml="  congestion_control:\n    allow_pause: true\n") as s:
        yield s


TOP_WARM = 700_000  # bps the top layer sends once the publisher's own estimate has ramped up


async def publish_near(server: Server, peers: Peers, room: str) -> PeerProcess:
    """near, publishing; returned once its top layer runs at its full rate (libwebrtc ramps a
    new sender's estimate up over seconds, and the top layer gets bits last: before that it
    might fit a capped link)."""
    near = await peers.start("near", ws_url(server), join_token(room, "near"), (), *PUBLISHER)
    await near.wait("published")
    await until(lambda: any(len(t.layers) == 3 for t in server.plane.uptracks()), timeout=20)
    uptrack = next(t for t in server.plane.uptracks() if len(t.layers) == 3)
    await until(lambda: uptrack.layers[2].bitrate > TOP_WARM, timeout=30)
    return near


def downtracks_of(server: Server, identity: str, kind: str = "video") -> list[Any]:
    for room in server.rooms.list():
        participant = room.participants.get(identity)
        if participant is not None:
            return [
                d
                for d in server.plane.downtracks()
                if d.subscriber == participant.sid and d.kind == kind
            ]
    return []


async def one_downtrack(server: Server, identity: str, kind: str = "video") -> Any:
    await until(lambda: len(downtracks_of(server, identity, kind)) == 1, timeout=20)
    return downtracks_of(server, identity, kind)[0]


def settled_below_top(downtrack: Any) -> bool:
    """The allocation caps the track below its top layer, and that layer is what is sent."""
    allowed, current = downtrack.allowed, downtrack.current
    return 0 <= allowed < 2 and current is not None and current <= allowed


def sent_fps(before: dict[str, Any], after: dict[str, Any], seconds: float) -> dict[str, float]:
    """Frames per second near sent on each simulcast layer between two of its stats."""
    return {
        rid: (layer["frames_sent"] - before["outbound_video"].get(rid, {}).get("frames_sent", 0))
        / seconds
        for rid, layer in after["outbound_video"].items()
    }


def expected_fps(sent: dict[str, float], sizes: dict[str, int]) -> float:
    """The frame rate a subscriber that decodes everything decodes: MIN_FPS, or a little less
    than near sent on the layers it received if near sent less than that. A window that spans
    a layer switch (its frames of each size in `sizes`) is timed layer by layer: 97 frames of
    a 15 fps layer and 3 of a 20 fps one take 6.5 s, 15.3 fps (the lowest simulcast layer of
    libwebrtc's encoder runs at fewer frames a second)."""
    frames = seconds = 0.0
    for rid, size in SIZE_OF_RID.items():
        rate = sent.get(rid, 0.0)
        if size in sizes and rate > 0:
            frames += sizes[size]
            seconds += sizes[size] / rate
    if not seconds:
        return MIN_FPS
    return min(MIN_FPS, SENT_SHARE * frames / seconds)


def stream_states_sent(server: Server, identity: str) -> list[rtc.StreamStateInfo]:
    """From now on, every StreamStateInfo the server signals to `identity` (the Python SDK has
    no stream-state event: this is what it was told)."""
    seen: list[rtc.StreamStateInfo] = []
    session = next(
        room.participants[identity].session
        for room in server.rooms.list()
        if identity in room.participants
    )
    assert session is not None
    send = session.send_signal

    def recording(response: rtc.SignalResponse) -> None:
        if response.WhichOneof("message") == "stream_state_update":
            seen.extend(response.stream_state_update.stream_states)
        send(response)

    session.send_signal = recording  # type: ignore[method-assign]
    return seen


# Chromium: a sampler of the remote video's inbound-rtp statistics every 100 ms, so that decoded
# frames, the gaps between them and the frame sizes can be read over a window.
VIDEO_SAMPLER_JS = """
() => {
  const rc = window.rc;
  rc.video = { samples: [], mark: performance.now(), lastNew: performance.now() };
  const receiver = () => {
    for (const p of rc.room.remoteParticipants.values()) {
      for (const pub of p.trackPublications.values()) {
        if (pub.kind === 'video' && pub.track && pub.track.receiver) return pub.track.receiver;
      }
    }
    return null;
  };
  rc.video.timer = setInterval(async () => {
    const r = receiver();
    if (!r) return;
    (await r.getStats()).forEach((s) => {
      if (s.type !== 'inbound-rtp' || s.kind !== 'video') return;
      const t = performance.now();
      const frames = s.framesDecoded || 0;
      const last = rc.video.samples[rc.video.samples.length - 1];
      if (!last || frames > last.frames) rc.video.lastNew = t;
      rc.video.samples.push({ t, frames, size: `${s.frameWidth || 0}x${s.frameHeight || 0}`,
        lost: s.packetsLost || 0, received: s.packetsReceived || 0,
        framesReceived: s.framesReceived || 0, dropped: s.framesDropped || 0,
        freezes: s.freezeCount || 0 });
    });
  }, 100);
}
"""

# Since the mark: frames decoded, seconds, the worst gap between two samples that saw new frames
# (and the time since the last one), frames per size, packets lost and received; for failures,
# frames received and dropped (before decoding) and Chrome's own freeze count.
VIDEO_SUMMARY_JS = """
() => {
  const v = window.rc.video;
  const now = performance.now();
  const samples = v.samples.filter((s) => s.t >= v.mark);
  const out = { frames: 0, seconds: (now - v.mark) / 1000, worst_gap: 0, stalled: null,
                sizes: {}, lost: 0, received: 0, size: null };
  if (samples.length < 2) return out;
  let last = samples[0];
  let lastNew = v.mark;
  for (const s of samples.slice(1)) {
    const frames = s.frames - last.frames;
    if (frames > 0) {
      out.worst_gap = Math.max(out.worst_gap, (s.t - lastNew) / 1000);
      lastNew = s.t;
      out.sizes[s.size] = (out.sizes[s.size] || 0) + frames;
    }
    last = s;
  }
  out.frames = last.frames - samples[0].frames;
  out.stalled = (now - lastNew) / 1000;
  out.lost = last.lost - samples[0].lost;
  out.received = last.received - samples[0].received;
  out.frames_received = last.framesReceived - samples[0].framesReceived;
  out.frames_dropped = last.dropped - samples[0].dropped;
  out.chrome_freezes = last.freezes - samples[0].freezes;
  out.size = last.size;
  return out;
}
"""


async def mark_video(page: Any) -> None:
    await page.page.evaluate("() => { window.rc.video.mark = performance.now(); }")


async def video_since_mark(page: Any) -> dict[str, Any]:
    summary: dict[str, Any] = await page.page.evaluate(VIDEO_SUMMARY_JS)
    return summary


async def wait_video_frames(page: Any, frames: int, timeout: float) -> dict[str, Any]:
    """Once `frames` were decoded since the mark: the summary."""
    await page.page.wait_for_function(
        "(n) => { const v = window.rc.video; const s = v.samples.filter((x) => x.t >= v.mark);"
        " return s.length > 1 && s[s.length - 1].frames - s[0].frames >= n; }",
        arg=frames,
        timeout=timeout * 1000,
    )
    return await video_since_mark(page)


async def wait_video_size(page: Any, size: str, timeout: float) -> None:
    await page.page.wait_for_function(
        "(size) => { const s = window.rc.video.samples; return s.length > 10"
        " && s.slice(-10).every((x) => x.size === size); }",
        arg=size,
        timeout=timeout * 1000,
    )


async def wait_video_still(page: Any, seconds: float, timeout: float) -> None:
    """Until no new frame was decoded for `seconds` (what was on its way has drained)."""
    await page.page.wait_for_function(
        "(s) => (performance.now() - window.rc.video.lastNew) / 1000 >= s",
        arg=seconds,
        timeout=timeout * 1000,
    )
