"""The fenced code blocks of README.md and docs/, and how the docs tests treat each one.

Pure text handling (no I/O beyond reading the pages), so it is unit-tested on its own
(tests/unit/test_docs_blocks.py); tests/integration/test_docs_examples.py runs the blocks.

A block's language is the first word of its fence's info string:

- ``python``, ``js``, ``html``, ``yaml``, ``sh``: code, run by the docs tests;
- ``text``: not code (output samples, protocol excerpts, diagrams): never run.

Anything else, or a fence without a language, is an error: every block says what it is.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

LANGUAGES = {
    "python": "python",
    "py": "python",
    "js": "js",
    "javascript": "js",
    "html": "html",
    "yaml": "yaml",
    "yml": "yaml",
    "sh": "sh",
    "bash": "sh",
    "shell": "sh",
    "text": "text",
}

_FENCE = re.compile(r"^( *)(`{3,}|~{3,})\s*([^`\s]*)(.*)$")
_HEADING = re.compile(r"^#{1,6}\s+(.*?)\s*#*\s*$")
# A first line that names the file the reader saves the block as:
# "# chat.py: …", "// chat.mjs: …", "<!-- hello.html: … -->".
_FILE_NAME = re.compile(r"^\s*(?:#|//|<!--)\s*([\w.-]+\.(?:py|mjs|js|html))\b")


@dataclass(frozen=True)
class Block:
    page: str  # relative to the repository, e.g. "README.md" or "docs/agents.md"
    heading: str  # the nearest heading above the block
    index: int  # 1-based position among the page's blocks
    line: int  # line number of the opening fence
    info: str  # the fence's language word as written ("" when absent)
    text: str

    @property
    def kind(self) -> str | None:
        """python, js, html, yaml, sh or text; None for an unknown or missing language."""
        return LANGUAGES.get(self.info.lower())

    @property
    def id(self) -> str:
        return f"{self.page}/{slug(self.heading)}/{self.index}"

    @property
    def file_name(self) -> str | None:
        """The name a reader saves this block under, when its first line says so."""
        if self.kind not in ("python", "js", "html"):
            return None
        first = next((line for line in self.text.splitlines() if line.strip()), "")
        if self.kind == "html" and first.lower().startswith("<!doctype"):
            first = next(iter(self.text.splitlines()[1:2]), "")
        match = _FILE_NAME.match(first)
        return match.group(1) if match else None


def slug(heading: str) -> str:
    words = re.findall(r"[a-z0-9]+", heading.lower())
    return "-".join(words) or "top"


def parse(text: str, page: str) -> list[Block]:
    """Fenced blocks in order (CommonMark fences: ``` or ~~~, closed by a fence at least as
    long); the opening fence's indentation is removed from the block's lines."""
    blocks: list[Block] = []
    heading = ""
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        fence = _FENCE.match(line)
        if fence is None:
            title = _HEADING.match(line)
            if title:
                heading = title.group(1)
            i += 1
            continue
        indent, marker, info = len(fence.group(1)), fence.group(2), fence.group(3)
        body: list[str] = []
        start = i + 1
        i += 1
        while i < len(lines):
            stripped = lines[i].strip()
            if stripped.startswith(marker[0] * len(marker)) and not stripped.strip(marker[0]):
                break
            line = lines[i]
            body.append(line[indent:] if line[:indent].strip() == "" else line.lstrip())
            i += 1
        blocks.append(Block(page, heading, len(blocks) + 1, start, info, "\n".join(body) + "\n"))
        i += 1  # the closing fence
    return blocks


def pages(repo: Path = REPO) -> list[Path]:
    """Every page whose blocks are checked: README.md, SECURITY.md and docs/, in reading order."""
    found = [repo / "README.md", repo / "SECURITY.md"]
    found += sorted((repo / "docs").glob("*.md"))
    found += sorted((repo / "docs").glob("*/*.md"))
    return [page for page in found if page.exists()]


def all_blocks(repo: Path = REPO) -> list[Block]:
    blocks: list[Block] = []
    for page in pages(repo):
        blocks += parse(page.read_text(), page.relative_to(repo).as_posix())
    return blocks


# -- ports ------------------------------------------------------------------------------------
# Port numbers the docs use. The tests give each a free port of their own (per page), so
# examples run next to anything else on the machine; 7880 and 7882 become the page's dev server.
DOC_TCP_PORTS = (
    7880,
    7881,
    7890,
    7891,
    7900,
    7901,
    7910,
    7911,
    7980,
    7981,
    7990,
    7991,
    6379,
    6789,
    8081,
    5349,
)
DOC_UDP_PORTS = (7882, 7892, 7902, 7912, 7982, 3478)  # TURN's 3478 is UDP and TCP
_PORT = re.compile(r"(?<![\w.])(\d{4})(?![\w])")


def ports_in(text: str) -> set[int]:
    known = set(DOC_TCP_PORTS) | set(DOC_UDP_PORTS)
    return {int(m.group(1)) for m in _PORT.finditer(text) if int(m.group(1)) in known}


def rewrite_ports(text: str, mapping: dict[int, int]) -> str:
    def swap(match: re.Match[str]) -> str:
        number = int(match.group(1))
        return str(mapping.get(number, number))

    return _PORT.sub(swap, text)


# -- shell blocks -----------------------------------------------------------------------------
@dataclass(frozen=True)
class Command:
    text: str  # as written, continuation lines joined
    code: str  # without a trailing comment and without a trailing "&"
    background: bool  # ended with "&"


def commands(block_text: str) -> list[Command]:
    """A shell block's commands: one per line, backslash-newline continuations joined, blank
    lines and comments skipped. Compound commands spanning lines (for, while, if, heredocs)
    are refused: examples stay one command per line."""
    result: list[Command] = []
    pending = ""
    for line in block_text.splitlines():
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        full = pending + line
        pending = ""
        code = strip_comment(full).strip()
        if re.match(r"^(for|while|until|if|case)\b", code) or "<<" in code:
            raise ValueError(f"a docs shell example must be one command per line: {code!r}")
        background = code.endswith("&") and not code.endswith("&&")
        if background:
            code = code[:-1].rstrip()
        result.append(Command(full.strip(), code, background))
    if pending:
        raise ValueError("a shell block ends with a line continuation")
    return result


def strip_comment(line: str) -> str:
    """The line without a trailing ``# comment`` (a # outside quotes, after whitespace)."""
    quote = ""
    for i, char in enumerate(line):
        if quote:
            if char == quote:
                quote = ""
        elif char in "'\"":
            quote = char
        elif char == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i].rstrip()
    return line
