"""Errors of the inference data plane; each knows its HTTP status.

One handler (`answer` in jointserve/protocol/_http.py, exported as jointserve.protocol.answer)
turns any of them into an OIP error body `{"error": "..."}` with the status on the class, and
the headers on the instance, as KServe and MLServer do.
"""

from __future__ import annotations

from collections.abc import Iterable


class InferenceError(Exception):
    """Base: something went wrong serving a request. Status 500 unless a subclass says."""

    status_code: int = 500

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    @property
    def headers(self) -> dict[str, str]:
        """HTTP headers the error response must carry (none unless a subclass says)."""
        return {}


class InvalidInput(InferenceError):
    """The request is malformed or does not match the model's inputs."""

    status_code = 400


class MethodNotAllowed(InferenceError):
    """The route exists but does not take the request's method (405; not an InvalidInput).

    `allow` lists the methods the route takes; the response names them in an `Allow` header,
    which RFC 9110 requires on a 405.
    """

    status_code = 405

    def __init__(self, message: str, allow: Iterable[str]) -> None:
        super().__init__(message)
        self.allow = tuple(allow)

    @property
    def headers(self) -> dict[str, str]:
        return {"Allow": ", ".join(self.allow)}

    def __reduce__(self) -> tuple[type[MethodNotAllowed], tuple[str, tuple[str, ...]]]:
        return (type(self), (self.message, self.allow))  # args alone would lose `allow`


class ModelNotFound(InferenceError):
    """No model (or model version) of that name is served here."""

    status_code = 404


class ModelNotReady(InferenceError):
    """The model exists but has no loaded version yet."""

    status_code = 503
