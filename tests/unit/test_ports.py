"""Bind failures become one sentence naming the protocol, address, port and setting."""

from __future__ import annotations

import errno
import socket

import pytest

from roomcast.config import Config
from roomcast.edge.ports import HTTP, MEDIA, PROMETHEUS, BindError, bind_failure, check_ports


def test_the_errno_is_found_on_the_cause_as_uvloop_raises_it() -> None:
    try:
        try:
            raise OSError(errno.EADDRINUSE, "Address already in use")
        except OSError as cause:
            raise OSError("could not bind to local_addr ('127.0.0.1', 7882)") from cause
    except OSError as exc:
        message = str(bind_failure(MEDIA, "127.0.0.1", 7882, exc))
    assert message == (
        "UDP port 7882 on 127.0.0.1 (WebRTC media) is already in use by another process; stop "
        "it, or choose another port with --udp-port (YAML: rtc.udp_port)"
    )


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        (errno.EACCES, "permission denied (ports below 1024 need privileges)"),
        (errno.EADDRNOTAVAIL, "10.9.9.9 is not an address of this machine; check --bind"),
        (errno.ENOBUFS, "cannot be bound: No buffer space available; see --port (YAML: port)"),
    ],
)
def test_other_bind_failures_say_what_to_check(code: int, expected: str) -> None:
    message = str(bind_failure(HTTP, "10.9.9.9", 80, OSError(code, "x")))
    assert message.startswith("TCP port 80 on 10.9.9.9 (HTTP/WebSocket")
    assert expected in message


def test_workers_check_the_http_and_prometheus_ports() -> None:
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        config = Config(keys={"k": "s"}, bind_addresses=["127.0.0.1"], port=port)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.bind(("127.0.0.1", 0))
            config.rtc.udp_port = udp.getsockname()[1]
        with pytest.raises(BindError, match=f"TCP port {port} on 127.0.0.1 \\(HTTP"):
            check_ports(config, 2)
        with socket.socket() as free:
            free.bind(("127.0.0.1", 0))
            config.port = free.getsockname()[1]
        config.prometheus.port = port
        with pytest.raises(BindError, match=f"TCP port {port} .*Prometheus"):
            check_ports(config, 1)
    assert PROMETHEUS.setting == "prometheus.port in the YAML config"
