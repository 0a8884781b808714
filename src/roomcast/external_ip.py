"""`rtc.use_external_ip`: the node's public address, learnt from STUN servers at start-up.

A node behind a 1:1 NAT (a cloud VM with an elastic IP) knows only its private address; its
candidates must carry the public one. As livekit-server does, ask the STUN servers of
`rtc.stun_servers` (Google's public ones when none are set) what address our requests come from
(a Binding request, RFC 8489 §6; the answer's XOR-MAPPED-ADDRESS, §14.2). The first server that
answers wins; when none does, the node does not start (a wrong address in every candidate would
make every call fail later, and quietly).
"""

from __future__ import annotations

import logging
import socket
import time

from aioice import stun

log = logging.getLogger(__name__)

# livekit-server's defaults when rtc.stun_servers is empty.
DEFAULT_STUN_SERVERS = ("stun.l.google.com:19302", "stun1.l.google.com:19302")
ATTEMPTS = 3  # requests per server (UDP may lose one)
ATTEMPT_TIMEOUT = 1.0  # seconds to wait for each answer


class ExternalIpError(RuntimeError):
    """No STUN server told us our address; the message says which were tried and why."""


def binding_request() -> stun.Message:
    return stun.Message(message_method=stun.Method.BINDING, message_class=stun.Class.REQUEST)


def mapped_address(data: bytes, request: stun.Message) -> str | None:
    """The address a Binding success response to `request` reports, or None."""
    try:
        message = stun.parse_message(data)
    except ValueError:
        return None
    if (
        message.transaction_id != request.transaction_id
        or message.message_method != stun.Method.BINDING
        or message.message_class != stun.Class.RESPONSE
    ):
        return None
    address = message.attributes.get("XOR-MAPPED-ADDRESS") or message.attributes.get(
        "MAPPED-ADDRESS"
    )
    return str(address[0]) if address else None


def _split(server: str) -> tuple[str, int]:
    text = server.removeprefix("stun:")
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit():
        return text, 3478  # RFC 8489 §6: the default STUN port
    return host.strip("[]"), int(port)


def discover(servers: list[str], bind_host: str = "0.0.0.0") -> tuple[str, str]:
    """(external IP, the server that told us); raises ExternalIpError."""
    tried = []
    for server in servers or list(DEFAULT_STUN_SERVERS):
        host, port = _split(server)
        try:
            family, _, _, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)[0]
        except OSError as exc:
            tried.append(f"{server}: {exc.strerror or exc}")
            continue
        with socket.socket(family, socket.SOCK_DGRAM) as sock:
            if family == socket.AF_INET:
                sock.bind((bind_host if ":" not in bind_host else "0.0.0.0", 0))
            for _ in range(ATTEMPTS):
                request = binding_request()
                try:
                    sock.sendto(bytes(request), address)
                except OSError as exc:
                    tried.append(f"{server}: {exc.strerror or exc}")
                    break
                deadline = time.monotonic() + ATTEMPT_TIMEOUT
                while (left := deadline - time.monotonic()) > 0:
                    sock.settimeout(left)
                    try:
                        data, _ = sock.recvfrom(2048)
                    except OSError:
                        break
                    found = mapped_address(data, request)
                    if found is not None:
                        return found, server
            else:
                tried.append(f"{server}: no answer")
    raise ExternalIpError(
        "rtc.use_external_ip: no STUN server told this node its external address ("
        + "; ".join(tried)
        + "); set rtc.stun_servers to reachable ones, or rtc.node_ip to the address"
    )
