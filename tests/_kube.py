"""A real kube-apiserver + etcd on loopback, driven with a real kubectl, for tests.

The three binaries come from tools/kube/build.sh (`make kube-tools`; `make test` runs it), which
builds them from the k8s.io/kubernetes version tools/kube/go.mod pins. Nothing is faked: the
API server validates CRD schemas and CEL rules, runs RBAC, and serves watches as in a cluster.

    server = KubeAPIServer(tmp_path)
    server.start()                          # etcd, then kube-apiserver; waits for /readyz
    server.kubectl("apply", "-f", "deploy/crds/")
    server.stop(); server.start()           # restart the API server alone; etcd keeps the data
    server.close()

Authentication is a static admin token in group system:masters; authorization is RBAC, so a
test can check what a narrower identity may do with `kubectl --as=system:serviceaccount:...`.
There is no controller-manager, scheduler or kubelet: namespaces never finish deleting and
pods never run; objects such as Deployments are created and can be read back, nothing more.
"""

from __future__ import annotations

import atexit
import base64
import datetime
import ipaddress
import os
import re
import secrets
import signal
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

REPO = Path(__file__).resolve().parent.parent
KUBE_TOOLS = REPO / "tools" / "kube"
START_TIMEOUT_S = 120.0  # first start bootstraps RBAC roles; slow on a loaded 2-core CI machine
STOP_TIMEOUT_S = 30.0
LOG_TAIL_LINES = 40


class KubeStartError(RuntimeError):
    """etcd or kube-apiserver did not come up; the message ends with the log's last lines."""


def kube_version() -> str:
    """The k8s.io/kubernetes version tools/kube/go.mod pins (the cache directory's name)."""
    text = (KUBE_TOOLS / "go.mod").read_text(encoding="utf-8")
    found = re.search(r"^\s*(?:require\s+)?k8s\.io/kubernetes\s+(v\S+)", text, re.MULTILINE)
    if not found:
        raise KubeStartError(f"no k8s.io/kubernetes requirement in {KUBE_TOOLS / 'go.mod'}")
    return found.group(1)


