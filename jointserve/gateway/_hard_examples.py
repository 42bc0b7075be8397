"""Hard examples kept on disk for retraining the edge model, as Sedna saves them.

When HEM sends an input to the cloud (or would have, had the cloud answered), the gateway
hands a `HardExample` to a `HardExampleWriter`, which saves it from a background thread so
the request path never waits for the disk. `HardExampleStore` keeps the directory bounded by
count and bytes, dropping the oldest examples first, and survives restarts.

Layout of the directory a service names (`saveHardExamples.directory`): every gateway replica
writes only into a subdirectory it holds a lock on (`HardExampleStore.claim`), so replicas
sharing a node never evict each other's files:

    <directory>/writer-<n>.lock                     held by one live writer (an OS file lock,
                                                    released when its process ends)
    <directory>/writer-<n>/<time_ns:020d>-<hex8>.npz   one example; names sort oldest first
    <directory>/writer-<n>/.tmp-<hex8>.npz          being written; deleted at startup if a crash
                                                    left it

A writer takes the lowest free n, so a restarted replica takes back its predecessor's
subdirectory and its bounds (maxCount, maxBytes: per writer) instead of starting a new one.

One example is one `.npz` (numpy's zip of `.npy` arrays; readable without pickle):

    input.<name>, edge.<name>, cloud.<name>   numeric tensors, as given
    <group>.<name>.<i>                        element i (row-major) of a BYTES tensor as uint8
    meta                                      0-d unicode array holding a JSON object

`meta` holds service, score, tier, fallback_reason, timestamp, `has_cloud_outputs` (so an
empty cloud answer and a skipped cloud differ) and `tensors`: one entry per tensor, in order,
`{"group", "name", "bytes": null | {"shape": [...], "str": bool}}`. BYTES tensors are numpy
object arrays; `.npy` can only store those by pickling, so each element is stored as its own
uint8 array and rebuilt from the recorded shape; `str` says the elements were Python strings
(what JSON requests decode to), stored UTF-8 encoded.
"""

from __future__ import annotations

import builtins
import json
import logging
import math
import os
import queue
import re
import secrets
import threading
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from filelock import FileLock, Timeout

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
_GROUPS = (("input", "inputs"), ("edge", "edge_outputs"), ("cloud", "cloud_outputs"))
_EXAMPLE_NAME = re.compile(r"\d{20}-[0-9a-f]{8}\.npz")
_TMP_PREFIX = ".tmp-"
_WRITER_PREFIX = "writer-"
# More concurrent writers than any node runs gateway replicas; a bound so a bug cannot loop.
MAX_WRITERS = 1024


@dataclass(frozen=True)
class HardExample:
    service: str  # logical model (JointInferenceService) name
    inputs: Mapping[str, np.ndarray]  # model inputs after preprocessing
    edge_outputs: Mapping[str, np.ndarray]
    cloud_outputs: Mapping[str, np.ndarray] | None  # None when the cloud was skipped or failed
    score: float  # HEM score
    tier: str  # "edge" | "cloud": who answered
    fallback_reason: str | None
    timestamp: float  # time.time()


