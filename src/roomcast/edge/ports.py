"""The ports a node listens on, and one clear sentence when one of them cannot be had.

A port that is taken must not reach the user as "could not bind to local_addr" (uvloop's words,
without the cause) after the log has already announced a URL: the server binds every port
before it announces anything (server.py), and a failure names the protocol, the address, the
port, what it is for and the flag or key that moves it. ``roomcast serve --workers`` checks the
ports before it starts any worker (``check_free``), because workers share the HTTP port with
``SO_REUSEPORT`` and would otherwise quietly share it with another server doing the same.
"""

from __future__ import annotations

import errno
import os
import socket
from dataclasses import dataclass

from roomcast.config import Config


@dataclass(frozen=True, slots=True)
class Listener:
    protocol: str  # "TCP" or "UDP"
    purpose: str
    setting: str  # the flag and/or YAML key that chooses the port


HTTP = Listener("TCP", "HTTP/WebSocket: API, signalling, playground", "--port (YAML: port)")
MEDIA = Listener("UDP", "WebRTC media", "--udp-port (YAML: rtc.udp_port)")
ICE_TCP = Listener("TCP", "WebRTC ICE over TCP", "rtc.tcp_port in the YAML config (0: off)")
PROMETHEUS = Listener("TCP", "Prometheus /metrics", "prometheus.port in the YAML config")


class BindError(Exception):
    """A port could not be bound; the message is the one line to show."""


def _errno_of(exc: BaseException) -> int | None:
    """The errno, also when it is on the cause (uvloop raises a bare "could not bind")."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno is not None:
            return seen.errno
        seen = seen.__cause__ or seen.__context__
    return None


def bind_failure(listener: Listener, host: str, port: int, exc: OSError) -> BindError:
    where = f"{listener.protocol} port {port} on {host} ({listener.purpose})"
    code = _errno_of(exc)
    if code == errno.EADDRINUSE:
        return BindError(
            f"{where} is already in use by another process; stop it, or choose another port "
            f"with {listener.setting}"
        )
    if code == errno.EACCES:
        return BindError(
            f"{where}: permission denied (ports below 1024 need privileges); choose another "
            f"port with {listener.setting}"
        )
    if code == errno.EADDRNOTAVAIL:
        return BindError(
            f"{where}: {host} is not an address of this machine; check --bind or `bind_addresses`"
        )
    reason = os.strerror(code) if code is not None else str(exc)
    return BindError(f"{where} cannot be bound: {reason}; see {listener.setting}")


def check_free(listener: Listener, host: str, port: int) -> None:
    """Raise ``BindError`` when ``port`` cannot be bound on ``host`` right now. The probe
    socket does not set ``SO_REUSEPORT``, so a port held by sockets that do (another
    ``--workers`` server) counts as taken."""
    kind = socket.SOCK_STREAM if listener.protocol == "TCP" else socket.SOCK_DGRAM
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, kind) as probe:
        if kind == socket.SOCK_STREAM:  # as the server binds: TIME_WAIT leftovers are fine
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise bind_failure(listener, host, port, exc) from exc


def media_host(bind_addresses: list[str]) -> str:
    """The one UDP socket's address: the bound address when there is exactly one."""
    return bind_addresses[0] if len(bind_addresses) == 1 else "0.0.0.0"


def check_ports(config: Config, workers: int) -> None:
    """Before ``--workers`` starts anything: the HTTP port on every listen address, each
    worker's UDP port (``udp_port + i``) and ICE-TCP port (``tcp_port + i``), and the Prometheus
    port (``BindError`` if taken)."""
    addresses = config.bind_addresses or ["0.0.0.0"]
    for host in addresses:
        check_free(HTTP, host, config.port)
    for index in range(workers):
        worker_media = Listener(
            "UDP",
            f"WebRTC media of worker {index}",
            "--udp-port (YAML: rtc.udp_port; worker N uses that port + N)",
        )
        check_free(worker_media, media_host(addresses), config.effective_udp_port + index)
        if config.rtc.tcp_port:
            worker_tcp = Listener(
                "TCP",
                f"WebRTC ICE over TCP of worker {index}",
                "rtc.tcp_port in the YAML config (worker N uses that port + N; 0: off)",
            )
            check_free(worker_tcp, media_host(addresses), config.rtc.tcp_port + index)
    prometheus = config.prometheus.port or config.prometheus_port
    if prometheus:
        for host in addresses:
            check_free(PROMETHEUS, host, prometheus)
