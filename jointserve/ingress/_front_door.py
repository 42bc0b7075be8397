"""The front door: HAProxy on the one public port, programmed from the listener registry.

    ListenerRegistry --follow (long poll)--> FrontDoor._apply --runtime API--> HAProxy
                                                  `--ack(version)--> registry (withdrawals wait for it)

Runs inside the server application's replica (`_server.OipServer`), which is also the
registry it follows, so it is part of what Ray runs: embedded mode, the Kubernetes
operator's cluster and an exported KubeRay RayService all get it from the Serve config,
with no jointserve operator needed for the data plane. HAProxy is a child of that replica and dies with it (PR_SET_PDEATHSIG).
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import tempfile
from pathlib import Path

from jointserve.registry import ListenerRegistry, Routes, follow

from ._haproxy import Haproxy, HaproxyCapacityError, HaproxySettings

log = logging.getLogger(__name__)


class FrontDoor:
    """One HAProxy, kept equal to the registry's table of listeners."""

    def __init__(self, door_id: str, host: str, port: int, default_server: str,
                 registry: ListenerRegistry) -> None:
        self.door_id = door_id
        self._registry = registry  # in this replica: followed and acknowledged directly
        # Short on purpose: HAProxy refuses a unix socket path of over ~100 characters.
        self._workdir = Path(tempfile.mkdtemp(prefix="jsh-", dir="/tmp" if Path("/tmp").is_dir() else None))
        self._haproxy = Haproxy(HaproxySettings(bind_host=host, bind_port=port,
                                                default_server=default_server,
                                                workdir=self._workdir))
        self._following: asyncio.Task | None = None

    async def start(self) -> None:
        """HAProxy up on the public port (HaproxyError if it cannot be), then follow."""
        await self._haproxy.start()
        self._following = asyncio.get_running_loop().create_task(
            follow(self._apply, watch=self._registry.watch))

    async def stop(self) -> None:
        if self._following is not None:
            self._following.cancel()
            self._following = None
        await self._haproxy.stop()
        shutil.rmtree(self._workdir, ignore_errors=True)

    def applied(self) -> Routes:
        return self._haproxy.applied()

    async def _apply(self, version: int, routes: Routes) -> None:
        try:
            await self._haproxy.apply(routes)
        except HaproxyCapacityError as exc:
            log.error("front door: %s", exc)  # what fits is served; say what does not
        except Exception:  # noqa: BLE001 - the next version tries again
            log.exception("front door: could not apply listener table version %d", version)
            return
        await self._registry.ack(self.door_id, version)
