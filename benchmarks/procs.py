"""A running system's processes, from /proc: the tree below a process, its memory, and
the replicas in it (the runner's memory figure and fault scenarios; tests/_procs.py).

PSS (proportional set size) counts each shared page once in total, split between the
processes that map it, so a sum over Ray's many processes (which share libraries and the
object store) does not count the same page twice, as an RSS sum would.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class TreeMemory:
    processes: int
    pss_mib: float
    rss_mib: float
    by_name: dict[str, float]  # PSS MiB by process name (comm), largest first


def tree_memory(root_pid: int) -> TreeMemory:
    """PSS and RSS of `root_pid` and all its descendants, from /proc/<pid>/smaps_rollup."""
    pids = [root_pid, *sorted(descendants(root_pid))]
    pss = rss = 0.0
    by_name: dict[str, float] = {}
    counted = 0
    for pid in pids:
        rollup = _rollup(pid)
        if rollup is None:
            continue
        counted += 1
        pss += rollup["Pss"]
        rss += rollup["Rss"]
        name = _name(pid)
        by_name[name] = by_name.get(name, 0.0) + rollup["Pss"] / 1024
    ordered = dict(sorted(by_name.items(), key=lambda item: -item[1]))
    return TreeMemory(counted, pss / 1024, rss / 1024, {k: round(v, 1) for k, v in ordered.items()})


def settled_tree(root_pid: int, quiet_s: float, timeout_s: float = 60.0) -> set[int]:
    """The processes below `root_pid` once none started or ended for `quiet_s` (a stack that
    hands routes over replaces applications after start-up), or as they are at `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    seen, since = descendants(root_pid), time.monotonic()
    while time.monotonic() < deadline and time.monotonic() - since < quiet_s:
        time.sleep(0.5)
        now = descendants(root_pid)
        if now != seen:
            seen, since = now, time.monotonic()
    return seen


def _rollup(pid: int) -> dict[str, float] | None:
    try:
        text = Path(f"/proc/{pid}/smaps_rollup").read_text()
    except OSError:
        return None
    values: dict[str, float] = {}
    for line in text.splitlines()[1:]:
        key, _, rest = line.partition(":")
        fields = rest.split()
        if fields and fields[0].isdigit():
            values[key.strip()] = float(fields[0])  # kB
    return values if "Pss" in values and "Rss" in values else None


def _name(pid: int) -> str:
    with contextlib.suppress(OSError):
        return Path(f"/proc/{pid}/comm").read_text().strip()
    return "?"


def descendants(pid: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
                children.setdefault(parent, []).append(int(entry.name))
    found: set[int] = set()
    stack = [pid]
    while stack:
        for child in children.get(stack.pop(), []):
            if child not in found:
                found.add(child)
                stack.append(child)
    return found


def processes_below(root_pid: int, text: str) -> list[int]:
    """Pids below `root_pid` whose command line contains `text` (a Ray worker's command line
    names its actor, e.g. "ServeReplica:<app>:<deployment>"), lowest first."""
    found = []
    for pid in sorted(descendants(root_pid)):
        with contextlib.suppress(OSError):
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            if text in cmdline:
                found.append(pid)
    return found
