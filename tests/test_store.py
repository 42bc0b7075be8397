"""Tests of jointserve.store: fetch over real loopback HTTP (tests._fileserver) and file://,
sha256 verification, safe unpacking, caching, atomic replacement and cross-process locking.

Archives are built here with tarfile/zipfile; the store under test has small caps
(max_unpacked_bytes=1 MiB, max_members=50) so bomb tests stay fast.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import stat
import struct
import subprocess
import sys
import tarfile
import textwrap
import time
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests._fileserver import FileServer
from jointserve.store import ArtifactError, ArtifactStore, FetchResult, data_url
from jointserve.store import _unpack

MODEL = b"not really onnx\n" * 512
CONFIG = b'{"inputs": 1}\n'
CAP = 1 << 20
REPO_ROOT = Path(__file__).resolve().parents[1]


# --- archive builders ------------------------------------------------------------------------


def file_info(name: str, data: bytes) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    return info, data


def link_info(
    name: str, target: str, kind: bytes = tarfile.SYMTYPE
) -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = target
    return info, None


def tar_bytes(entries: list[tuple[tarfile.TarInfo, bytes | None]], *, gz: bool = True) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz" if gz else "w") as tar:
        for info, data in entries:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


def zip_bytes(
    entries: list[tuple[str | zipfile.ZipInfo, bytes]], compression: int = zipfile.ZIP_DEFLATED
) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression) as zf:
        for name, data in entries:
            zf.writestr(name, data)
    return buf.getvalue()


def good_tar(gz: bool = True) -> bytes:
    return tar_bytes([file_info("model.onnx", MODEL), file_info("sub/config.json", CONFIG)], gz=gz)


def good_zip() -> bytes:
    return zip_bytes([("model.onnx", MODEL), ("sub/config.json", CONFIG)])


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# --- fixtures and helpers --------------------------------------------------------------------


@pytest.fixture
def served(tmp_path: Path) -> Path:
    path = tmp_path / "served"
    path.mkdir()
    return path


@pytest.fixture
def server(served: Path) -> Iterator[FileServer]:
    with FileServer(served) as srv:
        yield srv


@pytest.fixture
def store(tmp_path: Path) -> ArtifactStore:
    return ArtifactStore(
        tmp_path / "store", max_unpacked_bytes=CAP, max_members=50, timeout_s=5.0,
        retries=2, backoff_s=0.01,
    )


@pytest.fixture
def publish(served: Path, server: FileServer) -> Callable[[str, bytes], tuple[str, str]]:
    """Put `data` on the server as `name`; returns (url, sha256)."""

    def _publish(name: str, data: bytes) -> tuple[str, str]:
        (served / name).write_bytes(data)
        return server.url(name), sha(data)

    return _publish


def entries(store: ArtifactStore) -> set[str]:
    """Everything in the store down to version level, lock files aside."""
    found = set()
    for path in store.root.glob("*"):
        found.add(path.name)
        found.update(f"{path.name}/{child.name}" for child in path.iterdir())
    return {name for name in found if not name.endswith(".lock")}


def assert_installed(result: FetchResult, store: ArtifactStore) -> None:
    assert result.path == store.path_for("m", "v1")
    assert (result.path / "model.onnx").read_bytes() == MODEL
    assert (result.path / "sub" / "config.json").read_bytes() == CONFIG


def fetch_error(store: ArtifactStore, url: str, sha256: str) -> ArtifactError:
    with pytest.raises(ArtifactError) as info:
        store.fetch("m", "v1", url, sha256)
    return info.value


# --- fetching and caching --------------------------------------------------------------------


def test_fetch_unpacks_into_version_dir_with_marker(store, publish):
    data = good_tar()
    url, digest = publish("a.tar.gz", data)

    result = store.fetch("m", "v1", url, digest)

    assert_installed(result, store)
    assert not result.cache_hit
    assert result.bytes_downloaded == len(data)
    marker = json.loads((result.path / ".jointserve-artifact.json").read_text())
    assert marker["sha256"] == digest and marker["url"] == url
    assert entries(store) == {"m", "m/v1"}


def test_second_fetch_is_cache_hit_without_network(store, publish, server):
    url, digest = publish("a.tar.gz", good_tar())
    store.fetch("m", "v1", url, digest)
    server.stop()  # any network access would now fail with a connect error

    again = store.fetch("m", "v1", url, digest.upper())

    assert again.cache_hit and again.bytes_downloaded == 0
    assert_installed(again, store)
    assert server.request_count("a.tar.gz") == 1


def test_is_cached_requires_matching_sha256(store, publish):
    url, digest = publish("a.tar.gz", good_tar())
    assert not store.is_cached("m", "v1", digest)

    store.fetch("m", "v1", url, digest)

    assert store.is_cached("m", "v1", digest)
    assert store.is_cached("m", "v1", digest.upper())
    assert not store.is_cached("m", "v1", sha(b"other"))
    assert not store.is_cached("m", "v2", digest)


@pytest.mark.parametrize(
    "data, served_as",
    [
        (good_tar(), "artifact.zip"),
        (good_tar(gz=False), "artifact.tar.gz"),
        (good_zip(), "artifact.tgz"),
    ],
    ids=["tar.gz", "tar", "zip"],
)
def test_format_is_sniffed_from_content_not_extension(store, publish, data, served_as):
    url, digest = publish(served_as, data)
    assert_installed(store.fetch("m", "v1", url, digest), store)


def test_symlink_inside_the_archive_is_kept(store, publish):
    data = tar_bytes([file_info("model.onnx", MODEL), link_info("sub/latest", "../model.onnx")])
    url, digest = publish("a.tar.gz", data)

    path = store.fetch("m", "v1", url, digest).path

    assert (path / "sub" / "latest").read_bytes() == MODEL


def test_file_url(store, tmp_path):
    archive = tmp_path / "local.tar.gz"
    archive.write_bytes(good_tar())

    result = store.fetch("m", "v1", archive.as_uri(), sha(archive.read_bytes()))

    assert_installed(result, store)
    assert store.fetch("m", "v1", archive.as_uri(), sha(archive.read_bytes())).cache_hit


def test_data_url(store):
    """A small artifact inline (the operator's trained routers): checked like any other."""
    data = good_tar()
    url = data_url(data)
    wrong = fetch_error(store, url, "0" * 64)
    assert wrong.reason == "Sha256Mismatch"
    assert "data:application/gzip;base64,... (" in str(wrong) and url not in str(wrong)
    for bad, words in (("data:application/gzip,abc", "must be base64"),
                       ("data:application/gzip;base64,@@@", "is not base64")):
        err = fetch_error(store, bad, sha(b""))
        assert err.reason == "DownloadFailed" and words in str(err)
    assert_installed(store.fetch("m", "v1", url, sha(data)), store)


def test_missing_file_url_is_download_failed(store, tmp_path):
    url = (tmp_path / "nope.tar.gz").as_uri()
    err = fetch_error(store, url, sha(b""))
    assert err.reason == "DownloadFailed" and url in str(err)
    assert entries(store) == {"m"}


def test_unsupported_scheme_is_download_failed(store):
    err = fetch_error(store, "ftp://example.com/a.tar.gz", sha(b""))
    assert err.reason == "DownloadFailed"
    assert "'ftp'" in str(err) and "ftp://example.com/a.tar.gz" in str(err)


def test_progress_reports_increasing_counts_and_final_total(store, publish):
    data = tar_bytes([file_info("model.onnx", MODEL), file_info("sub/config.json", CONFIG),
                      file_info("weights.bin", os.urandom(700_000))])
    url, digest = publish("a.tar.gz", data)
    calls: list[tuple[int, int | None]] = []

    store.fetch("m", "v1", url, digest, progress=lambda done, total: calls.append((done, total)))

    counts = [done for done, _ in calls]
    assert len(calls) > 1 and counts == sorted(set(counts))
    assert calls[-1] == (len(data), len(data))
    assert {total for _, total in calls} == {len(data)}


# --- replacement, leftovers, locking ---------------------------------------------------------


def test_changed_sha256_refetches_and_swaps(store, publish):
    old_url, old_sha = publish("old.tar.gz", tar_bytes([file_info("model.onnx", b"old")]))
    store.fetch("m", "v1", old_url, old_sha)
    new_url, new_sha = publish("new.tar.gz", good_tar())

    result = store.fetch("m", "v1", new_url, new_sha)

    assert not result.cache_hit
    assert_installed(result, store)
    assert store.is_cached("m", "v1", new_sha) and not store.is_cached("m", "v1", old_sha)
    assert entries(store) == {"m", "m/v1"}  # the old content was deleted, not left aside


def test_failed_replacement_keeps_previous_content(store, publish):
    url, digest = publish("a.tar.gz", good_tar())
    store.fetch("m", "v1", url, digest)
    bad_url, _ = publish("b.tar.gz", tar_bytes([file_info("model.onnx", b"new")]))

    err = fetch_error(store, bad_url, sha(b"something else"))

    assert err.reason == "Sha256Mismatch"
    assert store.is_cached("m", "v1", digest)
    assert_installed(store.fetch("m", "v1", url, digest), store)
    assert entries(store) == {"m", "m/v1"}


def test_leftovers_of_a_crashed_fetch_are_swept(store, publish):
    model_dir = store.root / "m"
    (model_dir / ".tmp-v1-deadbeef").mkdir(parents=True)
    (model_dir / ".download-v1-0123abcd").write_bytes(b"partial")
    (model_dir / ".tmp-v10-deadbeef").mkdir()  # another version's: not ours to touch
    url, digest = publish("a.tar.gz", good_tar())

    store.fetch("m", "v1", url, digest)

    assert entries(store) == {"m", "m/v1", "m/.tmp-v10-deadbeef"}


_CHILD = textwrap.dedent(
    """
    import json, sys, time
    from pathlib import Path
    from jointserve.store import ArtifactStore

    root, url, digest, ready, go = sys.argv[1:]
    Path(ready).touch()
    while not Path(go).exists():
        time.sleep(0.005)
    result = ArtifactStore(Path(root)).fetch("m", "v1", url, digest)
    print(json.dumps({"cache_hit": result.cache_hit, "path": str(result.path)}))
    """
)


def test_two_processes_fetching_one_version(store, publish, server, tmp_path):
    url, digest = publish("a.tar.gz", good_tar())
    server.slow("a.tar.gz", 0.5)  # the first download holds the lock while the second arrives
    go = tmp_path / "go"
    ready = [tmp_path / f"ready{i}" for i in range(2)]
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _CHILD, str(store.root), url, digest, str(r), str(go)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
        )
        for r in ready
    ]
    try:
        while not all(r.exists() for r in ready):  # both imported and waiting: start together
            assert all(p.poll() is None for p in procs), [p.communicate() for p in procs]
            time.sleep(0.01)
        go.touch()
        outputs = [p.communicate(timeout=60) for p in procs]
    finally:
        for p in procs:
            p.kill()

    assert [p.returncode for p in procs] == [0, 0], outputs
    results = [json.loads(out) for out, _ in outputs]
    assert sorted(r["cache_hit"] for r in results) == [False, True]
    assert server.request_count("a.tar.gz") == 1
    assert_installed(FetchResult(store.path_for("m", "v1"), True, 0), store)
    assert entries(store) == {"m", "m/v1"}


