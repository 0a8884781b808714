"""Every code block in README.md, SECURITY.md and docs/ runs, so an example cannot rot.

Each page is read top to bottom as a reader would (tests/integration/docs_session.py has the
rules): a dev server on free ports stands for `make run`, and LIVEKIT_URL, LIVEKIT_API_KEY and
LIVEKIT_API_SECRET point at it.

- ```python: a complete script, run with this venv's python; it must exit 0 (the Python SDK's
  abort at exit, after the script is done, is let through: see SDK_EXIT_PANIC).
- ```js: an ES module, run with node next to tests/node's npm packages; it must exit 0.
- ```html: a page opened from disk in Chromium (fake camera and microphone); it must set
  ``document.body.dataset.state = "connected"``.
- ```yaml: loads with roomcast.config.load_config (the dev keys added when it has none) and sets
  no key that Roomcast ignores; it is then the page's ``livekit.yaml``.
- ```sh: run command by command in one bash per page (see docs_session.py).
- ```text: not code; never run.

A block whose first line names a file (``# chat.py: …``, ``// chat.mjs: …``,
``<!-- hello.html: … -->``) is saved under that name, so later shell blocks can run it.
Test ids are ``page/heading/n``; ``page/end`` stops what the page left running.
"""

from __future__ import annotations

import dataclasses
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from roomcast.config import Overrides, load_config
from tests.certificates import self_signed_certificate
from tests.docs_blocks import REPO, Block, all_blocks, pages, parse
from tests.integration.docs_session import NODE_MODULES, ExampleFailed, PageSession

CHROMIUM = Path("/usr/bin/chromium")
SCRIPT_TIMEOUT = 90.0
PAGE_TIMEOUT_MS = 30_000
RUNNABLE = ("python", "js", "html", "yaml", "sh")

BLOCKS = all_blocks()
RUN = [block for block in BLOCKS if block.kind in RUNNABLE]
RUN_PAGES = list(dict.fromkeys(block.page for block in RUN))


def _items() -> Iterator[object]:
    for page in RUN_PAGES:
        for block in RUN:
            if block.page == page:
                yield pytest.param(block, id=block.id)
        yield pytest.param(page, id=f"{page}/end")


@pytest.fixture(scope="module")
def sessions(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, PageSession]]:
    opened: dict[str, PageSession] = {}
    yield opened
    for session in opened.values():
        session.close()


def session_for(
    sessions: dict[str, PageSession], page: str, tmp: pytest.TempPathFactory
) -> PageSession:
    if page not in sessions:
        blocks = [block for block in RUN if block.page == page]
        sessions[page] = PageSession(page, blocks, tmp.mktemp(re.sub(r"\W", "-", page)))
    return sessions[page]


