"""LearnedRouter archives in the reconcile pass: verify, load once, hand to the gateway.

    hardExampleMining.router {url, sha256sum}, or the router the operator trained
    (hardExampleMining.train: status.router, a data: URL)
        -> ArtifactStore.fetch("router.<namespace>.<service>", <sha256[:16]>, ...)  sha256 checked
        -> routing.RouterModel(router.onnx) loads it (a router onnxruntime refuses never
           reaches a gateway)
        -> GatewayConfig.router: the gateway replicas fetch it through their node's store

Outcomes are remembered by (service, url, sha256) with the models' retry rule. A router
that fails leaves the last good one of the service in place (a bad archive never replaces a
good version); with none, a LearnedRouter scores as Margin, and RouterReady says why.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from jointserve.api import (
    Condition,
    ConditionType,
    HardExampleMining,
    Reason,
    ResourceKey,
    RouterStatus,
    set_condition,
)
from jointserve.routing import ROUTER_FILE, ROUTER_INFO, RouterModel
from jointserve.store import ArtifactError, ArtifactStore, redact_url

from ._retry import settled, with_backoff

if TYPE_CHECKING:  # _evaluations imports the serve config, which imports this module
    from ._evaluations import EvaluationState

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RouterArtifact:
    """A verified router archive, as the store keeps it."""

    model_name: str
    version: str
    url: str
    sha256: str


@dataclass(frozen=True)
class RouterOutcome:
    ok: bool
    reason: str
    message: str
    artifact: RouterArtifact | None = None
    retry_at: float | None = None
    attempts: int = 1


class RouterVerifier:
    """Verifies each service's router archive once, and remembers the last good one."""

    def __init__(self, store: ArtifactStore) -> None:
        self.store = store
        self._known: dict[tuple[ResourceKey, str, str], RouterOutcome] = {}
        self._last_good: dict[ResourceKey, RouterArtifact] = {}

    def verify(self, key: ResourceKey, hem: HardExampleMining, trained: RouterStatus | None = None
               ) -> tuple[RouterArtifact | None, RouterOutcome | None]:
        """(the router the gateway scores with, this spec's outcome); (None, None) when the
        policy is not a LearnedRouter. `trained`: the router the operator trained for
        hardExampleMining.train (status.router), if any."""
        if hem.name != "LearnedRouter":
            self._last_good.pop(key, None)
            return None, None
        if hem.train is not None:
            if trained is None:
                return None, RouterOutcome(False, Reason.TRAINING_ROUTER, "no router trained on "
                                           f"{hem.train.dataset} yet: the LearnedRouter scores "
                                           "as Margin until one is")
            url, sha256 = trained.url, trained.sha256
        elif hem.router is None:
            return None, RouterOutcome(False, Reason.ROUTER_NOT_SET, "no hardExampleMining.router "
                                       "archive: the LearnedRouter scores as Margin until one is "
                                       "set (jointserve train-router writes it, or set train)")
        else:
            url, sha256 = hem.router.url, hem.router.sha256sum.lower()
        memo = (key, url, sha256)
        known = self._known.get(memo)
        if known is None or not settled(known):
            known = with_backoff(self._verify(key, url, sha256), known)
            self._known[memo] = known
        if known.ok and known.artifact is not None:
            self._last_good[key] = known.artifact
        return self._last_good.get(key), known

    def _verify(self, key: ResourceKey, url: str, sha256: str) -> RouterOutcome:
        _, namespace, name = key
        artifact = RouterArtifact(f"router.{namespace}.{name}", sha256[:16], url, sha256)
        try:
            fetched = self.store.fetch(artifact.model_name, artifact.version, url, sha256)
        except ArtifactError as exc:
            log.error("router of %s/%s: %s", namespace, name, exc)
            return RouterOutcome(False, exc.reason, str(exc))
        try:
            info = json.loads((fetched.path / ROUTER_INFO).read_text())
            RouterModel(fetched.path / ROUTER_FILE)
        except (OSError, ValueError, RuntimeError) as exc:  # onnxruntime raises its own kinds
            return RouterOutcome(False, Reason.ROUTER_INVALID,
                                 f"{redact_url(url)}: not a router archive "
                                 f"({ROUTER_FILE} + {ROUTER_INFO}): "
                                 f"{type(exc).__name__}: {exc}")
        trained = (f"trained on {info.get('dataset')} for {info.get('edgeModel')} "
                   f"{info.get('edgeVersion')}")
        return RouterOutcome(True, Reason.ROUTER_VERIFIED, f"{ROUTER_FILE}: sha256 matches; "
                             f"{trained}", artifact)

    def forget(self, keep: set[ResourceKey]) -> None:
        for memo in [m for m in self._known if m[0] not in keep]:
            del self._known[memo]
        for key in [k for k in self._last_good if k not in keep]:
            del self._last_good[key]


def router_condition(conditions: list[Condition], outcome: RouterOutcome | None,
                     generation: int | None, training: EvaluationState | None = None,
                     serving: str | None = None) -> list[Condition]:
    """`conditions` with RouterReady from `outcome` (dropped when there is no LearnedRouter);
    while the operator trains a router (`training` not True: running, or failed), from the
    training, naming the router still scoring (`serving`: its sha256), if any."""
    if outcome is None:
        return [c for c in conditions if c.type != ConditionType.ROUTER_READY]
    if training is not None and training.status != "True":
        still = (f"; the router {serving[:12]} scores until a new one is trained" if serving
                 else "; the LearnedRouter scores as Margin until a router is trained")
        return set_condition(conditions, ConditionType.ROUTER_READY, training.status,
                             training.reason, training.message + still, generation)
    pending = outcome.ok or outcome.reason == Reason.TRAINING_ROUTER  # not refused, at least
    if (training is not None and training.router is not None
            and training.router.sha256 != serving and pending):
        # Trained in this pass: the next pass verifies it and plans the gateways with it.
        return set_condition(conditions, ConditionType.ROUTER_READY, "Unknown", training.reason,
                             training.message + "; handing it to the gateways", generation)
    return set_condition(conditions, ConditionType.ROUTER_READY, "True" if outcome.ok else "False",
                         outcome.reason, outcome.message, generation)


def load_router(store: ArtifactStore, artifact: RouterArtifact | None) -> RouterModel | None:
    """The verified router, loaded from `store` (evaluations and calibrations score with it)."""
    if artifact is None:
        return None
    return RouterModel(store.path_for(artifact.model_name, artifact.version) / ROUTER_FILE)
