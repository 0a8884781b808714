"""The TURN keys of the configuration: livekit-server's `turn:` section (the embedded TURN
server, roomcast/turn) and `rtc.turn_servers` (external TURN servers handed to clients).

Dataclasses whose field names are the YAML keys (config.py builds them), and their checks: a bad
value raises `TurnConfigError` naming the key, which config.py reports as a ConfigError, so the
server refuses to start.
"""

from __future__ import annotations

import ipaddress
import re
import ssl
import stat
from dataclasses import dataclass, field
from pathlib import Path

TURN_MAX_TTL = 24 * 60 * 60  # s: the longest credential lifetime, as livekit-server caps it
TURN_DEFAULT_TTL = 300  # s: embedded TURN credentials (turn.ttl_seconds)
TURN_DEFAULT_EXTERNAL_TTL = 14400  # s: TURN REST API credentials (rtc.turn_servers[].ttl)
# livekit-server's relay ports when relay_range_start or relay_range_end is unset
DEFAULT_RELAY_RANGE = (30000, 40000)
TURN_PROTOCOLS = ("udp", "tcp", "tls")


class TurnConfigError(ValueError):
    """A TURN key has a value Roomcast cannot use; the message names the key."""


@dataclass
class TURNServerConfig:
    """An external TURN server handed to clients (rtc.turn_servers), with static credentials
    or a shared secret for the TURN REST API's time-limited ones (turn/ice_servers.py)."""

    host: str = ""
    port: int = 0
    protocol: str = ""  # udp | tcp | tls
    username: str = ""
    credential: str = ""
    secret: str = ""
    secret_file: str = ""  # read at start-up; an inline `secret` wins
    ttl: int = 0  # s; 0: TURN_DEFAULT_EXTERNAL_TTL


@dataclass
class TURNConfig:
    """The embedded TURN server (roomcast/turn), livekit-server's `turn:` section. TURN over TCP
    is served on `udp_port` too (coturn's convention); `tls_port` is TLS, or plain TCP behind a
    TLS-terminating load balancer on 443 with `external_tls`."""

    enabled: bool = False
    domain: str = ""  # the host of the turns: URL; the certificate must name it
    cert_file: str = ""
    key_file: str = ""
    tls_port: int = 0
    udp_port: int = 0
    relay_range_start: int = 0  # 0 (either): DEFAULT_RELAY_RANGE
    relay_range_end: int = 0
    external_tls: bool = False
    bind_addresses: list[str] = field(default_factory=list)  # default: the media address
    per_user_relay_allocation_limit: int = 12  # allocations per participant; <= 0: no limit
    ttl_seconds: int = TURN_DEFAULT_TTL  # credential lifetime, clamped to [300 s, 24 h]
    # Roomcast-specific: allocations in all; beyond, 508 (Insufficient Capacity).
    max_allocations: int = 2048


# A host name of two labels or more, as livekit-server checks turn.domain (an IPv4 address
# passes too).
_DOMAIN = re.compile(r"^[a-z0-9-]+(\.[a-z0-9-]+)+\.?$", re.IGNORECASE)


def clamp_turn_ttl(seconds: int) -> int:
    """A credential lifetime in [TURN_DEFAULT_TTL, TURN_MAX_TTL], as livekit-server clamps
    turn.ttl_seconds: <= 0 is the default, more than a day is a day."""
    return TURN_DEFAULT_TTL if seconds <= 0 else min(seconds, TURN_MAX_TTL)


