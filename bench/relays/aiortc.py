"""The aiortc baseline (bench/baselines/aiortc_relay.py) as a subprocess, with the publisher and
subscribers on Roomcast's client peer, so it gets the very packets Roomcast gets."""

from __future__ import annotations

import asyncio
import sys

import aiohttp

from bench.relays.base import Relay, RelayUnavailable
from bench.sinks import Sink
from roomcast.client.peer import ClientPeer, LocalTrack
from roomcast.media.sdp import Codec

HOST = "127.0.0.1"
CONNECT_CONCURRENCY = 10  # subscribers negotiating at once
VP8 = Codec(96, "VP8", 90000, rtcp_fb=["goog-remb", "ccm fir", "nack", "nack pli"])


async def start(fanout: int, publisher_ssrc: int) -> Relay:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bench.baselines.aiortc_relay",
        "--host",
        HOST,
        stdout=asyncio.subprocess.PIPE,
    )
    peers: list[ClientPeer] = []
    http = aiohttp.ClientSession()

    async def close() -> None:
        for peer in peers:
            peer.close()
        await http.close()
        if process.returncode is None:
            process.terminate()
        await process.wait()

    try:
        assert process.stdout is not None
        line = (await asyncio.wait_for(process.stdout.readline(), 30)).decode().split()
        if line[:1] != ["ready"]:
            raise RelayUnavailable(f"aiortc relay did not start: {line}")
        base = f"http://{HOST}:{line[1]}"

        publisher = ClientPeer(host=HOST)
        peers.append(publisher)
        await publisher.start()
        track = LocalTrack("video", "bench-video", "bench", [VP8], ssrcs=[publisher_ssrc])
        async with http.post(f"{base}/publish", data=publisher.create_offer([track])) as resp:
            resp.raise_for_status()
            publisher.set_answer(await resp.text())
        await publisher.wait_connected(15)

        sinks = [Sink() for _ in range(fanout)]
        gate = asyncio.Semaphore(CONNECT_CONCURRENCY)

        async def subscribe(sink: Sink) -> None:
            async with gate:
                peer = ClientPeer(host=HOST)
                peers.append(peer)
                await peer.start()
                async with http.post(f"{base}/subscribe") as resp:
                    resp.raise_for_status()
                    offer = await resp.json()
                answer = peer.answer(offer["sdp"])
                async with http.post(f"{base}/subscribe/{offer['id']}", data=answer) as resp:
                    resp.raise_for_status()
                peer.on_rtp = sink.on_rtp
                await peer.wait_connected(30)

        await asyncio.gather(*(subscribe(sink) for sink in sinks))
    except BaseException:
        await close()
        raise
    return Relay("aiortc relay", process.pid, publisher.send_rtp, sinks, close)
