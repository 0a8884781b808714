from __future__ import annotations

import os
from pathlib import Path

import pytest

from roomcast.config import ConfigError, Overrides, load_config


def load(body: str = "", **kwargs: object) -> object:
    return load_config(Overrides(config_body=body or None, **kwargs), environ={})  # type: ignore[arg-type]


def test_dev_mode_defaults() -> None:
    config = load_config(Overrides(dev=True), environ={})
    assert config.keys == {"devkey": "secret"}
    assert config.bind_addresses == ["127.0.0.1"]
    assert config.port == 7880
    assert config.effective_udp_port == 7882
    assert config.effective_log_level == "debug"
    assert config.room.auto_create and config.room.empty_timeout == 300
    assert config.room.departure_timeout == 20


def test_yaml_keys_and_flag_overrides() -> None:
    body = """
port: 9000
keys:
  k1: s1
room:
  empty_timeout: 10
  max_participants: 4
rtc:
  udp_port: 9999
  tcp_port: 9998
logging:
  level: warn
turn:
  enabled: false
"""
    config = load_config(Overrides(config_body=body, port=9100, bind=["127.0.0.2"]), environ={})
    assert config.port == 9100 and config.bind_addresses == ["127.0.0.2"]
    assert config.keys == {"k1": "s1"}
    assert config.room.empty_timeout == 10 and config.room.max_participants == 4
    assert config.effective_udp_port == 9999
    assert config.rtc.tcp_port == 9998


def test_ice_tcp_port_is_livekits_7881_and_0_turns_it_off() -> None:
    assert load("keys: {a: b}\n").rtc.tcp_port == 7881  # type: ignore[attr-defined]
    assert load("keys: {a: b}\nrtc:\n  tcp_port: 0\n").rtc.tcp_port == 0  # type: ignore[attr-defined]


