"""Configuration with livekit-server's YAML keys, env variables and flags
(docs/protocol/12-config-cli-multinode.md).

Each section is a dataclass; its field names are the YAML keys. Parsing is strict, as
livekit-server's is: an unknown key or a value of the wrong type is a ``ConfigError`` naming
the key path. A few livekit-server keys that Roomcast accepts but does not act on are listed in
``config_keys.py`` so existing livekit.yaml files load (and are named in a start-up warning).
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import stat
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from roomcast.config_keys import accepted_unknown, ignored_keys
from roomcast.config_turn import (
    TURNConfig,
    TurnConfigError,
    TURNServerConfig,
    read_turn_secrets,
    validate_turn,
    validate_turn_server,
)
from roomcast.durations import parse_duration

DEV_KEYS = {"devkey": "secret"}
MIN_SECRET_LENGTH = 32  # characters, as livekit-server checks
MAX_FORWARDING_THREADS = 8  # native/plane.h MAX_SENDERS


class ConfigError(ValueError):
    """The configuration cannot be used; the message names the key and the problem."""


@dataclass
class LoggingConfig:
    level: str = "info"
    json: bool = False
    sample: bool = False
    pion_level: str = "error"
    component_levels: dict[str, str] = field(default_factory=dict)


@dataclass
class IPFilterConfig:
    """Which local addresses may become ICE candidates (CIDRs), as livekit-server's rtc.ips."""

    includes: list[str] = field(default_factory=list)
    excludes: list[str] = field(default_factory=list)


@dataclass
class CongestionControlConfig:
    """Per-subscriber stream allocation (media/downlink.py), as livekit-server's
    rtc.congestion_control: `enabled` fits each subscriber's layers to its downlink estimate;
    `allow_pause` lets it pause video that fits at no layer (a client's
    `subscriber_allow_pause` overrides it). Off, every subscriber gets the layers it asks for."""

    enabled: bool = True
    allow_pause: bool = False  # livekit-server's default too


@dataclass
class RTCConfig:
    udp_port: int = 0  # 0: use the port range (production) or 7882 in dev mode
    tcp_port: int = 7881  # ICE over TCP (media/tcp_mux.py); 0 turns it off, as in livekit
    port_range_start: int = 0
    port_range_end: int = 0
    node_ip: str = ""
    use_external_ip: bool = False
    use_ice_lite: bool = True
    stun_servers: list[str] = field(default_factory=list)
    enable_loopback_candidate: bool = True
    allow_tcp_fallback: bool = True
    packet_buffer_size_video: int = 500
    packet_buffer_size_audio: int = 200
    # bits/s: a reliable data message to a subscriber that is behind and drains slower than
    # this is dropped, as livekit-server does; 0 (LiveKit's default) keeps the disconnect
    # policy of media/sctp_backlog.py
    datachannel_slow_threshold: int = 0
    # A data-track frame starts to a subscriber only while its channel holds less than this
    # much of the track's data (rooms/data_track_gate.py); "0s" leaves it unbounded.
    datachannel_data_track_target_latency: str = "100ms"
    # Roomcast's own: which forwarding plane runs (media/native_plane.py): python, native (the
    # C engine; start-up fails where it is not built) or auto (native where built). The
    # ROOMCAST_FORWARDING_PLANE environment variable overrides it.
    forwarding_plane: str = "auto"
    # Roomcast's own: the native engine's sender threads, which share the fan-out of every
    # room (media/native_plane.py): a number (1: the receive thread sends, no hand-off) or
    # auto (two where there are two cores). ROOMCAST_FORWARDING_THREADS overrides it.
    forwarding_threads: str = "auto"
    ips: IPFilterConfig = field(default_factory=IPFilterConfig)
    turn_servers: list[TURNServerConfig] = field(default_factory=list)
    congestion_control: CongestionControlConfig = field(default_factory=CongestionControlConfig)


