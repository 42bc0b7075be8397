"""Pieces shared by every jointserve resource: object metadata and status conditions.

These mirror the Kubernetes API conventions
(https://github.com/kubernetes/community/blob/master/contributors/devel/sig-architecture/api-conventions.md)
so the same documents work as YAML files on one machine and as custom resources in a cluster.
"""

from __future__ import annotations

import datetime as _dt
from typing import Annotated, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

API_GROUP = "jointserve.io"
API_VERSION = f"{API_GROUP}/v1alpha1"

# RFC 1123 subdomain, as Kubernetes requires of object names.
DNS_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$"
DnsName = Annotated[str, Field(pattern=DNS_SUBDOMAIN, max_length=253)]


class Strict(BaseModel):
    """Base for spec types: unknown fields are errors, not silently dropped."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, protected_namespaces=())


class ObjectMeta(BaseModel):
    """The part of Kubernetes ObjectMeta that jointserve reads.

    Other keys the API server adds (managedFields, ownerReferences, ...) are kept but not
    interpreted, so a resource read from a cluster round-trips.
    """

    model_config = ConfigDict(extra="allow")

    name: DnsName
    namespace: str = "default"
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)
    generation: int | None = None
    resourceVersion: str | None = None
    uid: str | None = None


ConditionStatus = Literal["True", "False", "Unknown"]


class Condition(Strict):
    """One observation of the resource's state, Kubernetes style (metav1.Condition)."""

    type: str
    status: ConditionStatus
    reason: str = ""
    message: str = ""
    lastTransitionTime: str = ""
    observedGeneration: int | None = None


def now_rfc3339() -> str:
    """Current UTC time in the RFC 3339 form Kubernetes uses for timestamps."""
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def set_condition(
    conditions: list[Condition],
    type_: str,
    status: ConditionStatus,
    reason: str,
    message: str = "",
    observed_generation: int | None = None,
) -> list[Condition]:
    """Return `conditions` with `type_` set; lastTransitionTime moves only when status changes."""
    old = get_condition(conditions, type_)
    moved = old is None or old.status != status
    updated = Condition(
        type=type_,
        status=status,
        reason=reason,
        message=message,
        lastTransitionTime=now_rfc3339() if moved or old is None else old.lastTransitionTime,
        observedGeneration=observed_generation,
    )
    if old is None:
        return [*conditions, updated]
    return [updated if c.type == type_ else c for c in conditions]


def get_condition(conditions: list[Condition], type_: str) -> Condition | None:
    """The condition of `type_`, if set."""
    return next((c for c in conditions if c.type == type_), None)


class Autoscaling(Strict):
    """Replicas that follow the load (Ray Serve autoscaling): between minReplicas and
    maxReplicas, adding replicas when more than targetInFlight requests are in flight per
    replica and removing them when fewer are.

    minReplicas is at least 1: with no replica, the public URL has nothing to route a model's
    requests to (they would get a 404), so scaling to zero waits for the data plane that can
    hold a request while a replica starts.
    """

    CEL_RULES: ClassVar[list[dict[str, str]]] = [
        {"rule": "self.minReplicas <= self.maxReplicas",
         "message": "autoscaling.minReplicas must not exceed maxReplicas"},
    ]

    minReplicas: Annotated[int, Field(ge=1, le=1000)] = 1
    maxReplicas: Annotated[int, Field(ge=1, le=1000)]
    targetInFlight: Annotated[float, Field(gt=0, le=10_000)] = 2.0

    @model_validator(mode="after")
    def _min_below_max(self) -> "Autoscaling":
        if self.minReplicas > self.maxReplicas:
            raise ValueError(f"minReplicas: must not exceed maxReplicas ({self.minReplicas} > "
                             f"{self.maxReplicas})")
        return self
