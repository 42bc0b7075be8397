"""ArtifactStore.fetch_file: a file kept as downloaded (a Dataset's data), verified by sha256
before anything is kept, at <root>/.datasets/<name>/<sha256>/<file name>.

file:// URLs for most cases; one loopback HTTP server (tests._fileserver) where the lock and
the request count matter."""

from __future__ import annotations

import hashlib
import os
import threading
from pathlib import Path

import pytest

from jointserve.store import ArtifactError, ArtifactStore, Limit
from tests._fileserver import FileServer

DATA = b"path,label\na.jpg,cat\nb.jpg,dog\n"


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def store(tmp_path: Path) -> ArtifactStore:
    return ArtifactStore(tmp_path / "store", timeout_s=5.0, retries=1, backoff_s=0.01)


def publish(tmp_path: Path, name: str, data: bytes = DATA) -> str:
    path = tmp_path / "published" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path.as_uri()


def kept(store: ArtifactStore) -> list[str]:
    """Every path under the store, lock files aside, relative to its root."""
    return sorted(p.relative_to(store.root).as_posix() for p in store.root.rglob("*")
                  if not p.name.endswith(".lock"))


def test_file_is_kept_as_downloaded_under_its_sha256(store: ArtifactStore, tmp_path: Path) -> None:
    url = publish(tmp_path, "train.csv")

    result = store.fetch_file("default.train", url, sha(DATA))

    assert result.path == store.root / ".datasets" / "default.train" / sha(DATA) / "train.csv"
    assert result.path.read_bytes() == DATA
    assert (result.cache_hit, result.bytes_downloaded) == (False, len(DATA))
    assert store.is_file_cached("default.train", url, sha(DATA))
    # The file and its marker, nothing half-done beside them.
    top = f".datasets/default.train/{sha(DATA)}"
    assert kept(store) == [".datasets", ".datasets/default.train", top,
                           f"{top}/.jointserve-artifact.json", f"{top}/train.csv"]


def test_second_fetch_is_a_cache_hit(store: ArtifactStore, tmp_path: Path) -> None:
    url = publish(tmp_path, "train.csv")
    first = store.fetch_file("ds", url, sha(DATA))
    (tmp_path / "published" / "train.csv").unlink()  # a hit must not read the URL at all

    second = store.fetch_file("ds", url, sha(DATA.upper().lower()))

    assert (second.path, second.cache_hit, second.bytes_downloaded) == (first.path, True, 0)


def test_sha256_mismatch_keeps_nothing(store: ArtifactStore, tmp_path: Path) -> None:
    url = publish(tmp_path, "train.csv")
    wrong = sha(b"something else")

    with pytest.raises(ArtifactError) as info:
        store.fetch_file("ds", url, wrong)

    assert info.value.reason == "Sha256Mismatch"
    assert str(info.value) == f"sha256 mismatch for {url}: expected {wrong}, got {sha(DATA)}"
    assert kept(store) == [".datasets", ".datasets/ds"]  # no file, no temp file, no sha dir
    assert not store.is_file_cached("ds", url, wrong)


def test_missing_file_is_download_failed(store: ArtifactStore, tmp_path: Path) -> None:
    with pytest.raises(ArtifactError) as info:
        store.fetch_file("ds", (tmp_path / "nowhere.csv").as_uri(), sha(DATA))
    assert info.value.reason == "DownloadFailed"
    assert kept(store) == [".datasets", ".datasets/ds"]


def test_two_names_keep_two_copies(store: ArtifactStore, tmp_path: Path) -> None:
    url = publish(tmp_path, "train.csv")

    a = store.fetch_file("default.a", url, sha(DATA))
    b = store.fetch_file("default.b", url, sha(DATA))

    assert a.path != b.path and not b.cache_hit
    store.remove_files("default.a")
    assert not a.path.exists() and b.path.read_bytes() == DATA
    assert not (store.root / ".datasets" / "default.a").exists()


def test_datasets_never_meet_a_model_of_any_name(store: ArtifactStore, tmp_path: Path) -> None:
    # A model may be called "datasets"; the tree of files starts with a '.', which no model may.
    url = publish(tmp_path, "train.csv")
    store.fetch_file("datasets", url, sha(DATA))
    assert not store.path_for("datasets", "v1").exists()
    with pytest.raises(ValueError, match="must not start with '.'"):
        store.path_for(".datasets", "v1")


def test_a_new_file_name_for_the_same_bytes_is_fetched_again(store: ArtifactStore,
                                                            tmp_path: Path) -> None:
    # Error messages name the file, so the file is kept under the name the URL gives now.
    store.fetch_file("ds", publish(tmp_path, "old.csv"), sha(DATA))
    result = store.fetch_file("ds", publish(tmp_path, "new.csv"), sha(DATA))
    assert not result.cache_hit and result.path.name == "new.csv"
    assert kept(store)[-1:] == [f".datasets/ds/{sha(DATA)}/new.csv"]
    assert not any(".old-" in path or ".tmp-" in path for path in kept(store))


