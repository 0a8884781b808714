"""The pytest plugin as an app's test suite meets it: the README's example test file, copied into a
project of its own and run by `pytest` in a subprocess, with the plugin found through its
``pytest11`` entry point (no conftest, no ``-p``), and the plugin's opt-in and opt-out.

The entry point is the one `pip install` writes from pyproject.toml. Where the installed
`roomcast` already declares it (CI: ``pip install -e '.[test]'`` from this checkout) the
subprocess uses that installation; where the installed metadata predates it (a shared dev venv),
the subprocess gets a metadata directory declaring exactly pyproject.toml's entry point, which
pytest discovers the same way (importlib.metadata)."""

from __future__ import annotations

import importlib.metadata
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

import roomcast

REPO = Path(__file__).resolve().parents[2]
SOURCES = Path(roomcast.__file__).resolve().parents[1]
RUN_TIMEOUT = 300


def readme_example() -> str:
    readme = (REPO / "README.md").read_text()
    section = readme.split("## Testing your LiveKit app with Roomcast", 1)[1]
    match = re.search(r"```python\n(# test_livekit_app\.py\n.*?)```", section, re.S)
    assert match, "README: the example test file of 'Testing your LiveKit app with Roomcast'"
    return match.group(1)


def docs_example() -> str:
    page = (REPO / "docs" / "testing.md").read_text()
    match = re.search(r"```python\n(# test_livekit_media\.py\n.*?)```", page, re.S)
    assert match, "docs/testing.md: the fuller example test file"
    return match.group(1)


def declared_entry_point() -> str:
    with (REPO / "pyproject.toml").open("rb") as file:
        project = tomllib.load(file)["project"]
    return str(project["entry-points"]["pytest11"]["roomcast"])


def installed_entry_point() -> str | None:
    for entry in importlib.metadata.entry_points(group="pytest11"):
        if entry.name == "roomcast":
            return entry.value
    return None


def project_env(tmp_path: Path) -> dict[str, str]:
    """The environment of a user's `pytest` run: this checkout's roomcast on the path, and the
    plugin's entry point declared (by the installed metadata, or as pyproject.toml says)."""
    paths = [str(SOURCES)]
    if installed_entry_point() is None:
        info = tmp_path / "site" / "roomcast_entry_point-0.dist-info"
        info.mkdir(parents=True)
        (info / "METADATA").write_text(
            "Metadata-Version: 2.1\nName: roomcast-entry-point\nVersion: 0\n"
        )
        (info / "entry_points.txt").write_text(f"[pytest11]\nroomcast = {declared_entry_point()}\n")
        paths.insert(0, str(info.parent))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LIVEKIT_", "PYTEST_"))}
    env["PYTHONPATH"] = os.pathsep.join(paths)
    return env


def run_pytest(project: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            f"--rootdir={project}",
            *args,
        ],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
    )


def test_the_entry_point_names_the_plugin_module() -> None:
    assert declared_entry_point() == "roomcast.pytest_plugin"
    installed = installed_entry_point()
    assert installed in (None, declared_entry_point()), installed


def test_the_readme_example_passes_in_a_project_of_its_own(tmp_path: Path) -> None:
    project = tmp_path / "app"
    project.mkdir()
    (project / "test_livekit_app.py").write_text(readme_example())
    result = run_pytest(project, project_env(tmp_path), "-W", "ignore::DeprecationWarning")
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert re.search(r"\b2 passed\b", output), output


def test_the_fuller_docs_example_passes_too(tmp_path: Path) -> None:
    project = tmp_path / "app"
    project.mkdir()
    (project / "test_livekit_media.py").write_text(docs_example())
    result = run_pytest(project, project_env(tmp_path), "-W", "ignore::DeprecationWarning")
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert re.search(r"\b4 passed\b", output), output


OPT_IN = """
import threading

def test_no_server_unless_asked():
    assert not [t for t in threading.enumerate() if t.name == "roomcast-server"]

def test_the_fixture_is_there(roomcast_server, roomcast_room):
    assert roomcast_server.url.startswith("ws://127.0.0.1:")
    assert roomcast_room.startswith("test_the_fixture_is_there-")
"""


def test_the_plugin_is_opt_in_and_can_be_turned_off(tmp_path: Path) -> None:
    project = tmp_path / "app"
    project.mkdir()
    (project / "test_opt_in.py").write_text(OPT_IN)
    env = project_env(tmp_path)

    result = run_pytest(project, env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 passed" in result.stdout

    off = run_pytest(project, env, "-p", "no:roomcast")
    assert off.returncode == 1, off.stdout + off.stderr
    assert "fixture 'roomcast_server' not found" in off.stdout
    assert "1 passed" in off.stdout  # the test that asks for nothing is untouched


CONFIGURED = """
import json, urllib.request

def test_config_reaches_the_server(roomcast_server):
    token = roomcast_server.admin_token()
    request = urllib.request.Request(
        roomcast_server.http_url + "/twirp/livekit.RoomService/CreateRoom",
        data=json.dumps({"name": "configured"}).encode(),
        headers={"Authorization": "Bearer " + token, "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request) as response:
        room = json.loads(response.read())
    assert room["max_participants"] == 7
"""


@pytest.mark.parametrize("scope", ["session", "function"])
def test_ini_options_configure_the_server(tmp_path: Path, scope: str) -> None:
    project = tmp_path / "app"
    project.mkdir()
    (project / "pytest.ini").write_text(
        f"[pytest]\nroomcast_scope = {scope}\nroomcast_config = {{room: {{max_participants: 7}}}}\n"
    )
    (project / "test_configured.py").write_text(CONFIGURED)
    result = run_pytest(project, project_env(tmp_path))
    assert result.returncode == 0, result.stdout + result.stderr
