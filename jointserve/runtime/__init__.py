"""Model runtime shared by both tiers: onnxruntime sessions with OIP v2 tensor specs.

`OnnxModel(dir)` loads an unpacked model version (`model.onnx` or the only `*.onnx`, plus an
optional `metadata.json`); its `inputs`/`outputs` are `TensorSpec`s in Open Inference Protocol
terms, and `run` is safe to call from several threads. `oip_datatype` / `numpy_dtype`
translate between OIP datatype strings and numpy. `build_pipeline` compiles a service's
pre/post-processing steps (jointserve.api.PreStep / PostStep) into a numpy `Pipeline`.
`run_batch` and its helpers stack many requests' tensors into one model call.
`release_free_memory` hands the heap a load freed back to the OS.
"""

from ._batching import Feeds, batch_rows, run_batch, split_outputs, stack_feeds, stackable_groups
from ._onnx import (
    THREADS_ENV,
    ModelLoadError,
    OnnxModel,
    TensorSpec,
    numpy_dtype,
    oip_datatype,
)
from ._memory import release_free_memory
from ._steps import MAX_IMAGE_PIXELS, Pipeline, StepInputError, build_pipeline, nms_indices

__all__ = [
    "Feeds",
    "batch_rows",
    "run_batch",
    "split_outputs",
    "stack_feeds",
    "stackable_groups",
    "MAX_IMAGE_PIXELS",
    "THREADS_ENV",
    "ModelLoadError",
    "OnnxModel",
    "Pipeline",
    "StepInputError",
    "TensorSpec",
    "build_pipeline",
    "nms_indices",
    "numpy_dtype",
    "oip_datatype",
    "release_free_memory",
]