@dataclass
class PlayoutDelayConfig:
    enabled: bool = False
    min: int = 0
    max: int = 0


@dataclass
class RoomConfig:
    auto_create: bool = True
    empty_timeout: int = 300
    departure_timeout: int = 20
    max_participants: int = 0
    enabled_codecs: list[dict[str, str]] = field(
        default_factory=lambda: [
            {"mime": m}
            for m in (
                "audio/opus",
                "audio/red",
                "video/VP8",
                "video/H264",
                "video/VP9",
                "video/AV1",
                "video/rtx",
            )
        ]
    )
    enable_remote_unmute: bool = False
    playout_delay: PlayoutDelayConfig = field(default_factory=PlayoutDelayConfig)
    sync_streams: bool = False
    enable_full_room_in_webhooks: bool = False


@dataclass
class WebhookConfig:
    api_key: str = ""
    urls: list[str] = field(default_factory=list)


@dataclass
class RedisTLSConfig:
    enabled: bool = False
    ca_cert_file: str = ""
    cert_file: str = ""
    key_file: str = ""
    insecure_skip_verify: bool = False


@dataclass
class RedisConfig:
    """Multi-node mode is on when an address (or sentinel addresses) is set
    (docs/protocol/12-config-cli-multinode.md §12.5)."""

    address: str = ""  # host:port, or unix:///path/to/redis.sock
    username: str = ""
    password: str = ""
    db: int = 0
    use_tls: bool = False
    tls: RedisTLSConfig = field(default_factory=RedisTLSConfig)
    sentinel_master_name: str = ""
    sentinel_addresses: list[str] = field(default_factory=list)
    sentinel_username: str = ""
    sentinel_password: str = ""

    @property
    def enabled(self) -> bool:
        return bool(self.address or self.sentinel_addresses)


@dataclass
class NodeSelectorConfig:
    """Where a new room is placed (docs/protocol/12-config-cli-multinode.md §12.4
    ``node_selector``)."""

    kind: str = "any"  # any | cpuload | sysload: the latter two skip nodes above their limit
    sort_by: str = "sysload"  # sysload | cpuload | rooms | clients | random
    sysload_limit: float = 0.9  # load average per CPU
    cpu_load_limit: float = 0.9


@dataclass
class PrometheusConfig:
    port: int = 0
    username: str = ""
    password: str = ""


@dataclass
class LimitConfig:
    max_metadata_size: int = 512 * 1024
    max_attributes_size: int = 64 * 1024
    max_room_name_length: int = 256
    max_participant_identity_length: int = 256
    max_participant_name_length: int = 256
    signal_message_size_limit: int = 2 * 1024 * 1024
    # LiveKit's default is 10 MiB; 2 MiB holds the largest request (UpdateParticipant with 512 KiB
    # metadata and 64 KiB attributes) even as JSON whose escapes triple their size (`\uXXXX`
    # for every non-ASCII character).
    max_api_request_body_size: int = 2 * 1024 * 1024
    num_tracks: int = 0  # tracks per participant (published + pending); 0 = Roomcast's 32
    bytes_per_sec: int = 0
    # Roomcast-specific safety limits (0 disables the rooms limit).
    max_rooms: int = 0
    max_data_packet_size: int = 256 * 1024  # our SCTP a=max-message-size
    # Refused joins (bad or missing token) per client address (IPv6: per /64); 0 disables.
    joins_per_second_per_ip: float = 20.0
    join_burst_per_ip: int = 40
    # Accepted joins per API key + room + identity (a reconnect loop); 0 disables.
    joins_per_second_per_identity: float = 2.0
    join_burst_per_identity: int = 20
    # Seconds a connection may take to send a complete request head (and may stay idle
    # between requests); slower ones are closed (slowloris).
    http_idle_timeout: float = 20.0
    # Open HTTP/WebSocket connections per client address (IPv6: per /64), trusted proxies
    # exempt; 0 disables.
    connections_per_ip: int = 1024
    # Signalling responses queued for one WebSocket; a client that reads slower is disconnected.
    signal_queue_bytes: int = 8 * 1024 * 1024
    # Per publisher PeerConnection; burst twice that; 0 disables (media/forwarding_plane.py).
    unknown_ssrc_packets_per_second: float = 200.0
    # Data tracks (docs/protocol/17-data-tracks.md): LiveKit's bound on a custom frame or
    # schema encoding name, and Roomcast's own bounds on tracks per participant and on one
    # packet (clients send at most 16 000 bytes; livekit-server reads at most 65 535).
    max_data_track_custom_encoding_length: int = 32
    max_data_tracks_per_participant: int = 64
    max_data_track_packet_size: int = 65535