@pytest.mark.parametrize(
    ("url_path", "name"),
    [
        pytest.param("/d/train.csv", "train.csv", id="plain"),
        pytest.param("/d/my%20data%3B.csv", "my_data_.csv", id="quoted"),
        pytest.param("/d/..", "data", id="dot-dot"),
        pytest.param("/d/.hidden.csv", "hidden.csv", id="hidden"),
        pytest.param("/d/", "data", id="no-name"),
        pytest.param("/d/..%2F..%2Fetc%2Fpasswd", "passwd", id="encoded-slashes"),
        pytest.param("/d/" + "x" * 300 + ".csv", "x" * 200, id="long"),
    ],
)
def test_file_names_are_sanitised(store: ArtifactStore, url_path: str, name: str) -> None:
    path = store.file_path("ds", f"https://files.example{url_path}?token=1", sha(DATA))
    assert path.name == name
    assert path.parent == store.root / ".datasets" / "ds" / sha(DATA)


def test_concurrent_fetches_download_once(store: ArtifactStore, tmp_path: Path) -> None:
    served = tmp_path / "served"
    served.mkdir()
    (served / "train.csv").write_bytes(DATA)
    with FileServer(served) as server:
        server.slow("train.csv", 0.3)  # the first download holds the lock while others wait
        results = []
        threads = [threading.Thread(target=lambda: results.append(
            store.fetch_file("ds", server.url("train.csv"), sha(DATA)))) for _ in range(3)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=30)
        assert server.request_count("train.csv") == 1
    assert sorted(r.cache_hit for r in results) == [False, True, True]
    assert len(kept(store)) == 5  # .datasets, ds, the sha dir, the file, the marker


# -- a source that changes (follow_file) and the size cap ------------------------------


def test_follow_file_keeps_each_version_under_its_sha256(store: ArtifactStore,
                                                         tmp_path: Path) -> None:
    served = tmp_path / "served"
    served.mkdir()
    (served / "train.csv").write_bytes(DATA)
    with FileServer(served) as server:
        url = server.url("train.csv")
        first = store.follow_file("ds", url)
        assert first is not None and (first.sha256, first.cache_hit) == (sha(DATA), False)
        assert first.path.read_bytes() == DATA and first.source.etag

        # The server says "not modified": nothing is downloaded, nothing is returned.
        assert store.follow_file("ds", url, unless=first.source) is None
        assert server.not_modified_count("train.csv") == 1

        newer = DATA + b"c.jpg,bird\n"
        (served / "train.csv").write_bytes(newer)
        second = store.follow_file("ds", url, unless=first.source)
        assert second is not None and second.sha256 == sha(newer)
        assert second.path == store.file_path("ds", url, sha(newer))
        assert second.path.read_bytes() == newer
    assert first.path.read_bytes() == DATA  # the version before stays until pruned

    store.prune_files("ds", keep={sha(newer)})
    assert not first.path.parent.exists() and second.path.is_file()


def test_follow_file_without_validators_compares_the_bytes(store: ArtifactStore,
                                                           tmp_path: Path) -> None:
    url = publish(tmp_path, "train.csv")
    first = store.follow_file("ds", url)
    assert first is not None and first.source.etag.startswith("file:")
    assert store.follow_file("ds", url, unless=first.source) is None  # same mtime and size
    # Rewritten: another mtime, so read again; the same bytes are a cache hit.
    path = tmp_path / "published" / "train.csv"
    path.write_bytes(DATA)
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    again = store.follow_file("ds", url, unless=first.source)
    assert again is not None and (again.sha256, again.cache_hit) == (sha(DATA), True)
    assert [p for p in kept(store) if "download" in p] == []


def test_a_file_over_the_cap_is_refused_before_it_is_read(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path / "store", max_download_bytes=len(DATA) - 1, retries=0)
    url = publish(tmp_path, "train.csv")
    with pytest.raises(ArtifactError) as info:
        store.fetch_file("ds", url, sha(DATA))
    assert info.value.reason == "DownloadTooLarge"
    assert str(info.value) == (f"{url} is too large: it has {len(DATA)} bytes, over the "
                               f"store's download cap of {len(DATA) - 1} bytes")
    assert [p for p in kept(store) if p.count("/") > 1] == []  # nothing kept


def test_an_http_download_over_the_cap_is_stopped(store: ArtifactStore, tmp_path: Path) -> None:
    served = tmp_path / "served"
    served.mkdir()
    (served / "sized.csv").write_bytes(DATA)
    (served / "unsized.csv").write_bytes(DATA)
    limit = Limit(10, "spec.maxBytes")
    with FileServer(served) as server:
        server.unsized("unsized.csv")
        with pytest.raises(ArtifactError) as sized:
            store.fetch_file("ds", server.url("sized.csv"), sha(DATA), limit=limit)
        with pytest.raises(ArtifactError) as unsized:
            store.follow_file("ds", server.url("unsized.csv"), limit=limit)
    assert sized.value.reason == unsized.value.reason == "DownloadTooLarge"
    assert f"its Content-Length says {len(DATA)} bytes, over spec.maxBytes of 10" in str(sized.value)
    # Without a length, the download stops at the first chunk past the cap.
    assert "more than" in str(unsized.value) and "over spec.maxBytes of 10" in str(unsized.value)
    assert [p for p in kept(store) if p.count("/") > 1] == []
