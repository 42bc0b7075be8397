"""Stand-ins for what the Reconciler talks to (Ray Serve, the status store), and small real
archives for it to verify: shared by the reconciler's and the Dataset resource's tests."""

from __future__ import annotations

import copy
import hashlib
import io
import tarfile
from dataclasses import dataclass
from pathlib import Path

import onnx
from onnx import TensorProto, helper

from jointserve.operator import AppState


class FakeBackend:
    """Ray Serve as the Reconciler sees it: every application of the last applied config
    reports `self.status` (or its entry in `self.overrides`)."""

    def __init__(self, status: str = "RUNNING") -> None:
        self.status = status
        self.overrides: dict[str, str] = {}
        self.applied: list[dict] = []
        self.counters: dict[str, dict[str, int]] = {}
        self.forgotten: list[str] = []

    @property
    def config(self) -> dict:
        assert self.applied, "nothing was applied"
        return self.applied[-1]

    def apply(self, config: dict) -> None:
        self.applied.append(copy.deepcopy(config))

    def app_states(self) -> dict[str, AppState]:
        if not self.applied:
            return {}
        states = {}
        for app in self.applied[-1]["applications"]:
            status = self.overrides.get(app["name"], self.status)
            running = (sum(d.get("num_replicas", 1) for d in app["deployments"])
                       if status == "RUNNING" else 0)
            states[app["name"]] = AppState(status=status, message=f"fake {status}",
                                           running_replicas=running)
        return states

    def service_counters(self) -> dict[str, dict[str, int]]:
        return copy.deepcopy(self.counters)

    def forget_service_counters(self, app_name: str) -> None:
        self.forgotten.append(app_name)


class MemoryStatuses:
    """StatusRecords in a dict, counting writes."""

    def __init__(self) -> None:
        self.records: dict[tuple[str, str, str], dict] = {}
        self.writes = 0

    def read(self, key: tuple[str, str, str]) -> dict | None:
        return copy.deepcopy(self.records.get(key))

    def write(self, key: tuple[str, str, str], record: dict) -> None:
        self.writes += 1
        self.records[key] = copy.deepcopy(record)

    def delete(self, key: tuple[str, str, str]) -> None:
        self.records.pop(key, None)

    def keys(self) -> list[tuple[str, str, str]]:
        return sorted(self.records)


# -- archives ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Archive:
    path: Path
    sha256: str

    @property
    def url(self) -> str:
        return self.path.as_uri()


def onnx_identity(tag: str) -> bytes:
    """A real, tiny ONNX model (float [N, 4] -> same); `tag` makes each version's bytes differ."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 4])
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], f"identity_{tag}", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)],
                              doc_string=f"test model {tag}")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


def tar_info(name: str, data: bytes | None) -> tarfile.TarInfo:
    """A member header: a directory when `data` is None, else a file of len(data) bytes."""
    info = tarfile.TarInfo(name)
    if data is None:
        info.type, info.mode = tarfile.DIRTYPE, 0o755
    else:
        info.size = len(data)
    return info


def tar_gz(members: dict[str, bytes]) -> bytes:
    """A tar.gz of `members` (name -> bytes), in the given order."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def pack(path: Path, members: dict[str, bytes]) -> Archive:
    """tar_gz(members) written to `path`, with its sha256."""
    data = tar_gz(members)
    path.write_bytes(data)
    return Archive(path, hashlib.sha256(data).hexdigest())
