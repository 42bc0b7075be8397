"""The `jointserve` command: serve a directory of resources, inspect status, generate CRDs.

    jointserve serve DIR [--file-server ARCHIVES]   embedded mode: local Ray + directory operator
    jointserve operator [--kubeconfig FILE]         Kubernetes mode: watch the API, serve on Ray
    jointserve get [im|jis|ds]                      kubectl-like table of resources and status
    jointserve status                               conditions of every resource, file errors
    jointserve crds [--out deploy/crds]             regenerate the CRDs from the schemas
    jointserve export rayservice DIR                KubeRay RayService running DIR's resources

It only parses arguments and prints: each mode is assembled in jointserve.operator
(`embedded` for serve, `kube` for operator). The benchmark runner is `python -m benchmarks`
(`make bench`) from a source checkout.
"""

from __future__ import annotations

import argparse
import logging
import os
import shlex
import signal
import sys
import threading
import time
from importlib.metadata import version as package_version
from pathlib import Path
from typing import Any

from jointserve.api import ConditionType

DEFAULT_STATE_DIR = Path(".jointserve")
READY_WAIT_S = 300.0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # One line per HTTP request of the store's downloads is noise next to its own progress.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    return int(args.func(args) or 0)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="jointserve", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(required=True, metavar="COMMAND")

    serve = sub.add_parser("serve", help="serve a directory of resource YAML files (embedded mode)")
    serve.add_argument("directory", type=Path)
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--state-dir", type=Path, default=DEFAULT_STATE_DIR,
                       help="where status and the model store live (default: ./.jointserve)")
    serve.add_argument("--ray-address", default=None,
                       help="join this Ray cluster instead of starting a local one")
    serve.add_argument("--file-server", type=Path, default=None, metavar="DIR",
                       help="also serve DIR over HTTP on loopback (the example's model archives)")
    serve.add_argument("--file-server-port", type=int, default=8808)
    serve.set_defaults(func=_cmd_serve)

    _add_operator_parser(sub)

    get = sub.add_parser("get", help="list resources with their status")
    get.add_argument("kind", nargs="?", default="inferencemodels", choices=sorted(_KIND_NAMES),
                     help="inferencemodels (im, default), jointinferenceservices (jis) or "
                          "datasets (ds)")
    get.add_argument("--state-dir", type=Path, default=DEFAULT_STATE_DIR)
    get.add_argument("-o", "--output", choices=("wide",), default=None,
                     help="wide: also the Ready condition's message, as kubectl get -o wide")
    get.set_defaults(func=_cmd_get)

    status = sub.add_parser("status", help="conditions of every resource and file errors")
    status.add_argument("--state-dir", type=Path, default=DEFAULT_STATE_DIR)
    status.set_defaults(func=_cmd_status)

    evaluate = sub.add_parser(
        "evaluate", help="evaluate a model or joint service over a Dataset once and print "
                         "the metrics")
    evaluate.add_argument("target", help="an InferenceModel or JointInferenceService: a YAML "
                                         "file, or the name of one `jointserve serve` knows")
    evaluate.add_argument("--dataset", required=True,
                          help="a Dataset: a YAML file, or the name of one in the same places")
    evaluate.add_argument("--output", dest="tensor", default=None,
                          help="the output holding the predictions (default: spec.evaluation's, "
                               "else class ids or the last output)")
    evaluate.add_argument("--state-dir", type=Path, default=DEFAULT_STATE_DIR,
                          help="where archives and datasets are fetched and verified, and whose "
                               "records name resources (default: ./.jointserve)")
    evaluate.set_defaults(func=_cmd_evaluate)

    router = sub.add_parser(
        "train-router", help="train a LearnedRouter for a joint service on a Dataset and "
                             "write it as a verified archive")
    router.add_argument("target", help="a JointInferenceService: a YAML file, or the name of "
                                       "one `jointserve serve` knows")
    router.add_argument("--dataset", required=True,
                        help="a Dataset with labels: a YAML file, or the name of one")
    router.add_argument("--out", type=Path, required=True, help="the archive to write (.tar.gz)")
    router.add_argument("--inputs", choices=("auto", "yes", "no"), default="auto",
                        help="read the edge model's input beside its probabilities (auto: "
                             "as cross-validation says)")
    router.add_argument("--state-dir", type=Path, default=DEFAULT_STATE_DIR,
                        help="where archives and datasets are fetched and verified")
    router.set_defaults(func=_cmd_train_router, tensor=None)

    hard = sub.add_parser(
        "hard-examples", help="pack a service's saved hard examples into one npz for a "
                              "Dataset: inputs, labelled with the cloud's answers")
    hard.add_argument("directory", type=Path, help="the service's saveHardExamples.directory")
    hard.add_argument("--out", type=Path, required=True, help="the npz to write")
    hard.add_argument("--input", dest="input_name", default=None,
                      help="the model input to export (default: the examples' only one)")
    hard.add_argument("--label", dest="label_output", default=None,
                      help="the output whose class ids or scores label a row (default: the "
                           "last output)")
    hard.set_defaults(func=_cmd_hard_examples)

    crds = sub.add_parser("crds", help="write the CRD YAML generated from the schemas")
    crds.add_argument("--out", type=Path, default=Path("deploy/crds"))
    crds.set_defaults(func=_cmd_crds)

    export = sub.add_parser("export", help="print the resources' Serve config for another runner")
    formats = export.add_subparsers(required=True, metavar="FORMAT")
    rayservice = formats.add_parser(
        "rayservice", help="a KubeRay RayService whose serveConfigV2 is the config the operator "
                           "applies for DIR (archives are fetched and verified first)")
    rayservice.add_argument("directory", type=Path)
    rayservice.add_argument("--name", default="jointserve", help="the RayService's name")
    rayservice.add_argument("--namespace", default="default", help="the RayService's namespace")
    rayservice.add_argument("--state-dir", type=Path, default=DEFAULT_STATE_DIR,
                            help="where archives are verified (its store; default: ./.jointserve)")
    rayservice.add_argument("--ray-image", default=None,
                            help="image of the Ray pods, with jointserve installed "
                                 "(default: rayproject/ray:<installed Ray>-py311)")
    rayservice.add_argument("--store-root", default=None,
                            help="replicas' model store on the Ray pods "
                                 "(default: /var/lib/jointserve/store, an emptyDir)")
    rayservice.add_argument("--port", type=int, default=8000, help="Serve's HTTP port")
    rayservice.add_argument("--head-layer", action="append", choices=("edge", "cloud"),
                            default=[], dest="head_layers",
                            help="let the head node run this layer's replicas too (repeatable; "
                                 "default: none, the head runs Ray and Serve's controller only)")
    rayservice.add_argument("--partial", action="store_true",
                            help="print the RayService even when resources were left out "
                                 "(still exit 1); default: print nothing then, so a pipe into "
                                 "kubectl apply never applies half of it")
    rayservice.set_defaults(func=_cmd_export_rayservice)
    return parser


