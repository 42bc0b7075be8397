"""Ray Serve ingress: one logical model per JointInferenceService, and the server-wide routes.

    JointGateway / build_joint_app   the gateway deployment of one JointInferenceService
    OipServer / build_app            /v2 server metadata, health, and 404s for unknown models
    StatsBoard / stats_board         where gateway replicas report the counters of the status
"""

from ._cloud import CloudAnswer, CloudCallError, HandleCloud, HttpCloud, NoCloud
from ._deployment import JointGateway
from ._deployment import build_app as build_joint_app
from ._joint import JointModel, Outcome
from ._metrics import STATS_BOARD, Counters, StatsBoard, stats_board
from ._server import OipServer, build_app

__all__ = [
    "STATS_BOARD",
    "CloudAnswer",
    "CloudCallError",
    "Counters",
    "HandleCloud",
    "HttpCloud",
    "JointGateway",
    "JointModel",
    "NoCloud",
    "OipServer",
    "Outcome",
    "StatsBoard",
    "build_app",
    "build_joint_app",
    "stats_board",
]
