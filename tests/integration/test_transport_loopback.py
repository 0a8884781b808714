"""PeerTransport over real loopback UDP against a from-parts WebRTC client.

The client is what libwebrtc does, built from independent pieces: Binding requests from
`aioice.stun` (USERNAME, PRIORITY, ICE-CONTROLLING, MESSAGE-INTEGRITY, FINGERPRINT), a
`SecureChannel` in the DTLS *client* role (the server's own DTLS-SRTP code, other side) and
aiortc's SCTP in the client role. The same handshake, ICE restart, consent expiry and
fingerprint mismatch run without sockets in tests/unit/test_secure_channel.py; these tests are
the end-to-end proof over real UDP. Every wait is on an event with a timeout; nothing sleeps.
"""

from __future__ import annotations

import asyncio
import re
import socket
import struct
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest
from aioice import stun
from aioice.ice import get_host_addresses
from aiortc import RTCDataChannel, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import AudioStreamTrack

from roomcast.media.demux import PacketClass, classify
from roomcast.media.dtls import DtlsCertificate
from roomcast.media.sctp import DataChannels
from roomcast.media.secure_channel import SecureChannel, TransportState
from roomcast.media.stun import IceLiteResponder
from roomcast.media.transport import PeerTransport
from roomcast.media.udp_mux import UdpMux

TIMEOUT = 5.0
RTP = struct.pack("!BBHII", 0x80, 0x80 | 111, 7, 960, 0xCAFE0001) + b"\x01opus" * 20
RTCP_RR = struct.pack("!BBHI", 0x80, 201, 1, 0xCAFE0001)


@dataclass
class Recorder:
    """Collects callbacks and lets a test await the n-th occurrence of something."""

    items: list[object] = field(default_factory=list)
    _changed: asyncio.Event = field(default_factory=asyncio.Event)

    def add(self, item: object) -> None:
        self.items.append(item)
        self._changed.set()

    async def wait_for(self, item: object) -> None:
        async def until() -> None:
            while item not in self.items:
                self._changed.clear()
                await self._changed.wait()

        await asyncio.wait_for(until(), TIMEOUT)


