"""The model artifact store: URL -> sha256 -> unpack -> versioned directory.

The operator, and every replica on its own node, asks the store for the version a manifest
names; the store downloads the archive (http, https or file://), checks its sha256 before
unpacking anything, unpacks it safely and renames it into `<root>/<model>/<version>/`.
Failures are ArtifactErrors whose `reason` goes straight into a status condition.
"""

from ._errors import ArtifactError, redact_url
from ._fetch import Limit, ProgressCallback, SourceVersion, data_url
from ._pack import pack_tar_gz, write_atomic
from ._store import ArtifactStore, FetchResult

__all__ = ["ArtifactError", "ArtifactStore", "FetchResult", "Limit", "ProgressCallback", "data_url",
           "SourceVersion", "pack_tar_gz", "redact_url", "write_atomic"]
