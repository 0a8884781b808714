"""Janus (Debian's `janus` package) as compare.py measures it: a real peer SFU, its VideoRoom
plugin driven through its HTTP API (https://janus.conf.meetecho.com/docs/rest.html), with
the same VP8 traffic and the same client peer (ICE, DTLS, SRTP) as Roomcast.

Janus gathers no candidate on a loopback interface, so it runs in a network namespace of its
own, joined to this one by a veth pair with addresses from 198.19.0.0/16 (RFC 2544's
benchmarking range, as tests/lab uses): every packet stays on this machine, and Janus's
candidates are cut to the veth address. It runs from a configuration written to a temporary
folder: the HTTP transport only; the VideoRoom plugin only; ICE-lite on the veth
(`ice_enforce_list`). This needs root (ip netns), as the network lab does. One room, one publisher
(joinandconfigure with our offer), N subscribers (join with `streams: [{feed}]`, Janus offers,
we answer and `start`). NACKs and receiver reports from the subscribers as for Roomcast.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import aiohttp

from bench.relays.base import Relay, RelayUnavailable
from bench.sinks import Sink, nack_sender
from roomcast.client.peer import ClientPeer, LocalTrack
from roomcast.media.sdp import Codec

ROOM = 1234
BLOCK = "198.19.250"  # .1 here, .2 in Janus's namespace (a /30)
HOST, JANUS_IP = f"{BLOCK}.1", f"{BLOCK}.2"
PLUGINS = Path("/usr/lib/x86_64-linux-gnu/janus/plugins")
TRANSPORTS = Path("/usr/lib/x86_64-linux-gnu/janus/transports")
VP8 = Codec(96, "VP8", 90000, rtcp_fb=["goog-remb", "ccm fir", "nack", "nack pli"])
CONNECT_CONCURRENCY = 10
MISSING = "janus is not installed (Debian: apt-get install janus; scripts/install-test-deps.sh)"

JANUS_JCFG = """
general: {{
    configs_folder = "{folder}"
    plugins_folder = "{plugins}"
    transports_folder = "{transports}"
    events_folder = "{folder}/events"
    loggers_folder = "{folder}/loggers"
    log_to_stdout = true
    debug_level = 3
    admin_secret = "janusoverlord"
    session_timeout = 120
}}
certificates: {{}}
media: {{
    ipv6 = false
    rtp_port_range = "{rtp_ports}"
}}
nat: {{
    ice_lite = true
    ice_enforce_list = "{interface}"
    nice_debug = false
}}
plugins: {{
    disable = "{disabled_plugins}"
}}
transports: {{
    disable = "{disabled_transports}"
}}
events: {{ broadcast = false }}
"""

HTTP_JCFG = """
general: {{
    json = "compact"
    base_path = "/janus"
    http = true
    port = {port}
    ip = "{ip}"
    https = false
}}
admin: {{ admin_http = false admin_https = false }}
cors: {{}}
"""


def unavailable() -> str | None:
    """Why the Janus relay cannot run here, or None."""
    if shutil.which("janus") is None or not PLUGINS.is_dir():
        return MISSING
    if os.geteuid() != 0 or shutil.which("ip") is None:
        return "janus runs in a network namespace: needs root and iproute2"
    return None


def _ip(*argv: str) -> None:
    result = subprocess.run(["ip", *argv], capture_output=True, text=True, timeout=30)
    if result.returncode != 0:
        raise RelayUnavailable(f"ip {' '.join(argv)}: {result.stderr.strip()}")


class Namespace:
    """Janus's network namespace and the veth pair to it (`close` removes both)."""

    def __init__(self) -> None:
        pid = os.getpid()
        self.name = f"rcjanus-{pid}"
        self.outer, self.inner = f"rcj{pid}h", f"rcj{pid}n"
        _ip("netns", "add", self.name)
        try:
            _ip("link", "add", self.outer, "type", "veth", "peer", "name", self.inner)
            _ip("link", "set", self.inner, "netns", self.name)
            _ip("addr", "add", f"{HOST}/30", "dev", self.outer)
            _ip("link", "set", self.outer, "up")
            for argv in (
                ("addr", "add", f"{JANUS_IP}/30", "dev", self.inner),
                ("link", "set", self.inner, "up"),
                ("link", "set", "lo", "up"),
            ):
                _ip("-n", self.name, *argv)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        for argv in (("link", "del", self.outer), ("netns", "del", self.name)):
            subprocess.run(["ip", *argv], capture_output=True, timeout=30, check=False)