def _add_operator_parser(sub: Any) -> None:
    op = sub.add_parser("operator", help="Kubernetes mode: reconcile the cluster's jointserve "
                                         "resources into Ray Serve")
    op.add_argument("--kubeconfig", type=Path, default=None,
                    help="kubeconfig file (default: $KUBECONFIG or ~/.kube/config; '' inside a "
                         "pod: its service account)")
    op.add_argument("--namespace", default=None, help="watch one namespace (default: all)")
    op.add_argument("--host", default="127.0.0.1", help="Serve's HTTP host")
    op.add_argument("--port", type=int, default=8000, help="Serve's HTTP port")
    op.add_argument("--public-url", default=None,
                    help="status.url of Ray-served models (default: http://HOST:PORT)")
    op.add_argument("--state-dir", type=Path, default=DEFAULT_STATE_DIR,
                    help="where the model store lives (default: ./.jointserve)")
    op.add_argument("--ray-address", default=None,
                    help="join this Ray cluster instead of starting a local one")
    op.add_argument("--file-server", type=Path, default=None, metavar="DIR",
                    help="also serve DIR over HTTP on loopback (the example's model archives)")
    op.add_argument("--file-server-port", type=int, default=8808)
    op.add_argument("--archive-host", default=None,
                    help="host of the server of published TrainingModel archives (default: "
                         "HOST)")
    op.add_argument("--archive-port", type=int, default=8809,
                    help="its port (default: %(default)s)")
    op.add_argument("--archive-url", default=None,
                    help="where nodes reach it, e.g. the operator's Service (default: "
                         "http://ARCHIVE_HOST:ARCHIVE_PORT)")
    op.add_argument("--image-port", type=int, default=8080,
                    help="container port of spec.image models' servers (Deployment + Service)")
    op.add_argument("--lease-namespace", default=os.environ.get("POD_NAMESPACE", "default"),
                    help="namespace of the leader-election Lease (default: $POD_NAMESPACE or "
                         "default)")
    op.add_argument("--lease-name", default="jointserve-operator")
    op.add_argument("--lease-duration", type=float, default=15.0, metavar="SECONDS",
                    help="how long a Lease outlives a leader that stopped renewing it "
                         "(default 15, as Kubernetes' own controllers)")
    op.add_argument("--identity", default=None,
                    help="this replica's name in the Lease (default: hostname + random suffix)")
    op.set_defaults(func=_cmd_operator)


