"""Data channels: aiortc's SCTP association (RFC 8831/8832) running over our DTLS endpoint.

PIN-SENSITIVE: `RTCSctpTransport` expects an aiortc `RTCDtlsTransport`; `_DtlsLink` stands in
for it with exactly the members aiortc 1.16 touches (docs/protocol/15-interop-findings.md §2
"SCTP / data channels"):
  `state`                     read once in `RTCSctpTransport.__init__` (must not be "closed")
  `_role`                     "server"/"client": RFC 8832 §6 — DTLS server uses odd stream ids
  `_register_data_receiver`   called by `start()`
  `_unregister_data_receiver` called by `stop()`
  `async _send_data(bytes)`   every outgoing SCTP packet; we encrypt it as one DTLS record
Inbound, we call the (private) `RTCSctpTransport._handle_data(bytes)` with each decrypted
record. Check these five + `_handle_data` when bumping aiortc: the loopback tests in
tests/integration/test_transport_loopback.py exercise every one of them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, cast

from aiortc.rtcdatachannel import RTCDataChannel, RTCDataChannelParameters
from aiortc.rtcsctptransport import RTCSctpCapabilities, RTCSctpTransport

if TYPE_CHECKING:
    from aiortc.rtcdtlstransport import RTCDtlsTransport

SCTP_PORT = 5000  # RFC 8841 §5: default a=sctp-port
MAX_MESSAGE_SIZE = 262144  # what we advertise and assume (a=max-message-size, RFC 8841 §6)


class _DtlsLink:
    """The part of aiortc's RTCDtlsTransport that RTCSctpTransport uses (see module doc)."""

    def __init__(self, send_record: Callable[[bytes], None], *, server: bool) -> None:
        self.state = "connected"
        self._role = "server" if server else "client"
        self._send_record = send_record
        self._receiver: object | None = None

    def _register_data_receiver(self, receiver: object) -> None:
        self._receiver = receiver

    def _unregister_data_receiver(self, receiver: object) -> None:
        if self._receiver is receiver:
            self._receiver = None

    async def _send_data(self, data: bytes) -> None:
        # Synchronous underneath (encrypt + sendto); never raises, so aiortc's timers and
        # tasks see no exceptions after the transport went away.
        self._send_record(data)


class DataChannels:
    """Label-keyed data channels of one PeerConnection (labels, never stream ids, identify
    LiveKit's `_reliable` / `_lossy` / `_data_track`: the SDKs number them differently)."""

    def __init__(
        self,
        send_record: Callable[[bytes], None],
        *,
        server: bool,
        on_open: Callable[[str], None],
        on_message: Callable[[str, bytes], None],
    ) -> None:
        self._link = _DtlsLink(send_record, server=server)
        # Built now (needs the running loop) so channels can be created before DTLS is up;
        # aiortc queues their DCEP OPEN until the association is established.
        self._sctp = RTCSctpTransport(cast("RTCDtlsTransport", self._link), port=SCTP_PORT)
        self._sctp.on("datachannel", self._on_remote_channel)
        self._channels: dict[str, RTCDataChannel] = {}
        self._on_open = on_open
        self._on_message = on_message
        self.started = False

    def create(self, label: str, *, ordered: bool, max_retransmits: int | None) -> None:
        """Open a channel from our side (in-band DCEP, RFC 8832 §5)."""
        channel = RTCDataChannel(
            self._sctp,
            RTCDataChannelParameters(label=label, ordered=ordered, maxRetransmits=max_retransmits),
        )
        self._adopt(channel)
        channel.on("open", lambda: self._on_open(label))

    async def start(
        self, remote_port: int = SCTP_PORT, max_message_size: int = MAX_MESSAGE_SIZE
    ) -> None:
        """Start the association once DTLS is connected (both ends send INIT, RFC 8841 §9.3)."""
        if not self.started:
            self.started = True
            await self._sctp.start(
                RTCSctpCapabilities(maxMessageSize=max_message_size), remote_port
            )

    async def handle_packet(self, data: bytes) -> None:
        """One decrypted DTLS record = one SCTP packet (RFC 8261 §5)."""
        await self._sctp._handle_data(data)

    def send(self, label: str, payload: bytes) -> bool:
        channel = self._channels.get(label)
        if channel is None or channel.readyState != "open":
            return False
        try:
            channel.send(payload)
        except ValueError:  # larger than the peer's max-message-size
            return False
        return True

    def is_open(self, label: str) -> bool:
        channel = self._channels.get(label)
        return channel is not None and channel.readyState == "open"

    async def close(self) -> None:
        if self.started:
            await self._sctp.stop()  # sends ABORT (best effort) and closes every channel
        self._link.state = "closed"
        self._channels.clear()

    def _on_remote_channel(self, channel: RTCDataChannel) -> None:
        # aiortc marks a peer-opened channel open before emitting "datachannel".
        self._adopt(channel)
        self._on_open(channel.label)

    def _adopt(self, channel: RTCDataChannel) -> None:
        label = channel.label
        self._channels[label] = channel  # the latest channel with a label wins

        def on_message(message: bytes | str) -> None:
            self._on_message(label, message.encode() if isinstance(message, str) else message)

        def on_close() -> None:
            if self._channels.get(label) is channel:
                del self._channels[label]

        channel.on("message", on_message)
        channel.on("close", on_close)
