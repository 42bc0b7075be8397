"""Kubernetes mode's publishing of a TrainingModel's result, and the HTTP server of it.

    KubePublisher.publish
        archive -> ConfigMap jointserve-published-<model>-<version> in the model's namespace
                   (binaryData; owned by the InferenceModel, so it goes when the model goes)
        version -> a patch of the InferenceModel's spec.manifest (and spec.targetVersion for
                   a rollout), compare-and-swap on resourceVersion
    PublishedArchiveServer
        GET /published/<namespace>/<configmap>.tar.gz -> the archive, read from the API

The archive lives in the API server, not on the operator's disk: every operator replica
serves it (the Service may reach either; a standby too), and a restarted operator still
has it. The node that serves the new version fetches it from that URL and checks its
sha256 like any other archive. A ConfigMap holds at most ~1 MiB: a bigger result is
refused with a message saying so (the digits model is ~3 KiB).
"""

from __future__ import annotations

import base64
import logging
import re
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from kubernetes import client
from kubernetes.client.rest import ApiException

from jointserve.api import API_GROUP, InferenceModel, ResourceKey

from ._kube_source import PLURALS, VERSION
from ._training import PublishError

log = logging.getLogger(__name__)

ARCHIVE_KEY = "archive.tar.gz"
# etcd refuses objects over 1.5 MiB; base64 grows the archive by a third.
MAX_ARCHIVE_BYTES = 1 << 20
PUBLISHED_LABEL = "jointserve.io/published-for"
ATTEMPTS = 5  # compare-and-swap retries when another writer changed the model meanwhile
_PATH = re.compile(r"^/published/([a-z0-9-]{1,63})/([a-z0-9.-]{1,253})\.tar\.gz$")


def configmap_name(model: str, version: str) -> str:
    return f"jointserve-published-{model}-{version}".lower()[:253]


class KubePublisher:
    """Publishes into the cluster; `base_url` is where PublishedArchiveServer is reached
    from the nodes (the operator's Service)."""

    def __init__(self, api_client: client.ApiClient, base_url: str) -> None:
        self.core = client.CoreV1Api(api_client)
        self.custom = client.CustomObjectsApi(api_client)
        self.base_url = base_url.rstrip("/")

    def publish(self, key: ResourceKey, version: str, archive: bytes, sha256: str,
                training: str, rollout: bool) -> str:
        _, namespace, name = key
        if len(archive) > MAX_ARCHIVE_BYTES:
            raise PublishError(f"the archive is {len(archive) / 2**20:.1f} MiB; Kubernetes "
                               f"mode keeps published archives in a ConfigMap (at most "
                               f"{MAX_ARCHIVE_BYTES // 2**20} MiB)")
        model = self._model(namespace, name)
        cm = configmap_name(name, version)
        self._store(namespace, cm, model, archive, sha256, training)
        url = f"{self.base_url}/published/{namespace}/{cm}.tar.gz"
        for _ in range(ATTEMPTS):
            if self._add_version(namespace, name, model, version, url, sha256, rollout):
                log.info("published %s/%s %s (from TrainingModel %s)", namespace, name,
                         version, training)
                return url
            model = self._model(namespace, name)
        raise RuntimeError(f"InferenceModel {namespace}/{name} kept changing; next pass retries")

    def _model(self, namespace: str, name: str) -> dict[str, Any]:
        try:
            return self.custom.get_namespaced_custom_object(
                API_GROUP, VERSION, namespace, PLURALS[InferenceModel.KIND], name)
        except ApiException as exc:
            if exc.status == 404:
                raise PublishError(f"publish.inferenceModel {name}: no InferenceModel of that "
                                   f"name in namespace {namespace}") from exc
            raise

    def _store(self, namespace: str, cm: str, model: dict[str, Any], archive: bytes,
               sha256: str, training: str) -> None:
        meta = model["metadata"]
        body = client.V1ConfigMap(
            metadata=client.V1ObjectMeta(
                name=cm, namespace=namespace,
                labels={PUBLISHED_LABEL: meta["name"]},
                annotations={"jointserve.io/sha256": sha256,
                             "jointserve.io/training-model": training},
                owner_references=[client.V1OwnerReference(
                    api_version=f"{API_GROUP}/{VERSION}", kind=InferenceModel.KIND,
                    name=meta["name"], uid=meta["uid"])]),
            binary_data={ARCHIVE_KEY: base64.b64encode(archive).decode()})
        try:
            self.core.create_namespaced_config_map(namespace, body)
        except ApiException as exc:
            if exc.status != 409:
                raise
            self.core.replace_namespaced_config_map(cm, namespace, body)  # a re-publish

    def _add_version(self, namespace: str, name: str, model: dict[str, Any], version: str,
                     url: str, sha256: str, rollout: bool) -> bool:
        """False when the model changed since it was read (409): read again and retry."""
        spec = model.get("spec") or {}
        manifest = [m for m in spec.get("manifest") or [] if m.get("version") != version]
        manifest.append({"version": version, "downloadURL": url, "sha256sum": sha256})
        patch: dict[str, Any] = {"metadata": {"resourceVersion":
                                              model["metadata"]["resourceVersion"]},
                                 "spec": {"manifest": manifest}}
        if rollout:
            patch["spec"]["targetVersion"] = version
        try:
            self.custom.patch_namespaced_custom_object(
                API_GROUP, VERSION, namespace, PLURALS[InferenceModel.KIND], name, patch)
        except ApiException as exc:
            if exc.status == 409:
                return False
            if exc.status == 422:  # the schema refused it (e.g. the manifest is full)
                raise PublishError(f"InferenceModel {namespace}/{name} refused the version: "
                                   f"{exc.body}") from exc
            raise
        return True


class PublishedArchiveServer:
    """Serves published archives from their ConfigMaps on http://<host>:<port>/published/."""

    def __init__(self, api_client: client.ApiClient, host: str, port: int) -> None:
        core = client.CoreV1Api(api_client)

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                found = _PATH.match(self.path)
                if found is None:
                    self.send_error(HTTPStatus.NOT_FOUND, "not a published archive path")
                    return
                try:
                    cm = core.read_namespaced_config_map(found[2], found[1])
                    data = base64.b64decode((cm.binary_data or {})[ARCHIVE_KEY])
                except (ApiException, KeyError) as exc:
                    status = getattr(exc, "status", 404)
                    self.send_error(HTTPStatus.NOT_FOUND if status == 404 else
                                    HTTPStatus.BAD_GATEWAY, f"{found[2]}: {exc}")
                    return
                self.send_response(HTTPStatus.OK)
                self.send_header("Content-Type", "application/gzip")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002
                log.debug("published archives: " + format, *args)

        self._server = ThreadingHTTPServer((host, port), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True,
                                        name="jointserve-published-archives")
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
