"""Builds the asyncio Redis client from ``redis:`` config (address, auth, db, TLS, sentinel)."""

from __future__ import annotations

import ssl
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.sentinel import Sentinel

from roomcast.config import ConfigError, RedisConfig

# Short timeouts: a node must notice a dead Redis quickly and keep retrying, never hang.
SOCKET_TIMEOUT = 3.0


def _host_port(address: str, default_port: int = 6379) -> tuple[str, int]:
    host, sep, port = address.rpartition(":")
    if not sep:
        return address, default_port
    try:
        return host.strip("[]"), int(port)
    except ValueError as exc:
        raise ConfigError(f"redis address {address!r} is not host:port") from exc


def _tls_options(config: RedisConfig) -> dict[str, Any]:
    tls = config.tls
    if not (config.use_tls or tls.enabled):
        return {}
    options: dict[str, Any] = {"ssl": True}
    if tls.ca_cert_file:
        options["ssl_ca_certs"] = tls.ca_cert_file
    if tls.cert_file:
        options["ssl_certfile"] = tls.cert_file
        options["ssl_keyfile"] = tls.key_file or None
    if tls.insecure_skip_verify:
        options["ssl_cert_reqs"] = ssl.CERT_NONE
        options["ssl_check_hostname"] = False
    return options


def connect(config: RedisConfig) -> aioredis.Redis:
    """A client for the configured Redis; connections are made lazily and re-made on errors."""
    common: dict[str, Any] = {
        "username": config.username or None,
        "password": config.password or None,
        "db": config.db,
        "socket_timeout": SOCKET_TIMEOUT,
        "socket_connect_timeout": SOCKET_TIMEOUT,
        "health_check_interval": 10,
    }
    if config.sentinel_addresses:
        sentinel = Sentinel(
            [_host_port(a, 26379) for a in config.sentinel_addresses],
            sentinel_kwargs={
                "username": config.sentinel_username or None,
                "password": config.sentinel_password or None,
                "socket_timeout": SOCKET_TIMEOUT,
            },
            **common,
            **_tls_options(config),
        )
        return sentinel.master_for(config.sentinel_master_name)
    if config.address.startswith("unix://"):
        return aioredis.Redis(unix_socket_path=config.address[len("unix://") :], **common)
    host, port = _host_port(config.address)
    return aioredis.Redis(host=host, port=port, **common, **_tls_options(config))
