"""Build-or-reuse of the Go tools the benchmarks drive: vegeta and toxiproxy.

Each tool is built from its Go module at a pinned version with `go install` and cached under
``${XDG_CACHE_HOME:-~/.cache}/jointserve/bench/<tool>-<version>/<binary>``, so the first call
costs a build (tens of seconds on 2 cores) and every later call is a stat. A failed build
raises `ToolBuildError` naming the tool and quoting Go's stderr: a benchmark that silently
skipped its load generator would report nothing while looking green.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from filelock import FileLock


@dataclass(frozen=True)
class GoTool:
    """One binary from a Go module: `go install <package>@<version>`, renamed to `binary`."""

    name: str  # cache directory prefix, e.g. "vegeta"
    package: str  # the main package's import path
    version: str
    binary: str  # the file name in the cache (go's own name for it is "server", "cli", ...)


VEGETA = GoTool("vegeta", "github.com/tsenart/vegeta/v12", "v12.13.0", "vegeta")
# v2.5.0 is the newest toxiproxy v2 the Go module proxy serves here
# (`go list -m -versions github.com/Shopify/toxiproxy/v2` -> v2.3.0 v2.5.0).
TOXIPROXY_VERSION = "v2.5.0"
TOXIPROXY_SERVER = GoTool(
    "toxiproxy", "github.com/Shopify/toxiproxy/v2/cmd/server", TOXIPROXY_VERSION, "toxiproxy-server"
)
TOXIPROXY_CLI = GoTool(
    "toxiproxy", "github.com/Shopify/toxiproxy/v2/cmd/cli", TOXIPROXY_VERSION, "toxiproxy-cli"
)

# Seconds the last cold build of each binary took in this process (for reports).
build_seconds: dict[str, float] = {}


class ToolBuildError(RuntimeError):
    """A benchmark tool could not be built; the message names the tool and carries Go's stderr."""


def cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "jointserve" / "bench"


def tool_path(tool: GoTool) -> Path:
    return cache_root() / f"{tool.name}-{tool.version}" / tool.binary


def ensure(tool: GoTool) -> Path:
    """The cached binary for `tool`, building it first if it is not there yet."""
    path = tool_path(tool)
    if _usable(path):
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    # Two processes (e.g. parallel test workers) must not both build into one directory.
    with FileLock(str(path.parent / f".{tool.binary}.lock")):
        if not _usable(path):
            _build(tool, path)
    return path


def vegeta() -> Path:
    return ensure(VEGETA)


def toxiproxy_server() -> Path:
    return ensure(TOXIPROXY_SERVER)


def toxiproxy_cli() -> Path:
    return ensure(TOXIPROXY_CLI)


def _usable(path: Path) -> bool:
    return path.is_file() and os.access(path, os.X_OK)


def _build(tool: GoTool, dest: Path) -> None:
    go = shutil.which("go") or _default_go()
    if go is None:
        raise ToolBuildError(
            f"cannot build {tool.binary} ({tool.package}@{tool.version}): "
            "no `go` on PATH or at /usr/local/go/bin/go; install Go >= 1.22"
        )
    # Build into a scratch GOBIN and move the result into place, so an interrupted build
    # never leaves a half-written binary that a later call would take for a cached one.
    with tempfile.TemporaryDirectory(dir=dest.parent, prefix=".build-") as gobin:
        env = {
            **os.environ,
            "GOBIN": gobin,
            # Static binaries: no C toolchain needed, and no libc mismatch across machines.
            "CGO_ENABLED": "0",
            # The module is fetched, not a checkout: there is no VCS to stamp.
            "GOFLAGS": (os.environ.get("GOFLAGS", "") + " -buildvcs=false").strip(),
        }
        started = time.perf_counter()
        proc = subprocess.run(
            [go, "install", f"{tool.package}@{tool.version}"],
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        # go names the binary after the package path (minus a /vN suffix); GOBIN is private
        # to this build, so whatever single file landed there is ours.
        outputs = [p for p in Path(gobin).iterdir() if p.is_file()]
        if proc.returncode != 0 or len(outputs) != 1:
            raise ToolBuildError(
                f"building {tool.binary} failed: `go install {tool.package}@{tool.version}` "
                f"exited {proc.returncode}\n--- go stderr ---\n{proc.stderr.strip()}"
            )
        os.replace(outputs[0], dest)
        build_seconds[tool.binary] = time.perf_counter() - started


def _default_go() -> str | None:
    candidate = Path("/usr/local/go/bin/go")
    return str(candidate) if candidate.is_file() else None


if __name__ == "__main__":
    # `python -m benchmarks.tools`: build (or find) everything and print where it lives.
    for t in (VEGETA, TOXIPROXY_SERVER, TOXIPROXY_CLI):
        p = ensure(t)
        took = build_seconds.get(t.binary)
        print(f"{t.binary:18} {p}" + (f"  (built in {took:.1f} s)" if took else "  (cached)"))
