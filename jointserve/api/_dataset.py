"""The Dataset resource: one data file, fetched by URL, verified by sha256, its samples counted.

The operator fetches `url` through the artifact store, checks `sha256sum` (or, for a source
that changes, re-checks it every `refreshSeconds` and records the sha256 it found), counts the samples
(and classes, where the format has labels) with jointserve.datasets and writes what it found
into the status: numberOfSamples, numberOfClasses, classes, facts. A Dataset adds no Serve
application; it is what model metrics and model selection will refer to (issue 14).

`format` names one of jointserve.datasets' counters; the schema cannot import that package (it
sits on a higher floor), so tests/test_dataset_resource.py checks the two lists agree.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal, get_args

from pydantic import Field, PlainValidator, WithJsonSchema, model_validator

from ._common import API_VERSION, Condition, ObjectMeta, Strict
from ._inference_model import SHA256_PATTERN, URL_PATTERN
from ._vocabulary import ConditionType

DatasetFormat = Literal["csv", "txt", "voc", "npz"]
DATASET_FORMATS: tuple[str, ...] = get_args(DatasetFormat)

# A column name is bounded like every string a CEL rule may touch.
MAX_COLUMN_NAME = 253
MAX_REFRESH_SECONDS = 7 * 86400


def _column(value: Any) -> int | str:
    # One check with one message, rather than a union's two ("not an int", "not a string");
    # a YAML `true` is neither (pydantic would take it for column 1).
    is_index = isinstance(value, int) and not isinstance(value, bool) and value >= 0
    is_name = isinstance(value, str) and 0 < len(value) <= MAX_COLUMN_NAME
    if not (is_index or is_name):
        raise ValueError(f"must be a column name (1-{MAX_COLUMN_NAME} characters) or a "
                         f"0-based index >= 0 (got {value!r})")
    return value


# int or string, as Kubernetes' IntOrString: the CRD says x-kubernetes-int-or-string.
ColumnRef = Annotated[int | str, PlainValidator(_column),
                      WithJsonSchema({"x-kubernetes-int-or-string": True})]


class CsvOptions(Strict):
    """How to read a csv dataset: one sample per record."""

    # labelColumn is an IntOrString, which the API server cannot bound by itself.
    CEL_RULES: ClassVar[list[dict[str, str]]] = [
        {"rule": "!has(self.labelColumn) || type(self.labelColumn) != int || "
                 "self.labelColumn >= 0",
         "message": "csv.labelColumn must be a column name or a 0-based index >= 0"},
        {"rule": "!has(self.labelColumn) || type(self.labelColumn) != string || "
                 f"(size(self.labelColumn) >= 1 && size(self.labelColumn) <= {MAX_COLUMN_NAME})",
         "message": f"csv.labelColumn as a name must be 1-{MAX_COLUMN_NAME} characters"},
        {"rule": "!has(self.labelColumn) || type(self.labelColumn) != string || "
                 "!has(self.header) || self.header",
         "message": "csv.labelColumn is a column name but header is false; use a 0-based index"},
        {"rule": "!has(self.delimiter) || !(self.delimiter in ['\"', '\\r', '\\n'])",
         "message": "csv.delimiter must be one character other than '\"' or a line break"},
    ]

    # The first record names the columns and is not a sample.
    header: bool = True
    # The column holding each sample's class: a name (needs header) or a 0-based index;
    # none: the samples have no labels (numberOfClasses 0).
    labelColumn: ColumnRef | None = None
    delimiter: Annotated[str, Field(min_length=1, max_length=1)] = ","

    @model_validator(mode="after")
    def _usable(self) -> "CsvOptions":
        if self.delimiter in '"\r\n':
            raise ValueError(f"delimiter: must be one character other than '\"' or a line "
                             f"break (got {self.delimiter!r})")
        if isinstance(self.labelColumn, str) and not self.header:
            raise ValueError(f"labelColumn: {self.labelColumn!r} is a column name but header "
                             "is false; use a 0-based index")
        return self


class NpzOptions(Strict):
    """How to read an npz dataset: axis 0 of every array is the sample axis."""

    # The array holding each sample's class; when the file has no such array, no classes.
    labelsArray: Annotated[str, Field(min_length=1, max_length=253)] = "y"
    # The array holding the model inputs (for evaluation; counting does not need it).
    featuresArray: Annotated[str, Field(min_length=1, max_length=253)] = "X"


class TxtOptions(Strict):
    """How to read a txt image list: `path label` lines, paths relative to a base URL."""

    # Where the images are: `<baseURL>/<path>`; default: the directory of spec.url. No path
    # of the index may leave it (TxtPathEscapes).
    baseURL: Annotated[str, Field(pattern=URL_PATTERN, max_length=2048)] | None = None


_ONE_OF_SHA_OR_REFRESH = ("set sha256sum (a fixed file) or refreshSeconds (a source that changes, "
                          "re-checked that often), one of the two")


class DatasetSpec(Strict):
    """Desired state of a Dataset: where the data is, its sha256, and how to read it."""

    CEL_RULES: ClassVar[list[dict[str, str]]] = [
        {"rule": "!has(self.csv) || self.format == 'csv'",
         "message": "csv options are for format csv"},
        {"rule": "!has(self.npz) || self.format == 'npz'",
         "message": "npz options are for format npz"},
        {"rule": "!has(self.txt) || self.format == 'txt'",
         "message": "txt options are for format txt"},
        {"rule": "has(self.sha256sum) != has(self.refreshSeconds)",
         "message": _ONE_OF_SHA_OR_REFRESH},
    ]

    url: Annotated[str, Field(pattern=URL_PATTERN, max_length=2048)]
    # A fixed file: its bytes must have this sha256. Or, with refreshSeconds instead, a source
    # that changes: the operator re-checks it that often (ETag / Last-Modified over http, mtime
    # and size for file://) and re-counts a changed one; status.sha256 says what was counted.
    sha256sum: Annotated[str, Field(pattern=SHA256_PATTERN)] | None = None
    refreshSeconds: Annotated[int, Field(ge=1, le=MAX_REFRESH_SECONDS)] | None = None
    # Refuse a file larger than this (DownloadTooLarge); default: the operator's download cap.
    maxBytes: Annotated[int, Field(ge=1)] | None = None
    # csv, txt (image list: `path label` lines), voc (a tar, tar.gz or zip of a Pascal VOC
    # tree), npz (numpy arrays).
    format: DatasetFormat
    csv: CsvOptions | None = None
    npz: NpzOptions | None = None
    txt: TxtOptions | None = None
    # Where the data lives (the nodes that hold or should hold a copy). Recorded only: nothing
    # places work by it yet; the operator fetches the data itself to count it.
    nodeSelector: dict[str, str] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _options_match_format(self) -> "DatasetSpec":
        if (self.sha256sum is None) == (self.refreshSeconds is None):
            raise ValueError(_ONE_OF_SHA_OR_REFRESH)
        if self.sha256sum is not None:
            self.sha256sum = self.sha256sum.lower()  # one canonical form, as InferenceModel's
        for name in ("csv", "npz", "txt"):
            if getattr(self, name) is not None and self.format != name:
                raise ValueError(f"{name}: options are for format {name} (format is "
                                 f"{self.format})")
        return self

    def images_base(self) -> str:
        """txt: the URL the index's image paths are relative to, ending in "/"."""
        base = (self.txt.baseURL if self.txt and self.txt.baseURL else None) \
            or self.url.rsplit("/", 1)[0]
        return base if base.endswith("/") else base + "/"


