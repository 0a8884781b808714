"""Headless Chromium inside a client network of the lab, driven by playwright.

Playwright starts Chromium through a two-line wrapper, `exec ip netns exec <ns> chromium "$@"`:
the browser and its child processes live in the namespace (behind its firewall) while
playwright talks to it over the pipe it inherited, which no network rule can touch. The test
page (tests/browser/page) and the livekit-client bundle are served by playwright itself
(`context.route`) at http://localhost:7357/, a secure context (camera and microphone allowed)
that needs no server reachable from the namespace.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

from tests.browser.conftest import BUNDLE, CHROMIUM, CHROMIUM_ARGS, PAGE_DIR, BrowserPage
from tests.lab.netlab import LabHost

PAGE_ORIGIN = "http://localhost:7357"

# The selected ICE candidate pair of the PeerConnection behind each local and remote track:
# {publisher: {protocol, port, address, candidateType, tcpType} | null, subscriber: …}, with
# the local candidate's type, and for a relay its TURN leg (relayProtocol, url).
SELECTED_PATHS_JS = """
async () => {
  async function pathOf(report) {
    const byId = new Map();
    report.forEach((s) => byId.set(s.id, s));
    for (const s of byId.values()) {
      if (s.type !== 'transport' || !s.selectedCandidatePairId) continue;
      const pair = byId.get(s.selectedCandidatePairId);
      const remote = pair && byId.get(pair.remoteCandidateId);
      const local = pair && byId.get(pair.localCandidateId);
      if (remote) {
        return { protocol: remote.protocol, port: remote.port, address: remote.address,
                 candidateType: remote.candidateType, tcpType: remote.tcpType || null,
                 localType: local ? local.candidateType : null,
                 relayProtocol: (local && local.relayProtocol) || null,
                 url: (local && local.url) || null };
      }
    }
    return null;
  }
  const room = window.rc.room;
  const out = { publisher: null, subscriber: null };
  for (const pub of room.localParticipant.trackPublications.values()) {
    if (pub.track && pub.track.sender) {
      out.publisher = await pathOf(await pub.track.sender.getStats());
    }
  }
  for (const p of room.remoteParticipants.values()) {
    for (const pub of p.trackPublications.values()) {
      if (pub.track && pub.track.receiver) {
        out.subscriber = await pathOf(await pub.track.receiver.getStats());
      }
    }
  }
  return out;
}
"""


async def _serve(route: Any) -> None:
    path = route.request.url.removeprefix(PAGE_ORIGIN).split("?")[0]
    if path == "/":
        await route.fulfill(path=PAGE_DIR / "index.html")
    elif path == "/harness.js":
        await route.fulfill(path=PAGE_DIR / "harness.js")
    elif path.startswith("/lib/") and "/.." not in path:
        await route.fulfill(path=BUNDLE / path.removeprefix("/lib/"))
    else:
        await route.fulfill(status=404, body="not found")


@contextlib.asynccontextmanager
async def chromium_in(
    host: LabHost, workdir: Path, extra_args: Sequence[str] = ()
) -> AsyncIterator[Any]:
    """A persistent Chromium context running in `host`'s namespace (closed at the end)."""
    from playwright.async_api import async_playwright

    bundle = BUNDLE / "livekit-client.umd.js"
    if not bundle.is_file():
        raise AssertionError(f"{bundle} is missing: run `make test-deps` (npm ci in tests/node)")
    wrapper = workdir / "chromium-in-lab"
    wrapper.write_text(f'#!/bin/sh\nexec ip netns exec {host.namespace} {CHROMIUM} "$@"\n')
    wrapper.chmod(0o755)
    async with async_playwright() as playwright:
        context = await playwright.chromium.launch_persistent_context(
            workdir / "chromium-profile",
            executable_path=str(wrapper),
            headless=True,
            args=[*CHROMIUM_ARGS, *extra_args],
            permissions=["camera", "microphone"],
        )
        try:
            await context.route(f"{PAGE_ORIGIN}/**", _serve)
            yield context
        finally:
            await context.close()


async def open_page(context: Any, name: str) -> BrowserPage:
    page = BrowserPage(await context.new_page(), name)
    await page.page.goto(f"{PAGE_ORIGIN}/")
    await page.page.wait_for_function("window.harnessReady === true", timeout=10_000)
    return page


async def selected_paths(page: BrowserPage) -> dict[str, Any]:
    paths: dict[str, Any] = await page.page.evaluate(SELECTED_PATHS_JS)
    return paths
