"""The Dataset resource without Ray: its schema, the Reconciler counting it, its status, the
`jointserve get ds` table and what Kubernetes mode does with it.

Real pieces: the ArtifactStore (on tmp_path, file:// URLs), jointserve.datasets' counters, the
StatusStore, a tiny real ONNX model where a Serve config needs one. Fake: Ray Serve
(`FakeBackend` records every applied config and reports every application RUNNING) and, for
Kubernetes mode, the API calls.
"""

from __future__ import annotations

import copy
import hashlib
import io
import os
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any, get_args

import numpy as np
import pytest

from jointserve.api import (
    DATASET_FORMATS,
    Dataset,
    DatasetFormat,
    ResourceError,
    parse_resource,
)
from jointserve.cli import main
from jointserve.datasets import SUPPORTED_FORMATS
from jointserve.operator import Reconciler, ServeSettings, StatusStore
from jointserve.store import ArtifactStore
from tests._fakes import FakeBackend, onnx_identity, tar_gz

DS = "Dataset"
NS = "default"
PUBLIC_URL = "http://127.0.0.1:8000"
GOOD_CSV = b"image,label\na.jpg,cat\nb.jpg,dog\nc.jpg,cat\n"
BAD_CSV = b"image,label\na.jpg,cat\nb.jpg\n"  # line 3: one field
VOC_XML = (b"<annotation><size><width>100</width><height>80</height></size>"
           b"<object><name>cat</name><bndbox><xmin>1</xmin><ymin>1</ymin><xmax>10</xmax>"
           b"<ymax>10</ymax></bndbox></object></annotation>")


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# -- resources --------------------------------------------------------------------------


def publish(tmp_path: Path, name: str, data: bytes) -> tuple[str, str]:
    """Write `data` as `name` where the datasets are published; (file:// url, sha256)."""
    path = tmp_path / "published" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path.as_uri(), sha(data)


def dataset(name: str, url: str, sha256: str, format: str, **spec: Any) -> Dataset:
    resource = parse_resource({
        "apiVersion": "jointserve.io/v1alpha1", "kind": DS,
        "metadata": {"name": name, "namespace": NS},
        "spec": {"url": url, "sha256sum": sha256, "format": format, **spec},
    }, f"test:{name}")
    assert isinstance(resource, Dataset)
    return resource


def csv_dataset(tmp_path: Path, data: bytes = GOOD_CSV, name: str = "train",
                file: str = "train.csv") -> Dataset:
    url, digest = publish(tmp_path, file, data)
    return dataset(name, url, digest, "csv", csv={"labelColumn": "label"})


def key(name: str) -> tuple[str, str, str]:
    return (DS, NS, name)


def tiny_model(tmp_path: Path) -> Any:
    """An InferenceModel of a real ONNX identity model, packed as the store wants it."""
    url, digest = publish(tmp_path, "edge-v1.tar.gz", tar_gz({"model.onnx": onnx_identity("edge")}))
    return parse_resource({
        "apiVersion": "jointserve.io/v1alpha1", "kind": "InferenceModel",
        "metadata": {"name": "edge", "namespace": NS},
        "spec": {"modelName": "edge", "deployToLayer": "edge",
                 "manifest": [{"version": "v1", "downloadURL": url, "sha256sum": digest}]},
    }, "test:edge")


@pytest.fixture
def state(tmp_path: Path) -> Path:
    return tmp_path / "state"


@pytest.fixture
def store(tmp_path: Path) -> ArtifactStore:
    return ArtifactStore(tmp_path / "store", retries=0)


@pytest.fixture
def backend() -> FakeBackend:
    return FakeBackend()


@pytest.fixture
def events() -> list[tuple[Any, ...]]:
    return []


@pytest.fixture
def reconciler(backend: FakeBackend, store: ArtifactStore, state: Path,
               events: list[tuple[Any, ...]]) -> Reconciler:
    return Reconciler(backend, store, StatusStore(state), ServeSettings(store_root=str(store.root)),
                      PUBLIC_URL, events=lambda *event: events.append(event))


def reconcile(reconciler: Reconciler, *resources: Any) -> dict[tuple[str, str, str], dict]:
    """One pass; each resource's status as JSON."""
    keyed = {(r.kind, r.metadata.namespace, r.metadata.name): r for r in resources}
    out = reconciler.reconcile(keyed)
    return {k: s.model_dump(mode="json", exclude_none=True) for k, s in out.items()}