@dataclass
class PlaygroundConfig:
    """Roomcast-specific: the browser playground (``/``) and dashboard (``/dashboard``)."""

    enabled: bool = False  # --dev turns it on unless the YAML says false


@dataclass
class Config:
    port: int = 7880
    bind_addresses: list[str] = field(default_factory=list)
    development: bool = False
    region: str = ""
    keys: dict[str, str] = field(default_factory=dict)
    key_file: str = ""
    log_level: str = ""
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    rtc: RTCConfig = field(default_factory=RTCConfig)
    room: RoomConfig = field(default_factory=RoomConfig)
    webhook: WebhookConfig = field(default_factory=WebhookConfig)
    redis: RedisConfig = field(default_factory=RedisConfig)
    node_selector: NodeSelectorConfig = field(default_factory=NodeSelectorConfig)
    prometheus: PrometheusConfig = field(default_factory=PrometheusConfig)
    prometheus_port: int = 0
    limit: LimitConfig = field(default_factory=LimitConfig)
    playground: PlaygroundConfig = field(default_factory=PlaygroundConfig)
    turn: TURNConfig = field(default_factory=TURNConfig)
    # Data tracks on (livekit-server's default since 1.11): publishing them, and the
    # `_data_track` channel on the subscriber PeerConnection.
    enable_data_tracks: bool = True
    # Roomcast-specific: proxies (addresses or networks) whose X-Forwarded-For names the client.
    trusted_proxies: list[str] = field(default_factory=list)
    # Seconds the webhook queue gets to drain on shutdown (Roomcast-specific).
    shutdown_flush_timeout: float = 5.0
    # Keys of the user's config that do nothing here, with why (not a YAML key: computed).
    ignored_keys: list[tuple[str, str]] = field(default_factory=list, init=False)
    # The IP in this node's ICE candidates and TURN URLs: rtc.node_ip, else what the server
    # chose at start-up (server.py); not a YAML key.
    node_address: str = field(default="", init=False)

    @property
    def dev_mode(self) -> bool:
        return self.development

    @property
    def effective_udp_port(self) -> int:
        if self.rtc.udp_port:
            return self.rtc.udp_port
        if self.rtc.port_range_start:
            return self.rtc.port_range_start
        return 7882

    @property
    def effective_log_level(self) -> str:
        return self.log_level or self.logging.level


