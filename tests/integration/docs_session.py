"""A reader working through one page of the docs: a scratch directory that looks like a
checkout, a dev server standing for `make run`, and one bash that runs the page's shell
examples in order, so what one block starts or sets (a server, an exported variable) is there
for the blocks below it, as in the reader's terminal.

The rules (also in tests/integration/test_docs_examples.py):
- Port numbers the docs use (docs_blocks.DOC_TCP_PORTS/DOC_UDP_PORTS) become free ports, the
  same ones on the whole page; 7880 and 7882 are the page's dev server, whose address is also in
  LIVEKIT_URL, LIVEKIT_API_KEY and LIVEKIT_API_SECRET.
- Shell: every command must exit 0. `make T` is checked with `make -n T`; `make run` also starts
  the command it would run. Servers (`roomcast serve`, `redis-server`, an agent worker's
  `start`/`dev`) run in the background (as in another terminal) and must become ready; a
  `roomcast serve` without `--port`/`--udp-port`/`--tcp-port` gets free ones. `python -m
  pytest …` is collected, not run; `python -m bench.…` (minutes) must accept its flags
  (`--help`).
- Servers started one after another come up together: the next command waits for them all.
- A block with a `kill` (`kill $(jobs -p)`) must stop everything the page started; whatever is
  still running at the end of the page is stopped as Ctrl-C does. Roomcast must exit 0.
"""

from __future__ import annotations

import contextlib
import os
import queue
import random
import re
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from tests.docs_blocks import DOC_UDP_PORTS, REPO, Block, commands, ports_in, rewrite_ports

# What a checkout has that the examples use; the scratch directory links to these.
CHECKOUT = [
    ".venv",
    ".venv-agents",
    "Makefile",
    "pyproject.toml",
    "setup.py",
    "native",
    "src",
    "tests",
    "scripts",
    "bench",
    "docs",
]
NODE_MODULES = REPO / "tests" / "node" / "node_modules"

COMMAND_TIMEOUT = 180.0  # seconds for one shell command (a short load test included)
READY_TIMEOUT = 60.0  # seconds a server gets to answer (a loaded machine is slow)
STOP_TIMEOUT = 40.0  # seconds a stopped process gets to exit (an agent worker drains)
_MAKE_VARIABLES = frozenset(
    {"MAKEFLAGS", "MAKELEVEL", "MFLAGS", "MAKEOVERRIDES", "MAKE_TERMOUT", "MAKE_TERMERR"}
)
_RC = "__DOCS_RC__"
_BG = "__DOCS_BG__"

_ROOMCAST_SERVE = re.compile(r"(?:^|[\s/])roomcast\s+serve\b|-m\s+roomcast\s+serve\b")
_REDIS = re.compile(r"(?:^|[\s/])redis-server\b")
_AGENT = re.compile(r"\bagent\.py\s+(?:start|dev)\b")
_MAKE = re.compile(r"^make\s+([\w-]+)$")
_PYTEST = re.compile(r"-m\s+pytest\b")
_BENCH = re.compile(r"^(.*?-m\s+bench\.\w+)(.*)$")
_FLAG = re.compile(r"(?<![\w-])(--[a-z][\w-]*)")


class ExampleFailed(AssertionError):
    pass


@dataclass
class Process:
    """A long-running process the page started (in bash's background)."""

    pid: int
    command: str
    log: Path
    kind: str  # roomcast, redis, agent or other
    exit_code: int | None = None
    port: int = 0  # where it answers when ready (0: no check)
    workers: int = 1

    def alive(self) -> bool:
        try:
            state = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            return False
        return state not in ("Z", "X")

    def log_tail(self, lines: int = 25) -> str:
        try:
            text = self.log.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])