def condition(status: dict, type_: str) -> tuple[str, str, str]:
    found = next(c for c in status["conditions"] if c["type"] == type_)
    return found["status"], found["reason"], found["message"]


def numbers(status: dict) -> dict:
    fields = ("numberOfSamples", "numberOfClasses", "classes", "facts", "sha256")
    return {field: status.get(field) for field in fields}


# -- counting ---------------------------------------------------------------------------


def test_csv_dataset_is_counted(reconciler: Reconciler, tmp_path: Path) -> None:
    ds = csv_dataset(tmp_path)

    status = reconcile(reconciler, ds)[key("train")]

    assert numbers(status) == {
        "numberOfSamples": 3, "numberOfClasses": 2, "classes": {"cat": 2, "dog": 1},
        "facts": {"columns": ["image", "label"], "labelColumn": "label"},
        "sha256": sha(GOOD_CSV),
    }
    assert condition(status, "Ready") == ("True", "Counted", "3 samples, 2 classes")
    assert condition(status, "ArtifactVerified") == ("True", "Verified",
                                                     "train.csv: sha256 matches")


def test_txt_dataset_is_counted(reconciler: Reconciler, tmp_path: Path) -> None:
    url, digest = publish(tmp_path, "list.txt", b"# images\na.jpg cat\nb.jpg dog\na.jpg cat\n\n")

    status = reconcile(reconciler, dataset("images", url, digest, "txt"))[key("images")]

    assert (status["numberOfSamples"], status["classes"]) == (3, {"cat": 2, "dog": 1})
    assert status["facts"] == {"images": 2}
    assert condition(status, "Ready") == ("True", "Counted", "3 samples, 2 classes")


def test_npz_dataset_is_counted(reconciler: Reconciler, tmp_path: Path) -> None:
    buffer = io.BytesIO()
    np.savez(buffer, features=np.zeros((5, 4), np.float32), target=np.array([0, 1, 1, 2, 2]))
    url, digest = publish(tmp_path, "digits.npz", buffer.getvalue())

    ds = dataset("digits", url, digest, "npz", npz={"labelsArray": "target"})
    status = reconcile(reconciler, ds)[key("digits")]

    assert (status["numberOfSamples"], status["numberOfClasses"]) == (5, 3)
    assert status["classes"] == {"0": 1, "1": 2, "2": 2}
    assert status["facts"] == {"arrays": {"features": [5, 4], "target": [5]},
                               "labelsArray": "target"}


def test_voc_archive_is_counted_as_downloaded(reconciler: Reconciler, tmp_path: Path) -> None:
    data = tar_gz({"VOC/Annotations/a.xml": VOC_XML, "VOC/JPEGImages/a.jpg": b"\xff\xd8"})
    url, digest = publish(tmp_path, "voc.tar.gz", data)

    status = reconcile(reconciler, dataset("boxes", url, digest, "voc"))[key("boxes")]

    assert (status["numberOfSamples"], status["classes"]) == (1, {"cat": 1})
    assert status["facts"]["imagesPresent"] == 1


def test_malformed_csv_names_file_and_line(reconciler: Reconciler, tmp_path: Path,
                                           events: list) -> None:
    status = reconcile(reconciler, csv_dataset(tmp_path, BAD_CSV))[key("train")]

    message = "train.csv line 3: 1 field, the header has 2"
    assert condition(status, "Ready") == ("False", "CsvMalformed", message)
    assert condition(status, "ArtifactVerified")[:2] == ("True", "Verified")  # sha256 was fine
    assert status.get("numberOfSamples") is None
    # Kubernetes mode's Events: the fetch, then one Warning with the reason.
    assert (key("train"), "Normal", "Fetching") == events[0][:3]
    assert [e[1:3] for e in events[1:]] == [("Normal", "Verified"), ("Warning", "CsvMalformed")]


def test_a_bad_new_version_keeps_the_last_good_numbers(reconciler: Reconciler,
                                                       tmp_path: Path) -> None:
    good = reconcile(reconciler, csv_dataset(tmp_path, file="v1.csv"))[key("train")]

    bad = reconcile(reconciler, csv_dataset(tmp_path, BAD_CSV, file="v2.csv"))[key("train")]

    assert numbers(bad) == numbers(good)  # all of them, the sha256 they describe included
    assert bad["sha256"] == sha(GOOD_CSV)
    assert condition(bad, "Ready") == ("False", "CsvMalformed",
                                       "v2.csv line 3: 1 field, the header has 2")
    # A fixed version replaces them, all at once.
    fixed_data = GOOD_CSV + b"d.jpg,bird\n"
    fixed = reconcile(reconciler, csv_dataset(tmp_path, fixed_data, file="v3.csv"))[key("train")]
    assert (fixed["numberOfSamples"], fixed["sha256"]) == (4, sha(fixed_data))
    assert fixed["classes"] == {"bird": 1, "cat": 2, "dog": 1}
    assert condition(fixed, "Ready")[:2] == ("True", "Counted")