@pytest.mark.parametrize("item", list(_items()))
def test_docs_example(
    item: Block | str,
    sessions: dict[str, PageSession],
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    if isinstance(item, str):  # the end of a page
        if item not in sessions:
            pytest.skip("no block of this page ran")
        problems = sessions.pop(item).finish()
        assert not problems, "\n\n".join(problems)
        return
    session = session_for(sessions, item.page, tmp_path_factory)
    # What the blocks above this one leave behind (shell state, livekit.yaml, saved files) is
    # made first when this test runs alone.
    for earlier in session.blocks:
        if earlier.index < item.index and earlier.index not in session.ran:
            if earlier.kind in ("sh", "yaml"):
                run_block(session, earlier)
            elif earlier.file_name:
                saved(session, earlier, "")
            session.ran.add(earlier.index)
    session.ran.add(item.index)
    run_block(session, item)


def run_block(session: PageSession, block: Block) -> None:
    where = f"{block.page}:{block.line}"
    try:
        if block.kind == "yaml":
            check_yaml(session, block)
            return
        session.server()
        if block.kind == "python":
            run_script(session, block, [sys.executable], ".py")
        elif block.kind == "js":
            if shutil.which("node") is None or not NODE_MODULES.is_dir():
                pytest.skip("Node SDKs not installed: run `make test-deps`")
            run_script(session, block, ["node"], ".mjs")
        elif block.kind == "html":
            open_page(session, block)
        else:
            session.run_shell(block)
    except ExampleFailed as exc:
        raise ExampleFailed(
            f"{where}: {exc}\n--- the page's dev server:\n{session.server_log()}"
        ) from None


def saved(session: PageSession, block: Block, suffix: str) -> Path:
    path = session.scratch / (block.file_name or f"block-{block.index}{suffix}")
    path.write_text(session.text_of(block))
    return path


def run_script(session: PageSession, block: Block, interpreter: list[str], suffix: str) -> None:
    path = saved(session, block, suffix)
    try:
        done = subprocess.run(
            [*interpreter, str(path)],
            cwd=session.scratch,
            env=session.env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=SCRIPT_TIMEOUT,
        )
    except subprocess.TimeoutExpired as exc:
        raise ExampleFailed(f"{path.name} still running after {SCRIPT_TIMEOUT:.0f} s") from exc
    if done.returncode != 0 and not sdk_exit_abort(done.returncode, done.stderr):
        raise ExampleFailed(
            f"{path.name} exited with {done.returncode}\n--- stdout:\n{done.stdout[-3000:]}"
            f"\n--- stderr:\n{done.stderr[-3000:]}"
        )


# The Python SDK (livekit 1.2, Rust core) sometimes aborts the process as it exits, after the
# script has finished: a native thread calls back into an interpreter that is shutting down.
# Seen in about 1 run in 10 right after Room.disconnect(), never while a script runs; the
# README's troubleshooting list names it. A script that failed prints a traceback first.
SDK_EXIT_PANIC = "panic in a function that cannot unwind"


def sdk_exit_abort(returncode: int, stderr: str) -> bool:
    return returncode in (-6, 134) and SDK_EXIT_PANIC in stderr and "Traceback" not in stderr


def open_page(session: PageSession, block: Block) -> None:
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is absent: install it with `make test-deps`")
    from playwright.sync_api import sync_playwright

    from tests.browser.conftest import CHROMIUM_ARGS

    path = saved(session, block, ".html")
    console: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        try:
            context = browser.new_context(permissions=["camera", "microphone"])
            page = context.new_page()
            page.on("console", lambda m: console.append(f"[{m.type}] {m.text[:300]}"))
            page.on("pageerror", lambda error: console.append(f"[pageerror] {error}"))
            page.goto(path.as_uri())
            try:
                page.wait_for_function("document.body.dataset.state", timeout=PAGE_TIMEOUT_MS)
                state = page.evaluate("document.body.dataset.state")
            except Exception as exc:  # playwright's timeout: report what the page said
                state = f"no state ({exc})"
            text = page.inner_text("body")[:1000]
        finally:
            browser.close()
    if state != "connected":
        raise ExampleFailed(
            f"{path.name}: state {state!r}\n--- page text:\n{text}\n--- console:\n"
            + "\n".join(console[-30:])
        )


_CERTIFICATE_KEYS = re.compile(r"^(\s*(?:cert_file|key_file):\s*)(\S+)\s*$", re.MULTILINE)


def with_test_certificates(session: PageSession, text: str) -> str:
    """The example's certificate paths (a reader's own, e.g. /etc/roomcast/turn.crt) swapped
    for a self-signed pair made here, so the config loads and the server starts as it would."""
    if _CERTIFICATE_KEYS.search(text) is None:
        return text
    cert, key = self_signed_certificate(session.scratch, "turn.example.com")

    def swap(match: re.Match[str]) -> str:
        made = cert if "cert_file" in match.group(1) else key
        return f"{match.group(1)}{made}"

    return _CERTIFICATE_KEYS.sub(swap, text)


def check_yaml(session: PageSession, block: Block) -> None:
    """A whole livekit.yaml, saved for the commands below; or, starting with "# add to
    livekit.yaml", a fragment added to the one above."""
    text = with_test_certificates(session, block.text)
    as_written = session.scratch / "livekit.yaml.as-written"  # before the ports are swapped
    if text.lstrip().startswith("# add to livekit.yaml"):
        assert as_written.exists(), "a fragment to add to livekit.yaml follows a livekit.yaml"
        text = as_written.read_text() + "\n" + text
    has_keys = re.search(r"^(keys|key_file):", text, re.MULTILINE) is not None
    overrides = Overrides(config_body=text, keys=None if has_keys else "devkey: secret")
    config = load_config(overrides, environ={})
    assert not config.ignored_keys, f"the example sets keys that do nothing: {config.ignored_keys}"
    as_written.write_text(text)
    (session.scratch / "livekit.yaml").write_text(
        session.text_of(dataclasses.replace(block, text=text))
    )


# -- the pages themselves ---------------------------------------------------------------------
def test_every_block_says_what_it_is() -> None:
    unknown = [f"{b.page}:{b.line} ```{b.info}" for b in BLOCKS if b.kind is None]
    assert not unknown, "fence languages must be one of python, js, html, yaml, sh, text"


LINK = re.compile(r"\]\((?!https?:|mailto:|#)([^)\s]+)\)")


@pytest.mark.parametrize("page", pages(), ids=lambda p: p.relative_to(REPO).as_posix())
def test_relative_links_point_at_files_in_the_repository(page: Path) -> None:
    text = page.read_text()
    for block in parse(text, page.name):  # links inside code are not links
        text = text.replace(block.text, "")
    missing = [
        target
        for target in LINK.findall(text)
        if not (page.parent / target.split("#")[0]).resolve().exists()
    ]
    assert not missing, f"{page.name} links to files that do not exist: {missing}"
