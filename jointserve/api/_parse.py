"""Turn YAML documents into typed resources, with errors that name the file and field."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Any, Union

import yaml
from pydantic import ValidationError

from ._common import API_VERSION
from ._dataset import Dataset
from ._errors import ResourceError, describe_errors
from ._inference_model import InferenceModel
from ._joint_service import JointInferenceService
from ._training_model import TrainingModel

log = logging.getLogger(__name__)

Resource = Union[InferenceModel, JointInferenceService, Dataset, TrainingModel]
KINDS: dict[str, type[Resource]] = {
    InferenceModel.KIND: InferenceModel,
    JointInferenceService.KIND: JointInferenceService,
    Dataset.KIND: Dataset,
    TrainingModel.KIND: TrainingModel,
}


def parse_resource(doc: Any, source: str) -> Resource:
    """Validate one decoded document. Raises ResourceError naming `source` and each bad field."""
    if not isinstance(doc, dict):
        raise ResourceError(source, [f"document must be a mapping, got {type(doc).__name__}"])
    kind = doc.get("kind")
    if doc.get("apiVersion") != API_VERSION:
        raise ResourceError(
            source, [f"apiVersion: must be {API_VERSION} (got {doc.get('apiVersion')!r})"]
        )
    model = KINDS.get(kind) if isinstance(kind, str) else None
    if model is None:
        raise ResourceError(source, [f"kind: must be one of {sorted(KINDS)} (got {kind!r})"])
    # `metadata` may be anything in a bad document; pydantic reports it, this must not crash.
    meta = doc.get("metadata")
    name = meta.get("name", "?") if isinstance(meta, dict) else "?"
    where = f"{source}: {kind} {name}"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            resource = model.model_validate(doc)
        except ValidationError as exc:
            raise ResourceError(where, describe_errors(exc)) from None
    for warning in caught:
        log.warning("%s: %s", where, warning.message)
    return resource


def load_file(path: Path) -> list[Resource]:
    """All resources in a YAML file (documents separated by ---). Raises ResourceError."""
    try:
        docs = list(yaml.safe_load_all(path.read_text(encoding="utf-8")))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        problem = getattr(exc, "problem", None) or str(exc)
        raise ResourceError(where, [f"malformed YAML: {problem}"]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ResourceError(str(path), [f"cannot read: {exc}"]) from None
    # Empty documents (a trailing `---`) are not resources and must not make a file multi-document.
    docs = [d for d in docs if d is not None]
    resources = []
    failures = []
    for index, doc in enumerate(docs):
        source = str(path) if len(docs) == 1 else f"{path}[{index}]"
        try:
            resources.append(parse_resource(doc, source))
        except ResourceError as exc:
            failures.append(exc)
    # A file is applied whole or not at all, like `kubectl apply -f` of one file
    # would leave it half-applied; we prefer the predictable choice.
    if len(failures) == 1:
        # Its source already names the file (and document); keep its `path: rule` lines.
        raise failures[0]
    if failures:
        raise ResourceError(
            str(path),
            [f"{exc.source.removeprefix(str(path))}: {p}" for exc in failures for p in exc.problems],
        )
    return resources
