"""What a Ray Serve replica of one InferenceModel does, shared by the edge and cloud tiers.

The operator tells a replica which version to serve through the deployment's `user_config`
(`jointserve.contract.ModelReplicaConfig`). Ray Serve delivers a changed user_config to the running replicas by calling
`reconfigure` in place, without restarting them, so a version switch is: fetch (a cache hit: the
operator fetched and verified it already), load, warm up, swap one reference. Requests keep
being served by the old version until the swap and never fail because of it.

The replica fetches through the artifact store itself, rather than trusting a path, so that on a
multi-node cluster each node fills its own store from the same verified URL and sha256.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from jointserve.contract import ArtifactRef, ModelReplicaConfig
from jointserve.store import ArtifactStore

from ._dataplane import LoadedModel, model_info
from ._http import ModelEndpoint, Runner

log = logging.getLogger(__name__)


class ModelReplica:
    """One replica: an OIP endpoint whose model version follows `reconfigure` calls."""

    def __init__(self, model_name: str, infer_request: Runner | None = None) -> None:
        self.endpoint = ModelEndpoint(model_name, infer_request)
        self._config: ModelReplicaConfig | None = None

    async def reconfigure(self, user_config: dict) -> None:
        """Switch to the version in `user_config`; the old one serves until the new one is ready."""
        config = ModelReplicaConfig.model_validate(user_config)
        if config == self._config:
            return
        previous = self._config
        info = config.info.model_dump(exclude_none=True) if config.info else None
        if previous is None or config.artifact != previous.artifact:
            self.endpoint.loaded = await asyncio.to_thread(load_artifact, config.artifact, info)
            log.info("model %s now serving version %s", self.endpoint.name, config.artifact.version)
        elif config.info != previous.info and self.endpoint.loaded is not None:
            loaded = self.endpoint.loaded  # a description changed: the same model, told anew
            self.endpoint.loaded = replace(loaded, info=model_info(loaded.model.metadata, info))
        self._config = config


def load_artifact(artifact: ArtifactRef, info: Mapping[str, Any] | None = None) -> LoadedModel:
    """Fetch a verified version through this node's artifact store and load it (blocking);
    `info`: the resource's spec.metadata, over the archive's metadata.json."""
    store = ArtifactStore(Path(artifact.store_root))
    fetched = store.fetch(artifact.model_name, artifact.version, artifact.url, artifact.sha256)
    return LoadedModel.load(artifact.model_name, artifact.version, fetched.path, info)
