"""One logical model over two tiers: the joint-inference hot path, top to bottom.

    request tensors -> preprocess -> edge model (in this process) -> postprocess
        -> HEM policy per sample: easy -> answer from the edge
                                  hard -> cloud model (deadline, breaker, in-flight cap)
                                          -> postprocess -> answer from the cloud
                                          cloud failed -> the edge answer + the reason

Ray-agnostic: the Serve deployment (`_deployment.py`) builds a `JointModel` from the
resource and hands it requests; metrics and the hard-example writer are plugged in.

A request may carry several samples (rows on axis 0). Each row is judged on its own; only the
hard rows travel to the cloud, and the answer merges rows from both tiers.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from jointserve.routing import HemDecision, HemPolicy
from jointserve.protocol import (
    InferenceError,
    InferenceRequest,
    InvalidInput,
    LoadedModel,
    encode_output,
    request_tensor,
    run_model,
    to_array,
)
from jointserve.runtime import Pipeline, StepInputError

from ._breaker import CircuitBreaker
from ._cloud import CloudCallError, CloudClient
from ._hard_examples import HardExample, HardExampleWriter

CLOUD_TIMEOUT = "cloud_timeout"
CIRCUIT_OPEN = "circuit_open"
CLOUD_OVERLOADED = "cloud_overloaded"
CLOUD_OUTPUT_MISMATCH = "cloud_output_mismatch"

Tensors = dict[str, np.ndarray]


class Recorder(Protocol):
    """Where the outcome of each request goes (jointserve.gateway._metrics.GatewayMetrics)."""

    def record(self, outcome: "Outcome", latency_s: float) -> None: ...

    def breaker_state(self, state: str) -> None: ...


@dataclass(frozen=True)
class Outcome:
    """What happened to one request, in the terms of the counters and the response note."""

    samples: int
    hard: int
    cloud_answered: int
    fallback_reason: str | None

    @property
    def tier(self) -> str:
        if self.cloud_answered == 0:
            return "edge"
        return "cloud" if self.cloud_answered == self.samples else "mixed"


@dataclass
class CloudSettings:
    deadline_s: float
    max_in_flight: int
    breaker: CircuitBreaker


@dataclass
class JointModel:
    """The edge model, the policy, the pipeline and the cloud client of one service."""

    name: str
    edge: LoadedModel
    policy: HemPolicy
    policy_name: str
    pipeline: Pipeline
    cloud: CloudClient
    settings: CloudSettings
    hem_output: str | None = None  # the edge output the policy judges; default: the last one
    recorder: Recorder | None = None
    hard_examples: HardExampleWriter | None = None
    _in_flight: int = field(default=0, init=False)
    # Per request these were a tenth of the gateway's own time: fixed for a JointModel.
    _specs: dict[str, Any] = field(default_factory=dict, init=False)
    _step_inputs: frozenset[str] = field(default=frozenset(), init=False)

    def __post_init__(self) -> None:
        self._specs = {spec.name: spec for spec in self.edge.model.inputs}
        self._step_inputs = self.pipeline.request_inputs()

    async def infer(self, request: InferenceRequest) -> dict[str, Any]:
        """Answer one OIP request; InvalidInput for bad input, never a cloud error."""
        started = time.perf_counter()
        feeds = self._model_feeds(request)
        edge_outputs = await self._run_edge(feeds)
        decisions = self._judge(edge_outputs, feeds)
        hard_rows = [i for i, d in enumerate(decisions) if d.hard]
        outputs, cloud_rows, reason, cloud_version = edge_outputs, [], None, None
        cloud_outputs: Tensors | None = None
        if hard_rows:
            cloud_outputs, cloud_version, reason = await self._ask_cloud(_rows(feeds, hard_rows, len(decisions)))
            if cloud_outputs is not None:
                merged = _merge(edge_outputs, cloud_outputs, hard_rows, len(decisions))
                if merged is None:
                    reason = CLOUD_OUTPUT_MISMATCH
                else:
                    outputs, cloud_rows = merged, hard_rows
            self._save_hard(feeds, edge_outputs, cloud_outputs, hard_rows, decisions, reason, len(decisions))
        outcome = Outcome(len(decisions), len(hard_rows), len(cloud_rows), reason)
        if self.recorder is not None:
            self.recorder.record(outcome, time.perf_counter() - started)
            self.recorder.breaker_state(self.settings.breaker.state)
        return self._response(request, outputs, outcome, decisions, cloud_rows, cloud_version)

    # -- edge ---------------------------------------------------------------------------

    def _model_feeds(self, request: InferenceRequest) -> Tensors:
        specs, step_inputs = self._specs, self._step_inputs
        tensors: Tensors = {}
        for inp in request.inputs:
            if inp.name in step_inputs:
                tensors[inp.name] = request_tensor(inp)
            elif inp.name in specs:
                tensors[inp.name] = to_array(inp, specs[inp.name])
            else:
                accepted = sorted(set(specs) | step_inputs)
                raise InvalidInput(f"unknown input {inp.name!r}; {self.name} takes {accepted}")
        try:
            feeds = self.pipeline.preprocess(tensors)
        except StepInputError as exc:
            raise InvalidInput(str(exc)) from None
        missing = sorted(set(specs) - set(feeds))
        if missing:
            raise InvalidInput(f"missing input(s) {missing}; {self.name} takes {sorted(specs)}")
        rows = {len(a) for a in feeds.values() if a.ndim}
        if len(rows) > 1:
            raise InvalidInput(f"inputs disagree on the batch size (axis 0): {sorted(rows)}")
        return {name: feeds[name] for name in specs}

    async def _run_edge(self, feeds: Tensors) -> Tensors:
        # Inline for a microsecond model like the example's; a slow one goes to a thread.
        raw = await run_model(self.edge, feeds)
        return self.pipeline.postprocess(raw, self.edge.labels)

    def _judge(self, edge_outputs: Tensors, feeds: Tensors) -> list[HemDecision]:
        name = self.hem_output or list(edge_outputs)[-1]
        if name not in edge_outputs:
            raise InferenceError(f"hardExampleMining.output {name!r} is not an edge output; "
                                 f"the edge answers {list(edge_outputs)}")
        judged = edge_outputs[name]
        samples = _batch_size(feeds)
        # A LearnedRouter trained on input features reads the edge model's one input.
        model_input = next(iter(feeds.values())) if len(feeds) == 1 else None
        if samples > 1 and judged.ndim >= 1 and len(judged) == samples:
            # Batched detections are zero-padded; `<name>_count` says how many rows are real.
            counts = edge_outputs.get(f"{name}_count")
            rows = [judged[i][:counts[i]] for i in range(samples)] if counts is not None else judged
            if model_input is None or len(model_input) != samples:
                return [self.policy(row) for row in rows]
            return [self.policy(row, model_input[i]) for i, row in enumerate(rows)]
        return [self.policy(judged, model_input)] * max(samples, 1)

    # -- cloud --------------------------------------------------------------------------

    async def _ask_cloud(self, feeds: Tensors) -> tuple[Tensors | None, str | None, str | None]:
        """(outputs, version, None) from the cloud, or (None, None, reason) why not."""
        settings = self.settings
        if self._in_flight >= settings.max_in_flight:
            return None, None, CLOUD_OVERLOADED  # queueing would only add latency
        if not settings.breaker.allow():
            return None, None, CIRCUIT_OPEN
        self._in_flight += 1
        try:
            async with asyncio.timeout(settings.deadline_s):
                answer = await self.cloud.infer(feeds)
        except TimeoutError:
            settings.breaker.record_failure()
            return None, None, CLOUD_TIMEOUT
        except CloudCallError as exc:
            settings.breaker.record_failure()
            return None, None, exc.reason
        except asyncio.CancelledError:  # the client went away: no verdict on the cloud
            settings.breaker.release()
            raise
        finally:
            self._in_flight -= 1
        settings.breaker.record_success()
        try:
            # One logical model has one label set: the edge model's metadata names it.
            outputs = self.pipeline.postprocess(answer.outputs, self.edge.labels)
        except StepInputError:
            return None, None, CLOUD_OUTPUT_MISMATCH
        return outputs, answer.version, None

    def _save_hard(self, feeds: Tensors, edge_outputs: Tensors, cloud_outputs: Tensors | None,
                   hard_rows: list[int], decisions: Sequence[HemDecision], reason: str | None,
                   samples: int) -> None:
        if self.hard_examples is None:
            return
        self.hard_examples.submit(HardExample(
            service=self.name,
            inputs=_rows(feeds, hard_rows, samples),
            edge_outputs=_rows(edge_outputs, hard_rows, samples),
            cloud_outputs=cloud_outputs,
            score=max(decisions[i].score for i in hard_rows),
            tier="edge" if cloud_outputs is None else "cloud",
            fallback_reason=reason,
            timestamp=time.time(),
        ))

    # -- response -----------------------------------------------------------------------

    def _response(self, request: InferenceRequest, outputs: Tensors, outcome: Outcome,
                  decisions: Sequence[HemDecision], cloud_rows: list[int],
                  cloud_version: str | None) -> dict[str, Any]:
        wanted = [o.name for o in request.outputs] if request.outputs else list(outputs)
        unknown = [name for name in wanted if name not in outputs]
        if unknown:
            raise InvalidInput(f"unknown output(s) {unknown}; {self.name} answers {list(outputs)}")
        parameters: dict[str, Any] = {
            "tier": outcome.tier,
            "hard": outcome.hard > 0,
            "hem_score": max(d.score for d in decisions),
            "hem_policy": self.policy_name,
            "edge_model_version": self.edge.version,
        }
        if cloud_version is not None and cloud_rows:
            parameters["cloud_model_version"] = cloud_version
        if outcome.fallback_reason is not None:
            parameters["fallback_reason"] = outcome.fallback_reason
        if outcome.samples > 1:
            cloud = set(cloud_rows)
            parameters["row_tiers"] = ["cloud" if i in cloud else "edge" for i in range(outcome.samples)]
            parameters["row_hard"] = [d.hard for d in decisions]
            parameters["row_hem_scores"] = [d.score for d in decisions]
        response: dict[str, Any] = {
            "model_name": self.name,
            "model_version": cloud_version if outcome.tier == "cloud" else self.edge.version,
            "parameters": parameters,
            "outputs": [encode_output(name, outputs[name]) for name in wanted],
        }
        if request.id is not None:
            response["id"] = request.id
        return response


def _batch_size(feeds: Mapping[str, np.ndarray]) -> int:
    return min((len(a) for a in feeds.values() if a.ndim), default=1)


def _rows(tensors: Mapping[str, np.ndarray], rows: list[int], samples: int) -> Tensors:
    """The given rows of each batched tensor (all of them when every row is selected)."""
    if len(rows) == samples:
        return dict(tensors)
    index = np.asarray(rows)
    return {n: a[index] if a.ndim and len(a) == samples else a for n, a in tensors.items()}


def _merge(edge: Tensors, cloud: Tensors, hard_rows: list[int], samples: int) -> Tensors | None:
    """Edge rows with the hard ones replaced by the cloud's; None if they cannot be merged."""
    if len(hard_rows) == samples:
        return cloud
    if set(cloud) != set(edge):
        return None
    merged = {}
    for name, edge_value in edge.items():
        cloud_value = cloud[name]
        if (edge_value.ndim == 0 or len(edge_value) != samples
                or cloud_value.shape[1:] != edge_value.shape[1:] or len(cloud_value) != len(hard_rows)):
            return None
        value = edge_value.copy()
        value[np.asarray(hard_rows)] = cloud_value
        merged[name] = value
    return merged