class TestClient(asyncio.DatagramProtocol):
    """A hand-driven controlling ICE agent (`check`) on one UDP socket, over the shared parts:
    the RFC 7983 classifier, a `SecureChannel` in the DTLS client role and aiortc's SCTP."""

    __test__ = False  # not a pytest class

    def __init__(self, server: PeerTransport, server_addr: tuple[str, int]) -> None:
        self.server = server
        self.server_addr = server_addr
        self.ufrag = "cli1"
        self.pwd = "client-password-0123456789"  # what its SDP would carry
        self.responder = IceLiteResponder(self.ufrag, self.pwd)
        self.answered = 0  # the server's own checks this client answered
        self.certificate = DtlsCertificate.generate()
        self.channel = SecureChannel(self.certificate, server=False)
        self.channel.set_remote_fingerprint(server.fingerprint)  # from the server's SDP
        self.stun_responses: dict[bytes, asyncio.Future[stun.Message]] = {}
        self.opened = Recorder()
        self.messages = Recorder()
        self.rtp = Recorder()
        self.connected = asyncio.Event()
        self.udp: asyncio.DatagramTransport | None = None
        self.sctp_inbox: asyncio.Queue[bytes | None] = asyncio.Queue()
        self.sctp_task: asyncio.Task[None] | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.loop = asyncio.get_running_loop()
        self.channels = DataChannels(
            self._send_record,
            server=False,
            on_open=self.opened.add,
            on_message=lambda label, data: self.messages.add((label, data)),
        )

    async def open(self) -> None:
        await self._bind()
        self.sctp_task = asyncio.create_task(self._run_sctp())

    async def _bind(self) -> None:
        self.udp, _ = await self.loop.create_datagram_endpoint(
            lambda: self, local_addr=("127.0.0.1", 0)
        )

    @property
    def address(self) -> tuple[str, int]:
        assert self.udp is not None
        host, port = self.udp.get_extra_info("sockname")[:2]
        return host, port

    async def move(self) -> None:
        """Change networks: the same client, DTLS and SRTP, from a new socket."""
        assert self.udp is not None
        old, self.udp = self.udp, None
        await self._bind()
        old.close()

    async def _run_sctp(self) -> None:
        """aiortc's SCTP handlers are async: feed them one packet at a time, in order."""
        while True:
            record = await self.sctp_inbox.get()
            if record is None:
                await self.channels.start()
            else:
                await self.channels.handle_packet(record)

    async def check(
        self,
        *,
        use_candidate: bool = False,
        pwd: str | None = None,
        ufrag: str | None = None,
        timeout: float = 1.0,
    ) -> stun.Message | None:
        """One connectivity check; the response, or None if nothing came back in time."""
        request = stun.Message(stun.Method.BINDING, stun.Class.REQUEST)
        request.attributes["USERNAME"] = f"{ufrag or self.server.ice_ufrag}:{self.ufrag}"
        request.attributes["PRIORITY"] = 1853824767
        request.attributes["ICE-CONTROLLING"] = 0x0102030405060708
        if use_candidate:
            request.attributes["USE-CANDIDATE"] = None
        request.add_message_integrity((pwd or self.server.ice_pwd).encode())
        future = self.loop.create_future()
        self.stun_responses[request.transaction_id] = future
        self._send(bytes(request))
        try:
            return await asyncio.wait_for(future, timeout)
        except TimeoutError:
            return None

    def start_dtls(self) -> None:
        self.channel.start(self.loop.time())
        self.flush()

    def send_srtp(self, packet: bytes, *, rtcp: bool = False) -> None:
        self._send(self.channel.protect_rtcp(packet) if rtcp else self.channel.protect_rtp(packet))

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        kind = classify(data[0])
        if kind is PacketClass.STUN:
            message = stun.parse_message(data)
            if message.message_class == stun.Class.REQUEST:  # the server checks us back
                response = self.responder.handle(message, addr).response
                if response is not None:
                    self.answered += 1
                    self._send(response)
                return
            future = self.stun_responses.pop(message.transaction_id, None)
            if future is not None and not future.done():
                future.set_result(message)
        elif kind is PacketClass.DTLS:
            records = self.channel.receive(data, self.loop.time())
            self.flush()
            if self.channel.state is TransportState.CONNECTED and not self.connected.is_set():
                self.connected.set()
                self.sctp_inbox.put_nowait(None)  # start the association first
            for record in records:
                self.sctp_inbox.put_nowait(record)
        elif kind is PacketClass.RTP and self.channel.state is TransportState.CONNECTED:
            self.rtp.add(self.channel.unprotect(data)[0])

    def _send_record(self, data: bytes) -> None:
        if self.channel.send_record(data):
            self.flush()

    def flush(self) -> None:
        """Send what the channel produced and follow its next timeout (retransmissions)."""
        for datagram in self.channel.datagrams_to_send():
            self._send(datagram)
        if self.timer is not None:
            self.timer.cancel()
        due = self.channel.next_timeout()
        self.timer = None if due is None else self.loop.call_at(due, self._on_timer)

    def _on_timer(self) -> None:
        self.timer = None
        self.channel.handle_timeout(self.loop.time())
        self.flush()

    def _send(self, data: bytes) -> None:
        assert self.udp is not None
        self.udp.sendto(data, self.server_addr)

    async def close(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
        if self.sctp_task is not None:
            self.sctp_task.cancel()
        await self.channels.close()
        if self.udp is not None:
            self.udp.close()


@pytest.fixture
async def mux() -> AsyncIterator[UdpMux]:
    mux = UdpMux("127.0.0.1", 0, consent_timeout=30.0)
    await mux.start()
    yield mux
    await mux.close()


async def connect(
    mux: UdpMux, transport: PeerTransport, *, answer_first: bool = True
) -> TestClient:
    """ICE, then DTLS. `answer_first`: the server has the client's a=fingerprint before the
    handshake (otherwise the test gives it, and the transport holds until then)."""
    client = TestClient(transport, ("127.0.0.1", mux.port))
    if answer_first:
        transport.set_remote_fingerprint(client.certificate.fingerprint())
    await client.open()
    response = await client.check()  # first check: no USE-CANDIDATE, as libwebrtc does
    assert response is not None
    assert response.message_class == stun.Class.RESPONSE
    assert response.check_message_integrity(transport.ice_pwd.encode())
    assert response.attributes["XOR-MAPPED-ADDRESS"] == client.udp.get_extra_info("sockname")  # type: ignore[union-attr]
    # DTLS before nomination (docs/protocol/15-interop-findings.md): the address is already mapped
    client.start_dtls()
    await asyncio.wait_for(client.connected.wait(), TIMEOUT)
    assert await client.check(use_candidate=True) is not None
    return client


async def test_wrong_remote_fingerprint_fails(mux: UdpMux) -> None:
    states = Recorder()
    transport = mux.create_transport(on_state=states.add)
    transport.set_remote_fingerprint(mux.certificate.fingerprint())  # not the client's cert
    client = TestClient(transport, ("127.0.0.1", mux.port))
    await client.open()
    assert await client.check() is not None
    client.start_dtls()
    opened = Recorder()
    transport.on_channel_open = opened.add
    await states.wait_for("failed")
    assert states.items == ["connecting", "failed"]
    await asyncio.wait_for(client.connected.wait(), TIMEOUT)  # the client's side completed
    client.channels.create("_reliable", ordered=True, max_retransmits=None)
    assert await client.check() is not None  # a round trip later: nothing was delivered
    assert opened.items == []
    transport.send_rtp(RTP)  # no-op, no exception
    await client.close()


async def test_peer_close_notify_then_close_unregisters(mux: UdpMux) -> None:
    states = Recorder()
    transport = mux.create_transport(on_state=states.add)
    client = await connect(mux, transport)
    # what the SDKs do on disconnect (docs/protocol/15-interop-findings.md §4)
    client.channel.close()
    client.flush()
    await states.wait_for("closed")
    assert states.items == ["connecting", "connected", "closed"]
    await transport.close()  # still required, and still effective
    assert await client.check(timeout=0.2) is None
    assert mux.stats["stun_dropped"] == 1
    await client.close()


async def test_full_session(mux: UdpMux) -> None:
    states = Recorder()
    server_opened = Recorder()
    server_data = Recorder()
    server_rtp = Recorder()
    server_rtcp = Recorder()
    transport = mux.create_transport(on_state=states.add)
    transport.on_channel_open = server_opened.add
    transport.on_data = lambda label, data: server_data.add((label, data))
    transport.on_rtp = server_rtp.add
    transport.on_rtcp = server_rtcp.add
    transport.create_data_channel("_reliable")
    transport.create_data_channel("_lossy", ordered=False, max_retransmits=0)
    assert transport.state == "new"
    assert transport.local_candidates() == [
        f"candidate:1 1 udp 2130706431 127.0.0.1 {mux.port} typ host generation 0"
    ]
    assert transport.send_data("_reliable", b"too early") is False
    transport.send_rtp(RTP)  # no-op until connected

    client = await connect(mux, transport, answer_first=False)
    # The client's answer (with its fingerprint) may arrive after DTLS is done: until it is
    # checked, the transport is not connected and nothing flows (security review L5).
    assert states.items == ["connecting"]
    transport.send_rtp(RTP)  # no-op
    transport.set_remote_fingerprint(client.certificate.fingerprint())
    assert states.items == ["connecting", "connected"]

    # Server-created channels open on the client (DCEP, odd stream ids: we are DTLS server).
    await client.opened.wait_for("_reliable")
    await client.opened.wait_for("_lossy")
    await server_opened.wait_for("_reliable")
    assert transport.has_channel("_reliable") and transport.has_channel("_lossy")

    # Client-created channel: arrives by label, messages reach on_data with that label.
    client.channels.create("_data_track", ordered=False, max_retransmits=0)
    await server_opened.wait_for("_data_track")
    await client.opened.wait_for("_data_track")
    assert client.channels.send("_data_track", b"\x00\x01packet")
    await server_data.wait_for(("_data_track", b"\x00\x01packet"))
    assert client.channels.send("_reliable", b"on the server's channel")
    await server_data.wait_for(("_reliable", b"on the server's channel"))

    # Server → client on a server-created channel.
    assert transport.send_data("_reliable", b"hello client")
    await client.messages.wait_for(("_reliable", b"hello client"))
    assert transport.send_data("missing", b"x") is False

    # SRTP both ways.
    client.send_srtp(RTP)
    await server_rtp.wait_for(RTP)
    client.send_srtp(RTCP_RR, rtcp=True)
    await server_rtcp.wait_for(RTCP_RR)
    transport.send_rtp(RTP)
    await client.rtp.wait_for(RTP)
    assert transport.stats["srtp_unprotect_failed"] == 0

    # A forged SRTP packet is dropped and counted, nothing reaches on_rtp.
    before = len(server_rtp.items)
    assert client.udp is not None
    client.udp.sendto(RTP + bytes(16), ("127.0.0.1", mux.port))
    assert await client.check() is not None  # a round trip later the forgery was processed
    assert transport.stats["srtp_unprotect_failed"] == 1
    assert len(server_rtp.items) == before

    await transport.close()
    assert states.items[-1] == "closed"
    assert transport.has_channel("_reliable") is False
    assert await client.check(timeout=0.2) is None  # unregistered: checks are dropped, not answered
    await client.close()


async def test_unknown_ufrag_bad_password_and_unmapped_address(mux: UdpMux) -> None:
    transport = mux.create_transport()
    client = TestClient(transport, ("127.0.0.1", mux.port))
    await client.open()
    response = await client.check(pwd="wrong-password-wrong-password")
    assert response is not None and response.error_code == 401
    assert transport.state == "new" and transport.stats["stun_unauthorized"] == 1
    assert (
        await client.check(ufrag="nobody", timeout=0.2) is None
    )  # unknown ufrag: silently dropped
    assert mux.stats["stun_dropped"] == 1
    # DTLS from an address that never passed a check is dropped before any parsing.
    client.start_dtls()
    assert client.udp is not None
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as raw:  # asyncio won't send b""
        raw.sendto(b"", ("127.0.0.1", mux.port))
    client.udp.sendto(b"\xff" * 20, ("127.0.0.1", mux.port))  # outside every RFC 7983 range
    assert await client.check(pwd="wrong-password-wrong-password") is not None  # round trip
    assert mux.stats["dropped"] == 3 and transport.state == "new"
    assert mux.stats["errors"] == 0
    await client.close()


async def test_consent_expiry_marks_failed() -> None:
    mux = UdpMux("127.0.0.1", 0, consent_timeout=0.3)
    await mux.start()
    try:
        states = Recorder()
        transport = mux.create_transport(on_state=states.add)
        client = await connect(mux, transport)
        await states.wait_for("failed")  # no more checks after connect → consent expires
        assert states.items == ["connecting", "connected", "failed"]
        await client.close()
    finally:
        await mux.close()


def answer_sdp(offer: str, transport: PeerTransport) -> str:
    """Hand-written answer (the SDP module is not ours): audio recvonly + data, ice-lite."""
    mids = re.findall(r"a=mid:(\S+)", offer)
    pt = re.search(r"a=rtpmap:(\d+) opus/48000/2", offer)
    assert len(mids) == 2 and pt is not None
    common = [
        "c=IN IP4 0.0.0.0",
        f"a=ice-ufrag:{transport.ice_ufrag}",
        f"a=ice-pwd:{transport.ice_pwd}",
        f"a=fingerprint:{transport.fingerprint}",
        "a=setup:passive",
        *(f"a={c}" for c in transport.local_candidates()),
        "a=end-of-candidates",
    ]
    lines = [
        "v=0",
        "o=- 1 1 IN IP4 127.0.0.1",
        "s=-",
        "t=0 0",
        f"a=group:BUNDLE {' '.join(mids)}",
        "a=ice-lite",
        f"m=audio 9 UDP/TLS/RTP/SAVPF {pt[1]}",
        *common,
        f"a=mid:{mids[0]}",
        "a=recvonly",
        "a=rtcp-mux",
        f"a=rtpmap:{pt[1]} opus/48000/2",
        "m=application 9 UDP/DTLS/SCTP webrtc-datachannel",
        *common,
        f"a=mid:{mids[1]}",
        "a=sctp-port:5000",
        "a=max-message-size:262144",
    ]
    return "\r\n".join(lines) + "\r\n"


@pytest.mark.skipif(
    not get_host_addresses(use_ipv4=True, use_ipv6=False),
    reason="aiortc never gathers 127.0.0.1; it needs a non-loopback IPv4 address",
)
async def test_aiortc_peer_connection_as_client(mux: UdpMux) -> None:
    """An independent WebRTC stack (aiortc's ICE, DTLS, SCTP, SRTP) as the client: it checks
    from its interface address to our 127.0.0.1 candidate, as libwebrtc does
    (docs/protocol/15-interop-findings.md)."""
    states = Recorder()
    server_opened = Recorder()
    server_data = Recorder()
    client_data = Recorder()
    first_rtp: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
    transport = mux.create_transport(on_state=states.add)
    transport.on_channel_open = server_opened.add
    transport.on_data = lambda label, data: server_data.add((label, data))

    def on_rtp(packet: bytes) -> None:
        if not first_rtp.done():
            first_rtp.set_result(packet)

    transport.on_rtp = on_rtp
    transport.create_data_channel("_reliable")

    pc = RTCPeerConnection()
    try:
        channel = pc.createDataChannel("_data_track", ordered=False, maxRetransmits=0)
        channel.on("open", lambda: channel.send(b"hi from aiortc"))

        @pc.on("datachannel")
        def on_datachannel(remote: RTCDataChannel) -> None:
            remote.on("message", lambda m: client_data.add((remote.label, m)))
            client_data.add(remote.label)

        pc.addTrack(AudioStreamTrack())
        await pc.setLocalDescription(await pc.createOffer())
        offer = pc.localDescription.sdp
        fingerprint = re.search(r"a=fingerprint:(sha-256 \S+)", offer)
        assert fingerprint is not None
        transport.set_remote_fingerprint(fingerprint[1])
        ufrag, pwd = re.search(r"a=ice-ufrag:(\S+)", offer), re.search(r"a=ice-pwd:(\S+)", offer)
        assert ufrag is not None and pwd is not None
        transport.set_remote_ice(ufrag[1], pwd[1])  # to check a nominated address with
        await pc.setRemoteDescription(RTCSessionDescription(answer_sdp(offer, transport), "answer"))

        await states.wait_for("connected")
        await server_opened.wait_for("_data_track")
        await server_data.wait_for(("_data_track", b"hi from aiortc"))
        await client_data.wait_for("_reliable")  # our DCEP open adopted by label
        await server_opened.wait_for("_reliable")
        assert transport.send_data("_reliable", b"hello aiortc")
        await client_data.wait_for(("_reliable", b"hello aiortc"))
        packet = await asyncio.wait_for(first_rtp, TIMEOUT)  # opus from AudioStreamTrack
        assert packet[0] >> 6 == 2 and len(packet) > 12
        assert transport.state == "connected" and transport.stats["srtp_unprotect_failed"] == 0
    finally:
        await pc.close()


def test_unspecified_bind_address_needs_advertise_ip() -> None:
    with pytest.raises(ValueError):
        UdpMux("0.0.0.0", 0)
    assert UdpMux("0.0.0.0", 0, advertise_ip="192.0.2.2").advertise_ip == "192.0.2.2"
    with pytest.raises(ValueError):
        UdpMux("localhost", 0)  # candidates need an IP address


@pytest.mark.parametrize(
    "candidate",
    [
        "candidate:1 1 udp 2130706431 192.0.2.2 50000 typ host generation 0",
        "a=candidate:842163049 1 udp 1677729535 198.51.100.1 3478 typ srflx raddr 0.0.0.0 rport 0",
        "candidate:3 1 tcp 1518280447 192.0.2.2 9 typ host tcptype active",
        "candidate:4 1 UDP 2122260223 fd00::2 58982 typ host",
        "",  # end-of-candidates
    ],
)
async def test_remote_candidates_are_validated_and_ignored(mux: UdpMux, candidate: str) -> None:
    mux.create_transport().add_remote_candidate(candidate)


@pytest.mark.parametrize(
    "candidate",
    [
        "typ host",
        "candidate:1 1 udp 2130706431 192.0.2.2",
        "candidate:1 1 sctp 2130706431 192.0.2.2 50000 typ host",
        "candidate:1 x udp 2130706431 192.0.2.2 50000 typ host",
        "candidate:1 1 udp 2130706431 192.0.2.2 70000 typ host",
    ],
)
async def test_malformed_remote_candidates_raise(mux: UdpMux, candidate: str) -> None:
    with pytest.raises(ValueError):
        mux.create_transport().add_remote_candidate(candidate)


async def test_ice_restart_rotates_credentials_and_keeps_srtp(mux: UdpMux) -> None:
    transport = mux.create_transport()
    transport.set_remote_ice("cli1", "client-password-1234567")
    received = Recorder()
    transport.on_rtp = received.add
    client = await connect(mux, transport)
    old_ufrag, old_pwd = transport.ice_ufrag, transport.ice_pwd
    # Same remote credentials again (a renegotiation): nothing changes.
    assert transport.set_remote_ice("cli1", "client-password-1234567") is False
    assert transport.ice_ufrag == old_ufrag
    # New remote credentials in an offer: an ICE restart, so ours change too (RFC 8839).
    assert transport.set_remote_ice("cli2", "client-password-abcdefg") is True
    new_ufrag, new_pwd = transport.ice_ufrag, transport.ice_pwd
    assert (new_ufrag, new_pwd) != (old_ufrag, old_pwd)
    # Until a check with the new credentials arrives, the old ones still work …
    assert await client.check(ufrag=old_ufrag, pwd=old_pwd) is not None
    # … and the new ones work at once; after that, the old ones are forgotten.
    response = await client.check(ufrag=new_ufrag, pwd=new_pwd, use_candidate=True)
    assert response is not None and response.check_message_integrity(new_pwd.encode())
    assert await client.check(ufrag=old_ufrag, pwd=old_pwd, timeout=0.3) is None
    # DTLS and SRTP were not restarted: media keeps flowing both ways.
    client.send_srtp(RTP)
    await received.wait_for(RTP)
    transport.send_rtp(RTP)
    await client.rtp.wait_for(RTP)
    await client.close()
    await transport.close()
    assert mux.transport_count == 0  # both ufrags unregistered


async def test_media_follows_a_client_to_a_new_address_once_it_answers(mux: UdpMux) -> None:
    """A client that changes networks nominates its new address; the transport checks it
    back (through the mux, which routes the answer by address) and only then sends there."""
    transport = mux.create_transport()
    received = Recorder()
    transport.on_rtp = received.add
    client = await connect(mux, transport)
    transport.set_remote_ice(client.ufrag, client.pwd)  # from the client's answer
    first = client.address
    assert transport.remote_address == first
    await client.move()
    assert await client.check() is not None  # not nominating: nothing changes
    assert transport.remote_address == first and client.answered == 0
    assert await client.check(use_candidate=True) is not None
    assert await client.check() is not None  # a round trip later our answer was handled
    assert client.answered == 1 and transport.stats["ice_probes"] == 1
    assert transport.remote_address == client.address != first
    assert transport.stats["ice_address_changes"] == 1
    transport.send_rtp(RTP)
    await client.rtp.wait_for(RTP)
    client.send_srtp(RTP)
    await received.wait_for(RTP)
    assert transport.state == "connected"
    await client.close()
    await transport.close()