class DatasetStatus(Strict):
    """Observed state, written by the operator. The statistics are those of the last version
    that verified and counted: a new version that fails leaves them as they were."""

    numberOfSamples: int | None = None
    numberOfClasses: int | None = None
    # Samples per class, by class name (for voc: images showing the class).
    classes: dict[str, int] = Field(default_factory=dict)
    # What the format's counter found besides counts (csv columns, npz array shapes, voc
    # objects per class, ...): free-form JSON.
    facts: dict[str, Any] = Field(default_factory=dict)
    # The sha256 of the data the statistics describe.
    sha256: str | None = None
    # refreshSeconds: when the source was last checked (RFC 3339), changed or not.
    lastChecked: str | None = None
    observedGeneration: int | None = None
    conditions: list[Condition] = Field(default_factory=list)


# The Ready condition in a printer column's JSONPath.
_READY = f'.status.conditions[?(@.type=="{ConditionType.READY}")]'


class Dataset(Strict):
    """A dataset whose samples the operator counts: for model metrics and model selection."""

    KIND: ClassVar[str] = "Dataset"
    PLURAL: ClassVar[str] = "datasets"
    # Not "ds": that is DaemonSets' short name, which kubectl resolves first (with a warning
    # on every `kubectl get ds`). `jointserve get ds` has no DaemonSets and takes both.
    SHORT_NAMES: ClassVar[list[str]] = ["dset"]
    PRINTER_COLUMNS: ClassVar[list[dict[str, Any]]] = [
        {"name": "FORMAT", "type": "string", "jsonPath": ".spec.format"},
        {"name": "SAMPLES", "type": "integer", "jsonPath": ".status.numberOfSamples"},
        {"name": "CLASSES", "type": "integer", "jsonPath": ".status.numberOfClasses"},
        {"name": "READY", "type": "string", "jsonPath": _READY + ".status"},
        {"name": "REASON", "type": "string", "jsonPath": _READY + ".reason"},
        {"name": "AGE", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
        {"name": "MESSAGE", "type": "string", "priority": 1, "jsonPath": _READY + ".message"},
    ]

    apiVersion: Literal["jointserve.io/v1alpha1"] = API_VERSION
    kind: Literal["Dataset"] = "Dataset"
    metadata: ObjectMeta
    spec: DatasetSpec
    status: DatasetStatus | None = None
