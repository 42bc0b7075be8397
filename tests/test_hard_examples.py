"""Tests of the hard example store and its background writer, on real files under tmp_path."""

from __future__ import annotations

import shutil
import threading
import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from jointserve.gateway._hard_examples import (
    HardExample,
    HardExampleStore,
    HardExampleWriter,
    load_example,
)

BIG = 1 << 30


def example(
    i: int = 0,
    *,
    cloud: bool = True,
    inputs: dict[str, np.ndarray] | None = None,
) -> HardExample:
    rng = np.random.default_rng(i)
    return HardExample(
        service="digits",
        inputs=inputs if inputs is not None else {"input": rng.random((1, 64), dtype=np.float32)},
        edge_outputs={
            "label": np.array([i % 10], dtype=np.int64),
            "probabilities": rng.random((1, 10), dtype=np.float32),
        },
        cloud_outputs={"label": np.array([(i + 1) % 10], dtype=np.int64)} if cloud else None,
        score=0.25 + i,
        tier="cloud" if cloud else "edge",
        fallback_reason=None if cloud else "cloud_timeout",
        timestamp=1_700_000_000.5 + i,
    )


def assert_same(got: HardExample, want: HardExample) -> None:
    assert (got.service, got.score, got.tier, got.fallback_reason, got.timestamp) == (
        want.service, want.score, want.tier, want.fallback_reason, want.timestamp
    )
    for field in ("inputs", "edge_outputs", "cloud_outputs"):
        got_tensors, want_tensors = getattr(got, field), getattr(want, field)
        if want_tensors is None:
            assert got_tensors is None
            continue
        assert list(got_tensors) == list(want_tensors)
        for name, array in want_tensors.items():
            assert got_tensors[name].dtype == array.dtype, (field, name)
            assert got_tensors[name].shape == array.shape, (field, name)
            assert got_tensors[name].tolist() == array.tolist(), (field, name)


def example_size(tmp_path: Path) -> int:
    """The file size of one `example()`; every example(i) has the same size."""
    store = HardExampleStore(tmp_path / "measure", max_count=10, max_bytes=BIG)
    return store.save(example()).stat().st_size


def objects(items: list, shape: tuple[int, ...]) -> np.ndarray:
    out = np.empty(len(items), dtype=object)
    out[:] = items
    return out.reshape(shape)


# --- round trip ------------------------------------------------------------------------------


def test_round_trip_numeric_with_cloud(tmp_path: Path) -> None:
    store = HardExampleStore(tmp_path, max_count=10, max_bytes=BIG)
    want = example(3)
    path = store.save(want)
    assert path.parent == tmp_path and path.suffix == ".npz"
    assert_same(load_example(path), want)


def test_round_trip_without_cloud_outputs(tmp_path: Path) -> None:
    store = HardExampleStore(tmp_path, max_count=10, max_bytes=BIG)
    want = example(1, cloud=False)
    got = load_example(store.save(want))
    assert got.cloud_outputs is None
    assert got.fallback_reason == "cloud_timeout"
    assert_same(got, want)


def test_empty_cloud_outputs_differ_from_none(tmp_path: Path) -> None:
    store = HardExampleStore(tmp_path, max_count=10, max_bytes=BIG)
    want = HardExample("s", {}, {}, {}, 0.0, "cloud", None, 1.0)
    assert load_example(store.save(want)).cloud_outputs == {}


