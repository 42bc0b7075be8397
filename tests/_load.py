"""Client load for the data-plane tests: CLIENTS threads, each with a keep-alive connection
of its own, posting OIP requests to one model until stopped; every outcome is kept, so a
test asserts what every response was, never how fast it came."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import httpx
import numpy as np

from tests._harness import OperatorHarness

CLIENTS = 8


def _body(row: np.ndarray) -> dict:
    row = np.atleast_2d(row).astype(np.float32)
    return {"inputs": [{"name": "input", "shape": list(row.shape), "datatype": "FP32",
                        "data": row.ravel().tolist()}]}


class Load:
    """CLIENTS threads posting to one model until stopped; every outcome kept."""

    def __init__(self, harness: OperatorHarness, model: str, samples: np.ndarray) -> None:
        self.url = f"{harness.base_url}/v2/models/{model}/infer"
        self.bodies = [_body(row) for row in samples[:64]]
        self.outcomes: list[tuple[int, dict[str, Any]]] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._client, args=(k,)) for k in range(CLIENTS)]

    def __enter__(self) -> "Load":
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join()

    def _client(self, offset: int) -> None:
        with httpx.Client(timeout=30.0) as http:
            i = offset
            while not self._stop.is_set():
                try:
                    response = http.post(self.url, json=self.bodies[i % len(self.bodies)])
                    params = {}
                    if response.status_code == 200:
                        body = response.json()
                        params = {**body.get("parameters", {}),
                                  "model_version": body.get("model_version")}
                    self.outcomes.append((response.status_code, params))
                except httpx.HTTPError as exc:  # a reset or refused connection is a failure too
                    self.outcomes.append((0, {"error": f"{type(exc).__name__}: {exc}"}))
                i += CLIENTS

    def seen(self, check: Callable[[dict[str, Any]], bool], last: int = 40) -> bool:
        return any(status == 200 and check(params) for status, params in self.outcomes[-last:])

    def failures(self) -> list[tuple[int, dict[str, Any]]]:
        return [outcome for outcome in self.outcomes if outcome[0] != 200]
