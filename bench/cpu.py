"""CPU time of a process tree from /proc (Linux), and a description of the machine."""

from __future__ import annotations

import os
import platform
import sys
from pathlib import Path

_TICKS = os.sysconf("SC_CLK_TCK")


def _stat_fields(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:  # the process is gone
        return None
    # proc(5): the command name (field 2) is in parentheses and may hold spaces.
    return text[text.rindex(")") + 2 :].split()


def _children_by_parent() -> dict[int, list[int]]:
    """Parent pid -> child pids, from every /proc/<pid>/stat (field 4 is the parent)."""
    tree: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            fields = _stat_fields(int(entry.name))
            if fields is not None:
                tree.setdefault(int(fields[1]), []).append(int(entry.name))
    return tree


def process_cpu_seconds(pid: int) -> float:
    """utime + stime (fields 14 and 15 of /proc/<pid>/stat) of `pid` and every live descendant,
    in seconds. Threads are included (they share the process's counters)."""
    return sum(process_cpu_times(pid))


def process_cpu_times(pid: int) -> tuple[float, float]:
    """(user, system) seconds of `pid` and its live descendants."""
    user = system = 0.0
    tree = _children_by_parent()
    pending = [pid]
    while pending:
        current = pending.pop()
        fields = _stat_fields(current)
        if fields is None:
            continue
        user += int(fields[11]) / _TICKS  # field 14 (the list starts at field 3)
        system += int(fields[12]) / _TICKS  # field 15
        pending.extend(tree.get(current, ()))
    return user, system


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine() -> str:
    python = f"{platform.python_implementation()} {platform.python_version()}"
    return (
        f"{platform.node()}: {os.cpu_count()} CPUs, {cpu_model()}, {platform.system()} "
        f"{platform.release()}, {python} ({sys.executable})"
    )
