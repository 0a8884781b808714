"""Data channels: aiortc's SCTP association (RFC 8831/8832) running over our DTLS endpoint,
behind our own limits (`sctp_guard` for what we receive, `sctp_backlog` for what we send).

PIN-SENSITIVE: `RTCSctpTransport` expects an aiortc `RTCDtlsTransport`; `_DtlsLink` stands in
for it with exactly the members aiortc 1.16 touches (docs/protocol/15-interop-findings.md §2
"SCTP / data channels"):
  `state`                     read once in `RTCSctpTransport.__init__` (must not be "closed")
  `_role`                     "server"/"client": RFC 8832 §6 — DTLS server uses odd stream ids
  `_register_data_receiver`   called by `start()`
  `_unregister_data_receiver` called by `stop()`
  `async _send_data(bytes)`   every outgoing SCTP packet; we encrypt it as one DTLS record
Inbound, we call the (private) `RTCSctpTransport._handle_data(bytes)` with each decrypted
record that `ReceiveGuard` admits. `_AiortcReceiver` reads the receiver state the guard needs
from private attributes: `_last_received_tsn`, `_sack_misordered`, `_advertised_rwnd` (starts
at `RECEIVE_WINDOW_BYTES`) and `_inbound_streams[id].reassembly`. Once the association is
closed, `DataChannels._release` empties `_data_channel_queue`, `_outbound_queue`, `_sent_queue`
and `_inbound_streams`. Check all of these when bumping aiortc:
tests/integration/test_transport_loopback.py exercises the first group and
tests/unit/test_sctp_guard.py and test_sctp_backlog.py the others.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, cast

from aiortc.rtcdatachannel import RTCDataChannel, RTCDataChannelParameters
from aiortc.rtcsctptransport import RTCSctpCapabilities, RTCSctpTransport

from .sctp_backlog import SendBacklog, SendDecision
from .sctp_guard import RECEIVE_WINDOW_BYTES, ReceiveGuard, SctpViolation

if TYPE_CHECKING:
    from aiortc.rtcdtlstransport import RTCDtlsTransport

SCTP_PORT = 5000  # RFC 8841 §5: default a=sctp-port
MAX_MESSAGE_SIZE = 262144  # what we advertise and assume (a=max-message-size, RFC 8841 §6)

# (limit, fatal): a limit was applied; fatal ones aborted the association.
LimitListener = Callable[[str, bool], None]


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


class _AiortcReceiver:
    """`sctp_guard.ReceiverView` over aiortc's receiver state (see module doc)."""

    def __init__(self, sctp: RTCSctpTransport) -> None:
        self._sctp = sctp

    @property
    def cumulative_tsn(self) -> int | None:
        return self._sctp._last_received_tsn

    def has_received(self, tsn: int) -> bool:
        return tsn in self._sctp._sack_misordered

    @property
    def out_of_order(self) -> int:
        return len(self._sctp._sack_misordered)

    def has_stream(self, stream_id: int) -> bool:
        return stream_id in self._sctp._inbound_streams

    @property
    def stream_count(self) -> int:
        return len(self._sctp._inbound_streams)

    @property
    def held_bytes(self) -> int:
        # aiortc lowers its advertised window by every chunk it keeps and raises it by every
        # message it delivers or abandons (RFC 3758 §3.6).
        return RECEIVE_WINDOW_BYTES - self._sctp._advertised_rwnd

    @property
    def held_chunks(self) -> int:
        # At most MAX_INBOUND_STREAMS streams: the guard refuses more.
        return sum(len(stream.reassembly) for stream in self._sctp._inbound_streams.values())


