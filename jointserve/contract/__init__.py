"""The operator -> replica contract: what each Serve deployment is told, and what it is called.

The operator writes a deployment's `user_config` by building one of these models and calling
`model_dump(mode="json")`; the replica reads it back with `model_validate`. Writer and reader use
the same class, as Ray Serve's own `serve/schema.py` does for `serve deploy`, the controller and
KubeRay, so a field cannot be spelled one way on one side and another way on the other. The
names of applications, deployments and import paths live here too, for the same reason.

Sits above jointserve.api (a gateway's config carries its service's spec) and below every
package that serves or operates (protocol, edge_serving, cloud_serving, gateway, operator).
"""

from ._names import (
    GATEWAY_DEPLOYMENT,
    GATEWAY_IMPORT_PATH,
    MODEL_DEPLOYMENT,
    MODEL_IMPORT_PATHS,
    SERVER_APP,
    SERVER_DEPLOYMENT,
    SERVER_IMPORT_PATH,
    SERVER_ROUTE,
    app_name,
    route_prefix,
)
from ._user_config import (
    ArtifactRef,
    BatchLimits,
    CloudTarget,
    FrontDoorArgs,
    GatewayConfig,
    JointServiceConfig,
    ModelReplicaConfig,
    ServerConfig,
    user_config,
)

__all__ = [
    "GATEWAY_DEPLOYMENT",
    "GATEWAY_IMPORT_PATH",
    "MODEL_DEPLOYMENT",
    "MODEL_IMPORT_PATHS",
    "SERVER_APP",
    "SERVER_DEPLOYMENT",
    "SERVER_IMPORT_PATH",
    "SERVER_ROUTE",
    "ArtifactRef",
    "BatchLimits",
    "CloudTarget",
    "FrontDoorArgs",
    "GatewayConfig",
    "JointServiceConfig",
    "ModelReplicaConfig",
    "ServerConfig",
    "app_name",
    "route_prefix",
    "user_config",
]