def _free_port(kind: int) -> int:
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _write_config(folder: Path, http_port: int, interface: str) -> None:
    plugins = sorted(p.name for p in PLUGINS.glob("libjanus_*.so"))
    transports = sorted(p.name for p in TRANSPORTS.glob("libjanus_*.so"))
    rtp = 30000  # its own namespace: any range is free there
    (folder / "events").mkdir()
    (folder / "loggers").mkdir()
    (folder / "janus.jcfg").write_text(
        JANUS_JCFG.format(
            folder=folder,
            plugins=PLUGINS,
            transports=TRANSPORTS,
            rtp_ports=f"{rtp}-{rtp + 2000}",
            interface=interface,
            disabled_plugins=",".join(p for p in plugins if p != "libjanus_videoroom.so"),
            disabled_transports=",".join(t for t in transports if t != "libjanus_http.so"),
        )
    )
    (folder / "janus.transport.http.jcfg").write_text(HTTP_JCFG.format(port=http_port, ip=JANUS_IP))
    (folder / "janus.plugin.videoroom.jcfg").write_text("general: {}\n")


class JanusSession:
    """One Janus session over HTTP: requests, and a long poll that routes events to handles."""

    def __init__(self, http: aiohttp.ClientSession, url: str) -> None:
        self.http = http
        self.url = url
        self.session = 0
        self._ids = itertools.count(1)
        self._waiters: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._poller: asyncio.Task[None] | None = None
        self._up: dict[int, asyncio.Event] = {}  # handle → Janus said "webrtcup"

    async def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        async with self.http.post(self.url + path, json=body) as resp:
            reply: dict[str, Any] = await resp.json(content_type=None)
        if reply.get("janus") == "error":
            raise RelayUnavailable(f"janus: {reply.get('error')}")
        return reply

    async def create(self) -> None:
        reply = await self._post("", {"janus": "create", "transaction": self._tx()})
        self.session = reply["data"]["id"]
        self._poller = asyncio.create_task(self._poll())

    def _tx(self) -> str:
        return f"t{next(self._ids)}"

    async def attach(self) -> int:
        body = {"janus": "attach", "plugin": "janus.plugin.videoroom", "transaction": self._tx()}
        reply = await self._post(f"/{self.session}", body)
        return int(reply["data"]["id"])

    async def request(self, handle: int, body: dict[str, Any]) -> dict[str, Any]:
        """A synchronous plugin request (create, ...): its plugin data."""
        message = {"janus": "message", "transaction": self._tx(), "body": body}
        reply = await self._post(f"/{self.session}/{handle}", message)
        data: dict[str, Any] = reply["plugindata"]["data"]
        return data

    async def message(
        self, handle: int, body: dict[str, Any], jsep: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """An asynchronous plugin request: waits for its event (with the JSEP, if any)."""
        tx = self._tx()
        waiter = asyncio.get_running_loop().create_future()
        self._waiters[tx] = waiter
        message: dict[str, Any] = {"janus": "message", "transaction": tx, "body": body}
        if jsep is not None:
            message["jsep"] = jsep
        await self._post(f"/{self.session}/{handle}", message)
        return await asyncio.wait_for(waiter, 30)

    async def _poll(self) -> None:
        while True:
            try:
                async with self.http.get(f"{self.url}/{self.session}?maxev=20") as resp:
                    events = await resp.json(content_type=None)
            except (TimeoutError, aiohttp.ClientError):
                await asyncio.sleep(0.1)
                continue
            for event in events if isinstance(events, list) else [events]:
                if event.get("janus") == "webrtcup":
                    self._webrtc_up(int(event.get("sender", 0))).set()
                waiter = self._waiters.pop(event.get("transaction", ""), None)
                if waiter is not None and not waiter.done() and event.get("janus") == "event":
                    waiter.set_result(event)

    def _webrtc_up(self, handle: int) -> asyncio.Event:
        return self._up.setdefault(handle, asyncio.Event())

    async def webrtc_up(self, handle: int, timeout: float) -> None:
        """Until Janus says the handle's PeerConnection is up: only then does VideoRoom take
        subscribers for a publisher (before, a join is refused with "No such feed")."""
        await asyncio.wait_for(self._webrtc_up(handle).wait(), timeout)

    async def close(self) -> None:
        if self._poller is not None:
            self._poller.cancel()
        with contextlib.suppress(Exception):
            await self._post(f"/{self.session}", {"janus": "destroy", "transaction": self._tx()})


async def _start_janus(folder: Path, ns: Namespace) -> tuple[asyncio.subprocess.Process, str]:
    binary = shutil.which("janus")
    if binary is None:
        raise RelayUnavailable(MISSING)
    port = 8088  # in its own namespace
    _write_config(folder, port, ns.inner)
    command = ["ip", "netns", "exec", ns.name, binary, "-F", str(folder)]
    command += ["-C", str(folder / "janus.jcfg")]
    process = await asyncio.create_subprocess_exec(
        *command, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL
    )
    url = f"http://{JANUS_IP}:{port}/janus"
    async with aiohttp.ClientSession() as http:
        for _ in range(200):
            if process.returncode is not None:
                raise RelayUnavailable(f"janus exited with {process.returncode}")
            with contextlib.suppress(aiohttp.ClientError):
                async with http.get(url + "/info") as resp:
                    if resp.status == 200:
                        return process, url
            await asyncio.sleep(0.05)
    process.kill()
    raise RelayUnavailable("janus did not answer on its HTTP port within 10 s")


def loopback_only(sdp: str) -> str:
    """The SDP with its candidates cut to Janus's veth address: the bench sends nowhere else,
    whatever Janus gathered."""
    lines = []
    for line in sdp.split("\r\n"):
        if line.startswith("a=candidate:") and line.split()[4] != JANUS_IP:
            continue
        lines.append(line)
    if not any(line.startswith("a=candidate:") for line in lines):
        raise RelayUnavailable(f"janus offered no {JANUS_IP} candidate")
    return "\r\n".join(lines)


async def start(fanout: int, publisher_ssrc: int) -> Relay:
    reason = unavailable()
    if reason is not None:
        raise RelayUnavailable(reason)
    ns = Namespace()
    folder = Path(tempfile.mkdtemp(prefix="roomcast-janus-"))
    try:
        process, url = await _start_janus(folder, ns)
    except BaseException:
        ns.close()
        shutil.rmtree(folder, ignore_errors=True)
        raise
    http = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
    janus = JanusSession(http, url)
    peers: list[ClientPeer] = []

    async def close() -> None:
        for peer in peers:
            peer.close()
        await janus.close()
        await http.close()
        if process.returncode is None:
            process.terminate()
        try:
            await asyncio.wait_for(process.wait(), 20)
        except TimeoutError:
            process.kill()
            await process.wait()
        shutil.rmtree(folder, ignore_errors=True)
        ns.close()

    try:
        await janus.create()
        admin = await janus.attach()
        await janus.request(
            admin,
            {
                "request": "create",
                "room": ROOM,
                "publishers": 1,
                "videocodec": "vp8",
                "bitrate": 0,
                "fir_freq": 0,
            },
        )
        publisher = ClientPeer(host=HOST)
        peers.append(publisher)
        await publisher.start()
        track = LocalTrack("video", "bench-video", "bench", [VP8], ssrcs=[publisher_ssrc])
        handle = await janus.attach()
        joined = await janus.message(
            handle,
            {"request": "joinandconfigure", "room": ROOM, "ptype": "publisher", "video": True},
            {"type": "offer", "sdp": publisher.create_offer([track])},
        )
        publisher.set_answer(loopback_only(joined["jsep"]["sdp"]))
        feed = joined["plugindata"]["data"]["id"]
        await publisher.wait_connected(15)
        await janus.webrtc_up(handle, 15)

        sinks = [Sink() for _ in range(fanout)]
        subscribers: list[ClientPeer] = [ClientPeer(host=HOST) for _ in range(fanout)]
        peers.extend(subscribers)
        gate = asyncio.Semaphore(CONNECT_CONCURRENCY)

        async def join(index: int) -> None:
            async with gate:
                peer = subscribers[index]
                await peer.start()
                peer.on_rtp = sinks[index].on_rtp
                sinks[index].on_gap = nack_sender(peer.send_rtcp, 0x7000 + index)
                sub = await janus.attach()
                attached = await janus.message(
                    sub,
                    {
                        "request": "join",
                        "room": ROOM,
                        "ptype": "subscriber",
                        "streams": [{"feed": feed}],
                    },
                )
                if "jsep" not in attached:
                    raise RelayUnavailable(f"janus refused a subscriber: {attached['plugindata']}")
                reply = peer.answer(loopback_only(attached["jsep"]["sdp"]))
                await janus.message(
                    sub, {"request": "start", "room": ROOM}, {"type": "answer", "sdp": reply}
                )
                await peer.wait_connected(30)

        await asyncio.gather(*(join(i) for i in range(fanout)))
    except BaseException:
        await close()
        raise

    def tick() -> None:
        for index, (peer, sink) in enumerate(zip(subscribers, sinks, strict=False)):
            report = sink.receiver_report(0x7000 + index)
            if report is not None:
                peer.send_rtcp(report)

    assert process.pid is not None
    return Relay("Janus", process.pid, publisher.send_rtp, sinks, close, tick)