# --- download failures -----------------------------------------------------------------------


def test_sha256_mismatch_unpacks_nothing(store, publish):
    url, digest = publish("a.tar.gz", good_tar())
    wrong = sha(b"expected something else")

    err = fetch_error(store, url, wrong)

    assert err.reason == "Sha256Mismatch" and err.url == url
    assert str(err) == f"sha256 mismatch for {url}: expected {wrong}, got {digest}"
    assert entries(store) == {"m"}


def test_5xx_is_retried_until_success(store, publish, server):
    url, digest = publish("a.tar.gz", good_tar())
    server.fail("a.tar.gz", status=503, times=2)

    assert_installed(store.fetch("m", "v1", url, digest), store)
    assert server.request_count("a.tar.gz") == 3


def test_5xx_after_retries_is_http_error(store, publish, server):
    url, digest = publish("a.tar.gz", good_tar())
    server.fail("a.tar.gz", status=500, times=10)

    err = fetch_error(store, url, digest)

    assert err.reason == "HTTPError" and "500" in str(err) and url in str(err)
    assert server.request_count("a.tar.gz") == 3  # 1 + retries=2
    assert entries(store) == {"m"}


def test_4xx_is_not_retried(store, publish, server):
    url, digest = publish("a.tar.gz", good_tar())
    server.fail("a.tar.gz", status=403, times=1)  # a retry would succeed, so none must happen

    err = fetch_error(store, url, digest)

    assert err.reason == "HTTPError" and "403" in str(err)
    assert server.request_count("a.tar.gz") == 1
    assert entries(store) == {"m"}


