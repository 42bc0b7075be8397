"""Versions the operator published (a TrainingModel's result), merged into the user's models.

Directory mode never rewrites the user's YAML. What the operator adds to an InferenceModel
lives in a file of its own beside it:

    <resources>/.jointserve-published/<namespace>.<model>.yaml
        versions: [{version, downloadURL, sha256sum, trainingModel, publishedAt}, ...]
        targetVersion: <the version a `publish.rollout` asked to serve>   (optional)

`merge_published` appends those versions to the model's manifest (a version the user wrote
wins) and, for a rollout, sets its targetVersion; the directory source applies it on every
scan, so deleting the file takes the published versions away again. The directory is
hidden, so its files are never read as resources themselves.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field

from jointserve.api import InferenceModel, ModelFile, ResourceKey, now_rfc3339
from jointserve.store import write_atomic

log = logging.getLogger(__name__)

PUBLISHED_DIR = ".jointserve-published"


class PublishedVersion(ModelFile):
    trainingModel: str  # the TrainingModel whose result it is
    publishedAt: str  # RFC 3339


class PublishedVersions(BaseModel):
    """One InferenceModel's published versions (the file's schema; writer and reader)."""

    model_config = ConfigDict(extra="forbid")

    versions: list[PublishedVersion] = Field(default_factory=list)
    targetVersion: str | None = None


def published_path(resources: Path, namespace: str, model: str) -> Path:
    return resources / PUBLISHED_DIR / f"{namespace}.{model}.yaml"


def read_published(path: Path) -> PublishedVersions:
    """The file's versions; none when it is missing, and none (logged) when it is unreadable."""
    try:
        return PublishedVersions.model_validate(yaml.safe_load(path.read_text()) or {})
    except FileNotFoundError:
        return PublishedVersions()
    except (OSError, ValueError, yaml.YAMLError) as exc:
        log.error("%s: not a published-versions file (ignored): %s", path, exc)
        return PublishedVersions()


def publish_version(resources: Path, key: ResourceKey, entry: ModelFile, training: str,
                    rollout: bool) -> None:
    """Add `entry` to the published versions of InferenceModel `key` (replacing one of the
    same version), and make it the model's targetVersion if `rollout`."""
    path = published_path(resources, key[1], key[2])
    known = read_published(path)
    versions = [v for v in known.versions if v.version != entry.version]
    versions.append(PublishedVersion(**entry.model_dump(), trainingModel=training,
                                     publishedAt=now_rfc3339()))
    target = entry.version if rollout else known.targetVersion
    content = PublishedVersions(versions=versions, targetVersion=target)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, yaml.safe_dump(content.model_dump(mode="json", exclude_none=True),
                                      sort_keys=False).encode())


class DirectoryPublisher:
    """Directory mode's publishing: the archive stays on this machine (a file:// URL under
    the state dir) and the version goes to the published-versions file beside the YAML."""

    def __init__(self, resources: Path, archives: Path) -> None:
        self.resources = resources
        self.archives = archives

    def publish(self, key: ResourceKey, version: str, archive: bytes, sha256: str,
                training: str, rollout: bool) -> str:
        path = self.archives / f"{key[1]}.{key[2]}" / f"{version}.tar.gz"
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, archive)
        publish_version(self.resources, key, ModelFile(version=version,
                        downloadURL=path.as_uri(), sha256sum=sha256), training, rollout)
        return path.as_uri()


def merge_published(model: InferenceModel, resources: Path) -> InferenceModel:
    """`model` with the versions published for it (see the module docstring)."""
    if model.spec.image:
        return model
    published = read_published(published_path(resources, model.metadata.namespace,
                                              model.metadata.name))
    if not published.versions:
        return model
    mine = {f.version for f in model.spec.manifest}
    extra = [ModelFile(version=v.version, downloadURL=v.downloadURL, sha256sum=v.sha256sum)
             for v in published.versions if v.version not in mine]
    manifest = [*model.spec.manifest, *extra]
    update: dict[str, Any] = {"manifest": manifest}
    if published.targetVersion and any(f.version == published.targetVersion for f in manifest):
        update["targetVersion"] = published.targetVersion
    elif model.spec.targetVersion is None and len(model.spec.manifest) == 1:
        update["targetVersion"] = model.spec.manifest[0].version  # one version: it served
    spec = model.spec.model_copy(update=update)
    return model.model_copy(update={"spec": spec})