def validate_turn(turn: TURNConfig, ports_in_use: dict[tuple[str, int], str]) -> None:
    """Check (and complete) turn.*; `ports_in_use`: (protocol, port) → the key that has it."""
    for name in ("udp_port", "tls_port", "relay_range_start", "relay_range_end"):
        if not 0 <= getattr(turn, name) <= 65535:
            raise TurnConfigError(f"turn.{name}: {getattr(turn, name)} is not a port")
    turn.ttl_seconds = clamp_turn_ttl(turn.ttl_seconds)
    if not turn.enabled:
        return
    if not turn.udp_port and not turn.tls_port:
        raise TurnConfigError("turn.enabled: set turn.udp_port (3478 is usual) or turn.tls_port")
    start, end = turn.relay_range_start, turn.relay_range_end
    if start and end and start > end:
        raise TurnConfigError(f"turn.relay_range_start/relay_range_end: {start}-{end} is empty")
    if not (start and end):
        turn.relay_range_start, turn.relay_range_end = DEFAULT_RELAY_RANGE
    if turn.max_allocations <= 0:
        raise TurnConfigError("turn.max_allocations must be positive")
    _check_ports(turn, dict(ports_in_use))
    for address in turn.bind_addresses:
        try:
            ipaddress.ip_address(address)
        except ValueError as exc:
            raise TurnConfigError(f"turn.bind_addresses: {address!r} is not an IP address") from exc
    if turn.tls_port:
        if not turn.domain:
            raise TurnConfigError(
                "turn.domain: required with turn.tls_port (the turns: URL's host)"
            )
        if not _DOMAIN.match(turn.domain):
            raise TurnConfigError(f"turn.domain: {turn.domain!r} is not a domain name")
        if not turn.external_tls:
            load_turn_certificate(turn)


def _check_ports(turn: TURNConfig, taken: dict[tuple[str, int], str]) -> None:
    wanted = []
    if turn.udp_port:  # TURN over UDP and over TCP on one port number
        wanted += [("udp", turn.udp_port, "turn.udp_port"), ("tcp", turn.udp_port, "turn.udp_port")]
    if turn.tls_port:
        wanted.append(("tcp", turn.tls_port, "turn.tls_port"))
    for protocol, port, key in wanted:
        other = taken.setdefault((protocol, port), key)
        if other != key:
            raise TurnConfigError(f"{key}: {protocol.upper()} port {port} is also {other}")
    # A port of the relay range that is taken (the media port, say) is skipped when relay
    # sockets are bound: an overlap costs a port, nothing else.


def load_turn_certificate(turn: TURNConfig) -> ssl.SSLContext:
    """The server context of TURN/TLS from turn.cert_file and turn.key_file."""
    if not turn.cert_file or not turn.key_file:
        raise TurnConfigError(
            "turn.cert_file and turn.key_file: required with turn.tls_port (or set "
            "turn.external_tls when a load balancer in front terminates TLS)"
        )
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(turn.cert_file, turn.key_file)
    except ssl.SSLError as exc:
        raise TurnConfigError(
            f"turn.cert_file/turn.key_file: not a PEM certificate and its key ({exc.reason})"
        ) from exc
    except OSError as exc:
        raise TurnConfigError(
            f"turn.cert_file/turn.key_file: {exc.filename or turn.cert_file}: {exc.strerror}"
        ) from exc
    return context


def validate_turn_server(server: TURNServerConfig, path: str) -> None:
    """Check (and complete) one rtc.turn_servers entry; `path` names it in errors."""
    if not server.host:
        raise TurnConfigError(f"{path}.host: required")
    if not 0 < server.port <= 65535:
        raise TurnConfigError(f"{path}.port: {server.port} is not a port")
    if server.protocol not in TURN_PROTOCOLS:
        raise TurnConfigError(f"{path}.protocol: {server.protocol!r} is not udp, tcp or tls")
    if not server.secret and not (server.username and server.credential):
        raise TurnConfigError(
            f"{path}: no usable credentials: set secret (or secret_file) for the TURN REST "
            "API's time-limited credentials, or username and credential"
        )
    server.ttl = clamp_turn_ttl(server.ttl or TURN_DEFAULT_EXTERNAL_TTL)


def read_turn_secrets(servers: list[TURNServerConfig]) -> None:
    """Each entry's secret_file into its secret (an inline secret wins, as in livekit-server);
    the file must not be readable by others, nor empty."""
    for index, server in enumerate(servers):
        server.secret = server.secret.strip()
        if server.secret or not server.secret_file:
            continue
        path = f"rtc.turn_servers[{index}].secret_file"
        file = Path(server.secret_file)
        try:
            mode = file.stat().st_mode
            secret = file.read_text().strip()
        except OSError as exc:
            raise TurnConfigError(f"{path} {server.secret_file}: {exc.strerror}") from exc
        if mode & (stat.S_IROTH | stat.S_IWOTH | stat.S_IXOTH):
            raise TurnConfigError(f"{path} {server.secret_file} must not be readable by others")
        if not secret:
            raise TurnConfigError(f"{path} {server.secret_file} is empty")
        server.secret = secret