def test_truncated_body_is_retried_then_download_failed(store, publish, server):
    url, digest = publish("a.tar.gz", good_tar())
    server.truncate("a.tar.gz", 100)

    err = fetch_error(store, url, digest)

    assert err.reason == "DownloadFailed" and url in str(err)
    assert server.request_count("a.tar.gz") == 3
    assert entries(store) == {"m"}


def test_connection_refused_is_download_failed(store, publish, server):
    url, digest = publish("a.tar.gz", good_tar())
    server.stop()

    err = fetch_error(store, url, digest)

    assert err.reason == "DownloadFailed" and "ConnectError" in str(err)
    assert entries(store) == {"m"}


def test_timeout_is_retried_then_download_failed(publish, server, tmp_path):
    store = ArtifactStore(tmp_path / "store", timeout_s=0.2, retries=1, backoff_s=0.01)
    url, digest = publish("a.tar.gz", good_tar())
    server.slow("a.tar.gz", 3.0)

    err = fetch_error(store, url, digest)

    assert err.reason == "DownloadFailed" and "Timeout" in str(err)
    assert server.request_count("a.tar.gz") == 2
    assert entries(store) == {"m"}


def test_password_in_url_is_not_repeated(store, server):
    url = server.url("missing.tar.gz").replace("http://", "http://user:hunter2@")

    err = fetch_error(store, url, sha(b""))

    assert err.reason == "HTTPError" and "404" in str(err)
    assert "hunter2" not in str(err) and "hunter2" not in err.url
    assert "user:***@127.0.0.1" in str(err)


