"""The one error type of the artifact store, and URL redaction for the messages it carries.

The operator turns an ArtifactError into a status condition on the InferenceModel: `reason`
becomes the condition's reason, `str(err)` its message. So messages name the URL and say
what was wrong in words a user can act on.
"""

from __future__ import annotations

from typing import Literal, get_args
from urllib.parse import urlsplit, urlunsplit

ArtifactReason = Literal[
    "DownloadFailed",
    "HTTPError",
    "Sha256Mismatch",
    "ArchiveCorrupt",
    "UnsafeArchive",
    "ArchiveTooLarge",
    "DownloadTooLarge",
    "UnsupportedArchive",
    "Cancelled",
]
_REASONS = frozenset(get_args(ArtifactReason))


class ArtifactError(Exception):
    """Fetch/verify/unpack failure.

    `reason` is a Kubernetes-style CamelCase reason used in resource status conditions:
    DownloadFailed (connect errors, timeouts, truncated body after retries, unsupported URL
    scheme, unreadable file:// path), HTTPError (4xx, or 5xx after retries; the message
    includes the status code), Sha256Mismatch, ArchiveCorrupt, UnsafeArchive (absolute path,
    '..', link leaving the directory, device file), ArchiveTooLarge (bomb cap),
    DownloadTooLarge (the download's own size cap), UnsupportedArchive, Cancelled (the caller's progress callback gave up: nobody wants the
    version any more). `url` is the artifact URL with any password redacted.
    """

    def __init__(self, reason: ArtifactReason, url: str, message: str) -> None:
        if reason not in _REASONS:
            raise ValueError(f"unknown ArtifactError reason {reason!r}")
        super().__init__(message)
        self.reason: str = reason
        self.url = url
        self.message = message

    def __reduce__(self) -> tuple[type[ArtifactError], tuple[str, str, str]]:
        # Replicas run in Ray worker processes and their exceptions are pickled back; the
        # default reduce would call __init__ with `args` (the message alone) and fail.
        return (type(self), (self.reason, self.url, self.message))


def redact_url(url: str) -> str:
    """`url` with the password of any `user:password@` replaced, for messages, logs and
    markers; a `data:` URL (its content) as its media type and length."""
    if url[:5].lower() == "data:":
        return f"{url.partition(',')[0]},... ({len(url)} characters)"
    try:
        parts = urlsplit(url)
    except ValueError:
        return url
    if parts.password is None:
        return url
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{parts.username}:***@{host}"))