def _coerce(value: Any, annotation: Any, path: str) -> Any:
    """Check (and gently convert) a YAML value against a field's type annotation."""
    if dataclasses.is_dataclass(annotation):
        if not isinstance(value, dict):
            raise ConfigError(f"{path}: expected a mapping, got {type(value).__name__}")
        return _build(annotation, value, path)
    origin = typing.get_origin(annotation)
    if annotation is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{path}: expected true or false, got {value!r}")
        return value
    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{path}: expected an integer, got {value!r}")
        return value
    if annotation is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{path}: expected a number, got {value!r}")
        return float(value)
    if annotation is str:
        if isinstance(value, bool) or value is None:
            raise ConfigError(f"{path}: expected a string, got {value!r}")
        if not isinstance(value, str | int | float):
            raise ConfigError(f"{path}: expected a string, got {type(value).__name__}")
        return str(value)
    if origin is list:
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list):
            raise ConfigError(f"{path}: expected a list, got {type(value).__name__}")
        (item_type,) = typing.get_args(annotation)
        return [_coerce(v, item_type, f"{path}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{path}: expected a mapping, got {type(value).__name__}")
        key_type, value_type = typing.get_args(annotation)
        return {
            _coerce(k, key_type, path): _coerce(v, value_type, f"{path}.{k}")
            for k, v in value.items()
        }
    if origin is types.UnionType:
        raise ConfigError(f"{path}: unsupported union type")  # not used by our dataclasses
    return value


def _build(cls: Any, raw: dict[str, Any], path: str = "") -> Any:
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls) if f.init}
    kwargs: dict[str, Any] = {}
    for key, value in raw.items():
        full = f"{path}.{key}" if path else str(key)
        if key in known:
            kwargs[key] = _coerce(value, hints[key], full)
        elif accepted_unknown(path, str(key)):
            continue  # a livekit-server key Roomcast does not act on (config_keys.py)
        else:
            raise ConfigError(f"unknown config key {full!r}")
    return cls(**kwargs)


def parse_yaml(text: str, source: str) -> dict[str, Any]:
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: invalid YAML: {exc}") from exc
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: the top level must be a mapping")
    return raw


