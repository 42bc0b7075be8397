"""What the machine's processes are doing, from /proc: who runs, who listens where.

For the tests that check for orphans and for the addresses jointserve binds.
"""

from __future__ import annotations

import contextlib
import os
import socket
from dataclasses import dataclass
from pathlib import Path

from benchmarks.procs import descendants


@dataclass(frozen=True)
class Proc:
    pid: int
    name: str  # /proc/<pid>/comm (what ps shows; Ray renames its workers)
    cmdline: str


def alive(pid: int) -> bool:
    """Running (not gone, not a zombie waiting for its parent to reap it)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def processes() -> list[Proc]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            name = (entry / "comm").read_text().strip()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            if alive(int(entry.name)):
                found.append(Proc(int(entry.name), name, cmdline.strip()))
    return found


def processes_matching(text: str) -> list[Proc]:
    """Live processes whose name or command line contains `text`, by pid."""
    return sorted((p for p in processes() if text in p.name or text in p.cmdline),
                  key=lambda p: p.pid)


def live_descendants(pid: int) -> set[int]:
    """Every live process below `pid` in the process tree."""
    return {p for p in descendants(pid) if alive(p)}


def listening_sockets(pid: int) -> set[tuple[str, int]]:
    """(address, port) of every TCP (v4 and v6) socket of `pid` in LISTEN state."""
    inodes = set()
    with contextlib.suppress(OSError):
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            with contextlib.suppress(OSError):
                target = os.readlink(fd)
                if target.startswith("socket:["):
                    inodes.add(target[len("socket:["):-1])
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            local, state, inode = fields[1], fields[3], fields[9]
            if state == "0A" and inode in inodes:  # 0A: TCP_LISTEN
                addr_hex, port_hex = local.split(":")
                found.add((_ip(addr_hex), int(port_hex, 16)))
    return found


def _ip(hex_addr: str) -> str:
    """/proc/net/tcp's address: 32-bit words in host (little-endian) byte order."""
    raw = b"".join(int(hex_addr[i:i + 8], 16).to_bytes(4, "little") for i in range(0, len(hex_addr), 8))
    return socket.inet_ntop(socket.AF_INET if len(raw) == 4 else socket.AF_INET6, raw)
