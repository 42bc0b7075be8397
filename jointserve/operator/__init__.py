"""The operator: reconciles jointserve resources into Ray Serve applications.

Sources of resources: a directory of YAML files (embedded mode, `DirectorySource`); the
Kubernetes API comes with Kubernetes mode. Both feed one `Reconciler`.
"""

from ._directory import DirectorySource, ResourceKey, Snapshot, resource_key
from ._operator import DirectoryOperator
from ._ray import AppState, ServeBackend, connect_ray, start_local_ray
from ._reconcile import Backend, Reconciler, Verification, app_name
from ._serve_config import ModelApp, ServeSettings, build_serve_config, route_prefix
from ._status_store import StatusStore

__all__ = [
    "AppState",
    "Backend",
    "DirectoryOperator",
    "DirectorySource",
    "ModelApp",
    "Reconciler",
    "ResourceKey",
    "ServeBackend",
    "ServeSettings",
    "Snapshot",
    "StatusStore",
    "Verification",
    "app_name",
    "build_serve_config",
    "connect_ray",
    "resource_key",
    "route_prefix",
    "start_local_ray",
]