class Bash:
    """One bash fed command by command; each command's output and exit status come back."""

    def __init__(self, cwd: Path, env: dict[str, str]) -> None:
        self.proc = subprocess.Popen(
            ["bash", "--noprofile", "--norc"],
            cwd=cwd,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,  # its own process group: everything it starts ends with it
        )
        self._lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._lines.put(line)
        self._lines.put(None)

    def _send(self, script: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(script)
        self.proc.stdin.flush()

    def _until(self, marker: str, timeout: float) -> tuple[str, str]:
        """(output before the marker line, the rest of that line)."""
        output: list[str] = []
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self._lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                self.kill()
                raise ExampleFailed(
                    f"no answer within {timeout:.0f} s; output so far:\n{''.join(output)[-3000:]}"
                ) from None
            if line is None:
                raise ExampleFailed(f"bash exited; output:\n{''.join(output)[-3000:]}")
            at = line.find(marker)  # output without a final newline shares the marker's line
            if at >= 0:
                output.append(line[:at])
                return "".join(output), line[at + len(marker) :].strip()
            output.append(line)

    def run(self, code: str, timeout: float = COMMAND_TIMEOUT) -> tuple[int, str]:
        """Run in the shell itself (variables it sets stay set), stdin from /dev/null."""
        self._send(f"{{ {code}\n}} </dev/null 2>&1; echo {_RC} $?\n")
        output, status = self._until(_RC, timeout)
        return int(status), output

    def start(self, code: str, log: Path) -> int:
        """Run in the background, output to `log`; its pid."""
        self._send(f"{code} </dev/null >{shlex.quote(str(log))} 2>&1 &\necho {_BG} $!\n")
        _, pid = self._until(_BG, 10)
        return int(pid)

    def wait(self, pid: int, timeout: float) -> int:
        self._send(f"wait {pid}; echo {_RC} $?\n")
        return int(self._until(_RC, timeout)[1])

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)

    def close(self) -> None:
        self.kill()
        self.proc.wait(10)


def wait_ready(check: Process) -> None:
    """Until its port answers as the process's kind should: a Redis PONG, or HTTP 200 on /
    (and, from Roomcast, a "roomcast started" line per worker: every port is up)."""
    probe, port = check.kind, check.port
    deadline = time.monotonic() + READY_TIMEOUT
    while port:
        if not check.alive():
            raise ExampleFailed(f"{check.command!r} exited:\n{check.log_tail()}")
        with contextlib.suppress(OSError, urllib.error.URLError):
            if probe == "redis":
                with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
                    sock.sendall(b"PING\r\n")
                    if sock.recv(16).startswith(b"+PONG"):
                        return
            else:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=1) as reply:
                    log = check.log_tail(10**6)
                    started = probe != "roomcast" or log.count("roomcast started") >= check.workers
                    if reply.status == 200 and started:
                        return
        if time.monotonic() > deadline:
            raise ExampleFailed(f"{check.command!r} not ready on port {port}:\n{check.log_tail()}")
        time.sleep(0.1)


# Ports for the examples come from below the kernel's ephemeral range (32768-60999 on Linux), so
# no outgoing connection on the machine takes one between the moment it is chosen and the
# moment an example binds it (a page chooses its ports when it starts).
QUIET_PORTS = (20000, 32000)


def quiet_port(kind: int = socket.SOCK_STREAM) -> int:
    """A port below the ephemeral range that nothing is bound to now."""
    while True:
        port = random.randrange(*QUIET_PORTS)
        with socket.socket(socket.AF_INET, kind) as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        if kind == socket.SOCK_DGRAM:  # --workers N uses the next ports too
            with socket.socket(socket.AF_INET, kind) as sock:
                try:
                    sock.bind(("127.0.0.1", port + 1))
                except OSError:
                    continue
        return port


def _flag_value(code: str, flag: str) -> str | None:
    match = re.search(rf"{flag}[ =](\S+)", code)
    return match.group(1) if match else None


