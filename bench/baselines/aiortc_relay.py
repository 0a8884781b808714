"""The naive Python relay: what a Python user builds with aiortc instead of an SFU.

One publisher in, N subscribers out, each an `RTCPeerConnection`, joined with
`aiortc.contrib.media.MediaRelay` as aiortc's examples do: the publisher's VP8 is decoded
once, and every subscriber's sender re-encodes it (that is the point of this baseline).

Reached by plain SDP offer/answer over a tiny HTTP endpoint:
  POST /publish            body: the publisher's offer  → the answer
  POST /subscribe          → JSON {"id": …, "sdp": offer} (a sendonly video section)
  POST /subscribe/<id>     body: the subscriber's answer
Prints "ready <port>" on stdout once listening.

Run: python -m bench.baselines.aiortc_relay [--host 127.0.0.1] [--port 0]
aioice gathers host candidates from every interface but 127.0.0.1; this relay offers exactly
`--host` instead, so it works on loopback like the other relays (a harness detail: the media
path is aiortc's own).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import sys

import aioice.ice
from aiohttp import web
from aiortc import MediaStreamTrack, RTCPeerConnection, RTCSessionDescription
from aiortc.contrib.media import MediaRelay


class AiortcRelay:
    def __init__(self) -> None:
        self.relay = MediaRelay()
        self.source: MediaStreamTrack | None = None
        self.source_ready = asyncio.Event()
        self.peers: set[RTCPeerConnection] = set()
        self.pending: dict[str, RTCPeerConnection] = {}
        self.ids = itertools.count(1)

    def _peer(self) -> RTCPeerConnection:
        pc = RTCPeerConnection()
        self.peers.add(pc)

        @pc.on("connectionstatechange")
        async def on_state() -> None:
            if pc.connectionState in ("failed", "closed"):
                self.peers.discard(pc)
                await pc.close()

        return pc

    async def publish(self, request: web.Request) -> web.Response:
        pc = self._peer()

        @pc.on("track")
        def on_track(track: MediaStreamTrack) -> None:
            if track.kind == "video" and self.source is None:
                self.source = track
                self.source_ready.set()

        await pc.setRemoteDescription(RTCSessionDescription(await request.text(), "offer"))
        await pc.setLocalDescription(await pc.createAnswer())
        return web.Response(text=pc.localDescription.sdp, content_type="application/sdp")

    async def subscribe(self, request: web.Request) -> web.Response:
        await asyncio.wait_for(self.source_ready.wait(), 10)
        assert self.source is not None
        pc = self._peer()
        pc.addTrack(self.relay.subscribe(self.source))
        await pc.setLocalDescription(await pc.createOffer())
        peer_id = str(next(self.ids))
        self.pending[peer_id] = pc
        return web.json_response({"id": peer_id, "sdp": pc.localDescription.sdp})

    async def subscribed(self, request: web.Request) -> web.Response:
        pc = self.pending.pop(request.match_info["id"], None)
        if pc is None:
            raise web.HTTPNotFound()
        await pc.setRemoteDescription(RTCSessionDescription(await request.text(), "answer"))
        return web.Response(text="ok")

    async def close(self) -> None:
        await asyncio.gather(*(pc.close() for pc in list(self.peers)), return_exceptions=True)


async def serve(host: str, port: int) -> None:
    aioice.ice.get_host_addresses = lambda use_ipv4, use_ipv6: [host]  # see module docstring
    relay = AiortcRelay()
    app = web.Application()
    app.router.add_post("/publish", relay.publish)
    app.router.add_post("/subscribe", relay.subscribe)
    app.router.add_post("/subscribe/{id}", relay.subscribed)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    bound = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    print(f"ready {bound}", flush=True)
    try:
        await asyncio.Event().wait()  # until SIGTERM/SIGINT
    finally:
        await relay.close()
        await runner.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    try:
        asyncio.run(serve(args.host, args.port))
    except KeyboardInterrupt:
        sys.exit(0)


if __name__ == "__main__":
    main()
