"""The `user_config` of each deployment the operator writes (see the package docstring).

Ray Serve hands a changed user_config to running replicas through `reconfigure`, without a
restart, so everything that may change while a model keeps serving (its version, a cloud
target, a service's spec) travels here and never in an application's `args`.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from jointserve.api import Calibration, JointInferenceServiceSpec, ModelInfo


class _UserConfig(BaseModel):
    # Frozen: the operator compares desired state by value; extra="forbid": a field the
    # replica does not know is a version skew to report, not to ignore.
    model_config = ConfigDict(extra="forbid", frozen=True, protected_namespaces=())


class ArtifactRef(_UserConfig):
    """One verified model version: the replica fetches it through its node's artifact store
    (a cache hit where the operator fetched it already), so every node checks the sha256."""

    model_name: str
    version: str
    url: str
    sha256: str
    store_root: str


class BatchLimits(_UserConfig):
    """A cloud InferenceModel's `spec.batching`, in the units of Ray Serve's `@serve.batch`."""

    max_batch_size: int = Field(1, ge=1)  # 1: no batching
    batch_wait_timeout_s: float = Field(0.0, ge=0.0)


class ModelReplicaConfig(_UserConfig):
    """An InferenceModel replica (edge or cloud tier): the version to serve."""

    artifact: ArtifactRef
    batching: BatchLimits = BatchLimits()
    info: ModelInfo | None = None  # spec.metadata: over the archive's metadata.json


class CloudTarget(_UserConfig):
    """How a gateway reaches its cloud model, as the operator resolved it."""

    transport: Literal["listener", "http", "none"]
    # listener: the cloud InferenceModel's modelName, whose replica listeners the gateway
    # finds in the listener registry and calls straight
    model_name: str | None = None
    # listener: the cloud model's batching, applied on the gateway's side too (one call per batch)
    batching: BatchLimits = BatchLimits()
    infer_url: str | None = None  # http: the OIP infer URL
    why: str = ""  # none: why there is no cloud to call


class JointServiceConfig(_UserConfig):
    """One JointInferenceService as a gateway replica answers it: the cloud it calls, the
    service's spec, and the key its counters are reported under."""

    service: str
    stats_key: str
    cloud: CloudTarget
    spec: JointInferenceServiceSpec
    # hardExampleMining.budget: the cut of the policy's score to apply instead of its own
    # threshold (the service's status.calibration, once there is one).
    calibration: Calibration | None = None
    # LearnedRouter: the verified router archive the gateway scores with.
    router: ArtifactRef | None = None


class GatewayConfig(_UserConfig):
    """A gateway replica: the edge model it runs, and the JointInferenceServices it answers
    over that one loaded model: its application's own service and those it hosts (services
    on the same edge version, placed and scaled alike, which then get no replicas of their
    own)."""

    edge: ArtifactRef
    edge_info: ModelInfo | None = None  # the edge InferenceModel's spec.metadata
    services: tuple[JointServiceConfig, ...] = Field(min_length=1)
    # Also answer the edge InferenceModel's own route (/v2/models/<edge model>) with the edge
    # model loaded here: the operator then starts no replica of that model of its own.
    edge_route: bool = False

    @model_validator(mode="after")
    def _one_entry_per_service(self) -> GatewayConfig:
        names = [s.service for s in self.services]
        if len(set(names)) != len(names):
            raise ValueError(f"services: each service once, got {names}")
        return self

    def service(self, name: str) -> JointServiceConfig:
        """The entry of service `name` (KeyError naming it if there is none)."""
        for entry in self.services:
            if entry.service == name:
                return entry
        raise KeyError(f"gateway config has no service {name!r}")


class ServerConfig(_UserConfig):
    """The server application: which model names are served, by which application."""

    models: dict[str, str] = Field(default_factory=dict)


class FrontDoorArgs(_UserConfig):
    """The server application's args (fixed for its life: a change restarts it): where the
    public port is, and where listeners bind."""

    version: str = ""  # jointserve's version, for the server metadata
    host: str = "127.0.0.1"  # the public address HAProxy binds
    port: int = Field(8000, ge=1, le=65535)
    listen_host: str = ""  # where replica listeners bind; "": each node's IP


def user_config(config: _UserConfig) -> dict[str, Any]:
    """The JSON form Serve carries (and KubeRay's serveConfigV2 holds): what `model_validate`
    on the replica reads back into an equal object."""
    return config.model_dump(mode="json", exclude_none=True)
