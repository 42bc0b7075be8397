"""Routing: which inputs the edge model answers and which go on to the cloud model.

The hard example mining (HEM) policies live here, below every package that uses them: the
gateway runs them per request, resource validation (jointserve.api) checks a service's policy
name and parameters, and the routing benchmark scores them offline. Nothing here imports Ray
or a serving package, so validating a resource never pays for them.
"""

from ._policies import POLICIES, HemDecision, HemPolicy, build_policy

__all__ = ["POLICIES", "HemDecision", "HemPolicy", "build_policy"]
