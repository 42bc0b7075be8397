"""The Ray Serve settings of every home: Serve's own HTTP machinery off, the rest tuned.

HTTP reaches replicas through jointserve's front door (jointserve.ingress: HAProxy,
programmed from the listener registry) and each replica's own listener (jointserve.listener),
never through Serve's proxy actors, direct-ingress ports or Serve-driven HAProxy: their
per-request path (request ids, metrics, access logs, the router) was ~96% of a gateway
replica's CPU at c=8 (issue 12's py-spy profile), and the Python proxy alone put an easy
request at ~11 ms. The Serve config says `proxy_location: Disabled`; these switches are read
by Serve's controller and replicas at import, so they must be in the environment of the Ray
processes: a local Ray inherits them from `use_serve_env`, a cluster gets them from whoever
starts it (`jointserve export rayservice` writes them into the RayService).

`RAY_SERVE_THROUGHPUT_OPTIMIZED` stays on for what it does inside a replica: user code on
the replica's own (uvloop) event loop, the garbage collector frozen after start-up.
"""

from __future__ import annotations

import os

SERVE_ENV: dict[str, str] = {
    "RAY_SERVE_THROUGHPUT_OPTIMIZED": "1",
    "RAY_SERVE_ENABLE_DIRECT_INGRESS": "0",
    "RAY_SERVE_ENABLE_HA_PROXY": "0",
    # Serve's controller loop runs every 0.1 s by default: the largest share (4% of a core)
    # of an idle embedded stack's 22% on this machine. Requests do not wait for it; config
    # changes and restarts are seen up to 0.4 s later.
    "RAY_SERVE_CONTROL_LOOP_INTERVAL_S": "0.5",
}


def use_serve_env() -> None:
    """Put SERVE_ENV into this process's environment, for the local Ray it starts next."""
    os.environ.update(SERVE_ENV)