def test_artifact_error_survives_pickling():
    err = ArtifactError("HTTPError", "http://h/a", "HTTP 404 Not Found for http://h/a")
    copy = pickle.loads(pickle.dumps(err))
    assert (copy.reason, copy.url, str(copy)) == (err.reason, err.url, str(err))


# --- unsafe, oversized, corrupt archives -----------------------------------------------------


def _device() -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo("dev/null")
    info.type, info.devmajor, info.devminor = tarfile.CHRTYPE, 1, 3
    return info, None


@pytest.mark.parametrize(
    "entry, bad_name",
    [
        (file_info("/abs/model.onnx", MODEL), "/abs/model.onnx"),
        (file_info("../evil", MODEL), "../evil"),
        (file_info("sub/../../evil", MODEL), "sub/../../evil"),
        (link_info("etc", "/etc"), "etc"),
        (link_info("sub/up", "../../x"), "sub/up"),
        (link_info("hard", "../outside", tarfile.LNKTYPE), "hard"),
        (_device(), "dev/null"),
    ],
    ids=["absolute", "dotdot", "nested-dotdot", "symlink-abs", "symlink-up", "hardlink", "device"],
)
def test_unsafe_tar_is_refused(store, publish, entry, bad_name):
    url, digest = publish("a.tar.gz", tar_bytes([file_info("model.onnx", MODEL), entry]))

    err = fetch_error(store, url, digest)

    assert err.reason == "UnsafeArchive"
    assert repr(bad_name) in str(err) and url in str(err)
    assert entries(store) == {"m"}
    assert not (store.root.parent / "evil").exists()


def test_link_chain_escaping_via_earlier_symlink_is_refused(store, publish):
    # Each member passes a per-name check; only the data filter, resolving the link already
    # on disk, sees that "a/b/c" -> ".." lands outside.
    data = tar_bytes([link_info("a/b", "."), link_info("a/b/c", "../..")])
    url, digest = publish("a.tar.gz", data)

    err = fetch_error(store, url, digest)

    assert err.reason == "UnsafeArchive"
    assert entries(store) == {"m"}


def _zip_symlink() -> tuple[zipfile.ZipInfo, bytes]:
    info = zipfile.ZipInfo("etc")
    info.create_system = 3
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    return info, b"/etc"


@pytest.mark.parametrize(
    "entry, bad_name",
    [
        (("/abs/model.onnx", MODEL), "/abs/model.onnx"),
        (("../evil", MODEL), "../evil"),
        (("..\\evil", MODEL), "..\\evil"),
        (("C:\\evil.txt", MODEL), "C:\\evil.txt"),
        (("C:/evil.txt", MODEL), "C:/evil.txt"),
        (_zip_symlink(), "etc"),
    ],
    ids=["absolute", "dotdot", "backslash-dotdot", "drive-backslash", "drive-slash", "symlink"],
)
def test_unsafe_zip_is_refused(store, publish, entry, bad_name):
    url, digest = publish("a.zip", zip_bytes([("model.onnx", MODEL), entry]))

    err = fetch_error(store, url, digest)

    assert err.reason == "UnsafeArchive" and repr(bad_name) in str(err)
    assert entries(store) == {"m"}


