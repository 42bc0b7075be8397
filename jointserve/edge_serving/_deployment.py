"""The Ray Serve deployment of an edge-layer InferenceModel served on its own."""

from __future__ import annotations

from typing import Any

from ray import serve
from ray.serve import Application

from jointserve.contract import MODEL_DEPLOYMENT
from jointserve.listener import ListenerReplica
from jointserve.protocol import ModelReplica


@serve.deployment(name=MODEL_DEPLOYMENT, max_ongoing_requests=256)
class EdgeModelServer(ListenerReplica, ModelReplica):
    """An edge-layer InferenceModel: small model, served next to the data, on its listener."""

    def __init__(self, model_name: str, listen_host: str = "") -> None:
        ModelReplica.__init__(self, model_name)
        self._init_listener(model_name, self.endpoint.handle, listen_host)

    async def reconfigure(self, user_config: dict) -> None:
        await ModelReplica.reconfigure(self, user_config)
        await self._publish()  # the first time: only now that a version is loaded


def build_app(args: dict[str, Any]) -> Application:
    """Application builder for Serve config `import_path`;
    args: {"model_name": str, "listen_host": str ("": this node's IP)}."""
    return EdgeModelServer.bind(model_name=args["model_name"],
                                listen_host=args.get("listen_host", ""))
