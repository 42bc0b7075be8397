"""The operator: reconciles jointserve resources into Ray Serve applications.

Sources of resources: a directory of YAML files (embedded mode, `DirectorySource`) or the
Kubernetes API (Kubernetes mode); both feed one `Reconciler`. Each mode is assembled in one
module, which every caller uses: `jointserve.operator.embedded` (`jointserve serve`, the test
harness, `export rayservice`) and `jointserve.operator.kube` (`jointserve operator`; imported
only there, so embedded mode never loads the Kubernetes client).
"""

from ._directory import DirectorySource, Snapshot
from ._evaluations import evaluate_once, train_router_once
from ._operator import DirectoryOperator
from ._ray import AppState, ServeBackend, connect_ray, start_local_ray
from ._reconcile import Backend, Reconciler, Verification
from ._serve_config import GatewayApp, ModelApp, ServeSettings, build_serve_config
from ._status_store import StatusStore

__all__ = [
    "AppState",
    "Backend",
    "DirectoryOperator",
    "DirectorySource",
    "GatewayApp",
    "ModelApp",
    "Reconciler",
    "ServeBackend",
    "ServeSettings",
    "Snapshot",
    "StatusStore",
    "Verification",
    "build_serve_config",
    "connect_ray",
    "evaluate_once",
    "train_router_once",
    "start_local_ray",
]
