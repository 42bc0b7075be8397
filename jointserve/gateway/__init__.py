"""One logical model per JointInferenceService: the gateway deployment and its parts.

    JointGateway / build_joint_app   the gateway deployment of one JointInferenceService
    export_hard_examples             saved hard examples as one npz Dataset file
"""

from ._breaker import CircuitBreaker
from ._cloud import CloudAnswer, CloudCallError, HttpCloud, ListenerUrls, NoCloud
from ._deployment import JointGateway
from ._deployment import build_app as build_joint_app
from ._hard_example_export import Exported, HardExampleExportError, export_hard_examples
from ._joint import CloudSettings, JointModel, Outcome
from ._metrics import Counters

__all__ = [
    "CircuitBreaker",
    "CloudAnswer",
    "CloudCallError",
    "CloudSettings",
    "Counters",
    "Exported",
    "HardExampleExportError",
    "HttpCloud",
    "JointGateway",
    "JointModel",
    "ListenerUrls",
    "NoCloud",
    "Outcome",
    "build_joint_app",
    "export_hard_examples",
]