# -- operator -------------------------------------------------------------------------------

def _cmd_operator(args: argparse.Namespace) -> int:
    from jointserve._file_server import FileServer
    from jointserve.operator import kube

    try:
        api_client = kube.kube_client(args.kubeconfig if args.kubeconfig != Path("") else None)
    except (kube.ConfigException, OSError) as exc:
        print(f"jointserve: cannot use kubeconfig {args.kubeconfig or '(default)'}: {exc}",
              file=sys.stderr)
        return 2
    stop = threading.Event()
    _stop_on_signals(stop)
    file_server = FileServer(args.file_server, port=args.file_server_port) if args.file_server else None
    if file_server:
        print(f"file server: {file_server.url}/ serves {args.file_server}", flush=True)
    # Every replica serves published archives (they live in the API), the standby too.
    archives = kube.PublishedArchiveServer(api_client, args.archive_host or args.host,
                                           args.archive_port)
    lease = kube.LeaseSettings(args.lease_namespace, args.lease_name,
                               args.identity or kube.default_identity(), args.lease_duration)
    kube.run_operator(api_client, _kube_settings(args), lease, stop, namespace=args.namespace,
                      ray_address=args.ray_address,
                      image_port=args.image_port, on_signals=lambda: _stop_on_signals(stop),
                      progress=ProgressPrinter, say=lambda line: print(line, flush=True))
    archives.stop()
    if file_server:
        file_server.stop()
    return 0


def _stop_on_signals(stop: threading.Event) -> None:
    """Ctrl-C and SIGTERM (a pod's shutdown) stop gracefully: the Lease is released, files
    are complete."""
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())


def _kube_settings(args: argparse.Namespace) -> Any:
    from jointserve.operator import kube

    return kube.KubeSettings(
        store_dir=args.state_dir.resolve() / "store", host=args.host, port=args.port,
        public_url=args.public_url or f"http://{args.host}:{args.port}",
        version=package_version("jointserve"),
        archive_url=args.archive_url
        or f"http://{args.archive_host or args.host}:{args.archive_port}")


# -- serve --------------------------------------------------------------------------------

def _cmd_serve(args: argparse.Namespace) -> int:
    from jointserve._file_server import FileServer
    from jointserve.operator.embedded import EmbeddedSettings, start_embedded

    if not args.directory.is_dir():
        print(f"jointserve: {args.directory} is not a directory", file=sys.stderr)
        return 2
    file_server = None
    if args.file_server is not None:
        file_server = FileServer(args.file_server, port=args.file_server_port)
        print(f"file server: {file_server.url}/ serves {args.file_server}")
    settings = EmbeddedSettings(directory=args.directory, state_dir=args.state_dir, host=args.host,
                                port=args.port, ray_address=args.ray_address,
                                version=package_version("jointserve"))
    operator = start_embedded(settings, progress=ProgressPrinter)
    stop = threading.Event()
    _stop_on_signals(stop)
    worker = operator.start(stop)
    _announce_when_ready(operator.statuses, operator.first_pass, args.directory,
                         settings.public_url, stop)
    stop.wait()
    print("\nstopping ...")
    worker.join(timeout=10)
    if file_server:
        file_server.stop()
    return 0


