"""VP9 and AV1 SVC from livekit-client in Chromium (`L3T3_KEY`, the SDK's default for these
codecs): a second page decodes the stream, and the size of what it decodes follows the quality
it asks for (`RemoteTrackPublication.setVideoQuality`), as the server selects spatial layers.

Marked `media`, like the other browser media tests, and run on both forwarding planes."""

from __future__ import annotations

from typing import Any

import pytest

from roomcast.server import Server
from tests import signalling
from tests.browser.conftest import BrowserPage, NewPage, requires_chromium
from tests.conftest import url_of
from tests.integration.sdk import join_token

pytestmark = [
    requires_chromium,
    pytest.mark.media,
    pytest.mark.usefixtures("signalling"),
    pytest.mark.both_planes,  # the engine's selectors and the Python plane's
]

LOW, MEDIUM, HIGH = 0, 1, 2  # livekit-client's VideoQuality
WIDTHS = {LOW: 320, MEDIUM: 640, HIGH: 1280}  # the fake camera is 1280x720
SWITCH_TIMEOUT_MS = 20_000

# Asks for a quality of the publisher's camera, then resolves with the inbound-rtp stats once
# the decoded width is within 10 % of `width` (polled: getStats has no event).
SET_QUALITY_AND_WAIT = """
async ([identity, quality, width, timeoutMs]) => {
  const participant = [...window.rc.room.remoteParticipants.values()]
    .find((p) => p.identity === identity);
  const publication = [...participant.trackPublications.values()]
    .find((t) => t.kind === 'video');
  publication.setVideoQuality(quality);
  const started = performance.now();
  let last = null;
  while (performance.now() - started < timeoutMs) {
    const stats = await window.getStats();
    last = stats.video.find((s) => s.identity === identity) || null;
    if (last && Math.abs(last.frameWidth - width) <= 0.1 * width) {
      return { ...last, ms: Math.round(performance.now() - started) };
    }
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  throw new Error(
    `width ${width} not reached in ${timeoutMs} ms; last stats ${JSON.stringify(last)}`);
}
"""


async def publish_camera(page: BrowserPage, url: str, token: str, codec: str) -> dict[str, Any]:
    publish = {"camera": True, "microphone": False, "simulcast": True, "videoCodec": codec}
    options = {"publish": publish, "roomOptions": signalling.browser_room_options()}
    info: dict[str, Any] = await page.call("join", url, token, options)
    page.joined = True
    return info


async def switch(page: BrowserPage, identity: str, quality: int) -> dict[str, Any]:
    try:
        result: dict[str, Any] = await page.page.evaluate(
            SET_QUALITY_AND_WAIT, [identity, quality, WIDTHS[quality], SWITCH_TIMEOUT_MS]
        )
    except Exception as exc:
        raise AssertionError(f"quality {quality}: {exc}\n" + await page.diagnostics()) from exc
    return result


@pytest.mark.parametrize("codec", ["vp9", "av1"])
async def test_browser_svc_is_decoded_and_follows_the_requested_quality(
    server: Server, new_page: NewPage, codec: str
) -> None:
    url = url_of(server, "ws")
    publisher = await new_page("cam")
    info = await publish_camera(publisher, url, join_token("svc", "cam"), codec)
    assert [t["kind"] for t in info["published"]] == ["video"], info

    viewer = await new_page("viewer")
    await viewer.join(url, join_token("svc", "viewer"))
    await viewer.wait_for_tracks("cam", ["video"])
    stats = await viewer.wait_for_inbound("cam", framesDecoded=10, frameWidth=1)
    assert stats["video"][0]["framesDecoded"] >= 10, stats

    (uptrack,) = [t for t in server.plane.uptracks() if t.kind == "video"]
    assert uptrack.mime_by_pt and set(uptrack.mime_by_pt.values()) == {f"video/{codec}"}
    assert len(uptrack.layers) == 1 and uptrack.svc_codec, "one scalable stream"
    if server.mux.engine is not None:  # the native plane: layers selected in the engine
        assert type(uptrack).__name__ == "NativeUpTrack"

    times = []
    for quality in (HIGH, LOW, MEDIUM, HIGH, MEDIUM, LOW, HIGH):
        reached = await switch(viewer, "cam", quality)
        times.append((quality, reached["frameWidth"], reached["ms"]))
    print(f"\n{codec} from Chromium: (quality, decoded width, ms to reach it) {times}")
    assert not publisher.page_errors, await publisher.diagnostics()
    assert not viewer.page_errors, await viewer.diagnostics()
