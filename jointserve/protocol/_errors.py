"""Errors of the inference data plane; each knows its HTTP status.

One handler (jointserve.protocol.http) turns any of them into an OIP error body
`{"error": "..."}` with the status on the class, as KServe and MLServer do.
"""

from __future__ import annotations


class InferenceError(Exception):
    """Base: something went wrong serving a request. Status 500 unless a subclass says."""

    status_code: int = 500

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidInput(InferenceError):
    """The request is malformed or does not match the model's inputs."""

    status_code = 400


class ModelNotFound(InferenceError):
    """No model (or model version) of that name is served here."""

    status_code = 404


class ModelNotReady(InferenceError):
    """The model exists but has no loaded version yet."""

    status_code = 503
