"""The generated CRDs: committed copies up to date, structural schemas, validations carried over."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar, Literal

import pytest
import yaml
from pydantic import BaseModel

from jointserve.api import (
    InferenceModel,
    InferenceModelSpec,
    crd_for,
    render_crds,
    write_crds,
)
from jointserve.api._crd import HEADER
from jointserve.api._inference_model import SHA256_PATTERN

CRD_DIR = Path(__file__).resolve().parent.parent / "deploy" / "crds"
FORBIDDEN = {"$ref", "$defs", "anyOf", "allOf", "oneOf", "not", "title", "nullable"}


def _schema(model_cls: type[BaseModel] = InferenceModel) -> dict[str, Any]:
    return crd_for(model_cls)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]


def _nodes(node: dict[str, Any], where: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    # Schema nodes only: property *names* such as "title" are fine, keywords are not.
    yield where, node
    for name, sub in node.get("properties", {}).items():
        yield from _nodes(sub, f"{where}.{name}")
    if isinstance(node.get("additionalProperties"), dict):
        yield from _nodes(node["additionalProperties"], f"{where}.*")
    if "items" in node:
        yield from _nodes(node["items"], f"{where}[]")


def test_committed_crds_are_up_to_date() -> None:
    committed = {p.name: p.read_text(encoding="utf-8") for p in sorted(CRD_DIR.glob("*.yaml"))}
    assert committed == render_crds(), (
        "deploy/crds/ is out of date with jointserve/api; regenerate with `jointserve crds` "
        "(or `make crds`) and commit the result"
    )


def test_rendered_files_are_named_and_headed() -> None:
    rendered = render_crds()
    assert list(rendered) == ["datasets.jointserve.io.yaml", "inferencemodels.jointserve.io.yaml",
                              "jointinferenceservices.jointserve.io.yaml",
                              "trainingmodels.jointserve.io.yaml"]
    text = rendered["inferencemodels.jointserve.io.yaml"]
    assert text.startswith(HEADER)
    assert yaml.safe_load(text) == crd_for(InferenceModel)
    assert "&id" not in text and "*id" not in text  # no YAML anchors/aliases


def test_schema_is_structural() -> None:
    for where, node in _nodes(_schema()):
        assert not FORBIDDEN & set(node), f"{where or '<root>'}: {sorted(FORBIDDEN & set(node))}"
        assert isinstance(node.get("type"), str) and node["type"] != "null", where
        if "properties" in node:
            assert "additionalProperties" not in node, where
    assert "$ref" not in render_crds()["inferencemodels.jointserve.io.yaml"]


def test_server_owned_fields_are_left_to_the_server() -> None:
    props = _schema()["properties"]
    assert props["metadata"] == {"type": "object"}
    assert props["apiVersion"] == {"type": "string"}
    assert props["kind"] == {"type": "string"}
    assert _schema()["required"] == ["spec"]


def test_field_validations_are_carried_over() -> None:
    spec = _schema()["properties"]["spec"]
    sha = spec["properties"]["manifest"]["items"]["properties"]["sha256sum"]
    assert sha == {"type": "string", "pattern": SHA256_PATTERN}
    assert spec["properties"]["manifest"]["items"]["required"] == [
        "version", "downloadURL", "sha256sum"]
    assert spec["properties"]["deployToLayer"] == {"type": "string", "enum": ["edge", "cloud"]}
    assert spec["properties"]["replicas"] == {"type": "integer", "minimum": 0, "default": 1}
    assert spec["properties"]["nodeSelector"] == {
        "type": "object", "additionalProperties": {"type": "string"}}
    # Optional[str] is just a string; a null default is dropped, not sent.
    assert spec["properties"]["image"] == {"type": "string"}
    assert spec["required"] == ["modelName", "deployToLayer"]
    # First docstring paragraph only.
    assert spec["description"] == "Desired state of an InferenceModel."


def test_cel_rules_sit_on_spec() -> None:
    spec = _schema()["properties"]["spec"]
    assert spec["x-kubernetes-validations"] == InferenceModelSpec.CEL_RULES
    assert "x-kubernetes-validations" not in _schema()
    assert "x-kubernetes-validations" not in _schema()["properties"]["status"]


def test_crd_shape() -> None:
    crd = crd_for(InferenceModel)
    assert crd["metadata"]["name"] == "inferencemodels.jointserve.io"
    assert crd["spec"]["group"] == "jointserve.io"
    assert crd["spec"]["scope"] == "Namespaced"
    assert crd["spec"]["names"] == {
        "kind": "InferenceModel",
        "plural": "inferencemodels",
        "singular": "inferencemodel",
        "shortNames": ["im"],
        "categories": ["jointserve"],
    }
    [version] = crd["spec"]["versions"]
    assert (version["name"], version["served"], version["storage"]) == ("v1alpha1", True, True)
    assert version["subresources"] == {"status": {}}
    columns = {c["name"]: (c["type"], c["jsonPath"]) for c in version["additionalPrinterColumns"]}
    assert columns == {
        "MODEL": ("string", ".spec.modelName"),
        "LAYER": ("string", ".spec.deployToLayer"),
        "TARGET": ("string", ".spec.targetVersion"),
        "VERSION": ("string", ".status.activeVersion"),
        "READY": ("string", '.status.conditions[?(@.type=="Ready")].status'),
        "REASON": ("string", '.status.conditions[?(@.type=="Ready")].reason'),
        "ACCURACY": ("number", ".status.metrics[0].accuracy"),
        "F1": ("number", ".status.metrics[0].macroF1"),
        "URL": ("string", ".status.url"),
        "AGE": ("date", ".metadata.creationTimestamp"),
        "MESSAGE": ("string", '.status.conditions[?(@.type=="Ready")].message'),
        "EVALUATION": ("string", '.status.conditions[?(@.type=="Evaluated")].message'),
    }
    # The messages are long: only `kubectl get -o wide` shows them.
    assert [c["name"] for c in version["additionalPrinterColumns"]
            if c.get("priority")] == ["MESSAGE", "EVALUATION"]


def test_crd_round_trips_through_the_kubernetes_models() -> None:
    # Unknown keys (a typo like `x-kubernetes-validation`) are dropped by deserialisation,
    # missing required ones raise: a round trip that changes nothing means neither happened.
    client = pytest.importorskip("kubernetes.client")
    api = client.ApiClient()
    crd = crd_for(InferenceModel)
    # The private deserializer takes a dict in every client version; the public one does not.
    obj = api._ApiClient__deserialize(json.loads(json.dumps(crd)), "V1CustomResourceDefinition")
    assert api.sanitize_for_serialization(obj) == crd


def test_write_crds_writes_and_prunes_only_its_own_files(tmp_path: Path) -> None:
    out = tmp_path / "crds"
    (out).mkdir()
    (out / "gone.jointserve.io.yaml").write_text(HEADER + "kind: CustomResourceDefinition\n")
    (out / "hand-written.yaml").write_text("kind: ConfigMap\n")
    paths = write_crds(out)
    assert paths == [out / "datasets.jointserve.io.yaml",
                     out / "inferencemodels.jointserve.io.yaml",
                     out / "jointinferenceservices.jointserve.io.yaml",
                     out / "trainingmodels.jointserve.io.yaml"]
    assert all(p.read_text() == render_crds()[p.name] for p in paths)
    assert sorted(p.name for p in out.iterdir()) == [
        "datasets.jointserve.io.yaml", "hand-written.yaml", "inferencemodels.jointserve.io.yaml",
        "jointinferenceservices.jointserve.io.yaml", "trainingmodels.jointserve.io.yaml"]


# -- the converter on kinds other than InferenceModel ----------------------------------------


class _Part(BaseModel):
    """A part.

    Design notes that stay out of the CRD.
    """

    CEL_RULES: ClassVar[list[dict[str, str]]] = [{"rule": "self.size > 0", "message": "empty"}]
    size: int


class _WidgetSpec(BaseModel):
    main: _Part
    spare: _Part | None = None
    tags: set[str] = set()
    ratio: float | None = None
    mode: Literal["a"] = "a"


class _Widget(BaseModel):
    KIND: ClassVar[str] = "Widget"
    PLURAL: ClassVar[str] = "widgets"
    SHORT_NAMES: ClassVar[list[str]] = ["wd"]

    apiVersion: Literal["jointserve.io/v1alpha1"] = "jointserve.io/v1alpha1"
    kind: Literal["Widget"] = "Widget"
    metadata: dict[str, Any]
    spec: _WidgetSpec


def test_converter_handles_a_new_kind() -> None:
    crd = crd_for(_Widget)
    assert crd["spec"]["names"]["shortNames"] == ["wd"]
    # No status field: no status subresource; no columns declared: the server's defaults.
    assert set(crd["spec"]["versions"][0]) == {"name", "served", "storage", "schema"}
    spec = _schema(_Widget)["properties"]["spec"]
    part = {
        "description": "A part.",
        "type": "object",
        "properties": {"size": {"type": "integer"}},
        "required": ["size"],
        "x-kubernetes-validations": [{"rule": "self.size > 0", "message": "empty"}],
    }
    # A class used twice, once optional: its rules follow it to both places.
    assert spec["properties"]["main"] == part
    assert spec["properties"]["spare"] == part
    assert spec["properties"]["tags"] == {
        "type": "array", "default": [], "items": {"type": "string"},
        "x-kubernetes-list-type": "set"}
    assert spec["properties"]["ratio"] == {"type": "number"}
    assert spec["properties"]["mode"] == {"type": "string", "enum": ["a"], "default": "a"}


class _Node(BaseModel):
    children: list[_Node] = []


class _Tree(_Widget):
    KIND: ClassVar[str] = "Tree"
    spec: _Node  # type: ignore[assignment]


class _EitherSpec(BaseModel):
    value: int | str


class _Either(_Widget):
    KIND: ClassVar[str] = "Either"
    spec: _EitherSpec  # type: ignore[assignment]


class _BadColumn(_Widget):
    PRINTER_COLUMNS: ClassVar[list[dict[str, str]]] = [
        {"name": "SIZE", "type": "integer", "jsonPath": ".spec.main.sise"}]


@pytest.mark.parametrize(
    ("model_cls", "message"),
    [
        pytest.param(_Tree, "Tree.spec.children[]: recursive type _Node", id="recursive"),
        pytest.param(_Either, "Either.spec.value: union", id="union"),
        pytest.param(_BadColumn, "printer column .spec.main.sise: no field 'sise'", id="column"),
    ],
)
def test_untranslatable_schemas_are_refused(model_cls: type[BaseModel], message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        crd_for(model_cls)
