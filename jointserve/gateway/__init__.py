"""One logical model per JointInferenceService: the gateway deployment and its parts.

    JointGateway / build_joint_app   the gateway deployment of one JointInferenceService
"""

from ._breaker import CircuitBreaker
from ._cloud import CloudAnswer, CloudCallError, HttpCloud, ListenerUrls, NoCloud
from ._deployment import JointGateway
from ._deployment import build_app as build_joint_app
from ._joint import CloudSettings, JointModel, Outcome
from ._metrics import Counters

__all__ = [
    "CircuitBreaker",
    "CloudAnswer",
    "CloudCallError",
    "CloudSettings",
    "Counters",
    "HttpCloud",
    "JointGateway",
    "JointModel",
    "ListenerUrls",
    "NoCloud",
    "Outcome",
    "build_joint_app",
]
