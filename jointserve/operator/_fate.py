"""A local Ray goes with the process that started it, however that process ends.

Ray's processes mostly follow their driver when it dies, but not all of them: after a
SIGKILLed `jointserve serve`, Ray's dashboard and runtime-env agents were still running a
minute later (they wait to flush logs to a GCS that is gone). So the process that starts a
local Ray also starts a guardian: a small process in a session of its own that holds the
read end of a pipe whose write end only its parent has. The kernel closes that end when
the parent exits for any reason (SIGKILL included); the guardian then kills every process
it last saw below the parent. It looks at the tree once a second, and checks each pid's
start time before killing, so a pid reused in the meantime is left alone.

    python -I .../jointserve/operator/_fate.py <parent pid>     (stdin: the pipe)

Run as a script, not `-m jointserve.operator._fate`: the package's imports (Ray, Serve,
onnxruntime) made the guardian a 96 MiB process; with the standard library alone it is ~10.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import subprocess
import sys
from pathlib import Path

SNAPSHOT_S = 1.0


def guard_this_process() -> subprocess.Popen:
    """Start the guardian of this process's descendants; it lives until this process ends."""
    return subprocess.Popen([sys.executable, "-I", __file__, str(os.getpid())],
                            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True, close_fds=True)


def _start_time(pid: int) -> str | None:
    """Field 22 of /proc/<pid>/stat: when the process started (ticks since boot)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _children() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
                children.setdefault(parent, []).append(int(entry.name))
    return children


def _below(pid: int) -> dict[int, str]:
    """Every process below `pid`, with its start time."""
    children = _children()
    found: dict[int, str] = {}
    stack = [pid]
    while stack:
        for child in children.get(stack.pop(), []):
            started = _start_time(child)
            if child not in found and started is not None:
                found[child] = started
                stack.append(child)
    return found


def _kill(processes: dict[int, str]) -> None:
    for pid, started in processes.items():
        if pid != os.getpid() and _start_time(pid) == started:  # still the same process
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)


def main(argv: list[str]) -> None:
    parent = int(argv[0])
    seen: dict[int, str] = {}
    while True:
        readable, _, _ = select.select([sys.stdin.buffer], [], [], SNAPSHOT_S)
        if readable and not os.read(sys.stdin.fileno(), 4096):  # EOF: the parent is gone
            break
        seen.update(_below(parent))  # those that exited are skipped at kill time
    seen.update(_below(parent))  # what was not reparented yet
    _kill(seen)


if __name__ == "__main__":
    main(sys.argv[1:])