@pytest.mark.parametrize(
    "data",
    [
        tar_bytes([file_info("zeros.bin", bytes(CAP + 1))]),
        zip_bytes([("zeros.bin", bytes(CAP + 1))]),
        tar_bytes([file_info(f"f{i}", b"") for i in range(51)], gz=False),
        zip_bytes([(f"f{i}", b"") for i in range(51)]),
    ],
    ids=["tar-size", "zip-size", "tar-members", "zip-members"],
)
def test_archive_bomb_is_refused(store, publish, data):
    url, digest = publish("bomb", data)

    err = fetch_error(store, url, digest)

    assert err.reason == "ArchiveTooLarge" and url in str(err)
    assert entries(store) == {"m"}


def test_zip_size_cap_holds_while_writing(store, publish, monkeypatch):
    # Declared sizes are only claims; with the up-front check out of the way, the running
    # count of bytes actually written must still stop the bomb.
    monkeypatch.setattr(_unpack, "check_zip_members", lambda infos, url, limits: None)
    url, digest = publish("bomb.zip", zip_bytes([("zeros.bin", bytes(3 * CAP))]))

    err = fetch_error(store, url, digest)

    assert err.reason == "ArchiveTooLarge"
    assert entries(store) == {"m"}


def _lie_about_size(data: bytes, claimed: int) -> bytes:
    """Rewrite the uncompressed size in a one-member zip's central directory."""
    at = data.index(b"PK\x01\x02") + 24
    return data[:at] + struct.pack("<I", claimed) + data[at + 4 :]


def test_zip_lying_about_sizes_is_refused(store, publish):
    liar = _lie_about_size(zip_bytes([("zeros.bin", bytes(3 * CAP))]), claimed=10)
    url, digest = publish("liar.zip", liar)

    err = fetch_error(store, url, digest)

    assert err.reason in ("ArchiveCorrupt", "ArchiveTooLarge")
    assert entries(store) == {"m"}


@pytest.mark.parametrize(
    "data",
    [
        b"\x1f\x8b\x08\x00" + b"not deflate data" * 20,
        good_tar()[:-40],
        tar_bytes([file_info("w.bin", os.urandom(20_000))], gz=False)[:10_000],
        b"PK\x03\x04" + b"not a zip" * 20,
        # Stored, not deflated, so a member's bytes can be changed in place: its CRC fails.
        zip_bytes([("model.onnx", MODEL)], zipfile.ZIP_STORED).replace(b"not", b"NOT", 1),
    ],
    ids=["bad-gzip", "truncated-tar.gz", "truncated-tar", "bad-zip", "zip-crc"],
)
def test_corrupt_archive(store, publish, data):
    url, digest = publish("a", data)

    err = fetch_error(store, url, digest)

    assert err.reason == "ArchiveCorrupt" and url in str(err)
    assert entries(store) == {"m"}


@pytest.mark.parametrize(
    "data, named",
    [(b"just some text\n" * 50, "unrecognised"), (b"\xfd7zXZ\x00" + bytes(100), "xz")],
    ids=["text", "xz"],
)
def test_unsupported_archive(store, publish, data, named):
    url, digest = publish("a.tar.gz", data)

    err = fetch_error(store, url, digest)

    assert err.reason == "UnsupportedArchive" and named in str(err)
    assert entries(store) == {"m"}


# --- argument validation ---------------------------------------------------------------------


@pytest.mark.parametrize("bad", ["", ".", "..", "a/b", "../x", "a\\b", ".hidden"])
@pytest.mark.parametrize("arg", ["model", "version"])
def test_model_and_version_must_be_single_path_components(store, arg, bad):
    names = {"model": "m", "version": "v1", arg: bad}

    with pytest.raises(ValueError, match=arg):
        store.fetch(names["model"], names["version"], "http://127.0.0.1:1/a", sha(b""))
    with pytest.raises(ValueError, match=arg):
        store.path_for(names["model"], names["version"])
    assert not store.root.exists()


def test_sha256_must_be_hex(store):
    with pytest.raises(ValueError, match="sha256"):
        store.fetch("m", "v1", "http://127.0.0.1:1/a", "abc")