def test_env_variables() -> None:
    env = {"LIVEKIT_CONFIG": "port: 7001\n", "LIVEKIT_KEYS": "a: b", "NODE_IP": "127.0.0.9"}
    config = load_config(Overrides(), environ=env)
    assert config.port == 7001 and config.keys == {"a": "b"}
    assert config.rtc.node_ip == "127.0.0.9"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("keys: {a: b}\nbogus: 1\n", "unknown config key 'bogus'"),
        ("keys: {a: b}\nroom:\n  nope: 1\n", "unknown config key 'room.nope'"),
        ("keys: {a: b}\nport: seven\n", "port: expected an integer"),
        ("keys: {a: b}\nroom:\n  auto_create: 3\n", "room.auto_create: expected true or false"),
        ("keys: {a: b}\nroom: [1]\n", "room: expected a mapping"),
        ("port: 1\n", "one of key-file or keys must be provided"),
        ("keys: {a: b}\nwebhook:\n  urls: [http://x]\n  api_key: zz\n", "unknown api key"),
        ("keys: {a: b}\nbind_addresses: [nowhere]\n", "is not an IP address"),
        ("[unclosed", "invalid YAML"),
        ("- a\n- b\n", "the top level must be a mapping"),
        ("keys: {a: b}\nport: 70000\n", "is not a TCP port"),
        ("keys: {a: b}\nrtc:\n  tcp_port: 70000\n", r"rtc.tcp_port: 70000 is not a TCP port"),
        ("keys: {a: b}\nport: 7881\n", r"rtc.tcp_port: 7881 is also the HTTP port"),
        ("keys: {a: b}\nlogging:\n  level: chatty\n", "unknown level"),
        ("keys: {a: b}\nenable_data_tracks: 1\n", "enable_data_tracks: expected true or false"),
        (
            "keys: {a: b}\nrtc:\n  datachannel_data_track_target_latency: soon\n",
            "rtc.datachannel_data_track_target_latency: invalid duration",
        ),
        (
            "keys: {a: b}\nrtc:\n  forwarding_threads: 0\n",
            "rtc.forwarding_threads: '0' is not auto or 1 to 8",
        ),
        (
            "keys: {a: b}\nlimit:\n  max_data_tracks_per_participant: 0\n",
            "limit.max_data_tracks_per_participant must be at least 1",
        ),
    ],
)
def test_bad_config_is_a_clear_error(body: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load(body)


def test_key_file_must_not_be_world_readable(tmp_path: Path) -> None:
    key_file = tmp_path / "keys.yaml"
    key_file.write_text("fk: fs\n")
    os.chmod(key_file, 0o644)
    with pytest.raises(ConfigError, match="must not be readable by others"):
        load_config(Overrides(key_file=str(key_file)), environ={})
    os.chmod(key_file, 0o600)
    assert load_config(Overrides(key_file=str(key_file)), environ={}).keys == {"fk": "fs"}


def test_config_file(tmp_path: Path) -> None:
    path = tmp_path / "livekit.yaml"
    path.write_text("keys:\n  x: y\nport: 7999\n")
    assert load_config(Overrides(config_file=str(path)), environ={}).port == 7999
    with pytest.raises(ConfigError, match="config file"):
        load_config(Overrides(config_file=str(tmp_path / "missing.yaml")), environ={})


LIVEKIT_YAML = """
keys:
  devkey: a-secret-of-at-least-thirty-two-characters
rtc:
  tcp_port: 7881
  port_range_start: 50000
  port_range_end: 60000
  use_external_ip: true
  congestion_control:
    enabled: true
    use_send_side_bwe: true
turn:
  enabled: true
  udp_port: 3478
audio:
  active_level: 30
room:
  empty_timeout: 60
"""


def test_livekit_keys_that_do_nothing_are_named_with_the_reason() -> None:
    from roomcast.config_keys import IGNORED

    config = load_config(Overrides(config_body=LIVEKIT_YAML), environ={})
    ignored = dict(config.ignored_keys)
    assert "rtc.tcp_port" not in ignored  # ICE over TCP is served
    assert "turn" not in ignored  # and TURN (roomcast/turn)
    assert list(ignored) == [
        "rtc.port_range_start",
        "rtc.port_range_end",
        "rtc.congestion_control.use_send_side_bwe",  # enabled is read, the tuning is not
        "audio",
    ]
    assert ignored["audio"] == IGNORED["audio"]
    assert config.turn.enabled and config.turn.udp_port == 3478
    assert "one UDP port" in ignored["rtc.port_range_start"]
    assert config.effective_udp_port == 50000  # the range's first port, as the note says
    assert config.room.empty_timeout == 60  # what is supported still applies


def test_a_plain_config_has_nothing_to_warn_about_and_unknown_keys_still_fail() -> None:
    body = "keys:\n  k: a-secret-of-at-least-thirty-two-characters\nrtc:\n  udp_port: 7882\n"
    assert load_config(Overrides(config_body=body), environ={}).ignored_keys == []
    with pytest.raises(ConfigError, match=r"unknown config key 'rtc\.tcp_prot'"):
        load_config(Overrides(config_body=body + "  tcp_prot: 1\n"), environ={})
    with pytest.raises(ConfigError, match="unknown config key 'ignored_keys'"):
        load_config(Overrides(config_body=body + "ignored_keys: []\n"), environ={})


def test_port_range_must_be_a_range_and_ip_filters_must_be_networks() -> None:
    base = "keys:\n  k: s\nrtc:\n"
    with pytest.raises(ConfigError, match="port_range_start/port_range_end"):
        load_config(
            Overrides(config_body=base + "  port_range_start: 60000\n  port_range_end: 50000\n"),
            environ={},
        )
    with pytest.raises(ConfigError, match=r"rtc.ips.includes: 'ten' is not a network"):
        load_config(Overrides(config_body=base + "  ips:\n    includes: [ten]\n"), environ={})


def test_ip_filters_choose_the_candidate_address() -> None:
    from roomcast.config import IPFilterConfig, candidate_allowed

    only_lab = IPFilterConfig(includes=["198.18.0.0/15"])
    assert candidate_allowed("198.18.0.2", only_lab)
    assert not candidate_allowed("10.0.0.2", only_lab)
    no_docker = IPFilterConfig(excludes=["172.17.0.0/16"])
    assert not candidate_allowed("172.17.0.1", no_docker)
    assert candidate_allowed("10.0.0.2", no_docker)
    both = IPFilterConfig(includes=["10.0.0.0/8"], excludes=["10.9.0.0/16"])
    assert candidate_allowed("10.1.2.3", both) and not candidate_allowed("10.9.1.1", both)


def test_data_track_keys() -> None:
    from roomcast.rooms.data_tracks import DataTrackLimits

    defaults = DataTrackLimits.from_config(load_config(Overrides(dev=True), environ={}))
    assert defaults == DataTrackLimits(True, 64, 65535, 32, 0.1)  # data tracks on, as LiveKit
    body = """
keys: {a: b}
enable_data_tracks: false
rtc:
  datachannel_data_track_target_latency: 250ms
limit:
  max_data_track_custom_encoding_length: 8
  max_data_tracks_per_participant: 3
  max_data_track_packet_size: 20000
"""
    limits = DataTrackLimits.from_config(load_config(Overrides(config_body=body), environ={}))
    assert limits == DataTrackLimits(False, 3, 20000, 8, 0.25)


def test_congestion_control_keys() -> None:
    """rtc.congestion_control as livekit-server: allocation on, pausing off by default; the
    join's subscriber_allow_pause overrides the latter per subscriber."""
    from roomcast.edge.rtc import join_options_from

    default = load_config(Overrides(dev=True), environ={}).rtc.congestion_control
    assert default.enabled and not default.allow_pause
    body = "rtc:\n  congestion_control:\n    enabled: false\n    allow_pause: true\n"
    config = load_config(Overrides(dev=True, config_body=body), environ={})
    assert not config.rtc.congestion_control.enabled and config.rtc.congestion_control.allow_pause
    assert join_options_from({}, "").subscriber_allow_pause is None
    assert join_options_from({"subscriber_allow_pause": "1"}, "").subscriber_allow_pause is True
    assert join_options_from({"subscriber_allow_pause": "0"}, "").subscriber_allow_pause is False


def test_forwarding_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    """rtc.forwarding_threads: auto by default (two sender threads where there are two
    cores) or a number; ROOMCAST_FORWARDING_THREADS overrides it."""
    from roomcast.media.native_plane import forwarding_threads

    monkeypatch.delenv("ROOMCAST_FORWARDING_THREADS", raising=False)
    assert load_config(Overrides(dev=True), environ={}).rtc.forwarding_threads == "auto"
    body = "rtc:\n  forwarding_threads: 3\n"
    config = load_config(Overrides(dev=True, config_body=body), environ={})
    assert forwarding_threads(config.rtc.forwarding_threads) == 3
    assert forwarding_threads("auto") == min(2, os.cpu_count() or 1)
    monkeypatch.setenv("ROOMCAST_FORWARDING_THREADS", "1")
    assert forwarding_threads("3") == 1
