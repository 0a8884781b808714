"""Chromium with livekit-client behind a firewall that blocks UDP to the server: it connects
through ICE over TCP, and audio, video and data flow both ways with an official Python SDK
participant next to the server, also after a resume (ICE restart) (issue 15, 5b/5f)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from roomcast.server import Server
from tests.browser.conftest import requires_chromium
from tests.integration.sdk import join_token
from tests.lab import timings
from tests.lab.chromium import chromium_in, open_page, selected_paths
from tests.lab.conftest import ws_url
from tests.lab.netlab import NetworkLab
from tests.lab.peers import Peers
from tests.lab.test_ice_paths import first_frames, transports_of

pytestmark = [requires_chromium, pytest.mark.media]

INBOUND = {"framesDecoded": 20, "totalAudioEnergy": 0.001}


@pytest.mark.parametrize("blocked", ["nothing", "udp"])
async def test_chromium_takes_udp_or_else_ice_tcp(
    lab: NetworkLab, lab_server: Server, peers: Peers, tmp_path: Path, blocked: str
) -> None:
    protocol = "udp" if blocked == "nothing" else "tcp"
    if blocked == "udp":
        lab.host.block_udp(lab.server_ip)
    url, room = ws_url(lab_server), f"browser-{protocol}"
    near = await peers.start("near", url, join_token(room, "near"))
    await near.wait("published")
    clock = asyncio.get_running_loop().time
    async with chromium_in(lab.host, tmp_path) as context:
        page = await open_page(context, "far")
        start = clock()
        info = await page.join(
            url, join_token(room, "far"), camera=True, microphone=True, simulcast=False
        )
        await page.wait_for_inbound("near", framesDecoded=1, totalAudioEnergy=0.0001)
        first_media = clock() - start
        timings.record(
            f"{'ice-tcp (udp blocked)' if protocol == 'tcp' else 'udp (nothing blocked)'}",
            "chromium",
            join=info["connectMs"] / 1000,
            first_media=first_media,
        )
        # Both ways: Chromium decodes near's sine and gradient, near decodes Chromium's fake
        # camera and microphone; a reliable message each way.
        await page.wait_for_inbound("near", **INBOUND)
        await first_frames(near, "far")
        await near.command("mark")
        await near.command("frames", video=20, audible=20)
        await page.publish_data("from chromium", "lab")
        await near.wait("data", lambda e: e["payload"] == "from chromium")
        await near.command("data", payload="from near")
        await page.wait_for_data(text="from near", from_="near")

        paths = await selected_paths(page)
        port = lab_server.mux.port if protocol == "udp" else lab_server.mux.tcp_port
        for pc in ("publisher", "subscriber"):
            path = paths[pc]
            assert path and (path["protocol"], path["port"]) == (protocol, port), paths
            assert path["address"] == lab.server_ip and path["candidateType"] == "host"
            if protocol == "tcp":
                assert path["tcpType"] == "passive"
        assert set(transports_of(lab_server, lab.host.seen_as).values()) == {protocol}

        # A resume with an ICE restart, on the same path.
        ufrags = set(transports_of(lab_server, lab.host.seen_as))
        start = clock()
        await page.page.evaluate("() => window.rc.room.simulateScenario('signal-reconnect')")
        await page.page.wait_for_function(
            "window.rc.events.some((e) => e.event === 'Reconnected')", timeout=30_000
        )
        reconnected = clock() - start
        await near.command("mark")
        await near.command("frames", video=20, audible=20)
        await page.publish_data("after resume", "lab")
        await near.wait("data", lambda e: e["payload"] == "after resume")
        restarted = transports_of(lab_server, lab.host.seen_as)
        assert set(restarted.values()) == {protocol} and not set(restarted) & ufrags
        timings.record(
            f"{protocol}: resume, ICE restart", "chromium", reconnected=reconnected,
            media=clock() - start,
        )  # fmt: skip
