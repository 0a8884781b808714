"""The CLI's token and key commands as lk users expect them (in-process, no server)."""

from __future__ import annotations

import time

import pytest
import yaml

from roomcast.auth import TokenVerifier
from roomcast.cli import main
from roomcast.config import Overrides, load_config


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_token_create_signs_with_the_keys_in_the_environment(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = "a-real-secret-of-at-least-thirty-two-chars"
    monkeypatch.setenv("LIVEKIT_API_KEY", "APIreal")
    monkeypatch.setenv("LIVEKIT_API_SECRET", secret)
    code, out, _ = run(capsys, "token", "create", "--room", "r", "--identity", "ann")
    assert code == 0
    claims = TokenVerifier({"APIreal": secret}).verify(out.strip())
    assert claims.api_key == "APIreal" and claims.identity == "ann"


def test_token_create_defaults_to_the_dev_keys_without_environment(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("LIVEKIT_API_KEY", raising=False)
    monkeypatch.delenv("LIVEKIT_API_SECRET", raising=False)
    code, out, _ = run(capsys, "token", "create", "--create", "--list", "--valid-for", "1h30m")
    assert code == 0
    claims = TokenVerifier({"devkey": "secret"}).verify(out.strip())
    assert claims.video.room_create and claims.video.room_list
    assert abs(claims.expires_at - time.time() - 5400) < 5


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ((), "nothing to grant"),
        (("--admin",), "give --room"),
        (("--room", "r"), "needs --identity"),
        (("--join", "--identity", "a"), "needs --room"),
        (("--room", "r", "--identity", "a", "--valid-for", "soon"), "invalid duration"),
        (("--room", "r", "--identity", "a", "--valid-for", "0"), "longer than zero"),
        (("--room", "r", "--identity", "a", "--attribute", "novalue"), "KEY=VALUE"),
    ],
)
def test_token_create_refuses_useless_tokens(
    capsys: pytest.CaptureFixture[str], argv: tuple[str, ...], message: str
) -> None:
    code, out, err = run(capsys, "token", "create", *argv)
    assert code == 2 and out == "" and message in err


def test_generate_keys_prints_a_keys_flag_and_yaml_the_server_loads(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, _ = run(capsys, "generate-keys")
    assert code == 0
    flag = next(line for line in out.splitlines() if "--keys" in line)
    keys_value = flag.split('--keys "', 1)[1].rstrip('"')
    from_flag = load_config(Overrides(keys=keys_value), environ={})
    block = out[out.index("keys:") :]
    from_yaml = load_config(Overrides(config_body=block), environ={})
    assert from_flag.keys == from_yaml.keys == yaml.safe_load(block)["keys"]
    assert len(next(iter(from_flag.keys.values()))) >= 32
