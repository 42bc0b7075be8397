"""Counting the samples of a dataset: the library under the Dataset resource (issue 14).

`count_dataset(path, format, options)` reads a local dataset once (csv, txt image list, Pascal
VOC directory or archive, npz) and returns a DatasetStats: the number of samples, the samples
per class, and facts about the format that the resource's status reports. Nothing here needs
Ray or Kubernetes; the operator fetches the dataset, calls count_dataset and turns a
DatasetFormatError into a status condition (`reason` and the message naming file and line).
"""

from ._count import SUPPORTED_FORMATS, count_dataset
from ._csv import CsvTable, read_csv_table
from ._errors import DatasetFormatError, DatasetReason
from ._stats import CountOptions, DatasetStats
from ._txt import TxtSample, image_url, read_txt_list
from ._voc import VocImage, VocObject, read_voc

__all__ = [
    "SUPPORTED_FORMATS",
    "CountOptions",
    "CsvTable",
    "DatasetFormatError",
    "DatasetReason",
    "DatasetStats",
    "TxtSample",
    "VocImage",
    "VocObject",
    "count_dataset",
    "image_url",
    "read_csv_table",
    "read_txt_list",
    "read_voc",
]
