"""HttpCloud, the gateway's pooled OIP v2 client, against a real cloud model server on loopback.

The server (tests/_cloudserver.py) runs the example's real cloud ONNX model and is made slow,
hanging, failing, garbage-speaking, resetting or dead. Each test checks what HttpCloud does
about it: the CloudCallError reason it raises, the arrays it decodes, and what its connection
pool does across faults, restarts and aclose(). No Ray.

tests/test_joint_model.py covers the same faults one layer up, through JointModel (the
fallback reason the client sees, the deadline turning a slow cloud into `cloud_timeout`, one
kept-alive connection for sequential hard inputs, a late slow answer not taken for the next
request); this file does not repeat those assertions.
"""

from __future__ import annotations

import asyncio
import tarfile
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import TypeVar

import numpy as np
import pytest

from jointserve.gateway import CloudAnswer, CloudCallError, HttpCloud
from jointserve.gateway._cloud import CLOUD_BAD_RESPONSE, CLOUD_ERROR, CLOUD_UNAVAILABLE
from jointserve.protocol import LoadedModel
from tests._cloudserver import CloudServer

MODEL = "digits-cloud"
# A hang must end within the caller's timeout plus this: a bound, not a speed measurement.
SLACK_S = 5.0

T = TypeVar("T")


@pytest.fixture(scope="module")
def model_dir(example: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The example's cloud model, unpacked (archive root: model.onnx + metadata.json)."""
    root = tmp_path_factory.mktemp("digits-cloud-v1")
    with tarfile.open(example / "archives" / "digits-cloud-v1.tar.gz") as tar:
        tar.extractall(root, filter="data")
    return root


@pytest.fixture(scope="module")
def loaded(model_dir: Path) -> LoadedModel:
    """The cloud model run in process: what a correct HttpCloud answer must decode to."""
    return LoadedModel.load(MODEL, "v1", model_dir)


@pytest.fixture(scope="module")
def rows(example: Path) -> np.ndarray:
    return np.load(example / "samples.npz")["X"].astype(np.float32)


@pytest.fixture
def server(model_dir: Path) -> Iterator[CloudServer]:
    server = CloudServer(model_dir, MODEL)
    yield server
    server.stop()  # also releases handlers still hanging


def run(url: str, scenario: Callable[[HttpCloud], Awaitable[T]], max_connections: int = 8) -> T:
    """`scenario` with a fresh HttpCloud on one event loop (its pool belongs to that loop),
    closed on that loop afterwards, as a gateway replica does."""

    async def main() -> T:
        cloud = HttpCloud(url, max_connections)
        try:
            return await scenario(cloud)
        finally:
            await cloud.aclose()

    return asyncio.run(main())


def assert_answer_is(answer: CloudAnswer, loaded: LoadedModel, batch: np.ndarray) -> None:
    """The answer decodes to exactly the arrays the model gives in process for `batch`."""
    expected = loaded.model.run({"input": batch})
    assert answer.version == "v1"
    assert sorted(answer.outputs) == sorted(expected)
    for name, want in expected.items():
        got = answer.outputs[name]
        assert got.dtype == want.dtype, name
        assert got.shape == want.shape, name
        np.testing.assert_array_equal(got, want, err_msg=name)


def client_connections(port: int) -> int:
    """ESTABLISHED TCP connections from a client socket to 127.0.0.1:`port` (Linux)."""
    count = 0
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, remote, state = fields[1], fields[2], fields[3]
        if state == "01" and remote == f"0100007F:{port:04X}" and local != remote:
            count += 1
    return count


async def eventually(condition: Callable[[], bool], what: str, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.01)


# -- answers ----------------------------------------------------------------------------------

def test_an_answer_decodes_to_the_arrays_of_the_model_run_in_process(
        server: CloudServer, loaded: LoadedModel, rows: np.ndarray) -> None:
    batch = rows[:5]
    answer = run(server.infer_url, lambda cloud: cloud.infer({"input": batch}))
    assert_answer_is(answer, loaded, batch)
    assert server.request_count == 1


@pytest.mark.parametrize(("path", "feeds", "status", "message"), [
    pytest.param("/v2/models/other/infer", {"input": np.zeros((1, 64), np.float32)}, 404,
                 "no route", id="unknown-model"),
    pytest.param(None, {"input": np.zeros((1, 3), np.float32)}, 400,
                 "does not fit the model", id="bad-input"),
])
def test_a_refused_request_is_cloud_error_naming_the_status(
        server: CloudServer, path: str | None, feeds: dict, status: int, message: str) -> None:
    url = server.infer_url if path is None else server.base_url + path

    async def scenario(cloud: HttpCloud) -> CloudCallError:
        with pytest.raises(CloudCallError) as err:
            await cloud.infer(feeds)
        return err.value

    error = run(url, scenario)
    assert error.reason == CLOUD_ERROR
    assert f"answered {status}" in error.detail and message in error.detail


# -- faults -----------------------------------------------------------------------------------

@pytest.mark.parametrize(("mode", "reason", "detail"), [
    pytest.param("error500", CLOUD_ERROR, "answered 500: {\"error\": \"injected failure",
                 id="error500"),
    pytest.param("garbage", CLOUD_BAD_RESPONSE, "not an OIP v2 response", id="garbage"),
    pytest.param("bad_shape", CLOUD_BAD_RESPONSE, "not an OIP v2 response", id="bad-shape"),
    pytest.param("reset", CLOUD_UNAVAILABLE, "Connection reset", id="reset"),
])
def test_a_fault_is_its_reason_and_the_client_recovers(
        server: CloudServer, loaded: LoadedModel, rows: np.ndarray,
        mode: str, reason: str, detail: str) -> None:
    batch = rows[:2]

    async def scenario(cloud: HttpCloud) -> tuple[CloudCallError, CloudAnswer]:
        await cloud.infer({"input": batch})  # a kept-alive connection in the pool first
        server.behave(mode)
        with pytest.raises(CloudCallError) as err:
            await cloud.infer({"input": batch})
        server.behave("ok")
        return err.value, await cloud.infer({"input": batch})

    error, after = run(server.infer_url, scenario)
    assert error.reason == reason
    assert error.detail.startswith(server.infer_url) and detail in error.detail
    assert_answer_is(after, loaded, batch)  # the same client answers again once the cloud does
    assert server.request_count == 3


def test_a_refused_connection_is_cloud_unavailable_until_the_cloud_is_back(
        server: CloudServer, loaded: LoadedModel, rows: np.ndarray) -> None:
    batch = rows[:1]

    async def scenario(cloud: HttpCloud) -> tuple[CloudCallError, CloudAnswer]:
        server.stop()
        with pytest.raises(CloudCallError) as err:
            await cloud.infer({"input": batch})
        server.start()
        return err.value, await cloud.infer({"input": batch})

    error, after = run(server.infer_url, scenario)
    assert error.reason == CLOUD_UNAVAILABLE
    assert "Cannot connect" in error.detail
    assert_answer_is(after, loaded, batch)


def test_a_hang_is_bounded_by_the_callers_timeout_and_its_late_reply_is_not_the_next_answer(
        server: CloudServer, loaded: LoadedModel, rows: np.ndarray) -> None:
    first = rows[:1]
    first_label = loaded.model.run({"input": first})["label"][0]
    other = next(i for i in range(len(rows))
                 if loaded.model.run({"input": rows[i:i + 1]})["label"][0] != first_label)
    second = rows[other:other + 1]
    timeout_s = 0.3

    async def scenario(cloud: HttpCloud) -> tuple[float, CloudAnswer]:
        await cloud.infer({"input": first})  # the connection the hung call will use
        server.behave("hang")
        started = time.monotonic()
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(timeout_s):
                await cloud.infer({"input": first})
        waited = time.monotonic() - started
        await eventually(lambda: server.request_count == 2, "the hung call to reach the cloud")
        server.behave("ok")  # the hung handler now answers `first`, too late
        await asyncio.sleep(0.2)  # ... and that reply reaches the client side by now
        return waited, await cloud.infer({"input": second})

    waited, answer = run(server.infer_url, scenario)
    assert waited < timeout_s + SLACK_S
    assert_answer_is(answer, loaded, second)  # not the late reply for `first`


def test_a_slow_answer_is_awaited_within_the_callers_timeout_and_bounded_by_it(
        server: CloudServer, loaded: LoadedModel, rows: np.ndarray) -> None:
    batch = rows[:3]

    async def scenario(cloud: HttpCloud) -> tuple[CloudAnswer, float]:
        server.behave("slow", delay_s=0.3)
        async with asyncio.timeout(0.3 + SLACK_S):  # HttpCloud has no shorter limit of its own
            answer = await cloud.infer({"input": batch})
        server.behave("slow", delay_s=30.0)
        started = time.monotonic()
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.3):
                await cloud.infer({"input": batch})
        return answer, time.monotonic() - started

    answer, waited = run(server.infer_url, scenario)
    assert_answer_is(answer, loaded, batch)
    assert waited < 0.3 + SLACK_S