@pytest.mark.parametrize(
    "inputs",
    [
        pytest.param(
            {"bytes": objects([b"\x00\xffraw", b"", b"png\x00\x00"], (3,))}, id="bytes-1d"
        ),
        pytest.param({"text": objects(["héllo", "", "a", "wörld"], (2, 2))}, id="str-2d"),
        pytest.param({"scalar": objects([b"one"], ())}, id="bytes-0d"),
        pytest.param({"none": objects([], (0, 3))}, id="bytes-empty"),
        pytest.param(
            {
                "pixels": np.arange(12, dtype=np.int64).reshape(3, 4),
                "mask": np.array([True, False]),
                "image": objects([b"a", b"b"], (1, 2)),
            },
            id="mixed",
        ),
    ],
)
def test_round_trip_bytes_inputs(tmp_path: Path, inputs: dict[str, np.ndarray]) -> None:
    store = HardExampleStore(tmp_path, max_count=10, max_bytes=BIG)
    want = example(0, inputs=inputs)
    got = load_example(store.save(want))
    assert_same(got, want)
    for name, array in inputs.items():
        if array.dtype == object:
            assert [type(x) for x in got.inputs[name].ravel()] == [type(x) for x in array.ravel()]


def test_saved_file_needs_no_pickle(tmp_path: Path) -> None:
    store = HardExampleStore(tmp_path, max_count=10, max_bytes=BIG)
    path = store.save(example(0, inputs={"b": objects([b"x", b"yz"], (2,))}))
    with zipfile.ZipFile(path) as zf:
        names = sorted(zf.namelist())
    assert names == sorted(
        ["input.b.0.npy", "input.b.1.npy", "edge.label.npy", "edge.probabilities.npy",
         "cloud.label.npy", "meta.npy"]
    )
    with np.load(path, allow_pickle=False) as npz:
        for name in npz.files:
            npz[name]  # would raise ValueError if any array were pickled


def test_mixed_object_tensor_is_refused(tmp_path: Path) -> None:
    store = HardExampleStore(tmp_path, max_count=10, max_bytes=BIG)
    with pytest.raises(ValueError, match="only bytes or only str"):
        store.save(example(0, inputs={"x": objects([b"a", "b"], (2,))}))
    assert store.count == 0
    assert list(tmp_path.iterdir()) == []


def test_colliding_tensor_names_are_refused(tmp_path: Path) -> None:
    store = HardExampleStore(tmp_path, max_count=10, max_bytes=BIG)
    inputs = {"x": objects([b"a"], (1,)), "x.0": np.zeros(1)}
    with pytest.raises(ValueError, match="'input.x.0' is used twice"):
        store.save(example(0, inputs=inputs))


# --- bounds ----------------------------------------------------------------------------------


def test_count_bound_drops_oldest(tmp_path: Path) -> None:
    store = HardExampleStore(tmp_path, max_count=3, max_bytes=BIG)
    paths = [store.save(example(i)) for i in range(5)]
    assert store.list() == paths[2:]
    assert sorted(p.name for p in tmp_path.iterdir()) == [p.name for p in paths[2:]]
    assert store.count == 3
    assert [load_example(p).score for p in store.list()] == [2.25, 3.25, 4.25]


def test_two_writers_on_one_directory_never_evict_each_other(tmp_path: Path) -> None:
    # Two gateway replicas of one service on one node: same saveHardExamples.directory.
    first = HardExampleStore.claim(tmp_path, max_count=3, max_bytes=BIG)
    second = HardExampleStore.claim(tmp_path, max_count=3, max_bytes=BIG)
    assert first.root != second.root and first.root.parent == second.root.parent == tmp_path
    kept_first = [first.save(example(i)) for i in range(5)][2:]
    kept_second = [second.save(example(10 + i)) for i in range(5)][2:]
    kept_first += [first.save(example(20))]
    kept_first = kept_first[1:]
    # Interleaved saves past the bound: each drops only its own oldest.
    assert first.list() == kept_first and second.list() == kept_second
    assert all(p.exists() for p in kept_first + kept_second)
    assert [load_example(p).score for p in second.list()] == [12.25, 13.25, 14.25]
    first.close()
    second.close()


