"""The C baseline (bench/baselines/c_relay.c): built with gcc, run with pre-shared SRTP keys.

The publisher and the subscribers are plain UDP sockets keyed with pylibsrtp (AES-128-GCM, the
profile Roomcast negotiates), so the relay does exactly the per-packet work an SFU does after
ICE and DTLS: unprotect once, rewrite and protect per subscriber, send.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
from pathlib import Path

import pylibsrtp

from bench.relays.base import Relay, RelayUnavailable
from bench.sinks import Sink

SOURCE = Path(__file__).resolve().parent.parent / "baselines" / "c_relay.c"
PROFILE = pylibsrtp.Policy.SRTP_PROFILE_AEAD_AES_128_GCM
KEY_SIZE = 28  # 16-byte key + 12-byte salt (RFC 7714 §12)
HOST = "127.0.0.1"
MISSING_GCC = "gcc is not installed"
MISSING_LIBSRTP = "libsrtp2 headers are missing (Debian: libsrtp2-dev)"


def build(build_dir: Path) -> Path:
    """Compile the relay into `build_dir` (never into the source tree); RelayUnavailable
    when gcc or libsrtp2's headers are missing."""
    if shutil.which("gcc") is None:
        raise RelayUnavailable(MISSING_GCC)
    if not Path("/usr/include/srtp2/srtp.h").exists():
        raise RelayUnavailable(MISSING_LIBSRTP)
    binary = build_dir / "c_relay"
    command = ["gcc", "-O2", "-Wall", "-o", str(binary), str(SOURCE), "-lsrtp2"]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RelayUnavailable(f"gcc failed: {result.stderr.strip()}")
    return binary


def _session(key: bytes, *, inbound: bool) -> pylibsrtp.Session:
    ssrc_type = pylibsrtp.Policy.SSRC_ANY_INBOUND if inbound else pylibsrtp.Policy.SSRC_ANY_OUTBOUND
    return pylibsrtp.Session(pylibsrtp.Policy(key=key, ssrc_type=ssrc_type, srtp_profile=PROFILE))


class _SrtpSinkProtocol(asyncio.DatagramProtocol):
    """One subscriber's socket: SRTP in, plain RTP to its Sink."""

    def __init__(self, sink: Sink, key: bytes) -> None:
        self.sink = sink
        self.rx = _session(key, inbound=True)
        self.failed = 0

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        try:
            packet = self.rx.unprotect(data)
        except pylibsrtp.Error:
            self.failed += 1
            return
        self.sink.on_rtp(packet)


async def start(binary: Path, fanout: int) -> Relay:
    loop = asyncio.get_running_loop()
    publisher_key = os.urandom(KEY_SIZE)
    sinks: list[Sink] = []
    transports: list[asyncio.DatagramTransport] = []
    destinations = []
    for index in range(fanout):
        key = os.urandom(KEY_SIZE)
        sink = Sink()
        transport, _ = await loop.create_datagram_endpoint(
            lambda sink=sink, key=key: _SrtpSinkProtocol(sink, key), local_addr=(HOST, 0)
        )
        port = transport.get_extra_info("sockname")[1]
        destinations.append(f"{HOST}:{port}:{0x5000 + index}:{key.hex()}")
        sinks.append(sink)
        transports.append(transport)
    process = await asyncio.create_subprocess_exec(
        str(binary),
        HOST,
        "0",
        "gcm",
        publisher_key.hex(),
        *destinations,
        stdout=asyncio.subprocess.PIPE,
    )
    assert process.stdout is not None
    line = (await asyncio.wait_for(process.stdout.readline(), 10)).decode().split()
    if line[:1] != ["ready"]:
        process.kill()
        raise RelayUnavailable(f"c_relay did not start: {line}")
    relay_addr = (HOST, int(line[1]))
    publisher, _ = await loop.create_datagram_endpoint(
        asyncio.DatagramProtocol, local_addr=(HOST, 0)
    )
    tx = _session(publisher_key, inbound=False)

    def send(packet: bytes) -> None:
        publisher.sendto(tx.protect(packet), relay_addr)

    relay = Relay("C relay", process.pid, send, sinks, close=lambda: _close())

    async def _close() -> None:
        if process.returncode is None:
            process.terminate()
        assert process.stdout is not None
        counters = (await process.stdout.read()).decode().strip()
        await process.wait()
        relay.notes.append(f"c_relay: {counters}")
        publisher.close()
        for transport in transports:
            transport.close()

    return relay
