"""A single-machine Ray head with only the processes a jointserve stack uses.

`ray.init(address="local")` starts, besides the GCS, the raylet and its agents, three
Python processes that embedded mode never uses (PSS measured under `make serve`):

- the autoscaler monitor (~50 MiB): there is no cluster to scale, the machine is the cluster;
- the log monitor (~47 MiB): it streams worker output to the driver, which we switch off
  (`log_to_driver=False`; the logs stay in the session directory);
- dashboard.py (~91 MiB): Ray 2.60 starts it even with `include_dashboard=False`, to host
  usage statistics (`--modules-to-load=UsageStatsHead`), which are off here anyway.

`ray start --head --no-monitor --include-log-monitor=false` drops the first two; none of
Ray's switches drops the third, so the head is a `Node` that skips starting its API server.
`Node` is Ray's private class; the version is pinned by uv.lock and a test starts this head.
Nothing in the request path, Serve's controller or the tests needs any of the three.
"""

from __future__ import annotations

import atexit
import os
from typing import Any

import ray
from ray._private.node import Node
from ray._private.parameter import RayParams


class _HeadWithoutApiServer(Node):
    """A head node whose dashboard / usage-stats process is never started."""

    def start_api_server(self, *, include_dashboard: bool | None,
                         raise_on_failure: bool) -> None:
        self._webui_url = None


# The glibc malloc settings the head's processes inherit (unless already set):
#
# - MALLOC_ARENA_MAX: glibc gives each thread that allocates an arena of its own, up to 8
#   per core. A Ray worker has ~35 threads (gRPC, core worker IO) and the Python work is on
#   one of them: two arenas took ~27 MiB of PSS off `make serve` (1,007 -> 980 MiB).
# - MALLOC_MMAP_THRESHOLD_ / MALLOC_TRIM_THRESHOLD_: glibc serves a block >= the mmap
#   threshold (128 KiB at start) from a mapping of its own, unmapped when freed. Each time
#   such a block is freed it raises the threshold (up to 32 MiB), and from then on blocks of
#   that size come from the heap, where a freed one stays resident until the top of the heap
#   is free. Pinned at their start values, the runner's memory step measured 812 and 810 MiB
#   against 820 and 828 (interleaved runs), mostly the dashboard agent (103 -> 96 MiB) and
#   Serve's controller; 1 MiB instead of 128 KiB gave 821 and 826. The full run after it
#   showed no hot-path cost (ratios against the baselines as before, heavy batching 4.43x).
MALLOC_ENV = {
    "MALLOC_ARENA_MAX": "2",
    "MALLOC_MMAP_THRESHOLD_": "131072",
    "MALLOC_TRIM_THRESHOLD_": "131072",
}


def start_lean_head(num_cpus: int | None, resources: dict[str, float], **init: Any) -> None:
    """Start a local head without monitor, log monitor and dashboard; connect this driver.
    Its processes inherit MALLOC_ENV."""
    for name, value in MALLOC_ENV.items():
        os.environ.setdefault(name, value)
    params = RayParams(num_cpus=num_cpus, resources=resources, include_dashboard=False,
                       no_monitor=True, include_log_monitor=False)
    # shutdown_at_exit=False: our own exit hook disconnects the driver first, then stops the
    # head. spawn_reaper=False: the guardian (_fate.py) already outlives a SIGKILLed parent.
    head = _HeadWithoutApiServer(params, head=True, shutdown_at_exit=False, spawn_reaper=False)

    def stop() -> None:
        ray.shutdown()
        head.kill_all_processes(check_alive=False, allow_graceful=True)

    atexit.register(stop)
    ray.init(address=head.address, **init)