def test_a_restarted_writer_takes_back_its_directory_and_bounds(tmp_path: Path) -> None:
    first = HardExampleStore.claim(tmp_path, max_count=3, max_bytes=BIG)
    held = HardExampleStore.claim(tmp_path, max_count=3, max_bytes=BIG)
    saved = [first.save(example(i)) for i in range(3)]
    first.close()  # the replica ended (a dead process releases its lock the same way)
    again = HardExampleStore.claim(tmp_path, max_count=3, max_bytes=BIG)
    assert again.root == first.root and again.list() == saved
    again.save(example(3))
    assert again.count == 3 and not saved[0].exists()
    assert held.root != again.root
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_dir()) == ["writer-0", "writer-1"]
    held.close()
    again.close()


def test_writer_close_releases_the_claim(tmp_path: Path) -> None:
    writer = HardExampleWriter(HardExampleStore.claim(tmp_path, max_count=3, max_bytes=BIG))
    writer.submit(example(1))
    writer.close()
    assert HardExampleStore.claim(tmp_path, max_count=3, max_bytes=BIG).root == tmp_path / "writer-0"


def test_byte_bound_drops_oldest(tmp_path: Path) -> None:
    size = example_size(tmp_path)
    root = tmp_path / "store"
    store = HardExampleStore(root, max_count=100, max_bytes=int(size * 2.5))
    paths = [store.save(example(i)) for i in range(4)]
    assert store.list() == paths[2:]
    assert store.total_bytes == 2 * size
    assert sum(p.stat().st_size for p in root.iterdir()) == store.total_bytes


def test_example_larger_than_max_bytes_is_not_kept(tmp_path: Path) -> None:
    size = example_size(tmp_path)
    root = tmp_path / "store"
    store = HardExampleStore(root, max_count=100, max_bytes=size * 2)
    kept = [store.save(example(i)) for i in range(2)]
    huge = example(9, inputs={"input": np.zeros((1, 64 * 1024), dtype=np.float32)})
    with pytest.raises(ValueError, match="more than the store's max_bytes"):
        store.save(huge)
    assert store.list() == kept  # the others survive
    assert sorted(root.iterdir()) == kept  # and no temp file is left


def test_file_names_sort_oldest_first(tmp_path: Path) -> None:
    store = HardExampleStore(tmp_path, max_count=100, max_bytes=BIG)
    paths = [store.save(example(i)) for i in range(20)]
    assert sorted(paths, key=lambda p: p.name) == paths == store.list()


def test_limits_hold_after_reopening(tmp_path: Path) -> None:
    size = example_size(tmp_path)
    root = tmp_path / "store"
    first = HardExampleStore(root, max_count=3, max_bytes=BIG)
    paths = [first.save(example(i)) for i in range(3)]

    again = HardExampleStore(root, max_count=3, max_bytes=BIG)
    assert again.list() == paths
    assert (again.count, again.total_bytes) == (3, 3 * size)
    newest = again.save(example(3))
    assert again.list() == paths[1:] + [newest]  # sorted after the files of the first run

    smaller = HardExampleStore(root, max_count=100, max_bytes=size)  # limits lowered
    assert smaller.list() == [newest]
    assert sorted(root.iterdir()) == [newest]


def test_leftover_tmp_files_are_removed_and_not_counted(tmp_path: Path) -> None:
    first = HardExampleStore(tmp_path, max_count=10, max_bytes=BIG)
    saved = first.save(example(0))
    (tmp_path / ".tmp-deadbeef.npz").write_bytes(b"half a zip")
    (tmp_path / "notes.txt").write_text("not an example\n")

    store = HardExampleStore(tmp_path, max_count=10, max_bytes=BIG)
    assert not (tmp_path / ".tmp-deadbeef.npz").exists()
    assert (tmp_path / "notes.txt").exists()  # not ours: neither counted nor touched
    assert store.list() == [saved]
    assert store.total_bytes == saved.stat().st_size


def test_creates_root(tmp_path: Path) -> None:
    store = HardExampleStore(tmp_path / "a" / "b", max_count=1, max_bytes=1)
    assert (tmp_path / "a" / "b").is_dir()
    assert store.count == 0


