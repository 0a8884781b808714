"""The edge's limits without sockets: rate limiter, client addresses, connection cap, the bounded
signalling queue, the API-grant pre-check, limit counting, and the config checks behind them."""

from __future__ import annotations

import asyncio
import json
import logging
import time

import pytest
from livekit.protocol import rtc

from roomcast.auth import VideoGrant
from roomcast.config import ConfigError, Overrides, load_config, short_secrets
from roomcast.edge.api import holds_api_grant
from roomcast.edge.client_address import ClientAddresses, limit_key
from roomcast.edge.listener import ConnectionCap
from roomcast.edge.rate_limit import RateLimiter
from roomcast.edge.rtc import (
    MAX_JSON_VALUES,
    TooManyJsonValues,
    json_values_over,
    parse_json_request,
)
from roomcast.edge.signal_sink import WebSocketSignalSink
from roomcast.telemetry import Metrics


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_rate_limiter_refills_and_forgets_least_recently_used_keys() -> None:
    clock = Clock()
    limiter = RateLimiter(rate=1.0, burst=2, max_keys=3, clock=clock)
    assert [limiter.allow("a") for _ in range(3)] == [True, True, False]
    clock.now += 1.0
    assert limiter.allow("a") and not limiter.allow("a")
    # A flood of new keys evicts idle ones only: "a", in use, keeps its empty bucket.
    for key in ("b", "c"):
        limiter.allow(key)
    limiter.allow("a")
    limiter.allow("d")  # evicts "b", the least recently used
    assert len(limiter) == 3
    assert not limiter.allow("a")
    assert RateLimiter(rate=0, burst=1).allow("anything")


def test_forwarded_for_only_from_trusted_proxies() -> None:
    direct = ClientAddresses()
    assert direct.client_of("198.51.100.7", ["203.0.113.9"]) == "198.51.100.7"
    proxies = ClientAddresses(["10.0.0.0/8", "192.0.2.1"])
    assert proxies.client_of("198.51.100.7", ["203.0.113.9"]) == "198.51.100.7"
    # Right to left, skipping trusted hops; whatever the client wrote on the left is ignored.
    assert proxies.client_of("10.1.2.3", ["6.6.6.6, 203.0.113.9, 192.0.2.1"]) == "203.0.113.9"
    assert proxies.client_of("10.1.2.3", ["203.0.113.9", "10.9.9.9"]) == "203.0.113.9"
    assert proxies.client_of("10.1.2.3", ["[2001:db8::5]:443"]) == "2001:db8::5"
    assert proxies.client_of("10.1.2.3", ["10.0.0.2"]) == "10.1.2.3"
    assert proxies.client_of("10.1.2.3", []) == "10.1.2.3"
    assert proxies.client_of("10.1.2.3", ["not-an-ip" * 20]) == ("not-an-ip" * 20)[:64]


def test_limit_keys_group_ipv6_by_64() -> None:
    assert limit_key("203.0.113.9") == "203.0.113.9"
    assert limit_key("2001:db8:1:2:aaaa::1") == limit_key("2001:db8:1:2:bbbb::9")
    assert limit_key("2001:db8:1:2::1") != limit_key("2001:db8:1:3::1")
    assert limit_key("::ffff:203.0.113.9") == "203.0.113.9"


def test_connection_cap_per_address_exempts_trusted_proxies() -> None:
    cap = ConnectionCap(2, ClientAddresses(["192.0.2.1"]), None)
    keys = [cap.admit("203.0.113.9") for _ in range(3)]
    assert keys[:2] == ["203.0.113.9"] * 2 and keys[2] is None
    assert cap.admit("203.0.113.10") == "203.0.113.10"
    cap.release("203.0.113.9")
    assert cap.admit("203.0.113.9") == "203.0.113.9"
    assert all(cap.admit("192.0.2.1") == "" for _ in range(5))
    assert cap.open_connections("192.0.2.1") == 0


def test_only_tokens_with_an_api_grant_get_their_body_read() -> None:
    assert not holds_api_grant(VideoGrant(room_join=True, room="r", can_publish=True))
    assert not holds_api_grant(VideoGrant(room_admin=True))  # admin of no room
    for grant in (
        VideoGrant(room_list=True),
        VideoGrant(room_create=True),
        VideoGrant(room_admin=True, room="r"),
        VideoGrant(room_record=True),
    ):
        assert holds_api_grant(grant)


class StuckWebSocket:
    """A WebSocket whose peer reads nothing: every send waits forever."""

    def __init__(self) -> None:
        self.sent = 0
        self.closed = False

    async def send_bytes(self, data: bytes) -> None:
        self.sent += 1
        await asyncio.Event().wait()

    async def send_str(self, data: str) -> None:
        await self.send_bytes(data.encode())

    async def close(self, **_: object) -> bool:
        self.closed = True
        return True


