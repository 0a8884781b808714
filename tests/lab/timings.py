"""Join time and time to first frame per network path, collected by the lab tests and printed
at the end of the run (and written to tests/lab/artifacts/timings.json)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

ARTIFACTS = Path(__file__).with_name("artifacts")
RESULTS: list[dict[str, Any]] = []


def record(path: str, client: str, **values: float | str) -> None:
    """`path`: e.g. "udp", "ice-tcp (udp blocked)"; `client`: "python sdk", "chromium"."""
    RESULTS.append({"path": path, "client": client, **values})


def summary() -> list[str]:
    if not RESULTS:
        return []
    lines = ["network lab: join and first-frame times (seconds)"]
    for row in RESULTS:
        values = ", ".join(
            f"{k} {v:.2f}" if isinstance(v, float) else f"{k} {v}"
            for k, v in row.items()
            if k not in ("path", "client")
        )
        lines.append(f"  {row['path']:<28} {row['client']:<11} {values}")
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "timings.json").write_text(json.dumps(RESULTS, indent=2) + "\n")
    return lines
