"""Choosing the forwarding plane, and which tracks the native engine takes."""

from __future__ import annotations

import logging

import pytest

from roomcast.config import ConfigError, Overrides, load_config
from roomcast.media import native_plane
from roomcast.media.native_plane import ENV_VARIABLE, choose_plane, native_module
from roomcast.media.native_tracks import native_transport_id, offloadable

VP8 = {96: "video/vp8", 97: "video/rtx"}


def test_python_is_always_available(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV_VARIABLE, raising=False)
    assert choose_plane("python") == "python"


def test_environment_overrides_the_config(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_VARIABLE, "python")
    assert choose_plane("native") == "python"
    monkeypatch.setenv(ENV_VARIABLE, "warp")
    with pytest.raises(ValueError, match="warp"):
        choose_plane("auto")


def test_auto_is_native_where_built(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV_VARIABLE, raising=False)
    built = native_module()[0] is not None
    assert choose_plane("auto") == ("native" if built else "python")


def test_missing_build_is_said_once(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.delenv(ENV_VARIABLE, raising=False)
    monkeypatch.setattr(native_plane, "native_module", lambda: (None, "no module _native"))
    monkeypatch.setattr(native_plane, "_said_so", False)
    with caplog.at_level(logging.WARNING):
        assert choose_plane("auto") == "python"
        assert choose_plane("auto") == "python"
    said = [r for r in caplog.records if "native forwarding plane is not built" in r.message]
    assert len(said) == 1 and "libsrtp2-dev" in said[0].message
    with pytest.raises(RuntimeError, match="not built"):
        choose_plane("native")


def test_config_key_is_checked() -> None:
    body = "keys: {k: sssssssssssssssssssssssssssssssssss}\nrtc: {forwarding_plane: fast}\n"
    with pytest.raises(ConfigError, match="forwarding_plane"):
        load_config(Overrides(config_body=body), environ={})


@pytest.mark.parametrize(
    ("kind", "codecs", "layers", "expected"),
    [
        ("video", VP8, 1, True),
        ("video", VP8, 3, True),  # simulcast
        ("video", {96: "video/vp8", 97: "video/rtx"}, 3, True),
        ("video", {96: "video/vp8", 98: "video/h264"}, 1, True),
        ("video", {98: "video/h264"}, 3, True),
        ("video", {98: "video/h265"}, 1, True),
        ("video", {98: "video/vp9"}, 1, True),  # SVC
        ("video", {98: "video/vp9"}, 3, True),  # VP9 simulcast
        ("video", {35: "video/av1"}, 1, True),  # SVC through the Dependency Descriptor, or not
        ("video", {35: "video/av1"}, 3, True),  # AV1 simulcast
        ("video", {100: "video/x-unknown"}, 1, True),  # every packet a start
        ("audio", {111: "audio/opus"}, 1, True),
        ("audio", {63: "audio/red", 111: "audio/opus"}, 1, True),
        ("audio", {96: "video/vp8"}, 1, False),
        ("video", {111: "audio/opus"}, 1, False),
        ("video", {97: "video/rtx"}, 1, False),  # nothing to forward
        ("video", VP8, 5, False),  # more layers than the engine keeps
    ],
)
def test_offloadable_tracks(kind: str, codecs: dict[int, str], layers: int, expected: bool) -> None:
    assert offloadable(kind, codecs, layers) is expected


class _Transport:
    native_id = 7

    def send_rtp(self, packet: bytes) -> None: ...


class _Peer:
    """Like rooms/publisher_peer.PublisherPeer: a transport behind `.transport`."""

    transport = _Transport()

    def send_rtcp(self, packet: bytes) -> None: ...


def test_transport_of_a_send_callback() -> None:
    assert native_transport_id(_Transport().send_rtp) == 7
    assert native_transport_id(_Peer().send_rtcp) == 7
    assert native_transport_id(lambda packet: None) == -1