@dataclass
class PageSession:
    page: str
    blocks: list[Block]
    root: Path
    ports: dict[int, int] = field(default_factory=dict)
    processes: list[Process] = field(default_factory=list)
    ran: set[int] = field(default_factory=set)
    _starting: list[Process] = field(default_factory=list)
    _help: dict[str, str] = field(default_factory=dict)  # bench module → its --help
    _server: subprocess.Popen[bytes] | None = None
    _bash: Bash | None = None

    def __post_init__(self) -> None:
        self.scratch = self.root / "checkout"
        self.scratch.mkdir(parents=True)
        for name in CHECKOUT:
            if (REPO / name).exists():
                (self.scratch / name).symlink_to(REPO / name)
        (self.scratch / "node_modules").symlink_to(NODE_MODULES)
        used: set[int] = set()
        for block in self.blocks:
            if block.kind != "text":
                used |= ports_in(block.text)
        self._taken: set[int] = set()
        self.ports = {
            port: self._port(socket.SOCK_DGRAM if port in DOC_UDP_PORTS else socket.SOCK_STREAM)
            for port in sorted(used | {7880, 7881, 7882})
        }

    def _port(self, kind: int = socket.SOCK_STREAM) -> int:
        """A quiet port that this page has not handed out yet."""
        while (port := quiet_port(kind)) in self._taken or port + 1 in self._taken:
            pass
        self._taken |= {port, port + 1}
        return port

    # -- the environment every example sees --------------------------------------------------
    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.ports[7880]}"

    @property
    def env(self) -> dict[str, str]:
        # A reader's terminal is not inside `make`: make's own variables (MAKELEVEL makes a
        # nested make print "make[1]: Entering directory") are dropped with LiveKit's.
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith("LIVEKIT_") and k not in _MAKE_VARIABLES
        }
        env.update(
            LIVEKIT_URL=self.url,
            LIVEKIT_API_KEY="devkey",
            LIVEKIT_API_SECRET="secret",
            PYTHONPATH=str(REPO / "src"),  # `.venv/bin/roomcast` runs this checkout's code
        )
        return env

    def text_of(self, block: Block) -> str:
        return rewrite_ports(block.text, self.ports)

    def server(self) -> None:
        """The page's dev server (`make run` in the reader's other terminal), started once."""
        if self._server is not None:
            return
        log = (self.root / "dev-server.log").open("wb")
        self._server = subprocess.Popen(
            [sys.executable, "-m", "roomcast", "serve", "--dev", *self._port_flags()],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        log_path = self.root / "dev-server.log"
        wait_ready(
            Process(self._server.pid, "serve --dev", log_path, "roomcast", None, self.ports[7880])
        )

    def _port_flags(self) -> list[str]:
        return [
            "--port",
            str(self.ports[7880]),
            "--udp-port",
            str(self.ports[7882]),
            "--tcp-port",
            str(self.ports[7881]),
        ]

    def server_log(self) -> str:
        return Process(0, "", self.root / "dev-server.log", "").log_tail(40)

    @property
    def bash(self) -> Bash:
        if self._bash is None:
            self._bash = Bash(self.scratch, self.env)
        return self._bash

    # -- shell blocks --------------------------------------------------------------------------
    def run_shell(self, block: Block) -> None:
        for command in commands(self.text_of(block)):
            self._run_command(command.code, command.background)
        self._await_starting()
        if re.search(r"\bkill\b", block.text):  # `kill $(jobs -p)`: everything must stop
            problems = self._collect(self.processes)
            if problems:
                raise ExampleFailed("\n\n".join(problems))
            return
        for process in self.processes:
            if process.exit_code is None and not process.alive():
                raise ExampleFailed(f"{process.command!r} stopped:\n{process.log_tail()}")

    def _collect(self, processes: list[Process]) -> list[str]:
        """Wait for these processes to exit; Roomcast must exit 0."""
        problems = []
        for process in processes:
            if process.exit_code is not None:
                continue
            try:
                process.exit_code = self.bash.wait(process.pid, STOP_TIMEOUT)
            except ExampleFailed as exc:
                problems.append(f"{process.command!r} did not stop: {exc}")
                continue
            if process.kind == "roomcast" and process.exit_code != 0:
                problems.append(
                    f"{process.command!r} exited with {process.exit_code}:\n{process.log_tail()}"
                )
        return problems

    def _await_starting(self) -> None:
        """Servers started one after the other come up together; the next command that is not
        a server waits for all of them, as a reader would."""
        while self._starting:
            wait_ready(self._starting.pop(0))

    def _run_command(self, code: str, background: bool) -> None:
        if not (_ROOMCAST_SERVE.search(code) or _REDIS.search(code) or _AGENT.search(code)):
            self._await_starting()
        make = _MAKE.match(code)
        if make:
            rc, output = self.bash.run(f"make -n {make.group(1)}")
            self._check(rc, f"make -n {make.group(1)}", output)
            if make.group(1) == "run":  # it serves until Ctrl-C: start what it runs
                self._start(output.strip().splitlines()[-1])
            return
        if _ROOMCAST_SERVE.search(code) or _REDIS.search(code) or _AGENT.search(code):
            self._start(code)
            return
        if _PYTEST.search(code):
            code += " --collect-only -q"
        bench = _BENCH.match(code)
        if bench:
            if bench.group(1) not in self._help:
                rc, output = self.bash.run(f"{bench.group(1)} --help")
                self._check(rc, f"{bench.group(1)} --help", output)
                self._help[bench.group(1)] = output
            output = self._help[bench.group(1)]
            for flag in _FLAG.findall(bench.group(2)):
                if flag not in output:
                    raise ExampleFailed(f"{bench.group(1)} has no flag {flag}:\n{output}")
            return
        if background:
            log = self.root / f"bg-{len(self.processes)}.log"
            pid = self.bash.start(code, log)
            self.processes.append(Process(pid, code, log, "other"))
            return
        rc, output = self.bash.run(code)
        self._check(rc, code, output)

    def _check(self, rc: int, code: str, output: str) -> None:
        if rc != 0:
            raise ExampleFailed(f"{code!r} exited with {rc}:\n{output[-4000:]}")

    def _start(self, code: str) -> None:
        """A server, in the background; the next command waits until it answers."""
        port, workers = 0, 1
        if _ROOMCAST_SERVE.search(code):
            workers = int(_flag_value(code, "--workers") or 1)
            kind = "roomcast"
            if _flag_value(code, "--port") is None:
                code += f" --port {self._port()}"
            if _flag_value(code, "--udp-port") is None:
                code += f" --udp-port {self._port(socket.SOCK_DGRAM)}"
            if _flag_value(code, "--tcp-port") is None:
                code += f" --tcp-port {self._port()}"
            port = int(_flag_value(code, "--port") or 0)
        elif _REDIS.search(code):
            kind = "redis"
            port = int(_flag_value(code, "--port") or 6379)
        else:
            kind = "agent"  # its health-check port: a free one, not 8081
            port = self._port()
            code = f"AGENT_HTTP_PORT={port} {code}"
        log = self.root / f"bg-{len(self.processes)}-{kind}.log"
        process = Process(self.bash.start(code, log), code, log, kind, None, port, workers)
        self.processes.append(process)
        self._starting.append(process)

    # -- the end of the page ----------------------------------------------------------------------
    def finish(self) -> list[str]:
        """Stop what the page left running, as Ctrl-C would; the problems found."""
        running = [p for p in self.processes if p.exit_code is None]
        for process in running:
            with contextlib.suppress(ProcessLookupError):
                os.kill(process.pid, signal.SIGINT)
        problems = self._collect(running)
        if self._server is not None:
            self._server.send_signal(signal.SIGINT)
            try:
                code = self._server.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self._server.kill()
                code = -1
            if code != 0:
                problems.append(f"the dev server exited with {code}:\n{self.server_log()}")
            self._server = None
        self.close()
        return problems

    def close(self) -> None:
        if self._bash is not None:
            self._bash.close()
            self._bash = None
        if self._server is not None:
            self._server.kill()
            self._server.wait()
            self._server = None