def kube_bin_dir() -> Path:
    """Where tools/kube/build.sh put the binaries; an error naming the fix if it has not."""
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    bin_dir = cache / "jointserve" / "kube" / kube_version()
    missing = [b for b in ("kube-apiserver", "etcd", "kubectl") if not (bin_dir / b).is_file()]
    if missing:
        raise KubeStartError(f"{', '.join(missing)} not in {bin_dir}: run `make kube-tools` "
                             "(tools/kube/build.sh) first")
    return bin_dir


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        return "\n".join(path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return "(no log written)"


# -- certificates ------------------------------------------------------------------------------

def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _cert(subject: str, key: ec.EllipticCurvePrivateKey, issuer: x509.Certificate | None,
          issuer_key: ec.EllipticCurvePrivateKey | None) -> x509.Certificate:
    """A CA certificate (no issuer) or a loopback serving certificate signed by the CA."""
    now = datetime.datetime.now(datetime.timezone.utc)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    is_ca = issuer is None
    builder = (x509.CertificateBuilder()
               .subject_name(name)
               .issuer_name(name if is_ca else issuer.subject)
               .public_key(key.public_key())
               .serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(minutes=5))
               .not_valid_after(now + datetime.timedelta(days=7))
               .add_extension(x509.BasicConstraints(ca=is_ca, path_length=None), critical=True))
    if is_ca:
        builder = builder.add_extension(
            x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                          content_commitment=False, key_encipherment=False,
                          data_encipherment=False, key_agreement=False,
                          encipher_only=False, decipher_only=False), critical=True)
    else:
        builder = (builder
                   .add_extension(x509.SubjectAlternativeName([
                       x509.DNSName("localhost"),
                       x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
                   .add_extension(x509.ExtendedKeyUsage([x509.OID_SERVER_AUTH]), critical=False))
    return builder.sign(issuer_key or key, hashes.SHA256())


def write_pki(pki: Path) -> None:
    """CA, serving cert for 127.0.0.1, and the service-account signing key, as PEM files."""
    pki.mkdir(parents=True, exist_ok=True)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _cert("jointserve-test-ca", ca_key, None, None)
    serving_key = ec.generate_private_key(ec.SECP256R1())
    serving = _cert("kube-apiserver", serving_key, ca, ca_key)
    sa_key = ec.generate_private_key(ec.SECP256R1())
    (pki / "ca.crt").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    (pki / "serving.crt").write_bytes(serving.public_bytes(serialization.Encoding.PEM))
    (pki / "serving.key").write_bytes(_pem_key(serving_key))
    (pki / "sa.key").write_bytes(_pem_key(sa_key))
    (pki / "sa.pub").write_bytes(sa_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))


# -- processes ---------------------------------------------------------------------------------

class _Process:
    """One server binary: started with its output appended to a log file, stopped by SIGTERM."""

    def __init__(self, name: str, log_path: Path) -> None:
        self.name = name
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    def start(self, argv: Sequence[str]) -> None:
        self._log = self.log_path.open("ab")
        self._log.write(f"\n==== {time.strftime('%H:%M:%S')} {' '.join(argv)}\n".encode())
        self._log.flush()
        # Own session: a Ctrl-C in the terminal reaches pytest, which then stops us in order.
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=self._log,
                                     stderr=subprocess.STDOUT, start_new_session=True)

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def check_running(self) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            raise KubeStartError(f"{self.name} exited with {self.proc.returncode}; "
                                 f"last lines of {self.log_path}:\n{_tail(self.log_path)}")

    def stop(self) -> None:
        if self.running():
            assert self.proc is not None
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None
        if self._log is not None:
            self._log.close()
            self._log = None


class KubeAPIServer:
    """etcd + kube-apiserver on free loopback ports under `root`, and a kubeconfig for them."""

    def __init__(self, root: Path, bin_dir: Path | None = None) -> None:
        self.root = root
        self.bin_dir = bin_dir or kube_bin_dir()
        self.pki = root / "pki"
        self.kubeconfig = root / "kubeconfig"
        self.token = secrets.token_hex(16)
        # Ports are fixed for the object's life: a restarted API server is at the same URL,
        # as a restarted control plane is behind a cluster's stable endpoint.
        self.etcd_port, self.etcd_peer_port, self.port = free_port(), free_port(), free_port()
        self.url = f"https://127.0.0.1:{self.port}"
        self.etcd = _Process("etcd", root / "etcd.log")
        self.apiserver = _Process("kube-apiserver", root / "kube-apiserver.log")
        self._prepared = False
        atexit.register(self.close)  # never leave servers behind, even if pytest dies

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self) -> None:
        """Start etcd (once) and the API server, and wait until the API server is ready."""
        if not self._prepared:
            self._prepare()
        if not self.etcd.running():
            self.etcd.start(self._etcd_argv())
            self._wait("etcd", self.etcd, self._etcd_healthy)
        if not self.apiserver.running():
            self.apiserver.start(self._apiserver_argv())
            self._wait("kube-apiserver", self.apiserver, self._apiserver_ready)

    def stop(self) -> None:
        """Stop the API server alone; etcd and its data stay, so start() brings it all back."""
        self.apiserver.stop()

    def close(self) -> None:
        self.apiserver.stop()
        self.etcd.stop()

    def _prepare(self) -> None:
        write_pki(self.pki)
        (self.root / "tokens.csv").write_text(f'{self.token},admin,admin-uid,"system:masters"\n')
        self.kubeconfig.write_text(yaml.safe_dump(self._kubeconfig(), sort_keys=False))
        self._prepared = True

    def _wait(self, name: str, process: _Process, ready: Callable[[], bool]) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not ready():
            process.check_running()
            if time.monotonic() > deadline:
                raise KubeStartError(f"{name} not ready after {START_TIMEOUT_S:.0f}s; last lines "
                                     f"of {process.log_path}:\n{_tail(process.log_path)}")
            time.sleep(0.2)

    # -- command lines -------------------------------------------------------------------------

    def _etcd_argv(self) -> list[str]:
        client, peer = f"http://127.0.0.1:{self.etcd_port}", f"http://127.0.0.1:{self.etcd_peer_port}"
        return [str(self.bin_dir / "etcd"), "--name=test", f"--data-dir={self.root / 'etcd'}",
                f"--listen-client-urls={client}", f"--advertise-client-urls={client}",
                f"--listen-peer-urls={peer}", f"--initial-advertise-peer-urls={peer}",
                f"--initial-cluster=test={peer}",
                # Test data need not survive a power cut; fsync per write costs seconds per test.
                "--unsafe-no-fsync", "--log-level=warn"]

    def _apiserver_argv(self) -> list[str]:
        pki = self.pki
        return [str(self.bin_dir / "kube-apiserver"),
                f"--etcd-servers=http://127.0.0.1:{self.etcd_port}",
                "--bind-address=127.0.0.1", "--advertise-address=127.0.0.1",
                f"--secure-port={self.port}",
                f"--tls-cert-file={pki / 'serving.crt'}",
                f"--tls-private-key-file={pki / 'serving.key'}",
                f"--cert-dir={self.root / 'apiserver-certs'}",
                f"--token-auth-file={self.root / 'tokens.csv'}",
                "--authorization-mode=RBAC",
                # Required since 1.20: issuing and checking service-account tokens.
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                f"--service-account-key-file={pki / 'sa.pub'}",
                f"--service-account-signing-key-file={pki / 'sa.key'}",
                "--service-cluster-ip-range=10.96.0.0/16",
                "--profiling=false"]

    def _kubeconfig(self) -> dict:
        ca_data = base64.b64encode((self.pki / "ca.crt").read_bytes()).decode()
        return {
            "apiVersion": "v1", "kind": "Config", "current-context": "test",
            "clusters": [{"name": "test", "cluster": {
                "server": self.url, "certificate-authority-data": ca_data}}],
            "users": [{"name": "admin", "user": {"token": self.token}}],
            "contexts": [{"name": "test", "context": {
                "cluster": "test", "user": "admin", "namespace": "default"}}],
        }

    # -- readiness -----------------------------------------------------------------------------

    def _etcd_healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.etcd_port}/health",
                                        timeout=2) as answer:
                return b'"true"' in answer.read()
        except (OSError, urllib.error.URLError):
            return False

    def _apiserver_ready(self) -> bool:
        # Verifies the serving cert against our CA: a wrong cert fails here, not in a test.
        context = ssl.create_default_context(cafile=str(self.pki / "ca.crt"))
        request = urllib.request.Request(f"{self.url}/readyz",
                                         headers={"Authorization": f"Bearer {self.token}"})
        try:
            with urllib.request.urlopen(request, timeout=2, context=context) as answer:
                return answer.status == 200 and answer.read().strip() == b"ok"
        except urllib.error.URLError as error:
            if isinstance(error.reason, ssl.SSLCertVerificationError):
                raise KubeStartError(f"kube-apiserver's certificate does not verify: {error}")
            return False  # not listening yet, or 500 while its post-start hooks run
        except OSError:
            return False

    # -- kubectl -------------------------------------------------------------------------------

    def kubectl(self, *args: str, input: str | None = None,
                timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        """kubectl `args` against this server, as a user would type them; never raises on exit."""
        env = {**os.environ, "KUBECONFIG": str(self.kubeconfig),
               # Its discovery cache, otherwise in ~/.kube/cache under a new port every session.
               "KUBECACHEDIR": str(self.root / "kubectl-cache")}
        return subprocess.run([str(self.bin_dir / "kubectl"), *args], input=input, env=env,
                              capture_output=True, text=True, timeout=timeout, check=False)

    def kubectl_ok(self, *args: str, input: str | None = None) -> str:
        """kubectl that must succeed: its stdout, or an AssertionError carrying its stderr."""
        done = self.kubectl(*args, input=input)
        assert done.returncode == 0, f"kubectl {' '.join(args)} failed: {done.stderr}"
        return done.stdout

    def install_crds(self, crd_dir: Path) -> list[str]:
        """`kubectl apply -f crd_dir` and wait until every CRD there is Established."""
        names = [yaml.safe_load(p.read_text(encoding="utf-8"))["metadata"]["name"]
                 for p in sorted(crd_dir.glob("*.yaml"))]
        self.kubectl_ok("apply", "-f", f"{crd_dir}/")
        self.kubectl_ok("wait", "--for=condition=established", "--timeout=60s",
                        *(f"crd/{name}" for name in names))
        return names
