"""The digits example's models as directories the systems can load (model.onnx inside).

    dirs = unpack_example_models(REPO / "examples/digits/archives", tmp)
    PlainHttp(dirs["edge"]); SednaTwoServices(dirs["edge"], dirs["cloud"])

`make example` builds the archives (tar.gz with model.onnx and metadata.json).
"""

from __future__ import annotations

import tarfile
from pathlib import Path

# Role -> archive stem: the versions the joint baselines use (examples/digits/digits.yaml
# serves edge v1 and cloud v1).
EXAMPLE_MODELS = {"edge": "digits-edge-v1", "cloud": "digits-cloud-v1"}


def unpack_example_models(archives_dir: Path, into: Path) -> dict[str, Path]:
    """Unpack edge v1 and cloud v1 into `into/<stem>/`; returns {"edge": dir, "cloud": dir}.

    Raises FileNotFoundError naming `make example` if an archive is missing.
    """
    dirs: dict[str, Path] = {}
    for role, stem in EXAMPLE_MODELS.items():
        archive = archives_dir / f"{stem}.tar.gz"
        if not archive.is_file():
            raise FileNotFoundError(f"{archive} is missing; build it with `make example`")
        dest = into / stem
        dest.mkdir(parents=True, exist_ok=True)
        with tarfile.open(archive, "r:gz") as tar:
            # The data filter refuses absolute paths, '..', links out and device files.
            tar.extractall(dest, filter="data")
        dirs[role] = dest
    return dirs