def _announce_when_ready(statuses: Any, first_pass: threading.Event, directory: Path,
                         public_url: str, stop: threading.Event) -> None:
    deadline = time.monotonic() + READY_WAIT_S
    while not stop.is_set() and time.monotonic() < deadline:
        records = _served(statuses.all()) if first_pass.is_set() else []
        if records and all(_ready(r) for r in records):
            break
        stop.wait(0.5)
    else:
        return
    records = _served(statuses.all())
    print("\njointserve is serving (Open Inference Protocol v2):")
    for record in records:
        print(f"  {_served_name(record)} ({_served_what(record)}): "
              f"{public_url}/v2/models/{_served_name(record)}/infer")
    # A joint service is the product's point: show it first when there is one. The example's
    # request files hold tensors: not for a service whose preprocess decodes images.
    joint = [r for r in records if r["resource"]["kind"] == "JointInferenceService"
             and not r["resource"]["spec"].get("preprocess")]
    first = _served_name((joint or records)[0])
    print("\ntry:")
    for request_file in (directory / "request-easy.json", directory / "request.json"):
        if request_file.exists():
            print(f"  curl -s -X POST {public_url}/v2/models/{first}/infer "
                  f"-H 'Content-Type: application/json' -d {shlex.quote('@' + str(request_file))}")
    print("\nstatus: jointserve get im; jointserve get jis    (Ctrl-C stops)")


def _served(records: list[dict]) -> list[dict]:
    """The records of resources with an endpoint (a Dataset has none)."""
    return [r for r in records
            if r["resource"]["kind"] in ("InferenceModel", "JointInferenceService")]


def _served_name(record: dict) -> str:
    resource = record["resource"]
    if resource["kind"] == "JointInferenceService":
        return resource["metadata"]["name"]
    return resource["spec"]["modelName"]


def _served_what(record: dict) -> str:
    resource, status = record["resource"], record.get("status", {})
    if resource["kind"] == "JointInferenceService":
        spec = resource["spec"]
        cloud = spec["cloudModel"].get("name") or spec["cloudModel"].get("url")
        return f"joint: edge {spec['edgeModel']['name']} + cloud {cloud}"
    return str(status.get("activeVersion"))


def _ready(record: dict) -> bool:
    return any(c["type"] == ConditionType.READY and c["status"] == "True"
               for c in record.get("status", {}).get("conditions", []))


class ProgressPrinter:
    """Download progress for one artifact on stderr: a live line on a terminal, else one line."""

    def __init__(self, label: str) -> None:
        self.label = label
        self._last = -1

    def __call__(self, done: int, total: int | None) -> None:
        tty = sys.stderr.isatty()
        if total:
            percent = int(100 * done / total)
            if percent == self._last or (not tty and percent < 100):
                return
            self._last = percent
            line = f"fetching {self.label}: {percent:3d}% ({_size(done)} / {_size(total)})"
        else:
            line = f"fetching {self.label}: {_size(done)}"
            if not tty:
                return
        end = "\n" if total and done >= total else ""
        print(f"\r{line}" if tty else line, end=end, file=sys.stderr, flush=True)


class EvaluationProgress:
    """Samples evaluated so far on stderr: a live line on a terminal, else every 10%."""

    def __init__(self, label: str) -> None:
        self.label = label
        self._last = -1

    def __call__(self, done: int, total: int) -> None:
        tenth = 10 * done // max(total, 1)
        tty = sys.stderr.isatty()
        if not tty and tenth == self._last:
            return
        self._last = tenth
        line = f"{self.label}: {done}/{total} samples"
        print(f"\r{line}" if tty else line, end="" if tty else "\n", file=sys.stderr, flush=True)

    def finish(self) -> None:
        if sys.stderr.isatty():
            print(file=sys.stderr)


