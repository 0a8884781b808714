"""Fail when a source file or class grows past what one reader can hold (run by `make lint`).

Limits: 600 lines per file and 400 lines per class in src/ (docs/architecture.md: small
modules with one job). Prints every offender with its size.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

MAX_FILE_LINES = 600
MAX_CLASS_LINES = 400


def offenders(root: Path) -> list[str]:
    found = []
    for path in sorted(root.rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        lines = text.count("\n")
        if lines > MAX_FILE_LINES:
            found.append(f"{path}: {lines} lines (file limit {MAX_FILE_LINES})")
        for node in ast.walk(ast.parse(text, filename=str(path))):
            if isinstance(node, ast.ClassDef) and node.end_lineno is not None:
                size = node.end_lineno - node.lineno + 1
                if size > MAX_CLASS_LINES:
                    found.append(
                        f"{path}:{node.lineno}: class {node.name} has {size} lines "
                        f"(class limit {MAX_CLASS_LINES})"
                    )
    return found


def main() -> int:
    roots = [Path(arg) for arg in sys.argv[1:]] or [Path("src")]
    found = [line for root in roots for line in offenders(root)]
    for line in found:
        print(line)
    return 1 if found else 0


if __name__ == "__main__":
    raise SystemExit(main())