class DataChannels:
    """Label-keyed data channels of one PeerConnection (labels, never stream ids, identify
    LiveKit's `_reliable` / `_lossy` / `_data_track`: the SDKs number them differently).

    `on_limit(limit, fatal)` hears every limit applied (a dropped chunk or message, or, when
    `fatal`, the association aborted, after which nothing is received or sent)."""

    def __init__(
        self,
        send_record: Callable[[bytes], None],
        *,
        server: bool,
        on_open: Callable[[str], None],
        on_message: Callable[[str, bytes], None],
        on_limit: LimitListener | None = None,
        backlog: SendBacklog | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._link = _DtlsLink(send_record, server=server)
        # Built now (needs the running loop) so channels can be created before DTLS is up;
        # aiortc queues their DCEP OPEN until the association is established.
        self._sctp = RTCSctpTransport(cast("RTCDtlsTransport", self._link), port=SCTP_PORT)
        if self._sctp._advertised_rwnd != RECEIVE_WINDOW_BYTES:  # pragma: no cover - pin check
            raise RuntimeError("aiortc's receive window changed: review sctp_guard's limits")
        self._sctp.on("datachannel", self._on_remote_channel)
        self._receiver = _AiortcReceiver(self._sctp)
        self._on_limit = on_limit or _ignore_limit
        self._guard = ReceiveGuard(on_drop=self._dropped)
        self._backlog = backlog or SendBacklog()
        self._clock = clock
        self._channels: dict[str, RTCDataChannel] = {}
        self._max_backlog: dict[str, int] = {}  # channels with their own backlog bound
        self._on_open = on_open
        self._on_message = on_message
        self.started = False
        self.aborted: str | None = None  # the limit that aborted the association
        self._aborting = False

    def create(
        self,
        label: str,
        *,
        ordered: bool,
        max_retransmits: int | None,
        max_backlog: int | None = None,
    ) -> None:
        """Open a channel from our side (in-band DCEP, RFC 8832 §5). With `max_backlog`, a
        message is dropped when the association would then hold more than that many bytes,
        instead of the `SendBacklog` policy (for partially reliable channels whose owner
        decides what to drop, such as `_data_track`)."""
        if max_backlog is not None:
            self._max_backlog[label] = max_backlog
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
        """One decrypted DTLS record = one SCTP packet (RFC 8261 §5), through the guard."""
        if self.aborted is not None:
            return
        receiver = self._receiver
        try:
            packet = self._guard.admit(data, receiver)
            if packet is None:
                return
            await self._sctp._handle_data(packet)
            self._guard.check(receiver)
        except SctpViolation as violation:
            await self.abort(violation.limit)

    def send(self, label: str, payload: bytes) -> bool:
        channel = self._channels.get(label)
        if channel is None or channel.readyState != "open" or self.aborted is not None:
            return False
        reliable = channel.maxRetransmits is None and channel.maxPacketLifeTime is None
        max_backlog = self._max_backlog.get(label)
        if max_backlog is not None and not reliable:
            if self.buffered + len(payload) > max_backlog:
                self._on_limit("channel_backlog", False)
                return False
            return self._send(channel, payload)
        decision = self._backlog.decide(
            reliable=reliable, size=len(payload), buffered=self.buffered, now=self._clock()
        )
        if decision is SendDecision.DROP:
            self._on_limit("reliable_slow_reader" if reliable else "lossy_backlog", False)
            return False
        if decision is SendDecision.DISCONNECT:
            # Not from here: we may be inside a room's fan-out loop.
            asyncio.get_running_loop().create_task(self.abort("reliable_backlog"))
            self.aborted = "reliable_backlog"
            return False
        return self._send(channel, payload)

    def _send(self, channel: RTCDataChannel, payload: bytes) -> bool:
        try:
            channel.send(payload)
        except ValueError:  # larger than the peer's max-message-size
            return False
        self._backlog.sent(len(payload))
        return True

    @property
    def buffered(self) -> int:
        """Bytes queued on every channel and not yet handed to SCTP (W3C `bufferedAmount`)."""
        return sum(channel.bufferedAmount for channel in self._channels.values())

    def is_open(self, label: str) -> bool:
        channel = self._channels.get(label)
        return channel is not None and channel.readyState == "open" and self.aborted is None

    async def abort(self, limit: str) -> None:
        """Abort the association (RFC 9260 §9.1: ABORT, then closed) for a broken limit, and
        tell `on_limit`. Once only."""
        self.aborted = limit
        if self._aborting:
            return
        self._aborting = True
        try:
            await self._sctp.stop()  # sends ABORT while DTLS can still carry it
        finally:
            self._channels.clear()
            self._release()
            self._on_limit(limit, True)

    async def close(self) -> None:
        if self.started:
            await self._sctp.stop()  # sends ABORT (best effort) and closes every channel
        self._link.state = "closed"
        self._channels.clear()
        self._release()

    def _release(self) -> None:
        """Drop what the closed association still holds: the messages queued for a peer that
        stopped acknowledging (up to the 2 MiB backlog), those sent and unacknowledged, the
        chunks held for reassembly. aiortc keeps them, and its objects refer to each other,
        so without this they lived until the next full garbage collection: a node running
        the never-acknowledging subscriber attack grew by ~15 MiB a minute (bench/hostile)."""
        sctp = self._sctp
        sctp._data_channel_queue.clear()
        sctp._outbound_queue.clear()
        sctp._sent_queue.clear()
        sctp._inbound_streams.clear()

    def _dropped(self, limit: str) -> None:
        self._on_limit(limit, False)

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


def _ignore_limit(limit: str, fatal: bool) -> None:
    """No listener: the association still aborts on a fatal limit."""