def _size(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return str(n)


# -- get / status ---------------------------------------------------------------------------

def _cmd_get(args: argparse.Namespace) -> int:
    from jointserve.operator import StatusStore

    kind = _KIND_NAMES[args.kind]
    header, row = _GET_TABLES[kind]
    wide = args.output == "wide"
    rows = [header + ["MESSAGE"] * wide]
    for record in StatusStore(args.state_dir).all():
        if record["resource"]["kind"] == kind:
            status = record.get("status", {})
            ready = _ready_condition(status)
            rows.append(row(record["resource"], status) + [_wide_message(kind, status)] * wide)
    print(_table(rows))
    return 0


def _wide_message(kind: str, status: dict) -> str:
    """-o wide's last column: the Ready message; for a Dataset also its samples per class."""
    message = _ready_condition(status).get("message", "")
    classes = status.get("classes") or {}
    if kind == "Dataset" and classes:
        shown = " ".join(f"{name}:{count}" for name, count in list(classes.items())[:20])
        more = f" (+{len(classes) - 20} more)" if len(classes) > 20 else ""
        return f"{message}; per class {shown}{more}"
    return message


def _model_row(resource: dict, status: dict) -> list[str]:
    spec = resource["spec"]
    return [
        resource["metadata"]["name"],
        spec["modelName"],
        spec["deployToLayer"],
        spec.get("targetVersion") or (spec.get("manifest") or [{}])[0].get("version", "-"),
        status.get("activeVersion") or "-",
        _condition(status, ConditionType.READY),
        _ready_condition(status).get("reason") or "-",
        *_evaluation_cells(status, "accuracy", "macroF1"),
        status.get("url") or "-",
    ]


def _evaluation_cells(status: dict, *names: str) -> list[str]:
    """The newest evaluation's metrics `names`, and where the evaluation stands."""
    newest = (status.get("metrics") or [{}])[0]
    if "accuracy" not in newest and "mAP50" in newest:  # a detector: ACC/MAP50 is its mAP
        newest = {**newest, "accuracy": newest["mAP50"]}
    cells = [f"{newest[name]:.4f}" if isinstance(newest.get(name), float) else "-"
             for name in names]
    evaluated = next((c for c in status.get("conditions", [])
                      if c["type"] == ConditionType.EVALUATED), None)
    if evaluated is None:
        return [*cells, "-"]
    progress = evaluated.get("message", "").rpartition(": ")[2]
    shown = progress if evaluated["reason"] == "Evaluating" else evaluated["reason"]
    return [*cells, shown]


def _service_row(resource: dict, status: dict) -> list[str]:
    spec = resource["spec"]
    return [
        resource["metadata"]["name"],
        f"{spec['edgeModel']['name']} {status.get('edgeVersion') or '-'}",
        f"{spec['cloudModel'].get('name') or spec['cloudModel'].get('url')} {status.get('cloudVersion') or '-'}",
        spec["hardExampleMining"]["name"],
        _condition(status, ConditionType.READY),
        _ready_condition(status).get("reason") or "-",
        str(status.get("inferenceNumber", 0)),
        str(status.get("hardExampleNumber", 0)),
        f"{status.get('uploadCloudRatio', 0.0):.3f}",
        str(status.get("fallbackNumber", 0)),
        *_evaluation_cells(status, "accuracy", "cloudRatio", "pgr"),
        _budget_cell(spec, status),
        status.get("url") or "-",
    ]


def _budget_cell(spec: dict, status: dict) -> str:
    """hardExampleMining.budget: the share asked for and the cut that meets it, or where
    its calibration stands."""
    budget = spec["hardExampleMining"].get("budget")
    if budget is None:
        return "-"
    cond = next((c for c in status.get("conditions", [])
                 if c["type"] == ConditionType.CALIBRATED), None)
    calibration = status.get("calibration")
    if cond is not None and cond["status"] == "Unknown":
        return f"{budget['cloudRatio']:.0%}:" + cond.get("message", "").rpartition(": ")[2].replace(" ", "")
    if cond is not None and cond["status"] == "False":
        return f"{budget['cloudRatio']:.0%}:{cond['reason']}"
    if calibration is None:
        return f"{budget['cloudRatio']:.0%}"
    return f"{budget['cloudRatio']:.0%}@{calibration['threshold']:.4g}"


def _dataset_row(resource: dict, status: dict) -> list[str]:
    samples, classes = status.get("numberOfSamples"), status.get("numberOfClasses")
    return [
        resource["metadata"]["name"],
        resource["spec"]["format"],
        "-" if samples is None else str(samples),
        "-" if classes is None else str(classes),
        _condition(status, ConditionType.READY),
        _ready_condition(status).get("reason") or "-",
    ]


def _training_row(resource: dict, status: dict) -> list[str]:
    spec = resource["spec"]
    accuracy = status.get("accuracy")
    return [
        resource["metadata"]["name"],
        f"{status.get('round', 0)}/{spec.get('aggregation', {}).get('rounds', 10)}",
        status.get("participants") or f"0/{len(spec['workers'])}",
        "-" if accuracy is None else f"{accuracy:.4f}",
        status.get("phase") or "Pending",
        status.get("publishedVersion") or "-",
        _age(status.get("startedAt")),
    ]


def _age(since: str | None) -> str:
    """kubectl's AGE: 45s, 12m, 3h, 2d."""
    if not since:
        return "-"
    from datetime import datetime, timezone

    seconds = max((datetime.now(timezone.utc) - datetime.fromisoformat(since)).total_seconds(), 0)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= 2 * size:
            return f"{int(seconds // size)}{unit}"
    return f"{int(seconds)}s"


_KIND_NAMES = {
    "inferencemodels": "InferenceModel", "inferencemodel": "InferenceModel", "im": "InferenceModel",
    "jointinferenceservices": "JointInferenceService",
    "jointinferenceservice": "JointInferenceService", "jis": "JointInferenceService",
    "datasets": "Dataset", "dataset": "Dataset", "ds": "Dataset", "dset": "Dataset",
    "trainingmodels": "TrainingModel", "trainingmodel": "TrainingModel", "tm": "TrainingModel",
}
_GET_TABLES = {
    "InferenceModel": (["NAME", "MODEL", "LAYER", "TARGET", "ACTIVE", "READY", "REASON",
                        "ACCURACY", "F1", "EVALUATION", "URL"], _model_row),
    "JointInferenceService": (["NAME", "EDGE", "CLOUD", "HEM", "READY", "REASON", "INFERENCES",
                               "HARD", "UPLOAD-RATIO", "FALLBACKS", "ACC/MAP50", "CLOUD-RATIO",
                               "PGR", "EVALUATION", "BUDGET", "URL"], _service_row),
    "Dataset": (["NAME", "FORMAT", "SAMPLES", "CLASSES", "READY", "REASON"], _dataset_row),
    "TrainingModel": (["NAME", "ROUND/ROUNDS", "PARTICIPANTS", "ACCURACY", "PHASE", "PUBLISHED",
                       "AGE"], _training_row),
}


def _cmd_status(args: argparse.Namespace) -> int:
    from jointserve.operator import StatusStore

    statuses = StatusStore(args.state_dir)
    for record in statuses.all():
        resource, status = record["resource"], record.get("status", {})
        active = status.get("activeVersion") or status.get("edgeVersion") or "-"
        print(f"{resource['kind']} {resource['metadata']['namespace']}/{resource['metadata']['name']}"
              f"  active={active}  url={status.get('url') or '-'}")
        for cond in status.get("conditions", []):
            print(f"  {cond['type']:<17} {cond['status']:<6} {cond.get('reason', ''):<22} "
                  f"{cond.get('message', '')}")
    errors = statuses.read_errors()
    if errors:
        print("\nfiles with errors (their last good resources keep serving):")
        for message in errors.values():
            print(f"  {message}")
    return 1 if errors else 0


def _ready_condition(status: dict) -> dict:
    return next((c for c in status.get("conditions", []) if c["type"] == ConditionType.READY), {})


def _condition(status: dict, type_: str) -> str:
    return next((c["status"] for c in status.get("conditions", []) if c["type"] == type_), "-")


def _table(rows: list[list[str]]) -> str:
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("   ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip() for row in rows)


# -- evaluate -------------------------------------------------------------------------------

def _cmd_evaluate(args: argparse.Namespace) -> int:
    from jointserve.api import Evaluation
    from jointserve.evaluation import EvaluationError
    from jointserve.operator import evaluate_once
    from jointserve.store import ArtifactStore

    found = _target_and_dataset(args, "evaluate")
    if found is None:
        return 2
    resources, target, dataset = found
    resource = resources[target]
    output = args.tensor or (resource.spec.evaluation.output if resource.spec.evaluation else None)
    resource = resource.model_copy(deep=True)
    resource.spec.evaluation = Evaluation(dataset=dataset.metadata.name, output=output)
    resources[target] = resource
    shown = EvaluationProgress(f"evaluating {target[2]} on {dataset.metadata.name}")
    try:
        metrics = evaluate_once(resources, target, ArtifactStore(args.state_dir.resolve() / "store"),
                                shown)
    except EvaluationError as exc:
        print(f"jointserve evaluate: {exc.reason}: {exc.detail}", file=sys.stderr)
        return 1
    shown.finish()
    print(_metrics_table(metrics.model_dump(exclude_none=True)))
    return 0


def _target_and_dataset(args: argparse.Namespace, command: str
                        ) -> tuple[dict, tuple[str, str, str], Any] | None:
    """The resources the command can name, its target's key and its Dataset; None (with
    the reason on stderr) when one cannot be found."""
    from jointserve.api import ResourceError

    try:
        resources, target = _evaluation_resources(args)
        dataset = resources[_named(resources, "Dataset", args.dataset, target[1])]
    except (LookupError, ValueError, ResourceError) as exc:
        print(f"jointserve {command}: {exc.args[0] if exc.args else exc}", file=sys.stderr)
        return None
    return resources, target, dataset


def _evaluation_resources(args: argparse.Namespace) -> tuple[dict, tuple[str, str, str]]:
    """Every resource the command can name: those `jointserve serve` recorded in the state
    dir, overridden by the files given (and the other files of the target's directory)."""
    from jointserve.api import load_file, resource_key, parse_resource
    from jointserve.operator import StatusStore

    resources: dict = {}
    for record in StatusStore(args.state_dir).all():
        resource = parse_resource(record["resource"], "the state dir")
        resources[resource_key(resource)] = resource
    target_file = Path(args.target)
    files = sorted(target_file.parent.glob("*.y*ml")) if target_file.is_file() else []
    files += [f for f in (target_file, Path(args.dataset)) if f.is_file()]
    named: dict = {}
    for path in files:
        for resource in load_file(path):
            resources[resource_key(resource)] = resource
            named.setdefault(path, resource)
    if target_file.is_file():
        target = resource_key(named[target_file])
    else:
        target = _named(resources, ("InferenceModel", "JointInferenceService"), args.target)
    if Path(args.dataset).is_file():
        args.dataset = named[Path(args.dataset)].metadata.name
    return resources, target


def _named(resources: dict, kinds: str | tuple[str, ...], name: str,
           namespace: str | None = None) -> tuple[str, str, str]:
    kinds = (kinds,) if isinstance(kinds, str) else kinds
    found = [key for key in resources if key[0] in kinds and key[2] == name
             and namespace in (None, key[1])]
    if not found:
        raise LookupError(f"no {' or '.join(kinds)} named {name!r} (in the files given or the "
                          "state dir)")
    return sorted(found)[0]


def _metrics_table(metrics: dict) -> str:
    """The metrics, one per line, then per-class recall and the confusion matrix."""
    lines = [f"{name:<16} {value:.4f}" if isinstance(value, float) else f"{name:<16} {value}"
             for name, value in metrics.items() if not isinstance(value, (dict, list))]
    recall = metrics.get("perClassRecall", {})
    if recall:
        lines += ["", "class  recall"] + [f"{name:<6} {value:.4f}" for name, value in recall.items()]
    confusion = metrics.get("confusion")
    if confusion:
        labels = confusion["labels"]
        rows = [["true\\pred", *labels]] + [[label, *map(str, row)]
                                            for label, row in zip(labels, confusion["counts"])]
        lines += ["", _table(rows)]
    return "\n".join(lines)


# -- routers and hard examples --------------------------------------------------------------

def _cmd_train_router(args: argparse.Namespace) -> int:
    import hashlib

    from jointserve.api import JointInferenceService, kube_yaml
    from jointserve.evaluation import EvaluationError
    from jointserve.operator import train_router_once
    from jointserve.store import ArtifactStore, write_atomic

    found = _target_and_dataset(args, "train-router")
    if found is None:
        return 2
    resources, target, dataset = found
    if not isinstance(resources[target], JointInferenceService):
        print(f"jointserve train-router: {target[2]} is not a JointInferenceService",
              file=sys.stderr)
        return 2
    shown = EvaluationProgress(f"training a router for {target[2]} on {dataset.metadata.name}")
    try:
        trained = train_router_once(resources, target, dataset.metadata.name,
                                    ArtifactStore(args.state_dir.resolve() / "store"), shown,
                                    {"auto": None, "yes": True, "no": False}[args.inputs])
    except EvaluationError as exc:
        print(f"jointserve train-router: {exc.reason}: {exc.detail}", file=sys.stderr)
        return 1
    shown.finish()
    write_atomic(args.out, trained.archive)
    held = trained.info["heldOut"]
    info = trained.info
    read = f"{info['features'] - info['inputFeatures']} of the edge's probabilities" + (
        f" + {info['inputFeatures']} of its input" if info["inputFeatures"] else "")
    print(f"{args.out}: router on {info['features']} features ({read}), trained on "
          f"{info['samples'] - held['rows']} rows of {dataset.metadata.name}, judged on "
          f"{held['rows']} held out")
    print(f"held out: AUC {held['auc']:.3f}; PGR at 10/20/30% sent: router "
          + " / ".join(_number(held["pgr"][k]) for k in ("0.1", "0.2", "0.3"))
          + ", Margin " + " / ".join(_number(held["marginPgr"][k]) for k in ("0.1", "0.2", "0.3")))
    hem = {"name": "LearnedRouter",
           "router": {"url": args.out.resolve().as_uri(),
                      "sha256sum": hashlib.sha256(trained.archive).hexdigest()}}
    print(kube_yaml([{"hardExampleMining": hem}], 100), end="")
    return 0


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _cmd_hard_examples(args: argparse.Namespace) -> int:
    import hashlib

    from jointserve.api import kube_yaml
    from jointserve.gateway import HardExampleExportError, export_hard_examples
    from jointserve.store import write_atomic

    if not args.directory.is_dir():
        print(f"error: {args.directory}: no such directory", file=sys.stderr)
        return 2
    try:
        exported = export_hard_examples(args.directory, args.input_name, args.label_output)
    except HardExampleExportError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    write_atomic(args.out, exported.data)
    print(f"{args.out}: {exported.rows} rows from {exported.examples} examples "
          f"(input {exported.input_name!r}, labels from the cloud's {exported.label_output!r}; "
          f"{exported.without_cloud} examples without a cloud answer left out)")
    print(kube_yaml([{"apiVersion": "jointserve.io/v1alpha1", "kind": "Dataset",
                      "metadata": {"name": args.out.stem.lower().replace("_", "-")},
                      "spec": {"url": args.out.resolve().as_uri(),
                               "sha256sum": hashlib.sha256(exported.data).hexdigest(),
                               "format": "npz"}}], 100), end="")
    return 0


# -- crds -----------------------------------------------------------------------------------

def _cmd_crds(args: argparse.Namespace) -> int:
    from jointserve.api import write_crds

    for path in write_crds(args.out):
        print(path)
    return 0


# -- export ---------------------------------------------------------------------------------

def _cmd_export_rayservice(args: argparse.Namespace) -> int:
    from jointserve.operator import ServeSettings
    from jointserve.operator import rayservice as rs
    from jointserve.store import ArtifactStore

    if not args.directory.is_dir():
        print(f"jointserve: {args.directory} is not a directory", file=sys.stderr)
        return 2
    store_root = args.store_root or rs.DEFAULT_STORE_ROOT
    image = args.ray_image or rs.default_image()
    # 0.0.0.0: in a pod, the front door must take the traffic KubeRay's Service sends it.
    settings = ServeSettings(store_root=store_root, host="0.0.0.0", port=args.port,
                             version=package_version("jointserve"))
    store = ArtifactStore(args.state_dir.resolve() / "store")
    export = rs.export_config(args.directory, store, settings,
                              rs.serve_url(args.name, args.namespace, args.port),
                              progress=ProgressPrinter)
    for warning in export.warnings:
        print(f"jointserve: warning: {warning}", file=sys.stderr)
    for problem in export.problems:
        print(f"jointserve: left out: {problem}", file=sys.stderr)
    if export.problems and not args.partial:
        print("jointserve: nothing printed: fix the resources above, or pass --partial",
              file=sys.stderr)
        return 1
    manifest = rs.rayservice(export.config, name=args.name, namespace=args.namespace,
                             image=image, store_root=store_root, head_layers=args.head_layers)
    print(rs.render(manifest, rs.note(image, store_root)), end="")
    return 1 if export.problems else 0


if __name__ == "__main__":
    sys.exit(main())
