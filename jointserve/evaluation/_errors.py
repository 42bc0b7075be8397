"""The one error of jointserve.evaluation: why a version could not be evaluated on a Dataset.

`reason` goes into the resource's Evaluated condition as it is (InputsRejected: the model
does not take the dataset's samples; DatasetUnreadable: an image the index lists cannot be
read), `str(err)` into its message. Serving is never touched by a failed evaluation.
"""

from __future__ import annotations


class EvaluationError(Exception):
    """A version that cannot be evaluated on a dataset, and why, in words a user can act on."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail
