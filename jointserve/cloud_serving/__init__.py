"""Cloud tier: the Ray Serve deployment that serves a cloud-layer InferenceModel over OIP v2.

Same protocol as the edge tier; it differs in where it is placed (cloud nodes) and in dynamic
batching: with `spec.batching` set, the infer requests that arrive on the replica's listener
within the batch wait (gateways' hard examples, other clients) run as one model call. On
this machine a batch of 32 costs the digits cloud model 1.95 µs per row against 12.8 µs for
one call alone (docs/architecture.md, "Measured figures the code relies on").
"""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
from ray import serve
from ray.serve import Application

from jointserve.contract import MODEL_DEPLOYMENT, ModelReplicaConfig
from jointserve.listener import ListenerReplica
from jointserve.protocol import (
    INLINE_MAX_S,
    InferenceRequest,
    LoadedModel,
    ModelReplica,
    prepare,
    require_loaded,
    respond,
    run_model,
)
from jointserve.runtime import batch_rows, run_batch

Feeds = dict[str, np.ndarray]


@serve.deployment(name=MODEL_DEPLOYMENT, max_ongoing_requests=256)
class CloudModelServer(ListenerReplica, ModelReplica):
    """A cloud-layer InferenceModel: the big, accurate model, batching what arrives together."""

    def __init__(self, model_name: str, listen_host: str = "") -> None:
        ModelReplica.__init__(self, model_name, self._infer_request)
        self._init_listener(model_name, self.endpoint.handle, listen_host)

    async def reconfigure(self, user_config: dict) -> None:
        batching = ModelReplicaConfig.model_validate(user_config).batching
        # The queue's settings change in place; requests already queued keep their batch.
        self._batched.set_max_batch_size(batching.max_batch_size)
        self._batched.set_batch_wait_timeout_s(batching.batch_wait_timeout_s)
        await ModelReplica.reconfigure(self, user_config)
        await self._publish()

    async def _infer_request(self, loaded: LoadedModel | None,
                             inference: InferenceRequest) -> dict[str, Any]:
        loaded = require_loaded(loaded)
        feeds, wanted = prepare(loaded, inference)
        if batch_rows(feeds) >= self._batched._get_max_batch_size():
            # Already a full batch (Serve refuses items larger than max_batch_size).
            version, outputs = loaded.version, await run_model(loaded, feeds)
        else:
            version, outputs = await self._batched(feeds)
        return respond(self.endpoint.name, version, inference, outputs, wanted)

    @serve.batch(max_batch_size=1, batch_wait_timeout_s=0.0,
                 batch_size_fn=lambda items: sum(batch_rows(feeds) for feeds in items))
    async def _batched(self, items: list[Feeds]) -> list[tuple[str, dict[str, np.ndarray]]]:
        loaded = require_loaded(self.endpoint.loaded)  # one version for the whole batch
        if loaded.call_s > INLINE_MAX_S:  # a slow model must not stall the replica's loop
            results = await asyncio.to_thread(run_batch, loaded.model, items)
        else:
            results = run_batch(loaded.model, items)
        return [(loaded.version, outputs) for outputs in results]


def build_app(args: dict[str, Any]) -> Application:
    """Application builder for Serve config `import_path`;
    args: {"model_name": str, "listen_host": str ("": this node's IP)}."""
    return CloudModelServer.bind(model_name=args["model_name"],
                                 listen_host=args.get("listen_host", ""))


__all__ = ["CloudModelServer", "build_app"]