def _merge(base: dict[str, Any], overlay: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in overlay.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _read_key_file(path: str) -> dict[str, str]:
    file = Path(path)
    try:
        mode = file.stat().st_mode
        text = file.read_text()
    except OSError as exc:
        raise ConfigError(f"key_file {path}: {exc.strerror}") from exc
    if mode & (stat.S_IROTH | stat.S_IWOTH | stat.S_IXOTH):
        raise ConfigError(f"key_file {path} must not be readable by others (chmod 600)")
    keys = parse_yaml(text, f"key_file {path}")
    coerced: dict[str, str] = _coerce(keys, dict[str, str], "key_file")
    return coerced


@dataclass
class Overrides:
    """Values from command-line flags and environment variables, applied over the YAML."""

    dev: bool = False
    config_file: str | None = None
    config_body: str | None = None
    keys: str | None = None
    key_file: str | None = None
    bind: list[str] = field(default_factory=list)
    port: int | None = None
    node_ip: str | None = None
    udp_port: int | None = None
    tcp_port: int | None = None
    redis_host: str | None = None
    redis_password: str | None = None


def load_config(overrides: Overrides, environ: typing.Mapping[str, str] | None = None) -> Config:
    """Build the effective configuration the way livekit-server does
    (docs/protocol/12-config-cli-multinode.md §12.1-12.2)."""
    env = os.environ if environ is None else environ
    raw: dict[str, Any] = {}
    body = overrides.config_body or env.get("LIVEKIT_CONFIG")
    if body:
        raw = parse_yaml(body, "config body")
    elif overrides.config_file:
        try:
            text = Path(overrides.config_file).read_text()
        except OSError as exc:
            raise ConfigError(f"config file {overrides.config_file}: {exc.strerror}") from exc
        raw = parse_yaml(text, f"config file {overrides.config_file}")

    flag_layer: dict[str, Any] = {}
    keys_text = overrides.keys or env.get("LIVEKIT_KEYS")
    if keys_text:
        flag_layer["keys"] = parse_yaml(keys_text, "--keys")
    if overrides.key_file:
        flag_layer["key_file"] = overrides.key_file
    if overrides.bind:
        flag_layer["bind_addresses"] = overrides.bind
    if overrides.port is not None:
        flag_layer["port"] = overrides.port
    node_ip = overrides.node_ip or env.get("NODE_IP")
    if node_ip:
        flag_layer.setdefault("rtc", {})["node_ip"] = node_ip
    udp_port = overrides.udp_port or (int(env["UDP_PORT"]) if env.get("UDP_PORT") else None)
    if udp_port:
        flag_layer.setdefault("rtc", {})["udp_port"] = udp_port
    if overrides.tcp_port is not None:
        flag_layer.setdefault("rtc", {})["tcp_port"] = overrides.tcp_port
    redis_host = overrides.redis_host or env.get("REDIS_HOST")
    if redis_host:
        flag_layer.setdefault("redis", {})["address"] = redis_host
    redis_password = overrides.redis_password or env.get("REDIS_PASSWORD")
    if redis_password:
        flag_layer.setdefault("redis", {})["password"] = redis_password
    if overrides.dev:
        flag_layer["development"] = True

    merged = _merge(raw, flag_layer)
    config: Config = _build(Config, merged)
    config.ignored_keys = ignored_keys(raw, udp_port_set=bool(config.rtc.udp_port))
    if config.key_file:
        config.keys = {**_read_key_file(config.key_file), **config.keys}
    try:
        read_turn_secrets(config.rtc.turn_servers)
    except TurnConfigError as exc:
        raise ConfigError(str(exc)) from None
    if config.development:
        if not config.keys:
            config.keys = dict(DEV_KEYS)
        if not config.bind_addresses:
            config.bind_addresses = ["127.0.0.1"]
        if not config.log_level and config.logging.level == "info":
            config.logging.level = "debug"
        if "enabled" not in merged.get("playground", {}):
            config.playground.enabled = True
    validate(config)
    return config


def validate(config: Config) -> None:
    if not config.keys:
        raise ConfigError("one of key-file or keys must be provided (or use --dev)")
    for key, secret in config.keys.items():
        if not key or not secret:
            raise ConfigError("API keys and secrets must not be empty")
    if not 0 <= config.port <= 65535:
        raise ConfigError(f"port: {config.port} is not a TCP port")
    if not 0 <= config.rtc.udp_port <= 65535:
        raise ConfigError(f"rtc.udp_port: {config.rtc.udp_port} is not a UDP port")
    rtc = config.rtc
    if rtc.port_range_start or rtc.port_range_end:
        if not 0 < rtc.port_range_start <= rtc.port_range_end <= 65535:
            raise ConfigError(
                "rtc.port_range_start/port_range_end: need 0 < start <= end <= 65535, got "
                f"{rtc.port_range_start}-{rtc.port_range_end}"
            )
    for kind in ("includes", "excludes"):
        for network in getattr(rtc.ips, kind):
            try:
                ipaddress.ip_network(network, strict=False)
            except ValueError as exc:
                raise ConfigError(f"rtc.ips.{kind}: {network!r} is not a network") from exc
    if config.rtc.forwarding_plane not in ("python", "native", "auto"):
        raise ConfigError(
            f"rtc.forwarding_plane: {config.rtc.forwarding_plane!r} is not python, native or auto"
        )
    threads = config.rtc.forwarding_threads
    in_range = threads.isdigit() and 1 <= int(threads) <= MAX_FORWARDING_THREADS
    if threads != "auto" and not in_range:
        raise ConfigError(
            f"rtc.forwarding_threads: {threads!r} is not auto or 1 to {MAX_FORWARDING_THREADS}"
        )
    tcp_port = config.rtc.tcp_port
    if not 0 <= tcp_port <= 65535:
        raise ConfigError(f"rtc.tcp_port: {tcp_port} is not a TCP port (0 turns ICE/TCP off)")
    if tcp_port and tcp_port == config.port:
        raise ConfigError(f"rtc.tcp_port: {tcp_port} is also the HTTP port (port)")
    for address in config.bind_addresses:
        try:
            ipaddress.ip_address(address)
        except ValueError as exc:
            raise ConfigError(f"bind_addresses: {address!r} is not an IP address") from exc
    if config.rtc.node_ip:
        try:
            ipaddress.ip_address(config.rtc.node_ip)
        except ValueError as exc:
            raise ConfigError(f"rtc.node_ip: {config.rtc.node_ip!r} is not an IP address") from exc
    if config.webhook.urls and config.webhook.api_key not in config.keys:
        raise ConfigError("unknown api key in webhook config (webhook.api_key)")
    for name in ("empty_timeout", "departure_timeout", "max_participants"):
        if getattr(config.room, name) < 0:
            raise ConfigError(f"room.{name} must not be negative")
    selector = config.node_selector
    if selector.kind not in ("any", "cpuload", "sysload"):
        raise ConfigError(f"node_selector.kind: unknown kind {selector.kind!r}")
    if selector.sort_by not in ("sysload", "cpuload", "rooms", "clients", "random"):
        raise ConfigError(f"node_selector.sort_by: unknown value {selector.sort_by!r}")
    if config.redis.sentinel_addresses and not config.redis.sentinel_master_name:
        raise ConfigError("redis.sentinel_master_name is required with sentinel_addresses")
    level = config.effective_log_level.lower()
    if level not in {"debug", "info", "warn", "warning", "error"}:
        raise ConfigError(f"logging.level: unknown level {level!r}")
    for proxy in config.trusted_proxies:
        try:
            ipaddress.ip_network(proxy, strict=False)
        except ValueError as exc:
            raise ConfigError(f"trusted_proxies: {proxy!r} is not an address or network") from exc
    prometheus = config.prometheus
    if bool(prometheus.username) != bool(prometheus.password):
        # As livekit-server: half a credential would silently leave the metrics open.
        raise ConfigError("prometheus: set both username and password, or neither")
    for name in ("http_idle_timeout", "connections_per_ip", "signal_queue_bytes"):
        if getattr(config.limit, name) < 0:
            raise ConfigError(f"limit.{name} must not be negative")
    for name in ("max_data_tracks_per_participant", "max_data_track_packet_size"):
        if getattr(config.limit, name) < 1:
            raise ConfigError(f"limit.{name} must be at least 1")
    try:
        parse_duration(config.rtc.datachannel_data_track_target_latency)
    except ValueError as exc:
        raise ConfigError(f"rtc.datachannel_data_track_target_latency: {exc}") from exc
    try:
        validate_turn(config.turn, _ports_in_use(config))
        for index, server in enumerate(config.rtc.turn_servers):
            validate_turn_server(server, f"rtc.turn_servers[{index}]")
    except TurnConfigError as exc:
        raise ConfigError(str(exc)) from None


def _ports_in_use(config: Config) -> dict[tuple[str, int], str]:
    """(protocol, port) → the key that takes it, for the TURN ports to be checked against."""
    ports = {("udp", config.effective_udp_port): "rtc.udp_port", ("tcp", config.port): "port"}
    if config.rtc.tcp_port:
        ports[("tcp", config.rtc.tcp_port)] = "rtc.tcp_port"
    return ports


def candidate_allowed(address: str, ips: IPFilterConfig) -> bool:
    """May this local address be advertised (rtc.ips: includes first, then excludes)?"""
    ip = ipaddress.ip_address(address)

    def within(networks: list[str]) -> bool:
        return any(ip in ipaddress.ip_network(n, strict=False) for n in networks)

    if ips.includes and not within(ips.includes):
        return False
    return not within(ips.excludes)


def short_secrets(config: Config) -> list[str]:
    """API keys whose secret is shorter than ``MIN_SECRET_LENGTH`` (none in dev mode).

    HS256 tokens signed with a short secret can be brute-forced offline from any token; the
    server logs an error for each at start-up, as livekit-server does, and still starts (the
    dev pair ``devkey: secret`` is short on purpose)."""
    if config.dev_mode:
        return []
    return sorted(key for key, secret in config.keys.items() if len(secret) < MIN_SECRET_LENGTH)
