"""Routing: which inputs the edge model answers and which go on to the cloud model.

The hard example mining (HEM) policies live here, below every package that uses them: the
gateway runs them per request, resource validation (jointserve.api) checks a service's policy
name and parameters, and the routing benchmark scores them offline. Nothing here imports Ray
or a serving package, so validating a resource never pays for them. `_budget` turns any
policy's score into a cut that meets an offload budget (hardExampleMining.budget).
"""

from ._budget import Adapt, Budgeted, Cutoff, ScoreOnly, cutoff_for
from ._learned import (
    MAX_INPUT_FEATURES,
    ROUTER_FILE,
    ROUTER_INFO,
    RouterModel,
    input_features,
    router_features,
)
from ._policies import POLICIES, HemDecision, HemPolicy, LearnedRouter, build_policy

__all__ = ["POLICIES", "ROUTER_FILE", "ROUTER_INFO", "Adapt", "Budgeted", "Cutoff",
           "HemDecision", "HemPolicy", "LearnedRouter", "RouterModel", "ScoreOnly",
           "build_policy", "cutoff_for", "router_features", "input_features", "MAX_INPUT_FEATURES"]