class HardExampleStore:
    """Saved examples under `root`, at most `max_count` files and `max_bytes` bytes of them.

    Thread-safe; in the gateway only the writer thread saves, others may read the counters.
    """

    def __init__(self, root: Path, max_count: int, max_bytes: int) -> None:
        if max_count < 1 or max_bytes < 1:
            raise ValueError(
                f"max_count and max_bytes must be >= 1, got max_count={max_count}, "
                f"max_bytes={max_bytes}"
            )
        self.root = Path(root)
        self.max_count = max_count
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        self._files: deque[tuple[Path, int]] = deque()  # oldest first, with sizes
        self._total = 0
        self._last_ns = 0
        self._claim: FileLock | None = None  # set by claim(): released by close()
        self.root.mkdir(parents=True, exist_ok=True)
        self._scan()
        with self._lock:
            self._trim()  # the limits may have been lowered since the last run

    @classmethod
    def claim(cls, directory: Path, max_count: int, max_bytes: int) -> HardExampleStore:
        """A store in the lowest `writer-<n>` subdirectory of `directory` that no other live
        writer holds; held until `close` (or the end of this process)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        for n in range(MAX_WRITERS):
            lock = FileLock(directory / f"{_WRITER_PREFIX}{n}.lock", timeout=0)
            try:
                lock.acquire()
            except Timeout:
                continue  # another live writer holds it
            try:
                store = cls(directory / f"{_WRITER_PREFIX}{n}", max_count, max_bytes)
            except BaseException:
                lock.release()
                raise
            store._claim = lock
            return store
        raise RuntimeError(f"{directory}: all {MAX_WRITERS} hard example writer slots are held")

    def close(self) -> None:
        """Give up this store's claim on its subdirectory (a no-op if it was not claimed)."""
        if self._claim is not None:
            self._claim.release()
            self._claim = None

    @property
    def count(self) -> int:
        with self._lock:
            return len(self._files)

    @property
    def total_bytes(self) -> int:
        with self._lock:
            return self._total

    # builtins.list: inside the class body `list` is this method, for type checkers too.
    def list(self) -> builtins.list[Path]:
        """The saved examples, oldest first."""
        with self._lock:
            return [path for path, _ in self._files]

    def save(self, example: HardExample) -> Path:
        """Write `example` as one new file, then drop the oldest files beyond the limits.

        Raises ValueError, keeping the store as it was, if the example's file alone would be
        larger than `max_bytes` (keeping it would mean deleting every other example), or if
        its tensors cannot be stored (see the module docstring). OSError from the disk
        propagates; no temp file is left behind.
        """
        arrays = _to_arrays(example)
        tmp = self.root / f"{_TMP_PREFIX}{secrets.token_hex(4)}.npz"
        try:
            with open(tmp, "wb") as f:  # a file object: np.savez would append .npz to a name
                np.savez(f, **arrays)
                f.flush()
                os.fsync(f.fileno())  # the rename must not publish a file whose data is lost
            size = tmp.stat().st_size
            if size > self.max_bytes:
                raise ValueError(
                    f"hard example of service {example.service!r} takes {size} bytes, more than "
                    f"the store's max_bytes={self.max_bytes}; not saved"
                )
            with self._lock:
                path = self.root / f"{self._next_ns():020d}-{secrets.token_hex(4)}.npz"
                os.replace(tmp, path)
                self._files.append((path, size))
                self._total += size
                self._trim()
        finally:
            tmp.unlink(missing_ok=True)
        return path

    def _next_ns(self) -> int:
        # Names must sort in save order even if the wall clock steps back (NTP, restart on
        # another clock): never go below the newest name already in the store.
        self._last_ns = max(time.time_ns(), self._last_ns + 1)
        return self._last_ns

    def _trim(self) -> None:
        while self._files and (len(self._files) > self.max_count or self._total > self.max_bytes):
            path, size = self._files.popleft()
            path.unlink(missing_ok=True)
            self._total -= size

    def _scan(self) -> None:
        found: list[tuple[Path, int]] = []
        for entry in self.root.iterdir():
            if entry.name.startswith(_TMP_PREFIX):
                log.warning("removing %s, left behind by an interrupted save", entry)
                entry.unlink(missing_ok=True)
            elif _EXAMPLE_NAME.fullmatch(entry.name) and entry.is_file():
                found.append((entry, entry.stat().st_size))
        found.sort(key=lambda item: item[0].name)
        with self._lock:
            self._files.extend(found)
            self._total = sum(size for _, size in found)
            if found:
                self._last_ns = int(found[-1][0].name[:20])


def load_example(path: Path) -> HardExample:
    """Read back an example written by `HardExampleStore.save` (never unpickles anything)."""
    with np.load(path, allow_pickle=False) as npz:
        meta = json.loads(str(npz["meta"][()]))
        if meta.get("format") != FORMAT_VERSION:
            raise ValueError(f"{path}: unknown hard example format {meta.get('format')!r}")
        groups: dict[str, dict[str, np.ndarray]] = {group: {} for group, _ in _GROUPS}
        for tensor in meta["tensors"]:
            group, name, as_bytes = tensor["group"], tensor["name"], tensor["bytes"]
            key = f"{group}.{name}"
            groups[group][name] = npz[key] if as_bytes is None else _load_bytes(npz, key, as_bytes)
    return HardExample(
        service=meta["service"],
        inputs=groups["input"],
        edge_outputs=groups["edge"],
        cloud_outputs=groups["cloud"] if meta["has_cloud_outputs"] else None,
        score=meta["score"],
        tier=meta["tier"],
        fallback_reason=meta["fallback_reason"],
        timestamp=meta["timestamp"],
    )


def _to_arrays(example: HardExample) -> dict[str, np.ndarray]:
    arrays: dict[str, np.ndarray] = {}
    tensors: list[dict[str, Any]] = []

    def put(key: str, array: np.ndarray) -> None:
        # A tensor named like another's BYTES element ("x.0") would overwrite it silently.
        if key in arrays:
            raise ValueError(f"hard example tensor key {key!r} is used twice; rename the tensor")
        arrays[key] = array

    for group, field in _GROUPS:
        tensors_of_group: Mapping[str, np.ndarray] | None = getattr(example, field)
        for name, value in (tensors_of_group or {}).items():
            array = np.asarray(value)
            key = f"{group}.{name}"
            if array.dtype != object:
                put(key, array)
                tensors.append({"group": group, "name": name, "bytes": None})
                continue
            elements, is_str = _bytes_elements(key, array)
            for i, element in enumerate(elements):
                put(f"{key}.{i}", np.frombuffer(element, dtype=np.uint8))
            tensors.append(
                {"group": group, "name": name, "bytes": {"shape": list(array.shape), "str": is_str}}
            )
    meta = {
        "format": FORMAT_VERSION,
        "service": example.service,
        "score": float(example.score),
        "tier": example.tier,
        "fallback_reason": example.fallback_reason,
        "timestamp": float(example.timestamp),
        "has_cloud_outputs": example.cloud_outputs is not None,
        "tensors": tensors,
    }
    arrays["meta"] = np.array(json.dumps(meta))
    return arrays