# -- the connection pool ----------------------------------------------------------------------

def test_concurrent_calls_share_at_most_max_connections(
        server: CloudServer, loaded: LoadedModel, rows: np.ndarray) -> None:
    batches = [rows[i:i + 1] for i in range(6)]

    async def scenario(cloud: HttpCloud) -> list[CloudAnswer]:
        server.behave("slow", delay_s=0.2)  # the calls overlap
        answers = await asyncio.gather(*(cloud.infer({"input": b}) for b in batches))
        server.behave("ok")
        for b in batches[:3]:
            await cloud.infer({"input": b})
        return answers

    answers = run(server.infer_url, scenario, max_connections=2)
    for answer, batch in zip(answers, batches):
        assert_answer_is(answer, loaded, batch)
    # Two opened for nine calls: the limit is kept, and released connections are reused.
    assert server.connection_count == 2
    assert server.request_count == 9


def test_a_cloud_restarted_on_the_same_port_is_reached_again(
        server: CloudServer, loaded: LoadedModel, rows: np.ndarray) -> None:
    batch, port = rows[:2], server.port

    async def scenario(cloud: HttpCloud) -> CloudAnswer:
        await cloud.infer({"input": batch})  # one kept-alive connection in the pool
        # The gateway's loop keeps running while the cloud restarts (stop() closes the
        # kept-alive connection, so the client side sees it end).
        await asyncio.to_thread(server.stop)
        await asyncio.to_thread(server.start)
        return await cloud.infer({"input": batch})

    answer = run(server.infer_url, scenario)
    assert server.port == port
    assert_answer_is(answer, loaded, batch)
    assert server.connection_count == 2  # a new connection, not a retry on the dead one