@pytest.mark.parametrize(
    ("max_count", "max_bytes"),
    [pytest.param(0, 10, id="count-zero"), pytest.param(10, 0, id="bytes-zero")],
)
def test_rejects_bad_limits(tmp_path: Path, max_count: int, max_bytes: int) -> None:
    with pytest.raises(ValueError, match="must be >= 1"):
        HardExampleStore(tmp_path, max_count=max_count, max_bytes=max_bytes)


# --- writer ----------------------------------------------------------------------------------


class BlockingStore(HardExampleStore):
    """A real store whose saves wait for `release`; `started` is set when one is waiting."""

    def __init__(self, root: Path) -> None:
        super().__init__(root, max_count=100, max_bytes=BIG)
        self.started = threading.Event()
        self.release = threading.Event()

    def save(self, example: HardExample) -> Path:
        self.started.set()
        assert self.release.wait(30), "test never released the store"
        return super().save(example)


@pytest.fixture
def blocking(tmp_path: Path) -> Iterator[BlockingStore]:
    store = BlockingStore(tmp_path)
    yield store
    store.release.set()  # never leave the writer thread stuck


def test_writer_saves_in_background(tmp_path: Path) -> None:
    store = HardExampleStore(tmp_path, max_count=100, max_bytes=BIG)
    writer = HardExampleWriter(store)
    try:
        assert all(writer.submit(example(i)) for i in range(10))
        writer.flush()
        assert (writer.saved, writer.errors, writer.dropped) == (10, 0, 0)
        assert [load_example(p).score for p in store.list()] == [i + 0.25 for i in range(10)]
    finally:
        writer.close()


def test_submit_does_not_block_and_drops_when_full(blocking: BlockingStore) -> None:
    writer = HardExampleWriter(blocking, queue_size=3)
    try:
        assert writer.submit(example(0))
        assert blocking.started.wait(10)  # the thread holds example 0; the queue is empty
        assert [writer.submit(example(i)) for i in range(1, 4)] == [True] * 3
        assert not writer.submit(example(4))  # returns at once although the disk is "stuck"
        assert not writer.submit(example(5))
        assert writer.dropped == 2
        with pytest.raises(TimeoutError, match="4 example"):
            writer.flush(timeout=0.05)
        blocking.release.set()
        writer.flush()
        assert (writer.saved, writer.errors, writer.dropped) == (4, 0, 2)
        assert [load_example(p).score for p in blocking.list()] == [0.25, 1.25, 2.25, 3.25]
    finally:
        writer.close()


def test_save_errors_are_counted_not_raised(tmp_path: Path) -> None:
    root = tmp_path / "store"
    writer = HardExampleWriter(HardExampleStore(root, max_count=10, max_bytes=BIG))
    try:
        shutil.rmtree(root)  # the disk went away under the store
        assert writer.submit(example(0))
        writer.flush()
        assert (writer.saved, writer.errors) == (0, 1)

        root.mkdir()  # the thread survived and keeps saving
        assert writer.submit(example(1))
        writer.flush()
        assert (writer.saved, writer.errors) == (1, 1)
    finally:
        writer.close()


def test_invalid_example_is_an_error_not_an_exception(tmp_path: Path) -> None:
    writer = HardExampleWriter(HardExampleStore(tmp_path, max_count=10, max_bytes=BIG))
    try:
        assert writer.submit(example(0, inputs={"x": objects([1, 2], (2,))}))
        writer.flush()
        assert (writer.saved, writer.errors) == (0, 1)
    finally:
        writer.close()


def test_close_saves_what_is_queued_then_drops(tmp_path: Path) -> None:
    store = HardExampleStore(tmp_path, max_count=100, max_bytes=BIG)
    writer = HardExampleWriter(store)
    for i in range(5):
        writer.submit(example(i))
    writer.close()
    assert store.count == 5
    assert not writer.submit(example(5))
    assert writer.dropped == 1
    writer.close()  # idempotent
