"""Chromium with livekit-client behind a firewall that leaves only TURN over TLS open (all UDP,
the ICE-TCP port and TURN's TCP port blocked): it relays through the embedded TURN server's TLS
port, or a real coturn's, and audio, video and data flow both ways with an official Python SDK
participant next to the server, also after a resume (ICE restart) (issue 15, 5c/5d/5f).

The TURN servers present a self-signed certificate for the lab's server address, the TURN URL's
host; Chromium accepts it with --ignore-certificate-errors, which its TURN/TLS sockets honour
as its HTTPS ones do.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from roomcast.server import Server
from tests.browser.conftest import requires_chromium
from tests.integration.sdk import join_token
from tests.lab import timings
from tests.lab.chromium import chromium_in, open_page, selected_paths
from tests.lab.conftest import ws_url
from tests.lab.netlab import NetworkLab
from tests.lab.peers import Peers
from tests.lab.test_browser_paths import INBOUND
from tests.lab.test_ice_paths import first_frames
from tests.lab.test_turn_paths import VIAS, check_path, only_turn_open, relayed_server

pytestmark = [requires_chromium, pytest.mark.media]

TRUST_TEST_CERTIFICATES = ["--ignore-certificate-errors"]


def check_chromium_relay(paths: dict[str, Any], server: Server, tls_port: int) -> None:
    for pc in ("publisher", "subscriber"):
        path = paths[pc]
        assert path, paths
        assert path["localType"] == "relay" and path["relayProtocol"] == "tls", paths
        assert f":{tls_port}" in path["url"], paths
        assert (path["protocol"], path["port"]) == ("udp", server.mux.port), paths


@pytest.mark.parametrize("via", VIAS)
async def test_chromium_relays_over_turn_tls(
    lab: NetworkLab, peers: Peers, tmp_path: Path, via: str
) -> None:
    async with relayed_server(lab, tmp_path, via) as (server, relay, turn_port):
        only_turn_open(lab, server)
        lab.host.block_tcp(lab.server_ip, turn_port)  # TURN over TCP too: TLS is left
        tls_port = relay.tls_port if relay is not None else server.config.turn.tls_port
        url, room = ws_url(server), f"browser-turn-{via}"
        near = await peers.start("near", url, join_token(room, "near"))
        await near.wait("published")
        clock = asyncio.get_running_loop().time
        async with chromium_in(lab.host, tmp_path, TRUST_TEST_CERTIFICATES) as context:
            page = await open_page(context, "far")
            start = clock()
            info = await page.join(
                url, join_token(room, "far"), camera=True, microphone=True, simulcast=False
            )
            await page.wait_for_inbound("near", framesDecoded=1, totalAudioEnergy=0.0001)
            timings.record(f"turn/tls ({via})", "chromium", join=info["connectMs"] / 1000,
                           first_media=clock() - start)  # fmt: skip
            # Both ways: Chromium decodes near's sine and gradient, near decodes Chromium's
            # fake camera and microphone; a reliable message each way.
            await page.wait_for_inbound("near", **INBOUND)
            await first_frames(near, "far")
            await near.command("mark")
            await near.command("frames", video=20, audible=20)
            await page.publish_data("from chromium", "lab")
            await near.wait("data", lambda e: e["payload"] == "from chromium")
            await near.command("data", payload="from near")
            await page.wait_for_data(text="from near", from_="near")
            check_chromium_relay(await selected_paths(page), server, tls_port)
            ufrags = check_path(server, lab, relay, "tls")

            # A resume: ReconnectResponse with fresh TURN credentials, an ICE restart.
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
            check_chromium_relay(await selected_paths(page), server, tls_port)
            assert not check_path(server, lab, relay, "tls") & ufrags, "ICE restarted"
            timings.record(f"turn/tls ({via}): resume", "chromium", reconnected=reconnected,
                           media=clock() - start)  # fmt: skip