def test_last_good_numbers_survive_an_operator_restart(backend: FakeBackend, store: ArtifactStore,
                                                       state: Path, tmp_path: Path) -> None:
    def fresh() -> Reconciler:
        return Reconciler(backend, store, StatusStore(state),
                          ServeSettings(store_root=str(store.root)), PUBLIC_URL)

    good = reconcile(fresh(), csv_dataset(tmp_path, file="v1.csv"))[key("train")]
    bad = reconcile(fresh(), csv_dataset(tmp_path, BAD_CSV, file="v2.csv"))[key("train")]
    assert numbers(bad) == numbers(good)


def test_sha256_mismatch_keeps_nothing(reconciler: Reconciler, store: ArtifactStore,
                                       tmp_path: Path) -> None:
    url, _ = publish(tmp_path, "train.csv", GOOD_CSV)
    wrong = sha(b"another file")

    status = reconcile(reconciler, dataset("train", url, wrong, "csv"))[key("train")]

    reason, message = "Sha256Mismatch", f"sha256 mismatch for {url}: expected {wrong}, got {sha(GOOD_CSV)}"
    assert condition(status, "Ready") == ("False", reason, message)
    assert condition(status, "ArtifactVerified") == ("False", reason, message)
    assert status.get("numberOfSamples") is None
    assert [p.name for p in (store.root / ".datasets").rglob("*") if not p.name.endswith(".lock")] \
        == ["default.train"]


