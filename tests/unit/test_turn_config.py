"""The TURN keys of a livekit-server YAML (`turn:`, `rtc.turn_servers`): loaded, checked (a bad
one names the key), and turned into JoinResponse.ice_servers with per-participant
credentials."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
from pathlib import Path

import pytest

from roomcast.config import Config, ConfigError, Overrides, load_config
from roomcast.turn.credentials import REALM, CredentialVerifier, long_term_key
from roomcast.turn.ice_servers import ice_servers
from tests.certificates import self_signed_certificate

KEYS = "keys:\n  APIkey: a-secret-of-at-least-thirty-two-characters\n"


def load(body: str) -> Config:
    return load_config(Overrides(config_body=KEYS + body), environ={})


def test_livekit_turn_section_loads(tmp_path: Path) -> None:
    cert, key = self_signed_certificate(tmp_path, "turn.example.com")
    config = load(
        "rtc:\n  node_ip: 203.0.113.10\nturn:\n  enabled: true\n  domain: turn.example.com\n"
        f"  udp_port: 3478\n  tls_port: 5349\n  cert_file: {cert}\n  key_file: {key}\n"
        "  relay_range_start: 31000\n  relay_range_end: 31010\n  ttl_seconds: 100000000\n"
    )
    turn = config.turn
    assert turn.enabled and (turn.udp_port, turn.tls_port) == (3478, 5349)
    assert (turn.relay_range_start, turn.relay_range_end) == (31000, 31010)
    assert turn.ttl_seconds == 24 * 3600  # clamped, as livekit-server does
    assert config.ignored_keys == []
    servers = ice_servers(config, "PA_alice", now=1000.0)
    assert list(servers[0].urls) == [
        "turn:203.0.113.10:3478?transport=udp",
        "turn:203.0.113.10:3478?transport=tcp",
        "turns:turn.example.com:5349?transport=tcp",
    ]
    # The credential is the participant's, short-lived, and verifiable by the server.
    verifier = CredentialVerifier(config.keys)
    credential = verifier.verify(servers[0].username, 1000.0, allocating=True)
    assert credential is not None and credential.user == "PA_alice"
    assert credential.key == long_term_key(servers[0].username, REALM, servers[0].credential)
    assert verifier.verify(servers[0].username, 1000.0 + 86401, allocating=True) is None


def test_external_tls_advertises_the_load_balancers_443_and_needs_no_certificate() -> None:
    config = load(
        "rtc:\n  node_ip: 203.0.113.10\nturn:\n  enabled: true\n  domain: turn.example.com\n"
        "  tls_port: 5349\n  external_tls: true\n"
    )
    urls = list(ice_servers(config, "PA_x")[0].urls)
    assert urls == ["turns:turn.example.com:443?transport=tcp"]
    assert (config.turn.relay_range_start, config.turn.relay_range_end) == (30000, 40000)


def test_external_turn_servers_with_static_and_rest_api_credentials(tmp_path: Path) -> None:
    secret_file = tmp_path / "secret"
    secret_file.write_text("from-a-file\n")
    os.chmod(secret_file, 0o600)
    config = load(
        "rtc:\n  stun_servers: ['stun.example.com:3478']\n  turn_servers:\n"
        "    - {host: turn1.example.com, port: 443, protocol: tls, username: u, credential: c}\n"
        "    - {host: turn2.example.com, port: 3478, protocol: udp, secret: s3cret, ttl: 600}\n"
        f"    - {{host: 198.18.0.1, port: 3478, protocol: tcp, secret_file: {secret_file}}}\n"
    )
    assert config.ignored_keys == []
    servers = ice_servers(config, "PA_bob", now=1000.0)
    assert [list(s.urls) for s in servers] == [
        ["turns:turn1.example.com:443?transport=tcp"],
        ["turn:turn2.example.com:3478?transport=udp"],
        ["turn:198.18.0.1:3478?transport=tcp"],
        ["stun.example.com:3478"],
    ]
    assert (servers[0].username, servers[0].credential) == ("u", "c")
    # TURN REST API: username "<expiry>:<user>", password base64(HMAC-SHA1(secret, username))
    assert servers[1].username == "1600:PA_bob"
    mac = hmac.new(b"s3cret", b"1600:PA_bob", hashlib.sha1).digest()
    assert servers[1].credential == base64.b64encode(mac).decode()
    assert servers[2].username == f"{1000 + 14400}:PA_bob"  # the default TTL, 4 h
    mac = hmac.new(b"from-a-file", servers[2].username.encode(), hashlib.sha1).digest()
    assert servers[2].credential == base64.b64encode(mac).decode()


def test_turn_off_and_no_servers_is_an_empty_list() -> None:
    assert ice_servers(load(""), "PA_x") == []


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("turn:\n  enabled: true\n", r"turn.enabled: set turn.udp_port"),
        ("turn:\n  enabled: true\n  udp_port: 70000\n", r"turn.udp_port: 70000 is not a port"),
        (
            "turn:\n  enabled: true\n  tls_port: 5349\n  domain: turn.example.com\n",
            r"turn.cert_file and turn.key_file: required with turn.tls_port",
        ),
        ("turn:\n  enabled: true\n  tls_port: 5349\n", r"turn.domain: required"),
        (
            "turn:\n  enabled: true\n  tls_port: 5349\n  domain: x\n  external_tls: true\n",
            r"turn.domain: 'x' is not a domain name",
        ),
        (
            "turn:\n  enabled: true\n  udp_port: 3478\n  relay_range_start: 40000\n"
            "  relay_range_end: 30000\n",
            r"turn.relay_range_start/relay_range_end: 40000-30000 is empty",
        ),
        (
            "rtc:\n  udp_port: 3478\nturn:\n  enabled: true\n  udp_port: 3478\n",
            r"turn.udp_port: UDP port 3478 is also rtc.udp_port",
        ),
        (
            "rtc:\n  tcp_port: 3478\nturn:\n  enabled: true\n  udp_port: 3478\n",
            r"turn.udp_port: TCP port 3478 is also rtc.tcp_port",
        ),
        (
            "turn:\n  enabled: true\n  tls_port: 5349\n  domain: t.example.com\n"
            "  cert_file: /nonexistent.pem\n  key_file: /nonexistent.key\n",
            r"turn.cert_file/turn.key_file: /nonexistent.pem: No such file",
        ),
        ("rtc:\n  turn_servers:\n    - {port: 3478, protocol: udp}\n", r"turn_servers\[0\].host"),
        (
            "rtc:\n  turn_servers:\n    - {host: h.example.com, port: 3478, protocol: quic, "
            "secret: s}\n",
            r"rtc.turn_servers\[0\].protocol: 'quic' is not udp, tcp or tls",
        ),
        (
            "rtc:\n  turn_servers:\n    - {host: h.example.com, port: 3478, protocol: udp}\n",
            r"rtc.turn_servers\[0\]: no usable credentials",
        ),
    ],
)
def test_bad_turn_config_refuses_to_start_naming_the_key(body: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load(body)


def test_a_certificate_without_its_key_is_refused(tmp_path: Path) -> None:
    cert, _ = self_signed_certificate(tmp_path, "turn.example.com")
    with pytest.raises(ConfigError, match=r"turn.cert_file/turn.key_file: not a PEM certificate"):
        load(
            f"turn:\n  enabled: true\n  tls_port: 5349\n  domain: t.example.com\n"
            f"  cert_file: {cert}\n  key_file: {cert}\n"
        )


def test_a_secret_file_readable_by_others_or_empty_is_refused(tmp_path: Path) -> None:
    secret_file = tmp_path / "secret"
    secret_file.write_text("s\n")
    os.chmod(secret_file, 0o644)
    body = (
        "rtc:\n  turn_servers:\n"
        f"    - {{host: h.example.com, port: 3478, protocol: udp, secret_file: {secret_file}}}\n"
    )
    with pytest.raises(ConfigError, match="must not be readable by others"):
        load(body)
    secret_file.write_text("  \n")
    os.chmod(secret_file, 0o600)
    with pytest.raises(ConfigError, match="is empty"):
        load(body)


def test_peer_cidr_keys_are_accepted_and_named_as_doing_nothing() -> None:
    config = load(
        "turn:\n  enabled: true\n  udp_port: 3478\n  deny_peer_cidrs: [10.0.0.0/8]\n"
        "  allow_restricted_peer_cidrs: [192.168.0.0/16]\n"
    )
    assert [key for key, _ in config.ignored_keys] == [
        "turn.deny_peer_cidrs",
        "turn.allow_restricted_peer_cidrs",
    ]