def test_the_first_call_after_the_cloud_closed_a_kept_alive_connection_succeeds(
        server: CloudServer, loaded: LoadedModel, rows: np.ndarray) -> None:
    """The cloud closes an idle pooled connection (a restart here; an idle timeout as well)
    while the client's loop is busy, so the close is not yet read when the next call takes
    that connection from the pool. That call must still be answered: a dead kept-alive
    connection is the pool's business, not a failure of the next real request."""
    batch = rows[:2]

    async def scenario(cloud: HttpCloud) -> CloudAnswer:
        await cloud.infer({"input": batch})
        server.stop()  # on the loop's thread: no loop turn between the close and the call
        server.start()
        return await cloud.infer({"input": batch})

    assert_answer_is(run(server.infer_url, scenario), loaded, batch)


def test_aclose_closes_the_pool(server: CloudServer, rows: np.ndarray) -> None:
    batch = rows[:1]

    async def scenario() -> tuple[int, CloudCallError]:
        cloud = HttpCloud(server.infer_url, 8)
        await cloud.infer({"input": batch})
        open_before = client_connections(server.port)
        await cloud.aclose()
        await eventually(lambda: client_connections(server.port) == 0,
                         "the pooled connection to close")
        with pytest.raises(CloudCallError) as err:
            await cloud.infer({"input": batch})
        await cloud.aclose()  # idempotent
        return open_before, err.value

    open_before, error = asyncio.run(scenario())
    assert open_before == 1
    assert error.reason == CLOUD_UNAVAILABLE and "closed" in error.detail
    assert server.request_count == 1  # the call after aclose() did not reach the cloud


def test_aclose_of_an_unused_client_refuses_later_calls(server: CloudServer, rows: np.ndarray) -> None:
    async def scenario() -> CloudCallError:
        cloud = HttpCloud(server.infer_url, 8)
        await cloud.aclose()
        with pytest.raises(CloudCallError) as err:
            await cloud.infer({"input": rows[:1]})
        return err.value

    assert asyncio.run(scenario()).reason == CLOUD_UNAVAILABLE
    assert server.connection_count == 0