async def test_signal_queue_is_bounded_in_bytes() -> None:
    ws = StuckWebSocket()
    overflows: list[int] = []
    aborted: list[bool] = []
    sink = WebSocketSignalSink(
        ws,  # type: ignore[arg-type]
        max_queued_bytes=10_000,
        on_overflow=overflows.append,
        abort=lambda: aborted.append(True),
    )
    big = rtc.SignalResponse(refresh_token="x" * 50_000)  # larger than the bound on its own
    sink.send(big)
    await asyncio.sleep(0)  # the writer takes it: being written, it no longer counts
    assert ws.sent == 1 and sink.queued_bytes == 0
    small = rtc.SignalResponse(refresh_token="y" * 3_000)
    for _ in range(3):
        sink.send(small)
    assert not overflows and sink.queued_bytes > 9_000
    sink.send(small)
    assert len(overflows) == 1 and overflows[0] > 10_000 and aborted == [True]
    assert sink.closed and sink.queued_bytes == 0
    sink.send(small)  # after the cut: dropped, not queued
    assert sink.queued_bytes == 0 and len(overflows) == 1
    await sink.drain_and_close(timeout=0.05)


async def test_signal_queue_without_bound_and_json_mode() -> None:
    sent: list[str] = []

    class Recorder(StuckWebSocket):
        async def send_str(self, data: str) -> None:
            sent.append(data)

    sink = WebSocketSignalSink(Recorder())  # type: ignore[arg-type]
    sink.json_mode = True
    sink.send(rtc.SignalResponse(pong=5))
    await sink.drain_and_close(timeout=0.5)
    assert sent == ['{"pong": "5"}']


def test_limit_hits_are_counted_and_logged_once_per_offender(
    caplog: pytest.LogCaptureFixture,
) -> None:
    metrics = Metrics()
    caplog.set_level(logging.WARNING, logger="roomcast.telemetry")
    for offender in ("203.0.113.9", "203.0.113.9", "203.0.113.10"):
        metrics.limit_hit("connections_per_ip", offender)
    value = metrics.registry.get_sample_value(
        "roomcast_limit_hits_total", {"limit": "connections_per_ip"}
    )
    assert value == 3
    assert [r.getMessage() for r in caplog.records] == [
        "limit connections_per_ip hit by 203.0.113.9",
        "limit connections_per_ip hit by 203.0.113.10",
    ]


def load(body: str, dev: bool = False) -> object:
    return load_config(Overrides(config_body=body, dev=dev), environ={})


def test_short_secrets_are_found_outside_dev_mode_only() -> None:
    strong = "0123456789abcdef0123456789abcdef"
    config = load_config(Overrides(config_body=f"keys:\n  a: short\n  b: {strong}\n"), environ={})
    assert short_secrets(config) == ["a"]
    assert short_secrets(load_config(Overrides(dev=True), environ={})) == []


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("trusted_proxies: [not-a-network]", "trusted_proxies"),
        ("prometheus:\n  port: 9100\n  username: u", "both username and password"),
        ("prometheus:\n  password: p", "both username and password"),
        ("limit:\n  connections_per_ip: -1", "connections_per_ip"),
    ],
)
def test_edge_config_is_checked(body: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load("keys:\n  k: s\n" + body)


def test_edge_config_defaults() -> None:
    config = load_config(Overrides(config_body="keys:\n  k: s\n"), environ={})
    limit = config.limit
    assert limit.max_api_request_body_size == 2 * 1024 * 1024
    assert (limit.joins_per_second_per_ip, limit.join_burst_per_ip) == (20.0, 40)
    assert (limit.joins_per_second_per_identity, limit.join_burst_per_identity) == (2.0, 20)
    assert limit.http_idle_timeout == 20.0 and limit.connections_per_ip == 1024
    assert limit.signal_queue_bytes == 8 * 1024 * 1024
    assert config.trusted_proxies == []


def test_json_signal_frames_with_too_many_values_are_refused_before_protobuf_parses_them() -> None:
    # H2 after authentication: 500,000 one-letter sids took protobuf's JSON parser 0.6 s,
    # holding the interpreter (on the decoding thread too): refused on the count instead.
    hostile = json.dumps({"syncState": {"subscription": {"trackSids": ["a"] * 500_000}}})
    started = time.perf_counter()
    with pytest.raises(TooManyJsonValues):
        parse_json_request(hostile)
    assert time.perf_counter() - started < 0.3  # the C decoder's count; seconds before
    many = {"subscription": {"trackSids": [f"TR_{i}" for i in range(5000)], "subscribe": True}}
    assert len(parse_json_request(json.dumps(many)).subscription.track_sids) == 5000
    big_value = {"updateMetadata": {"metadata": "m" * 500_000}}  # one value, however long
    assert len(parse_json_request(json.dumps(big_value)).update_metadata.metadata) == 500_000


def test_json_values_are_counted_through_nesting_and_the_count_stops_early() -> None:
    assert not json_values_over({"a": [1, 2, {"b": [3, 4]}]}, 7)  # a, 3 items, b, 2 items
    assert json_values_over({"a": [1, 2, {"b": [3, 4]}]}, 6)
    assert not json_values_over("text", 0) and not json_values_over([], 0)
    nested = [[0] * 1000 for _ in range(MAX_JSON_VALUES // 1000)]
    assert json_values_over(nested, MAX_JSON_VALUES)
