"""Log lines carry the process's node id and worker index, in console and JSON form."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator

import pytest

from roomcast.logs import CONSOLE_FORMAT, ConsoleFormatter, JsonFormatter, set_context


@pytest.fixture(autouse=True)
def no_context() -> Iterator[None]:
    yield
    set_context()


def record(message: str = "hello", **extra: object) -> logging.LogRecord:
    entry = logging.LogRecord("roomcast.test", logging.INFO, __file__, 1, message, (), None)
    entry.__dict__.update(extra)
    return entry


def test_console_lines_are_tagged_with_node_and_worker() -> None:
    console = ConsoleFormatter(CONSOLE_FORMAT)
    set_context(node="ND_abc", worker=1)
    line = console.format(record(room="r1"))
    assert line.endswith(" INFO  [ND_abc w1] roomcast.test: hello  room=r1")
    set_context(node="ND_abc", worker=None)  # a single process: no worker index
    assert console.format(record()).endswith(" INFO  [ND_abc] roomcast.test: hello")
    set_context(process="supervisor")
    assert console.format(record()).endswith(" INFO  [supervisor] roomcast.test: hello")
    set_context()
    assert console.format(record()).endswith(" INFO  roomcast.test: hello")


def test_json_lines_have_node_and_worker_fields() -> None:
    set_context(node="ND_abc", worker=0)
    entry = json.loads(JsonFormatter().format(record(room="r1")))
    assert entry["node"] == "ND_abc" and entry["worker"] == 0
    assert (entry["logger"], entry["msg"], entry["room"]) == ("roomcast.test", "hello", "r1")
    assert "context" not in entry
