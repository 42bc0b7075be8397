"""The embedded Ray head starts only the processes a jointserve stack uses (PSS on edge boxes)."""

from __future__ import annotations

import os
from pathlib import Path

from tests._procs import live_descendants

# What `ray.init(address="local")` would also start, by the script each one runs.
_LEFT_OUT = {
    "autoscaler monitor": "ray/autoscaler/_private/monitor.py",
    "log monitor": "ray/_private/log_monitor.py",
    "dashboard / usage stats": "ray/dashboard/dashboard.py",
}


def _commands_below_this_process() -> list[str]:
    commands = []
    for pid in live_descendants(os.getpid()):
        try:
            commands.append(Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode())
        except OSError:
            continue  # gone since the walk
    return commands


def test_local_head_runs_gcs_and_raylet_but_not_monitors_or_dashboard(serve_backend) -> None:
    commands = _commands_below_this_process()
    assert any("gcs_server" in c for c in commands), commands
    assert any("raylet/raylet" in c for c in commands), commands
    started = [what for what, script in _LEFT_OUT.items() if any(script in c for c in commands)]
    assert started == [], f"the local head started {started}"


def test_serve_works_on_the_lean_head(serve_backend) -> None:
    from ray import serve

    status = serve.status()  # answered by Serve's controller, which needs none of the three
    assert status.proxies == {}  # no Serve proxy either: HAProxy routes


def test_the_heads_processes_share_two_malloc_arenas_and_fixed_thresholds(serve_backend) -> None:
    from jointserve.operator._lean_head import MALLOC_ENV

    raylets = []
    for pid in live_descendants(os.getpid()):
        try:
            if b"raylet/raylet" in Path(f"/proc/{pid}/cmdline").read_bytes():
                raylets.append(Path(f"/proc/{pid}/environ").read_bytes().split(b"\0"))
        except OSError:
            continue  # gone since the walk
    assert raylets, "no raylet below this process"
    # workers inherit the raylet's environment
    for name, value in MALLOC_ENV.items():
        assert all(f"{name}={value}".encode() in env for env in raylets), name