def test_a_format_error_stands_until_the_spec_changes(reconciler: Reconciler, store: ArtifactStore,
                                                      tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    fetches = []
    fetch_file = store.fetch_file
    monkeypatch.setattr(store, "fetch_file", lambda *a, **kw: fetches.append(a) or fetch_file(*a, **kw))
    bad = csv_dataset(tmp_path, BAD_CSV)
    for _ in range(3):
        assert condition(reconcile(reconciler, bad)[key("train")], "Ready")[1] == "CsvMalformed"
    assert len(fetches) == 1
    # Other options are another question: asked again.
    other = dataset("train", bad.spec.url, bad.spec.sha256sum, "csv", csv={"labelColumn": 1})
    reconcile(reconciler, other)
    assert len(fetches) == 2


def test_a_failed_download_is_retried_after_the_backoff(reconciler: Reconciler, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    from jointserve.operator import _retry

    ds = dataset("train", (tmp_path / "published" / "train.csv").as_uri(), sha(GOOD_CSV), "csv")
    assert condition(reconcile(reconciler, ds)[key("train")], "Ready")[1] == "DownloadFailed"
    publish(tmp_path, "train.csv", GOOD_CSV)
    # Not yet due: the remembered failure stands.
    assert condition(reconcile(reconciler, ds)[key("train")], "Ready")[1] == "DownloadFailed"
    later = time.monotonic() + _retry.RETRY_MIN_S + 1
    monkeypatch.setattr(_retry, "time", SimpleNamespace(monotonic=lambda: later))
    status = reconcile(reconciler, ds)[key("train")]
    assert condition(status, "Ready")[:2] == ("True", "Counted")
    assert status["numberOfSamples"] == 3


# -- a source that changes (refreshSeconds) and the size cap ----------------------------


def followed(tmp_path: Path, data: bytes, refresh: int = 60, **spec: Any) -> Dataset:
    """A csv Dataset with no sha256sum, following train.csv every `refresh` seconds."""
    url, _ = publish(tmp_path, "train.csv", data)
    resource = parse_resource({
        "apiVersion": "jointserve.io/v1alpha1", "kind": DS,
        "metadata": {"name": "train", "namespace": NS},
        "spec": {"url": url, "refreshSeconds": refresh, "format": "csv",
                 "csv": {"labelColumn": "label"}, **spec},
    }, "test:train")
    assert isinstance(resource, Dataset)
    return resource


def republish(tmp_path: Path, data: bytes) -> None:
    """New content for train.csv, with an mtime that surely differs from the last one."""
    path = tmp_path / "published" / "train.csv"
    before = path.stat().st_mtime_ns
    path.write_bytes(data)
    os.utime(path, ns=(before + 10**9, before + 10**9))


class Clock:
    """time.monotonic for the operator's dataset module, moved by hand."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        from jointserve.operator import _datasets
        self.now = time.monotonic()
        monkeypatch.setattr(_datasets, "time", SimpleNamespace(monotonic=lambda: self.now))

    def advance(self, seconds: float) -> None:
        self.now += seconds


def test_a_followed_source_is_recounted_when_it_changes(
        reconciler: Reconciler, store: ArtifactStore, tmp_path: Path,
        events: list[tuple[Any, ...]], monkeypatch: pytest.MonkeyPatch) -> None:
    clock = Clock(monkeypatch)
    follows = []
    follow_file = store.follow_file
    monkeypatch.setattr(store, "follow_file",
                        lambda *a, **kw: follows.append(kw.get("unless")) or follow_file(*a, **kw))
    ds = followed(tmp_path, GOOD_CSV, refresh=30)

    first = reconcile(reconciler, ds)[key("train")]
    assert (first["numberOfSamples"], first["sha256"]) == (3, sha(GOOD_CSV))
    assert condition(first, "ArtifactVerified")[2].endswith("re-checked every 30 s)")
    checked = first["lastChecked"]
    # Not due yet: the source is not asked.
    clock.advance(29)
    assert numbers(reconcile(reconciler, ds)[key("train")]) == numbers(first)
    assert len(follows) == 1
    # Due, unchanged: asked with what the last answer said, and nothing recounted.
    clock.advance(2)
    again = reconcile(reconciler, ds)[key("train")]
    assert len(follows) == 2 and follows[1] is not None
    assert numbers(again) == numbers(first) and again["lastChecked"] >= checked

    newer = GOOD_CSV + b"d.jpg,bird\n"
    republish(tmp_path, newer)
    clock.advance(31)
    changed = reconcile(reconciler, ds)[key("train")]
    assert (changed["numberOfSamples"], changed["sha256"]) == (4, sha(newer))
    assert changed["classes"] == {"bird": 1, "cat": 2, "dog": 1}
    assert [e[2] for e in events if e[2] == "SourceChanged"] == ["SourceChanged"]
    # The store keeps the counted copy and the one before, no more.
    republish(tmp_path, newer + b"e.jpg,cat\n")
    clock.advance(31)
    reconcile(reconciler, ds)
    kept = sorted(p.name for p in (store.root / ".datasets" / "default.train").iterdir()
                  if not p.name.startswith("."))
    assert kept == sorted([sha(newer), sha(newer + b"e.jpg,cat\n")])


def test_a_followed_source_that_breaks_keeps_the_last_good_numbers(
        reconciler: Reconciler, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    clock = Clock(monkeypatch)
    ds = followed(tmp_path, GOOD_CSV, refresh=10)
    good = reconcile(reconciler, ds)[key("train")]

    republish(tmp_path, BAD_CSV)
    clock.advance(11)
    bad = reconcile(reconciler, ds)[key("train")]
    assert numbers(bad) == numbers(good)
    assert condition(bad, "Ready") == ("False", "CsvMalformed",
                                       "train.csv line 3: 1 field, the header has 2")
    # A format error is asked about again at the next check, not only on a new spec.
    fixed = GOOD_CSV + b"d.jpg,bird\n"
    republish(tmp_path, fixed)
    clock.advance(11)
    status = reconcile(reconciler, ds)[key("train")]
    assert condition(status, "Ready")[:2] == ("True", "Counted")
    assert (status["numberOfSamples"], status["sha256"]) == (4, sha(fixed))


def test_a_file_over_max_bytes_is_refused_by_name(reconciler: Reconciler, store: ArtifactStore,
                                                  tmp_path: Path) -> None:
    url, digest = publish(tmp_path, "train.csv", GOOD_CSV)
    status = reconcile(reconciler, dataset("train", url, digest, "csv", maxBytes=16))[key("train")]
    assert condition(status, "Ready") == (
        "False", "DownloadTooLarge",
        f"{url} is too large: it has {len(GOOD_CSV)} bytes, over spec.maxBytes of 16 bytes")
    assert status.get("numberOfSamples") is None
    assert not list((store.root / ".datasets").rglob("train.csv"))


# -- what a Dataset does not touch, and removal -----------------------------------------


def test_datasets_leave_the_serve_config_alone(reconciler: Reconciler, backend: FakeBackend,
                                               tmp_path: Path) -> None:
    model = tiny_model(tmp_path)
    reconcile(reconciler, model)
    before = copy.deepcopy(backend.applied)
    assert [a["name"] for a in before[-1]["applications"]] == ["jointserve", "im.default.edge"]

    out = reconcile(reconciler, model, csv_dataset(tmp_path), csv_dataset(tmp_path, BAD_CSV, "bad"))

    assert backend.applied == before  # nothing new applied
    assert set(out) == {("InferenceModel", NS, "edge"), key("train"), key("bad")}
    desired = reconciler.desired({("InferenceModel", NS, "edge"): model,
                                  key("train"): csv_dataset(tmp_path)})
    assert desired.config == before[-1]


def test_a_removed_dataset_loses_its_status_record(reconciler: Reconciler, state: Path,
                                                   tmp_path: Path) -> None:
    reconcile(reconciler, csv_dataset(tmp_path), csv_dataset(tmp_path, name="test"))
    assert StatusStore(state).read(key("train")) is not None

    reconcile(reconciler, csv_dataset(tmp_path, name="test"))

    assert StatusStore(state).read(key("train")) is None
    assert [k for k in StatusStore(state).keys() if k[0] == DS] == [key("test")]


# -- the CLI ----------------------------------------------------------------------------


def test_get_ds_prints_a_kubectl_like_table(reconciler: Reconciler, state: Path, tmp_path: Path,
                                            capsys: pytest.CaptureFixture) -> None:
    reconcile(reconciler, csv_dataset(tmp_path), csv_dataset(tmp_path, BAD_CSV, "bad", "bad.csv"))

    assert main(["get", "ds", "--state-dir", str(state)]) == 0
    header, *rows = capsys.readouterr().out.splitlines()
    assert header.split() == ["NAME", "FORMAT", "SAMPLES", "CLASSES", "READY", "REASON"]
    assert [row.split() for row in rows] == [["bad", "csv", "-", "-", "False", "CsvMalformed"],
                                             ["train", "csv", "3", "2", "True", "Counted"]]

    for kind in ("datasets", "dataset"):
        assert main(["get", kind, "-o", "wide", "--state-dir", str(state)]) == 0
        header, bad, train = capsys.readouterr().out.splitlines()
        assert header.split()[-1] == "MESSAGE"
        assert bad.endswith("bad.csv line 3: 1 field, the header has 2")
        assert train.endswith("3 samples, 2 classes; per class cat:2 dog:1")


# -- the schema -------------------------------------------------------------------------


def test_formats_are_the_counters_formats() -> None:
    assert DATASET_FORMATS == get_args(DatasetFormat)
    assert set(DATASET_FORMATS) == set(SUPPORTED_FORMATS)


def test_defaults_and_sha256_case() -> None:
    ds = dataset("train", "https://data.example/train.csv", "AB" * 32, "csv")
    assert ds.spec.sha256sum == "ab" * 32
    assert (ds.spec.csv, ds.spec.npz, ds.spec.nodeSelector) == (None, None, {})


GOOD_SHA = "ab" * 32


@pytest.mark.parametrize(
    ("spec", "problem"),
    [
        pytest.param({"format": "txt", "csv": {"header": False}},
                     "spec.csv: options are for format csv (format is txt)", id="csv-on-txt"),
        pytest.param({"format": "csv", "npz": {}},
                     "spec.npz: options are for format npz (format is csv)", id="npz-on-csv"),
        pytest.param({"sha256sum": "abc"},
                     "spec.sha256sum: must be 64 hex characters (got 'abc')", id="bad-sha"),
        pytest.param({"url": "s3://bucket/train.csv"},
                     "spec.url: must be an http://, https:// or file:// URL "
                     "(got 's3://bucket/train.csv')", id="bad-url"),
        pytest.param({"format": "parquet"},
                     "spec.format: must be one of 'csv', 'txt', 'voc' or 'npz' (got 'parquet')",
                     id="bad-format"),
        pytest.param({"csv": {"labelColumn": "label", "header": False}},
                     "spec.csv.labelColumn: 'label' is a column name but header is false; "
                     "use a 0-based index", id="name-without-header"),
        pytest.param({"csv": {"labelColumn": -1}},
                     "spec.csv.labelColumn: must be a column name (1-253 characters) or a "
                     "0-based index >= 0 (got -1)", id="negative-column"),
        pytest.param({"csv": {"labelColumn": True}},
                     "spec.csv.labelColumn: must be a column name (1-253 characters) or a "
                     "0-based index >= 0 (got True)", id="boolean-column"),
        pytest.param({"csv": {"delimiter": '"'}},
                     "spec.csv.delimiter: must be one character other than '\"' or a line "
                     "break (got '\"')", id="quote-delimiter"),
        pytest.param({"csv": {"delimiter": ";;"}},
                     "spec.csv.delimiter: string should have at most 1 character",
                     id="long-delimiter"),
        pytest.param({"refreshSeconds": 60},
                     "spec: set sha256sum (a fixed file) or refreshSeconds (a source that "
                     "changes, re-checked that often), one of the two", id="sha-and-refresh"),
        pytest.param({"sha256sum": None},
                     "spec: set sha256sum (a fixed file) or refreshSeconds (a source that "
                     "changes, re-checked that often), one of the two", id="neither"),
        pytest.param({"sha256sum": None, "refreshSeconds": 0},
                     "spec.refreshSeconds: input should be greater than or equal to 1", id="zero-refresh"),
        pytest.param({"maxBytes": 0}, "spec.maxBytes: input should be greater than or equal to 1", id="zero-cap"),
    ],
)
def test_invalid_spec_names_the_field(spec: dict, problem: str) -> None:
    doc = {"url": "https://data.example/train.csv", "sha256sum": GOOD_SHA, "format": "csv", **spec}
    with pytest.raises(ResourceError) as info:
        parse_resource({"apiVersion": "jointserve.io/v1alpha1", "kind": DS,
                        "metadata": {"name": "train"}, "spec": doc}, "train.yaml")
    assert info.value.problems == [problem]
    assert str(info.value).startswith("train.yaml: Dataset train: ")


# -- Kubernetes mode --------------------------------------------------------------------


def test_kube_status_patch_removes_classes_that_went_away() -> None:
    from jointserve.operator._kube_status import merge_patch

    current = {"classes": {"cat": 2, "dog": 1}, "facts": {"columns": ["a"], "labelColumn": "a"},
               "numberOfSamples": 3, "url": "x"}
    new = {"classes": {"cat": 4}, "facts": {"arrays": {"x": [4]}}, "numberOfSamples": 4}
    assert merge_patch(current, new) == {
        "classes": {"cat": 4, "dog": None},
        "facts": {"arrays": {"x": [4]}, "columns": None, "labelColumn": None},
        "numberOfSamples": 4, "url": None,
    }


def test_kube_status_nulls_what_it_wrote_before_the_watch_brought_it_back() -> None:
    from kubernetes import client

    from jointserve.operator._kube_status import KubeStatus

    patches = []
    source = SimpleNamespace(get=lambda key: {"status": {}})  # the watch has not caught up
    statuses = KubeStatus(client.ApiClient(), source)  # type: ignore[arg-type]
    statuses.api = SimpleNamespace(  # type: ignore[assignment]
        patch_namespaced_custom_object_status=lambda *args: patches.append(args))

    statuses.write(key("train"), {"status": {"classes": {"cat": 2, "dog": 1}}})
    statuses.write(key("train"), {"status": {"classes": {"cat": 3}}})

    assert patches[-1][3:] == ("datasets", "train", {"status": {"classes": {"cat": 3, "dog": None}}})


def test_a_deleted_dataset_is_released_at_once_and_its_files_removed(
        store: ArtifactStore, tmp_path: Path) -> None:
    from jointserve.operator._kube_operator import FINALIZER, KubeOperator

    url, digest = publish(tmp_path, "train.csv", GOOD_CSV)
    store.fetch_file("default.train", url, digest)
    store.fetch_file("other.train", url, digest)  # the same name in another namespace
    patches = []
    api = SimpleNamespace(patch_namespaced_custom_object=lambda *args: patches.append(args))
    # Serve lists an application under every name the operator could give a Dataset.
    backend = SimpleNamespace(app_states=lambda: {"Dataset.default.train": None,
                                                  "ds.default.train": None})
    operator = KubeOperator(source=None, reconciler=None, api=api, backend=backend,
                            store=store, events=lambda *event: None)
    obj = {"metadata": {"name": "train", "namespace": NS, "resourceVersion": "7",
                        "finalizers": ["keep.example/other", FINALIZER]}}

    operator._finalize({key("train"): obj}, {})

    assert patches == [("jointserve.io", "v1alpha1", NS, "datasets", "train",
                        {"metadata": {"finalizers": ["keep.example/other"], "resourceVersion": "7"}})]
    assert not (store.root / ".datasets" / "default.train").exists()
    assert (store.root / ".datasets" / "other.train").exists()