def _bytes_elements(key: str, array: np.ndarray) -> tuple[list[bytes], bool]:
    """The elements of a BYTES (object) tensor as bytes, and whether they were all str."""
    items = array.ravel().tolist()
    if all(isinstance(item, (bytes, bytearray)) for item in items):
        return [bytes(item) for item in items], False
    if items and all(isinstance(item, str) for item in items):
        return [item.encode() for item in items], True
    raise ValueError(
        f"hard example tensor {key!r}: object arrays must hold only bytes or only str elements"
    )


def _load_bytes(npz: Any, key: str, spec: dict[str, Any]) -> np.ndarray:
    shape = tuple(spec["shape"])
    raw = [npz[f"{key}.{i}"].tobytes() for i in range(math.prod(shape))]
    elements: list[bytes | str] = [b.decode() for b in raw] if spec["str"] else list(raw)
    out = np.empty(len(elements), dtype=object)
    out[:] = elements  # element-wise: np.array(list_of_bytes) would make a fixed-width 'S' array
    return out.reshape(shape)


class HardExampleWriter:
    """Saves in a background thread so the request path never waits for the disk.

    `submit` only enqueues; when the queue is full the example is dropped and counted, since
    a slow disk must cost hard examples, not latency. Errors while saving are logged and
    counted in `errors`, never raised to the submitter.
    """

    def __init__(self, store: HardExampleStore, queue_size: int = 256) -> None:
        if queue_size < 1:
            raise ValueError(f"queue_size must be >= 1, got {queue_size}")
        self.store = store
        self._queue: queue.Queue[HardExample | None] = queue.Queue(maxsize=queue_size)
        self._cond = threading.Condition()
        self._submitted = 0  # accepted into the queue
        self._done = 0  # taken from the queue and finished, saved or not
        self._saved = 0
        self._errors = 0
        self._dropped = 0
        self._closed = False
        self._thread = threading.Thread(
            target=self._run, name="hard-example-writer", daemon=True
        )
        self._thread.start()

    @property
    def saved(self) -> int:
        with self._cond:
            return self._saved

    @property
    def errors(self) -> int:
        with self._cond:
            return self._errors

    @property
    def dropped(self) -> int:
        with self._cond:
            return self._dropped

    def submit(self, example: HardExample) -> bool:
        """Queue `example` for saving; never blocks. False if it was dropped (full or closed)."""
        with self._cond:
            if self._closed:
                self._dropped += 1
                return False
            try:
                self._queue.put_nowait(example)
            except queue.Full:
                self._dropped += 1
                return False
            self._submitted += 1
            return True

    def flush(self, timeout: float = 10.0) -> None:
        """Wait until every example submitted so far is saved (or failed); TimeoutError if not."""
        with self._cond:
            target = self._submitted
            if not self._cond.wait_for(lambda: self._done >= target, timeout):
                raise TimeoutError(
                    f"hard example writer: {target - self._done} example(s) still unsaved "
                    f"after {timeout} s"
                )

    def close(self, timeout: float = 10.0) -> None:
        """Save what is queued, then stop the thread. Later submits are dropped. Idempotent."""
        with self._cond:
            if self._closed:
                return
            self._closed = True
        try:
            # Blocks only while the queue is full, i.e. while the thread drains it.
            self._queue.put(None, timeout=timeout)
        except queue.Full:
            log.warning("hard example writer: queue still full after %s s; not waiting", timeout)
            return
        self._thread.join(timeout)
        if self._thread.is_alive():
            log.warning("hard example writer: still saving after %s s; not waiting", timeout)
            return  # the thread may still write: keep the claim on its directory
        self.store.close()

    def _run(self) -> None:
        while True:
            example = self._queue.get()
            if example is None:
                return
            ok = self._save(example)
            with self._cond:
                self._done += 1
                if ok:
                    self._saved += 1
                else:
                    self._errors += 1
                self._cond.notify_all()

    def _save(self, example: HardExample) -> bool:
        try:
            self.store.save(example)
        except Exception:  # noqa: BLE001 - a bad example or a full disk must not kill the thread
            log.exception("could not save a hard example of service %r", example.service)
            return False
        return True
